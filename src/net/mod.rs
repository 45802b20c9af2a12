//! The network below the request path: the pooled upstream HTTP client, what its TLS
//! trusts, reading whole bodies (and decoding their content codings), cloud access tokens
//! (Google service accounts, Azure identities), and the listener's certificates by server
//! name. Every layer that talks to an upstream (the proxy,
//! vaults, embeddings, exporters) uses these, so they import only
//! layer 1 (`rt`, `error`, `secret`).

pub mod azure;
pub mod body;
pub mod cloud_token;
pub mod encoding;
pub mod gcp;
pub mod h1;
pub mod inbound;
pub mod out_headers;
pub mod sni;
pub mod upstream;
pub mod upstream_tls;
