//! Commands respite answers itself: the connection handshake (`HELLO`, `AUTH`, `CLIENT`,
//! `SELECT 0`), `PING`, `ECHO`, `QUIT`, `RESET` and `INFO`. Replies follow Redis's text so that
//! client libraries behave as they do against Redis.

use super::Proxy;
use crate::client::Mode;
use crate::command::Local;
use crate::pubsub::Subscriptions;
use crate::request::Request;
use crate::resp::{self, reply};
use crate::stats::REDIS_VERSION;
use bytes::{Bytes, BytesMut};

fn wrong_args(cmd: &str) -> Bytes {
    resp::error(&format!(
        "ERR wrong number of arguments for '{cmd}' command"
    ))
}

/// Compares secrets in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= (x ^ y) as usize;
    }
    diff == 0
}

const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

impl Proxy {
    /// The reply to a local command from the client at `token`.
    pub(super) fn answer_local(&mut self, token: usize, which: Local, req: &Request) -> Bytes {
        let args = req.arg_list();
        match which {
            Local::Ping => match args.len() {
                1 => reply::PONG,
                2 => resp::bulk(args[1]),
                _ => wrong_args("ping"),
            },
            Local::Echo => match args.len() {
                2 => resp::bulk(args[1]),
                _ => wrong_args("echo"),
            },
            Local::Quit => {
                if let Some(c) = self.conns.client_mut(token) {
                    c.close_after_flush = true;
                }
                reply::OK
            }
            Local::Select => match args.len() {
                2 => match resp::parse_i64(args[1]) {
                    Some(0) => reply::OK,
                    Some(_) => resp::error(
                        "ERR SELECT is not supported by respite: only database 0 is served",
                    ),
                    None => resp::error("ERR value is not an integer or out of range"),
                },
                _ => wrong_args("select"),
            },
            Local::Auth => match args.len() {
                2 => self.authenticate(token, b"default", args[1]),
                3 => self.authenticate(token, args[1], args[2]),
                _ => wrong_args("auth"),
            },
            Local::Hello => self.hello(token, &args),
            Local::Client => self.client_command(token, &args),
            Local::Info => {
                let text = self.info(&args[1..]);
                resp::bulk(text.as_bytes())
            }
            Local::Slowlog => self.slowlog(&args),
            Local::Reset => {
                self.close_session_of(token);
                let need_auth = self.config.password.is_some();
                if let Some(c) = self.conns.client_mut(token) {
                    if need_auth {
                        c.authed = false;
                    }
                    c.mode = Mode::Normal;
                    c.txn_head.clear();
                    c.subs = Subscriptions::default();
                    c.resp3 = false;
                }
                reply::RESET
            }
        }
    }

    fn slowlog(&mut self, args: &[&[u8]]) -> Bytes {
        let sub = args
            .get(1)
            .map(|s| s.to_ascii_uppercase())
            .unwrap_or_default();
        match (sub.as_slice(), args.len()) {
            (b"LEN", 2) => resp::integer(self.stats.slowlog.len() as i64),
            (b"RESET", 2) => {
                self.stats.slowlog.clear();
                reply::OK
            }
            (b"GET", 2 | 3) => {
                let count = match args.get(2).map(|a| resp::parse_i64(a)) {
                    None => 10,
                    Some(Some(-1)) => usize::MAX,
                    Some(Some(n)) if n >= 0 => n as usize,
                    Some(_) => {
                        return resp::error("ERR count should be greater than or equal to -1")
                    }
                };
                let entries: Vec<_> = self.stats.slowlog.iter().take(count).collect();
                let mut out = BytesMut::new();
                resp::put_array_header(&mut out, entries.len());
                for e in entries {
                    resp::put_array_header(&mut out, 6);
                    resp::put_integer(&mut out, e.id as i64);
                    resp::put_integer(&mut out, e.unix_time as i64);
                    resp::put_integer(&mut out, e.usec as i64);
                    resp::put_array_header(&mut out, e.args.len());
                    for a in &e.args {
                        resp::put_bulk(&mut out, a);
                    }
                    resp::put_bulk(&mut out, e.peer.as_bytes());
                    resp::put_bulk(&mut out, &e.name);
                }
                out.freeze()
            }
            (b"HELP", 2) => {
                let lines = [
                    "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                    "GET [<count>]",
                    "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
                    "LEN",
                    "    Return the length of the slowlog.",
                    "RESET",
                    "    Reset the slowlog.",
                ];
                let mut out = BytesMut::new();
                resp::put_array_header(&mut out, lines.len());
                for l in lines {
                    out.extend_from_slice(format!("+{l}\r\n").as_bytes());
                }
                out.freeze()
            }
            _ => resp::error(&format!(
                "ERR unknown subcommand or wrong number of arguments for '{}'. Try SLOWLOG HELP.",
                String::from_utf8_lossy(args.get(1).copied().unwrap_or(b""))
            )),
        }
    }

    fn authenticate(&mut self, token: usize, user: &[u8], pass: &[u8]) -> Bytes {
        let Some(expected) = self.config.password.clone() else {
            return resp::error(
                "ERR AUTH <password> called without any password configured for the default user. \
                 Are you sure your configuration is correct?",
            );
        };
        let ok = user == b"default" && constant_time_eq(pass, expected.as_bytes());
        // As in Redis, a failed AUTH leaves an authenticated client authenticated.
        if let Some(c) = self.conns.client_mut(token).filter(|_| ok) {
            c.authed = true;
        }
        if ok {
            reply::OK
        } else {
            resp::error(WRONGPASS)
        }
    }

    fn hello(&mut self, token: usize, args: &[&[u8]]) -> Bytes {
        let mut proto = None;
        if args.len() >= 2 {
            match resp::parse_i64(args[1]) {
                Some(v @ (2 | 3)) => proto = Some(v == 3),
                Some(_) => return resp::error("NOPROTO unsupported protocol version"),
                None => {
                    return resp::error("ERR Protocol version is not an integer or out of range")
                }
            }
        }
        let mut i = 2;
        let mut setname = None;
        let mut auth = None;
        while i < args.len() {
            let more = args.len() - i - 1;
            if args[i].eq_ignore_ascii_case(b"AUTH") && more >= 2 {
                auth = Some((args[i + 1], args[i + 2]));
                i += 3;
            } else if args[i].eq_ignore_ascii_case(b"SETNAME") && more >= 1 {
                setname = Some(args[i + 1]);
                i += 2;
            } else {
                return resp::error(&format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(args[i])
                ));
            }
        }
        if let Some((user, pass)) = auth {
            let r = self.authenticate(token, user, pass);
            if r != reply::OK {
                return r;
            }
        }
        let Some(c) = self.conns.client_mut(token) else {
            return reply::OK;
        };
        if !c.authed {
            return resp::error(
                "NOAUTH HELLO must be called with the client already authenticated, otherwise the \
                 HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and \
                 select the RESP protocol version at the same time",
            );
        }
        if let Some(name) = setname {
            if !valid_name(name) {
                return resp::error(
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                );
            }
            c.name = (!name.is_empty()).then(|| name.to_vec());
        }
        if let Some(resp3) = proto {
            c.resp3 = resp3;
        }
        let (id, version) = (c.id, if c.resp3 { 3 } else { 2 });
        let mut out = BytesMut::new();
        resp::put_array_header(&mut out, 14);
        for (k, v) in [("server", "redis"), ("version", REDIS_VERSION)] {
            resp::put_bulk(&mut out, k.as_bytes());
            resp::put_bulk(&mut out, v.as_bytes());
        }
        resp::put_bulk(&mut out, b"proto");
        resp::put_integer(&mut out, version);
        resp::put_bulk(&mut out, b"id");
        resp::put_integer(&mut out, id as i64);
        for (k, v) in [("mode", "standalone"), ("role", "master")] {
            resp::put_bulk(&mut out, k.as_bytes());
            resp::put_bulk(&mut out, v.as_bytes());
        }
        resp::put_bulk(&mut out, b"modules");
        resp::put_array_header(&mut out, 0);
        out.freeze()
    }

    fn client_command(&mut self, token: usize, args: &[&[u8]]) -> Bytes {
        let Some(sub) = args.get(1) else {
            return wrong_args("client");
        };
        let sub = String::from_utf8_lossy(sub).to_ascii_uppercase();
        if let Some(spec) = crate::command::CommandTable::subcommand("CLIENT", sub.as_bytes()) {
            if !spec.arity_ok(args.len()) {
                return wrong_args(&format!("client|{}", sub.to_ascii_lowercase()));
            }
        }
        match sub.as_str() {
            "SETNAME" => {
                if !valid_name(args[2]) {
                    return resp::error("ERR Client names cannot contain spaces, newlines or special characters.");
                }
                if let Some(c) = self.conns.client_mut(token) {
                    c.name = (!args[2].is_empty()).then(|| args[2].to_vec());
                }
                reply::OK
            }
            "GETNAME" => match self.conns.client_mut(token).and_then(|c| c.name.clone()) {
                Some(name) => resp::bulk(&name),
                None => reply::NULL,
            },
            "ID" => resp::integer(self.conns.client_mut(token).map_or(0, |c| c.id as i64)),
            "SETINFO" => {
                let value = args[3];
                if !valid_name(value) {
                    return resp::error("ERR lib-name and lib-ver cannot contain spaces, newlines or special characters.");
                }
                let Some(c) = self.conns.client_mut(token) else {
                    return reply::OK;
                };
                let v = (!value.is_empty()).then(|| value.to_vec());
                if args[2].eq_ignore_ascii_case(b"LIB-NAME") {
                    c.lib_name = v;
                } else if args[2].eq_ignore_ascii_case(b"LIB-VER") {
                    c.lib_ver = v;
                } else {
                    return resp::error(&format!(
                        "ERR Unrecognized option '{}'",
                        String::from_utf8_lossy(args[2])
                    ));
                }
                reply::OK
            }
            "INFO" => resp::bulk(self.client_line(token).unwrap_or_default().as_bytes()),
            "LIST" => {
                let tokens: Vec<usize> = self.conns.iter().map(|(t, _)| t).collect();
                let text: String = tokens.into_iter().filter_map(|t| self.client_line(t)).collect();
                resp::bulk(text.as_bytes())
            }
            _ => resp::error(&format!(
                "ERR CLIENT {sub} is not supported by respite (it would change a shared backend connection)"
            )),
        }
    }
}

/// Redis accepts printable ASCII without spaces in client names and library info.
fn valid_name(s: &[u8]) -> bool {
    s.iter().all(|&c| (b'!'..=b'~').contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_secrets_exactly() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret1"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
