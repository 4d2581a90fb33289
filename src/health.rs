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
    /// Index of the backend probed.
    pub backend: usize,
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
    /// The first error reply of the probe in progress.
    pub error: Option<String>,
    /// When the probe in progress must have been answered.
    pub deadline: Option<Instant>,
}

#[cfg(test)]
mod tests {
    use super::*;

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
