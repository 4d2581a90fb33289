//! respite in a thread of the test: `TestProxy` runs it on listeners the test bound to port 0
//! and stops it cleanly; `config_for`/`config_over` give it fast health checks, `patient` slow
//! ones; `RawClient` speaks raw bytes to it with read and write timeouts, so that a hang fails
//! instead of blocking.

use super::{client_at, servers::RedisServer, wait_until};
use respite::resp::ReplyScanner;
use respite::{Config, Listeners, Proxy, ShutdownHandle};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::Duration;

/// respite running in a thread of the test on 127.0.0.1:0.
pub struct TestProxy {
    pub addr: SocketAddr,
    /// Where it serves TLS clients, when started with `start_tls`.
    pub tls_addr: Option<SocketAddr>,
    handle: ShutdownHandle,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestProxy {
    /// Starts respite with `config` (its `listen` is ignored).
    pub fn start(config: Config) -> TestProxy {
        let clients = Some(TcpListener::bind("127.0.0.1:0").expect("bind"));
        Self::start_on(
            config,
            Listeners {
                clients,
                tls: None,
                metrics: None,
            },
        )
    }

    /// Starts respite with `config` on a plaintext and a TLS listener (`config.tls.listen` is
    /// set to the TLS one, whose address is `tls_addr`); `config.tls` must name the cert and key.
    pub fn start_tls(mut config: Config) -> TestProxy {
        let clients = Some(TcpListener::bind("127.0.0.1:0").expect("bind"));
        let tls = TcpListener::bind("127.0.0.1:0").expect("bind");
        config.tls.listen = Some(tls.local_addr().expect("addr"));
        let listeners = Listeners {
            clients,
            tls: Some(tls),
            metrics: None,
        };
        Self::start_on(config, listeners)
    }

    /// Starts respite with `config`, serving `/metrics` on `metrics` (already bound).
    pub fn start_with_metrics(config: Config, metrics: TcpListener) -> TestProxy {
        let clients = Some(TcpListener::bind("127.0.0.1:0").expect("bind"));
        let metrics = Some(metrics);
        let tls = None;
        Self::start_on(
            config,
            Listeners {
                clients,
                tls,
                metrics,
            },
        )
    }

    fn start_on(config: Config, listeners: Listeners) -> TestProxy {
        let _ = env_logger::builder().is_test(true).try_init();
        let local = |l: &Option<TcpListener>| l.as_ref().map(|l| l.local_addr().expect("addr"));
        let addr = local(&listeners.clients).expect("a plaintext listener");
        let tls_addr = local(&listeners.tls);
        let mut proxy = Proxy::new(config, listeners).expect("proxy");
        let handle = proxy.shutdown_handle();
        let thread = std::thread::spawn(move || proxy.run());
        TestProxy {
            addr,
            tls_addr,
            handle,
            thread: Some(thread),
        }
    }

    /// Starts respite with default settings in front of `backends`.
    pub fn over(backends: &[&RedisServer]) -> TestProxy {
        Self::start(config_for(backends))
    }

    /// Starts respite in front of `backends` with the settings `set` changes.
    pub fn over_with(backends: &[&RedisServer], set: impl FnOnce(&mut Config)) -> TestProxy {
        let mut config = config_for(backends);
        set(&mut config);
        Self::start(config)
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
    config_over(backends.iter().map(|b| b.addr()).collect())
}

/// The default config in front of the backends at `addrs`, with fast health checks for tests.
pub fn config_over(addrs: Vec<SocketAddr>) -> Config {
    let mut c = Config::with_backends(addrs);
    c.health_interval = Duration::from_millis(200);
    c.health_timeout = Duration::from_millis(150);
    c
}

/// Settings for a test that stalls a backend: backend requests time out after 30 s and health
/// checks run every 10 s, so that the stalled backend is neither timed out nor ejected.
pub fn patient(c: &mut Config) {
    c.backend_timeout = Duration::from_secs(30);
    c.health_timeout = Duration::from_secs(10);
    c.health_interval = Duration::from_secs(10);
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

/// Reads one complete reply from `from` into `buf` (which keeps what follows it), `chunk` bytes
/// at a time with `pause` between reads (a slow reader keeps the server's socket full); the I/O
/// error otherwise (EOF is `UnexpectedEof`).
pub fn read_reply(
    from: &mut impl Read,
    buf: &mut Vec<u8>,
    scanner: &mut ReplyScanner,
    chunk: usize,
    pause: Duration,
) -> std::io::Result<Vec<u8>> {
    let mut read = vec![0u8; chunk];
    loop {
        let scanned = scanner.scan(buf);
        if let Some(n) =
            scanned.map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?
        {
            return Ok(buf.drain(..n).collect());
        }
        let n = from.read(&mut read)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&read[..n]);
        std::thread::sleep(pause);
    }
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

    /// Writes `chunk` again and again, at most `times` times, until a write stalls for 1.5 s
    /// (the write timeout stays at that): the bytes of the whole chunks that went in.
    pub fn write_until_blocked(&mut self, chunk: &[u8], times: usize) -> usize {
        self.stream
            .set_write_timeout(Some(Duration::from_millis(1500)))
            .expect("timeout");
        let mut accepted = 0usize;
        for _ in 0..times {
            match self.stream.write_all(chunk) {
                Ok(()) => accepted += chunk.len(),
                Err(_) => break,
            }
        }
        accepted
    }

    /// Reads one complete reply frame, byte for byte.
    pub fn reply(&mut self) -> Vec<u8> {
        self.try_reply().expect("reply")
    }

    /// Reads one reply, or the I/O error (EOF is `UnexpectedEof`).
    pub fn try_reply(&mut self) -> std::io::Result<Vec<u8>> {
        read_reply(
            &mut self.stream,
            &mut self.buf,
            &mut self.scanner,
            65536,
            Duration::ZERO,
        )
    }

    /// Sends a command and reads its reply.
    pub fn cmd(&mut self, args: &[&[u8]]) -> Vec<u8> {
        self.send(&respite::resp::encode_request(args));
        self.reply()
    }

    /// Reads and drops whatever comes until the server closes the connection: whether it did
    /// (EOF or a reset, not a read timeout or more than 1 GiB), and the bytes read before.
    pub fn read_until_closed(&mut self) -> (bool, usize) {
        let mut total = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return (true, total),
                Ok(n) => total += n,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (true, total),
                Err(_) => return (false, total),
            }
            if total > 1 << 30 {
                return (false, total);
            }
        }
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
