//! Probes in the loop: a connection of its own per backend and shard, a round every interval
//! (`[AUTH] PING`, `+ ROLE` for shards, `HELLO 3` once per backend), and what the answers
//! change: health flips, roles, whether a backend speaks RESP3. The conversation itself is in
//! `health.rs`.

use super::Proxy;
use crate::conns::Conn;
use crate::health::{probe_request, Flip, ProbeConn, ProbeReport, Tier};
use crate::keymap::cluster::SlotRange;
use crate::net;
use crate::tls::Failure;
use crate::upstream::{Group, Role, Upstream};
use log::{debug, info, warn};
use std::io::{self, Write};
use std::time::Duration;

impl Proxy {
    /// Starts a probe of `u` when one is due, and fails the one in progress past its deadline.
    pub(super) fn check_probe(&mut self, u: Upstream) {
        let now = self.now;
        if let Some(r) = self.ups.get(u).probe {
            if let Some(deadline) = self.conns.live_probe(r).and_then(|p| p.round.deadline) {
                if now >= deadline {
                    let handshaking = self
                        .conns
                        .live_probe(r)
                        .is_some_and(|p| p.stream.handshaking());
                    self.count_upstream_failure(handshaking.then_some(Failure::Timeout));
                    self.probe_done(
                        u,
                        Err(if handshaking {
                            "TLS handshake timeout"
                        } else {
                            "timeout"
                        }),
                    );
                    self.close_probe(r.token);
                }
                return;
            }
        }
        if now >= self.ups.get(u).next_probe {
            self.start_probe(u);
        }
    }

    fn start_probe(&mut self, u: Upstream) {
        let interval = self.config.health_interval;
        let jitter = self
            .picker
            .random_below(interval.as_millis() as u64 / 10 + 1);
        let next = self.now + interval + Duration::from_millis(jitter);
        self.ups.get_mut(u).next_probe = next;
        let ask = (self.ups.get(u)).next_ask(
            u.group == Group::Shard,
            self.config.codis,
            self.ups.cluster,
        );
        let (out, expect) = probe_request(self.backend_auth().as_deref(), ask);
        let deadline = self.now + self.config.health_timeout;
        let Some(token) = self.probe_conn(u) else {
            return;
        };
        if let Some(p) = self.conns.probe_mut(token) {
            p.out = out;
            p.round.begin(ask, expect, deadline);
        }
        self.probe_write(token);
    }

    /// The probe connection of `u`, opened if it has none.
    fn probe_conn(&mut self, u: Upstream) -> Option<usize> {
        if let Some(r) = self.ups.get(u).probe.filter(|&r| self.conns.is_live(r)) {
            return Some(r.token);
        }
        let opened = self
            .upstream_stream(u)
            .and_then(|stream| self.add(Conn::Probe(ProbeConn::new(stream, u))));
        match opened {
            Ok(r) => {
                self.ups.get_mut(u).probe = Some(r);
                Some(r.token)
            }
            Err(e) => {
                self.probe_done(u, Err(&format!("connect: {e}")));
                None
            }
        }
    }

    fn probe_write(&mut self, token: usize) {
        let Some(p) = self.conns.probe_mut(token) else {
            return;
        };
        if !p.connected {
            return;
        }
        if p.out.is_empty() {
            // Records of an earlier write may wait for this WRITABLE.
            let _ = p.stream.flush_tls();
            return;
        }
        match p.stream.write(&p.out) {
            Ok(n) => {
                let _ = p.out.split_to(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                let u = p.upstream;
                self.probe_done(u, Err(&format!("write: {e}")));
                self.close_probe(token);
            }
        }
    }

    /// Readiness on a probe connection: finish connecting, write the round, read its answers.
    pub(super) fn on_probe_event(
        &mut self,
        token: usize,
        readable: bool,
        writable: bool,
        hup: bool,
    ) {
        let Some(p) = self.conns.probe_mut(token) else {
            return;
        };
        let u = p.upstream;
        if !p.connected && writable {
            match net::connect_finished(&mut p.stream) {
                Ok(true) => p.connected = true,
                Ok(false) => return,
                Err(e) => {
                    self.probe_done(u, Err(&format!("connect: {e}")));
                    self.close_probe(token);
                    return;
                }
            }
        }
        if writable {
            self.probe_write(token);
        }
        let Some(p) = self
            .conns
            .probe_mut(token)
            .filter(|p| readable && p.connected)
        else {
            return;
        };
        let read = match p
            .stream
            .read_into(&mut p.round.rbuf, &mut self.scratch, hup)
        {
            Ok(read) => read,
            Err(e) => {
                let failure = p.stream.failure();
                self.count_upstream_failure(failure);
                self.probe_done(u, Err(&format!("read: {e}")));
                self.close_probe(token);
                return;
            }
        };
        if read.tls.handshake_done {
            let expiry = p.stream.peer_certificates().and_then(crate::tls::expiry_of);
            self.ups.get_mut(u).cert_expiry = expiry;
        }
        if read.tls.writable_again {
            self.probe_write(token);
        }
        let Some(p) = self.conns.probe_mut(token) else {
            return;
        };
        let eof = read.eof;
        if eof {
            // Closed during its TLS handshake.
            let failure = p.stream.failure();
            self.count_upstream_failure(failure);
        }
        let Some(p) = self.conns.probe_mut(token) else {
            return;
        };
        let report = p.round.answers(eof);
        self.apply_probe_report(u, token, report, eof);
    }

    /// What a probe's answers change. Discovery (tier, then RESP3) runs its rounds back to
    /// back, not an interval apart, so that RESP3 clients wait for it only a few round trips.
    fn apply_probe_report(&mut self, u: Upstream, token: usize, report: ProbeReport, eof: bool) {
        if let Some(role) = report.role {
            self.set_role(u, role);
        }
        if let Some(slots) = report.slots.clone() {
            self.follow_codis(slots);
        }
        if let Some(ranges) = report.cluster.clone() {
            self.follow_cluster(ranges);
        }
        let complete = report.result.is_some() || report.tier.is_some() || report.resp3.is_some();
        let failed = match report.result {
            Some(result) => {
                let failed = result.is_err();
                self.probe_done(u, result.as_ref().map(|_| ()).map_err(String::as_str));
                failed
            }
            None => false,
        };
        if report.cut_short && !failed {
            self.probe_done(u, Err("connection closed"));
        }
        if report.tier.is_some() || report.resp3.is_some() {
            self.discovered(u, report.tier, report.resp3);
        }
        if failed || eof {
            self.close_probe(token);
        }
        let ok = complete && !failed && !report.cut_short;
        // A codis-proxy just recognised is asked its slot table at once, not a round later.
        let slots_next = self.config.codis && report.tier == Some(Tier::Codis);
        if ok && (self.ups.get(u).discovering || slots_next) {
            self.start_probe(u);
        }
    }

    /// Takes in what a discovery round learned; once discovery is over, the requests of RESP3
    /// clients that waited for it go.
    fn discovered(&mut self, u: Upstream, tier: Option<Tier>, resp3: Option<bool>) {
        let be = self.ups.get_mut(u);
        let (kind, index, label) = (u.kind(), u.index, &be.label);
        if tier.is_some() && be.tier != tier {
            info!("{kind}={index} addr={label} is {}", tier_name(tier));
        }
        if resp3.is_some() && be.resp3 != resp3 {
            info!(
                "{kind}={index} addr={label} speaks RESP3: {}",
                resp3 == Some(true)
            );
        }
        let over = be.learn(tier, resp3, false);
        self.ups.refresh_tier();
        if over {
            self.release_parked(u);
        }
    }

    /// Takes in a slot table a Redis Cluster node reported, if it changed.
    fn follow_cluster(&mut self, ranges: Vec<SlotRange>) {
        if ranges.is_empty() {
            return;
        }
        self.cluster_refreshed = Some(self.now);
        if self.ups.cluster_slots.as_ref() == Some(&ranges) {
            return;
        }
        let now = self.now;
        if self.ups.follow_cluster(ranges, now) {
            let live = self.ups.shards.iter().filter(|s| !s.retired);
            let nodes: Vec<&str> = live.map(|s| s.label.as_str()).collect();
            info!("cluster nodes: {}", nodes.join(" "));
        } else {
            // Slots moving between known nodes (resharding): one line per change is too many.
            debug!("cluster slot table changed");
        }
    }

    /// Takes in a slot table a codis-proxy reported, if it changed: the key map follows it, and
    /// without `--shards` its group masters become the shards.
    fn follow_codis(&mut self, masters: Vec<String>) {
        if self.ups.codis_slots.as_ref() == Some(&masters) {
            return;
        }
        let discover = self.config.shards.is_empty();
        let now = self.now;
        for server in self.ups.follow_codis(masters, discover, now) {
            warn!("Codis group master {server} is not among the shards: keys it holds cannot be routed");
        }
        if let Some(map) = &self.ups.keymap {
            info!("placing keys by the {}", map.describe());
        }
    }

    /// Sends the requests that waited for `u`'s discovery (to `u`, or elsewhere if it is down).
    pub(super) fn release_parked(&mut self, u: Upstream) {
        for (origin, req) in std::mem::take(&mut self.ups.get_mut(u).parked) {
            self.send(origin, req);
        }
    }

    fn set_role(&mut self, u: Upstream, role: Role) {
        let shard = self.ups.get_mut(u);
        if shard.role == role {
            return;
        }
        let (kind, label) = (u.kind(), &shard.label);
        if shard.role == Role::Unknown {
            // The first answer: news only when it changes later.
            info!("{kind}={} addr={label} role {role:?}", u.index);
        } else {
            warn!(
                "{kind}={} addr={label} role {:?} -> {role:?}",
                u.index, shard.role
            );
        }
        if let (Role::Replica(master), Role::Master) = (&shard.role, &role) {
            shard.promoted_from = Some(master.clone());
        }
        shard.role = role;
    }

    pub(super) fn close_probe(&mut self, token: usize) {
        if let Some(Conn::Probe(p)) = self.remove(token) {
            let be = self.ups.get_mut(p.upstream);
            if be.probe.is_some_and(|r| r.token == token) {
                be.probe = None;
            }
        }
    }

    /// Records a probe result; a flip is logged, and a backend that goes down fails its
    /// sessions, which would otherwise wait forever on a hung one.
    fn probe_done(&mut self, u: Upstream, result: Result<(), &str>) {
        let (rise, fall) = (self.config.rise, self.config.fall);
        // A failed round ends discovery: waiting requests go, converted if need be.
        let discovery_over = result.is_err() && self.ups.get_mut(u).learn(None, None, true);
        let be = self.ups.get_mut(u);
        let (kind, index, label) = (u.kind(), u.index, &be.label);
        if let Err(why) = result {
            debug!("{kind}={index} addr={label} probe failed: {why}");
        }
        match be.health.record(result.is_ok(), rise, fall) {
            Flip::Up => warn!("{kind}={index} addr={label} UP after {rise} good probes"),
            Flip::Down => {
                let why = result.err().unwrap_or_default();
                warn!("{kind}={index} addr={label} DOWN after {fall} failed probes: {why}");
                // Learned again once it is back: it may not be the same server.
                be.resp3 = None;
                be.discovering = true;
                self.fail_sessions_of(u);
                self.refresh_cluster_now();
            }
            Flip::None => {}
        }
        if discovery_over {
            self.release_parked(u);
        }
    }

    /// Fails the sessions to `u`, which has gone down.
    fn fail_sessions_of(&mut self, u: Upstream) {
        let label = self.ups.get(u).label.clone();
        let sessions: Vec<usize> = self
            .conns
            .backends()
            .filter(|(_, bc)| bc.owner.is_some() && bc.upstream == u)
            .map(|(t, _)| t)
            .collect();
        for t in sessions {
            let lost = crate::resp::error(&format!("ERR {} {label} is down", u.kind()));
            self.drop_session_conn(t, Some(lost));
        }
    }
}

fn tier_name(tier: Option<Tier>) -> &'static str {
    match tier {
        Some(Tier::Redis) => "a Redis",
        Some(Tier::Twemproxy) => "a twemproxy (it closes on commands it does not serve)",
        Some(Tier::Codis) => "a Codis proxy",
        Some(Tier::Cluster) => "a Redis Cluster node",
        None => "unknown",
    }
}
