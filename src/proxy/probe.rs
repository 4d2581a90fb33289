//! Probes: a connection of its own per backend and shard, `[AUTH] PING` (`+ ROLE` for shards,
//! `HELLO 3` once per backend) every interval, and what their answers change: health flips,
//! roles, whether a backend speaks RESP3.

use super::Proxy;
use crate::conns::Conn;
use crate::health::{parse_role, Flip, ProbeConn};
use crate::net;
use crate::resp::ReplyScanner;
use crate::upstream::{Group, Role, Upstream};
use bytes::{BufMut, BytesMut};
use log::{debug, info, warn};
use mio::net::TcpStream;
use std::io::{self, Write};
use std::time::Duration;

impl Proxy {
    /// Starts a probe of `u` when one is due, and fails the one in progress past its deadline.
    pub(crate) fn check_probe(&mut self, u: Upstream) {
        let now = self.now;
        if let Some(r) = self.ups.get(u).probe {
            if let Some(p) = self.conns.live_probe(r) {
                if let Some(deadline) = p.deadline {
                    if now >= deadline {
                        self.probe_done(u, false, "timeout");
                        self.close_probe(r.token);
                    }
                    return;
                }
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
        let mut out = BytesMut::new();
        let mut expect = 1;
        if let Some(auth) = self.backend_auth() {
            out.put_slice(&auth);
            expect += 1;
        }
        // Once per backend (again after it comes back), a round asks only `HELLO 3`: can it
        // speak RESP3? Refused, or the connection closed (twemproxy does that), means RESP2
        // only. That round does not count for health; it follows a good PING.
        let be = self.ups.get(u);
        let asks_hello = u.group == Group::Backend && be.resp3.is_none() && be.health.oks > 0;
        let asks_role = u.group == Group::Shard;
        if asks_hello {
            out.put_slice(b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n");
        } else {
            out.put_slice(b"*1\r\n$4\r\nPING\r\n");
            if asks_role {
                out.put_slice(b"*1\r\n$4\r\nROLE\r\n");
                expect += 1;
            }
        }
        let deadline = Some(self.now + self.config.health_timeout);
        let existing = self.ups.get(u).probe.filter(|&r| self.conns.is_live(r));
        let token = match existing {
            Some(r) => r.token,
            None => {
                let stream = match TcpStream::connect(self.ups.get(u).addr) {
                    Ok(s) => s,
                    Err(e) => {
                        self.probe_done(u, false, &format!("connect: {e}"));
                        return;
                    }
                };
                let probe = ProbeConn {
                    stream,
                    upstream: u,
                    connected: false,
                    out: BytesMut::new(),
                    rbuf: BytesMut::new(),
                    scanner: ReplyScanner::new(),
                    expect: 0,
                    asks_role,
                    asks_hello: false,
                    error: None,
                    deadline: None,
                };
                let r = match self.add(Conn::Probe(probe)) {
                    Ok(r) => r,
                    Err(e) => {
                        self.probe_done(u, false, &format!("register: {e}"));
                        return;
                    }
                };
                self.ups.get_mut(u).probe = Some(r);
                r.token
            }
        };
        if let Some(p) = self.conns.probe_mut(token) {
            p.out = out;
            p.expect = expect;
            p.asks_hello = asks_hello;
            p.error = None;
            p.deadline = deadline;
        }
        self.probe_write(token);
    }

    fn probe_write(&mut self, token: usize) {
        let Some(p) = self.conns.probe_mut(token) else {
            return;
        };
        if !p.connected || p.out.is_empty() {
            return;
        }
        match p.stream.write(&p.out) {
            Ok(n) => {
                let _ = p.out.split_to(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                let u = p.upstream;
                self.probe_done(u, false, &format!("write: {e}"));
                self.close_probe(token);
            }
        }
    }

    /// Readiness on a probe connection.
    pub(crate) fn on_probe_event(
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
            match net::connect_finished(&p.stream) {
                Ok(true) => p.connected = true,
                Ok(false) => return,
                Err(e) => {
                    self.probe_done(u, false, &format!("connect: {e}"));
                    self.close_probe(token);
                    return;
                }
            }
        }
        if writable {
            self.probe_write(token);
        }
        if !readable {
            return;
        }
        let Some(p) = self.conns.probe_mut(token) else {
            return;
        };
        if !p.connected {
            return;
        }
        let eof = match net::read_into(&mut p.stream, &mut p.rbuf, &mut self.scratch, hup) {
            Ok(r) => r.eof,
            Err(_) => true,
        };
        let mut result = None;
        let mut role = None;
        let mut hello = None;
        loop {
            match p.scanner.scan(&p.rbuf) {
                Ok(Some(len)) => {
                    let frame = p.rbuf.split_to(len);
                    if p.expect == 0 {
                        result = Some((false, "unexpected reply".to_string()));
                        break;
                    }
                    p.expect -= 1;
                    let left = p.expect;
                    if p.asks_hello {
                        if left == 0 {
                            hello = Some(matches!(frame.first(), Some(b'%' | b'*')));
                            p.deadline = None;
                        }
                        continue;
                    }
                    if frame.first() == Some(&b'-') {
                        if p.error.is_none() {
                            p.error = Some(
                                String::from_utf8_lossy(&frame[1..frame.len() - 2]).into_owned(),
                            );
                        }
                    } else if p.asks_role && left == 0 {
                        role = parse_role(&frame);
                    } else if left == u8::from(p.asks_role) && &frame[..] != b"+PONG\r\n" {
                        p.error = Some(format!(
                            "unexpected PING reply {:?}",
                            String::from_utf8_lossy(&frame)
                        ));
                    }
                    if p.expect == 0 {
                        p.deadline = None;
                        result = Some(match p.error.take() {
                            Some(err) => (false, err),
                            None if p.asks_role && role.is_none() => {
                                (false, "unreadable ROLE reply".into())
                            }
                            None => (true, String::new()),
                        });
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    result = Some((false, format!("bad reply: {e}")));
                    break;
                }
            }
        }
        let mut outstanding = p.expect > 0;
        if p.asks_hello && eof && hello.is_none() {
            // Closed on HELLO: a RESP2-only proxy. Not a health failure.
            hello = Some(false);
            outstanding = false;
        }
        if let Some(role) = role {
            self.set_role(u, role);
        }
        if let Some(resp3) = hello {
            let be = self.ups.get_mut(u);
            if be.resp3 != Some(resp3) {
                info!(
                    "{}={} addr={} speaks RESP3: {resp3}",
                    u.kind(),
                    u.index,
                    be.label
                );
            }
            be.resp3 = Some(resp3);
        }
        if let Some((ok, why)) = result {
            self.probe_done(u, ok, &why);
            if !ok {
                self.close_probe(token);
                return;
            }
        }
        if eof {
            if outstanding {
                self.probe_done(u, false, "connection closed");
            }
            self.close_probe(token);
        }
    }

    fn set_role(&mut self, u: Upstream, role: Role) {
        let shard = self.ups.get_mut(u);
        if shard.role == role {
            return;
        }
        warn!(
            "{}={} addr={} role {:?} -> {:?}",
            u.kind(),
            u.index,
            shard.label,
            shard.role,
            role
        );
        if let (Role::Replica(master), Role::Master) = (&shard.role, &role) {
            shard.promoted_from = Some(master.clone());
        }
        shard.role = role;
    }

    pub(crate) fn close_probe(&mut self, token: usize) {
        if let Some(Conn::Probe(p)) = self.remove(token) {
            let be = self.ups.get_mut(p.upstream);
            if be.probe.is_some_and(|r| r.token == token) {
                be.probe = None;
            }
        }
    }

    fn probe_done(&mut self, u: Upstream, ok: bool, why: &str) {
        let (rise, fall) = (self.config.rise, self.config.fall);
        let be = self.ups.get_mut(u);
        if !ok {
            debug!(
                "{}={} addr={} probe failed: {why}",
                u.kind(),
                u.index,
                be.label
            );
        }
        match be.health.record(ok, rise, fall) {
            Flip::Up => warn!(
                "{}={} addr={} UP after {rise} good probes",
                u.kind(),
                u.index,
                be.label
            ),
            Flip::Down => {
                warn!(
                    "{}={} addr={} DOWN after {fall} failed probes: {why}",
                    u.kind(),
                    u.index,
                    be.label
                );
                self.ups.get_mut(u).resp3 = None;
                self.fail_sessions_of(u);
            }
            Flip::None => {}
        }
    }
}

impl Proxy {
    /// Sessions to an ejected backend would otherwise wait forever on a hung one.
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
