//! Operations: INFO in Redis's format, Prometheus /metrics, SLOWLOG.

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;
use support::*;

/// Parses INFO text the way redis-py's `info()` does: `# Section` headers, `key:value` lines.
fn parse_info(text: &str) -> (Vec<String>, HashMap<String, String>) {
    let mut sections = Vec::new();
    let mut fields = HashMap::new();
    for line in text.split("\r\n") {
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix("# ") {
            sections.push(name.to_string());
            continue;
        }
        let (k, v) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("INFO line without ':': {line:?}"));
        fields.insert(k.to_string(), v.to_string());
    }
    (sections, fields)
}

#[test]
fn info_has_every_section_and_field_in_redis_format() {
    let a = RedisServer::start();
    let proxy = TestProxy::over(&[&a]);
    let mut c = proxy.client();
    for i in 0..20 {
        let () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg("v")
            .query(&mut c)
            .unwrap();
        let _: Option<String> = redis::cmd("GET")
            .arg(format!("k{i}"))
            .query(&mut c)
            .unwrap();
    }
    let _: redis::RedisResult<()> = redis::cmd("NOSUCH").query(&mut c);
    let text: String = redis::cmd("INFO").arg("everything").query(&mut c).unwrap();
    let (sections, f) = parse_info(&text);
    for s in [
        "Server",
        "Clients",
        "Stats",
        "Backends",
        "Shards",
        "Commandstats",
        "Latencystats",
        "Keyspace",
    ] {
        assert!(
            sections.iter().any(|x| x == s),
            "section {s} in {sections:?}"
        );
    }
    for k in [
        "redis_version",
        "respite_version",
        "process_id",
        "tcp_port",
        "uptime_in_seconds",
        "config_file",
        "connected_clients",
        "maxclients",
        "blocked_clients",
        "pubsub_clients",
        "total_connections_received",
        "total_commands_processed",
        "instantaneous_ops_per_sec",
        "rejected_connections",
        "protocol_errors",
        "backend_errors",
    ] {
        assert!(f.contains_key(k), "field {k}");
    }
    assert_eq!(f["tcp_port"], proxy.addr.port().to_string());
    assert_eq!(f["process_id"], std::process::id().to_string());
    let backend = &f["backend0"];
    for part in [
        format!("addr={}", a.addr()),
        "state=up".into(),
        "p50_usec=".into(),
        "p99_usec=".into(),
        "requests=".into(),
    ] {
        assert!(backend.contains(&part), "{backend} lacks {part}");
    }
    let set = &f["cmdstat_set"];
    assert!(set.starts_with("calls=20,usec="), "{set}");
    assert!(
        f["cmdstat_unknown"].contains("failed_calls=1"),
        "{}",
        f["cmdstat_unknown"]
    );
    assert!(f["latency_percentiles_usec_get"].starts_with("p50="));
    let only: String = redis::cmd("INFO").arg("stats").query(&mut c).unwrap();
    let (sections, _) = parse_info(&only);
    assert_eq!(sections, vec!["Stats"]);
}

#[test]
fn info_keeps_the_redis_fields_tools_and_scripts_read() {
    let a = RedisServer::start();
    let proxy = TestProxy::over(&[&a]);
    let text: String = redis::cmd("INFO").query(&mut proxy.client()).unwrap();
    let (sections, f) = parse_info(&text);
    for s in ["Memory", "Persistence", "CPU"] {
        assert!(
            sections.iter().any(|x| x == s),
            "section {s} in {sections:?}"
        );
    }
    let used: u64 = f["used_memory"].parse().expect("used_memory");
    assert!(used > 1 << 20, "respite's own resident memory: {used}");
    assert_eq!(f["mem_allocator"], "libc");
    for k in [
        "loading",
        "aof_rewrite_in_progress",
        "rdb_bgsave_in_progress",
    ] {
        assert_eq!(f[k], "0", "{k}");
    }
    let cpu: f64 = f["used_cpu_user"].parse().expect("used_cpu_user");
    assert!(cpu >= 0.0 && f["used_cpu_sys"].parse::<f64>().is_ok());
    // Sized from the open-file limit (raised to the hard limit), not a fixed 10,000.
    let maxclients: u64 = f["maxclients"].parse().expect("maxclients");
    let limits = std::fs::read_to_string("/proc/self/limits").expect("limits");
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("line");
    let soft: u64 = open_files
        .split_whitespace()
        .nth(3)
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX);
    assert!(
        maxclients + 64 <= soft && maxclients + 1024 >= soft.min(1 << 40),
        "{maxclients} of {soft}"
    );
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A strict parse of the Prometheus text format: samples by `name{labels}`.
fn parse_prometheus(body: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    let mut typed = std::collections::HashSet::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap();
            assert!(kind == "HELP" || kind == "TYPE", "bad comment {line}");
            let name = parts.next().expect("metric name");
            if kind == "TYPE" {
                let t = parts.next().unwrap();
                assert!(["counter", "gauge", "histogram"].contains(&t), "{line}");
                assert!(typed.insert(name.to_string()), "TYPE twice for {name}");
            }
            continue;
        }
        let (key, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample {line}"));
        let name = key.split('{').next().unwrap();
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{name}"
        );
        let base = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        assert!(
            typed.contains(name) || typed.contains(base),
            "sample before TYPE: {line}"
        );
        if let Some(labels) = key.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
            }
        }
        let v: f64 = value.parse().unwrap_or_else(|_| panic!("bad value {line}"));
        samples.insert(key.to_string(), v);
    }
    samples
}

#[test]
fn metrics_endpoint_serves_prometheus_text_and_tracks_backend_health() {
    let a = RedisServer::start();
    let mut b = RedisServer::start();
    let mut config = config_for(&[&a, &b]);
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let maddr = metrics.local_addr().expect("addr");
    config.metrics_listen = Some(maddr);
    let proxy = TestProxy::start_with_metrics(config, metrics);
    let mut c = proxy.client();
    for i in 0..10 {
        let () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg("v")
            .query(&mut c)
            .unwrap();
    }
    let (status, body) = http_get(maddr, "/metrics");
    assert_eq!(status, 200);
    let m = parse_prometheus(&body);
    assert_eq!(m["respite_connected_clients"], 1.0);
    assert_eq!(m["respite_commands_total{command=\"set\"}"], 10.0);
    assert!(m["respite_command_duration_seconds_count"] >= 10.0);
    assert_eq!(
        m["respite_command_duration_seconds_bucket{le=\"+Inf\"}"],
        m["respite_command_duration_seconds_count"]
    );
    let up_b = format!("respite_backend_up{{backend=\"{}\"}}", b.addr());
    assert_eq!(m[&up_b], 1.0);
    assert!(m.contains_key(&format!(
        "respite_backend_requests_total{{backend=\"{}\"}}",
        a.addr()
    )));
    assert!(m.contains_key(&format!(
        "respite_backend_errors_total{{backend=\"{}\"}}",
        a.addr()
    )));
    assert!(m.contains_key(&format!(
        "respite_health_transitions_total{{backend=\"{}\"}}",
        a.addr()
    )));
    assert_eq!(http_get(maddr, "/other").0, 404);

    b.kill();
    let down = wait_until(Duration::from_secs(3), || {
        parse_prometheus(&http_get(maddr, "/metrics").1)[&up_b] == 0.0
    });
    assert!(down, "backend_up flips to 0 after the kill");
    b.restart();
    let up = wait_until(Duration::from_secs(3), || {
        parse_prometheus(&http_get(maddr, "/metrics").1)[&up_b] == 1.0
    });
    assert!(up, "backend_up flips back to 1 after the restart");
    let m = parse_prometheus(&http_get(maddr, "/metrics").1);
    assert!(
        m[&format!(
            "respite_health_transitions_total{{backend=\"{}\"}}",
            b.addr()
        )] >= 2.0
    );
}

#[test]
fn slowlog_records_slow_commands_as_redis_formats_them() {
    let a = RedisServer::start();
    let proxy = TestProxy::over_with(&[&a], |c| c.slowlog_micros = 20_000);
    let mut raw = proxy.raw();
    assert_eq!(raw.cmd(&[b"CLIENT", b"SETNAME", b"slowpoke"]), b"+OK\r\n");
    assert_eq!(raw.cmd(&[b"SET", b"fast", b"1"]), b"+OK\r\n");
    raw.send(&sleep_request(50_000));
    assert_eq!(raw.reply(), b"+OK\r\n");
    assert_eq!(raw.cmd(&[b"SLOWLOG", b"LEN"]), b":1\r\n");
    let entry = String::from_utf8_lossy(&raw.cmd(&[b"SLOWLOG", b"GET"])).into_owned();
    let lines: Vec<&str> = entry.split("\r\n").collect();
    assert_eq!(&lines[..3], &["*1", "*6", ":0"], "{entry}");
    let usec: u64 = lines[4][1..].parse().unwrap();
    assert!((40_000..2_000_000).contains(&usec), "{usec}");
    let script = String::from_utf8_lossy(SLEEP_SCRIPT);
    assert_eq!(
        &lines[5..14],
        &[
            "*4",
            "$4",
            "EVAL",
            &format!("${}", script.len()),
            &script,
            "$1",
            "0",
            "$5",
            "50000"
        ]
    );
    assert!(entry.contains(&raw.stream.local_addr().unwrap().to_string()));
    assert!(entry.ends_with("$8\r\nslowpoke\r\n"));
    assert_eq!(raw.cmd(&[b"SLOWLOG", b"RESET"]), b"+OK\r\n");
    assert_eq!(raw.cmd(&[b"SLOWLOG", b"LEN"]), b":0\r\n");
}

#[test]
fn sighup_adds_and_removes_a_backend_without_dropping_clients_and_rejects_a_bad_file() {
    let (a, b) = (RedisServer::start(), RedisServer::start());
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("respite.toml");
    let write_conf = |listen: SocketAddr, backends: &[&RedisServer]| {
        let list: Vec<String> = backends
            .iter()
            .map(|s| format!("\"{}\"", s.addr()))
            .collect();
        std::fs::write(
            &conf,
            format!(
                "listen = \"{listen}\"\nbackends = [{}]\nhealth_interval_ms = 100\nrise = 2\n",
                list.join(", ")
            ),
        )
        .unwrap();
    };
    let mut child = RespiteProcess::start_with(|listen| {
        write_conf(listen, &[&a]);
        vec!["--config".into(), conf.to_str().unwrap().into()]
    });
    let addr = child.addr;
    let mut early = RawClient::connect(addr);
    assert_eq!(early.cmd(&[b"SET", b"k", b"v"]), b"+OK\r\n");

    write_conf(addr, &[&a, &b]);
    child.signal("-HUP");
    let spread = wait_until(Duration::from_secs(5), || {
        let _ = early.cmd(&[b"GET", b"k"]);
        b.calls("get") > 0
    });
    assert!(spread, "the added backend receives traffic");
    let info = String::from_utf8_lossy(&early.cmd(&[b"INFO", b"backends"])).into_owned();
    assert!(info.contains(&b.addr().to_string()), "{info}");

    write_conf(addr, &[&b]);
    child.signal("-HUP");
    std::thread::sleep(Duration::from_millis(300));
    let before = a.calls("get");
    for _ in 0..50 {
        let r = early.cmd(&[b"GET", b"k"]);
        assert!(r.starts_with(b"$"), "{}", String::from_utf8_lossy(&r));
    }
    assert_eq!(
        a.calls("get"),
        before,
        "the removed backend gets no new requests"
    );

    std::fs::write(&conf, "backends = [\"not an address\"]\n").unwrap();
    child.signal("-HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        early.cmd(&[b"PING"]),
        b"+PONG\r\n",
        "a bad file is rejected and the proxy keeps serving"
    );
    let r = early.cmd(&[b"GET", b"k"]);
    assert!(r.starts_with(b"$"), "{}", String::from_utf8_lossy(&r));
    assert_eq!(child.stop(), Some(0));
}

/// Listening sockets on `port` (state 0A in /proc/net/tcp).
fn listeners_on(port: u16) -> usize {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let needle = format!(":{port:04X} ");
    text.lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && format!("{} ", &f[1][f[1].len() - 5..]) == needle && f[3] == "0A"
        })
        .count()
}

#[test]
fn two_workers_listen_on_one_port_and_both_serve_clients() {
    let a = RedisServer::start();
    let mut child = RespiteProcess::start(&["--backends", &a.addr().to_string(), "--workers", "2"]);
    let (addr, port) = (child.addr, child.addr.port());
    assert!(
        wait_until(Duration::from_secs(5), || listeners_on(port) == 2),
        "two listening sockets on the port"
    );
    let mut seen = std::collections::HashSet::new();
    for i in 0..200 {
        let mut c = RawClient::connect(addr);
        let k = format!("w{i}");
        assert_eq!(c.cmd(&[b"SET", k.as_bytes(), b"v"]), b"+OK\r\n");
        let info = String::from_utf8_lossy(&c.cmd(&[b"INFO", b"server"])).into_owned();
        let id = info
            .lines()
            .find_map(|l| l.strip_prefix("worker_id:"))
            .unwrap()
            .trim()
            .to_string();
        seen.insert(id);
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen.len(), 2, "both loops served clients");
    assert_eq!(child.stop(), Some(0));
}
