//! Shared stores below the config and the plugins: the Redis client that token quotas,
//! rate-limiting counters and semantic vectors use. Imports only layer 1 (`secret`).

pub mod redis;
