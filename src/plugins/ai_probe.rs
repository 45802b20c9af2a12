//! Active health checks of ai-proxy-advanced's targets (`balancer.healthchecks.active`, with
//! the field names of Kong's upstream health checks): each target is probed on its own
//! schedule, and one that fails enough probes in a row is taken out of the balancer until
//! enough succeed, before user traffic has to find out. The probes run on a thread of their
//! own and stop when the configuration they belong to is replaced.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Uri};

use crate::config::plugins::ActiveHealthcheck;
use crate::llm::target::Target;
use crate::net::upstream::{Endpoint, FailureKind, OutRequest, Upstreams};
use crate::plugins::ai_proxy::AiProxy;

/// What one probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Success,
    /// Answered with one of `unhealthy.http_statuses`.
    HttpFailure(u16),
    /// No connection.
    TcpFailure,
    Timeout,
    /// A status in neither list: counts for nothing, as in Kong.
    Neutral,
}

/// Whether `hc` probes anything at all.
pub fn enabled(hc: &ActiveHealthcheck) -> bool {
    hc.healthy.interval > 0.0 || hc.unhealthy.interval > 0.0
}

/// Starts probing `ai`'s targets.
pub fn start(ai: &Arc<AiProxy>, hc: ActiveHealthcheck) {
    let weak = Arc::downgrade(ai);
    let n = ai.targets.targets.len();
    crate::rt::background::spawn(
        "tollgate-healthcheck",
        "health checks",
        move || async move {
            let hc = Arc::new(hc);
            let pool = Upstreams::new();
            let probes: Vec<_> = (0..n)
                .map(|i| tokio::spawn(follow(weak.clone(), i, hc.clone(), pool.clone())))
                .collect();
            for p in probes {
                let _ = p.await;
            }
        },
    );
}

/// Probes target `i` until its configuration is gone.
async fn follow(ai: Weak<AiProxy>, i: usize, hc: Arc<ActiveHealthcheck>, pool: Upstreams) {
    // In a row: successes, HTTP failures, TCP failures, timeouts (a probe of one kind
    // ends the others' runs).
    let mut runs = [0u32; 4];
    loop {
        let down = match ai.upgrade() {
            Some(a) => a.balancer.target(i).is_some_and(|t| !t.probe_healthy()),
            None => return,
        };
        let interval = if down {
            hc.unhealthy.interval
        } else {
            hc.healthy.interval
        };
        // Not probed in this state: look again in a second (the state may change).
        let wait = if interval > 0.0 { interval } else { 1.0 };
        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        if interval <= 0.0 {
            continue;
        }
        let Some(a) = ai.upgrade() else {
            return;
        };
        let Some(target) = a.targets.targets.get(i) else {
            return;
        };
        let outcome = probe(&pool, target, &hc).await;
        let kind = match outcome {
            Outcome::Success => 0,
            Outcome::HttpFailure(_) => 1,
            Outcome::TcpFailure => 2,
            Outcome::Timeout => 3,
            Outcome::Neutral => continue,
        };
        let run = runs[kind].saturating_add(1);
        runs = [0; 4];
        runs[kind] = run;
        let [successes, http_failures, tcp_failures, timeouts] = runs;
        let u = &hc.unhealthy;
        let reached = |n: u32, limit: u32| limit > 0 && n >= limit;
        let Some(state) = a.balancer.target(i) else {
            return;
        };
        let upstream = format!("{}:{}", target.upstream.host, target.upstream.port);
        if !down
            && (reached(http_failures, u.http_failures)
                || reached(tcp_failures, u.tcp_failures)
                || reached(timeouts, u.timeouts))
        {
            state.set_probe_healthy(false);
            tracing::warn!(plugin = %a.plugin_id, target = i, %upstream, probe = ?outcome, "health check: target taken out of the balancer");
        } else if down && reached(successes, hc.healthy.successes) {
            state.set_probe_healthy(true);
            tracing::info!(plugin = %a.plugin_id, target = i, %upstream, "health check: target healthy again");
        }
    }
}

/// One probe of `target`: a GET of `http_path` with the target's credentials, or a
/// connection only (`type: tcp`).
async fn probe(pool: &Upstreams, target: &Target, hc: &ActiveHealthcheck) -> Outcome {
    let up = &target.upstream;
    let limit = Duration::from_secs_f64(hc.timeout.max(0.001));
    if hc.kind == "tcp" {
        let connecting = tokio::net::TcpStream::connect((&*up.host, up.port));
        return match tokio::time::timeout(limit, connecting).await {
            Ok(Ok(_)) => Outcome::Success,
            Ok(Err(_)) => Outcome::TcpFailure,
            Err(_) => Outcome::Timeout,
        };
    }
    let Ok(uri) = hc.http_path.parse::<Uri>() else {
        return Outcome::TcpFailure;
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::HOST, up.host_header.clone());
    if let Some((name, value)) = &target.auth.header {
        if let Ok(v) = value.value() {
            headers.insert(name.clone(), v);
        }
    }
    headers.insert(
        header::USER_AGENT,
        HeaderValue::from_static("tollgate-healthcheck"),
    );
    let out = OutRequest {
        method: Method::GET,
        target: uri,
        headers: headers.into(),
        body: Bytes::new(),
        upload: None,
    };
    let ep = Endpoint {
        https: up.scheme == "https" || hc.kind == "https",
        host: &up.host,
        port: up.port,
        trust: None,
    };
    match pool.send(&ep, out, limit, limit).await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            drop(resp);
            if hc.healthy.http_statuses.contains(&status) {
                Outcome::Success
            } else if hc.unhealthy.http_statuses.contains(&status) {
                Outcome::HttpFailure(status)
            } else {
                Outcome::Neutral
            }
        }
        Err(f) if f.kind == FailureKind::Timeout => Outcome::Timeout,
        Err(_) => Outcome::TcpFailure,
    }
}
