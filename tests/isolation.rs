//! Isolation: whatever one client sends, other clients' requests never fail because of it —
//! behind twemproxy, which closes its connection on any request outside its dialect, and behind
//! Redis, which closes it on Redis's cross-protocol guard words. And the dialect respite keeps
//! for twemproxy matches the real nutcracker, command by command.

mod support;

use respite::command::{CommandTable, Twem};
use respite::command_table::COMMANDS;
use respite::resp::encode_request;
use std::io::{Read, Write};
use std::time::Duration;
use support::*;

#[test]
fn commands_twemproxy_does_not_serve_never_fail_other_clients() {
    let redis = RedisServer::start();
    let twemproxy = Nutcracker::start(&[redis.addr()]);
    let proxy = TestProxy::start(config_over(vec![twemproxy.addr()]));
    wait_until(Duration::from_secs(2), || {
        proxy
            .raw()
            .cmd(&[b"CONFIG", b"GET", b"x"])
            .starts_with(b"-ERR CONFIG")
    });
    others_are_unharmed(&proxy, || {
        let mut offender = proxy.raw();
        for _ in 0..10 {
            for (cmd, expect) in [
                (
                    &[&b"CONFIG"[..], b"GET", b"maxmemory"][..],
                    "-ERR CONFIG is not supported by the twemproxy backends",
                ),
                (
                    &[b"COMMAND", b"DOCS"],
                    "-ERR COMMAND with these arguments is not supported",
                ),
                (
                    &[b"EXPIRE", b"k", b"10", b"NX"],
                    "-ERR EXPIRE with these arguments",
                ),
                (
                    &[b"EVAL", b"return 1", b"0"],
                    "-ERR EVAL with these arguments",
                ),
                (&[b"NOSUCH", b"x"], "-ERR unknown command 'NOSUCH'"),
                (
                    &[b"MULTI"],
                    "-ERR MULTI is not supported by the twemproxy backends",
                ),
                (&[b"BLPOP", b"q", b"1"], "-ERR BLPOP is not supported"),
                (&[b"SUBSCRIBE", b"ch"], "-ERR SUBSCRIBE is not supported"),
                (&[b"TIME"], "-ERR TIME is not supported"),
            ] {
                let reply = String::from_utf8_lossy(&offender.cmd(cmd)).into_owned();
                assert!(reply.starts_with(expect), "{reply}");
            }
        }
        assert_eq!(
            offender.cmd(&[b"GET", b"w0:0:0"]),
            b"$1\r\nv\r\n",
            "still connected"
        );
    });
}

#[test]
fn cross_protocol_words_never_fail_other_clients_of_a_redis() {
    let redis = RedisServer::start();
    let proxy = TestProxy::over(&[&redis]);
    others_are_unharmed(&proxy, || {
        for _ in 0..10 {
            let mut browser = proxy.raw();
            browser.send(b"POST / HTTP/1.1\r\nHost: x\r\n\r\n");
            assert!(browser.is_closed());
            let mut raw = proxy.raw();
            raw.send(&encode_request(&[&b"Host:"[..], b"x"]));
            assert!(raw.is_closed());
        }
    });
}

/// A request of `name` with as many arguments as its twemproxy rule takes (keys share a hash
/// tag, so that any server would do).
fn request_for(name: &str, rule: Twem) -> Option<Vec<u8>> {
    let n = match rule {
        Twem::No => return None,
        Twem::Argz | Twem::NoKey => 0,
        Twem::Arg0 | Twem::Argn | Twem::Argx => 1,
        Twem::Arg1 | Twem::Argkvx => 2,
        Twem::Arg2 => 3,
        Twem::Arg3 => 4,
        Twem::Argeval => {
            return Some(encode_request(&[name.as_bytes(), b"return 1", b"1", b"{t}k"]).to_vec())
        }
    };
    let mut args: Vec<&[u8]> = vec![name.as_bytes()];
    args.extend([&b"{t}k"[..], b"1", b"2", b"3"].iter().take(n));
    Some(encode_request(&args).to_vec())
}

/// True if nutcracker answers `req` on a fresh connection (it closes it on what it refuses).
fn answered(addr: std::net::SocketAddr, req: &[u8]) -> bool {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    s.write_all(req).expect("write");
    let mut buf = [0u8; 4096];
    matches!(s.read(&mut buf), Ok(n) if n > 0)
}

#[test]
fn the_twemproxy_dialect_matches_the_real_nutcracker() {
    let redis = RedisServer::start();
    let twemproxy = Nutcracker::start(&[redis.addr()]);
    let table = CommandTable::new();
    let (mut served, mut refused) = (0, 0);
    for spec in COMMANDS {
        if spec.name == "QUIT" || spec.name == "SHUTDOWN" {
            continue; // they close the connection however they are answered
        }
        let id = table.lookup(spec.name.as_bytes()).expect("known");
        match request_for(spec.name, table.spec(id).twemproxy) {
            Some(req) => {
                assert!(
                    answered(twemproxy.addr(), &req),
                    "{} should be served",
                    spec.name
                );
                served += 1;
            }
            None => {
                let req = encode_request(&[spec.name.as_bytes(), b"{t}k", b"1"]);
                assert!(
                    !answered(twemproxy.addr(), &req),
                    "{} should be refused",
                    spec.name
                );
                refused += 1;
            }
        }
    }
    assert_eq!(served, 135, "every served command but QUIT");
    assert!(refused > 100, "{refused}");
}

#[test]
fn with_the_pool_every_command_twemproxy_refuses_leaves_other_clients_alone() {
    let fleet = Fleet::start();
    let proxy = TestProxy::start(fleet.routed_config());
    wait_for_roles(&proxy);
    let refused: Vec<&str> = COMMANDS
        .iter()
        .filter(|s| s.twemproxy == Twem::No)
        .map(|s| s.name)
        .collect();
    assert!(refused.len() > 90, "{}", refused.len());
    let mut answers = 0;
    others_are_unharmed(&proxy, || {
        for name in &refused {
            // Each on a connection of its own: SUBSCRIBE, MULTI and the like change it.
            let mut offender = proxy.raw();
            offender.send(&encode_request(&[name.as_bytes(), b"k", b"0.01"]));
            if offender.try_reply().is_ok() {
                answers += 1;
            }
        }
    });
    assert_eq!(answers, refused.len(), "every command was answered");
}
