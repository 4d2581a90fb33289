//! `Proxy`: the `Poll`, the connection slab, the loop, dispatch, the dirty lists and shutdown.
//!
//! ```text
//!  poll(timeout to next tick) ─▶ events: accept │ client read→frame→route │ backend read→reply→slot
//!        ▲                                                                          │
//!        └── flush dirty backends (requests) ◀── flush dirty clients (replies) ◀── tick: probes,
//!                                                                                  timeouts, idle
//! ```
//!
//! Every socket is registered once, edge-triggered, for READABLE|WRITABLE; readiness is kept in
//! user space (`readable`/`writable` flags cleared only on `WouldBlock`), and backpressure only
//! stops reading. Connections live in one `Slab`; every entry has a generation, carried by every
//! origin, so a reply for a departed client is read and dropped, never delivered to a newcomer
//! that reused the slab key.

mod fanout;
mod info;
mod local;
mod metrics_http;
mod probe;
mod reload;
mod session;

use crate::backend::{Backend, BackendConn, ConnRef, Group, Origin, Upstream};
use crate::client::ClientConn;
use crate::command::{CommandTable, Route};
use crate::config::Config;
use crate::health::{Flip, ProbeConn};
use crate::net::{self, READ_CHUNK_BYTES};
use crate::pending::Tag;
use crate::picker::Picker;
use crate::resp::{self, reply, Frame};
use crate::stats::{Answered, Stats};
use bytes::{Bytes, BytesMut};
use log::{debug, error, info, trace, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);
const METRICS: Token = Token(usize::MAX - 4);

/// Housekeeping period: probe deadlines, request timeouts, idle clients.
const TICK: Duration = Duration::from_millis(50);
/// Over this much queued output a client is not read until it drains below `OUTPUT_RESUME_BYTES`.
const OUTPUT_PAUSE_BYTES: usize = 4 << 20;
const OUTPUT_RESUME_BYTES: usize = 1 << 20;
/// A backend connection with this much queued and unwritten pauses the clients feeding it...
const BACKEND_QUEUE_PAUSE_BYTES: usize = 8 << 20;
/// ...until it is below this.
const BACKEND_QUEUE_RESUME_BYTES: usize = 2 << 20;
/// A client waiting at a fan-out barrier is not read past this much buffered input.
const BARRIER_READ_LIMIT: usize = 1 << 20;
/// A partial request this large streams to a connection of its own as it arrives, rather
/// than waiting in the read buffer until it is whole (`start_stream`).
const STREAM_MIN_BYTES: usize = 4 << 20;
/// Most requests in one run (`process_input`).
const MAX_RUN: u32 = 256;

/// What gathering a run stopped at (`process_input`).
enum Step {
    /// The buffer holds no more complete request.
    Stop,
    /// The pending limit: check again (and pause).
    Recheck,
    /// A request of another command: send the run, then gather the next.
    SendRun,
    /// A request that is not plain: it goes its own way.
    Frame(
        Result<Option<Frame>, resp::FrameError>,
        Option<crate::command::CommandId>,
    ),
}

/// A run being gathered: `n` requests of command `cmd`, the first `len` bytes of the read buffer.
#[derive(Debug, Default)]
struct Run {
    len: usize,
    n: u32,
    cmd: crate::command::CommandId,
}

impl Run {
    /// True if a request of command `id` may join.
    fn takes(&self, id: crate::command::CommandId) -> bool {
        self.n == 0 || (self.cmd == id && self.n < MAX_RUN)
    }
}

/// The sockets a proxy serves, bound before it starts.
#[derive(Debug)]
pub struct Listeners {
    /// Where clients connect.
    pub clients: std::net::TcpListener,
    /// Where `/metrics` is served, if anywhere.
    pub metrics: Option<std::net::TcpListener>,
}

impl Listeners {
    /// Binds `config.listen` (one of several sockets sharing the port with `reuse_port`:
    /// SO_REUSEPORT, the kernel spreads connections over them) and `config.metrics_listen`.
    pub fn bind(config: &Config, reuse_port: bool) -> io::Result<Listeners> {
        let clients = if reuse_port {
            use socket2::{Domain, Socket, Type};
            let socket = Socket::new(Domain::for_address(config.listen), Type::STREAM, None)?;
            socket.set_reuse_address(true)?;
            socket.set_reuse_port(true)?;
            socket.bind(&config.listen.into())?;
            socket.listen(1024)?;
            socket.into()
        } else {
            std::net::TcpListener::bind(config.listen)?
        };
        let metrics = config
            .metrics_listen
            .map(std::net::TcpListener::bind)
            .transpose()?;
        Ok(Listeners { clients, metrics })
    }
}

impl From<std::net::TcpListener> for Listeners {
    fn from(clients: std::net::TcpListener) -> Self {
        Listeners {
            clients,
            metrics: None,
        }
    }
}

/// Stops a running proxy from another thread.
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl ShutdownHandle {
    /// Asks the loop to stop accepting, finish in-flight requests and return.
    pub fn shutdown(&self) {
        self.flag.store(true, Ordering::SeqCst);
        if let Err(e) = self.waker.wake() {
            error!("cannot wake the event loop: {e}");
        }
    }
}

pub(crate) enum Conn {
    // Boxed: clients outnumber the rest, and this keeps slab entries small.
    Client(Box<ClientConn>),
    Backend(BackendConn),
    Probe(ProbeConn),
    Http(crate::metrics::HttpConn),
}

pub(crate) struct Entry {
    pub(crate) gen: u32,
    pub(crate) conn: Conn,
}

/// The proxy: one event loop on one thread.
pub struct Proxy {
    poll: Poll,
    listener: Option<TcpListener>,
    metrics_listener: Option<TcpListener>,
    pub(crate) conns: Slab<Entry>,
    next_gen: u32,
    pub(crate) backends: Vec<Backend>,
    pub(crate) shards: Vec<Backend>,
    pub(crate) pubsub: Vec<Backend>,
    pub(crate) fanouts: Slab<crate::fanout::Fanout>,
    /// Clients waiting at a barrier (a fan-out) whose wait may be over.
    resume: Vec<ConnRef>,
    pub(crate) picker: Picker,
    pub(crate) commands: CommandTable,
    pub(crate) config: Config,
    pub(crate) scratch: Vec<u8>,
    dirty_clients: Vec<usize>,
    dirty_backends: Vec<usize>,
    revisit: Vec<ConnRef>,
    pub(crate) now: Instant,
    /// `now` as microseconds since the loop started: the clock of request tags and latencies.
    pub(crate) clock_us: u64,
    pub(crate) stats: Stats,
    next_client_id: u64,
    pub(crate) clients: usize,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    pub(crate) reload_cli: Option<crate::config::Cli>,
    draining_until: Option<Instant>,
    next_tick: Instant,
    next_idle_check: Instant,
    next_ops_sample: Instant,
    pub(crate) started: Instant,
    pub(crate) port: u16,
    pub(crate) worker_id: usize,
}

impl Proxy {
    /// A proxy serving `listeners`, already bound (so that tests can bind port 0 and hand them
    /// in): a client listener alone, or with the metrics listener (`Listeners::bind` binds both
    /// from the configuration).
    pub fn new(config: Config, listeners: impl Into<Listeners>) -> io::Result<Proxy> {
        let Listeners { clients, metrics } = listeners.into();
        let poll = Poll::new()?;
        let adopt = |l: std::net::TcpListener, token| -> io::Result<TcpListener> {
            l.set_nonblocking(true)?;
            let mut l = TcpListener::from_std(l);
            poll.registry()
                .register(&mut l, token, Interest::READABLE)?;
            Ok(l)
        };
        let port = clients.local_addr()?.port();
        let listener = adopt(clients, LISTENER)?;
        let metrics_listener = metrics.map(|l| adopt(l, METRICS)).transpose()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let now = Instant::now();
        let backends = config
            .backends
            .iter()
            .map(|&a| Backend::new(a, 2 * config.backend_connections, now))
            .collect();
        let pubsub = config
            .pubsub
            .iter()
            .map(|&a| Backend::new(a, 1, now))
            .collect();
        let shards = config
            .shards
            .iter()
            .map(|&a| Backend::new(a, 1, now))
            .collect();
        Ok(Proxy {
            poll,
            listener: Some(listener),
            metrics_listener,
            conns: Slab::with_capacity(1024),
            next_gen: 0,
            backends,
            shards,
            pubsub,
            fanouts: Slab::new(),
            resume: Vec::new(),
            picker: Picker::new(config.picker, config.seed),
            commands: CommandTable::new(),
            scratch: vec![0; READ_CHUNK_BYTES],
            dirty_clients: Vec::new(),
            dirty_backends: Vec::new(),
            revisit: Vec::new(),
            now,
            clock_us: 0,
            stats: Stats::default(),
            next_client_id: 1,
            clients: 0,
            stop: Arc::new(AtomicBool::new(false)),
            waker,
            signals: None,
            reload_cli: None,
            draining_until: None,
            next_tick: now,
            next_idle_check: now,
            next_ops_sample: now,
            started: now,
            port,
            worker_id: 0,
            config,
        })
    }

    /// Binds `config.listen` and builds the proxy. With `reuse_port`, the listener is one of
    /// several sharing the port (SO_REUSEPORT): the kernel spreads connections over them.
    pub fn bind(config: Config, reuse_port: bool) -> io::Result<Proxy> {
        let listeners = Listeners::bind(&config, reuse_port)?;
        Proxy::new(config, listeners)
    }

    /// Sets this loop's number among `--workers` (shown in INFO).
    pub fn set_worker_id(&mut self, id: usize) {
        self.worker_id = id;
    }

    /// A handle that stops the loop from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            flag: self.stop.clone(),
            waker: self.waker.clone(),
        }
    }

    /// Stops gracefully on SIGINT and SIGTERM (for the binary; tests use the handle).
    pub fn handle_signals(&mut self) -> io::Result<()> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let mut signals = signal_hook_mio::v1_0::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
        self.poll
            .registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        self.signals = Some(signals);
        Ok(())
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        match &self.listener {
            Some(l) => l.local_addr(),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Runs the loop until shutdown completes.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        info!(
            "listening on {} with {} backend(s), picker {:?}",
            self.local_addr()?,
            self.backends.len(),
            self.config.picker
        );
        loop {
            let timeout = if self.revisit.is_empty() {
                self.next_tick.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            self.now = Instant::now();
            self.clock_us = self.now.duration_since(self.started).as_micros() as u64;
            for event in events.iter() {
                self.on_event(event);
            }
            self.revisit_pending();
            self.resume_barriers();
            if self.now >= self.next_tick {
                self.on_tick();
            }
            self.flush_dirty();
            if self.draining_until.is_some() && self.drained() {
                info!("shutdown complete");
                return Ok(());
            }
        }
    }

    fn on_event(&mut self, event: &mio::event::Event) {
        match event.token() {
            LISTENER => self.accept(),
            METRICS => self.accept_http(),
            WAKER => {
                if self.stop.load(Ordering::SeqCst) {
                    self.begin_shutdown("requested");
                }
            }
            SIGNALS => {
                let got: Vec<i32> = self
                    .signals
                    .as_mut()
                    .map(|s| s.pending().collect())
                    .unwrap_or_default();
                for sig in got {
                    if sig == signal_hook::consts::SIGHUP {
                        info!("SIGHUP: reloading {:?}", self.config.config_file);
                        self.reload();
                    } else {
                        self.begin_shutdown("signal received");
                    }
                }
            }
            Token(t) => {
                let hup = event.is_read_closed() || event.is_error();
                let readable = event.is_readable() || hup;
                let writable = event.is_writable();
                match self.conns.get(t).map(|e| &e.conn) {
                    Some(Conn::Client(_)) => {
                        if writable {
                            self.on_client_writable(t);
                        }
                        if readable {
                            self.on_client_readable(t, hup);
                        }
                    }
                    Some(Conn::Backend(_)) => {
                        if writable || hup {
                            self.on_backend_writable(t);
                        }
                        if readable {
                            self.on_backend_readable(t, hup);
                        }
                    }
                    Some(Conn::Probe(_)) => self.on_probe_event(t, readable, writable || hup, hup),
                    Some(Conn::Http(_)) => self.on_http_event(t),
                    None => {}
                }
            }
        }
    }

    /// Clients whose fan-out barrier cleared: frame what they had buffered, and read on.
    fn resume_barriers(&mut self) {
        // Bounded: each pass only handles clients queued before it.
        for _ in 0..4 {
            if self.resume.is_empty() {
                return;
            }
            for r in std::mem::take(&mut self.resume) {
                let readable = match self.client_gen_mut(r.token, r.gen) {
                    Some(c) => c.readable,
                    None => continue,
                };
                self.process_input(r.token);
                if readable {
                    self.on_client_readable(r.token, false);
                }
            }
        }
    }

    fn revisit_pending(&mut self) {
        for r in std::mem::take(&mut self.revisit) {
            match self.conns.get(r.token) {
                Some(e) if e.gen == r.gen => match e.conn {
                    Conn::Client(_) => self.on_client_readable(r.token, false),
                    Conn::Backend(_) => self.on_backend_readable(r.token, false),
                    Conn::Probe(_) | Conn::Http(_) => {}
                },
                _ => {}
            }
        }
    }

    pub(crate) fn insert(&mut self, conn: Conn) -> ConnRef {
        self.next_gen = self.next_gen.wrapping_add(1);
        let gen = self.next_gen;
        let token = self.conns.insert(Entry { gen, conn });
        ConnRef { token, gen }
    }

    pub(crate) fn register(&mut self, token: usize) -> io::Result<()> {
        let registry = self.poll.registry();
        let Some(entry) = self.conns.get_mut(token) else {
            return Ok(());
        };
        let stream = match &mut entry.conn {
            Conn::Client(c) => &mut c.stream,
            Conn::Backend(b) => &mut b.stream,
            Conn::Probe(p) => &mut p.stream,
            Conn::Http(h) => &mut h.stream,
        };
        registry.register(
            stream,
            Token(token),
            Interest::READABLE | Interest::WRITABLE,
        )
    }

    pub(crate) fn remove(&mut self, token: usize) -> Option<Conn> {
        if !self.conns.contains(token) {
            return None;
        }
        let mut entry = self.conns.remove(token);
        let stream = match &mut entry.conn {
            Conn::Client(c) => &mut c.stream,
            Conn::Backend(b) => &mut b.stream,
            Conn::Probe(p) => &mut p.stream,
            Conn::Http(h) => &mut h.stream,
        };
        let _ = self.poll.registry().deregister(stream);
        Some(entry.conn)
    }

    // ---------------------------------------------------------------- clients

    fn accept(&mut self) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            let (mut stream, peer) = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: the connection stays in the backlog; the next tick
                    // retries instead of spinning on a listener that stays readable.
                    warn!("accept failed: {e}");
                    self.stats.accept_errors += 1;
                    return;
                }
            };
            self.stats.total_connections_received += 1;
            if self.clients >= self.config.maxclients {
                use std::io::Write;
                let _ = stream.write(&reply::MAX_CLIENTS);
                self.stats.rejected_connections += 1;
                warn!(
                    "client peer={peer} rejected: maxclients {} reached",
                    self.config.maxclients
                );
                continue;
            }
            let _ = stream.set_nodelay(true);
            let id = self.next_client_id;
            self.next_client_id += 1;
            let authed = self.config.password.is_none();
            let client = ClientConn::new(stream, id, peer, authed, self.now);
            let r = self.insert(Conn::Client(Box::new(client)));
            if let Err(e) = self.register(r.token) {
                warn!("client peer={peer} cannot be registered: {e}");
                self.remove(r.token);
                continue;
            }
            self.clients += 1;
            debug!("client={} id={id} peer={peer} connected", r.token);
        }
    }

    fn accept_http(&mut self) {
        loop {
            let Some(l) = &self.metrics_listener else {
                return;
            };
            let stream = match l.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!("metrics accept failed: {e}");
                    return;
                }
            };
            let conn = crate::metrics::HttpConn {
                stream,
                rbuf: BytesMut::new(),
                out: Vec::new(),
                responded: false,
            };
            let r = self.insert(Conn::Http(conn));
            if self.register(r.token).is_err() {
                self.remove(r.token);
            }
        }
    }

    pub(crate) fn client_mut(&mut self, token: usize) -> Option<&mut ClientConn> {
        match self.conns.get_mut(token) {
            Some(Entry {
                conn: Conn::Client(c),
                ..
            }) => Some(c),
            _ => None,
        }
    }

    /// The client at `token` if it is still the one with generation `gen`.
    pub(crate) fn client_gen_mut(&mut self, token: usize, gen: u32) -> Option<&mut ClientConn> {
        match self.conns.get_mut(token) {
            Some(Entry {
                gen: g,
                conn: Conn::Client(c),
            }) if *g == gen => Some(c),
            _ => None,
        }
    }

    pub(crate) fn mark_client_dirty(&mut self, token: usize) {
        if let Some(c) = self.client_mut(token) {
            if !c.dirty {
                c.dirty = true;
                self.dirty_clients.push(token);
            }
        }
    }

    fn on_client_writable(&mut self, token: usize) {
        if let Some(c) = self.client_mut(token) {
            c.writable = true;
            if !c.out.is_empty() {
                self.mark_client_dirty(token);
            }
        }
    }

    fn on_client_readable(&mut self, token: usize, hup: bool) {
        let gen = self.conns.get(token).map_or(0, |e| e.gen);
        let Some(Entry {
            conn: Conn::Client(c),
            ..
        }) = self.conns.get_mut(token)
        else {
            return;
        };
        c.readable = true;
        let held = c.barrier && c.rbuf.len() >= BARRIER_READ_LIMIT;
        if c.paused || c.held || held || c.read_closed || self.draining_until.is_some() {
            return;
        }
        match net::read_into(&mut c.stream, &mut c.rbuf, &mut self.scratch, hup) {
            Ok(r) => {
                if r.eof {
                    c.read_closed = true;
                } else if r.more {
                    self.revisit.push(ConnRef { token, gen });
                } else {
                    c.readable = false;
                }
            }
            Err(e) => {
                debug!("client={token} peer={} read error: {e}", c.peer);
                self.close_client(token, "read error");
                return;
            }
        }
        let read_closed = c.read_closed;
        self.process_input(token);
        if read_closed {
            // A client that half-closed with nothing pending is done now.
            self.mark_client_dirty(token);
        }
    }

    /// Frames and routes every complete request in the client's read buffer, until backpressure
    /// or a protocol error stops it.
    ///
    /// Consecutive plain requests of one command (GET after GET...) make a *run*: they stay in
    /// the read buffer until the run ends, then go to one backend as one buffer with one reply
    /// slot, so a pipeline costs one split, one slot and one queue entry per run, not per request.
    fn process_input(&mut self, token: usize) {
        let max_pending = self.config.client_max_pending;
        let limits = self.config.limits;
        let have_shards = !self.shards.is_empty();
        let mut run = Run::default();
        let mut stream = false;
        loop {
            let Some(Entry {
                conn: Conn::Client(c),
                ..
            }) = self.conns.get_mut(token)
            else {
                return;
            };
            if c.close_after_flush {
                break;
            }
            if c.pending.len() + run.n as usize >= max_pending || c.out.bytes() > OUTPUT_PAUSE_BYTES
            {
                if !c.paused {
                    debug!(
                        "client={token} paused (pending={} out={})",
                        c.pending.len(),
                        c.out.bytes()
                    );
                }
                c.paused = true;
                break;
            }
            if c.barrier {
                if c.pending.waiting() > 0 {
                    break;
                }
                c.barrier = false;
                if std::mem::take(&mut c.stream_session) {
                    // The streamed request is answered: its connection is done.
                    self.close_session_of(token);
                    continue;
                }
            }
            if c.streaming.is_some() {
                if self.stream_input(token) {
                    continue;
                }
                break;
            }
            // Gather plain requests into the run while they come, without leaving this loop.
            let plain = c.plain();
            let room = max_pending.saturating_sub(c.pending.len());
            let step = loop {
                if c.rbuf.len() == run.len {
                    break Step::Stop;
                }
                if run.n as usize >= room {
                    break Step::Recheck;
                }
                let frame = c.scanner.scan(&c.rbuf[run.len..], &limits);
                let id = match &frame {
                    Ok(Some(Frame::Multibulk { name, .. })) => {
                        let at = run.len + name.0;
                        self.commands.lookup(&c.rbuf[at..at + name.1])
                    }
                    Ok(Some(Frame::Inline { args, .. })) => self
                        .commands
                        .lookup(args.first().map_or(&[][..], |a| &a[..])),
                    _ => None,
                };
                if let (Ok(Some(Frame::Multibulk { len, .. })), Some(id)) = (&frame, id) {
                    if plain && self.commands.route(id) == Route::Forward {
                        if !run.takes(id) {
                            // Another command: it starts the next run (scanned again then).
                            break Step::SendRun;
                        }
                        run.len += len;
                        run.n += 1;
                        run.cmd = id;
                        continue;
                    }
                }
                break Step::Frame(frame, id);
            };
            let (frame, id) = match step {
                Step::Stop => break,
                Step::Recheck => continue,
                Step::SendRun => {
                    self.send_run(token, &mut run);
                    continue;
                }
                Step::Frame(frame, id) => (frame, id),
            };
            if run.n > 0 {
                // This frame ends the run: send the run first, which leaves the frame at the
                // front of the buffer, where the code below expects it.
                self.send_run(token, &mut run);
            }
            let barrier = barrier_cmd(&self.commands, id, have_shards);
            let clock_us = self.clock_us;
            let Some(Entry {
                conn: Conn::Client(c),
                ..
            }) = self.conns.get_mut(token)
            else {
                return;
            };
            let req = match frame {
                Ok(None) => {
                    stream = c.scanner.partial_len() >= STREAM_MIN_BYTES;
                    break;
                }
                Ok(Some(Frame::Empty { len })) => {
                    let _ = c.rbuf.split_to(len);
                    continue;
                }
                Ok(Some(Frame::Multibulk { len, .. })) => {
                    if barrier {
                        // A fan-out waits until the client's earlier requests are answered; the
                        // frame stays in the buffer and is scanned again then.
                        c.barrier = true;
                        if c.pending.waiting() > 0 {
                            return;
                        }
                    }
                    c.rbuf.split_to(len).freeze()
                }
                Ok(Some(Frame::Inline { len, args })) => {
                    if barrier {
                        c.barrier = true;
                        if c.pending.waiting() > 0 {
                            return;
                        }
                    }
                    let _ = c.rbuf.split_to(len);
                    resp::encode_request(&args)
                }
                Err(e) => {
                    warn!("client={token} peer={} {e}; closing", c.peer);
                    c.pending
                        .push_ready(resp::error(&format!("ERR {e}")), Tag::unknown(clock_us));
                    c.close_after_flush = true;
                    c.rbuf.clear();
                    c.barrier = false;
                    self.stats.protocol_errors += 1;
                    self.mark_client_dirty(token);
                    return;
                }
            };
            self.dispatch(token, req, id);
        }
        if run.n > 0 {
            self.send_run(token, &mut run);
        }
        if stream {
            self.start_stream(token);
        }
    }

    /// Starts streaming the large partial request at the front of the client's read buffer to
    /// a connection of its own, if it may: a plain client with no earlier request in flight (so
    /// that it runs after them), a forwarded command, a backend and a connection to be had.
    /// Otherwise the request stays buffered until it is whole, as any other.
    fn start_stream(&mut self, token: usize) {
        let Proxy {
            conns, commands, ..
        } = self;
        let Some(Entry {
            conn: Conn::Client(c),
            ..
        }) = conns.get_mut(token)
        else {
            return;
        };
        if !c.plain() || c.pending.waiting() > 0 {
            return;
        }
        let Some(id) = c
            .scanner
            .partial_name()
            .and_then(|(at, n)| commands.lookup(&c.rbuf[at..at + n]))
        else {
            return;
        };
        if commands.route(id) != Route::Forward {
            return;
        }
        let Some(b) = self.pick_backend() else {
            return;
        };
        let conn = match self.connect_session(token, Upstream::backend(b)) {
            Ok(conn) => conn,
            Err(why) => {
                debug!("client={token} buffers a large request: {why:?}");
                return;
            }
        };
        self.backends[b].requests += 1;
        self.stats.total_commands_processed += 1;
        let (now, instant) = (self.clock_us, self.now);
        let Some(c) = self.client_mut(token) else {
            return;
        };
        debug!(
            "client={token} streams a request of {}+ bytes on conn={conn}",
            c.scanner.partial_len()
        );
        c.stream_session = true;
        c.last_cmd = crate::command_table::COMMANDS[id as usize].name;
        c.last_active = instant;
        // The slot's tag keeps the request's first piece: enough for the slow log.
        let n = c.scanner.partial_len();
        c.cur = Tag {
            cmd: id,
            start: now,
            req: Bytes::copy_from_slice(&c.rbuf[..n.min(4096)]),
            retried: false,
        };
        let Some(origin) = self.slot_origin(token) else {
            return;
        };
        if let Some(c) = self.client_mut(token) {
            c.streaming = Some(origin);
        }
        self.stream_input(token);
    }

    /// Sends on what has arrived of the request streaming from client `token`. Returns true
    /// once the request was whole (and sent with its reply slot); later requests then wait
    /// for its reply, as they would behind a fan-out.
    fn stream_input(&mut self, token: usize) -> bool {
        let (limits, now) = (self.config.limits, self.now);
        let Some(c) = self.client_mut(token) else {
            return false;
        };
        let (Some(origin), Some(conn)) = (c.streaming, c.session) else {
            return false;
        };
        c.last_active = now;
        let (piece, last) = match c.scanner.scan(&c.rbuf, &limits) {
            Ok(Some(Frame::Multibulk { len, .. })) => (c.rbuf.split_to(len).freeze(), true),
            Ok(None) if c.read_closed => {
                // The rest can never come.
                let lost = resp::error("ERR connection closed inside the request");
                self.abort_stream(token, lost);
                return false;
            }
            Ok(None) => {
                let n = c.scanner.partial_len();
                if n == 0 {
                    return false;
                }
                c.scanner.consume(n);
                (c.rbuf.split_to(n).freeze(), false)
            }
            broken => {
                // The backend has part of a request: the request fails, the client is closed
                // once it has its answer, and the connection is dropped.
                let why = match broken {
                    Err(e) => e.to_string(),
                    _ => "Protocol error: expected the rest of a multibulk".into(),
                };
                warn!(
                    "client={token} peer={} {why} in a streamed request; closing",
                    c.peer
                );
                self.stats.protocol_errors += 1;
                self.abort_stream(token, resp::error(&format!("ERR {why}")));
                return false;
            }
        };
        let origin = if last {
            c.streaming = None;
            c.barrier = true;
            origin
        } else {
            let Origin::Client { token, gen, .. } = origin else {
                return false;
            };
            Origin::Piece { token, gen }
        };
        self.enqueue(conn.token, origin, piece);
        last
    }

    /// Ends client `token`'s streaming request unfinished: it is answered with `reply`, its
    /// connection is closed (the backend drops the part it has), and so is the client once its
    /// replies are written, since its request stream now has a hole.
    fn abort_stream(&mut self, token: usize, reply: Bytes) {
        let Some(c) = self.client_mut(token) else {
            return;
        };
        let Some(origin) = c.streaming.take() else {
            return;
        };
        c.close_after_flush = true;
        c.rbuf.clear();
        self.complete(origin, reply);
        self.close_session_of(token);
    }

    /// Takes a run's requests off the front of the client's read buffer and sends them, with one
    /// reply slot, to one backend.
    fn send_run(&mut self, token: usize, run: &mut Run) {
        let Run { len, n, cmd } = std::mem::take(run);
        let (now, instant) = (self.clock_us, self.now);
        self.stats.total_commands_processed += u64::from(n);
        let Some(Entry {
            gen,
            conn: Conn::Client(c),
        }) = self.conns.get_mut(token)
        else {
            return;
        };
        let req = c.rbuf.split_to(len).freeze();
        c.last_cmd = crate::command_table::COMMANDS[cmd as usize].name;
        c.last_active = instant;
        let tag = Tag {
            cmd,
            start: now,
            req: req.clone(),
            retried: false,
        };
        let seq = c.pending.push_run(tag, n);
        let origin = Origin::Client {
            token,
            gen: *gen,
            seq,
            n,
        };
        self.send(origin, req);
    }

    /// Routes one request.
    fn dispatch(&mut self, token: usize, req: Bytes, id: Option<crate::command::CommandId>) {
        self.stats.total_commands_processed += 1;
        let route = id.map_or(Route::Forward, |id| self.commands.route(id));
        let password_set = self.config.password.is_some();
        let (now, instant) = (self.clock_us, self.now);
        let Some(c) = self.client_mut(token) else {
            return;
        };
        c.last_cmd = id.map_or("unknown", |id| {
            crate::command_table::COMMANDS[id as usize].name
        });
        c.cur = Tag {
            cmd: id.unwrap_or(u16::MAX),
            start: now,
            req: req.clone(),
            retried: false,
        };
        c.last_active = instant;
        if password_set && !c.authed {
            use crate::command::Local;
            if !matches!(
                route,
                Route::Local(Local::Auth | Local::Hello | Local::Quit)
            ) {
                self.reply_now(token, reply::NOAUTH);
                return;
            }
        }
        let req = if c.subscribed || c.pinned || c.txn_broken.is_some() {
            let cmd = id.map_or("unknown", |id| self.commands.spec(id).name);
            match self.dispatch_in_session(token, route, req, cmd) {
                Some(req) => req,
                None => return,
            }
        } else {
            req
        };
        match route {
            Route::Forward => self.forward(token, req),
            Route::ForwardUnlessBlock => {
                let blocking = resp::frame_args(&req)
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(b"BLOCK"));
                if blocking {
                    self.dispatch_session(token, crate::command::Session::Blocking, req);
                } else {
                    self.forward(token, req);
                }
            }
            Route::Local(crate::command::Local::Info)
                if !self.shards.is_empty() && wants_keyspace(&req) =>
            {
                let text = self.info(&resp::frame_args(&req)[1..]);
                self.fanout(token, crate::fanout::FanoutCmd::Dbsize, &req, Some(text));
            }
            Route::Local(which) => {
                let answer = self.answer_local(token, which, &req);
                self.reply_now(token, answer);
            }
            Route::Fanout(cmd) if self.fans_out(cmd) && fanout_applies(cmd, &req) => {
                self.fanout(token, cmd, &req, None)
            }
            Route::Fanout(_) => self.forward(token, req),
            Route::Session(which) => self.dispatch_session(token, which, req),
            Route::Reject(why) => self.reply_now(token, resp::error(&format!("ERR {why}"))),
        }
    }

    fn fanout(
        &mut self,
        token: usize,
        cmd: crate::fanout::FanoutCmd,
        req: &[u8],
        info: Option<String>,
    ) {
        let Some((gen, seq)) = self.push_slot(token) else {
            return;
        };
        if let Some(c) = self.client_mut(token) {
            c.barrier = true;
        }
        self.start_fanout(ConnRef { token, gen }, seq, cmd, req, info);
    }

    pub(crate) fn reply_now(&mut self, token: usize, answer: Bytes) {
        let (slow_us, slow_max) = (self.config.slowlog_micros, self.config.slowlog_max_len);
        if let Some(Entry {
            conn: Conn::Client(c),
            ..
        }) = self.conns.get_mut(token)
        {
            let answer = if c.resp3 {
                crate::resp3::convert(crate::resp3::shape_for(c.cur.cmd, &c.cur.req), &answer)
            } else {
                answer
            };
            let answered = Answered {
                tag: &c.cur,
                first: 0,
                calls: 1,
                failed: u32::from(answer.first() == Some(&b'-')),
            };
            let name = c.name.as_deref();
            self.stats
                .record(answered, self.clock_us, slow_us, slow_max, &c.peer, name);
            c.pending.push_ready(answer, c.cur.clone());
            self.mark_client_dirty(token);
        }
    }

    /// The client at `token`.
    pub(crate) fn client_ref(&self, token: usize) -> Option<&ClientConn> {
        match self.conns.get(token) {
            Some(Entry {
                conn: Conn::Client(c),
                ..
            }) => Some(c),
            _ => None,
        }
    }

    /// A healthy backend from the picker.
    pub(crate) fn pick_backend(&mut self) -> Option<usize> {
        let backends = &self.backends;
        self.picker.pick(backends.len(), |i| backends[i].health.up)
    }

    /// Sends a request with a reply slot to connection `slot` of `u` (the pub/sub target).
    pub(crate) fn forward_to(&mut self, token: usize, req: Bytes, u: Upstream, slot: usize) {
        let Some(origin) = self.slot_origin(token) else {
            return;
        };
        match self.backend_conn(u, slot) {
            Some(conn) => {
                self.up_mut(u).requests += 1;
                self.enqueue(conn, origin, req);
            }
            None => self.complete(origin, reply::NO_BACKEND),
        }
    }

    pub(crate) fn forward(&mut self, token: usize, req: Bytes) {
        // After a blocking command, the client's requests stay on its session connection until
        // it is idle, so they keep their order.
        let session = self.client_ref(token).and_then(|c| c.session);
        if let Some(r) = session {
            let busy = match self.conns.get(r.token) {
                Some(Entry {
                    gen,
                    conn: Conn::Backend(bc),
                }) if *gen == r.gen => !bc.inflight.is_empty() || !bc.unsent.is_empty(),
                _ => false,
            };
            if busy {
                self.send_session(token, req, false);
                return;
            }
        }
        if let Some(origin) = self.slot_origin(token) {
            self.send(origin, req);
        }
    }

    /// Takes a waiting reply slot for the request being routed: the origin its reply will carry.
    pub(crate) fn slot_origin(&mut self, token: usize) -> Option<Origin> {
        let (gen, seq) = self.push_slot(token)?;
        Some(Origin::Client {
            token,
            gen,
            seq,
            n: 1,
        })
    }

    /// Takes a waiting reply slot for the request being routed: its generation and `seq`.
    pub(crate) fn push_slot(&mut self, token: usize) -> Option<(u32, u64)> {
        let entry = self.conns.get_mut(token)?;
        let Conn::Client(c) = &mut entry.conn else {
            return None;
        };
        let tag = c.cur.take();
        Some((entry.gen, c.pending.push(tag)))
    }

    /// Sends the request (or run) of a client's slot to its backend (or a fresh pick), trying
    /// other healthy backends if a connection cannot even be started.
    fn send(&mut self, origin: Origin, req: Bytes) {
        let Origin::Client { token, gen, .. } = origin else {
            return;
        };
        for _ in 0..=self.backends.len() {
            let Some((b, resp3)) = self.choose_backend(token, gen) else {
                break;
            };
            let u = Upstream::backend(b);
            match self.backend_conn(u, self.slot_for(u, token, resp3)) {
                Some(conn_token) => {
                    self.enqueue(conn_token, origin, req);
                    self.backends[b].requests += u64::from(origin.replies());
                    return;
                }
                None => {
                    if let Some(c) = self.client_gen_mut(token, gen) {
                        c.backend = None;
                    }
                }
            }
        }
        self.fail_slot(origin, origin.replies(), &reply::NO_BACKEND);
    }

    /// The backend for the request client `token` is sending, remembered as the client's: the
    /// one its earlier requests went to while they are in flight (so that its writes and reads
    /// keep their order), else the picker's. Also says whether the client speaks RESP3.
    fn choose_backend(&mut self, token: usize, gen: u32) -> Option<(usize, bool)> {
        let Proxy {
            conns,
            backends,
            picker,
            ..
        } = self;
        let Some(Entry {
            gen: g,
            conn: Conn::Client(c),
        }) = conns.get_mut(token)
        else {
            return None;
        };
        if *g != gen {
            return None;
        }
        let sticky = if c.pending.waiting() > 1 {
            c.backend.filter(|&b| !backends[b].retired)
        } else {
            None
        };
        let b = sticky.or_else(|| picker.pick(backends.len(), |i| backends[i].health.up))?;
        c.backend = Some(b);
        Some((b, c.resp3))
    }

    pub(crate) fn enqueue(&mut self, conn_token: usize, origin: Origin, req: Bytes) {
        if let Some(Entry {
            conn: Conn::Backend(bc),
            ..
        }) = self.conns.get_mut(conn_token)
        {
            bc.queue(origin, req);
            if !bc.dirty {
                bc.dirty = true;
                self.dirty_backends.push(conn_token);
            }
            if bc.unsent_bytes > BACKEND_QUEUE_PAUSE_BYTES {
                // The backend is not taking requests as fast as this client sends them: stop
                // reading the client until the queue drains (or the connection fails).
                if let Origin::Client { token, gen, .. } | Origin::Piece { token, gen } = origin {
                    if !bc.waiters.iter().any(|w| w.token == token && w.gen == gen) {
                        bc.waiters.push(ConnRef { token, gen });
                    }
                    if let Some(Entry {
                        gen: g,
                        conn: Conn::Client(c),
                    }) = self.conns.get_mut(token)
                    {
                        if *g == gen {
                            c.held = true;
                        }
                    }
                }
            }
        }
    }

    /// Un-pauses clients that waited for a backend connection's queue to drain.
    pub(crate) fn release_waiters(&mut self, waiters: Vec<ConnRef>) {
        for w in waiters {
            if let Some(c) = self.client_gen_mut(w.token, w.gen) {
                c.held = false;
                self.resume.push(w);
            }
        }
    }

    /// Fills the slot of `origin` with `reply`.
    pub(crate) fn complete(&mut self, origin: Origin, reply: Bytes) {
        let failed = u32::from(reply.first() == Some(&b'-'));
        self.complete_with(origin, reply, 1, failed, false)
    }

    /// Answers the last `k` requests of `origin`'s slot with `error` each.
    pub(crate) fn fail_slot(&mut self, origin: Origin, k: u32, error: &Bytes) {
        let replies = if k == 1 {
            error.clone()
        } else {
            Bytes::from(error.repeat(k as usize))
        };
        self.complete_with(origin, replies, k, k, false)
    }

    /// Gives `origin`'s slot `k` more replies (in order in `replies`), `failed` of them errors;
    /// `native` replies already speak the client's protocol.
    fn complete_with(&mut self, origin: Origin, replies: Bytes, k: u32, failed: u32, native: bool) {
        let (token, gen, seq) = match origin {
            Origin::Client {
                token, gen, seq, ..
            } => (token, gen, seq),
            Origin::Fanout { id, part } => return self.fanout_part_done(id, part, replies),
            Origin::Auth | Origin::Push | Origin::Piece { .. } => return,
        };
        let (slow_us, slow_max) = (self.config.slowlog_micros, self.config.slowlog_max_len);
        if let Some(Entry {
            gen: g,
            conn: Conn::Client(c),
        }) = self.conns.get_mut(token)
        {
            if *g != gen {
                return;
            }
            // RESP3 clients are never sent runs: one reply, converted to their protocol.
            let replies = if c.resp3 && !native && k == 1 {
                match c.pending.waiting_tag_mut(seq) {
                    Some(tag) => {
                        crate::resp3::convert(crate::resp3::shape_for(tag.cmd, &tag.req), &replies)
                    }
                    None => replies,
                }
            } else {
                replies
            };
            let (stats, clock_us) = (&mut self.stats, self.clock_us);
            let (peer, name) = (&c.peer, c.name.as_deref());
            let done = |tag: &Tag, first| {
                let answered = Answered {
                    tag,
                    first,
                    calls: k,
                    failed,
                };
                stats.record(answered, clock_us, slow_us, slow_max, peer, name);
            };
            if c.pending.complete(seq, replies, k, &mut c.out, done) {
                if c.barrier && c.pending.waiting() == 0 {
                    self.resume.push(ConnRef { token, gen });
                }
                if !c.dirty {
                    c.dirty = true;
                    self.dirty_clients.push(token);
                }
            }
        }
    }

    fn flush_dirty(&mut self) {
        // Flushing a client can resume a paused one, which can queue more requests: loop until
        // both lists are empty, bounded so one iteration always ends.
        for _ in 0..4 {
            if self.dirty_backends.is_empty() && self.dirty_clients.is_empty() {
                return;
            }
            // Take the lists and hand their capacity back afterwards: no allocation per loop.
            let mut backends = std::mem::take(&mut self.dirty_backends);
            for &token in &backends {
                self.flush_backend(token);
            }
            backends.clear();
            if self.dirty_backends.is_empty() {
                self.dirty_backends = backends;
            }
            let mut clients = std::mem::take(&mut self.dirty_clients);
            for &token in &clients {
                self.flush_client(token);
            }
            clients.clear();
            if self.dirty_clients.is_empty() {
                self.dirty_clients = clients;
            }
        }
    }

    fn flush_client(&mut self, token: usize) {
        let (client_limit, pubsub_limit) = (
            self.config.client_output_limit,
            self.config.pubsub_output_limit,
        );
        let max_pending = self.config.client_max_pending;
        let draining = self.draining_until.is_some();
        let Some(c) = self.client_mut(token) else {
            return;
        };
        c.dirty = false;
        if c.pending.front_ready() {
            c.pending.drain_ready_front(&mut c.out);
        }
        let limit = if c.subscribed {
            pubsub_limit
        } else {
            client_limit
        };
        if c.out.bytes() > limit {
            warn!(
                "client={token} peer={} closed: output {} bytes over client_output_limit {limit}",
                c.peer,
                c.out.bytes()
            );
            self.stats.output_limit_disconnects += 1;
            self.close_client(token, "output limit");
            return;
        }
        if c.writable && !c.out.is_empty() {
            match c.out.flush(&mut c.stream) {
                Ok(true) => {}
                Ok(false) => c.writable = false,
                Err(e) => {
                    debug!("client={token} peer={} write error: {e}", c.peer);
                    self.close_client(token, "write error");
                    return;
                }
            }
        }
        let done = c.out.is_empty() && c.pending.is_empty();
        if done && (c.close_after_flush || c.read_closed || draining) {
            self.close_client(token, "done");
            return;
        }
        if c.paused && c.pending.len() < max_pending / 2 && c.out.bytes() < OUTPUT_RESUME_BYTES {
            c.paused = false;
            debug!("client={token} resumed");
            let readable = c.readable;
            self.process_input(token);
            if readable {
                self.on_client_readable(token, false);
            }
        }
    }

    pub(crate) fn close_client(&mut self, token: usize, why: &str) {
        self.close_session_of(token);
        if let Some(Conn::Client(c)) = self.remove(token) {
            self.clients -= 1;
            debug!("client={token} id={} peer={} closed: {why}", c.id, c.peer);
        }
    }

    // ---------------------------------------------------------------- backends

    /// A backend or shard.
    pub(crate) fn up(&self, u: Upstream) -> &Backend {
        match u.group {
            Group::Backend => &self.backends[u.index],
            Group::Shard => &self.shards[u.index],
            Group::Pubsub => &self.pubsub[u.index],
        }
    }

    /// A backend or shard, mutably.
    pub(crate) fn up_mut(&mut self, u: Upstream) -> &mut Backend {
        match u.group {
            Group::Backend => &mut self.backends[u.index],
            Group::Shard => &mut self.shards[u.index],
            Group::Pubsub => &mut self.pubsub[u.index],
        }
    }

    /// The token of the data connection in `slot` of `u`, opening it if needed.
    #[inline]
    pub(crate) fn backend_conn(&mut self, u: Upstream, slot: usize) -> Option<usize> {
        if let Some(r) = self.up(u).conns[slot] {
            if self.conns.get(r.token).is_some_and(|e| e.gen == r.gen) {
                return Some(r.token);
            }
        }
        self.open_backend_conn(u, slot)
    }

    /// Opens the data connection in `slot` of `u`.
    #[inline(never)]
    fn open_backend_conn(&mut self, u: Upstream, slot: usize) -> Option<usize> {
        let r = match self.open_data_conn(u, slot, None) {
            Ok(r) => r,
            Err(e) => {
                self.backend_failed(u, &format!("connect: {e}"));
                return None;
            }
        };
        self.up_mut(u).conns[slot] = Some(r);
        debug!(
            "{}={} addr={} conn={} connecting (slot {slot})",
            u.kind(),
            u.index,
            self.up(u).label,
            r.token
        );
        Some(r.token)
    }

    /// Starts a connection to `u` (pool `slot`, or a session of `owner`) with respite's own
    /// AUTH, and `HELLO 3` for the RESP3 half of a backend's pool, queued first.
    pub(crate) fn open_data_conn(
        &mut self,
        u: Upstream,
        slot: usize,
        owner: Option<ConnRef>,
    ) -> io::Result<ConnRef> {
        let stream = TcpStream::connect(self.up(u).addr)?;
        let mut conn = BackendConn::new(stream, u, slot, self.now);
        conn.owner = owner;
        if let Some(auth) = self.backend_auth() {
            conn.queue(Origin::Auth, auth);
        }
        if owner.is_none() && u.group == Group::Backend && slot >= self.up(u).conns.len() / 2 {
            // The RESP3 half of the pool: replies to RESP3 clients pass through untouched.
            conn.queue(
                Origin::Auth,
                Bytes::from_static(b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n"),
            );
            conn.resp3 = true;
        }
        let r = self.insert(Conn::Backend(conn));
        if let Err(e) = self.register(r.token) {
            self.remove(r.token);
            return Err(e);
        }
        Ok(r)
    }

    /// The pool slot of client `token` on `u`: backends keep a RESP2 half and a RESP3 half
    /// (used for RESP3 clients once the probe has seen the backend accept `HELLO 3`).
    pub(crate) fn slot_for(&self, u: Upstream, token: usize, resp3: bool) -> usize {
        let be = self.up(u);
        if u.group != Group::Backend {
            return token % be.conns.len();
        }
        let half = be.conns.len() / 2;
        token % half
            + if resp3 && be.resp3 == Some(true) {
                half
            } else {
                0
            }
    }

    pub(crate) fn backend_auth(&self) -> Option<Bytes> {
        let pass = self.config.backend_password.as_ref()?;
        Some(match &self.config.backend_user {
            Some(user) => {
                resp::encode_request(&[b"AUTH".as_slice(), user.as_bytes(), pass.as_bytes()])
            }
            None => resp::encode_request(&[b"AUTH".as_slice(), pass.as_bytes()]),
        })
    }

    pub(crate) fn backend_conn_mut(&mut self, token: usize) -> Option<&mut BackendConn> {
        match self.conns.get_mut(token) {
            Some(Entry {
                conn: Conn::Backend(b),
                ..
            }) => Some(b),
            _ => None,
        }
    }

    fn on_backend_writable(&mut self, token: usize) {
        let Some(bc) = self.backend_conn_mut(token) else {
            return;
        };
        if !bc.connected {
            match net::connect_finished(&bc.stream) {
                Ok(true) => {
                    bc.connected = true;
                    trace!(
                        "{}={} conn={token} connected",
                        bc.upstream.kind(),
                        bc.upstream.index
                    );
                }
                Ok(false) => return,
                Err(e) => {
                    self.fail_backend_conn(token, &format!("connect: {e}"), true);
                    return;
                }
            }
        }
        bc.writable = true;
        if !bc.unsent.is_empty() && !bc.dirty {
            bc.dirty = true;
            self.dirty_backends.push(token);
        }
    }

    fn flush_backend(&mut self, token: usize) {
        let (now, clock_us) = (self.now, self.clock_us);
        let Some(bc) = self.backend_conn_mut(token) else {
            return;
        };
        bc.dirty = false;
        if !bc.connected || !bc.writable {
            return;
        }
        if let Err(e) = bc.flush(now, clock_us) {
            self.fail_backend_conn(token, &format!("write: {e}"), false);
            return;
        }
        if !bc.waiters.is_empty() && bc.unsent_bytes < BACKEND_QUEUE_RESUME_BYTES {
            let waiters = std::mem::take(&mut bc.waiters);
            self.release_waiters(waiters);
        }
    }

    fn on_backend_readable(&mut self, token: usize, hup: bool) {
        let gen = self.conns.get(token).map_or(0, |e| e.gen);
        let Some(Entry {
            conn: Conn::Backend(bc),
            ..
        }) = self.conns.get_mut(token)
        else {
            return;
        };
        if !bc.connected {
            return;
        }
        let outcome = net::read_into(&mut bc.stream, &mut bc.rbuf, &mut self.scratch, hup);
        let eof = match outcome {
            Ok(r) => {
                if r.more {
                    self.revisit.push(ConnRef { token, gen });
                }
                r.eof
            }
            Err(e) => {
                self.fail_backend_conn(token, &format!("read: {e}"), false);
                return;
            }
        };
        let clock_us = self.clock_us;
        loop {
            let Some(bc) = self.backend_conn_mut(token) else {
                return;
            };
            let len = match bc.scanner.scan(&bc.rbuf) {
                Ok(Some(len)) => len,
                Ok(None) => break,
                Err(e) => {
                    let why = format!("bad reply: {e}");
                    self.fail_backend_conn(token, &why, false);
                    return;
                }
            };
            let first = bc.rbuf[0];
            if bc.subscribed {
                let frame = bc.rbuf.split_to(len).freeze();
                if self.on_push_frame(token, frame) {
                    return;
                }
                continue;
            }
            if bc.resp3 && first == b'>' {
                // An out-of-band push on a shared RESP3 connection is nobody's reply.
                let _ = bc.rbuf.split_to(len);
                trace!("dropped a push frame on conn={token}");
                continue;
            }
            let Some(&(origin, sent)) = bc.inflight.front() else {
                self.fail_backend_conn(token, "reply with nothing in flight (out of sync)", false);
                return;
            };
            // A run's replies arrive back to back: frame the rest of them here, and let them
            // leave the buffer together, `k` replies (`failed` of them errors) in `off` bytes.
            let want = origin.replies() - bc.front_done;
            let (mut off, mut k, mut failed) = (len, 1, u32::from(first == b'-'));
            let mut bad = None;
            while k < want {
                match bc.scanner.scan(&bc.rbuf[off..]) {
                    Ok(Some(len)) => {
                        failed += u32::from(bc.rbuf[off] == b'-');
                        off += len;
                        k += 1;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        bad = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = bad {
                self.fail_backend_conn(token, &format!("bad reply: {e}"), false);
                return;
            }
            // When the read ends inside a run, the replies so far are handed over now.
            let whole = k == want;
            if whole {
                bc.inflight.pop_front();
                bc.front_done = 0;
                bc.front_progress = 0;
            } else {
                bc.front_done += k;
                bc.front_progress = clock_us;
            }
            let frame = bc.rbuf.split_to(off).freeze();
            if origin == Origin::Auth {
                if failed > 0 {
                    let msg = String::from_utf8_lossy(&frame[1..frame.len() - 2]).into_owned();
                    self.fail_backend_conn(token, &format!("AUTH refused: {msg}"), true);
                    return;
                }
                continue;
            }
            let (u, session, native) = (bc.upstream, bc.owner.is_some(), bc.resp3);
            if !session {
                self.up_mut(u)
                    .latency
                    .record_n(clock_us.saturating_sub(sent), k);
            }
            self.complete_with(origin, frame, k, failed, native);
            if !whole {
                break;
            }
        }
        if eof {
            let idle = self.backend_conn_mut(token).is_some_and(|bc| {
                bc.owner.is_none() && bc.inflight.is_empty() && bc.unsent.is_empty()
            });
            if idle {
                // A backend may close idle connections (Redis `timeout`): not a failure.
                if let Some(Conn::Backend(bc)) = self.remove(token) {
                    debug!(
                        "{}={} conn={token} closed while idle",
                        bc.upstream.kind(),
                        bc.upstream.index
                    );
                    let slot = &mut self.up_mut(bc.upstream).conns[bc.slot];
                    if slot.is_some_and(|r| r.token == token) {
                        *slot = None;
                    }
                }
            } else {
                self.fail_backend_conn(token, "closed by backend", false);
            }
        }
    }

    /// A data connection failed: eject its backend, fail what it may have run, re-route what it
    /// never saw.
    /// With `eject`, the backend is ejected at once (a refused connect, a timeout). A connection
    /// that was closed or reset is not proof the backend is gone (twemproxy closes on commands it
    /// does not support): it is reconnected on demand and probed at once, and a refused
    /// reconnect ejects it.
    fn fail_backend_conn(&mut self, token: usize, why: &str, eject: bool) {
        if let Some(bc) = self.backend_conn_mut(token) {
            if bc.owner.is_some() {
                // A session connection: its failure may be the command's doing (twemproxy
                // closes on MULTI), so it never ejects the backend.
                let u = bc.upstream;
                let label = self.up(u).label.clone();
                debug!(
                    "{}={} addr={label} session conn={token} failed: {why}",
                    u.kind(),
                    u.index
                );
                let lost = resp::error(&format!("ERR {} {label} connection lost", u.kind()));
                self.drop_session_conn(token, Some(lost));
                return;
            }
        }
        let Some(Conn::Backend(mut bc)) = self.remove(token) else {
            return;
        };
        let waiters = std::mem::take(&mut bc.waiters);
        self.release_waiters(waiters);
        let u = bc.upstream;
        let slot = &mut self.up_mut(u).conns[bc.slot];
        if slot.is_some_and(|r| r.token == token) {
            *slot = None;
        }
        let label = self.up(u).label.clone();
        warn!(
            "{}={} addr={label} conn={token} failed: {why} ({} in flight, {} unsent)",
            u.kind(),
            u.index,
            bc.inflight.len(),
            bc.unsent.len()
        );
        if eject {
            self.backend_failed(u, why);
        } else {
            let now = self.now;
            let be = self.up_mut(u);
            be.next_probe = be.next_probe.min(now);
        }
        let lost = resp::error(&format!("ERR {} {label} connection lost", u.kind()));
        let failed = bc
            .inflight
            .iter()
            .map(|(o, _)| u64::from(o.replies()))
            .sum::<u64>()
            - u64::from(bc.front_done);
        self.up_mut(u).errors += failed;
        self.stats.backend_errors += failed;
        let unsent = bc.take_unsent();
        // Forget the sticky backend of affected clients first, so re-routing picks afresh.
        for origin in bc
            .inflight
            .iter()
            .map(|(o, _)| o)
            .chain(unsent.iter().map(|(o, _)| o))
        {
            if let Origin::Client { token, gen, .. } = *origin {
                if let Some(c) = self.client_gen_mut(token, gen) {
                    if u.group == Group::Backend && c.backend == Some(u.index) {
                        c.backend = None;
                    }
                }
            }
        }
        let retry_reads = self.config.retry_reads;
        let mut retries = Vec::new();
        let mut done = bc.front_done;
        for (origin, _) in bc.inflight.drain(..) {
            // The front may be a run whose first replies were delivered already; only a request
            // (or run) none of whose replies arrived may be retried.
            let owed = origin.replies() - std::mem::take(&mut done);
            if retry_reads && owed == origin.replies() {
                if let Some(req) = self.take_retry(origin) {
                    retries.push((origin, req));
                    continue;
                }
            }
            self.fail_slot(origin, owed, &lost);
        }
        for (origin, req) in retries {
            if let Origin::Client { token, seq, .. } = origin {
                debug!(
                    "client={token} seq={seq} read retried after {}={} failed",
                    u.kind(),
                    u.index
                );
                self.send(origin, req);
            }
        }
        for (origin, req) in unsent {
            match origin {
                Origin::Client { token, seq, .. } => {
                    trace!(
                        "client={token} seq={seq} re-routed from {}={}",
                        u.kind(),
                        u.index
                    );
                    self.send(origin, req);
                }
                // A fan-out part belongs to this shard and no other: it fails.
                Origin::Fanout { .. } => self.complete(origin, lost.clone()),
                Origin::Auth | Origin::Push | Origin::Piece { .. } => {}
            }
        }
    }

    /// With `--retry-reads`: the request of `origin` if it is a read-only command not retried
    /// yet (it is then marked retried). Writes are never retried: they may have run.
    fn take_retry(&mut self, origin: Origin) -> Option<Bytes> {
        let Origin::Client {
            token, gen, seq, ..
        } = origin
        else {
            return None;
        };
        let Some(Entry {
            gen: g,
            conn: Conn::Client(c),
        }) = self.conns.get_mut(token)
        else {
            return None;
        };
        if *g != gen {
            return None;
        }
        let tag = c.pending.waiting_tag_mut(seq)?;
        let spec = crate::command_table::COMMANDS.get(tag.cmd as usize)?;
        if tag.retried || spec.flags & crate::command::flag::READONLY == 0 {
            return None;
        }
        tag.retried = true;
        Some(tag.req.clone())
    }

    /// Passive detection: a data connection to `u` failed.
    pub(crate) fn backend_failed(&mut self, u: Upstream, why: &str) {
        let be = self.up_mut(u);
        if be.health.eject() == Flip::Down {
            warn!("{}={} addr={} DOWN: {why}", u.kind(), u.index, be.label);
        }
    }

    // ---------------------------------------------------------------- timers

    fn on_tick(&mut self) {
        self.next_tick = self.now + TICK;
        for b in 0..self.backends.len() {
            if !self.backends[b].retired {
                self.check_probe(Upstream::backend(b));
            }
        }
        for s in 0..self.shards.len() {
            if !self.shards[s].retired {
                self.check_probe(Upstream::shard(s));
            }
        }
        self.close_drained();
        if !self.pubsub.is_empty() {
            self.check_probe(Upstream::pubsub());
        }
        self.check_backend_timeouts();
        if self.now >= self.next_ops_sample {
            self.next_ops_sample = self.now + Duration::from_millis(100);
            self.stats.sample_ops(self.now);
        }
        if self.now >= self.next_idle_check {
            self.next_idle_check = self.now + Duration::from_secs(1);
            self.close_idle_clients();
        }
        if self.listener.is_some() && self.stats.accept_errors > 0 {
            // Retry accepts deferred by EMFILE once per tick.
            self.accept();
        }
    }

    fn check_backend_timeouts(&mut self) {
        let timeout = self.config.backend_timeout;
        let (now, clock_us) = (self.now, self.clock_us);
        let mut expired = Vec::new();
        for (token, entry) in self.conns.iter() {
            if let Conn::Backend(bc) = &entry.conn {
                let late = |t: Instant| now.duration_since(t) >= timeout;
                // Sessions may block as long as their command asks (a hung backend is caught by
                // its probe, which then fails its sessions), but not stop reading what they send.
                let front_late = bc.owner.is_none()
                    && bc.inflight.front().is_some_and(|&(_, t)| {
                        clock_us.saturating_sub(t.max(bc.front_progress))
                            >= timeout.as_micros() as u64
                    });
                let expired_now = if bc.connected {
                    front_late || bc.stalled_since.is_some_and(late)
                } else {
                    late(bc.opened)
                };
                if expired_now {
                    expired.push(token);
                }
            }
        }
        for token in expired {
            self.fail_backend_conn(token, "request timed out", true);
        }
    }

    fn close_idle_clients(&mut self) {
        let now = self.now;
        // Idle clients give their buffers back: 10,000 idle clients should cost little more
        // than their sockets.
        for (_, e) in self.conns.iter_mut() {
            if let Conn::Client(c) = &mut e.conn {
                if now.duration_since(c.last_active) >= Duration::from_secs(1) {
                    c.shrink_idle();
                }
            }
        }
        let Some(timeout) = self.config.timeout else {
            return;
        };
        let idle: Vec<usize> = self
            .conns
            .iter()
            .filter_map(|(t, e)| match &e.conn {
                // A client stalled inside a streamed request is idle too (a slow loris).
                Conn::Client(c)
                    if (c.pending.is_empty() || (c.streaming.is_some() && !c.held))
                        && now.duration_since(c.last_active) >= timeout =>
                {
                    Some(t)
                }
                _ => None,
            })
            .collect();
        for token in idle {
            self.close_client(token, "idle timeout");
        }
    }

    // ---------------------------------------------------------------- shutdown

    fn begin_shutdown(&mut self, why: &str) {
        if self.draining_until.is_some() {
            return;
        }
        info!("shutting down ({why}): no new connections, finishing in-flight requests");
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        self.draining_until = Some(self.now + self.config.shutdown_timeout);
        let tokens: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, e)| matches!(e.conn, Conn::Client(_)))
            .map(|(t, _)| t)
            .collect();
        for t in tokens {
            // Clients are no longer read, so a request still streaming in cannot finish.
            self.abort_stream(t, resp::error("ERR respite is shutting down"));
            self.mark_client_dirty(t);
        }
    }

    fn drained(&mut self) -> bool {
        let deadline_passed = self.draining_until.is_some_and(|d| self.now >= d);
        let busy = self
            .conns
            .iter()
            .any(|(_, e)| matches!(&e.conn, Conn::Client(c) if !c.is_idle()));
        if busy && !deadline_passed {
            return false;
        }
        if busy {
            warn!("shutdown timeout: closing clients with requests in flight");
        }
        let tokens: Vec<usize> = self.conns.iter().map(|(t, _)| t).collect();
        for t in tokens {
            self.remove(t);
        }
        self.clients = 0;
        true
    }
}

/// True if `name` is a command that fans out (a barrier in its client's stream).
fn barrier_cmd(
    commands: &CommandTable,
    id: Option<crate::command::CommandId>,
    have_shards: bool,
) -> bool {
    use crate::command::Session;
    use crate::fanout::FanoutCmd;
    match id.map(|id| commands.route(id)) {
        Some(Route::Fanout(FanoutCmd::Script)) => true,
        Some(Route::Fanout(_)) => have_shards,
        // Switching protocol switches backend connections: earlier requests finish first.
        Some(Route::Local(crate::command::Local::Hello)) => true,
        Some(Route::Session(
            Session::Multi | Session::Watch | Session::Blocking | Session::Subscribe,
        ))
        | Some(Route::ForwardUnlessBlock) => true,
        _ => false,
    }
}

/// `SCRIPT` fans out only for LOAD, FLUSH and EXISTS; every other fan-out command always does.
fn fanout_applies(cmd: crate::fanout::FanoutCmd, req: &[u8]) -> bool {
    if cmd != crate::fanout::FanoutCmd::Script {
        return true;
    }
    resp::frame_args(req).get(1).is_some_and(|sub| {
        [&b"LOAD"[..], b"FLUSH", b"EXISTS"]
            .iter()
            .any(|s| sub.eq_ignore_ascii_case(s))
    })
}

/// True if an `INFO` request includes the keyspace section.
fn wants_keyspace(req: &[u8]) -> bool {
    let args = resp::frame_args(req);
    args.len() == 1
        || args[1..].iter().any(|a| {
            [&b"keyspace"[..], b"all", b"everything", b"default"]
                .iter()
                .any(|s| a.eq_ignore_ascii_case(s))
        })
}
