//! Failover: what happens when a backend connection fails or a request on it is late — the
//! backend is ejected or probed, requests never written are re-routed, requests written get an
//! error in order (or, with `--retry-reads`, a read-only one is re-sent once).

use super::Proxy;
use crate::backend::{Drained, Origin};
use crate::conns::{Conn, ConnRef};
use crate::health::Flip;
use crate::resp;
use crate::upstream::{Group, Upstream};
use bytes::Bytes;
use log::{debug, trace, warn};
use std::collections::VecDeque;
use std::time::Instant;

impl Proxy {
    /// A data connection failed: eject its backend, fail what it may have run, re-route what it
    /// never saw.
    /// With `eject`, the backend is ejected at once (a refused connect, a timeout). A connection
    /// that was closed or reset is not proof the backend is gone (twemproxy closes on commands it
    /// does not support): it is reconnected on demand and probed at once, and a refused
    /// reconnect ejects it.
    pub(super) fn fail_backend_conn(&mut self, token: usize, why: &str, eject: bool) {
        match self.conns.backend(token) {
            Some(bc) if bc.owner.is_some() => return self.fail_session_conn(token, why),
            Some(bc) if bc.oneshot => return self.fail_oneshot_conn(token, why),
            _ => {}
        }
        let Some(Conn::Backend(mut bc)) = self.remove(token) else {
            return;
        };
        let waiters = std::mem::take(&mut bc.waiters);
        self.release_waiters(waiters);
        let u = bc.upstream;
        self.ups.get_mut(u).forget_conn(bc.slot, token);
        let drained = bc.pipe.drain();
        let label = self.ups.get(u).label.clone();
        let (written, unsent) = (drained.written.len(), drained.unsent.len());
        warn!(
            "{}={} addr={label} conn={token} failed: {why} ({written} in flight, {unsent} unsent)",
            u.kind(),
            u.index,
        );
        if eject {
            self.backend_failed(u, why);
        } else {
            let now = self.now;
            let be = self.ups.get_mut(u);
            be.next_probe = be.next_probe.min(now);
        }
        let failed: u64 = drained
            .written
            .iter()
            .map(|&(_, owed)| u64::from(owed))
            .sum();
        self.ups.get_mut(u).errors += failed;
        self.stats.backend_errors += failed;
        self.unstick(u, &drained);
        let lost = self.conn_lost(u);
        self.fail_written(u, drained.written, &lost);
        self.reroute(u, drained.unsent, &lost);
    }

    /// A session connection failed: its failure may be the command's doing (twemproxy closes
    /// on MULTI), so it never ejects the backend; its owner learns it.
    fn fail_session_conn(&mut self, token: usize, why: &str) {
        let Some(u) = self.conns.backend(token).map(|bc| bc.upstream) else {
            return;
        };
        let label = &self.ups.get(u).label;
        debug!(
            "{}={} addr={label} session conn={token} failed: {why}",
            u.kind(),
            u.index
        );
        let lost = self.conn_lost(u);
        self.drop_session_conn(token, Some(lost));
    }

    /// A connection opened for one request failed: that request gets an error; the backend
    /// is not ejected for it (the probe judges the backend).
    fn fail_oneshot_conn(&mut self, token: usize, why: &str) {
        let Some(Conn::Backend(mut bc)) = self.remove(token) else {
            return;
        };
        let u = bc.upstream;
        let label = &self.ups.get(u).label;
        debug!(
            "{}={} addr={label} conn={token} failed: {why}",
            u.kind(),
            u.index
        );
        let lost = self.conn_lost(u);
        self.fail_all(bc.pipe.drain(), &lost);
    }

    /// The error each request on a lost connection to `u` gets.
    fn conn_lost(&self, u: Upstream) -> Bytes {
        let label = &self.ups.get(u).label;
        resp::error(&format!("ERR {} {label} connection lost", u.kind()))
    }

    /// Every request of a connection that is going away gets `error` for each reply it still
    /// owes, in order.
    pub(super) fn fail_all(&mut self, drained: Drained, error: &Bytes) {
        let unsent = drained.unsent.into_iter().map(|(o, _)| (o, o.replies()));
        for (origin, owed) in drained.written.into_iter().chain(unsent) {
            if owed > 0 {
                self.fail_slot(origin, owed, error);
            }
        }
    }

    /// Forgets `u` as the sticky backend of the clients with requests on a failed connection,
    /// so that re-routing picks afresh.
    fn unstick(&mut self, u: Upstream, drained: &Drained) {
        let written = drained.written.iter().map(|(o, _)| o);
        for origin in written.chain(drained.unsent.iter().map(|(o, _)| o)) {
            let Origin::Client { token, gen, .. } = *origin else {
                continue;
            };
            if let Some(c) = self.conns.live_client_mut(ConnRef { token, gen }) {
                if u.group == Group::Backend && c.backend == Some(u.index) {
                    c.backend = None;
                }
            }
        }
    }

    /// Requests a failed connection had written may have run: each gets `lost`, in order,
    /// except that with `--retry-reads` a read-only request none of whose replies arrived is
    /// re-sent once to another backend.
    fn fail_written(&mut self, u: Upstream, written: Vec<(Origin, u32)>, lost: &Bytes) {
        let mut retries = Vec::new();
        for (origin, owed) in written {
            let backend = u.group == Group::Backend;
            if self.config.retry_reads && backend && owed == origin.replies() {
                if let Some(req) = self.take_retry(origin) {
                    retries.push((origin, req));
                    continue;
                }
            }
            self.fail_slot(origin, owed, lost);
        }
        for (origin, req) in retries {
            if let Origin::Client { token, seq, .. } = origin {
                debug!(
                    "client={token} seq={seq} read retried after {}={} failed",
                    u.kind(),
                    u.index
                );
                self.send(origin, req);
            }
        }
    }

    /// Requests a failed connection never wrote go to another backend; a fan-out part belongs
    /// to its shard and no other, and fails.
    fn reroute(&mut self, u: Upstream, unsent: VecDeque<(Origin, Bytes)>, lost: &Bytes) {
        for (origin, req) in unsent {
            match origin {
                // A shard's requests are keyed to it (or refused by the backends): no other
                // target can run them.
                Origin::Client { .. } if u.group == Group::Shard => {
                    self.fail_slot(origin, origin.replies(), lost);
                }
                Origin::Client { token, seq, .. } => {
                    trace!(
                        "client={token} seq={seq} re-routed from {}={}",
                        u.kind(),
                        u.index
                    );
                    self.send(origin, req);
                }
                Origin::Fanout { .. } => self.complete(origin, lost.clone()),
                Origin::Auth | Origin::Quiet | Origin::Piece { .. } => {}
            }
        }
    }

    /// With `--retry-reads`: the request of `origin` if it is a read-only command not retried
    /// yet (it is then marked retried). Writes are never retried: they may have run.
    fn take_retry(&mut self, origin: Origin) -> Option<Bytes> {
        let Origin::Client {
            token, gen, seq, ..
        } = origin
        else {
            return None;
        };
        let c = self.conns.live_client_mut(ConnRef { token, gen })?;
        let tag = c.pending.waiting_tag_mut(seq)?;
        let spec = crate::command_table::COMMANDS.get(tag.cmd as usize)?;
        if tag.retried || spec.flags & crate::command::flag::READONLY == 0 {
            return None;
        }
        tag.retried = true;
        Some(tag.req.clone())
    }

    /// Passive detection: a data connection to `u` failed.
    pub(crate) fn backend_failed(&mut self, u: Upstream, why: &str) {
        let be = self.ups.get_mut(u);
        if be.health.eject() == Flip::Down {
            warn!("{}={} addr={} DOWN: {why}", u.kind(), u.index, be.label);
            self.refresh_cluster_now();
        }
    }

    pub(super) fn check_backend_timeouts(&mut self) {
        let timeout = self.config.backend_timeout;
        let (now, clock_us) = (self.now, self.clock_us);
        let mut expired = Vec::new();
        for (token, bc) in self.conns.backends() {
            let late = |t: Instant| now.duration_since(t) >= timeout;
            // Sessions may block as long as their command asks (a hung backend is caught by its
            // probe, which then fails its sessions), but not stop reading what they send.
            let front_late =
                bc.owner.is_none() && bc.pipe.front_late(clock_us, timeout.as_micros() as u64);
            let expired_now = if bc.connected {
                front_late || bc.stalled_since.is_some_and(late)
            } else {
                late(bc.opened)
            };
            if expired_now {
                expired.push(token);
            }
        }
        for token in expired {
            let handshaking = self
                .conns
                .backend(token)
                .is_some_and(|bc| bc.stream.handshaking());
            if handshaking {
                self.count_upstream_failure(Some(crate::tls::Failure::Timeout));
                self.fail_backend_conn(token, "TLS handshake timed out", true);
            } else {
                self.fail_backend_conn(token, "request timed out", true);
            }
        }
    }
}
