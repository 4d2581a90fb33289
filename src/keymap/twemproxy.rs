//! A nutcracker (twemproxy) 0.5.0 pool as read from its YAML config, and the server it picks
//! for a key, computed as nutcracker computes it.
//!
//! ```text
//!  nutcracker.yml ─ tokens (conf_validate_tokens) ─ events (conf_parse_core) ─▶ [Pool]
//!  Pool: servers in file order ─ sorted by name (conf_validate_server) ─▶ ring
//!    ketama: 160·n·weight/total points per server, md5("<name>-<i>") → 4 points each, sorted
//!    modula: weight slots per server, in name order
//!  key ─ hash_tag ─▶ part ─ hash (0 if empty) ─▶ ring ─▶ index into `Pool::servers`
//! ```
//!
//! What nutcracker's C source fixes, and this file follows:
//! - `nc_conf.c` `conf_add_server` parses `host:port:weight [name]` (or
//!   `/path/unix_socket:weight [name]`) from the end. With no name, the string ketama hashes is
//!   `host:port` as written, or just `host` when the port is 11211 (libmemcached's habit), or
//!   `/path:` (with the colon) for a unix socket.
//! - `conf_validate_server` sorts a pool's servers by name (shorter first, then bytewise) and
//!   nutcracker keeps that order. It changes nothing for ketama, whose points depend on names
//!   and weights only, but `modula` lays its slots out in that order, not in file order.
//!   [`Pool::server_for`] answers with an index into [`Pool::servers`], which is file order.
//! - `nc_server.c` `server_pool_idx`: a pool of one server always answers 0; with `hash_tag`
//!   `"ab"`, the key's part between its first `a` and the next `b` after it is hashed when that
//!   part is not empty, else the whole key (no close char, or `{}`: the whole key);
//!   `server_pool_hash` hashes an empty key to 0 without calling the hash function.
//! - `nc_ketama.c` `ketama_update`: a server gets `floorf(pct·160/4·n + 1e-10)·4` points in
//!   single-precision float (`pct = weight / total_weight`), from `md5("<name>-<i>")` truncated
//!   to 272 bytes, four points per digest; `ketama_dispatch` takes the first point ≥ the hash,
//!   wrapping to the first. Points with equal values (one chance in ~10⁵ for a pool of three)
//!   keep their insertion order, as glibc's merge-sort `qsort` keeps them.
//! - `nc_modula.c`: the hash modulo the total weight picks a slot; slots are laid out server by
//!   server, `weight` slots each.
//! - `nc_random.c`: `random() % n` per request. No key has a home: `server_for` returns `None`
//!   (except in a pool of one server, where nutcracker answers 0 before dispatching).
//! - `auto_eject_hosts` changes placement only while a host is ejected (the ring is rebuilt
//!   over live servers); that is not modelled: this is the placement with every host live.
//!
//! A multi-key command (`MGET`, `DEL k1 k2`, `MSET`) is split by nutcracker into one fragment
//! per key, each placed as here. Keys of 16 KB and more (`mbuf_data_size`) are refused by
//! nutcracker's parser, so they have no placement there; here they are hashed like any other.

use super::hashkit::{ketama_hash, Hash};
use std::path::Path;
use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, Scanner, TokenType};

/// The port libmemcached leaves out of a server's ketama name (`CONF_DEFAULT_KETAMA_PORT`).
const KETAMA_DEFAULT_PORT: u16 = 11211;
/// Points per server in a pool of equal weights (`KETAMA_POINTS_PER_SERVER`).
const KETAMA_POINTS_PER_SERVER: f32 = 160.0;
/// Points taken from one MD5 digest.
const KETAMA_POINTS_PER_HASH: u32 = 4;
/// `KETAMA_MAX_HOSTLEN - 1`: the longest `"<name>-<i>"` that `snprintf` writes in full.
const KETAMA_MAX_HOST_BYTES: usize = 272;

/// How a pool spreads keys (`DIST_CODEC` in `nc_hashkit.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distribution {
    /// Consistent hashing on a continuum of MD5 points (the default).
    Ketama,
    /// The hash modulo the total weight.
    Modula,
    /// A random server per request.
    Random,
}

impl Distribution {
    /// Every distribution, in `DIST_CODEC` order.
    pub const ALL: [Distribution; 3] = [
        Distribution::Ketama,
        Distribution::Modula,
        Distribution::Random,
    ];

    /// The name a nutcracker config uses for it.
    pub fn name(self) -> &'static str {
        match self {
            Distribution::Ketama => "ketama",
            Distribution::Modula => "modula",
            Distribution::Random => "random",
        }
    }

    /// The distribution a config names, matched exactly as `conf_set_distribution` does.
    pub fn from_name(name: &str) -> Option<Distribution> {
        Distribution::ALL.into_iter().find(|d| d.name() == name)
    }
}

/// Where a server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// `host:port`; the host is kept as written (nutcracker resolves it lazily).
    Tcp {
        /// Host name or address as written.
        host: String,
        /// TCP port.
        port: u16,
    },
    /// A unix socket path (a server line starting with `/`).
    Unix {
        /// The socket's path.
        path: String,
    },
}

/// One `servers:` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// The entry without its name, as written: `host:port:weight` (nutcracker's `pname`).
    pub pname: String,
    /// Where it is.
    pub address: Address,
    /// Its weight (at least 1).
    pub weight: u32,
    /// The name ketama hashes: the one written after the space, else derived from the address.
    pub name: String,
    /// Whether `name` was written in the config.
    pub named: bool,
}

/// One point of the ketama continuum.
#[derive(Debug, Clone, Copy)]
struct Point {
    value: u32,
    server: usize,
}

/// The structure a key is placed on, built once per pool.
#[derive(Debug, Clone)]
enum Ring {
    /// Points sorted by value.
    Ketama(Vec<Point>),
    /// `(end, server)`: slots `[previous end, end)` belong to `server`, in name order.
    Modula {
        ends: Vec<(u64, usize)>,
        total: u64,
    },
    Random,
}

/// A nutcracker pool: what decides where its keys go.
#[derive(Debug, Clone)]
pub struct Pool {
    /// The pool's name (its top-level key in the YAML file).
    pub name: String,
    /// Its `listen:` address as written.
    pub listen: String,
    /// Its `hash:` (default `fnv1a_64`).
    pub hash: Hash,
    /// Its `distribution:` (default `ketama`).
    pub distribution: Distribution,
    /// Its `hash_tag:` open and close bytes, if any.
    pub hash_tag: Option<[u8; 2]>,
    /// Its `auto_eject_hosts:` (default false). Placement is modelled with every host live.
    pub auto_eject_hosts: bool,
    /// Its `redis:` (default false: a memcached pool).
    pub redis: bool,
    /// Its servers, in file order.
    pub servers: Vec<Server>,
    ring: Ring,
}

impl Pool {
    /// Loads `FILE[:POOL]`: the pool named `POOL` in `FILE`, or the file's first pool. A spec
    /// that names an existing file as a whole is a file, so paths with a colon still work.
    pub fn load(spec: &str) -> Result<Pool, String> {
        let (path, pool) = match spec.rsplit_once(':') {
            Some((path, pool)) if !Path::new(spec).exists() => (path, Some(pool)),
            _ => (spec, None),
        };
        Pool::from_file(Path::new(path), pool)
    }

    /// Reads `path` and picks the pool named `pool`, or the first.
    pub fn from_file(path: &Path, pool: Option<&str>) -> Result<Pool, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read nutcracker config {}: {e}", path.display()))?;
        Pool::from_yaml(&text, pool).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses a config's text and picks the pool named `pool`, or the first in the file.
    pub fn from_yaml(text: &str, pool: Option<&str>) -> Result<Pool, String> {
        let mut pools = parse_pools(text)?;
        match pool {
            None => Ok(pools.swap_remove(0)),
            Some(name) => match pools.iter().position(|p| p.name == name) {
                Some(i) => Ok(pools.swap_remove(i)),
                None => {
                    let names: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
                    Err(format!(
                        "no pool named '{name}' (pools: {})",
                        names.join(", ")
                    ))
                }
            },
        }
    }

    /// The index in [`Pool::servers`] of the server nutcracker sends `key` to, or `None` for
    /// a `random` pool of more than one server, where every request goes to any server.
    pub fn server_for(&self, key: &[u8]) -> Option<usize> {
        if self.servers.len() == 1 {
            return Some(0);
        }
        let hash = self.key_hash(key);
        match &self.ring {
            Ring::Ketama(points) => {
                let i = points.partition_point(|p| p.value < hash);
                // `points` is never empty: the heaviest server gets at least 40 points.
                points.get(i).or(points.first()).map(|p| p.server)
            }
            Ring::Modula { ends, total } => {
                let slot = u64::from(hash) % total;
                let i = ends.partition_point(|&(end, _)| end <= slot);
                ends.get(i).map(|&(_, server)| server)
            }
            Ring::Random => None,
        }
    }

    /// The part of `key` that is hashed: with a hash tag `"ab"`, the bytes between the first
    /// `a` and the next `b` after it, when there are any; else the whole key.
    pub fn hashed_part<'k>(&self, key: &'k [u8]) -> &'k [u8] {
        let Some([open, close]) = self.hash_tag else {
            return key;
        };
        let Some(start) = key.iter().position(|&b| b == open) else {
            return key;
        };
        let inner = &key[start + 1..];
        match inner.iter().position(|&b| b == close) {
            Some(len) if len > 0 => &inner[..len],
            _ => key,
        }
    }

    /// The hash nutcracker dispatches `key` on (`server_pool_hash` after the hash tag): 0 for
    /// an empty part or a pool of one server.
    pub fn key_hash(&self, key: &[u8]) -> u32 {
        let part = self.hashed_part(key);
        if self.servers.len() == 1 || part.is_empty() {
            0
        } else {
            self.hash.hash(part)
        }
    }

    /// The number of ketama points of each server (file order); empty for other
    /// distributions.
    pub fn ketama_points(&self) -> Vec<usize> {
        let mut n = vec![0; self.servers.len()];
        if let Ring::Ketama(points) = &self.ring {
            for p in points {
                n[p.server] += 1;
            }
        }
        n
    }
}

/// A pool being read, before defaults and checks.
#[derive(Default)]
struct PoolDraft {
    name: String,
    line: usize,
    listen: Option<String>,
    hash: Option<Hash>,
    hash_tag: Option<[u8; 2]>,
    distribution: Option<Distribution>,
    redis: Option<bool>,
    redis_auth: Option<String>,
    auto_eject_hosts: Option<bool>,
    server_connections: Option<u32>,
    /// The other directives nutcracker knows, seen once each (values checked, not kept).
    others: Vec<String>,
    servers: Option<Vec<Server>>,
}

/// Every pool in a nutcracker config, in file order, checked as nutcracker checks them.
pub fn parse_pools(text: &str) -> Result<Vec<Pool>, String> {
    check_tokens(text)?;
    let mut events = Events {
        parser: Parser::new_from_str(text),
    };
    let mut drafts: Vec<PoolDraft> = Vec::new();
    events.expect_stream_start()?;
    let (ev, at) = events.next()?;
    match ev {
        Event::DocumentStart => {}
        Event::StreamEnd => return Err("holds no pool (the file is empty)".into()),
        _ => return Err(format!("line {}: expected a document", at.line())),
    }
    let (ev, at) = events.next()?;
    if !matches!(ev, Event::MappingStart(..)) {
        return Err(format!(
            "line {}: expected pools (\"name:\" followed by directives)",
            at.line()
        ));
    }
    loop {
        let (ev, at) = events.next()?;
        match ev {
            Event::MappingEnd => break,
            Event::Scalar(name, ..) => {
                if drafts.iter().any(|d| d.name == name) {
                    return Err(format!("line {}: pool '{name}' appears twice", at.line()));
                }
                drafts.push(read_pool(&mut events, name, at.line())?);
            }
            _ => return Err(format!("line {}: expected a pool name", at.line())),
        }
    }
    match events.next()? {
        (Event::DocumentEnd, _) => {}
        (_, at) => return Err(format!("line {}: expected the end of the file", at.line())),
    }
    match events.next()? {
        (Event::StreamEnd, _) => {}
        (_, at) => return Err(format!("line {}: holds more than one document", at.line())),
    }
    if drafts.is_empty() {
        return Err("holds no pool".into());
    }
    let pools = drafts
        .into_iter()
        .map(finish_pool)
        .collect::<Result<Vec<_>, _>>()?;
    for (i, p) in pools.iter().enumerate() {
        if let Some(q) = pools[..i].iter().find(|q| q.listen == p.listen) {
            return Err(format!(
                "pools '{}' and '{}' have the same listen address '{}'",
                q.name, p.name, p.listen
            ));
        }
    }
    Ok(pools)
}

/// Refuses the YAML that `conf_validate_tokens` refuses: directives, document markers, flow
/// collections, anchors, aliases and tags.
fn check_tokens(text: &str) -> Result<(), String> {
    let mut scanner = Scanner::new(text.chars());
    // A few tokens per input byte at most (a key, a value and a block end can all come from
    // one `:`), so this ends; the bound guards against a scanner that would not.
    for _ in 0..=4 * text.len() + 16 {
        let token = match scanner.next_token() {
            Ok(Some(t)) => t,
            Ok(None) => return Ok(()),
            Err(e) => return Err(format!("not valid YAML: {e}")),
        };
        let what = match token.1 {
            TokenType::VersionDirective(..) | TokenType::TagDirective(..) => "a directive (%)",
            TokenType::DocumentStart => "a document start (---)",
            TokenType::DocumentEnd => "a document end (...)",
            TokenType::FlowSequenceStart
            | TokenType::FlowSequenceEnd
            | TokenType::FlowMappingStart
            | TokenType::FlowMappingEnd
            | TokenType::FlowEntry => "a flow collection ([...] or {...})",
            TokenType::Alias(_) => "an alias (*)",
            TokenType::Anchor(_) => "an anchor (&)",
            TokenType::Tag(..) => "a tag (!)",
            _ => continue,
        };
        return Err(format!(
            "line {}: nutcracker does not accept {what} in its config",
            token.0.line()
        ));
    }
    Err("not valid YAML: the scanner did not reach the end".into())
}

/// The parser's events, with errors as text.
struct Events<'a> {
    parser: Parser<std::str::Chars<'a>>,
}

impl Events<'_> {
    fn next(&mut self) -> Result<(Event, Marker), String> {
        self.parser
            .next_token()
            .map_err(|e| format!("not valid YAML: {e}"))
    }

    fn expect_stream_start(&mut self) -> Result<(), String> {
        match self.next()? {
            (Event::StreamStart, _) => Ok(()),
            (_, at) => Err(format!(
                "line {}: expected the start of the file",
                at.line()
            )),
        }
    }
}

/// Reads one pool's mapping of directives (`conf_handler` for each key).
fn read_pool(events: &mut Events<'_>, name: String, line: usize) -> Result<PoolDraft, String> {
    let mut d = PoolDraft {
        name,
        line,
        ..PoolDraft::default()
    };
    match events.next()? {
        (Event::MappingStart(..), _) => {}
        (_, at) => {
            return Err(format!(
                "line {}: pool '{}' must be a mapping of directives",
                at.line(),
                d.name
            ))
        }
    }
    loop {
        let (ev, at) = events.next()?;
        let key = match ev {
            Event::MappingEnd => return Ok(d),
            Event::Scalar(key, ..) => key,
            _ => {
                return Err(format!(
                    "line {}: pool '{}' nests deeper than nutcracker reads",
                    at.line(),
                    d.name
                ))
            }
        };
        let (ev, at) = events.next()?;
        let pool_name = d.name.clone();
        let fail = |e: String| format!("line {}: pool '{pool_name}': {key} {e}", at.line());
        match ev {
            Event::Scalar(value, ..) => set_directive(&mut d, &key, value).map_err(fail)?,
            Event::SequenceStart(..) => {
                if key != "servers" {
                    return Err(fail("takes one value, not a list".into()));
                }
                if d.servers.is_some() {
                    return Err(fail("is a duplicate".into()));
                }
                let mut servers = Vec::new();
                loop {
                    match events.next()? {
                        (Event::SequenceEnd, _) => break,
                        (Event::Scalar(spec, ..), at) => {
                            servers.push(parse_server(&spec).map_err(|e| {
                                format!(
                                    "line {}: pool '{}': server '{spec}' {e}",
                                    at.line(),
                                    d.name
                                )
                            })?)
                        }
                        (_, at) => {
                            return Err(format!(
                                "line {}: pool '{}': each server is one line",
                                at.line(),
                                d.name
                            ))
                        }
                    }
                }
                d.servers = Some(servers);
            }
            _ => return Err(fail("nests deeper than nutcracker reads".into())),
        }
    }
}

/// `nc_atoi` as `conf_set_num` uses it: digits only, accumulated in a C `int` that wraps on
/// overflow (so `4294967297` reads as 1, as in nutcracker), refused when it ends negative.
fn parse_num(value: &str) -> Result<u32, String> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err("is not a number".into());
    }
    let n = value.bytes().fold(0i32, |n, b| {
        n.wrapping_mul(10).wrapping_add(i32::from(b - b'0'))
    });
    u32::try_from(n).map_err(|_| "is not a number (it overflows a C int)".into())
}

/// `conf_set_bool`: exactly `true` or `false`.
fn parse_bool(value: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("is not \"true\" or \"false\"".into()),
    }
}

/// Sets `slot` once, as nutcracker refuses a directive given twice.
fn once<T>(slot: &mut Option<T>, value: T) -> Result<(), String> {
    if slot.is_some() {
        return Err("is a duplicate".into());
    }
    *slot = Some(value);
    Ok(())
}

/// One `key: value` directive of a pool (`conf_commands`).
fn set_directive(d: &mut PoolDraft, key: &str, value: String) -> Result<(), String> {
    match key {
        "listen" => once(&mut d.listen, value),
        "hash" => {
            let hash = Hash::from_name(&value).ok_or_else(|| {
                let names: Vec<&str> = Hash::ALL.iter().map(|h| h.name()).collect();
                format!("'{value}' is not one of {}", names.join(", "))
            })?;
            once(&mut d.hash, hash)
        }
        "distribution" => {
            let dist = Distribution::from_name(&value)
                .ok_or_else(|| format!("'{value}' is not one of ketama, modula, random"))?;
            once(&mut d.distribution, dist)
        }
        "hash_tag" => match *value.as_bytes() {
            [open, close] => once(&mut d.hash_tag, [open, close]),
            _ => Err(format!(
                "'{value}' is not two characters (one byte each), like \"{{}}\""
            )),
        },
        "redis" => once(&mut d.redis, parse_bool(&value)?),
        "auto_eject_hosts" => once(&mut d.auto_eject_hosts, parse_bool(&value)?),
        "redis_auth" => once(&mut d.redis_auth, value),
        "server_connections" => once(&mut d.server_connections, parse_num(&value)?),
        "timeout"
        | "backlog"
        | "client_connections"
        | "redis_db"
        | "server_retry_timeout"
        | "server_failure_limit"
        | "tcpkeepalive"
        | "preconnect" => {
            if matches!(key, "tcpkeepalive" | "preconnect") {
                parse_bool(&value)?;
            } else {
                parse_num(&value)?;
            }
            if d.others.iter().any(|k| k == key) {
                return Err("is a duplicate".into());
            }
            d.others.push(key.to_string());
            Ok(())
        }
        "servers" => Err("must be a list of servers (\"- host:port:weight [name]\")".into()),
        _ => Err("is not a directive nutcracker 0.5 knows".into()),
    }
}

/// `nc_atoi` for a weight: digits only, 1 to `INT_MAX`.
fn parse_weight(s: &str) -> Result<u32, String> {
    match parse_num(s) {
        Ok(0) => Err("has a zero weight".into()),
        Ok(w) => Ok(w),
        Err(_) => Err(format!("has an invalid weight '{s}'")),
    }
}

/// Parses `host:port:weight [name]` or `/path/unix_socket:weight [name]` from the end, as
/// `conf_add_server` does.
pub fn parse_server(spec: &str) -> Result<Server, String> {
    const FORMAT: &str =
        "is not \"host:port:weight [name]\" or \"/path/unix_socket:weight [name]\"";
    if spec.contains('\0') {
        return Err("holds a NUL byte".into());
    }
    let (pname, name) = match spec.rsplit_once(' ') {
        Some((pname, name)) => (pname, Some(name)),
        None => (spec, None),
    };
    let (addr_port, weight) = pname.rsplit_once(':').ok_or(FORMAT)?;
    let weight = parse_weight(weight)?;
    let (address, derived) = if spec.starts_with('/') {
        // nutcracker's format check: a unix socket path holds no ':'.
        if addr_port.contains(':') {
            return Err(FORMAT.into());
        }
        let path = addr_port.to_string();
        // No port: the name is the address and one more byte, the ':' before the weight.
        let derived = format!("{path}:");
        (Address::Unix { path }, derived)
    } else {
        let (host, port_text) = addr_port.rsplit_once(':').ok_or(FORMAT)?;
        let port = parse_num(port_text)
            .ok()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("has an invalid port '{port_text}'"))?;
        let derived = if port == KETAMA_DEFAULT_PORT {
            host.to_string()
        } else {
            addr_port.to_string()
        };
        let address = Address::Tcp {
            host: host.to_string(),
            port,
        };
        (address, derived)
    };
    Ok(Server {
        pname: pname.to_string(),
        address,
        weight,
        named: name.is_some(),
        name: name.map_or(derived, str::to_string),
    })
}

/// Applies nutcracker's defaults and checks (`conf_validate_pool`), and builds the ring.
fn finish_pool(d: PoolDraft) -> Result<Pool, String> {
    let at = |e: &str| format!("pool '{}' (line {}) {e}", d.name, d.line);
    let listen = d
        .listen
        .clone()
        .ok_or_else(|| at("has no \"listen:\" directive"))?;
    let servers = d.servers.clone().unwrap_or_default();
    if servers.is_empty() {
        return Err(at("has no servers"));
    }
    if d.server_connections == Some(0) {
        return Err(at(
            "has \"server_connections: 0\", which nutcracker refuses",
        ));
    }
    let redis = d.redis.unwrap_or(false);
    if !redis && d.redis_auth.is_some() {
        return Err(at("has \"redis_auth:\" without \"redis: true\""));
    }
    let order = name_order(&servers);
    if let Some(w) = order
        .windows(2)
        .find(|w| servers[w[0]].name == servers[w[1]].name)
    {
        return Err(at(&format!(
            "has two servers named '{}'",
            servers[w[0]].name
        )));
    }
    let total: u64 = servers.iter().map(|s| u64::from(s.weight)).sum();
    let total = u32::try_from(total)
        .map_err(|_| at("has weights adding up past 4294967295, which nutcracker cannot sum"))?;
    let distribution = d.distribution.unwrap_or(Distribution::Ketama);
    let ring = match distribution {
        Distribution::Ketama => Ring::Ketama(ketama_points(&servers, &order, total)),
        Distribution::Modula => modula_ring(&servers, &order),
        Distribution::Random => Ring::Random,
    };
    Ok(Pool {
        name: d.name,
        listen,
        hash: d.hash.unwrap_or(Hash::Fnv1a64),
        distribution,
        hash_tag: d.hash_tag,
        auto_eject_hosts: d.auto_eject_hosts.unwrap_or(false),
        redis,
        servers,
        ring,
    })
}

/// Server indexes in nutcracker's order: by name, shorter first, then bytewise
/// (`conf_server_name_cmp`, `string_compare`).
fn name_order(servers: &[Server]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..servers.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (servers[a].name.as_bytes(), servers[b].name.as_bytes());
        a.len().cmp(&b.len()).then_with(|| a.cmp(b))
    });
    order
}

/// The points `ketama_update` gives a server of `weight` among `n` live servers weighing
/// `total`, in the same single-precision arithmetic.
fn ketama_point_count(weight: u32, total: u32, n: usize) -> u32 {
    let pct = weight as f32 / total as f32;
    // `pct * 160 / 4 * (float)n` in float, `+ 0.0000000001` in double, back to float.
    let per_hash = pct * KETAMA_POINTS_PER_SERVER / 4.0 * n as f32;
    let floored = ((f64::from(per_hash) + 0.000_000_000_1) as f32).floor();
    (floored * KETAMA_POINTS_PER_HASH as f32) as u32
}

/// The ketama continuum, built in nutcracker's server order and sorted by value.
fn ketama_points(servers: &[Server], order: &[usize], total: u32) -> Vec<Point> {
    let mut points = Vec::new();
    for &i in order {
        let s = &servers[i];
        let count = ketama_point_count(s.weight, total, servers.len());
        for p in 0..count / KETAMA_POINTS_PER_HASH {
            let mut host = format!("{}-{p}", s.name).into_bytes();
            host.truncate(KETAMA_MAX_HOST_BYTES);
            for x in 0..KETAMA_POINTS_PER_HASH {
                points.push(Point {
                    value: ketama_hash(&host, x as usize),
                    server: i,
                });
            }
        }
    }
    // Stable, as glibc's merge-sort qsort: equal values keep server order.
    points.sort_by_key(|p| p.value);
    points
}

/// Modula's slots, `weight` per server, in nutcracker's server order.
fn modula_ring(servers: &[Server], order: &[usize]) -> Ring {
    let mut end = 0u64;
    let ends = order
        .iter()
        .map(|&i| {
            end += u64::from(servers[i].weight);
            (end, i)
        })
        .collect();
    Ring::Modula { ends, total: end }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(body: &str) -> Pool {
        let text = format!("alpha:\n  listen: 127.0.0.1:22121\n{body}");
        Pool::from_yaml(&text, None).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    fn err(text: &str) -> String {
        match parse_pools(text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e,
        }
    }

    #[test]
    fn defaults_are_nutcrackers() {
        let p = pool("  servers:\n   - 127.0.0.1:6379:1\n");
        assert_eq!(p.hash, Hash::Fnv1a64);
        assert_eq!(p.distribution, Distribution::Ketama);
        assert_eq!(p.hash_tag, None);
        assert!(!p.auto_eject_hosts && !p.redis);
        assert_eq!(p.listen, "127.0.0.1:22121");
    }

    #[test]
    fn server_lines_parse_from_the_end() {
        let s = parse_server("127.0.0.1:6379:2 alpha").unwrap();
        assert_eq!(s.pname, "127.0.0.1:6379:2");
        assert_eq!(
            s.address,
            Address::Tcp {
                host: "127.0.0.1".into(),
                port: 6379
            }
        );
        assert_eq!((s.weight, s.name.as_str(), s.named), (2, "alpha", true));
        // Unnamed: `host:port` as written; port 11211 leaves the port out.
        assert_eq!(
            parse_server("localhost:06379:1").unwrap().name,
            "localhost:06379"
        );
        assert_eq!(parse_server("10.0.0.1:11211:1").unwrap().name, "10.0.0.1");
        // IPv6 hosts keep their colons.
        let s = parse_server("::1:7000:3").unwrap();
        assert_eq!(s.name, "::1:7000");
        assert_eq!(s.weight, 3);
        // A unix socket's derived name keeps the ':' that precedes the weight.
        let s = parse_server("/tmp/redis.sock:5").unwrap();
        assert_eq!(
            s.address,
            Address::Unix {
                path: "/tmp/redis.sock".into()
            }
        );
        assert_eq!((s.name.as_str(), s.weight), ("/tmp/redis.sock:", 5));
        assert_eq!(parse_server("/tmp/redis.sock:1 r1").unwrap().name, "r1");
        // What nutcracker also accepts: an empty host, an empty name after a trailing space,
        // a weight that wraps a C int back to a positive value.
        assert_eq!(parse_server(":6379:1").unwrap().name, ":6379");
        let s = parse_server("127.0.0.1:6379:1 ").unwrap();
        assert_eq!((s.name.as_str(), s.named), ("", true));
        assert_eq!(parse_server("127.0.0.1:6379:4294967297").unwrap().weight, 1);
    }

    #[test]
    fn bad_server_lines_say_what_is_wrong() {
        for (spec, want) in [
            ("127.0.0.1:6379", "is not"),
            ("127.0.0.1:6379:0", "zero weight"),
            ("127.0.0.1:6379:x", "invalid weight"),
            ("127.0.0.1:6379:-1", "invalid weight"),
            ("127.0.0.1:6379:2147483648", "invalid weight"),
            ("127.0.0.1:70000:1", "invalid port"),
            ("127.0.0.1:0:1", "invalid port"),
            ("6379:1", "is not"),
            ("/tmp/a:b.sock:1", "is not"),
            ("127.0.0.1:6379:1 two words", "invalid weight"),
        ] {
            let e = parse_server(spec).expect_err(spec);
            assert!(e.contains(want), "{spec}: {e}");
        }
    }

    #[test]
    fn a_file_with_several_pools_picks_by_name_or_the_first() {
        let text = "beta:\n  listen: 127.0.0.1:1\n  hash: md5\n  servers:\n   - 127.0.0.1:7000:1\n\
                    alpha:\n  listen: 127.0.0.1:2\n  hash: crc32a\n  distribution: modula\n  \
                    hash_tag: \"{}\"\n  servers:\n   - 127.0.0.1:7001:1\n";
        assert_eq!(Pool::from_yaml(text, None).unwrap().name, "beta");
        let a = Pool::from_yaml(text, Some("alpha")).unwrap();
        assert_eq!(
            (a.hash, a.distribution, a.hash_tag),
            (Hash::Crc32a, Distribution::Modula, Some(*b"{}"))
        );
        let e = Pool::from_yaml(text, Some("gamma")).unwrap_err();
        assert_eq!(e, "no pool named 'gamma' (pools: beta, alpha)");
    }

    #[test]
    fn load_reads_file_colon_pool() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nc.yml");
        let text = "one:\n  listen: 127.0.0.1:1\n  servers:\n   - 127.0.0.1:7000:1\n\
                    two:\n  listen: 127.0.0.1:2\n  servers:\n   - 127.0.0.1:7001:1\n";
        std::fs::write(&path, text).unwrap();
        let spec = path.display().to_string();
        assert_eq!(Pool::load(&spec).unwrap().name, "one");
        assert_eq!(Pool::load(&format!("{spec}:two")).unwrap().name, "two");
        let e = Pool::load(&format!("{spec}:three")).unwrap_err();
        assert!(e.contains("no pool named 'three'"), "{e}");
        let e = Pool::load("/nonexistent/nc.yml").unwrap_err();
        assert!(
            e.starts_with("cannot read nutcracker config /nonexistent/nc.yml"),
            "{e}"
        );
    }

    #[test]
    fn configs_nutcracker_refuses_are_refused_with_a_reason() {
        let ok_servers = "  servers:\n   - 127.0.0.1:7000:1\n";
        for (text, want) in [
            (String::new(), "no pool"),
            (
                format!("a:\n  listen: x:1\n  hash: sha1\n{ok_servers}"),
                "not one of one_at_a_time",
            ),
            (
                format!("a:\n  listen: x:1\n  distribution: rendezvous\n{ok_servers}"),
                "not one of ketama",
            ),
            (
                format!("a:\n  listen: x:1\n  hash_tag: \"{{\"\n{ok_servers}"),
                "not two characters",
            ),
            (
                format!("a:\n  listen: x:1\n  hash_tag: \"«»\"\n{ok_servers}"),
                "not two characters",
            ),
            (
                format!("a:\n  listen: x:1\n  hash: md5\n  hash: md5\n{ok_servers}"),
                "duplicate",
            ),
            (
                format!("a:\n  listen: x:1\n  redis: yes\n{ok_servers}"),
                "\"true\" or \"false\"",
            ),
            (
                format!("a:\n  listen: x:1\n  timeout: -5\n{ok_servers}"),
                "not a number",
            ),
            (
                format!("a:\n  listen: x:1\n  hashtag: \"{{}}\"\n{ok_servers}"),
                "not a directive",
            ),
            (format!("a:\n  hash: md5\n{ok_servers}"), "no \"listen:\""),
            ("a:\n  listen: x:1\n  servers:\n".into(), "list of servers"),
            ("a:\n  listen: x:1\n".into(), "no servers"),
            (
                format!("---\na:\n  listen: x:1\n{ok_servers}"),
                "document start",
            ),
            (
                "a:\n  listen: x:1\n  servers: [\"127.0.0.1:1:1\"]\n".into(),
                "flow collection",
            ),
            (format!("a: &p\n  listen: x:1\n{ok_servers}"), "anchor"),
            (
                "a:\n  listen: x:1\n  servers:\n   - 127.0.0.1:7000:1 s\n   - 127.0.0.1:7001:1 s\n"
                    .into(),
                "two servers named 's'",
            ),
            (
                "a:\n  listen: x:1\n  servers:\n   - 127.0.0.1:7000:1\n   - 127.0.0.1:7000:2\n"
                    .into(),
                "two servers named '127.0.0.1:7000'",
            ),
            (
                format!("a:\n  listen: x:1\n{ok_servers}b:\n  listen: x:1\n{ok_servers}"),
                "same listen address",
            ),
            (
                format!("a:\n  listen: x:1\n{ok_servers}a:\n  listen: x:2\n{ok_servers}"),
                "appears twice",
            ),
            (
                format!("a:\n  listen: x:1\n  redis_auth: pw\n{ok_servers}"),
                "without \"redis: true\"",
            ),
            (
                "a:\n  listen: x:1\n  servers:\n   - 127.0.0.1:7000:0\n".into(),
                "zero weight",
            ),
            (
                "a:\n  listen: x:1\n  servers:\n   - a: b\n".into(),
                "one line",
            ),
            ("a:\n  listen:\n    deeper: x\n".into(), "nests deeper"),
            ("a:\n  listen: 'x\n".into(), "not valid YAML"),
        ] {
            let e = err(&text);
            assert!(e.contains(want), "want '{want}' for:\n{text}\ngot: {e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn quoted_scalars_and_comments_read_as_libyaml_reads_them() {
        let p = Pool::from_yaml(
            "# fleet\nalpha: # the pool\n  listen: '127.0.0.1:22121'\n  hash: \"murmur\"\n  \
             hash_tag: '$$'\n  servers:\n   - \"127.0.0.1:7000:1 first\" # one\n   - \
             '127.0.0.1:7001:2'\n",
            None,
        )
        .unwrap();
        assert_eq!(p.hash, Hash::Murmur);
        assert_eq!(p.hash_tag, Some(*b"$$"));
        assert_eq!(p.servers[0].name, "first");
        assert_eq!(p.servers[1].weight, 2);
    }

    fn tagged() -> Pool {
        pool("  hash_tag: \"{}\"\n  servers:\n   - 127.0.0.1:7000:1\n   - 127.0.0.1:7001:1\n")
    }

    #[test]
    fn the_hash_tag_rule_is_nutcrackers() {
        let p = tagged();
        assert_eq!(p.hashed_part(b"user:{42}:name"), b"42");
        // The first open char, then the first close char after it.
        assert_eq!(p.hashed_part(b"a{b{c}d}e"), b"b{c");
        assert_eq!(p.hashed_part(b"a}b{c}"), b"c");
        // An empty tag, a missing close char or no open char: the whole key.
        assert_eq!(p.hashed_part(b"a{}b{c}"), b"a{}b{c}");
        assert_eq!(p.hashed_part(b"a{bc"), b"a{bc");
        assert_eq!(p.hashed_part(b"abc}"), b"abc}");
        assert_eq!(p.hashed_part(b"{"), b"{");
        assert_eq!(p.hashed_part(b"{x}"), b"x");
        // Same open and close char: the part between the first two.
        let d = pool("  hash_tag: \"$$\"\n  servers:\n   - 127.0.0.1:7000:1\n");
        assert_eq!(d.hashed_part(b"a$b$c$"), b"b");
        assert_eq!(d.hashed_part(b"a$$b$"), b"a$$b$");
    }

    #[test]
    fn tagged_keys_share_a_server_and_empty_keys_hash_to_zero() {
        let p = tagged();
        for i in 0..200 {
            let a = p.server_for(format!("{{tag{i}}}:a").as_bytes());
            let b = p.server_for(format!("x{{tag{i}}}:b").as_bytes());
            assert_eq!(a, b);
            assert_eq!(a, p.server_for(format!("tag{i}").as_bytes()));
        }
        assert_eq!(p.key_hash(b""), 0);
        assert_ne!(Hash::Fnv1a64.hash(b""), 0, "0 comes from server_pool_hash");
    }

    #[test]
    fn one_server_always_answers_zero_even_for_random() {
        let p = pool("  distribution: random\n  servers:\n   - 127.0.0.1:7000:1\n");
        assert_eq!(p.server_for(b"anything"), Some(0));
        let p = pool(
            "  distribution: random\n  servers:\n   - 127.0.0.1:7000:1\n   - 127.0.0.1:7001:1\n",
        );
        assert_eq!(p.server_for(b"anything"), None);
    }

    #[test]
    fn ketama_point_counts_follow_the_float_formula() {
        // Equal weights: 160 each.
        assert_eq!(ketama_point_count(1, 3, 3), 160);
        // 1:2:3 of 3 servers: floor(pct*40*3)*4, pct in float.
        assert_eq!(
            [1, 2, 3].map(|w| ketama_point_count(w, 6, 3)),
            [80, 160, 240]
        );
        // 1:1:1:1:1:1:1 (pct 1/7 in float): floor(40.000004)*4.
        assert_eq!(ketama_point_count(1, 7, 7), 160);
        // 1:29:30, where exact arithmetic would give the second server 232 points.
        assert_eq!(
            [1, 29, 30].map(|w| ketama_point_count(w, 60, 3)),
            [8, 228, 240]
        );
        // A weight too small for one digest gets no point at all.
        assert_eq!(ketama_point_count(1, 1000, 2), 0);
        let p = pool(
            "  servers:\n   - 127.0.0.1:7000:1\n   - 127.0.0.1:7001:2\n   - 127.0.0.1:7002:3\n",
        );
        assert_eq!(p.ketama_points(), vec![80, 160, 240]);
    }

    #[test]
    fn modula_lays_slots_out_in_name_order() {
        // File order c, a, bb; nutcracker's order a, c, bb (shorter names first).
        let p = pool(
            "  distribution: modula\n  hash: crc32a\n  servers:\n   - 127.0.0.1:7000:1 c\n   \
             - 127.0.0.1:7001:2 a\n   - 127.0.0.1:7002:3 bb\n",
        );
        // Slots 0,1 → a (index 1); 2 → c (index 0); 3,4,5 → bb (index 2).
        let want = [1, 1, 0, 2, 2, 2];
        for i in 0..500 {
            let key = format!("k{i}");
            let slot = (crc32a(key.as_bytes()) % 6) as usize;
            assert_eq!(p.server_for(key.as_bytes()), Some(want[slot]), "{key}");
        }
    }

    use super::super::hashkit::crc32a;

    /// Counts per server (file order) and `acc = acc * 3 + index` over keys `key:0`..`key:9999`.
    fn spread(p: &Pool) -> (Vec<u32>, u64) {
        let mut counts = vec![0; p.servers.len()];
        let mut acc = 0u64;
        for i in 0..10_000 {
            let s = p.server_for(format!("key:{i}").as_bytes()).unwrap();
            counts[s] += 1;
            acc = acc.wrapping_mul(3).wrapping_add(s as u64);
        }
        (counts, acc)
    }

    /// The expected values come from a C program that runs `ketama_update`'s loop and
    /// `ketama_dispatch` verbatim over nutcracker's own `md5_signature` and `hash_fnv1a_64`.
    #[test]
    fn ketama_places_keys_as_the_c_code_does() {
        let p = pool(
            "  servers:\n   - 127.0.0.1:7000:1 redis-a\n   - 127.0.0.1:7001:2 redis-b\n   \
             - 127.0.0.1:7002:3 redis-c\n",
        );
        assert_eq!(p.ketama_points(), vec![80, 160, 240]);
        assert_eq!(spread(&p), (vec![2200, 3190, 4610], 0x4cab3bf0cf582574));
        let p = pool(
            "  servers:\n   - 127.0.0.1:7000:1\n   - 127.0.0.1:7001:1\n   - 127.0.0.1:7002:1\n",
        );
        assert_eq!(spread(&p), (vec![3890, 3020, 3090], 0xd002b4eca2ed2740));
    }

    #[test]
    fn ketama_truncates_long_names_to_272_bytes_as_snprintf_does() {
        // Past 272 bytes every "<name>-<i>" is the same string: 4 distinct points per server.
        let (a, b) = ("a".repeat(300), "b".repeat(299));
        let p = pool(&format!(
            "  servers:\n   - 127.0.0.1:7000:1 {b}\n   - 127.0.0.1:7001:1 {a}\n   \
             - 127.0.0.1:7002:1 short\n"
        ));
        let mut values: Vec<u32> = match &p.ring {
            Ring::Ketama(points) => points
                .iter()
                .filter(|pt| pt.server == 1)
                .map(|pt| pt.value)
                .collect(),
            _ => unreachable!(),
        };
        values.dedup();
        assert_eq!(values.len(), 4);
        // The same two servers alone, as in the C run.
        let p = pool(&format!(
            "  servers:\n   - 127.0.0.1:7000:1 {b}\n   - 127.0.0.1:7001:1 {a}\n"
        ));
        let (counts, acc) = spread(&p);
        assert_eq!((counts, acc), (vec![4100, 5900], 0x46f03232ccc62af8));
    }
}
