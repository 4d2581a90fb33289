//! The command table: command name → `Route`, found without allocating.
//!
//! The facts about each command (arity, flags, key positions) are generated from the Redis command
//! specifications into `command_table.rs`; this file holds respite's policy on top of them. The
//! route of every command is computed once, when the table is built, so routing a request costs
//! one case-folded binary search over static names.

use crate::command_table::{COMMANDS, SUBCOMMANDS};
use crate::fanout::FanoutCmd;

/// Command flags, as bits (from the specs' `command_flags`).
pub mod flag {
    /// Never modifies data.
    pub const READONLY: u16 = 1 << 0;
    /// May modify data.
    pub const WRITE: u16 = 1 << 1;
    /// May block the connection.
    pub const BLOCKING: u16 = 1 << 2;
    /// Pub/sub related.
    pub const PUBSUB: u16 = 1 << 3;
    /// Refused inside MULTI.
    pub const NO_MULTI: u16 = 1 << 4;
    /// Administrative.
    pub const ADMIN: u16 = 1 << 5;
    /// Refused inside scripts.
    pub const NOSCRIPT: u16 = 1 << 6;
    /// O(1) or O(log N).
    pub const FAST: u16 = 1 << 7;
    /// Allowed while loading.
    pub const LOADING: u16 = 1 << 8;
    /// Allowed on a stale replica.
    pub const STALE: u16 = 1 << 9;
    /// May grow memory.
    pub const DENYOOM: u16 = 1 << 10;
    /// Allowed before authentication.
    pub const NO_AUTH: u16 = 1 << 11;
    /// May replicate.
    pub const MAY_REPLICATE: u16 = 1 << 12;
}

/// What the specs say about one command or subcommand.
#[derive(Debug)]
pub struct Spec {
    /// Upper-case name (the subcommand alone for subcommands).
    pub name: &'static str,
    /// Redis arity: exact argument count, or `-n` for "at least n" (the name counts).
    pub arity: i16,
    /// `flag::*` bits.
    pub flags: u16,
    /// Position of the first key (0 when the command takes none).
    pub first_key: i8,
    /// Position of the last key; negative counts from the end.
    pub last_key: i8,
    /// Step between keys.
    pub step: u8,
    /// The RESP3 shape of its reply, from the reply schema (`resp3.rs`).
    pub resp3: crate::resp3::Shape,
}

impl Spec {
    /// True if `argc` (including the name) satisfies the arity.
    pub fn arity_ok(&self, argc: usize) -> bool {
        let a = self.arity as isize;
        if a >= 0 {
            argc as isize == a
        } else {
            argc as isize >= -a
        }
    }
}

/// Commands respite answers itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Local {
    Ping,
    Echo,
    Quit,
    Select,
    Client,
    Hello,
    Auth,
    Info,
    Reset,
    Slowlog,
}

/// Commands that need a connection of their own, or the pub/sub target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Session {
    Multi,
    Exec,
    Discard,
    Watch,
    Unwatch,
    /// BLPOP, BRPOP, BLMOVE, WAIT... (and XREAD/XREADGROUP with BLOCK).
    Blocking,
    /// SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE.
    Subscribe,
    /// UNSUBSCRIBE, PUNSUBSCRIBE, SUNSUBSCRIBE.
    Unsubscribe,
    /// PUBLISH, SPUBLISH, PUBSUB: to the pub/sub target.
    Publish,
    Monitor,
}

/// Where a request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// To one backend, bytes unchanged.
    Forward,
    /// Answered by respite.
    Local(Local),
    /// Sent to every shard master (or forwarded when there are no shards).
    Fanout(crate::fanout::FanoutCmd),
    /// Transactions, blocking commands and pub/sub (`session.rs`).
    Session(Session),
    /// `XREAD`/`XREADGROUP`: a session command only with `BLOCK`.
    ForwardUnlessBlock,
    /// Never forwarded: it would break a shared backend connection.
    Reject(&'static str),
}

/// Index of a command in `COMMANDS`.
pub type CommandId = u16;

/// Name → route, built once.
#[derive(Debug)]
pub struct CommandTable {
    routes: Vec<Route>,
    /// Open-addressing hash of names of at most 15 bytes (all but a few long ones): (key, id),
    /// key 0 marks an empty slot.
    slots: Vec<(u128, CommandId)>,
}

const SLOT_BITS: u32 = 10;

/// The case-folded name and its length packed into one integer (names of 1..=15 bytes).
fn pack(name: &[u8]) -> Option<u128> {
    if name.is_empty() || name.len() > 15 {
        return None;
    }
    let mut k = (name.len() as u128) << 120;
    for (i, &b) in name.iter().enumerate() {
        k |= u128::from(b.to_ascii_uppercase()) << (8 * i);
    }
    Some(k)
}

fn slot_of(k: u128) -> usize {
    let h = (k as u64) ^ ((k >> 64) as u64).rotate_left(29);
    (h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SLOT_BITS)) as usize
}

impl Default for CommandTable {
    fn default() -> Self {
        Self::new()
    }
}

impl CommandTable {
    /// Builds the routes of every command in the generated table.
    pub fn new() -> Self {
        let mut slots = vec![(0u128, 0 as CommandId); 1 << SLOT_BITS];
        for (id, spec) in COMMANDS.iter().enumerate() {
            if let Some(k) = pack(spec.name.as_bytes()) {
                let mut i = slot_of(k);
                while slots[i].0 != 0 {
                    i = (i + 1) & ((1 << SLOT_BITS) - 1);
                }
                slots[i] = (k, id as CommandId);
            }
        }
        CommandTable {
            routes: COMMANDS.iter().map(route_of).collect(),
            slots,
        }
    }

    /// The id of `name` (any case), or `None` for a command the specs do not know.
    pub fn lookup(&self, name: &[u8]) -> Option<CommandId> {
        if let Some(k) = pack(name) {
            let mut i = slot_of(k);
            loop {
                let (key, id) = self.slots[i];
                if key == k {
                    return Some(id);
                }
                if key == 0 {
                    return None;
                }
                i = (i + 1) & ((1 << SLOT_BITS) - 1);
            }
        }
        let mut upper = [0u8; 32];
        let upper = upper.get_mut(..name.len())?;
        for (u, c) in upper.iter_mut().zip(name) {
            *u = c.to_ascii_uppercase();
        }
        COMMANDS
            .binary_search_by(|s| s.name.as_bytes().cmp(upper))
            .ok()
            .map(|i| i as CommandId)
    }

    /// The route of a known command.
    pub fn route(&self, id: CommandId) -> Route {
        self.routes[id as usize]
    }

    /// The spec of a known command.
    pub fn spec(&self, id: CommandId) -> &'static Spec {
        &COMMANDS[id as usize]
    }

    /// The spec of `container sub` (any case), if the specs know it.
    pub fn subcommand(container: &str, sub: &[u8]) -> Option<&'static Spec> {
        let sub = std::str::from_utf8(sub).ok()?.to_ascii_uppercase();
        SUBCOMMANDS
            .binary_search_by(|(c, s)| (*c, s.name).cmp(&(container, sub.as_str())))
            .ok()
            .map(|i| &SUBCOMMANDS[i].1)
    }
}

fn route_of(spec: &Spec) -> Route {
    match spec.name {
        "PING" => Route::Local(Local::Ping),
        "ECHO" => Route::Local(Local::Echo),
        "QUIT" => Route::Local(Local::Quit),
        "SELECT" => Route::Local(Local::Select),
        "CLIENT" => Route::Local(Local::Client),
        "HELLO" => Route::Local(Local::Hello),
        "AUTH" => Route::Local(Local::Auth),
        "INFO" => Route::Local(Local::Info),
        "RESET" => Route::Local(Local::Reset),
        "SLOWLOG" => Route::Local(Local::Slowlog),
        "XREAD" | "XREADGROUP" => Route::ForwardUnlessBlock,
        "SCAN" => Route::Fanout(FanoutCmd::Scan),
        "KEYS" => Route::Fanout(FanoutCmd::Keys),
        "DBSIZE" => Route::Fanout(FanoutCmd::Dbsize),
        "RANDOMKEY" => Route::Fanout(FanoutCmd::Randomkey),
        "FLUSHDB" | "FLUSHALL" => Route::Fanout(FanoutCmd::Flush),
        "SCRIPT" => Route::Fanout(FanoutCmd::Script),
        "LASTSAVE" => Route::Fanout(FanoutCmd::Lastsave),
        "MULTI" => Route::Session(Session::Multi),
        "EXEC" => Route::Session(Session::Exec),
        "DISCARD" => Route::Session(Session::Discard),
        "WATCH" => Route::Session(Session::Watch),
        "UNWATCH" => Route::Session(Session::Unwatch),
        "MONITOR" => Route::Session(Session::Monitor),
        "SUBSCRIBE" | "PSUBSCRIBE" | "SSUBSCRIBE" => Route::Session(Session::Subscribe),
        "UNSUBSCRIBE" | "PUNSUBSCRIBE" | "SUNSUBSCRIBE" => Route::Session(Session::Unsubscribe),
        "SYNC" | "PSYNC" | "REPLCONF" => Route::Reject("replication commands are not proxied"),
        "SHUTDOWN" => Route::Reject("SHUTDOWN is not forwarded by respite"),
        "ASKING" | "READONLY" | "READWRITE" => {
            Route::Reject("cluster connection modes are not supported by respite")
        }
        _ if spec.flags & flag::BLOCKING != 0 => Route::Session(Session::Blocking),
        "PUBLISH" | "SPUBLISH" | "PUBSUB" => Route::Session(Session::Publish),
        _ => Route::Forward,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_any_case_without_allocating() {
        let t = CommandTable::new();
        let get = t.lookup(b"gEt").unwrap();
        assert_eq!(t.spec(get).name, "GET");
        assert_eq!(t.route(get), Route::Forward);
        assert_eq!(t.lookup(b"NOSUCHCOMMAND"), None);
        assert_eq!(t.lookup(&[b'A'; 100]), None);
        assert_eq!(t.lookup(b"get\0"), None);
        for (id, spec) in COMMANDS.iter().enumerate() {
            assert_eq!(
                t.lookup(spec.name.to_ascii_lowercase().as_bytes()),
                Some(id as CommandId)
            );
        }
        assert!(COMMANDS.windows(2).all(|w| w[0].name < w[1].name));
    }

    #[test]
    fn routes_follow_the_spec_flags() {
        let t = CommandTable::new();
        let route = |n: &str| t.route(t.lookup(n.as_bytes()).unwrap());
        assert_eq!(route("blpop"), Route::Session(Session::Blocking));
        assert_eq!(route("wait"), Route::Session(Session::Blocking));
        assert_eq!(route("subscribe"), Route::Session(Session::Subscribe));
        assert_eq!(route("publish"), Route::Session(Session::Publish));
        assert_eq!(route("xread"), Route::ForwardUnlessBlock);
        assert_eq!(route("ping"), Route::Local(Local::Ping));
        assert!(matches!(route("psync"), Route::Reject(_)));
    }

    #[test]
    fn finds_subcommands() {
        let s = CommandTable::subcommand("CLIENT", b"setname").unwrap();
        assert_eq!((s.name, s.arity), ("SETNAME", 3));
        assert!(CommandTable::subcommand("CLIENT", b"nope").is_none());
    }
}
