//! Command-line helpers: API keys through a running gateway's Admin API, and a cluster's
//! configuration store.

pub mod keys;
pub mod route_test;
pub mod store;
