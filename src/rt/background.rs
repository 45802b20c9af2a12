//! Work that runs beside the gateway's runtime on a thread of its own (vault refreshes,
//! health checks): started from wherever a configuration is compiled, inside a runtime or
//! not, and never competing with the proxy's workers for their scheduler.

use std::future::Future;

/// Runs `work` (made on the new thread) to completion on thread `name` with a
/// current-thread runtime; `what` names it in the error logged when it cannot start.
pub fn spawn<F, Fut>(name: &str, what: &'static str, work: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(work()),
                Err(e) => tracing::error!(error = %e, "{what} not started: no runtime"),
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "{what} not started: no thread");
    }
}

/// An error followed by its causes, `: `-separated (many libraries keep the reason, e.g.
/// "Connection refused", in a source their own message leaves out).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
