//! Test harness: real `redis-server` processes on free ports, respite on a listener bound to port
//! 0 in a thread of the test, a real client (`redis` crate) and a raw-socket client with read
//! timeouts so that a hang fails the test instead of blocking it.

#![allow(dead_code)]

use respite::resp::ReplyScanner;
use respite::{Config, Listeners, Proxy, ShutdownHandle};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A port that was free a moment ago (bound to 127.0.0.1:0, then released).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// Polls `f` every 20 ms until it returns true or `limit` passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// A `redis-server` child process, killed by PID on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
    spawn_attempts: u32,
    started_once: bool,
}

impl RedisServer {
    /// Starts a server on a free port and waits for it to answer PING.
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// Starts a server with extra arguments (`["--requirepass", "x"]`).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s = RedisServer {
            child: None,
            port: free_port(),
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            spawn_attempts: 0,
            started_once: false,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = self.dir.path().join("redis.log");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--enable-debug-command", "yes"])
            .args(["--dir", self.dir.path().to_str().unwrap_or(".")])
            .args(["--logfile", log.to_str().unwrap_or("redis.log")])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/install-deps)");
        self.child = Some(child);
        let port = self.port;
        let up = wait_until(Duration::from_secs(10), || {
            let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
                return false;
            };
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            let mut buf = [0u8; 64];
            s.write_all(b"PING\r\n").is_ok() && s.read(&mut buf).map(|n| n > 0).unwrap_or(false)
        });
        if !up {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            if text.contains("Address already in use")
                && self.spawn_attempts < 3
                && !self.started_once
            {
                // Another test took the port between our probe and the bind: try another.
                self.spawn_attempts += 1;
                self.port = free_port();
                return self.spawn();
            }
            panic!("redis-server on port {port} did not start; log:\n{text}");
        }
        self.started_once = true;
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// A client connected straight to this server.
    pub fn client(&self) -> redis::Connection {
        client_at(self.addr())
    }

    /// SIGKILL by PID, and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The process id, for signals.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// `calls` of `cmdstat_<cmd>` in this server's `INFO commandstats`.
    pub fn calls(&self, cmd: &str) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut self.client())
            .expect("INFO commandstats");
        let key = format!("cmdstat_{cmd}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `redis` crate client with timeouts.
pub fn client_at(addr: SocketAddr) -> redis::Connection {
    let client = redis::Client::open(format!("redis://{addr}/")).expect("client");
    let conn = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    conn.set_write_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    conn
}

/// respite running in a thread of the test on 127.0.0.1:0.
pub struct TestProxy {
    pub addr: SocketAddr,
    handle: ShutdownHandle,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestProxy {
    /// Starts respite with `config` (its `listen` is ignored).
    pub fn start(config: Config) -> TestProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        Self::start_on(config, listener.into())
    }

    /// Starts respite with `config`, serving `/metrics` on `metrics` (already bound).
    pub fn start_with_metrics(config: Config, metrics: TcpListener) -> TestProxy {
        let clients = TcpListener::bind("127.0.0.1:0").expect("bind");
        let metrics = Some(metrics);
        Self::start_on(config, Listeners { clients, metrics })
    }

    fn start_on(config: Config, listeners: Listeners) -> TestProxy {
        let _ = env_logger::builder().is_test(true).try_init();
        let addr = listeners.clients.local_addr().expect("addr");
        let mut proxy = Proxy::new(config, listeners).expect("proxy");
        let handle = proxy.shutdown_handle();
        let thread = std::thread::spawn(move || proxy.run());
        TestProxy {
            addr,
            handle,
            thread: Some(thread),
        }
    }

    /// Starts respite with default settings in front of `backends`.
    pub fn over(backends: &[&RedisServer]) -> TestProxy {
        Self::start(config_for(backends))
    }

    /// A real client connected to respite.
    pub fn client(&self) -> redis::Connection {
        client_at(self.addr)
    }

    /// A raw client connected to respite.
    pub fn raw(&self) -> RawClient {
        RawClient::connect(self.addr)
    }

    /// Graceful stop; returns what the loop returned.
    pub fn stop(&mut self) -> std::io::Result<()> {
        self.handle.shutdown();
        match self.thread.take() {
            Some(t) => t.join().expect("proxy thread panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.stop();
        }
    }
}

/// The default config in front of `backends`, with fast health checks for tests.
pub fn config_for(backends: &[&RedisServer]) -> Config {
    let mut c = Config::with_backends(backends.iter().map(|b| b.addr()).collect());
    c.health_interval = Duration::from_millis(200);
    c.health_timeout = Duration::from_millis(150);
    c
}

/// A client that speaks raw bytes, with a read timeout.
pub struct RawClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
    scanner: ReplyScanner,
}

impl RawClient {
    /// Connects with 5 s read/write timeouts.
    pub fn connect(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        RawClient {
            stream,
            buf: Vec::new(),
            scanner: ReplyScanner::new(),
        }
    }

    /// Writes bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Reads one complete reply frame, byte for byte.
    pub fn reply(&mut self) -> Vec<u8> {
        self.try_reply().expect("reply")
    }

    /// Reads one reply, or the I/O error (EOF is `UnexpectedEof`).
    pub fn try_reply(&mut self) -> std::io::Result<Vec<u8>> {
        loop {
            if let Some(n) = self
                .scanner
                .scan(&self.buf)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?
            {
                return Ok(self.buf.drain(..n).collect());
            }
            let mut chunk = [0u8; 65536];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends a command and reads its reply.
    pub fn cmd(&mut self, args: &[&[u8]]) -> Vec<u8> {
        self.send(&respite::resp::encode_request(args));
        self.reply()
    }

    /// True once the server has closed the connection (within the read timeout).
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1024];
        loop {
            match self.stream.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

/// A `nutcracker` (twemproxy) process sharding over `servers`, killed by PID on drop.
pub struct Nutcracker {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Nutcracker {
    /// Starts twemproxy over `servers` (ketama, fnv1a_64, no auto-eject) and waits for PING.
    /// A free port can be taken by a parallel test before nutcracker binds it: try 3 ports.
    pub fn start(servers: &[SocketAddr]) -> Nutcracker {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(servers) {
                Ok(n) => return n,
                Err(log) => last = log,
            }
        }
        panic!("nutcracker did not start; last log:\n{last}");
    }

    fn try_start(servers: &[SocketAddr]) -> Result<Nutcracker, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let mut conf = format!(
            "pool:\n  listen: 127.0.0.1:{port}\n  hash: fnv1a_64\n  distribution: ketama\n  redis: true\n  \
             auto_eject_hosts: false\n  timeout: 3000\n  servers:\n"
        );
        for (i, s) in servers.iter().enumerate() {
            conf.push_str(&format!("   - {s}:1 shard{i}\n"));
        }
        let conf_path = dir.path().join("nutcracker.yml");
        std::fs::write(&conf_path, conf).expect("write nutcracker conf");
        let log = dir.path().join("nutcracker.log");
        let child = Command::new("nutcracker")
            .arg("-c")
            .arg(&conf_path)
            .args(["-s", &free_port().to_string(), "-a", "127.0.0.1"])
            .arg("-o")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nutcracker must be installed (scripts/install-deps)");
        let n = Nutcracker {
            child: Some(child),
            port,
            dir,
        };
        let up = wait_until(Duration::from_secs(10), || {
            let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
                return false;
            };
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            let mut buf = [0u8; 64];
            s.write_all(b"*1\r\n$4\r\nPING\r\n").is_ok()
                && s.read(&mut buf).map(|n| n > 0).unwrap_or(false)
        });
        if !up {
            return Err(
                std::fs::read_to_string(n.dir.path().join("nutcracker.log")).unwrap_or_default()
            );
        }
        Ok(n)
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for Nutcracker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// 3 masters, a replica of each, and 2 twemproxy backends sharding over the masters.
pub struct Fleet {
    pub masters: Vec<RedisServer>,
    pub replicas: Vec<RedisServer>,
    pub proxies: Vec<Nutcracker>,
}

impl Fleet {
    /// Starts the fleet and waits until every replica is in sync.
    pub fn start() -> Fleet {
        let masters: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
        let replicas: Vec<RedisServer> = masters
            .iter()
            .map(|m| RedisServer::start_with(&["--replicaof", "127.0.0.1", &m.port.to_string()]))
            .collect();
        for r in &replicas {
            let synced = wait_until(Duration::from_secs(10), || {
                let info: String = redis::cmd("INFO")
                    .arg("replication")
                    .query(&mut r.client())
                    .unwrap_or_default();
                info.contains("master_link_status:up")
            });
            assert!(synced, "replica on {} in sync", r.port);
        }
        let addrs: Vec<SocketAddr> = masters.iter().map(|m| m.addr()).collect();
        let proxies = (0..2).map(|_| Nutcracker::start(&addrs)).collect();
        Fleet {
            masters,
            replicas,
            proxies,
        }
    }

    /// respite's config: the twemproxies as backends, masters and replicas as shards.
    pub fn config(&self) -> Config {
        let mut c = Config::with_backends(self.proxies.iter().map(|p| p.addr()).collect());
        c.shards = self
            .masters
            .iter()
            .chain(&self.replicas)
            .map(|s| s.addr())
            .collect();
        c.health_interval = Duration::from_millis(200);
        c.health_timeout = Duration::from_millis(150);
        c
    }

    /// Keys stored on the masters, read from them directly.
    pub fn truth(&self) -> u64 {
        self.masters
            .iter()
            .map(|m| {
                redis::cmd("DBSIZE")
                    .query::<u64>(&mut m.client())
                    .unwrap_or(0)
            })
            .sum()
    }
}

/// Waits until respite's `INFO shards` reports a role for every shard.
pub fn wait_for_roles(proxy: &TestProxy) {
    let mut raw = proxy.raw();
    let ready = wait_until(Duration::from_secs(5), || {
        let info = String::from_utf8_lossy(&raw.cmd(&[b"INFO", b"shards"])).into_owned();
        info.contains("shard0:") && !info.contains("role=unknown")
    });
    assert!(ready, "every shard reported its role");
}
