//! Backends that are not Redis: `FakeBackend`, a scriptable RESP server on a listener bound to
//! 127.0.0.1:0 that answers each request with what its script says for the command (now or
//! after a delay), in threads that stop on drop; and `RefusedPort`, an address that refuses
//! connections because it is bound and never listened on.

use respite::resp::{Frame, Limits, RequestScanner};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a fake backend writes for one request: `bytes`, after `delay`, in one write.
pub struct Reply {
    pub bytes: &'static [u8],
    pub delay: Duration,
}

impl Reply {
    /// `bytes` at once.
    pub fn now(bytes: &'static [u8]) -> Reply {
        Reply::after(Duration::ZERO, bytes)
    }

    /// `bytes` after `delay`.
    pub fn after(delay: Duration, bytes: &'static [u8]) -> Reply {
        Reply { bytes, delay }
    }
}

/// The script: the reply for a request, given its command name in upper case.
type Script = dyn Fn(&[u8]) -> Reply + Send + Sync;

/// A fake RESP backend; its threads stop, and its connections close, on drop.
pub struct FakeBackend {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The most connections it serves: more are closed at once.
const MAX_CONNECTIONS: usize = 256;
/// How long it serves, however the test goes.
const MAX_LIFETIME: Duration = Duration::from_secs(60);

impl FakeBackend {
    /// Answers every request with `bytes` at once (`-LOADING ...` plays a Redis loading its
    /// data set).
    pub fn always(bytes: &'static [u8]) -> FakeBackend {
        Self::start(move |_| Reply::now(bytes))
    }

    /// Answers each request with what `script` returns for its command name (upper case).
    /// Requests it cannot scan close the connection; empty ones get no reply, as in Redis.
    pub fn start(script: impl Fn(&[u8]) -> Reply + Send + Sync + 'static) -> FakeBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let script: Arc<Script> = Arc::new(script);
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || accept_loop(listener, &stop, &script))
        };
        FakeBackend {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, stop: &Arc<AtomicBool>, script: &Arc<Script>) {
    let start = Instant::now();
    let mut conns = Vec::new();
    while !stop.load(Ordering::Relaxed) && start.elapsed() < MAX_LIFETIME {
        match listener.accept() {
            Ok((s, _)) if conns.len() < MAX_CONNECTIONS => {
                let (stop, script) = (stop.clone(), script.clone());
                conns.push(std::thread::spawn(move || serve(s, &stop, &*script)));
            }
            Ok(_) | Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in conns {
        let _ = c.join();
    }
}

/// Serves one connection until the peer leaves, a request cannot be scanned, or `stop`.
fn serve(mut s: TcpStream, stop: &AtomicBool, script: &Script) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    let limits = Limits::default();
    let mut scanner = RequestScanner::new();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        match scanner.scan(&buf, &limits) {
            Ok(Some(frame)) => {
                let name = match &frame {
                    Frame::Multibulk { name, .. } => Some(buf[name.0..name.0 + name.1].to_vec()),
                    Frame::Inline { args, .. } => args.first().cloned(),
                    Frame::Empty { .. } => None,
                };
                buf.drain(..frame.consumed());
                if let Some(name) = name {
                    let reply = script(&name.to_ascii_uppercase());
                    std::thread::sleep(reply.delay);
                    if s.write_all(reply.bytes).is_err() {
                        return;
                    }
                }
            }
            Ok(None) => match s.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if is_timeout(&e) => continue,
                Err(_) => return,
            },
            Err(_) => return,
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// A loopback address that refuses connections: its port is bound, so no one else gets it,
/// but never listened on. Free again on drop.
pub struct RefusedPort {
    pub addr: SocketAddr,
    _socket: socket2::Socket,
}

impl RefusedPort {
    /// Binds 127.0.0.1:0 without listening.
    pub fn bind() -> RefusedPort {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        socket.bind(&any.into()).expect("bind 127.0.0.1:0");
        let addr = socket
            .local_addr()
            .expect("addr")
            .as_socket()
            .expect("an IP address");
        RefusedPort {
            addr,
            _socket: socket,
        }
    }
}
