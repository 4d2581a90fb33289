//! respite: a RESP proxy in front of a sharded Redis fleet.
//!
//! ```text
//!  clients ──RESP──▶ listener ─▶ ClientConn ─frame─▶ route ─┬─ Local: answered here
//!                                   ▲                       ├─ Forward: picker ─▶ BackendConn
//!                                   │                       ├─ Fanout: every shard master
//!                                   │                       └─ Session: a connection of its own
//!                                   │ replies in request order      (unsent → inflight FIFO)
//!                                   └──── PendingQueue ◀── reply ◀──────────────┘
//!  probes: one connection per backend and shard, a round every interval; rise/fall flips health
//! ```
//!
//! One `mio` event loop on one thread owns every connection; everything that needs the whole
//! loop is in `proxy/`. Every other module holds data and pure logic, unit-tested with bytes:
//! framing (`resp`), the command table (`command`), a request (`request`), the connection slab
//! (`conns`), clients (`client`, `pending`), backend connections (`backend`), the upstream lists
//! (`upstream`, `picker`, `health`), fan-out plans and merges (`fanout`), RESP3 shapes (`resp3`),
//! counters (`stats`, `histogram`), `/metrics` HTTP (`metrics`), configuration (`config`). See
//! `README.md` for the architecture and configuration.

pub mod backend;
pub mod client;
pub mod command;
pub mod command_table;
pub mod config;
pub mod conns;
pub mod fanout;
pub mod health;
pub mod histogram;
pub mod keymap;
pub mod keys;
pub mod metrics;
pub mod net;
pub mod pending;
pub mod picker;
pub mod proxy;
pub mod pubsub;
pub mod request;
pub mod resp;
pub mod resp3;
pub mod stats;
pub mod tls;
pub mod upstream;

pub use config::{Cli, Config, ConfigError};
pub use proxy::{Listeners, Proxy, ShutdownHandle};
pub use tls::TlsSettings;
