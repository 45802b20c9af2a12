//! LLM dialects: request encoding, response decoding, stream observation, usage.
//! Pure functions only; the proxy does the I/O.

pub mod anthropic;
pub mod body;
pub mod openai;
pub mod sse;
pub mod stream;
pub mod usage;
