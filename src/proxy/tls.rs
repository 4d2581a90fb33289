//! TLS in the loop: wrapping accepted clients and upstream connections (`tls/`), bounding
//! handshakes by `--tls-handshake-timeout-ms`, counting their failures, and the TLS lines of
//! INFO and `/metrics`.
//!
//! A client in its handshake is an ordinary client that has sent nothing yet: it counts
//! against `--maxclients`, its reads return `WouldBlock` until the handshake is done, and it is
//! closed at its deadline (deadlines are in accept order, so the queue is checked from its
//! front each tick).

use super::Proxy;
use crate::tls::{seconds_left, Failure, Stream};
use crate::upstream::Upstream;
use log::{debug, info, warn};
use mio::net::TcpStream;
use std::fmt::Write;
use std::io;
use std::net::SocketAddr;

impl Proxy {
    /// The stream of a client accepted on the plaintext listener, or the TLS one.
    pub(super) fn client_stream(
        &mut self,
        tcp: TcpStream,
        peer: SocketAddr,
        tls: bool,
    ) -> Option<Stream> {
        if !tls {
            return Some(Stream::Plain(tcp));
        }
        self.tls
            .accept(tcp)
            .map_err(|e| warn!("TLS client peer={peer} refused: {e}"))
            .ok()
    }

    /// Counts a client's failed handshake and closes it.
    pub(super) fn handshake_failed(&mut self, token: usize, failure: Failure, why: &str) {
        self.stats.tls.client_failures[failure.index()] += 1;
        let peer = self.conns.client(token).map(|c| c.peer);
        let peer = peer.map_or_else(String::new, |p| p.to_string());
        match failure {
            Failure::NoCertificate | Failure::BadCertificate | Failure::RejectedByPeer => {
                info!("TLS client peer={peer} refused ({}): {why}", failure.name());
            }
            _ => debug!(
                "TLS client peer={peer} handshake failed ({}): {why}",
                failure.name()
            ),
        }
        self.close_client(token, "TLS handshake failed");
    }

    /// Closes the clients whose handshake has outlived `--tls-handshake-timeout-ms`. They
    /// are queued in accept order, so the oldest is at the front whatever the timeout is now.
    pub(super) fn close_stalled_handshakes(&mut self) {
        let timeout = self.config.tls.handshake_timeout;
        while let Some(&r) = self.handshakes.front() {
            let Some(c) = self.conns.live_client(r) else {
                self.handshakes.pop_front();
                continue;
            };
            if !c.stream.handshaking() {
                self.handshakes.pop_front();
                continue;
            }
            if self.now < c.created + timeout {
                return;
            }
            self.handshakes.pop_front();
            self.handshake_failed(r.token, Failure::Timeout, "handshake timeout");
        }
    }

    /// Counts a failed handshake with an upstream, if `stream` was in one.
    pub(super) fn count_upstream_failure(&mut self, failure: Option<Failure>) {
        if let Some(f) = failure {
            self.stats.tls.backend_failures[f.index()] += 1;
        }
    }

    /// A connection to `u` that has started connecting: TLS with `--backend-tls`.
    pub(crate) fn upstream_stream(&self, u: Upstream) -> io::Result<Stream> {
        let addr = self.ups.get(u).addr;
        self.tls.connect(TcpStream::connect(addr)?, addr)
    }

    /// SIGHUP: the certificate, key and CA files are read again for new connections.
    pub(super) fn reload_tls(&mut self) {
        self.tls.reload(&self.config.tls, &self.config.hostnames);
    }

    /// `INFO tls`.
    pub(super) fn info_tls(&self, out: &mut String) {
        let t = &self.stats.tls;
        let port = self.tls_addr().map_or(0, |a| a.port());
        let _ = write!(
            out,
            "# TLS\r\ntls_port:{port}\r\ntls_clients:{}\r\ntls_handshakes:{}\r\n",
            t.clients, t.handshakes,
        );
        write_failures(out, "tls_handshake_failures", &t.client_failures);
        if let Some(e) = self.tls.served_expiry {
            let _ = write!(
                out,
                "tls_served_cert_expires_in_seconds:{}\r\n",
                seconds_left(e)
            );
        }
        let on = if self.tls.to_backends() { "yes" } else { "no" };
        let _ = write!(out, "backend_tls:{on}\r\n");
        write_failures(out, "backend_tls_handshake_failures", &t.backend_failures);
        if let Some(e) = self.tls.client_cert_expiry {
            let _ = write!(
                out,
                "backend_client_cert_expires_in_seconds:{}\r\n",
                seconds_left(e)
            );
        }
        for (u, b) in self.upstreams_with_certs() {
            let _ = write!(
                out,
                "{}{}_cert:addr={},expires_in_seconds={}\r\n",
                u.kind(),
                u.index,
                b.0,
                seconds_left(b.1)
            );
        }
    }

    /// The upstreams whose certificate a probe has seen: (upstream, (address, notAfter)).
    fn upstreams_with_certs(&self) -> Vec<(Upstream, (&str, i64))> {
        self.ups
            .probed()
            .into_iter()
            .filter_map(|u| {
                let b = self.ups.get(u);
                Some((u, (b.label.as_str(), b.cert_expiry?)))
            })
            .collect()
    }

    /// The TLS lines of `/metrics`.
    pub(super) fn tls_metrics(&self, o: &mut String) {
        let t = &self.stats.tls;
        let _ = write!(
            o,
            "# HELP respite_tls_clients TLS clients connected.\n# TYPE respite_tls_clients gauge\n\
             respite_tls_clients {}\n\
             # HELP respite_tls_handshakes_total TLS client handshakes completed.\n\
             # TYPE respite_tls_handshakes_total counter\nrespite_tls_handshakes_total {}\n",
            t.clients, t.handshakes
        );
        let name = "respite_tls_handshake_failures_total";
        let _ = write!(
            o,
            "# HELP {name} TLS handshakes failed, by side and reason.\n# TYPE {name} counter\n"
        );
        for (side, counts) in [
            ("client", &t.client_failures),
            ("backend", &t.backend_failures),
        ] {
            for f in Failure::ALL {
                let n = counts[f.index()];
                let _ = writeln!(o, "{name}{{side=\"{side}\",reason=\"{}\"}} {n}", f.name());
            }
        }
        let name = "respite_tls_cert_expiry_seconds";
        let _ = write!(
            o,
            "# HELP {name} Seconds until a certificate expires.\n# TYPE {name} gauge\n"
        );
        let mine = [
            ("served", self.tls.served_expiry),
            ("backend_client", self.tls.client_cert_expiry),
        ];
        for (cert, expiry) in mine {
            if let Some(e) = expiry {
                let _ = writeln!(o, "{name}{{cert=\"{cert}\"}} {}", seconds_left(e));
            }
        }
        for (_, (addr, e)) in self.upstreams_with_certs() {
            let addr = crate::metrics::escape_label(addr);
            let left = seconds_left(e);
            let _ = writeln!(o, "{name}{{cert=\"upstream\",upstream=\"{addr}\"}} {left}");
        }
    }
}

/// INFO lines of handshake failures: `name:total`, then `name_reason:count` for each reason.
fn write_failures(out: &mut String, name: &str, counts: &[u64; Failure::ALL.len()]) {
    let _ = write!(out, "{name}:{}\r\n", counts.iter().sum::<u64>());
    for f in Failure::ALL {
        let _ = write!(out, "{name}_{}:{}\r\n", f.name(), counts[f.index()]);
    }
}
