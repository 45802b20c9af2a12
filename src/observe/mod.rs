//! What the gateway tells operators: the per-request log record and its sinks.

pub mod analytics;
pub mod file_log;
pub mod http_log;
mod json_out;
pub mod log;
pub mod metrics;
pub mod otel;
pub mod otlp_proto;

/// Moves what waits in a writer's queue into `into`; true once every sender is gone.
/// The writers sleep between calls rather than block on their queue, so the request path
/// never pays for waking one.
pub(crate) fn take_queued<T>(rx: &std::sync::mpsc::Receiver<T>, into: &mut Vec<T>) -> bool {
    loop {
        match rx.try_recv() {
            Ok(m) => into.push(m),
            Err(std::sync::mpsc::TryRecvError::Empty) => return false,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => return true,
        }
    }
}
