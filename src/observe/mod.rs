//! What the gateway tells operators: the per-request log record and its sinks.

pub mod analytics;
pub mod file_log;
pub mod http_log;
mod json_out;
pub mod log;
pub mod metrics;
pub mod otel;
pub mod otlp_proto;
