//! `NutcrackerPool`: a real `nutcracker` (twemproxy) over a pool config the test writes
//! (any hash, distribution, hash tag, names, weights, unix sockets), and a pipelined `SET`
//! writer that speaks raw RESP to it: nutcracker closes a connection on commands it does not
//! proxy, such as the `CLIENT SETINFO` the `redis` crate sends on connect.
//!
//! The config text is a function of the listen port, so a port taken between `free_port` and
//! nutcracker's bind is retried with another (3 tries). The process is killed by PID on drop;
//! every wait is bounded; nutcracker's log is shown when it fails to start.

use super::{free_port, wait_until};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// How long one pipelined batch of `SET`s gets to be answered.
const BATCH_LIMIT: Duration = Duration::from_secs(20);

/// `nutcracker` running the config a test wrote, killed by PID on drop.
pub struct NutcrackerPool {
    child: Option<Child>,
    /// Where it listens.
    pub port: u16,
    config: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl NutcrackerPool {
    /// Writes `config(listen_port)` and starts nutcracker on it; waits until it answers.
    pub fn start(config: impl Fn(u16) -> String) -> NutcrackerPool {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(&config) {
                Ok(n) => return n,
                Err(log) => last = log,
            }
        }
        panic!("nutcracker did not start; last log:\n{last}");
    }

    fn try_start(config: &impl Fn(u16) -> String) -> Result<NutcrackerPool, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let path = dir.path().join("nutcracker.yml");
        std::fs::write(&path, config(port)).expect("write nutcracker config");
        let log = dir.path().join("nutcracker.log");
        let child = super::servers::spawn_nutcracker(&path, &log);
        let n = NutcrackerPool {
            child: Some(child),
            port,
            config: path,
            log,
            _dir: dir,
        };
        if !n.answers_ping() {
            return Err(n.log());
        }
        Ok(n)
    }

    /// True once nutcracker answers a RESP `PING` (within 10 s).
    fn answers_ping(&self) -> bool {
        wait_until(Duration::from_secs(10), || {
            let Ok(mut s) = TcpStream::connect(self.addr()) else {
                return false;
            };
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            let mut buf = [0u8; 64];
            s.write_all(b"*1\r\n$4\r\nPING\r\n").is_ok()
                && s.read(&mut buf).map(|n| n > 0).unwrap_or(false)
        })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The config file it runs.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `SET key value` for every key through nutcracker, `batch` requests per write,
    /// and checks that every reply is `+OK`.
    pub fn set_all(&self, keys: &[Vec<u8>], value: &[u8], batch: usize) {
        let mut conn = TcpStream::connect(self.addr()).expect("connect to nutcracker");
        conn.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        conn.set_write_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        for chunk in keys.chunks(batch.max(1)) {
            let mut out = Vec::new();
            for key in chunk {
                out.extend_from_slice(&respite::resp::encode_request(&[
                    &b"SET"[..],
                    &key[..],
                    value,
                ]));
            }
            conn.write_all(&out).expect("write SETs to nutcracker");
            let want = b"+OK\r\n".repeat(chunk.len());
            let mut got = vec![0u8; want.len()];
            let started = Instant::now();
            let mut filled = 0;
            // Bounded by the byte count and by BATCH_LIMIT (each read has a 5 s timeout).
            while filled < got.len() && started.elapsed() < BATCH_LIMIT {
                match conn.read(&mut got[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) => panic!("reading SET replies from nutcracker: {e}\n{}", self.log()),
                }
            }
            if got[..filled] != want[..] {
                let text = String::from_utf8_lossy(&got[..filled]);
                let first_bad = text.lines().find(|l| *l != "+OK").unwrap_or("(closed)");
                panic!(
                    "nutcracker answered {filled} of {} reply bytes; first other reply: {first_bad}\n{}",
                    want.len(),
                    self.log()
                );
            }
        }
    }
}

impl Drop for NutcrackerPool {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGKILL by PID, and reap.
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
