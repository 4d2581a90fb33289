//! Real servers as child processes: `RedisServer` (`redis-server` on a free port with a temp
//! dir), `Nutcracker` (twemproxy sharding over servers) and `Fleet` (masters, replicas and
//! twemproxies). Each waits for PING in a bounded loop, retries another port when its port was
//! taken, shows its log on failure and is killed by PID on drop.

use super::{client_at, free_port, process::signal, wait_until};
use respite::Config;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// True once something on `port` answers `ping` (within 10 s).
fn answers_ping(port: u16, ping: &[u8]) -> bool {
    wait_until(Duration::from_secs(10), || {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 64];
        s.write_all(ping).is_ok() && s.read(&mut buf).map(|n| n > 0).unwrap_or(false)
    })
}

/// SIGKILL by PID, and reap.
/// nutcracker over the config at `conf`, logging to `log`, its stats on a free port.
pub(super) fn spawn_nutcracker(conf: &std::path::Path, log: &std::path::Path) -> Child {
    Command::new("nutcracker")
        .arg("-c")
        .arg(conf)
        .args(["-s", &free_port().to_string(), "-a", "127.0.0.1"])
        .arg("-o")
        .arg(log)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nutcracker must be installed (scripts/install-deps)")
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
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
        if !answers_ping(port, b"PING\r\n") {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            kill(&mut self.child);
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
        kill(&mut self.child);
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

    /// Runs `f` while the server is stopped (SIGSTOP before, SIGCONT after, by PID): it keeps
    /// its connections but reads, answers and accepts nothing.
    pub fn while_stopped<T>(&self, f: impl FnOnce() -> T) -> T {
        let pid = self.pid().expect("redis-server is running");
        signal(pid, "-STOP");
        let out = f();
        signal(pid, "-CONT");
        out
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

/// A `nutcracker` (twemproxy) process sharding over `servers`, killed by PID on drop.
pub struct Nutcracker {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Nutcracker {
    /// Starts twemproxy over `servers` (ketama, fnv1a_64, `{}` hash tags, no auto-eject) and
    /// waits for PING.
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
             hash_tag: \"{{}}\"\n  auto_eject_hosts: false\n  timeout: 3000\n  servers:\n"
        );
        for (i, s) in servers.iter().enumerate() {
            conf.push_str(&format!("   - {s}:1 shard{i}\n"));
        }
        let conf_path = dir.path().join("nutcracker.yml");
        std::fs::write(&conf_path, conf).expect("write nutcracker conf");
        let log = dir.path().join("nutcracker.log");
        let child = spawn_nutcracker(&conf_path, &log);
        let n = Nutcracker {
            child: Some(child),
            port,
            dir,
        };
        if !answers_ping(port, b"*1\r\n$4\r\nPING\r\n") {
            return Err(std::fs::read_to_string(&log).unwrap_or_default());
        }
        Ok(n)
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Its pool, as respite's `--twemproxy-config` reads it.
    pub fn pool(&self) -> respite::keymap::twemproxy::Pool {
        let conf = self.dir.path().join("nutcracker.yml");
        respite::keymap::twemproxy::Pool::load(&conf.to_string_lossy()).expect("the pool")
    }
}

impl Drop for Nutcracker {
    fn drop(&mut self) {
        kill(&mut self.child);
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
        let mut c = super::config_over(self.proxies.iter().map(|p| p.addr()).collect());
        c.shards = self
            .masters
            .iter()
            .chain(&self.replicas)
            .map(|s| s.addr())
            .collect();
        c
    }

    /// `config`, with the twemproxies' pool: what they refuse goes to the key's master.
    pub fn routed_config(&self) -> Config {
        let mut c = self.config();
        c.twemproxy = Some(self.proxies[0].pool());
        c
    }

    /// The master that holds `key`, by the twemproxies' own placement.
    pub fn master_of(&self, key: &[u8]) -> usize {
        self.proxies[0]
            .pool()
            .server_for(key)
            .expect("a keyed pool")
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
