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

use crate::resp::ReplyScanner;
use crate::upstream::{Role, Upstream};
use bytes::BytesMut;
use mio::net::TcpStream;
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

/// The probe connection of one backend.
#[derive(Debug)]
pub struct ProbeConn {
    /// The socket.
    pub stream: TcpStream,
    /// The backend or shard probed.
    pub upstream: Upstream,
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
