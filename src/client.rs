//! `ClientConn`: one downstream connection — its read buffer and scanner state, its pending
//! queue of reply slots, its output queue, its mode and session, and the flags that drive
//! backpressure and closing.
//!
//! ```text
//!  Normal ──WATCH──▶ Watching ──MULTI──▶ Multi ──EXEC/DISCARD──▶ Normal
//!    │  └──────────────MULTI─────────────▲  └─session lost, -CROSSSLOT──▶ BrokenTxn ──EXEC/DISCARD──▶ Normal
//!    ├──SUBSCRIBE──▶ Subscribed ──last UNSUBSCRIBE──▶ Normal
//!    └──a request still arriving at 4 MiB──▶ Streaming ──its last piece sent──▶ Normal
//!  RESET: any mode ──▶ Normal (and the session closes)
//! ```
//!
//! Invariants: `backend` is meaningful only while `pending.waiting() > 0` (a client with nothing
//! in flight gets a fresh pick); replies reach `out` only through `pending` (pub/sub pushes
//! aside), so they keep request order. Reading stops (READABLE interest stays registered) while
//! `reading_stopped` says so: its pipeline or output is over a limit (`paused`), a backend
//! connection it feeds is not draining (`held`), it waits at a barrier with 1 MiB buffered, it
//! has closed its side, or respite is shutting down.

use crate::backend::Origin;
use crate::conns::ConnRef;
use crate::net::OutQueue;
use crate::pending::PendingQueue;
use crate::pubsub::Subscriptions;
use crate::resp::{Limits, RequestScanner};
use crate::tls::Stream;
use crate::upstream::Upstream;
use bytes::BytesMut;
use std::net::SocketAddr;
use std::time::Instant;

/// Bytes a client waiting at a barrier may have buffered before it is not read.
pub const BARRIER_READ_LIMIT: usize = 1 << 20;

/// What a client's requests mean right now, beyond routing by command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Each request is routed by its command.
    Normal,
    /// After WATCH, before MULTI: every request goes to the session until EXEC, DISCARD or
    /// UNWATCH.
    Watching,
    /// Inside MULTI: every request goes to the session until EXEC or DISCARD.
    Multi,
    /// The transaction cannot run any more (its session broke, or a command of it could not
    /// join it): every request gets `each` (an error, or `+QUEUED` as Redis answers after a
    /// queueing error), EXEC gets `exec`, until EXEC or DISCARD.
    BrokenTxn {
        each: bytes::Bytes,
        exec: &'static str,
    },
    /// Subscribed: only the subscribe family, PING, QUIT and RESET (any command in RESP3).
    Subscribed,
    /// A large request is streaming to the session as it arrives: the origin of its slot.
    Streaming(Origin),
}

impl Mode {
    /// Watching or inside MULTI: requests go to the session connection.
    pub fn pinned(&self) -> bool {
        matches!(self, Mode::Watching | Mode::Multi)
    }
}

/// A client's connection of its own (transactions, blocking commands, pub/sub, a streamed
/// request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    /// The backend connection.
    pub conn: ConnRef,
    /// Where it goes.
    pub target: Upstream,
    /// It closes once the requests sent on it are answered: it was opened to stream one
    /// request, or it carried a subscription that ended with requests still in flight.
    pub closing: bool,
}

/// A downstream connection.
#[derive(Debug)]
pub struct ClientConn {
    /// The socket.
    pub stream: Stream,
    /// Client id (`CLIENT ID`), unique for the process.
    pub id: u64,
    /// Remote address.
    pub peer: SocketAddr,
    /// Local address.
    pub local: Option<SocketAddr>,
    /// Bytes read and not yet framed.
    pub rbuf: BytesMut,
    /// Framing state of `rbuf`.
    pub scanner: RequestScanner,
    /// Reply slots in request order.
    pub pending: PendingQueue,
    /// Replies ready to write.
    pub out: OutQueue,
    /// Backend of the requests in flight (see the module invariant).
    pub backend: Option<usize>,
    /// The path its last forwarded request took (through the backends, or straight to a shard
    /// master): a request on the other path waits for the requests in flight.
    pub path: crate::proxy::Path,
    /// In front of a Redis Cluster: the key map's epoch when its requests in flight were
    /// routed (a request routed by a newer map waits for them: `changes_path`).
    pub map_epoch: u64,
    /// Its requests waiting for the cluster to serve their slot again (`proxy/cluster.rs`):
    /// later requests wait behind them.
    pub waiting_for_cluster: u32,
    /// Speaks RESP3 (`HELLO 3`): replies are converted to RESP3 shapes.
    pub resp3: bool,
    /// Passed `AUTH` (always true without `--password`).
    pub authed: bool,
    /// `CLIENT SETNAME`.
    pub name: Option<Vec<u8>>,
    /// `CLIENT SETINFO LIB-NAME`.
    pub lib_name: Option<Vec<u8>>,
    /// `CLIENT SETINFO LIB-VER`.
    pub lib_ver: Option<Vec<u8>>,
    /// Name of the last command.
    pub last_cmd: &'static str,
    /// When the connection was accepted.
    pub created: Instant,
    /// Last time a request arrived.
    pub last_active: Instant,
    /// Edge state: readable since the last `WouldBlock`.
    pub readable: bool,
    /// Edge state: writable since the last `WouldBlock`.
    pub writable: bool,
    /// Reading stopped by backpressure on its own output or pipeline.
    pub paused: bool,
    /// Reading stopped because a backend connection it feeds is not draining.
    pub held: bool,
    /// The client closed its side: close once every reply is written.
    pub read_closed: bool,
    /// An event said the peer closed (or failed): reads go on to EOF instead of stopping at a
    /// short read.
    pub peer_hup: bool,
    /// Close once the queued output is written (QUIT, protocol error).
    pub close_after_flush: bool,
    /// A fan-out, session command or streamed request is in flight or waits for earlier
    /// requests: later requests wait for it.
    pub barrier: bool,
    /// What its requests mean beyond their commands.
    pub mode: Mode,
    /// The reply shapes of the commands queued in its open MULTI (RESP3 clients): EXEC's
    /// reply takes them.
    pub queued: Vec<crate::resp3::Shape>,
    /// The first requests of a transaction behind twemproxy (MULTI and keyless ones),
    /// answered `+OK`/`+QUEUED` and held until a key chooses the shard master it runs on
    /// (`proxy/keyed.rs`).
    pub txn_head: Vec<bytes::Bytes>,
    /// Its connection of its own, if any.
    pub session: Option<Session>,
    /// In front of a Redis Cluster: subscribed connections of its own to other masters than
    /// its session's, for shard channels that live there.
    pub shard_subs: Vec<Session>,
    /// What it is subscribed to, as the confirmations reported it.
    pub subs: Subscriptions,
    /// Queued in the loop's dirty list.
    pub dirty: bool,
}

impl ClientConn {
    /// A new client connection.
    pub fn new(stream: Stream, id: u64, peer: SocketAddr, authed: bool, now: Instant) -> Self {
        let local = stream.tcp().local_addr().ok();
        ClientConn {
            stream,
            id,
            peer,
            local,
            rbuf: BytesMut::new(),
            scanner: RequestScanner::new(),
            pending: PendingQueue::new(),
            out: OutQueue::default(),
            backend: None,
            authed,
            resp3: false,
            name: None,
            lib_name: None,
            lib_ver: None,
            last_cmd: "NULL",
            created: now,
            last_active: now,
            readable: false,
            writable: true,
            paused: false,
            held: false,
            read_closed: false,
            peer_hup: false,
            close_after_flush: false,
            barrier: false,
            mode: Mode::Normal,
            path: crate::proxy::Path::Backends,
            map_epoch: 0,
            waiting_for_cluster: 0,
            queued: Vec::new(),
            txn_head: Vec::new(),
            session: None,
            shard_subs: Vec::new(),
            subs: Subscriptions::default(),
            dirty: false,
        }
    }

    /// Releases the buffers of a client with nothing buffered or pending.
    pub fn shrink_idle(&mut self) {
        if self.rbuf.is_empty() && self.rbuf.capacity() > 0 && self.scanner.partial_len() == 0 {
            self.rbuf = BytesMut::new();
        }
        if self.pending.is_empty() {
            self.pending.shrink();
        }
        if self.out.is_empty() {
            self.out.shrink();
        }
    }

    /// The limits its requests are scanned with: Redis's small ones until it authenticates.
    pub fn limits(&self, configured: Limits) -> Limits {
        if self.authed {
            configured
        } else {
            configured.before_auth()
        }
    }

    /// True when its requests may be forwarded in runs: no session state, no protocol
    /// conversion, nothing to wait for.
    pub fn plain(&self) -> bool {
        self.authed
            && !self.resp3
            && self.path == crate::proxy::Path::Backends
            && self.mode == Mode::Normal
            && !self.barrier
            && self.session.is_none()
    }

    /// True when it must not be read now (see the module comment).
    pub fn reading_stopped(&self, shutting_down: bool) -> bool {
        let at_barrier = self.barrier && self.rbuf.len() >= BARRIER_READ_LIMIT;
        self.paused || self.held || at_barrier || self.read_closed || shutting_down
    }

    /// True while its streamed request still arrives.
    pub fn streaming(&self) -> bool {
        matches!(self.mode, Mode::Streaming(_))
    }

    /// True when subscribed.
    pub fn subscribed(&self) -> bool {
        self.mode == Mode::Subscribed
    }

    /// True when every reply has been written (TLS records included) and nothing waits.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.out.is_empty() && !self.stream.wants_write()
    }
}
