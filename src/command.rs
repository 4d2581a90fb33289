//! The command table: command name → `Route`, found without allocating.
//!
//! The facts about each command (arity, flags, key positions) are generated from the Redis command
//! specifications into `command_table.rs`; this file holds respite's policy on top of them. The
//! route of every command is computed once, when the table is built, so routing a request costs
//! one probe of an open-addressing hash: the name is packed into two words and compared with the
//! upper-case entry under a mask that ignores the case bit of its letters, so it is never folded.

use crate::command_table::{COMMANDS, SUBCOMMANDS};
use crate::health::Tier;
use crate::request::Request;

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
    /// Where its keys are (`keys.rs`).
    pub keys: &'static [crate::keys::KeySpec],
    /// The RESP3 shape of its reply, from the reply schema (`resp3.rs`).
    pub resp3: crate::resp3::Shape,
    /// How twemproxy 0.5 parses it, if it serves it at all.
    pub twemproxy: Twem,
    /// How Codis 3.2 takes it (`scripts/dialects/codis-3.2.2.txt`).
    pub codis: Codis,
}

/// How Codis 3.2 takes a command. Codis refuses what its table denies with `-ERR ... not
/// allowed`, and places anything else by one argument (`keymap::codis`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codis {
    /// Refused by Codis, or blocking (it would block a connection Codis shares).
    No,
    /// Served, and placed where its keys are (keyless, one key where Codis looks, or split).
    Yes,
    /// Served, but placed right only if its other keys share the slot of the one Codis hashes.
    Check,
}

/// The argument rule twemproxy 0.5 parses a command with (the `redis_arg*` helper of
/// nutcracker's `nc_redis.c`; `scripts/dialects/twemproxy-0.5.0.txt`). A request outside its
/// rule — or a command it does not know — makes twemproxy close the connection, failing
/// everything else in flight on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Twem {
    /// Not served.
    No,
    /// No arguments (`COMMAND`, `PING`, `QUIT`).
    Argz,
    /// Any arguments, no key (`LOLWUT`).
    NoKey,
    /// A key and exactly 0, 1, 2 or 3 more arguments.
    Arg0,
    Arg1,
    Arg2,
    Arg3,
    /// A key and any more arguments (only the first key is hashed).
    Argn,
    /// One or more keys (split per server: DEL, MGET, TOUCH, UNLINK).
    Argx,
    /// Key/value pairs (MSET).
    Argkvx,
    /// `script numkeys key [key ...] [arg ...]` with `numkeys ≥ 1` (EVAL, EVALSHA).
    Argeval,
}

impl Twem {
    /// True if twemproxy accepts the command with `argc` arguments (its name included); for
    /// `Argeval`, also `numkeys`, the request's third argument.
    pub fn accepts(self, argc: usize, numkeys: Option<&[u8]>) -> bool {
        match self {
            Twem::No => false,
            Twem::Argz => argc == 1,
            Twem::NoKey => argc >= 1,
            Twem::Arg0 => argc == 2,
            Twem::Arg1 => argc == 3,
            Twem::Arg2 => argc == 4,
            Twem::Arg3 => argc == 5,
            Twem::Argn | Twem::Argx => argc >= 2,
            Twem::Argkvx => argc >= 3 && argc % 2 == 1,
            Twem::Argeval => {
                let keys = numkeys.and_then(crate::resp::parse_i64).unwrap_or(0);
                argc >= 4 && keys >= 1 && keys as usize <= argc - 3
            }
        }
    }
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

/// Where a request may travel to the backends, given what they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fit {
    /// On a shared connection, like any request.
    Shared,
    /// On a connection of its own: the backends' tier is not known yet and this request may
    /// make a twemproxy close the connection it travels on.
    Alone,
    /// Not at all: the backends would close the connection on it. The error to answer.
    Refuse(String),
}

/// How `req` fits backends of tier `tier` (`None`: not known yet). Redis serves everything
/// and Codis refuses what it does not serve with an error; twemproxy closes the connection on
/// any request outside its dialect (`Spec::twemproxy`), failing every other request on it.
pub fn fit(tier: Option<Tier>, req: &Request) -> Fit {
    match tier {
        Some(Tier::Redis) => return Fit::Shared,
        Some(Tier::Codis) => return codis_fit(req),
        // No backends: everything goes to the master of its slot (an empty String does not
        // allocate).
        Some(Tier::Cluster) => return Fit::Refuse(String::new()),
        _ => {}
    }
    let spec = req.spec();
    if spec.is_some_and(|s| s.twemproxy.accepts(req.argc(), req.arg(2))) {
        return Fit::Shared;
    }
    if tier.is_none() {
        return Fit::Alone;
    }
    Fit::Refuse(match spec {
        Some(s) if s.twemproxy != Twem::No => format!(
            "ERR {} with these arguments is not supported by the twemproxy backends",
            s.name
        ),
        Some(s) => format!("ERR {} is not supported by the twemproxy backends", s.name),
        None => format!(
            "ERR unknown command '{}': the twemproxy backends serve only the commands they know",
            String::from_utf8_lossy(req.arg(0).unwrap_or_default())
        ),
    })
}

/// `fit` behind Codis: refused (by Codis, or because it would block a shared connection or run
/// on the wrong group), or shared.
fn codis_fit(req: &Request) -> Fit {
    let Some(spec) = req.spec() else {
        // Codis forwards what it does not know, and Redis refuses it.
        return Fit::Shared;
    };
    let placed = || {
        let (args, keys) = (req.arg_list(), req.keys());
        crate::keymap::codis::placed_by_codis(spec.name, &args, &keys)
    };
    match spec.codis {
        Codis::Yes => Fit::Shared,
        Codis::Check if !req.has_word(b"BLOCK") && placed() => Fit::Shared,
        Codis::Check => Fit::Refuse(format!(
            "ERR {} with these arguments would not be placed by its keys by the Codis backends",
            spec.name
        )),
        Codis::No => Fit::Refuse(format!(
            "ERR {} is not supported by the Codis backends",
            spec.name
        )),
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

/// Commands that fan out to every shard master (`fanout/`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FanoutCmd {
    Scan,
    Keys,
    Dbsize,
    Randomkey,
    /// FLUSHDB and FLUSHALL.
    Flush,
    /// SCRIPT LOAD / FLUSH / EXISTS / KILL (other SCRIPT subcommands are forwarded).
    Script,
    Lastsave,
    /// FUNCTION LOAD / DELETE / FLUSH / RESTORE / KILL (other FUNCTION subcommands are
    /// forwarded).
    Function,
    /// `CONFIG GET` on one backend, its secrets dropped from the answer.
    ConfigGet,
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
    Fanout(FanoutCmd),
    /// Transactions, blocking commands and pub/sub (`session.rs`).
    Session(Session),
    /// `XREAD`/`XREADGROUP`: a session command only with `BLOCK`.
    ForwardUnlessBlock,
    /// Never forwarded: it would break a shared backend connection, or change one server of
    /// the fleet behind the others' backs.
    Reject(&'static str),
    /// `CONFIG`, `ACL`: what runs depends on the subcommand (`admin_policy`).
    Admin,
    /// Refused: it would change one server's role, databases or persistence behind the fleet's
    /// back (`REPLICAOF`, `SWAPDB`, `DEBUG`, `SAVE`...).
    AdminRefused,
}

/// What respite does with an administrative request (`Route::Admin`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admin {
    /// Forward it like any command.
    Allow,
    /// Refuse it with this error (after `ERR `).
    Refuse(&'static str),
    /// `CONFIG GET`: forward it, and drop the secrets from the answer.
    RedactConfig,
    /// `CLUSTER SLOTS|SHARDS|NODES|INFO|MYID|KEYSLOT`: in front of a Redis Cluster, answered by
    /// respite as a cluster of one node (itself); else forwarded.
    ClusterView,
    /// A `CLUSTER` change (`SETSLOT`, `FAILOVER`, `FORGET`...): refused in front of a Redis
    /// Cluster (it would change the cluster behind respite); else forwarded.
    ClusterChange,
}

/// The policy for a `CONFIG` or `ACL` request: a change to one server's configuration or
/// users, or a read of its secrets, is refused; a plain read is forwarded.
pub fn admin_policy(container: &str, sub: &[u8]) -> Admin {
    let is = |names: &[&str]| names.iter().any(|n| sub.eq_ignore_ascii_case(n.as_bytes()));
    match container {
        "CONFIG" if is(&["GET"]) => Admin::RedactConfig,
        "CLUSTER"
            if is(&[
                "SLOTS",
                "SHARDS",
                "NODES",
                "INFO",
                "MYID",
                "KEYSLOT",
                "COUNTKEYSINSLOT",
                "GETKEYSINSLOT",
            ]) =>
        {
            Admin::ClusterView
        }
        "CLUSTER"
            if is(&[
                "ADDSLOTS",
                "ADDSLOTSRANGE",
                "DELSLOTS",
                "DELSLOTSRANGE",
                "FAILOVER",
                "FORGET",
                "MEET",
                "REPLICATE",
                "RESET",
                "SETSLOT",
                "SAVECONFIG",
                "BUMPEPOCH",
                "FLUSHSLOTS",
                "SET-CONFIG-EPOCH",
            ]) =>
        {
            Admin::ClusterChange
        }
        "CONFIG" if is(&["SET", "REWRITE", "RESETSTAT"]) => Admin::Refuse(
            "CONFIG SET, REWRITE and RESETSTAT are refused by respite: they would change one \
             server of the fleet behind it (run them on each server)",
        ),
        "ACL"
            if is(&[
                "SETUSER", "DELUSER", "LOAD", "SAVE", "LIST", "GETUSER", "USERS", "LOG",
            ]) =>
        {
            Admin::Refuse(
                "ACL changes and user listings are refused by respite: they concern one server \
                 of the fleet behind it (run them on each server)",
            )
        }
        _ => Admin::Allow,
    }
}

/// The refusal of a command that changes one server's role, databases or persistence (after
/// `ERR <NAME> `).
pub const ADMIN_REFUSED: &str =
    "is refused by respite: it would change one server of the fleet behind it (run it on the server itself)";

/// Index of a command in `COMMANDS`.
pub type CommandId = u16;

/// Name → route, built once.
#[derive(Debug)]
pub struct CommandTable {
    routes: Vec<Route>,
    /// Open-addressing hash of the names of at most 15 bytes (all but a few long ones).
    slots: Box<[Slot; SLOTS]>,
}

/// One entry of the name hash.
#[derive(Clone, Copy, Debug)]
struct Slot {
    /// The packed upper-case name (`pack`); zero in an empty slot.
    key: [u64; 2],
    /// The bits a packed name must share with `key`: all but the case bit (0x20) of its letters.
    /// All ones in an empty slot, which no name then matches.
    care: [u64; 2],
    id: CommandId,
}

const EMPTY: Slot = Slot {
    key: [0; 2],
    care: [u64::MAX; 2],
    id: 0,
};

const SLOT_BITS: u32 = 10;
const SLOTS: usize = 1 << SLOT_BITS;

/// Commands given their home slot in the table: the bulk of a typical workload.
const HOT_COMMANDS: &[&str] = &[
    "GET", "SET", "DEL", "EXISTS", "EXPIRE", "TTL", "INCR", "MGET", "MSET", "HGET", "HSET",
    "LPUSH", "RPUSH", "LPOP", "RPOP", "SADD", "ZADD", "PING",
];

/// A name of 1..=15 bytes and its length packed into two words, case kept: the bytes
/// little-endian in bytes 0..15, the length in byte 15.
#[inline(always)]
fn pack(name: &[u8]) -> Option<[u64; 2]> {
    let n = name.len();
    let (lo, hi) = match *name {
        [a] => (u64::from(a), 0),
        [a, b] => (u64::from(u16::from_le_bytes([a, b])), 0),
        [a, b, c] => (
            u64::from(u16::from_le_bytes([a, b])) | u64::from(c) << 16,
            0,
        ),
        // Two overlapping loads cover the name; where they overlap they hold the same bytes,
        // so OR-ing them (or shifting the second past the overlap) is exact.
        _ => {
            if let (Some(a), Some(b)) = (name.first_chunk::<8>(), name.last_chunk::<8>()) {
                if n > 15 {
                    return None;
                }
                // `b` is bytes n-8..n; bytes 8..n are its top n-8 bytes (none when n is 8).
                let hi = (u64::from_le_bytes(*b) >> 8) >> (8 * (15 - n));
                (u64::from_le_bytes(*a), hi)
            } else if let (Some(a), Some(b)) = (name.first_chunk::<4>(), name.last_chunk::<4>()) {
                let b = u64::from(u32::from_le_bytes(*b)) << (8 * (n - 4));
                (u64::from(u32::from_le_bytes(*a)) | b, 0)
            } else {
                return None;
            }
        }
    };
    Some([lo, hi | (n as u64) << 56])
}

/// Case bits (0x20) of the letters of a packed upper-case name.
fn letter_case_bits(key: [u64; 2]) -> [u64; 2] {
    key.map(|w| {
        let bytes = w
            .to_le_bytes()
            .map(|b| if b.is_ascii_uppercase() { 0x20 } else { 0 });
        u64::from_le_bytes(bytes)
    })
}

/// The home slot of a packed name, the same in any case: the case bit of every byte is left out.
fn slot_of(k: [u64; 2]) -> usize {
    const CASELESS: u64 = !0x2020_2020_2020_2020;
    let h = (k[0] & CASELESS) ^ (k[1] & CASELESS).rotate_left(29);
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
        let mut slots = Box::new([EMPTY; SLOTS]);
        // The hot commands go in first, so that each sits in its home slot.
        let hot = |spec: &Spec| HOT_COMMANDS.contains(&spec.name);
        let (first, rest): (Vec<_>, Vec<_>) =
            COMMANDS.iter().enumerate().partition(|(_, s)| hot(s));
        for (id, spec) in first.into_iter().chain(rest) {
            if let Some(key) = pack(spec.name.as_bytes()) {
                let mut i = slot_of(key);
                while slots[i].key != EMPTY.key {
                    i = (i + 1) % SLOTS;
                }
                let case = letter_case_bits(key);
                slots[i] = Slot {
                    key,
                    care: [!case[0], !case[1]],
                    id: id as CommandId,
                };
            }
        }
        debug_assert!(
            slots.iter().any(|s| s.key == EMPTY.key),
            "a probe must reach an empty slot"
        );
        CommandTable {
            routes: COMMANDS.iter().map(route_of).collect(),
            slots,
        }
    }

    /// The id of `name` (any case), or `None` for a command the specs do not know.
    pub fn lookup(&self, name: &[u8]) -> Option<CommandId> {
        let Some(k) = pack(name) else {
            return lookup_long(name);
        };
        let mut i = slot_of(k);
        loop {
            let slot = &self.slots[i % SLOTS];
            // Equal but for the case of letters: what comparing upper-cased names would say.
            if ((k[0] ^ slot.key[0]) & slot.care[0]) | ((k[1] ^ slot.key[1]) & slot.care[1]) == 0 {
                return Some(slot.id);
            }
            // Every name's length is in byte 15, so only an empty slot has a zero high word.
            if slot.key[1] == 0 {
                return None;
            }
            i += 1;
        }
    }

    /// The route of a known command.
    pub fn route(&self, id: CommandId) -> Route {
        self.routes[id as usize]
    }

    /// The spec of a known command.
    pub fn spec(&self, id: CommandId) -> &'static Spec {
        &COMMANDS[id as usize]
    }

    /// The spec that places the keys of `args` (a command and its arguments): the
    /// subcommand's for a container command (`OBJECT ENCODING key`), else the command's.
    pub fn spec_of(args: &[&[u8]]) -> Option<&'static Spec> {
        let spec = &COMMANDS[usize::from(lookup_long(args.first()?)?)];
        let sub = args.get(1).and_then(|sub| Self::subcommand(spec.name, sub));
        Some(sub.unwrap_or(spec))
    }

    /// The spec of `container sub` (any case), if the specs know it.
    pub fn subcommand(container: &str, sub: &[u8]) -> Option<&'static Spec> {
        let mut upper = [0u8; 32];
        let upper = upper.get_mut(..sub.len())?;
        for (u, c) in upper.iter_mut().zip(sub) {
            *u = c.to_ascii_uppercase();
        }
        let sub = std::str::from_utf8(upper).ok()?;
        SUBCOMMANDS
            .binary_search_by(|(c, s)| (*c, s.name).cmp(&(container, sub)))
            .ok()
            .map(|i| &SUBCOMMANDS[i].1)
    }
}

/// `lookup` for names that do not fit a packed key (empty, or longer than 15 bytes).
#[cold]
#[inline(never)]
fn lookup_long(name: &[u8]) -> Option<CommandId> {
    let mut upper = [0u8; 64];
    let upper = upper.get_mut(..name.len())?;
    for (u, c) in upper.iter_mut().zip(name) {
        *u = c.to_ascii_uppercase();
    }
    COMMANDS
        .binary_search_by(|s| s.name.as_bytes().cmp(upper))
        .ok()
        .map(|i| i as CommandId)
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
        "FUNCTION" => Route::Fanout(FanoutCmd::Function),
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
        "REPLICAOF" | "SLAVEOF" | "FAILOVER" | "SWAPDB" | "MOVE" | "DEBUG" | "MODULE" | "SAVE"
        | "BGSAVE" | "BGREWRITEAOF" => Route::AdminRefused,
        "CONFIG" | "ACL" | "CLUSTER" => Route::Admin,
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
    #[test]
    fn containers_have_no_key_specs_of_their_own() {
        // `Request::keys` looks for a subcommand only where the command has no key specs.
        for (container, sub) in super::SUBCOMMANDS {
            let id = super::CommandTable::new().lookup(container.as_bytes());
            let spec = &super::COMMANDS[usize::from(id.expect("a known container"))];
            assert!(spec.keys.is_empty(), "{container} (with {})", sub.name);
        }
        let sub = super::CommandTable::subcommand("OBJECT", b"encoding");
        assert_eq!(sub.map(|s| s.name), Some("ENCODING"));
        assert!(super::CommandTable::subcommand("OBJECT", &[b'x'; 40]).is_none());
    }

    use super::*;

    #[test]
    fn hot_commands_sit_in_their_home_slot() {
        let t = CommandTable::new();
        for name in HOT_COMMANDS {
            let k = pack(name.as_bytes()).unwrap();
            let slot = &t.slots[slot_of(k)];
            assert_eq!(COMMANDS[slot.id as usize].name, *name);
            assert_eq!(
                t.lookup(name.to_ascii_lowercase().as_bytes()),
                Some(slot.id)
            );
        }
    }

    #[test]
    fn folds_the_case_of_letters_only() {
        let t = CommandTable::new();
        let reference = |name: &[u8]| {
            let upper = name.to_ascii_uppercase();
            COMMANDS
                .binary_search_by(|s| s.name.as_bytes().cmp(&upper[..]))
                .ok()
                .map(|i| i as CommandId)
        };
        // Every byte value at every position of every name, and one byte more or less.
        for spec in COMMANDS.iter().filter(|s| s.name.len() <= 16) {
            let mut name = spec.name.as_bytes().to_vec();
            for i in 0..name.len() {
                let keep = name[i];
                for b in 0..=255 {
                    name[i] = b;
                    assert_eq!(t.lookup(&name), reference(&name), "{name:?}");
                }
                name[i] = keep;
            }
            name.push(0);
            assert_eq!(t.lookup(&name), None);
            name.truncate(name.len() - 2);
            assert_eq!(t.lookup(&name), reference(&name), "{name:?}");
        }
        assert!(t.lookup(b"restore-asking").is_some());
        assert_eq!(t.lookup(b"restore\rasking"), None);
    }

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

    #[test]
    fn requests_fit_the_tier_of_the_backends() {
        let t = CommandTable::new();
        let req =
            |args: &[&[u8]]| Request::new(crate::resp::encode_request(args), t.lookup(args[0]), 0);
        let twem = Some(Tier::Twemproxy);
        assert_eq!(fit(twem, &req(&[b"GET", b"k"])), Fit::Shared);
        assert_eq!(
            fit(twem, &req(&[b"MSET", b"a", b"1", b"b", b"2"])),
            Fit::Shared
        );
        assert_eq!(fit(twem, &req(&[b"EVAL", b"s", b"1", b"k"])), Fit::Shared);
        let refused = |args: &[&[u8]]| matches!(fit(twem, &req(args)), Fit::Refuse(_));
        assert!(
            refused(&[b"EVAL", b"s", b"0"]),
            "twemproxy needs a key to hash"
        );
        assert!(refused(&[b"EXPIRE", b"k", b"1", b"NX"]));
        assert!(refused(&[b"COMMAND", b"DOCS"]));
        assert!(refused(&[b"CONFIG", b"GET", b"x"]));
        assert!(refused(&[b"NOSUCH"]));
        assert_eq!(fit(None, &req(&[b"COMMAND", b"DOCS"])), Fit::Alone);
        assert_eq!(fit(None, &req(&[b"GET", b"k"])), Fit::Shared);
        assert_eq!(fit(Some(Tier::Redis), &req(&[b"NOSUCH"])), Fit::Shared);
        let Fit::Refuse(why) = fit(twem, &req(&[b"MULTI"])) else {
            panic!("refused");
        };
        assert_eq!(why, "ERR MULTI is not supported by the twemproxy backends");
    }
}
