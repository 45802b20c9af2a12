//! Command-line helpers that talk to a running gateway's Admin API.

pub mod keys;
