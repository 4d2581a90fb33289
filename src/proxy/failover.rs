//! Failover: what happens when a backend connection fails or a request on it is late — the
//! backend is ejected or probed, requests never written are re-routed, requests written get an
//! error in order (or, with `--retry-reads`, a read-only one is re-sent once).

use super::Proxy;
use crate::backend::Origin;
use crate::conns::{Conn, ConnRef};
use crate::health::Flip;
use crate::resp;
use crate::upstream::{Group, Upstream};
use bytes::Bytes;
use log::{debug, trace, warn};
use std::time::Instant;

impl Proxy {
    /// A data connection failed: eject its backend, fail what it may have run, re-route what it
    /// never saw.
    /// With `eject`, the backend is ejected at once (a refused connect, a timeout). A connection
    /// that was closed or reset is not proof the backend is gone (twemproxy closes on commands it
    /// does not support): it is reconnected on demand and probed at once, and a refused
    /// reconnect ejects it.
    pub(super) fn fail_backend_conn(&mut self, token: usize, why: &str, eject: bool) {
        if let Some(bc) = self.conns.backend_mut(token) {
            if bc.owner.is_some() {
                // A session connection: its failure may be the command's doing (twemproxy
                // closes on MULTI), so it never ejects the backend.
                let u = bc.upstream;
                let label = self.ups.get(u).label.clone();
                debug!(
                    "{}={} addr={label} session conn={token} failed: {why}",
                    u.kind(),
                    u.index
                );
                let lost = resp::error(&format!("ERR {} {label} connection lost", u.kind()));
                self.drop_session_conn(token, Some(lost));
                return;
            }
        }
        let Some(Conn::Backend(mut bc)) = self.remove(token) else {
            return;
        };
        let waiters = std::mem::take(&mut bc.waiters);
        self.release_waiters(waiters);
        let u = bc.upstream;
        let slot = &mut self.ups.get_mut(u).conns[bc.slot];
        if slot.is_some_and(|r| r.token == token) {
            *slot = None;
        }
        let label = self.ups.get(u).label.clone();
        warn!(
            "{}={} addr={label} conn={token} failed: {why} ({} in flight, {} unsent)",
            u.kind(),
            u.index,
            bc.inflight.len(),
            bc.unsent.len()
        );
        if eject {
            self.backend_failed(u, why);
        } else {
            let now = self.now;
            let be = self.ups.get_mut(u);
            be.next_probe = be.next_probe.min(now);
        }
        let lost = resp::error(&format!("ERR {} {label} connection lost", u.kind()));
        let failed = bc
            .inflight
            .iter()
            .map(|(o, _)| u64::from(o.replies()))
            .sum::<u64>()
            - u64::from(bc.front_done);
        self.ups.get_mut(u).errors += failed;
        self.stats.backend_errors += failed;
        let unsent = bc.take_unsent();
        // Forget the sticky backend of affected clients first, so re-routing picks afresh.
        for origin in bc
            .inflight
            .iter()
            .map(|(o, _)| o)
            .chain(unsent.iter().map(|(o, _)| o))
        {
            if let Origin::Client { token, gen, .. } = *origin {
                if let Some(c) = self.conns.live_client_mut(ConnRef { token, gen }) {
                    if u.group == Group::Backend && c.backend == Some(u.index) {
                        c.backend = None;
                    }
                }
            }
        }
        let retry_reads = self.config.retry_reads;
        let mut retries = Vec::new();
        let mut done = bc.front_done;
        for (origin, _) in bc.inflight.drain(..) {
            // The front may be a run whose first replies were delivered already; only a request
            // (or run) none of whose replies arrived may be retried.
            let owed = origin.replies() - std::mem::take(&mut done);
            if retry_reads && owed == origin.replies() {
                if let Some(req) = self.take_retry(origin) {
                    retries.push((origin, req));
                    continue;
                }
            }
            self.fail_slot(origin, owed, &lost);
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
        for (origin, req) in unsent {
            match origin {
                Origin::Client { token, seq, .. } => {
                    trace!(
                        "client={token} seq={seq} re-routed from {}={}",
                        u.kind(),
                        u.index
                    );
                    self.send(origin, req);
                }
                // A fan-out part belongs to this shard and no other: it fails.
                Origin::Fanout { .. } => self.complete(origin, lost.clone()),
                Origin::Auth | Origin::Push | Origin::Piece { .. } => {}
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
            let front_late = bc.owner.is_none()
                && bc.inflight.front().is_some_and(|&(_, t)| {
                    clock_us.saturating_sub(t.max(bc.front_progress)) >= timeout.as_micros() as u64
                });
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
            self.fail_backend_conn(token, "request timed out", true);
        }
    }
}
