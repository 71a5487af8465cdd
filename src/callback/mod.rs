//! The notification listener: calld's only public port.
//!
//! Graph POSTs `commsNotifications` to the callbackUri. The listener checks
//! the bearer token ([`token`], keys from [`keys`]), parses the body
//! ([`notification`]) and hands an [`Inbound`] to the daemon through a
//! bounded channel, answering **202** as soon as it is queued. It never
//! waits for the ledger: a full channel is answered 503 with `Retry-After`,
//! so Graph retries.
//!
//! | answer | when |
//! |---|---|
//! | 202 | validated and queued (or a valid notification with no call event) |
//! | 400 | the body is not a notification |
//! | 401 | no token, or the token does not validate |
//! | 404 / 405 | another path (when `publicUrl` sets one) / not a POST |
//! | 408 | the body did not arrive within 30 s |
//! | 413 | the body is over 1 MiB |
//! | 503 | the daemon's queue is full or closed (`Retry-After`) |
//!
//! Usage from the daemon:
//!
//! ```no_run
//! # async fn f(cfg: calld::config::Config) -> anyhow::Result<()> {
//! use calld::callback::{CallbackOptions, CallbackState, serve, load_tls};
//! let opts = CallbackOptions::from_config(&cfg.callback, "client-id")?;
//! let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
//! let state = CallbackState::new(opts, tx)?;
//! let stats = state.stats(); // for the admin endpoint
//! let tls = cfg.callback.tls.as_ref().map(load_tls).transpose()?;
//! let listener = tokio::net::TcpListener::bind(&cfg.callback.listen).await?;
//! tokio::spawn(serve(listener, tls, state, std::future::pending()));
//! while let Some(inbound) = rx.recv().await { /* record */ }
//! # Ok(()) }
//! ```

pub mod keys;
mod limits;
pub mod notification;
mod server;
pub mod tls;
pub mod token;

pub use keys::{KeyCache, KeyCacheStats};
pub use limits::ListenerLimits;
pub use notification::{
    Ack, AckVerdict, CallEvent, CallState, ChangeType, Inbound, ParseError, ResultInfo,
    describe_result, parse_notification,
};
pub use server::{
    CallbackCounts, CallbackOptions, CallbackState, CallbackStats, router, serve, start,
};
pub use tls::{TlsListener, load_tls};
pub use token::{TokenError, TokenRules, Verified};
