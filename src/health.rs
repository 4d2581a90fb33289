//! Health: the rise/fall counters of a backend, and the conversation of its probe connection.
//!
//! ```text
//!   up ──(fall consecutive failures, or a data connection failing)──▶ down
//!   down ──(rise consecutive probe successes)──▶ up
//!   a round: [AUTH] PING [ROLE]  ─▶ +PONG [role] : success │ error, timeout, EOF : failure
//!            [AUTH] HELLO 3      ─▶ map: speaks RESP3 │ error or EOF: RESP2 only (not a failure)
//! ```
//!
//! A probe runs on a connection of its own, never shared with clients. `+PONG` is a success; an
//! error reply (`-LOADING`, `-MASTERDOWN`, `-BUSY`, `-NOAUTH`...), a missed deadline, a refused
//! connection or EOF is a failure. Only the probe re-admits a backend. `ProbeRound` frames the
//! answers and says what they told (`ProbeReport`); the loop applies it (`proxy/probe.rs`).

use crate::resp::ReplyScanner;
use crate::tls::Stream;
use crate::upstream::{Role, Upstream};
use bytes::{BufMut, BytesMut};
use std::time::Instant;

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

impl Health {
    /// A backend that must pass `rise` probes before it is picked (one added by a reload).
    pub fn down() -> Self {
        Health {
            up: false,
            ..Health::new()
        }
    }
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

/// What one probe round asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// `PING`: is it healthy?
    Ping,
    /// `PING` and `ROLE`: is it healthy, and a master or a replica? (shards)
    PingRole,
    /// `PING` and `SLOTSMAPPING`: is it healthy, and where is each slot? (codis-proxies, with
    /// `--codis`)
    PingSlots,
    /// `PING`, `ROLE` and `CLUSTER SLOTS`: is it healthy, what is it, and where is each slot?
    /// (Redis Cluster nodes, with `--cluster`)
    PingRoleCluster,
    /// `SLOTSMAPPING 0` alone, once after a good PING: what is it? Redis refuses the command
    /// (a plain Redis), Codis's proxy answers it, twemproxy closes the connection. Not a health
    /// check.
    Tier,
    /// `HELLO 3` alone, once a server is known to be a Redis: can it speak RESP3? Refused, or
    /// the connection closed, means RESP2 only. Never sent to Codis, whose proxy passes it to
    /// its own shared connections and breaks them. Not a health check.
    Hello,
}

/// What answers on a backend's address: the tier respite is in front of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// A Redis server (or anything that answers unknown commands with an error): it serves
    /// every command.
    Redis,
    /// A proxy that closes the connection on commands it does not serve (twemproxy).
    Twemproxy,
    /// A Codis proxy: refuses what it does not serve with an error.
    Codis,
    /// The nodes of a Redis Cluster (`--cluster`): each serves the slots it owns.
    Cluster,
}

/// What one reply of a health round is an answer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    Ping,
    Role,
    CodisSlots,
    ClusterSlots,
}

impl Ask {
    /// The replies of a health round, in order (empty for discovery rounds).
    fn asked(self) -> &'static [Asked] {
        match self {
            Ask::Ping => &[Asked::Ping],
            Ask::PingRole => &[Asked::Ping, Asked::Role],
            Ask::PingSlots => &[Asked::Ping, Asked::CodisSlots],
            Ask::PingRoleCluster => &[Asked::Ping, Asked::Role, Asked::ClusterSlots],
            Ask::Tier | Ask::Hello => &[],
        }
    }
}

/// One probe round's request (after respite's `auth`, if any) and the replies it expects.
pub fn probe_request(auth: Option<&[u8]>, ask: Ask) -> (BytesMut, u8) {
    let mut out = BytesMut::new();
    let mut expect = 1;
    if let Some(auth) = auth {
        out.put_slice(auth);
        expect += 1;
    }
    match ask {
        Ask::Hello => out.put_slice(b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n"),
        Ask::Tier => out.put_slice(b"*2\r\n$12\r\nSLOTSMAPPING\r\n$1\r\n0\r\n"),
        Ask::Ping => out.put_slice(b"*1\r\n$4\r\nPING\r\n"),
        Ask::PingRole => {
            out.put_slice(b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nROLE\r\n");
            expect += 1;
        }
        Ask::PingSlots => {
            out.put_slice(b"*1\r\n$4\r\nPING\r\n*1\r\n$12\r\nSLOTSMAPPING\r\n");
            expect += 1;
        }
        Ask::PingRoleCluster => {
            out.put_slice(b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nROLE\r\n");
            out.put_slice(b"*2\r\n$7\r\nCLUSTER\r\n$5\r\nSLOTS\r\n");
            expect += 2;
        }
    }
    (out, expect)
}

/// What the replies read so far told.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ProbeReport {
    /// The round is over: healthy, or not and why.
    pub result: Option<Result<(), String>>,
    /// The role a shard reported.
    pub role: Option<Role>,
    /// Whether the backend speaks RESP3 (a `HELLO` round).
    pub resp3: Option<bool>,
    /// What it is (a tier round).
    pub tier: Option<Tier>,
    /// The group master of every slot (a codis-proxy's `SLOTSMAPPING`).
    pub slots: Option<Vec<String>>,
    /// The slot ranges and their nodes (a Redis Cluster node's `CLUSTER SLOTS`).
    pub cluster: Option<Vec<crate::keymap::cluster::SlotRange>>,
    /// The connection closed with replies still owed: the round failed.
    pub cut_short: bool,
}

/// The conversation of a probe: what the round in progress asked and what came back, without
/// the socket.
#[derive(Debug)]
pub struct ProbeRound {
    /// Replies read and not yet framed.
    pub rbuf: BytesMut,
    scanner: ReplyScanner,
    /// Replies still expected (0: idle).
    expect: u8,
    ask: Ask,
    /// The first error reply of the round.
    error: Option<String>,
    /// The server answered `-BUSY` (running a script): alive, its role unchanged.
    busy: bool,
    /// When the round must have been answered.
    pub deadline: Option<Instant>,
}

impl ProbeRound {
    /// An idle conversation.
    pub fn new() -> Self {
        ProbeRound {
            rbuf: BytesMut::new(),
            scanner: ReplyScanner::new(),
            expect: 0,
            ask: Ask::Ping,
            error: None,
            busy: false,
            deadline: None,
        }
    }

    /// A new round that asked `ask` and expects `expect` replies by `deadline`.
    pub fn begin(&mut self, ask: Ask, expect: u8, deadline: Instant) {
        self.ask = ask;
        self.expect = expect;
        self.error = None;
        self.busy = false;
        self.deadline = Some(deadline);
    }

    /// Frames what has been read (`eof`: the peer closed after it) and says what it told.
    pub fn answers(&mut self, eof: bool) -> ProbeReport {
        let mut report = ProbeReport::default();
        loop {
            let len = match self.scanner.scan(&self.rbuf) {
                Ok(Some(len)) => len,
                Ok(None) => break,
                Err(e) => {
                    report.result = Some(Err(format!("bad reply: {e}")));
                    break;
                }
            };
            let frame = self.rbuf.split_to(len);
            if self.expect == 0 {
                report.result = Some(Err("unexpected reply".into()));
                break;
            }
            self.expect -= 1;
            self.answer(&frame, &mut report);
        }
        report.cut_short = eof && self.expect > 0;
        if self.ask == Ask::Hello && eof && report.resp3.is_none() {
            // Closed on HELLO: a RESP2-only proxy. Not a health failure.
            report.resp3 = Some(false);
            report.cut_short = false;
        }
        if self.ask == Ask::Tier && eof && report.tier.is_none() {
            // Closed on a command it does not know: twemproxy. Not a health failure.
            report.tier = Some(Tier::Twemproxy);
            report.cut_short = false;
        }
        report
    }

    /// One reply of the round; `self.expect` replies are still to come after it.
    fn answer(&mut self, frame: &[u8], report: &mut ProbeReport) {
        let left = self.expect;
        if self.ask == Ask::Hello {
            if left == 0 {
                report.resp3 = Some(matches!(frame.first(), Some(b'%' | b'*')));
                self.deadline = None;
            }
            return;
        }
        if self.ask == Ask::Tier {
            if left == 0 {
                let codis = frame.first() == Some(&b'*');
                report.tier = Some(if codis { Tier::Codis } else { Tier::Redis });
                self.deadline = None;
            }
            return;
        }
        let asked = self.ask.asked();
        let asks_role = asked.contains(&Asked::Role);
        // `None`: the reply to respite's AUTH, before the round's own.
        let this = asked
            .len()
            .checked_sub(usize::from(left) + 1)
            .map(|i| asked[i]);
        if frame.starts_with(b"-BUSY ") {
            // A script or function is running: the server is alive (SCRIPT KILL reaches it).
            self.busy = true;
        } else if frame.first() == Some(&b'-') {
            let text = String::from_utf8_lossy(&frame[1..frame.len() - 2]).into_owned();
            self.error.get_or_insert(text);
        } else {
            match this {
                Some(Asked::Role) => report.role = parse_role(frame),
                Some(Asked::CodisSlots) => {
                    report.slots = crate::keymap::codis::parse_slots_mapping(frame);
                    if report.slots.is_none() {
                        self.error = Some("unreadable SLOTSMAPPING reply".into());
                    }
                }
                Some(Asked::ClusterSlots) => {
                    report.cluster = crate::keymap::cluster::parse_cluster_slots(frame);
                    if report.cluster.is_none() {
                        self.error = Some("unreadable CLUSTER SLOTS reply".into());
                    }
                }
                Some(Asked::Ping) if frame != b"+PONG\r\n" => {
                    let text = String::from_utf8_lossy(frame);
                    self.error = Some(format!("unexpected PING reply {text:?}"));
                }
                Some(Asked::Ping) | None => {}
            }
        }
        if left == 0 {
            self.deadline = None;
            let busy = std::mem::take(&mut self.busy);
            report.result = Some(match self.error.take() {
                Some(err) => Err(err),
                None if asks_role && report.role.is_none() && !busy => {
                    Err("unreadable ROLE reply".into())
                }
                None => Ok(()),
            });
        }
    }
}

impl Default for ProbeRound {
    fn default() -> Self {
        Self::new()
    }
}

/// The probe connection of one backend, shard or the pub/sub target.
#[derive(Debug)]
pub struct ProbeConn {
    /// The socket.
    pub stream: Stream,
    /// What it probes.
    pub upstream: Upstream,
    /// The non-blocking connect has completed.
    pub connected: bool,
    /// Bytes of the current round not yet written.
    pub out: BytesMut,
    /// The round in progress.
    pub round: ProbeRound,
}

impl ProbeConn {
    /// A probe connection that has started connecting.
    pub fn new(stream: Stream, upstream: Upstream) -> Self {
        ProbeConn {
            stream,
            upstream,
            connected: false,
            out: BytesMut::new(),
            round: ProbeRound::new(),
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

    fn round(ask: Ask, auth: bool, replies: &[u8], eof: bool) -> ProbeReport {
        let (_, expect) = probe_request(auth.then_some(&b"AUTH"[..]), ask);
        let mut r = ProbeRound::new();
        r.begin(ask, expect, Instant::now());
        r.rbuf.extend_from_slice(replies);
        r.answers(eof)
    }

    #[test]
    fn a_round_succeeds_on_pong_and_fails_on_an_error_or_a_cut() {
        assert_eq!(
            round(Ask::Ping, false, b"+PONG\r\n", false).result,
            Some(Ok(()))
        );
        let loading = round(Ask::Ping, true, b"+OK\r\n-LOADING busy\r\n", false);
        assert_eq!(loading.result, Some(Err("LOADING busy".into())));
        let odd = round(Ask::Ping, false, b"$4\r\nPONG\r\n", false)
            .result
            .unwrap();
        assert!(odd.unwrap_err().starts_with("unexpected PING reply"));
        let cut = round(Ask::Ping, true, b"+OK\r\n", true);
        assert_eq!((cut.result, cut.cut_short), (None, true));
        let extra = round(Ask::Ping, false, b"+PONG\r\n+PONG\r\n", false);
        assert_eq!(extra.result, Some(Err("unexpected reply".into())));
    }

    #[test]
    fn a_shard_round_reads_the_role_and_a_hello_round_reads_resp3() {
        let role = b"+PONG\r\n*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n";
        let r = round(Ask::PingRole, false, role, false);
        assert_eq!((r.result, r.role), (Some(Ok(())), Some(Role::Master)));
        let r = round(Ask::PingRole, false, b"+PONG\r\n+OK\r\n", false);
        assert_eq!(r.result, Some(Err("unreadable ROLE reply".into())));
        let hello = round(Ask::Hello, false, b"%1\r\n+proto\r\n:3\r\n", false);
        assert_eq!(
            (hello.resp3, hello.result),
            (Some(true), None),
            "not a health check"
        );
        assert_eq!(
            round(Ask::Hello, false, b"-ERR unknown\r\n", false).resp3,
            Some(false)
        );
        let closed = round(Ask::Hello, false, b"", true);
        assert_eq!((closed.resp3, closed.cut_short), (Some(false), false));
    }

    #[test]
    fn a_server_busy_with_a_script_is_alive() {
        let busy = b"-BUSY Redis is busy running a script.\r\n";
        assert_eq!(round(Ask::Ping, false, busy, false).result, Some(Ok(())));
        let both = [&busy[..], &busy[..]].concat();
        let r = round(Ask::PingRole, false, &both, false);
        assert_eq!((r.result, r.role), (Some(Ok(())), None), "its role is kept");
    }

    #[test]
    fn a_tier_round_tells_redis_codis_and_twemproxy_apart() {
        let redis = round(
            Ask::Tier,
            true,
            b"+OK\r\n-ERR unknown command 'SLOTSMAPPING'\r\n",
            false,
        );
        assert_eq!(
            (redis.tier, redis.result),
            (Some(Tier::Redis), None),
            "not a health check"
        );
        let codis = round(
            Ask::Tier,
            false,
            b"*1\r\n*4\r\n:0\r\n$14\r\n127.0.0.1:6379\r\n$0\r\n\r\n*0\r\n",
            false,
        );
        assert_eq!(codis.tier, Some(Tier::Codis));
        let twemproxy = round(Ask::Tier, false, b"", true);
        assert_eq!(
            (twemproxy.tier, twemproxy.cut_short),
            (Some(Tier::Twemproxy), false)
        );
    }
}
