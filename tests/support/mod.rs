//! Test harness: a gateway in-process on 127.0.0.1:0 in front of mock-llm, and a small
//! HTTP client that records when each body frame arrived.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
pub use mock_llm::MockLlm;
use serde_json::Value;
use tollgate::server::{Running, ServeOptions};

/// A gateway and its mock upstream.
pub struct Harness {
    pub gw: Running,
    pub mock: MockLlm,
    pub dir: tempdir::TempDir,
    /// Sockets held for the harness's lifetime (dead ports its config names).
    pub held: Vec<tokio::net::TcpSocket>,
}

pub mod tempdir {
    //! A scratch directory removed on drop (no extra crate needed).
    use std::path::{Path, PathBuf};

    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new() -> TempDir {
            let p = std::env::temp_dir().join(format!("tollgate-test-{}", uuid_like()));
            std::fs::create_dir_all(&p).expect("temp dir");
            TempDir(p)
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn uuid_like() -> String {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!(
            "{}-{}-{}",
            std::process::id(),
            t,
            N.fetch_add(1, Ordering::Relaxed)
        )
    }
}

impl Harness {
    /// Starts mock-llm, then the gateway with `yaml` where `{MOCK}` is the mock's URL
    /// (`{MOCK_WS}` the same as ws://) and `{DIR}` a scratch directory.
    pub async fn start(yaml: &str) -> Harness {
        Harness::start_env(yaml, &[]).await
    }

    /// [`Harness::start`] with environment variables `vars` (`{MOCK}` in their values is the
    /// mock's URL) seen by the gateway's config loader, over the process's.
    pub async fn start_env(yaml: &str, vars: &[(&str, &str)]) -> Harness {
        let mock = MockLlm::start().await.expect("mock");
        let dir = tempdir::TempDir::new();
        let text = yaml
            .replace("{MOCK_WS}", &mock.url().replacen("http://", "ws://", 1))
            .replace("{MOCK}", &mock.url())
            .replace("{DIR}", &dir.path().display().to_string());
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.replace("{MOCK}", &mock.url())))
            .collect();
        let env = |name: &str| {
            vars.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .or_else(|| std::env::var(name).ok())
        };
        let gw = tollgate::run_env(
            &text,
            &env,
            ServeOptions {
                proxy_listen: "127.0.0.1:0".parse().expect("addr"),
                admin_listen: Some("127.0.0.1:0".parse().expect("addr")),
                drain_timeout: Duration::from_secs(5),
                busy_poll: Duration::ZERO,
                proxy_tls: None,
                admin_tls: None,
                limits: Default::default(),
                workers: 1,
            },
        )
        .await
        .expect("gateway starts");
        Harness {
            gw,
            mock,
            dir,
            held: Vec::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.gw.proxy_addr, path)
    }

    pub fn admin(&self, path: &str) -> String {
        format!("http://{}{}", self.gw.admin_addr.expect("admin"), path)
    }

    /// The file-log lines written so far (waits for the writer to flush).
    pub fn log_lines(&self, file: &str) -> Vec<Value> {
        tollgate::observe::file_log::FileLogSink::flush_all();
        let text = std::fs::read_to_string(self.dir.path().join(file)).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).expect("log line is JSON"))
            .collect()
    }

    /// Waits until the log has `n` lines (the log phase runs after the body is done).
    pub async fn wait_log(&self, file: &str, n: usize) -> Vec<Value> {
        for _ in 0..100 {
            let lines = self.log_lines(file);
            if lines.len() >= n {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.log_lines(file)
    }
}

/// A response as the tests look at it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    /// Each body frame with its arrival time since the request was sent.
    pub frames: Vec<(Duration, Bytes)>,
    /// The body ended with an error (connection cut).
    pub body_error: Option<String>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, n: &str) -> Option<&str> {
        self.headers.get(n).and_then(|v| v.to_str().ok())
    }
}

/// Sends a request with raw body bytes and reads the whole response frame by frame.
pub async fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut b = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(body.into())).expect("request");
    let start = Instant::now();
    let resp = client.request(req).await.expect("response head");
    let (parts, mut body) = resp.into_parts();
    let mut frames = Vec::new();
    let mut all = Vec::new();
    let mut body_error = None;
    while let Some(f) = body.frame().await {
        match f {
            Ok(f) => {
                if let Ok(d) = f.into_data() {
                    all.extend_from_slice(&d);
                    frames.push((start.elapsed(), d));
                }
            }
            Err(e) => {
                body_error = Some(e.to_string());
                break;
            }
        }
    }
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: Bytes::from(all),
        frames,
        body_error,
    }
}

pub async fn post_json(url: &str, body: &Value) -> Reply {
    send(
        "POST",
        url,
        &[("content-type", "application/json")],
        body.to_string(),
    )
    .await
}

pub async fn get(url: &str) -> Reply {
    send("GET", url, &[], Bytes::new()).await
}

/// The `data:` payloads of an SSE body, in order.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|ev| {
            let d: Vec<&str> = ev
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .collect();
            (!d.is_empty()).then(|| d.join("\n"))
        })
        .collect()
}

/// A port that refuses connections for as long as the returned socket lives: bound but not
/// listening, so no other test's server can take it (a port from `free_port` can be
/// reused by a parallel test, which then answers where a dead upstream was meant).
pub fn dead_port() -> (tokio::net::TcpSocket, u16) {
    let s = tokio::net::TcpSocket::new_v4().expect("socket");
    s.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let port = s.local_addr().expect("port").port();
    (s, port)
}
