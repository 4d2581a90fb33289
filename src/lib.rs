//! respite: a RESP proxy that balances every request over equivalent Redis backends.
//!
//! ```text
//!  clients ──RESP──▶ listener ─▶ ClientConn ─frame─▶ route ─┬─ Local: answered here
//!                                   ▲                       └─ Forward: picker ─▶ BackendConn
//!                                   │ replies in request order      (unsent → inflight FIFO)
//!                                   └──── PendingQueue ◀── reply ◀──────────────┘
//!  probes: one connection per backend, PING every interval; rise/fall flips health
//! ```
//!
//! One `mio` event loop on one thread owns every connection (`proxy.rs`). A request's raw bytes
//! are forwarded unchanged; a reply's raw bytes are returned unchanged, cut at frame boundaries by
//! a resumable scanner (`resp/`). See `README.md` for the architecture and configuration.

pub mod backend;
pub mod client;
pub mod command;
pub mod command_table;
pub mod config;
pub mod conns;
pub mod fanout;
pub mod health;
pub mod histogram;
pub mod metrics;
pub mod net;
pub mod pending;
pub mod picker;
pub mod proxy;
pub mod request;
pub mod resp;
pub mod resp3;
pub mod stats;
pub mod upstream;

pub use config::{Cli, Config, ConfigError};
pub use proxy::{Listeners, Proxy, ShutdownHandle};
