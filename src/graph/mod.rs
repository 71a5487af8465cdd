//! Token source and Graph client (create call, hang up, keepAlive, retries).
//!
//! - [`auth`]: OAuth 2.0 client credentials (secret or certificate), a cached
//!   token refreshed ahead of expiry with one refresh in flight, its `roles`.
//! - [`client`]: the HTTP client: bounded concurrency, timeouts, a fresh
//!   `client-request-id` per request, every attempt recorded.
//! - [`retry`]: the pure retry rules (which failures may be sent again).
//! - [`model`]: Graph's error body, the created call, the attempt record.
//!
//! Operator documentation: `docs/graph.md`.

pub mod auth;
pub mod client;
pub mod keeper;
pub mod model;
pub mod retry;

pub use auth::{
    AccessToken, AuthError, ClientCertificate, Credential, TokenSource, TokenSourceConfig,
};
pub use client::{
    CallOpOutcome, CallOpResult, CreateOutcome, CreateResult, GraphClient, GraphClientOptions,
    create_url, http_client,
};
pub use model::{Attempt, GraphError};
pub use retry::{Disposition, RetryPolicy};
