//! Routing by key: what the backends refuse (twemproxy closes its connection on anything outside
//! its dialect, `command::fit`) runs on a shard master instead — the one that holds its keys,
//! placed by the backends' own rule (`keymap/`), or for a keyless command any healthy master.
//!
//! ```text
//!  refused request ─▶ keys (key specs) ─▶ KeyMap::home each ─▶ one shard? ─▶ its master now
//!        keyless ─▶ any_master                  two shards ─▶ -CROSSSLOT, nothing runs
//! ```
//!
//! A key's requests must not overtake each other on their two paths (through a backend, or
//! straight to its master): a client's request that changes path waits until its earlier
//! requests are answered (`Path`, checked in `ingress`).

use super::Proxy;
use crate::command::{fit, CommandId, Fit};
use crate::health::Tier;
use crate::keymap::Home;
use crate::request::Request;
use crate::resp;
use crate::resp::{Frame, FrameError};
use crate::upstream::Upstream;
use bytes::Bytes;

/// The way a client's request travels: through the backends, or straight to a shard master.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Path {
    #[default]
    Backends,
    Shards,
}

impl Proxy {
    /// True if the request in `frame` would take the other path than the client's requests
    /// in flight: it must wait for them. Only behind twemproxy with shards are there two.
    pub(super) fn changes_path(
        &self,
        token: usize,
        frame: &Result<Option<Frame>, FrameError>,
        id: Option<CommandId>,
    ) -> bool {
        if !self.ups.have_shards() || self.ups.tier != Some(Tier::Twemproxy) {
            return false;
        }
        let (Some(c), Ok(Some(frame)), Some(id)) = (self.conns.client(token), frame, id) else {
            return false;
        };
        if c.pending.waiting() == 0 {
            return false;
        }
        let bytes = match frame {
            Frame::Inline { args, .. } => resp::encode_request(args),
            frame => Bytes::copy_from_slice(&c.rbuf[..frame.consumed()]),
        };
        self.path_of(&Request::new(bytes, Some(id), 0)) != c.path
    }

    /// The path `req` takes.
    pub(super) fn path_of(&self, req: &Request) -> Path {
        match fit(self.ups.tier, req) {
            Fit::Refuse(_) if self.ups.have_shards() => Path::Shards,
            _ => Path::Backends,
        }
    }

    /// Sends a request the backends refuse (with `refusal`) to the shard master that can run
    /// it, or answers why none can.
    pub(super) fn forward_refused(&mut self, token: usize, req: Request, refusal: &str) {
        match self.shard_for(&req, refusal) {
            Ok(shard) => {
                if let Some(c) = self.conns.client_mut(token) {
                    c.path = Path::Shards;
                }
                let resp3 = self.conns.client(token).is_some_and(|c| c.resp3);
                let u = Upstream::shard(shard);
                let slot = self.ups.get(u).slot_for(token, resp3);
                self.forward_to(token, req, u, slot);
            }
            Err(answer) => self.reply_now(token, &req, answer),
        }
    }

    /// The shard master for a request the backends refuse: the one serving its keys, or any
    /// master for a keyless one; else the error to answer.
    pub(super) fn shard_for(&self, req: &Request, refusal: &str) -> Result<usize, Bytes> {
        let keys = req.keys();
        if !self.ups.have_shards() {
            let hint = if keys.is_empty() {
                "--shards"
            } else {
                "--shards and --twemproxy-config"
            };
            return Err(resp::error(&format!(
                "{refusal}; give {hint} to run it on the shards"
            )));
        }
        let home = match &self.ups.keymap {
            _ if keys.is_empty() => None,
            None => {
                return Err(resp::error(&format!(
                    "{refusal}; give --twemproxy-config to route it to the shards"
                )))
            }
            Some(map) => {
                let mut home = None;
                for key in keys {
                    let shard = match map.home(key) {
                        Home::Shard(s) => s,
                        Home::Any => return Err(resp::error(NO_HOME)),
                        Home::Missing(server) => {
                            return Err(resp::error(&format!(
                                "ERR the key {} lives on twemproxy server {server}, which is not \
                                 among the shards",
                                String::from_utf8_lossy(key)
                            )))
                        }
                    };
                    if home.is_some_and(|h| h != shard) {
                        return Err(resp::error(CROSS_SHARD));
                    }
                    home = Some(shard);
                }
                home
            }
        };
        let master = match home {
            Some(shard) => self.ups.master_for(shard),
            None => self
                .ups
                .any_master()
                .ok_or_else(|| "no shard master is available".to_string()),
        };
        master.map_err(|why| resp::error(&format!("ERR {why}")))
    }
}

/// The answer to a request whose keys live on different shard masters.
pub(super) const CROSS_SHARD: &str =
    "CROSSSLOT Keys in request don't hash to the same shard master (respite sends what the \
     backends refuse to the master that holds all its keys; use {hash tags})";

/// The answer to a keyed request when the backends place keys at random.
const NO_HOME: &str = "ERR the twemproxy pool's distribution is random: keys have no home \
                       shard to run this command on";
