//! Reading nutcracker's YAML config as nutcracker reads it (`nc_conf.c`): the tokens it
//! refuses, its directives and their checks, each server's `host:port:weight [name]`.

use super::*;
use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, Scanner, TokenType};

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
