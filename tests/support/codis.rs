//! A real Codis 3.2.2 (built offline from `../shared/codis/` into `target/codis/` by
//! `scripts/install-deps`): one group per redis-server, the 1,024 slots split evenly, a dashboard
//! and codis-proxies, started by `../shared/codis/up.sh` (plus the extra proxies here) and
//! killed by the PIDs it recorded.

use super::{free_port, wait_until};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A Codis deployment on 127.0.0.1.
pub struct Codis {
    dir: tempfile::TempDir,
    /// The codis-proxies' addresses.
    pub proxies: Vec<SocketAddr>,
    /// The group masters (one redis-server per group), in group order.
    pub masters: Vec<SocketAddr>,
    extra: Vec<Child>,
}

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/codis")
}

fn bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/codis/bin");
    assert!(
        bin.join("codis-proxy").exists(),
        "{} is missing: run scripts/install-deps",
        bin.display()
    );
    bin
}

impl Codis {
    /// Starts `groups` redis-servers as groups and `proxies` codis-proxies over them, and waits
    /// until every proxy serves.
    pub fn start(groups: usize, proxies: usize) -> Codis {
        let bin = bin();
        let dir = tempfile::tempdir().expect("temp dir");
        let (pport, dport, aport) = (free_port(), free_port(), free_port());
        let redis: Vec<u16> = (0..groups).map(|_| free_port()).collect();
        let up = Command::new("bash")
            .arg(shared().join("up.sh"))
            .arg(&bin)
            .arg(dir.path())
            .args([pport, dport, aport].map(|p| p.to_string()))
            .args(redis.iter().map(u16::to_string))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("up.sh");
        let mut codis = Codis {
            dir,
            proxies: vec![SocketAddr::from(([127, 0, 0, 1], pport))],
            masters: redis
                .iter()
                .map(|&p| SocketAddr::from(([127, 0, 0, 1], p)))
                .collect(),
            extra: Vec::new(),
        };
        assert!(
            up.success(),
            "up.sh failed: see {}",
            codis.dir.path().display()
        );
        for i in 1..proxies {
            codis.add_proxy(&bin, i, dport);
        }
        codis
    }

    /// Starts one more codis-proxy on the same dashboard.
    fn add_proxy(&mut self, bin: &Path, i: usize, dport: u16) {
        let (pport, aport) = (free_port(), free_port());
        let base = std::fs::read_to_string(self.dir.path().join("proxy.toml")).expect("proxy.toml");
        let conf: String = base
            .lines()
            .map(|l| {
                if l.starts_with("admin_addr") {
                    format!("admin_addr = \"127.0.0.1:{aport}\"")
                } else if l.starts_with("proxy_addr") {
                    format!("proxy_addr = \"127.0.0.1:{pport}\"")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let path = self.dir.path().join(format!("proxy{i}.toml"));
        std::fs::write(&path, conf).expect("write proxy config");
        let child = Command::new(bin.join("codis-proxy"))
            .arg("--ncpu=1")
            .arg(format!("--config={}", path.display()))
            .arg(format!(
                "--log={}",
                self.dir.path().join(format!("log/proxy{i}.log")).display()
            ))
            .arg("--log-level=WARN")
            .arg(format!("--dashboard=127.0.0.1:{dport}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("codis-proxy");
        self.extra.push(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], pport));
        let serves = wait_until(Duration::from_secs(10), || {
            let Ok(mut c) = redis::Client::open(format!("redis://{addr}/"))
                .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
            else {
                return false;
            };
            redis::cmd("SET")
                .arg("codis:up")
                .arg(1)
                .query::<()>(&mut c)
                .is_ok()
        });
        assert!(serves, "codis-proxy {i} on {addr} serves");
        self.proxies.push(addr);
    }

    /// The group master that holds `key`, by Codis's slot.
    pub fn master_of(&self, key: &[u8]) -> usize {
        let slot = respite::keymap::codis::slot(key);
        // up.sh splits the slots evenly, the last group taking the rest.
        let per = 1024 / self.masters.len();
        (slot / per).min(self.masters.len() - 1)
    }

    /// respite's config in front of the proxies, following their slot table (no `--shards`).
    pub fn config(&self) -> respite::Config {
        let mut c = super::config_over(self.proxies.clone());
        c.codis = true;
        c
    }
}

impl Drop for Codis {
    fn drop(&mut self) {
        for c in &mut self.extra {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("bash")
            .arg(shared().join("up.sh"))
            .arg("down")
            .arg(self.dir.path())
            .status();
    }
}
