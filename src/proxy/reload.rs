//! Live reload: `SIGHUP` re-reads the configuration file and applies it without dropping a
//! client.
//!
//! ```text
//!  new backend  ─▶ appended, down, probed: joins after `rise` good probes
//!  gone backend ─▶ retired: never picked again, in-flight replies still delivered, then closed
//!  same backend ─▶ untouched (its connections, health and counters stay)
//! ```
//!
//! Backends and shards are never removed from their lists while running, so every index held by
//! a connection or an origin stays valid; a retired entry is only skipped. Picker, health
//! settings and limits are replaced. A file that fails validation is rejected with a logged error
//! and the old configuration stays. A changed `listen` (or `workers`, `metrics_listen`) needs a
//! restart and is logged as such.

use super::{Conn, Proxy};
use crate::backend::Backend;
use crate::config::{Cli, Config};
use crate::picker::Picker;
use log::{error, info, warn};
use std::net::SocketAddr;

impl Proxy {
    /// Re-reads the configuration the proxy was started with (flags over file) and applies it.
    pub(crate) fn reload(&mut self) {
        let Some(cli) = self.reload_cli.as_ref() else {
            warn!("SIGHUP ignored: no --config file to reload");
            return;
        };
        let new = match Config::from_cli(cli) {
            Ok(c) => c,
            Err(e) => {
                error!("reload rejected, keeping the running configuration: {e}");
                return;
            }
        };
        self.apply_config(new);
    }

    /// Applies `new` to the running loop (see the module docs).
    pub fn apply_config(&mut self, mut new: Config) {
        if new.listen != self.config.listen {
            warn!(
                "reload: listen {} -> {} needs a restart; still listening on {}",
                self.config.listen, new.listen, self.config.listen
            );
            new.listen = self.config.listen;
        }
        if new.metrics_listen != self.config.metrics_listen {
            warn!("reload: metrics_listen changes need a restart");
            new.metrics_listen = self.config.metrics_listen;
        }
        let now = self.now;
        let pool = new.backend_connections;
        let (added, retired) = reconcile(&mut self.backends, &new.backends, 2 * pool, now);
        let (sadded, sretired) = reconcile(&mut self.shards, &new.shards, 1, now);
        if new.picker != self.config.picker || new.seed != self.config.seed {
            self.picker = Picker::new(new.picker, new.seed);
        }
        info!(
            "reloaded: backends +{added} -{retired}, shards +{sadded} -{sretired}, picker {:?}",
            new.picker
        );
        self.config = new;
        self.close_drained();
    }

    /// Closes the idle connections and probes of retired backends and shards; connections with
    /// requests in flight are closed once drained (checked every tick).
    pub(crate) fn close_drained(&mut self) {
        let mut done = Vec::new();
        for (t, e) in self.conns.iter() {
            match &e.conn {
                Conn::Backend(bc)
                    if bc.owner.is_none()
                        && self.up(bc.upstream).retired
                        && bc.inflight.is_empty()
                        && bc.unsent.is_empty() =>
                {
                    done.push(t)
                }
                Conn::Probe(p) if self.up(p.upstream).retired => done.push(t),
                _ => {}
            }
        }
        for t in done {
            let removed = self.remove(t);
            let (u, slot) = match &removed {
                Some(Conn::Backend(bc)) => (bc.upstream, Some(bc.slot)),
                Some(Conn::Probe(p)) => (p.upstream, None),
                _ => continue,
            };
            let be = self.up_mut(u);
            match slot {
                Some(s) => {
                    if be
                        .conns
                        .get(s)
                        .copied()
                        .flatten()
                        .is_some_and(|r| r.token == t)
                    {
                        be.conns[s] = None;
                    }
                }
                None => be.probe = None,
            }
        }
    }

    /// Keeps the flags and file to re-read on SIGHUP.
    pub fn enable_reload(&mut self, cli: Cli) {
        self.reload_cli = Some(cli);
    }
}

/// Makes `list` serve `wanted`: keeps entries whose address stays, retires the others, revives
/// or appends the new ones (down until probed). Returns (added, retired).
fn reconcile(
    list: &mut Vec<Backend>,
    wanted: &[SocketAddr],
    pool: usize,
    now: std::time::Instant,
) -> (usize, usize) {
    let mut retired = 0;
    for b in list.iter_mut() {
        let keep = wanted.contains(&b.addr);
        if !keep && !b.retired {
            b.retired = true;
            b.health.up = false;
            retired += 1;
        }
    }
    let mut added = 0;
    for &addr in wanted {
        match list.iter_mut().find(|b| b.addr == addr) {
            Some(b) if b.retired => {
                b.retired = false;
                b.health = crate::health::Health::new();
                b.health.up = false;
                b.next_probe = now;
                added += 1;
            }
            Some(_) => {}
            None => {
                let mut b = Backend::new(addr, pool, now);
                b.health.up = false;
                list.push(b);
                added += 1;
            }
        }
    }
    (added, retired)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconcile_keeps_retires_and_adds() {
        let now = std::time::Instant::now();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let c: SocketAddr = "127.0.0.1:3".parse().unwrap();
        let mut list = vec![Backend::new(a, 1, now), Backend::new(b, 1, now)];
        assert_eq!(reconcile(&mut list, &[a, c], 1, now), (1, 1));
        assert!(!list[0].retired && list[0].health.up);
        assert!(list[1].retired && !list[1].health.up);
        assert!(
            !list[2].retired && !list[2].health.up,
            "new backends join after probes"
        );
        assert_eq!(reconcile(&mut list, &[a, b, c], 1, now), (1, 0));
        assert!(!list[1].retired);
    }
}
