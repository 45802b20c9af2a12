//! `loadgen`: a small HTTP/1.1 load generator for the benchmarks in `bench/`.
//!
//! Load mode (`--connections N --duration SECS`) keeps N connections busy with
//! sequential requests, like wrk, and also measures the time to the response
//! head and to the first body byte, which wrk cannot. Hold mode (`--hold N`)
//! opens N connections, sends one (streaming) request on each and reads every
//! response to the end. Both print one JSON object on stdout.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

const USAGE: &str = "usage:
  loadgen --url URL [--body-file F] --connections N --duration SECS [--warmup SECS]
          [--requests N] [--expect-done] [--timeout SECS] [--header 'name: value']...
  loadgen --url URL [--body-file F] --hold N [--batch N] [--timeout SECS] [--header ...]

  --url URL          http://host:port/path (plain HTTP/1.1 only)
  --body-file F      POST this file as application/json (without it: GET)
  --connections N    concurrent connections, each sending requests one after another
  --duration SECS    how long to measure (after the warm-up)
  --warmup SECS      load sent before measuring, not counted (default 0)
  --requests N       stop after N requests in total (with or without --duration)
  --expect-done      a response without `[DONE]` in its body counts as an error
  --timeout SECS     per-request limit (default 30; in hold mode 120)
  --hold N           hold mode: N connections open at once, one request each
  --batch N          hold mode: connections opened per ramp step (default 100; keep it
                     below the server's listen backlog)
  --header 'n: v'    extra request header (repeatable)

Load mode prints {requests, errors, rps, latency_us, headers_us, ttfb_us, ...};
hold mode prints {opened, completed, failed, max_concurrent, elapsed_ms, ...}.
`ttfb` is the time from sending the request to the first byte of the response
body (the first SSE event for a stream); `headers` is the time to the response head.";

/// What to send and where.
#[derive(Debug, Clone)]
struct Target {
    /// `host:port` to connect to.
    addr: String,
    /// Value of the `Host` header.
    host: String,
    /// Origin-form request target, e.g. `/v1/chat/completions`.
    path: String,
    method: Method,
    body: Bytes,
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// Command line options.
#[derive(Debug)]
struct Options {
    url: String,
    body_file: Option<String>,
    connections: usize,
    duration: Option<f64>,
    warmup: f64,
    requests: Option<u64>,
    expect_done: bool,
    timeout: Option<f64>,
    hold: Option<usize>,
    batch: usize,
    headers: Vec<String>,
}

/// `Ok(None)` means help was asked for.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Options>, String> {
    let mut options = Options {
        url: String::new(),
        body_file: None,
        connections: 1,
        duration: None,
        warmup: 0.0,
        requests: None,
        expect_done: false,
        timeout: None,
        hold: None,
        batch: 100,
        headers: Vec::new(),
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => {
                (name.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        let mut value = || -> Result<String, String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => args.next().ok_or_else(|| format!("{name} needs a value")),
            }
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(None),
            "--expect-done" => options.expect_done = true,
            "--url" => options.url = value()?,
            "--body-file" => options.body_file = Some(value()?),
            "--connections" | "-c" => options.connections = number(&name, &value()?)?,
            "--duration" | "-d" => options.duration = Some(seconds(&name, &value()?)?),
            "--warmup" => options.warmup = seconds(&name, &value()?)?,
            "--requests" => options.requests = Some(number(&name, &value()?)?),
            "--timeout" => options.timeout = Some(seconds(&name, &value()?)?),
            "--hold" => options.hold = Some(number(&name, &value()?)?),
            "--batch" => options.batch = number(&name, &value()?)?,
            "--header" | "-H" => options.headers.push(value()?),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if options.url.is_empty() {
        return Err("--url is required".into());
    }
    if options.connections == 0 || options.batch == 0 || options.hold == Some(0) {
        return Err("--connections, --batch and --hold must be at least 1".into());
    }
    if options.hold.is_none() && options.duration.is_none() && options.requests.is_none() {
        return Err("give --duration, --requests or --hold".into());
    }
    Ok(Some(options))
}

fn number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{name}: `{value}` is not a whole number"))
}

fn seconds(name: &str, value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Ok(s),
        _ => Err(format!("{name}: `{value}` is not a number of seconds")),
    }
}

/// Splits `http://host[:port][/path]` into what a raw connection needs.
fn parse_url(url: &str) -> Result<(String, String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("only http:// URLs are supported: `{url}`"))?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("no host in `{url}`"));
    }
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_owned()
    };
    let has_port = match authority.rfind(']') {
        Some(close) => authority[close..].contains(':'),
        None => authority.contains(':'),
    };
    let addr = if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok((addr, authority.to_owned(), path))
}

fn target(options: &Options) -> Result<Target, String> {
    let (addr, host, path) = parse_url(&options.url)?;
    let (method, body) = match &options.body_file {
        Some(file) => {
            let body = std::fs::read(file).map_err(|err| format!("cannot read {file}: {err}"))?;
            (Method::POST, Bytes::from(body))
        }
        None => (Method::GET, Bytes::new()),
    };
    let mut headers = Vec::new();
    for header in &options.headers {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| format!("--header `{header}` is not `name: value`"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|err| format!("--header `{header}`: {err}"))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|err| format!("--header `{header}`: {err}"))?;
        headers.push((name, value));
    }
    Ok(Target {
        addr,
        host,
        path,
        method,
        body,
        headers,
    })
}

/// Why one request failed; the key of the `error_kinds` map.
#[derive(Debug)]
struct Failure {
    kind: &'static str,
    detail: String,
}

impl Failure {
    fn new(kind: &'static str, detail: impl std::fmt::Display) -> Failure {
        Failure {
            kind,
            detail: detail.to_string(),
        }
    }
}

/// Timings of one successful request, in microseconds.
#[derive(Debug, Clone, Copy)]
struct Timing {
    total: u64,
    headers: u64,
    ttfb: u64,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Opens a connection and spawns its driver task.
async fn connect(target: &Target) -> Result<SendRequest<Full<Bytes>>, Failure> {
    let stream = TcpStream::connect(&target.addr)
        .await
        .map_err(|err| Failure::new("connect", err))?;
    // Like wrk: small requests must not wait for Nagle.
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|err| Failure::new("handshake", err))?;
    tokio::spawn(async move {
        // Errors also surface on the request that was in flight.
        let _ = conn.await;
    });
    Ok(sender)
}

fn request(target: &Target) -> Result<Request<Full<Bytes>>, Failure> {
    let mut builder = Request::builder()
        .method(target.method.clone())
        .uri(target.path.as_str())
        .header(HOST, target.host.as_str());
    if target.method == Method::POST {
        builder = builder.header(CONTENT_TYPE, "application/json");
    }
    for (name, value) in &target.headers {
        builder = builder.header(name, value);
    }
    builder
        .body(Full::new(target.body.clone()))
        .map_err(|err| Failure::new("request", err))
}

/// Finds `[DONE]` even when it is split across body frames.
#[derive(Default)]
struct DoneScanner {
    tail: Vec<u8>,
    seen: bool,
}

impl DoneScanner {
    const NEEDLE: &'static [u8] = b"[DONE]";

    fn feed(&mut self, data: &[u8]) {
        if self.seen {
            return;
        }
        let keep = Self::NEEDLE.len() - 1;
        self.tail.extend_from_slice(&data[..data.len().min(keep)]);
        if contains(&self.tail, Self::NEEDLE) || contains(data, Self::NEEDLE) {
            self.seen = true;
            return;
        }
        let source: &[u8] = if data.len() >= keep { data } else { &self.tail };
        let tail = source[source.len().saturating_sub(keep)..].to_vec();
        self.tail = tail;
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Sends one request on `sender` and reads the whole response.
async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    target: &Target,
    expect_done: bool,
    on_head: impl FnOnce(bool),
) -> Result<Timing, Failure> {
    let req = request(target)?;
    let start = Instant::now();
    let response = sender
        .send_request(req)
        .await
        .map_err(|err| Failure::new("send", err))?;
    let headers = micros(start.elapsed());
    let status = response.status();
    on_head(status == http::StatusCode::OK);
    let mut body = response.into_body();
    let mut ttfb = None;
    let mut done = DoneScanner::default();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|err| Failure::new("body", err))?;
        if let Ok(data) = frame.into_data() {
            if data.is_empty() {
                continue;
            }
            ttfb.get_or_insert_with(|| micros(start.elapsed()));
            if expect_done {
                done.feed(&data);
            }
        }
    }
    let total = micros(start.elapsed());
    if status != http::StatusCode::OK {
        return Err(Failure::new("status", format!("HTTP {}", status.as_u16())));
    }
    if expect_done && !done.seen {
        return Err(Failure::new("no_done", "body ended without [DONE]"));
    }
    Ok(Timing {
        total,
        headers,
        ttfb: ttfb.unwrap_or(total),
    })
}

/// Error counts by kind plus the first few distinct messages.
#[derive(Default)]
struct Errors {
    kinds: BTreeMap<String, u64>,
    samples: Vec<String>,
}

impl Errors {
    const MAX_SAMPLES: usize = 8;

    fn add(&mut self, failure: &Failure) {
        *self.kinds.entry(failure.kind.to_owned()).or_default() += 1;
        let message = format!("{}: {}", failure.kind, failure.detail);
        if self.samples.len() < Self::MAX_SAMPLES && !self.samples.contains(&message) {
            self.samples.push(message);
        }
    }

    fn merge(&mut self, other: Errors) {
        for (kind, n) in other.kinds {
            *self.kinds.entry(kind).or_default() += n;
        }
        for sample in other.samples {
            if self.samples.len() < Self::MAX_SAMPLES && !self.samples.contains(&sample) {
                self.samples.push(sample);
            }
        }
    }

    fn total(&self) -> u64 {
        self.kinds.values().sum()
    }
}

/// What one load-mode worker measured.
#[derive(Default)]
struct WorkerStats {
    timings: Vec<Timing>,
    errors: Errors,
    reconnects: u64,
    /// When the worker finished its last counted request.
    finished: Option<Instant>,
}

/// Settings shared by every load-mode worker.
struct LoadPlan {
    target: Target,
    expect_done: bool,
    timeout: Duration,
    measure_from: Instant,
    stop_at: Option<Instant>,
    /// Requests still allowed (counted and warm-up alike) when `--requests` is given.
    budget: Option<AtomicU64>,
}

impl LoadPlan {
    fn take_one(&self) -> bool {
        match &self.budget {
            None => true,
            Some(left) => left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok(),
        }
    }
}

async fn load_worker(plan: Arc<LoadPlan>) -> WorkerStats {
    let mut stats = WorkerStats::default();
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    let mut connected_once = false;
    loop {
        let now = Instant::now();
        if plan.stop_at.is_some_and(|stop| now >= stop) {
            break;
        }
        let counted = now >= plan.measure_from;
        let mut current = match sender.take() {
            Some(s) => s,
            None => match connect(&plan.target).await {
                Ok(s) => {
                    if connected_once {
                        stats.reconnects += 1;
                    }
                    connected_once = true;
                    s
                }
                Err(failure) => {
                    if counted {
                        stats.errors.add(&failure);
                    }
                    // Do not spin on a refused or exhausted port.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        if current.ready().await.is_err() {
            // The server closed the idle connection; open a new one.
            continue;
        }
        if !plan.take_one() {
            break;
        }
        let outcome = tokio::time::timeout(
            plan.timeout,
            exchange(&mut current, &plan.target, plan.expect_done, |_| {}),
        )
        .await;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(_) => Err(Failure::new(
                "timeout",
                format!("no full response within {:?}", plan.timeout),
            )),
        };
        match outcome {
            Ok(timing) => {
                if counted {
                    stats.timings.push(timing);
                    stats.finished = Some(Instant::now());
                }
                sender = Some(current);
            }
            Err(failure) => {
                if counted {
                    stats.errors.add(&failure);
                    stats.finished = Some(Instant::now());
                }
                // A non-200 with a complete body leaves the connection usable.
                if failure.kind == "status" || failure.kind == "no_done" {
                    sender = Some(current);
                }
            }
        }
    }
    stats
}

/// Percentiles of a distribution, in microseconds.
#[derive(Serialize, Default)]
struct Dist {
    p50: u64,
    p90: u64,
    p99: u64,
    max: u64,
    mean: f64,
}

impl Dist {
    fn of(mut values: Vec<u64>) -> Dist {
        if values.is_empty() {
            return Dist::default();
        }
        values.sort_unstable();
        let at = |q: f64| -> u64 {
            let rank = (q * values.len() as f64).ceil() as usize;
            values[rank.clamp(1, values.len()) - 1]
        };
        let sum: u128 = values.iter().map(|v| u128::from(*v)).sum();
        Dist {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: values[values.len() - 1],
            mean: (sum as f64 / values.len() as f64 * 10.0).round() / 10.0,
        }
    }
}

/// Load-mode result.
#[derive(Serialize)]
struct LoadReport {
    mode: &'static str,
    url: String,
    connections: usize,
    duration_s: f64,
    requests: u64,
    errors: u64,
    error_kinds: BTreeMap<String, u64>,
    error_samples: Vec<String>,
    reconnects: u64,
    rps: f64,
    latency_us: Dist,
    headers_us: Dist,
    ttfb_us: Dist,
}

async fn run_load(options: &Options, target: Target) -> LoadReport {
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(options.warmup);
    let plan = Arc::new(LoadPlan {
        target,
        expect_done: options.expect_done,
        timeout: Duration::from_secs_f64(options.timeout.unwrap_or(30.0)),
        measure_from,
        stop_at: options
            .duration
            .map(|d| measure_from + Duration::from_secs_f64(d)),
        budget: options.requests.map(AtomicU64::new),
    });
    let mut workers = JoinSet::new();
    for _ in 0..options.connections {
        workers.spawn(load_worker(Arc::clone(&plan)));
    }
    let mut timings = Vec::new();
    let mut errors = Errors::default();
    let mut reconnects = 0;
    let mut finished = measure_from;
    while let Some(joined) = workers.join_next().await {
        let Ok(stats) = joined else {
            errors.add(&Failure::new("worker", "a worker task failed"));
            continue;
        };
        timings.extend(stats.timings);
        errors.merge(stats.errors);
        reconnects += stats.reconnects;
        if let Some(at) = stats.finished {
            finished = finished.max(at);
        }
    }
    let elapsed = finished
        .saturating_duration_since(measure_from)
        .as_secs_f64();
    let requests = timings.len() as u64;
    let rps = if elapsed > 0.0 {
        (requests as f64 / elapsed * 10.0).round() / 10.0
    } else {
        0.0
    };
    LoadReport {
        mode: "load",
        url: options.url.clone(),
        connections: options.connections,
        duration_s: (elapsed * 1000.0).round() / 1000.0,
        requests,
        errors: errors.total(),
        error_kinds: errors.kinds,
        error_samples: errors.samples,
        reconnects,
        rps,
        latency_us: Dist::of(timings.iter().map(|t| t.total).collect()),
        headers_us: Dist::of(timings.iter().map(|t| t.headers).collect()),
        ttfb_us: Dist::of(timings.iter().map(|t| t.ttfb).collect()),
    }
}

/// Counters of hold mode.
#[derive(Default)]
struct HoldState {
    /// Streams with a 200 head whose body has not ended yet.
    open: AtomicUsize,
    max_open: AtomicUsize,
    opened: AtomicUsize,
    errors: Mutex<Errors>,
}

impl HoldState {
    fn fail(&self, failure: &Failure) {
        self.errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .add(failure);
    }
}

/// Hold-mode result.
#[derive(Serialize)]
struct HoldReport {
    mode: &'static str,
    url: String,
    requested: usize,
    opened: usize,
    completed: usize,
    failed: u64,
    max_concurrent: usize,
    ramp_ms: u64,
    elapsed_ms: u64,
    error_kinds: BTreeMap<String, u64>,
    error_samples: Vec<String>,
    latency_us: Dist,
    ttfb_us: Dist,
}

/// One held stream; `ready` fires once the response head arrived (or the attempt failed).
async fn hold_one(
    target: Arc<Target>,
    state: Arc<HoldState>,
    timeout: Duration,
    ready: oneshot::Sender<()>,
) -> Option<Timing> {
    let mut ready = Some(ready);
    let attempt = async {
        let mut sender = connect(&target).await?;
        sender
            .ready()
            .await
            .map_err(|err| Failure::new("handshake", err))?;
        let mut counted_open = false;
        let result = exchange(&mut sender, &target, true, |ok| {
            if ok {
                counted_open = true;
                state.opened.fetch_add(1, Ordering::Relaxed);
                let now = state.open.fetch_add(1, Ordering::Relaxed) + 1;
                state.max_open.fetch_max(now, Ordering::Relaxed);
            }
            if let Some(ready) = ready.take() {
                let _ = ready.send(());
            }
        })
        .await;
        if counted_open {
            state.open.fetch_sub(1, Ordering::Relaxed);
        }
        result
    };
    let outcome = match tokio::time::timeout(timeout, attempt).await {
        Ok(outcome) => outcome,
        Err(_) => Err(Failure::new(
            "timeout",
            format!("stream not finished within {timeout:?}"),
        )),
    };
    match outcome {
        Ok(timing) => Some(timing),
        Err(failure) => {
            state.fail(&failure);
            None
        }
    }
}

async fn run_hold(options: &Options, target: Target, n: usize) -> HoldReport {
    let target = Arc::new(target);
    let state = Arc::new(HoldState::default());
    let timeout = Duration::from_secs_f64(options.timeout.unwrap_or(120.0));
    let start = Instant::now();
    let mut streams = JoinSet::new();
    let mut launched = 0;
    while launched < n {
        let batch = options.batch.min(n - launched);
        let mut heads = Vec::with_capacity(batch);
        for _ in 0..batch {
            let (tx, rx) = oneshot::channel();
            heads.push(rx);
            streams.spawn(hold_one(
                Arc::clone(&target),
                Arc::clone(&state),
                timeout,
                tx,
            ));
        }
        launched += batch;
        // Open the next batch once this one has its response heads, so the
        // listener's backlog never overflows; a dropped sender (a failure) counts too.
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            for head in heads {
                let _ = head.await;
            }
        })
        .await;
    }
    let ramp_ms = micros(start.elapsed()) / 1000;
    let mut timings = Vec::with_capacity(n);
    while let Some(joined) = streams.join_next().await {
        match joined {
            Ok(Some(timing)) => timings.push(timing),
            Ok(None) => {}
            Err(_) => state.fail(&Failure::new("worker", "a stream task failed")),
        }
    }
    let elapsed_ms = micros(start.elapsed()) / 1000;
    let errors = std::mem::take(&mut *state.errors.lock().unwrap_or_else(PoisonError::into_inner));
    HoldReport {
        mode: "hold",
        url: options.url.clone(),
        requested: n,
        opened: state.opened.load(Ordering::Relaxed),
        completed: timings.len(),
        failed: errors.total(),
        max_concurrent: state.max_open.load(Ordering::Relaxed),
        ramp_ms,
        elapsed_ms,
        error_kinds: errors.kinds,
        error_samples: errors.samples,
        latency_us: Dist::of(timings.iter().map(|t| t.total).collect()),
        ttfb_us: Dist::of(timings.iter().map(|t| t.ttfb).collect()),
    }
}

fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("loadgen: {err}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let target = match target(&options) {
        Ok(target) => target,
        Err(err) => {
            eprintln!("loadgen: {err}");
            return ExitCode::from(2);
        }
    };
    // One thread, like `wrk -t1`: the benchmarks pin the generator to one core.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("loadgen: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let json = runtime.block_on(async {
        match options.hold {
            Some(n) => serde_json::to_string(&run_hold(&options, target, n).await),
            None => serde_json::to_string(&run_load(&options, target).await),
        }
    });
    match json {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("loadgen: cannot print the report: {err}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Options>, String> {
        parse_args(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn urls() {
        let (addr, host, path) = parse_url("http://127.0.0.1:9000/v1/chat/completions").unwrap();
        assert_eq!(
            (addr.as_str(), host.as_str()),
            ("127.0.0.1:9000", "127.0.0.1:9000")
        );
        assert_eq!(path, "/v1/chat/completions");
        let (addr, _, path) = parse_url("http://example.com").unwrap();
        assert_eq!((addr.as_str(), path.as_str()), ("example.com:80", "/"));
        let (addr, _, path) = parse_url("http://[::1]?q=1").unwrap();
        assert_eq!((addr.as_str(), path.as_str()), ("[::1]:80", "/?q=1"));
        assert!(parse_url("https://x").is_err());
        assert!(parse_url("http:///x").is_err());
    }

    #[test]
    fn options() {
        let o = parse(&[
            "--url",
            "http://a:1/",
            "-c",
            "16",
            "--duration=2.5",
            "--expect-done",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(o.connections, 16);
        assert_eq!(o.duration, Some(2.5));
        assert!(o.expect_done);
        assert!(parse(&["--url", "http://a:1/"]).is_err());
        assert!(parse(&["--url", "http://a:1/", "--hold", "0"]).is_err());
        assert!(parse(&["--url", "http://a:1/", "--duration", "-1"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
        assert!(parse(&["--help"]).unwrap().is_none());
        let o = parse(&["--url=http://a:1/", "--hold", "5000"])
            .unwrap()
            .unwrap();
        assert_eq!(o.hold, Some(5000));
    }

    #[test]
    fn done_split_across_frames() {
        for split in 0..=b"data: [DONE]\n\n".len() {
            let text = b"data: [DONE]\n\n";
            let mut scanner = DoneScanner::default();
            scanner.feed(&text[..split]);
            scanner.feed(&text[split..]);
            assert!(scanner.seen, "split at {split}");
        }
        let mut scanner = DoneScanner::default();
        for byte in b"xx[DO" {
            scanner.feed(&[*byte]);
        }
        scanner.feed(b"NE]");
        assert!(scanner.seen);
        let mut scanner = DoneScanner::default();
        scanner.feed(b"data: [DON");
        scanner.feed(b"data: E]");
        assert!(!scanner.seen);
    }

    #[test]
    fn percentiles() {
        let d = Dist::of((1..=100).collect());
        assert_eq!((d.p50, d.p90, d.p99, d.max), (50, 90, 99, 100));
        assert_eq!(d.mean, 50.5);
        assert_eq!(Dist::of(vec![7]).p99, 7);
        assert_eq!(Dist::of(Vec::new()).max, 0);
    }
}
