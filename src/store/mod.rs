//! Shared stores below the config and the plugins: the Redis client that token quotas,
//! rate-limiting counters and semantic vectors use, and the configuration of a cluster in
//! PostgreSQL. Imports only layer 1 (`secret`).

pub mod config_pg;
pub mod redis;
pub mod seal;
