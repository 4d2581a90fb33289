//! Health: the rise/fall counters of a backend and its probe connection.
//!
//! ```text
//!   up ──(fall consecutive failures, or a data connection failing)──▶ down
//!   down ──(rise consecutive probe successes)──▶ up
//! ```
//!
//! A probe is `[AUTH] PING` on a connection of its own, never shared with clients. `+PONG` is a
//! success; an error reply (`-LOADING`, `-MASTERDOWN`, `-BUSY`, `-NOAUTH`...), a missed deadline,
//! a refused connection or EOF is a failure. Only the probe re-admits a backend.

use crate::backend::{Group, Role, Upstream};
use crate::net;
use crate::proxy::{Conn, Entry, Proxy};
use crate::resp::ReplyScanner;
use bytes::{BufMut, BytesMut};
use log::{debug, info, warn};
use mio::net::TcpStream;
use std::io::{self, Write};
use std::time::{Duration, Instant};

/// What a health result changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flip {
    /// No state change.
    None,
    /// The backend just became healthy.
    Up,
    /// The backend just became unhealthy.
    Down,
}

/// Rise/fall counters of one backend.
#[derive(Debug, Clone)]
pub struct Health {
    /// Healthy: the picker may choose it.
    pub up: bool,
    /// Consecutive failures.
    pub fails: u32,
    /// Consecutive successes.
    pub oks: u32,
    /// State changes so far.
    pub transitions: u64,
}

impl Health {
    /// A backend starts healthy, so clients are served before the first probe round; a dead one
    /// is ejected by its first failed connection.
    pub fn new() -> Self {
        Health {
            up: true,
            fails: 0,
            oks: 0,
            transitions: 0,
        }
    }

    /// Records one probe result.
    pub fn record(&mut self, ok: bool, rise: u32, fall: u32) -> Flip {
        if ok {
            self.oks = self.oks.saturating_add(1);
            self.fails = 0;
            if !self.up && self.oks >= rise {
                self.up = true;
                self.transitions += 1;
                return Flip::Up;
            }
        } else {
            self.fails = self.fails.saturating_add(1);
            self.oks = 0;
            if self.up && self.fails >= fall {
                self.up = false;
                self.transitions += 1;
                return Flip::Down;
            }
        }
        Flip::None
    }

    /// A data connection failed: eject at once (passive detection).
    pub fn eject(&mut self) -> Flip {
        self.oks = 0;
        if self.up {
            self.up = false;
            self.transitions += 1;
            Flip::Down
        } else {
            Flip::None
        }
    }
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

/// The probe connection of one backend.
#[derive(Debug)]
pub struct ProbeConn {
    /// The socket.
    pub stream: TcpStream,
    /// The backend or shard probed.
    pub upstream: crate::backend::Upstream,
    /// The non-blocking connect has completed.
    pub connected: bool,
    /// Bytes of the current probe not yet written.
    pub out: BytesMut,
    /// Replies read and not yet framed.
    pub rbuf: BytesMut,
    /// Framing state of `rbuf`.
    pub scanner: ReplyScanner,
    /// Replies still expected for the probe in progress (0: idle).
    pub expect: u8,
    /// The probe also asks `ROLE` (shards).
    pub asks_role: bool,
    /// The probe ends with `HELLO 3`, to learn whether the backend speaks RESP3.
    pub asks_hello: bool,
    /// The first error reply of the probe in progress.
    pub error: Option<String>,
    /// When the probe in progress must have been answered.
    pub deadline: Option<Instant>,
}

impl Proxy {
    /// Starts a probe of `u` when one is due, and fails the one in progress past its deadline.
    pub(crate) fn check_probe(&mut self, u: Upstream) {
        let now = self.now;
        if let Some(r) = self.up(u).probe {
            if let Some(Entry {
                gen,
                conn: Conn::Probe(p),
            }) = self.conns.get(r.token)
            {
                if *gen == r.gen {
                    if let Some(deadline) = p.deadline {
                        if now >= deadline {
                            self.probe_done(u, false, "timeout");
                            self.close_probe(r.token);
                        }
                        return;
                    }
                }
            }
        }
        if now >= self.up(u).next_probe {
            self.start_probe(u);
        }
    }

    fn start_probe(&mut self, u: Upstream) {
        let interval = self.config.health_interval;
        let jitter = self
            .picker
            .random_below(interval.as_millis() as u64 / 10 + 1);
        let next = self.now + interval + Duration::from_millis(jitter);
        self.up_mut(u).next_probe = next;
        let mut out = BytesMut::new();
        let mut expect = 1;
        if let Some(auth) = self.backend_auth() {
            out.put_slice(&auth);
            expect += 1;
        }
        // Once per backend (again after it comes back), a round asks only `HELLO 3`: can it
        // speak RESP3? Refused, or the connection closed (twemproxy does that), means RESP2
        // only. That round does not count for health; it follows a good PING.
        let be = self.up(u);
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
        let existing = self
            .up(u)
            .probe
            .filter(|r| self.conns.get(r.token).is_some_and(|e| e.gen == r.gen));
        let token = match existing {
            Some(r) => r.token,
            None => {
                let stream = match TcpStream::connect(self.up(u).addr) {
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
                let r = self.insert(Conn::Probe(probe));
                if let Err(e) = self.register(r.token) {
                    self.remove(r.token);
                    self.probe_done(u, false, &format!("register: {e}"));
                    return;
                }
                self.up_mut(u).probe = Some(r);
                r.token
            }
        };
        if let Some(p) = self.probe_mut(token) {
            p.out = out;
            p.expect = expect;
            p.asks_hello = asks_hello;
            p.error = None;
            p.deadline = deadline;
        }
        self.probe_write(token);
    }

    fn probe_mut(&mut self, token: usize) -> Option<&mut ProbeConn> {
        match self.conns.get_mut(token) {
            Some(Entry {
                conn: Conn::Probe(p),
                ..
            }) => Some(p),
            _ => None,
        }
    }

    fn probe_write(&mut self, token: usize) {
        let Some(p) = self.probe_mut(token) else {
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
        let Some(p) = self.probe_mut(token) else {
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
        let Some(Entry {
            conn: Conn::Probe(p),
            ..
        }) = self.conns.get_mut(token)
        else {
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
            let be = self.up_mut(u);
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
        let shard = self.up_mut(u);
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
            let be = self.up_mut(p.upstream);
            if be.probe.is_some_and(|r| r.token == token) {
                be.probe = None;
            }
        }
    }

    fn probe_done(&mut self, u: Upstream, ok: bool, why: &str) {
        let (rise, fall) = (self.config.rise, self.config.fall);
        let be = self.up_mut(u);
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
                self.up_mut(u).resp3 = None;
                self.fail_sessions_of(u);
            }
            Flip::None => {}
        }
    }
}

impl Proxy {
    /// Sessions to an ejected backend would otherwise wait forever on a hung one.
    fn fail_sessions_of(&mut self, u: Upstream) {
        let label = self.up(u).label.clone();
        let sessions: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, e)| matches!(&e.conn, Conn::Backend(bc) if bc.owner.is_some() && bc.upstream == u))
            .map(|(t, _)| t)
            .collect();
        for t in sessions {
            let lost = crate::resp::error(&format!("ERR {} {label} is down", u.kind()));
            self.drop_session_conn(t, Some(lost));
        }
    }
}

/// The role in a `ROLE` reply: `master`, or `slave`/`replica` with its master's address.
pub fn parse_role(frame: &[u8]) -> Option<Role> {
    use redis_protocol::resp2::{decode::decode, types::OwnedFrame};
    let (OwnedFrame::Array(items), _) = decode(frame).ok()?? else {
        return None;
    };
    let text = |f: &OwnedFrame| match f {
        OwnedFrame::BulkString(b) | OwnedFrame::SimpleString(b) => {
            Some(String::from_utf8_lossy(b).into_owned())
        }
        OwnedFrame::Integer(i) => Some(i.to_string()),
        _ => None,
    };
    match text(items.first()?)?.as_str() {
        "master" => Some(Role::Master),
        "slave" | "replica" => {
            let host = text(items.get(1)?)?;
            let port = text(items.get(2)?)?;
            Some(Role::Replica(format!("{host}:{port}")))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_role_replies() {
        assert_eq!(
            parse_role(b"*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n"),
            Some(Role::Master)
        );
        let replica =
            b"*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:7001\r\n$9\r\nconnected\r\n:10\r\n";
        assert_eq!(
            parse_role(replica),
            Some(Role::Replica("127.0.0.1:7001".into()))
        );
        assert_eq!(parse_role(b"-ERR unknown\r\n"), None);
    }

    #[test]
    fn flips_after_fall_failures_and_rise_successes() {
        let mut h = Health::new();
        assert_eq!(h.record(false, 2, 3), Flip::None);
        assert_eq!(h.record(false, 2, 3), Flip::None);
        assert_eq!(h.record(true, 2, 3), Flip::None);
        assert_eq!(h.record(false, 2, 3), Flip::None);
        assert_eq!(h.record(false, 2, 3), Flip::None);
        assert_eq!(h.record(false, 2, 3), Flip::Down);
        assert_eq!(h.record(false, 2, 3), Flip::None);
        assert_eq!(h.record(true, 2, 3), Flip::None);
        assert_eq!(h.record(true, 2, 3), Flip::Up);
        assert_eq!(h.eject(), Flip::Down);
        assert_eq!(h.eject(), Flip::None);
        assert_eq!(h.transitions, 3);
    }
}
