//! The network below the request path: the pooled upstream HTTP client, what its TLS
//! trusts, and reading whole bodies. Every layer that talks to an upstream (the proxy,
//! vaults, embeddings, exporters) uses these, so they import only `error` and `rt`.

pub mod body;
pub mod upstream;
pub mod upstream_tls;
