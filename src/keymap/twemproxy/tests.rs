//! Tests of the pool reader and of nutcracker's placement.
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
            "a:\n  listen: x:1\n  servers:\n   - 127.0.0.1:7000:1\n   - 127.0.0.1:7000:2\n".into(),
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
    let p =
        pool("  distribution: random\n  servers:\n   - 127.0.0.1:7000:1\n   - 127.0.0.1:7001:1\n");
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
    let p =
        pool("  servers:\n   - 127.0.0.1:7000:1\n   - 127.0.0.1:7001:2\n   - 127.0.0.1:7002:3\n");
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
    let p =
        pool("  servers:\n   - 127.0.0.1:7000:1\n   - 127.0.0.1:7001:1\n   - 127.0.0.1:7002:1\n");
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
