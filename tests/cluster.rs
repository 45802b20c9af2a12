//! Cluster mode through the real binary: three `tollgate serve --store postgres` nodes on
//! one PostgreSQL database (reached through a proxy the test can cut). An Admin API write
//! on one node is served by the others within a second, concurrent writes on two nodes
//! both land, and with the store gone the nodes keep serving, refuse writes with a 503,
//! and start from their cached copy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mock_llm::MockLlm;
use serde_json::{json, Value};
use support::{get, post_json};

/// A TCP proxy to the local PostgreSQL that the test can cut (every connection dropped,
/// new ones refused) and restore.
struct StoreLink {
    port: u16,
    cut: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl StoreLink {
    async fn start() -> StoreLink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let live: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (c, l) = (cut.clone(), live.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if c.load(Ordering::SeqCst) {
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut pg) = tokio::net::TcpStream::connect("127.0.0.1:5432").await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut pg).await;
                    }
                });
                l.lock().unwrap().push(task.abort_handle());
            }
        });
        StoreLink { port, cut, live }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for t in self.live.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// A fresh database for one test.
async fn database(name: &str) -> String {
    let (client, conn) = tokio_postgres::connect(
        "host=127.0.0.1 user=postgres dbname=postgres",
        tokio_postgres::NoTls,
    )
    .await
    .expect("PostgreSQL on 127.0.0.1:5432 (scripts/services.sh starts it)");
    tokio::spawn(conn);
    let db = format!("{name}_{}", std::process::id());
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .await
        .unwrap();
    client
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    db
}

struct Node {
    child: Child,
    proxy: String,
    admin: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tollgate serve --store postgres` through `link` to database `db`, seeded by `config`.
fn node(config: &std::path::Path, data: &std::path::Path, link: &StoreLink, db: &str) -> Node {
    node_with(config, data, link, db, &["--analytics", "off"], &[])
}

/// [`node`] with other arguments (analytics).
fn node_with(
    config: &std::path::Path,
    data: &std::path::Path,
    link: &StoreLink,
    db: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Node {
    let url = format!(
        "host=127.0.0.1 port={} user=postgres dbname={db}",
        link.port
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--store", "postgres", "--store-postgres", &url])
        .args([
            "--proxy-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(["--proxy-tls-listen", "off"])
        .args(extra)
        .env_remove("TOLLGATE_STORE_KEY")
        .envs(env.iter().copied())
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tollgate");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut proxy, mut admin) = (String::new(), String::new());
    while proxy.is_empty() || admin.is_empty() {
        let line = lines
            .next()
            .expect("tollgate printed its addresses")
            .unwrap();
        if let Some(a) = line.strip_prefix("tollgate proxy on ") {
            proxy = a.to_string();
        } else if let Some(a) = line.strip_prefix("tollgate admin on ") {
            admin = a.to_string();
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Node {
        child,
        proxy,
        admin,
    }
}

/// A route `name` on `/name` to the mock's chat API, as Admin API writes.
async fn add_route(n: &Node, name: impl AsRef<str>) -> support::Reply {
    let name = name.as_ref();
    let body = json!({"name": name, "paths": [format!("/{name}")], "service": {"name": "mock"}});
    post_json(&format!("{}/routes", n.admin), &body).await
}

fn chat() -> Value {
    json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
}

/// Waits until `node` answers `path` with 200; how long that took.
async fn served_within(n: &Node, path: &str, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if post_json(&format!("{}{path}", n.proxy), &chat())
            .await
            .status
            == 200
        {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_one_configuration() {
    let mock = MockLlm::start().await.unwrap();
    let db = database("tg_cluster").await;
    let link = StoreLink::start().await;
    let dir = support::tempdir::TempDir::new();
    let config = dir.path().join("kong.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
_format_version: "3.0"
services:
  - name: mock
    url: {}/v1/chat/completions
    routes:
      - name: first
        paths: ["/first"]
"#,
            mock.url()
        ),
    )
    .unwrap();
    let data: Vec<_> = (0..3)
        .map(|i| dir.path().join(format!("node{i}")))
        .collect();
    let nodes: Vec<Node> = data.iter().map(|d| node(&config, d, &link, &db)).collect();
    for n in &nodes {
        assert!(served_within(n, "/first", Duration::from_secs(5))
            .await
            .is_some());
    }

    // A write on node 1 is served by nodes 2 and 3 within a second.
    let r = add_route(&nodes[0], "second").await;
    assert_eq!(r.status, 201, "{}", r.text());
    for n in &nodes[1..] {
        let took = served_within(n, "/second", Duration::from_secs(1)).await;
        assert!(
            took.is_some(),
            "node {} did not serve /second within 1 s",
            n.proxy
        );
    }

    // Concurrent writes on two nodes all land, on every node.
    let writes: Vec<_> = (0..10)
        .map(|i| {
            let n = &nodes[1 + i % 2];
            add_route(n, format!("c{i}"))
        })
        .collect();
    for r in futures_util::future::join_all(writes).await {
        assert_eq!(r.status, 201, "{}", r.text());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for n in &nodes {
        let routes = get(&format!("{}/routes", n.admin)).await.json();
        let names: Vec<&str> = routes["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert_eq!(names.len(), 12, "{names:?}");
    }

    // The store goes away: requests are still served, writes get a clear 503.
    link.cut();
    for n in &nodes {
        for path in ["/first", "/second", "/c9"] {
            let r = post_json(&format!("{}{path}", n.proxy), &chat()).await;
            assert_eq!(r.status, 200, "{path} on {}: {}", n.proxy, r.text());
        }
    }
    let r = add_route(&nodes[0], "while-down").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.text().contains("configuration store is unavailable"),
        "{}",
        r.text()
    );
    let status = get(&format!("{}/status", nodes[0].admin)).await.json();
    assert_eq!(status["database"]["reachable"], false, "{status}");
    assert_eq!(status["configuration_store"]["kind"], "postgres");
    let metrics = get(&format!("{}/metrics", nodes[0].admin)).await.text();
    assert!(metrics.contains("tollgate_config_store_up 0"), "{metrics}");
    // A node restarted meanwhile serves the copy it kept.
    let mut nodes = nodes;
    nodes.pop();
    let restarted = node(&config, &data[2], &link, &db);
    let r = post_json(&format!("{}/c9", restarted.proxy), &chat()).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Back: a write propagates again.
    // A new node with no copy waits for the store; its status listener says it is not
    // ready until it has a configuration.
    let url = format!(
        "host=127.0.0.1 port={} user=postgres dbname={db}",
        link.port
    );
    let mut waiting = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--store", "postgres", "--store-postgres", &url])
        .args(["--proxy-listen", "127.0.0.1:0", "--admin-listen", "off"])
        .args(["--proxy-tls-listen", "off", "--analytics", "off"])
        .args(["--status-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("fresh"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(waiting.stdout.take().unwrap()).lines();
    let status = loop {
        let line = lines.next().expect("the status line").unwrap();
        if let Some(a) = line.strip_prefix("tollgate status on ") {
            break a.to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let r = get(&format!("{status}/status/ready")).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.text().contains("no configuration loaded yet"),
        "{}",
        r.text()
    );
    link.restore();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(&format!("{status}/status/ready")).await;
        if r.status == 200 {
            assert_eq!(r.json()["stores_down"], json!([]), "{}", r.text());
            break;
        }
        assert!(Instant::now() < deadline, "never ready: {}", r.text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = get(&format!("{status}/status")).await;
    assert_eq!(
        r.json()["configuration_store"]["kind"],
        "postgres",
        "{}",
        r.text()
    );
    let _ = waiting.kill();
    let _ = waiting.wait();
    let mut landed = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while landed.is_none() && Instant::now() < deadline {
        let r = add_route(&nodes[1], "after").await;
        if r.status == 201 {
            landed = Some(r);
        } else {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(
        landed.is_some(),
        "no write landed after the store came back"
    );
    for n in [&nodes[0], &restarted] {
        let took = served_within(n, "/after", Duration::from_secs(3)).await;
        assert!(took.is_some(), "node {} did not catch up", n.proxy);
    }
    let mut stores = Vec::new();
    for n in [&nodes[0], &nodes[1], &restarted] {
        stores
            .push(get(&format!("{}/status", n.admin)).await.json()["configuration_store"].clone());
    }
    assert!(
        stores
            .iter()
            .all(|v| v == &stores[0] && v["reachable"] == true),
        "{stores:?}"
    );
}

/// `tollgate migrations up`, `config import` and `config export` on a store no node runs.
#[tokio::test]
async fn the_store_is_filled_and_read_from_the_command_line() {
    let db = database("tg_cli").await;
    let url = format!("host=127.0.0.1 user=postgres dbname={db}");
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(args)
            .env("TOLLGATE_STORE_POSTGRES", &url)
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let (code, out, _) = run(&["migrations", "up"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("no configuration stored yet"), "{out}");
    let (code, _, err) = run(&["config", "export"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("holds no configuration yet"), "{err}");
    let dir = support::tempdir::TempDir::new();
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        "_format_version: \"3.0\"\nservices: [{name: s, url: http://127.0.0.1:9}]\n",
    )
    .unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "_format_version: \"3.0\"\nservices: [{name: s}]\n").unwrap();
    let (code, _, err) = run(&["config", "import", bad.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("services[0].host: required field missing"),
        "{err}"
    );
    let (code, out, _) = run(&["config", "import", good.to_str().unwrap()]);
    assert_eq!(code, Some(0));
    assert!(out.contains("as configuration version 1"), "{out}");
    let (code, out, err) = run(&["config", "export"]);
    assert_eq!(code, Some(0));
    assert!(err.contains("version 1"), "{err}");
    assert!(out.contains("name: s"), "{out}");
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args([
            "migrations",
            "up",
            "--store-postgres",
            "host=127.0.0.1 port=1 user=postgres",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unreachable") && err.contains("refused"),
        "{err}"
    );
}

/// A `rate-limiting` quota kept in Redis admits exactly its limit across three nodes, and
/// every node's usage records land in the one PostgreSQL analytics table, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_quotas_and_usage() {
    // A minute's quota: not across a minute's end.
    let second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 60;
    if second > 45 {
        tokio::time::sleep(Duration::from_secs(61 - second)).await;
    }
    let mock = MockLlm::start().await.unwrap();
    let db = database("tg_quota").await;
    let link = StoreLink::start().await;
    let dir = support::tempdir::TempDir::new();
    let config = dir.path().join("kong.yaml");
    // A fresh plugin id: its Redis counters are this run's.
    let id = uuid_like();
    std::fs::write(
        &config,
        format!(
            r#"
_format_version: "3.0"
services:
  - name: mock
    url: http://unused.invalid
    routes:
      - name: limited
        paths: ["/limited"]
        plugins:
          - name: rate-limiting
            id: {id}
            config: {{minute: 50, policy: redis, redis: {{host: 127.0.0.1, port: 6379}}}}
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              model: {{provider: openai, name: m, options: {{upstream_url: "{}/v1/chat/completions"}}}}
"#,
            mock.url()
        ),
    )
    .unwrap();
    let analytics = format!("host=127.0.0.1 user=postgres dbname={db}");
    let args = [
        "--analytics",
        "postgres",
        "--analytics-postgres",
        analytics.as_str(),
    ];
    let nodes: Vec<Node> = (0..3)
        .map(|i| {
            node_with(
                &config,
                &dir.path().join(format!("n{i}")),
                &link,
                &db,
                &args,
                &[],
            )
        })
        .collect();
    const SENT: usize = 90;
    let asks: Vec<_> = (0..SENT)
        .map(|i| status_of(format!("{}/limited", nodes[i % 3].proxy)))
        .collect();
    let statuses: Vec<u16> = futures_util::future::join_all(asks).await;
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((admitted, refused), (50, SENT - 50), "{statuses:?}");

    // Every request's record, from every node, in the one table.
    let (client, conn) = tokio_postgres::connect(&analytics, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let deadline = Instant::now() + Duration::from_secs(15);
    let (mut rows, mut ok) = (0i64, 0i64);
    while Instant::now() < deadline {
        // Rows hold a second's requests of one node each (`requests`).
        let q = "SELECT COALESCE(SUM(requests), 0)::BIGINT, \
                 COALESCE(SUM(requests) FILTER (WHERE status = 200), 0)::BIGINT \
                 FROM tollgate_usage WHERE route = 'limited'";
        if let Ok(r) = client.query_one(q, &[]).await {
            (rows, ok) = (r.get(0), r.get(1));
            if rows == SENT as i64 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!((rows, ok), (SENT as i64, 50), "usage records in PostgreSQL");
}

/// POSTs a chat request to `url`; its status.
async fn status_of(url: String) -> u16 {
    post_json(&url, &chat()).await.status
}

/// A UUID-shaped id unique to this run.
fn uuid_like() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        ^ (u128::from(std::process::id()) << 64);
    let h = format!("{t:032x}");
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// Plain secrets written through the Admin API are sealed in the store with
/// `TOLLGATE_STORE_KEY`; the nodes open them to use them. Without a key they are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_secrets_are_sealed_in_the_store() {
    let mock = MockLlm::start().await.unwrap();
    let db = database("tg_seal").await;
    let link = StoreLink::start().await;
    let dir = support::tempdir::TempDir::new();
    let config = dir.path().join("kong.yaml");
    std::fs::write(
        &config,
        format!(
            "_format_version: \"3.0\"\nservices: [{{name: mock, url: \"{}\"}}]\n",
            mock.url()
        ),
    )
    .unwrap();
    let key = [(
        "TOLLGATE_STORE_KEY",
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
    )];
    let off = ["--analytics", "off"];
    let a = node_with(&config, &dir.path().join("a"), &link, &db, &off, &key);
    let b = node_with(&config, &dir.path().join("b"), &link, &db, &off, &key);
    let route = json!({"name": "chat", "paths": ["/chat"], "service": {"name": "mock"}});
    assert_eq!(
        post_json(&format!("{}/routes", a.admin), &route)
            .await
            .status,
        201
    );
    let plugin = json!({"name": "ai-proxy", "route": {"name": "chat"}, "config": {
        "route_type": "llm/v1/chat",
        "auth": {"header_name": "Authorization", "header_value": "Bearer sk-plain-7c1e"},
        "model": {"provider": "openai", "name": "m",
                  "options": {"upstream_url": format!("{}/v1/chat/completions", mock.url())}}}});
    let r = post_json(&format!("{}/plugins", a.admin), &plugin).await;
    assert_eq!(r.status, 201, "{}", r.text());
    // Node b uses the key it opened from the store.
    assert!(served_within(&b, "/chat", Duration::from_secs(2))
        .await
        .is_some());
    let seen = mock.last_request().unwrap();
    assert_eq!(seen.header("authorization"), Some("Bearer sk-plain-7c1e"));
    // The database holds it sealed.
    let (client, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 user=postgres dbname={db}"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let doc: String = client
        .query_one("SELECT document FROM tollgate_config", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        !doc.contains("sk-plain-7c1e") && doc.contains("tgenc:v1:"),
        "{doc}"
    );
    for f in ["a", "b"] {
        let cached = std::fs::read_to_string(dir.path().join(f).join("cluster-config.yaml"));
        assert!(!cached.unwrap_or_default().contains("sk-plain-7c1e"));
    }
    drop((a, b));
    // A node without the key cannot run that configuration, and says why.
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--store", "postgres", "--store-postgres"])
        .arg(format!(
            "host=127.0.0.1 port={} user=postgres dbname={db}",
            link.port
        ))
        .args(["--proxy-listen", "127.0.0.1:0", "--admin-listen", "off"])
        .args([
            "--proxy-tls-listen",
            "off",
            "--analytics",
            "off",
            "--data-dir",
        ])
        .arg(dir.path().join("c"))
        .env_remove("TOLLGATE_STORE_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("holds encrypted secrets: set TOLLGATE_STORE_KEY"),
        "{err}"
    );
    // An empty store is not seeded with a plain secret when there is no key to seal it.
    let empty = database("tg_seal_empty").await;
    let seed = dir.path().join("secret.yaml");
    std::fs::write(
        &seed,
        "_format_version: \"3.0\"\nplugins: [{name: ai-proxy, config: {route_type: llm/v1/chat, auth: {header_name: Authorization, header_value: Bearer sk-x}, model: {provider: openai, name: m}}}]\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--store", "postgres", "--store-postgres"])
        .arg(format!("host=127.0.0.1 user=postgres dbname={empty}"))
        .args(["--proxy-listen", "127.0.0.1:0", "--admin-listen", "off"])
        .args([
            "--proxy-tls-listen",
            "off",
            "--analytics",
            "off",
            "--config",
        ])
        .arg(&seed)
        .arg("--data-dir")
        .arg(dir.path().join("d"))
        .env_remove("TOLLGATE_STORE_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the store is empty and 1 plain secret value(s)")
            && err.contains("TOLLGATE_STORE_KEY"),
        "{err}"
    );
}
