//! `ClientConn`: one downstream connection — its read buffer and scanner state, its pending
//! queue of reply slots, its output queue, and the flags that drive backpressure and closing.
//!
//! Invariants: `backend` is meaningful only while `pending.waiting() > 0` (a client with nothing
//! in flight gets a fresh pick); replies reach `out` only through `pending`, so they keep
//! request order; `paused` is the only thing that stops reading (READABLE interest stays).

use crate::net::OutQueue;
use crate::pending::PendingQueue;
use crate::resp::RequestScanner;
use bytes::BytesMut;
use mio::net::TcpStream;
use std::net::SocketAddr;
use std::time::Instant;

/// A downstream connection.
#[derive(Debug)]
pub struct ClientConn {
    /// The socket.
    pub stream: TcpStream,
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
    /// Close once the queued output is written (QUIT, protocol error).
    pub close_after_flush: bool,
    /// A fan-out is in flight or waits for earlier requests: later requests wait for it.
    pub barrier: bool,
    /// Its connection of its own (transactions, blocking commands, pub/sub), if any.
    pub session: Option<crate::conns::ConnRef>,
    /// Where `session` goes.
    pub session_target: Option<crate::upstream::Upstream>,
    /// Between WATCH/MULTI and EXEC/DISCARD/UNWATCH: every request goes to `session`.
    pub pinned: bool,
    /// Inside MULTI.
    pub in_multi: bool,
    /// The session broke inside MULTI: requests get this error until EXEC or DISCARD.
    pub txn_broken: Option<String>,
    /// Subscribed: only the pub/sub commands, PING, QUIT and RESET are accepted.
    pub subscribed: bool,
    /// A large request is streaming to `session` as it arrives: the origin of its reply slot.
    pub streaming: Option<crate::backend::Origin>,
    /// `session` was opened to stream a request: it closes once the request is answered.
    pub stream_session: bool,
    /// The request being routed (its tag goes into the slot it takes).
    pub cur: crate::pending::Tag,
    /// Queued in the loop's dirty list.
    pub dirty: bool,
}

impl ClientConn {
    /// A new client connection.
    pub fn new(stream: TcpStream, id: u64, peer: SocketAddr, authed: bool, now: Instant) -> Self {
        let local = stream.local_addr().ok();
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
            close_after_flush: false,
            barrier: false,
            session: None,
            session_target: None,
            pinned: false,
            in_multi: false,
            txn_broken: None,
            subscribed: false,
            streaming: None,
            stream_session: false,
            cur: crate::pending::Tag::unknown(0),
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

    /// True when its requests may be forwarded in runs: no session state, no protocol
    /// conversion, nothing to wait for.
    pub fn plain(&self) -> bool {
        self.authed
            && !self.resp3
            && !self.subscribed
            && !self.pinned
            && !self.barrier
            && self.txn_broken.is_none()
            && self.session.is_none()
    }

    /// True when every reply has been written and nothing waits.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.out.is_empty()
    }
}
