//! Providers other than OpenAI, through real HTTP: the gateway translates OpenAI requests
//! to each provider's API (mock-llm speaks them by path) and the answers back.
//!
//! One test binary, one module per dialect family; each dialect's golden transcripts live in
//! a directory named after it beside its module (`tests/providers/<provider>/`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// The harness every integration binary shares; this binary's root is one level deeper.
#[path = "../support/mod.rs"]
mod support;

mod common;
mod golden;

mod anthropic;
mod bedrock;
mod cohere;
mod config_errors;
mod encodings;
mod gemini;
mod ollama;
mod openai_compatible;
