//! `Proxy`: the `Poll`, the connection slab, the upstreams and the loop. Everything that needs
//! the whole proxy is an `impl Proxy` in this folder, one concern per file:
//!
//! ```text
//!  ingress    accept, read, frame, gather runs of plain requests, take whole requests off
//!  route      one Request to where it runs: by its mode, then by its command's route
//!  forward    choose a backend and a pooled connection, take the reply slot, queue the bytes
//!  keyed      what the backends refuse, to the shard master that holds its keys
//!  replies    read backend replies, complete slots, flush clients and backends
//!  failover   a failed or late backend connection: eject or probe, re-route, fail in order
//!  streaming  a large request sent on piece by piece as it arrives
//!  session    transactions and blocking commands on connections of their own
//!  pubsub     subscribed mode on a connection to the pub/sub target; PUBLISH
//!  fanout     cluster-wide commands: one part per shard, merged into one reply
//!  local      commands respite answers itself
//!  probe      health probes, roles, RESP3 discovery
//!  info, metrics_http, reload, shutdown
//! ```
//!
//! One iteration of the loop:
//!
//! ```text
//!  poll (timeout: the next tick, or none while reads are left over)
//!   ─▶ events: accept │ client read → frame → route │ backend read → replies → slots │ probe │ http
//!   ─▶ revisit connections whose reads were capped ─▶ resume clients whose barrier cleared
//!   ─▶ tick, when due: probes, request timeouts, idle clients, retired connections
//!   ─▶ flush dirty backends (requests), then dirty clients (replies) ─▶ shutdown done?
//! ```
//!
//! Every socket is registered once, edge-triggered, for READABLE|WRITABLE; readiness is kept in
//! user space (`readable`/`writable` flags cleared only on `WouldBlock`), and backpressure only
//! stops reading. Connections live in one slab (`conns.rs`); every entry has a generation,
//! carried by every origin, so a reply for a departed client is read and dropped, never
//! delivered to a newcomer that reused the slab key. What can be decided from bytes alone (the
//! framing, the pipeline of a backend connection, a probe's answers, a fan-out's plan and
//! merge) lives outside this folder and is unit-tested there; the handlers here apply it.

mod cluster;
mod failover;
mod fanout;
mod forward;
mod info;
mod ingress;
mod keyed;
mod local;
mod metrics_http;
mod probe;
mod pubsub;
mod reload;
mod replies;
mod route;
mod session;
mod shutdown;
mod streaming;
mod tls;

pub use keyed::Path;
pub use shutdown::ShutdownHandle;

use crate::command::CommandTable;
use crate::config::Config;
use crate::conns::{Conn, ConnRef, Conns};
use crate::net::{self, READ_CHUNK_BYTES};
use crate::picker::Picker;
use crate::stats::Stats;
use crate::upstream::{Role, Upstreams};
use log::{info, warn};
use mio::net::TcpListener;
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
const TLS_LISTENER: Token = Token(usize::MAX - 5);

/// Housekeeping period: probe deadlines, request timeouts, idle clients.
const TICK: Duration = Duration::from_millis(50);
/// Over this much queued output a client is not read until it drains below `OUTPUT_RESUME_BYTES`.
const OUTPUT_PAUSE_BYTES: usize = 4 << 20;
const OUTPUT_RESUME_BYTES: usize = 1 << 20;
/// A backend connection with this much queued and unwritten pauses the clients feeding it...
const BACKEND_QUEUE_PAUSE_BYTES: usize = 8 << 20;
/// ...until it is below this.
const BACKEND_QUEUE_RESUME_BYTES: usize = 2 << 20;
/// A partial request this large streams to a connection of its own as it arrives, rather
/// than waiting in the read buffer until it is whole (`start_stream`).
const STREAM_MIN_BYTES: usize = 4 << 20;
/// Most requests in one run (`process_input`).
const MAX_RUN: u32 = 256;

/// `--maxclients` against the open-file limit: descriptors are kept for the backend pools,
/// probes, listeners and a margin, the rest shared by the loops.
pub(super) fn client_limit(config: &Config) -> usize {
    // Slot tables name their nodes later (Codis without --shards, Redis Cluster): room for a
    // fleet of 64 nodes.
    let discovered = config.cluster || (config.codis && config.shards.is_empty());
    let shards = if discovered {
        config.shards.len().max(64)
    } else {
        config.shards.len()
    };
    let upstreams = config.backends.len() + shards + 1;
    let reserve = 64 + upstreams * (2 * config.backend_connections + 1);
    let (limit, lowered) = net::client_capacity(config.maxclients, reserve, config.workers);
    if lowered {
        warn!(
            "maxclients {} lowered to {limit}: the open-file limit cannot be raised further \
             (raise `ulimit -n` or LimitNOFILE)",
            config.maxclients
        );
    }
    limit
}

/// The sockets a proxy serves, bound before it starts.
#[derive(Debug)]
pub struct Listeners {
    /// Where plaintext clients connect, if anywhere.
    pub clients: Option<std::net::TcpListener>,
    /// Where TLS clients connect, if anywhere.
    pub tls: Option<std::net::TcpListener>,
    /// Where `/metrics` is served, if anywhere.
    pub metrics: Option<std::net::TcpListener>,
}

impl Listeners {
    /// Binds `config.listen` and `config.tls.listen` (each one of several sockets sharing the
    /// port with `reuse_port`: SO_REUSEPORT, the kernel spreads connections over them) and
    /// `config.metrics_listen`.
    pub fn bind(config: &Config, reuse_port: bool) -> io::Result<Listeners> {
        let bind = |addr: std::net::SocketAddr| -> io::Result<std::net::TcpListener> {
            if !reuse_port {
                return std::net::TcpListener::bind(addr);
            }
            use socket2::{Domain, Socket, Type};
            let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
            socket.set_reuse_address(true)?;
            socket.set_reuse_port(true)?;
            socket.bind(&addr.into())?;
            socket.listen(1024)?;
            Ok(socket.into())
        };
        Ok(Listeners {
            clients: config.listen.map(bind).transpose()?,
            tls: config.tls.listen.map(bind).transpose()?,
            metrics: config
                .metrics_listen
                .map(std::net::TcpListener::bind)
                .transpose()?,
        })
    }
}

impl From<std::net::TcpListener> for Listeners {
    fn from(clients: std::net::TcpListener) -> Self {
        Listeners {
            clients: Some(clients),
            tls: None,
            metrics: None,
        }
    }
}

/// The proxy: one event loop on one thread.
pub struct Proxy {
    poll: Poll,
    listener: Option<TcpListener>,
    tls_listener: Option<TcpListener>,
    metrics_listener: Option<TcpListener>,
    /// The certificates in use (`tls/`).
    pub(crate) tls: crate::tls::Tls,
    /// TLS clients that were in their handshake, in accept order (`close_stalled_handshakes`).
    handshakes: std::collections::VecDeque<ConnRef>,
    conns: Conns,
    /// The backends, shards and pub/sub target.
    ups: Upstreams,
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
    /// The earliest a `-MOVED` may ask for the cluster's slot table again.
    next_cluster_refresh: Instant,
    /// When a node last reported the cluster's slot table.
    cluster_refreshed: Option<Instant>,
    /// Requests waiting for the cluster to serve their slot again.
    cluster_waiting: Vec<cluster::Waiting>,
    /// Clients wait in the listen backlog until this, or until the probes have learned what
    /// every backend is (`discovering`).
    discovery_deadline: Instant,
    /// A client arrived while discovering: accept once it is over.
    accept_deferred: bool,
    pub(crate) started: Instant,
    pub(crate) port: u16,
    pub(crate) worker_id: usize,
}

impl Proxy {
    /// A proxy serving `listeners`, already bound (so that tests can bind port 0 and hand them
    /// in): a client listener alone, or with the metrics listener (`Listeners::bind` binds both
    /// from the configuration).
    pub fn new(config: Config, listeners: impl Into<Listeners>) -> io::Result<Proxy> {
        let Listeners {
            clients,
            tls: tls_clients,
            metrics,
        } = listeners.into();
        let tls = crate::tls::Tls::load(&config.tls, &config.hostnames)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        if config.tls.backend_insecure {
            warn!(
                "--backend-tls-insecure: backend certificates are NOT verified; anyone on the \
                 path can read and change the traffic (development only)"
            );
        }
        let poll = Poll::new()?;
        let adopt = |l: std::net::TcpListener, token| -> io::Result<TcpListener> {
            l.set_nonblocking(true)?;
            let mut l = TcpListener::from_std(l);
            poll.registry()
                .register(&mut l, token, Interest::READABLE)?;
            Ok(l)
        };
        let port = match (&clients, &tls_clients) {
            (Some(l), _) | (None, Some(l)) => l.local_addr()?.port(),
            (None, None) => return Err(io::Error::other("no listener for clients")),
        };
        let listener = clients.map(|l| adopt(l, LISTENER)).transpose()?;
        let tls_listener = tls_clients.map(|l| adopt(l, TLS_LISTENER)).transpose()?;
        let metrics_listener = metrics.map(|l| adopt(l, METRICS)).transpose()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let now = Instant::now();
        let mut ups = Upstreams::new(
            &config.backends,
            config.backend_connections,
            &config.shards,
            config.pubsub,
            now,
        );
        ups.cluster = config.cluster;
        ups.refresh_tier();
        map_keys(&mut ups, &config);
        let mut config = config;
        config.maxclients = client_limit(&config);
        Ok(Proxy {
            poll,
            listener,
            tls_listener,
            metrics_listener,
            tls,
            handshakes: std::collections::VecDeque::new(),
            conns: Conns::with_capacity(1024),
            ups,
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
            next_cluster_refresh: now,
            cluster_refreshed: None,
            cluster_waiting: Vec::new(),
            discovery_deadline: now + 3 * config.health_timeout,
            accept_deferred: false,
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

    /// The address clients connect to (the TLS one when plaintext is off).
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        match (&self.listener, &self.tls_listener) {
            (Some(l), _) | (None, Some(l)) => l.local_addr(),
            (None, None) => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// The address TLS clients connect to.
    pub fn tls_addr(&self) -> Option<std::net::SocketAddr> {
        self.tls_listener.as_ref()?.local_addr().ok()
    }

    /// Runs the loop until shutdown completes.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let addr = |l: &Option<TcpListener>| l.as_ref().and_then(|l| l.local_addr().ok());
        info!(
            "listening on {} (TLS on {}) with {} backend(s), picker {:?}{}",
            addr(&self.listener).map_or("-".into(), |a| a.to_string()),
            addr(&self.tls_listener).map_or("-".into(), |a| a.to_string()),
            self.ups.backends.len(),
            self.config.picker,
            if self.tls.to_backends() {
                ", TLS to backends"
            } else {
                ""
            },
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
            if self.accept_deferred && !self.discovering() {
                self.accept_deferred = false;
                self.accept(false);
                self.accept(true);
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
            LISTENER | TLS_LISTENER if self.discovering() => self.accept_deferred = true,
            LISTENER => self.accept(false),
            TLS_LISTENER => self.accept(true),
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
                match self.conns.get(t) {
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
                let readable = match self.conns.live_client_mut(r) {
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
            if !self.conns.is_live(r) {
                continue;
            }
            match self.conns.get(r.token) {
                Some(Conn::Client(_)) => self.on_client_readable(r.token, false),
                Some(Conn::Backend(_)) => self.on_backend_readable(r.token, false),
                _ => {}
            }
        }
    }

    /// True while the loop has just started and the probes are still learning what the
    /// backends are (a few round trips; at most three probe timeouts): clients are accepted
    /// once it is known, so that no request is sent before respite knows what the backends
    /// serve and whether they speak RESP3 (and which shards are masters, and behind Codis where
    /// its slots live).
    fn discovering(&self) -> bool {
        let backends = self
            .ups
            .backends
            .iter()
            .any(|b| b.discovering && b.health.up && !b.retired);
        let slots = (self.config.codis || self.ups.cluster) && self.ups.keymap.is_none();
        let roles =
            (self.ups.shards.iter()).any(|s| s.role == Role::Unknown && s.health.up && !s.retired);
        self.now < self.discovery_deadline && (backends || slots || roles)
    }

    /// Adds a connection to the slab and registers its socket once, for READABLE|WRITABLE.
    pub(super) fn add(&mut self, conn: Conn) -> io::Result<ConnRef> {
        let r = self.conns.insert(conn);
        let registry = self.poll.registry();
        let interest = Interest::READABLE | Interest::WRITABLE;
        let registered = match self.conns.get_mut(r.token) {
            Some(conn) => registry.register(conn.stream_mut(), Token(r.token), interest),
            None => Ok(()),
        };
        if let Err(e) = registered {
            self.conns.remove(r.token);
            return Err(e);
        }
        Ok(r)
    }

    /// Takes a connection out of the slab and deregisters its socket.
    pub(super) fn remove(&mut self, token: usize) -> Option<Conn> {
        let mut conn = self.conns.remove(token)?;
        let _ = self.poll.registry().deregister(conn.stream_mut());
        Some(conn)
    }

    fn on_tick(&mut self) {
        self.next_tick = self.now + TICK;
        for u in self.ups.probed() {
            self.check_probe(u);
        }
        self.close_drained();
        self.check_backend_timeouts();
        self.retry_cluster_waiting();
        if self.now >= self.next_ops_sample {
            self.next_ops_sample = self.now + Duration::from_millis(100);
            self.stats.sample_ops(self.now);
        }
        if self.now >= self.next_idle_check {
            self.next_idle_check = self.now + Duration::from_secs(1);
            self.close_idle_clients();
        }
        self.close_stalled_handshakes();
        if self.stats.accept_errors > 0 {
            // Retry accepts deferred by EMFILE once per tick.
            self.accept(false);
            self.accept(true);
        }
    }
}

/// Places keys on the shards by the configured rule, warning about the servers of the rule
/// that are not among the shards (a command for a key there gets an error naming it).
pub(crate) fn map_keys(ups: &mut Upstreams, config: &Config) {
    if config.codis || config.cluster {
        // The map follows the slot table the codis-proxies or cluster nodes report (`probe.rs`).
        return;
    }
    for server in ups.map_keys(config.twemproxy.as_ref()) {
        warn!("twemproxy server {server} is not among --shards: keys it holds cannot be routed");
    }
    if let Some(map) = &ups.keymap {
        info!("placing keys by the {}", map.describe());
    }
}
