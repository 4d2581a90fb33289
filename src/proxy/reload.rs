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

use super::Proxy;
use crate::config::{Cli, Config};
use crate::conns::Conn;
use crate::picker::Picker;
use log::{error, info, warn};

impl Proxy {
    /// Re-reads the configuration the proxy was started with (flags over file) and applies it.
    /// The TLS files are read again either way (`Tls::reload`).
    pub(crate) fn reload(&mut self) {
        let Some(cli) = self.reload_cli.as_ref() else {
            warn!("SIGHUP: no configuration to reload; re-reading the TLS files");
            return self.reload_tls();
        };
        match Config::from_cli(cli) {
            Ok(new) => self.apply_config(new),
            Err(e) => {
                error!("reload rejected, keeping the running configuration: {e}");
                self.reload_tls();
            }
        }
    }

    /// Applies `new` to the running loop (see the module docs).
    pub fn apply_config(&mut self, mut new: Config) {
        if new.listen != self.config.listen || new.tls.listen != self.config.tls.listen {
            warn!("reload: listen and tls_listen changes need a restart");
            new.listen = self.config.listen;
            new.tls.listen = self.config.tls.listen;
        }
        if new.tls.backend != self.config.tls.backend {
            warn!("reload: turning backend_tls on or off needs a restart; its settings are kept");
            let old = &self.config.tls;
            new.tls.backend = old.backend;
            new.tls.backend_ca.clone_from(&old.backend_ca);
            new.tls.backend_cert.clone_from(&old.backend_cert);
            new.tls.backend_key.clone_from(&old.backend_key);
            new.tls.backend_sni.clone_from(&old.backend_sni);
            new.tls.backend_insecure = old.backend_insecure;
        }
        if new.metrics_listen != self.config.metrics_listen {
            warn!("reload: metrics_listen changes need a restart");
            new.metrics_listen = self.config.metrics_listen;
        }
        if new.cluster != self.config.cluster || new.codis != self.config.codis {
            warn!("reload: switching --cluster or --codis needs a restart; configuration kept");
            return;
        }
        let now = self.now;
        let pool = new.backend_connections;
        // Shards found in a slot table (Redis Cluster, Codis without --shards) stay: the table
        // says what they are.
        let discovered = new.cluster || (new.codis && new.shards.is_empty());
        let shards = if discovered {
            let live = self.ups.shards.iter().filter(|s| !s.retired);
            live.map(|s| s.addr).collect()
        } else {
            new.shards.clone()
        };
        let (added, retired, sadded, sretired) =
            self.ups.reconcile(&new.backends, pool, &shards, now);
        super::map_keys(&mut self.ups, &new);
        if new.picker != self.config.picker || new.seed != self.config.seed {
            self.picker = Picker::new(new.picker, new.seed);
        }
        info!(
            "reloaded: backends +{added} -{retired}, shards +{sadded} -{sretired}, picker {:?}",
            new.picker
        );
        // 0 means "from the open-file limit", worked out once the loop starts (`client_limit`).
        new.maxclients = super::client_limit(&new);
        self.config = new;
        self.reload_tls();
        self.close_drained();
    }

    /// Closes the idle connections and probes of retired backends and shards; connections with
    /// requests in flight are closed once drained (checked every tick).
    pub(crate) fn close_drained(&mut self) {
        let mut done = Vec::new();
        for (t, conn) in self.conns.iter() {
            match conn {
                Conn::Backend(bc)
                    if bc.owner.is_none()
                        && self.ups.get(bc.upstream).retired
                        && bc.pipe.is_idle() =>
                {
                    done.push(t)
                }
                Conn::Probe(p) if self.ups.get(p.upstream).retired => done.push(t),
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
            let be = self.ups.get_mut(u);
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
