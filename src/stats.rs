//! `Stats`: the counters of one loop — per command calls, latency and failures, the slow log,
//! connection and error counts — and the `INFO` sections and Prometheus lines built from them
//! alone (the sections that need the live loop are in `proxy/info.rs`).

use std::fmt::Write;

/// The version of Redis respite presents itself as (`INFO`, `HELLO`), for clients that gate
/// features on it.
pub const REDIS_VERSION: &str = "7.2.0";

/// Calls, time and failures of one command.
#[derive(Debug, Clone, Default)]
pub struct CommandStats {
    /// Requests answered.
    pub calls: u64,
    /// Total microseconds from arrival to reply ready.
    pub usec: u64,
    /// Requests answered with an error.
    pub failed: u64,
    /// Latency distribution.
    pub hist: crate::histogram::Histogram,
}

/// Requests answered by one reply buffer: `calls` of the slot tagged `tag`, from its request
/// number `first` on (a slot of one request: 0 and 1), `failed` of them with an error.
#[derive(Debug, Clone, Copy)]
pub struct Answered<'a> {
    pub tag: &'a crate::pending::Tag,
    pub first: u32,
    pub calls: u32,
    pub failed: u32,
}

/// One slow log entry, as Redis keeps it.
#[derive(Debug, Clone)]
pub struct SlowEntry {
    pub id: u64,
    pub unix_time: u64,
    pub usec: u64,
    pub args: Vec<Vec<u8>>,
    pub peer: String,
    pub name: Vec<u8>,
}

/// Upper bounds (seconds) of the Prometheus command duration histogram.
pub const PROM_BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// `PROM_BUCKETS` in microseconds.
const PROM_BUCKETS_US: [u64; PROM_BUCKETS.len()] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000,
];

/// Process-wide counters of one event loop.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Per command id (`COMMANDS` order), the last entry for unknown commands; allocated on
    /// first use.
    pub commands: Vec<CommandStats>,
    /// Command durations for Prometheus: counts per `PROM_BUCKETS` bucket (not cumulative).
    pub prom_buckets: [u64; PROM_BUCKETS.len()],
    /// Sum of command durations in microseconds.
    pub prom_sum_us: u64,
    /// The slow log, newest first.
    pub slowlog: std::collections::VecDeque<SlowEntry>,
    /// Id of the next slow log entry.
    pub slowlog_next_id: u64,
    /// Commands processed at each of the last samples (100 ms apart), for ops/sec.
    pub ops_samples: std::collections::VecDeque<(std::time::Instant, u64)>,
    /// Connections accepted (including rejected ones).
    pub total_connections_received: u64,
    /// Requests framed.
    pub total_commands_processed: u64,
    /// Connections refused at `maxclients`.
    pub rejected_connections: u64,
    /// Clients closed for a protocol error.
    pub protocol_errors: u64,
    /// Redis Cluster redirects respite followed: `-MOVED`, `-ASK`.
    pub cluster_moves: u64,
    pub cluster_asks: u64,
    /// Requests failed by a backend connection failure.
    pub backend_errors: u64,
    /// Clients closed for passing `client_output_limit`.
    pub output_limit_disconnects: u64,
    /// `accept` calls that failed (EMFILE...).
    pub accept_errors: u64,
    /// TLS clients and handshakes.
    pub tls: crate::tls::TlsCounters,
}

impl Stats {
    /// Records requests answered by one reply buffer: their calls, latency (from their arrival
    /// to now) and failures, and slow log entries.
    pub fn record(
        &mut self,
        a: Answered,
        now_us: u64,
        slow_us: u64,
        slowlog_max: usize,
        peer: &std::net::SocketAddr,
        name: Option<&[u8]>,
    ) {
        let us = now_us.saturating_sub(a.tag.start);
        if self.commands.is_empty() {
            self.commands = vec![CommandStats::default(); crate::command_table::COMMANDS.len() + 1];
        }
        let i = (a.tag.cmd as usize).min(self.commands.len() - 1);
        let calls = u64::from(a.calls);
        let c = &mut self.commands[i];
        c.calls += calls;
        c.usec += us * calls;
        c.failed += u64::from(a.failed);
        c.hist.record_n(us, a.calls);
        // One counter per bucket (cumulated when rendered); most requests stop at the first.
        let i = PROM_BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(PROM_BUCKETS_US.len());
        if let Some(b) = self.prom_buckets.get_mut(i) {
            *b += calls;
        }
        self.prom_sum_us += us * calls;
        if us >= slow_us && slowlog_max > 0 {
            // A run's requests are consecutive frames of its buffer: log each with its own.
            let mut rest = &a.tag.req[..];
            let mut scanner = crate::resp::RequestScanner::new();
            let limits = crate::resp::Limits::default();
            let frames = std::iter::from_fn(|| match scanner.scan(rest, &limits) {
                Ok(Some(crate::resp::Frame::Multibulk { len, .. })) => {
                    let (frame, after) = rest.split_at(len);
                    rest = after;
                    Some(frame)
                }
                _ => None,
            });
            let calls = a.calls.min(slowlog_max as u32) as usize;
            let reqs: Vec<&[u8]> = frames.skip(a.first as usize).take(calls).collect();
            if reqs.is_empty() {
                self.log_slow(&a.tag.req, us, peer, name, slowlog_max);
            }
            for req in reqs {
                self.log_slow(req, us, peer, name, slowlog_max);
            }
        }
    }

    fn log_slow(
        &mut self,
        req: &[u8],
        us: u64,
        peer: &std::net::SocketAddr,
        name: Option<&[u8]>,
        max: usize,
    ) {
        // Like Redis: secrets redacted, at most 32 arguments, each cut at 128 bytes.
        let mut all = crate::resp::frame_args(req);
        redact(&mut all);
        let mut args: Vec<Vec<u8>> = all
            .iter()
            .take(if all.len() > 32 { 31 } else { 32 })
            .map(|a| {
                if a.len() > 128 {
                    let mut v = a[..128].to_vec();
                    v.extend_from_slice(format!("... ({} more bytes)", a.len() - 128).as_bytes());
                    v
                } else {
                    a.to_vec()
                }
            })
            .collect();
        if all.len() > 32 {
            args.push(format!("... ({} more arguments)", all.len() - 31).into_bytes());
        }
        let unix_time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.slowlog.push_front(SlowEntry {
            id: self.slowlog_next_id,
            unix_time,
            usec: us,
            args,
            peer: peer.to_string(),
            name: name.unwrap_or_default().to_vec(),
        });
        self.slowlog_next_id += 1;
        self.slowlog.truncate(max);
    }

    /// Takes an ops/sec sample (every 100 ms); returns the rate over the last ~1.6 s.
    pub fn sample_ops(&mut self, now: std::time::Instant) {
        self.ops_samples
            .push_back((now, self.total_commands_processed));
        while self.ops_samples.len() > 16 {
            self.ops_samples.pop_front();
        }
    }

    /// Commands per second over the sampled window.
    pub fn ops_per_sec(&self) -> u64 {
        match (self.ops_samples.front(), self.ops_samples.back()) {
            (Some(a), Some(b)) if b.0 > a.0 => {
                ((b.1 - a.1) as f64 / b.0.duration_since(a.0).as_secs_f64()) as u64
            }
            _ => 0,
        }
    }
}

impl Stats {
    /// The `# Stats` section of `INFO`.
    pub fn write_info(&self, out: &mut String) {
        let _ = write!(
            out,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
             instantaneous_ops_per_sec:{}\r\nrejected_connections:{}\r\nprotocol_errors:{}\r\n\
             backend_errors:{}\r\nclient_output_limit_disconnections:{}\r\n",
            self.total_connections_received,
            self.total_commands_processed,
            self.ops_per_sec(),
            self.rejected_connections,
            self.protocol_errors,
            self.backend_errors,
            self.output_limit_disconnects,
        );
    }

    /// The commands answered at least once, with their names (lower case).
    fn used(&self) -> impl Iterator<Item = (String, &CommandStats)> {
        let used = self
            .commands
            .iter()
            .enumerate()
            .filter(|(_, c)| c.calls > 0);
        used.map(|(i, c)| (command_name(i), c))
    }

    /// The `# Commandstats` section of `INFO`.
    pub fn write_commandstats(&self, out: &mut String) {
        out.push_str("# Commandstats\r\n");
        for (name, c) in self.used() {
            let per_call = c.usec as f64 / c.calls as f64;
            let _ = write!(
                out,
                "cmdstat_{name}:calls={},usec={},usec_per_call={per_call:.2},rejected_calls=0,failed_calls={}\r\n",
                c.calls, c.usec, c.failed
            );
        }
    }

    /// The `# Latencystats` section of `INFO`.
    pub fn write_latencystats(&self, out: &mut String) {
        out.push_str("# Latencystats\r\n");
        for (name, c) in self.used() {
            let q = |q| c.hist.quantile(q) as f64;
            let _ = write!(
                out,
                "latency_percentiles_usec_{name}:p50={:.3},p99={:.3},p99.9={:.3}\r\n",
                q(0.5),
                q(0.99),
                q(0.999)
            );
        }
    }

    /// Prometheus: calls and failures by command, and the command duration histogram.
    pub fn write_prometheus(&self, o: &mut String) {
        o.push_str("# HELP respite_commands_total Commands answered, by command.\n# TYPE respite_commands_total counter\n");
        for (name, c) in self.used() {
            let _ = writeln!(
                o,
                "respite_commands_total{{command=\"{name}\"}} {}",
                c.calls
            );
        }
        o.push_str("# HELP respite_command_failures_total Commands answered with an error, by command.\n# TYPE respite_command_failures_total counter\n");
        for (name, c) in self.used() {
            let _ = writeln!(
                o,
                "respite_command_failures_total{{command=\"{name}\"}} {}",
                c.failed
            );
        }
        o.push_str("# HELP respite_command_duration_seconds Time from a request's arrival to its reply being ready.\n# TYPE respite_command_duration_seconds histogram\n");
        let count: u64 = self.commands.iter().map(|c| c.calls).sum();
        let mut cumulative = 0;
        for (bound, n) in PROM_BUCKETS.iter().zip(self.prom_buckets) {
            cumulative += n;
            let _ = writeln!(
                o,
                "respite_command_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            o,
            "respite_command_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let sum = self.prom_sum_us as f64 / 1e6;
        let _ = writeln!(o, "respite_command_duration_seconds_sum {sum}");
        let _ = writeln!(o, "respite_command_duration_seconds_count {count}");
    }
}

/// What the process uses, as the kernel reports it (zeros where it cannot be read).
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessUsage {
    /// Resident memory.
    pub rss_bytes: u64,
    /// CPU time in user space.
    pub user_seconds: f64,
    /// CPU time in the kernel.
    pub sys_seconds: f64,
}

impl ProcessUsage {
    /// Reads `/proc/self/statm` and `/proc/self/stat`.
    pub fn read() -> Self {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        Self::parse(
            &statm,
            &stat,
            rustix::param::page_size() as u64,
            rustix::param::clock_ticks_per_second(),
        )
    }

    /// From the text of `statm` and `stat`, with the page size and clock ticks per second.
    pub fn parse(statm: &str, stat: &str, page: u64, ticks: u64) -> Self {
        let pages: u64 = statm
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        // The command name (field 2) may hold spaces: fields are counted after its `)`.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let field = |n: usize| -> u64 {
            after
                .split_whitespace()
                .nth(n)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let secs = |t: u64| t as f64 / ticks.max(1) as f64;
        ProcessUsage {
            rss_bytes: pages * page,
            // utime and stime are fields 14 and 15, the 12th and 13th after the name.
            user_seconds: secs(field(11)),
            sys_seconds: secs(field(12)),
        }
    }
}

/// Replaces the secrets in a request's arguments with `(redacted)`, as Redis does before a
/// request reaches the slow log: every argument of `AUTH`, the credentials after `AUTH` in
/// `HELLO`, the password after `AUTH` (and user and password after `AUTH2`) in `MIGRATE`.
pub fn redact(args: &mut [&[u8]]) {
    const REDACTED: &[u8] = b"(redacted)";
    let Some(name) = args.first() else {
        return;
    };
    // (first argument redacted, how many), after the word that introduces the secret.
    let after = |word: &[u8], n: usize| {
        let at = args.iter().position(|a| a.eq_ignore_ascii_case(word))?;
        Some((at + 1, n))
    };
    let spans: Vec<(usize, usize)> = if name.eq_ignore_ascii_case(b"AUTH") {
        vec![(1, args.len() - 1)]
    } else if name.eq_ignore_ascii_case(b"HELLO") {
        after(b"AUTH", 2).into_iter().collect()
    } else if name.eq_ignore_ascii_case(b"MIGRATE") {
        after(b"AUTH", 1)
            .into_iter()
            .chain(after(b"AUTH2", 2))
            .collect()
    } else {
        Vec::new()
    };
    for (at, n) in spans {
        for a in args.iter_mut().skip(at).take(n) {
            *a = REDACTED;
        }
    }
}

/// The name of command id `i` for stats (lower case), `unknown` past the table.
pub fn command_name(i: usize) -> String {
    crate::command_table::COMMANDS
        .get(i)
        .map_or_else(|| "unknown".to_string(), |s| s.name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redacted(args: &[&[u8]]) -> Vec<String> {
        let mut args = args.to_vec();
        redact(&mut args);
        args.iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }

    #[test]
    fn secrets_never_reach_the_slow_log() {
        assert_eq!(
            redacted(&[b"auth", b"user", b"pw"]),
            ["auth", "(redacted)", "(redacted)"]
        );
        assert_eq!(
            redacted(&[b"HELLO", b"3", b"AUTH", b"u", b"pw", b"SETNAME", b"n"]),
            [
                "HELLO",
                "3",
                "AUTH",
                "(redacted)",
                "(redacted)",
                "SETNAME",
                "n"
            ]
        );
        assert_eq!(
            redacted(&[
                b"MIGRATE", b"h", b"1", b"", b"0", b"5", b"AUTH2", b"u", b"pw", b"KEYS", b"k"
            ]),
            [
                "MIGRATE",
                "h",
                "1",
                "",
                "0",
                "5",
                "AUTH2",
                "(redacted)",
                "(redacted)",
                "KEYS",
                "k"
            ]
        );
        assert_eq!(redacted(&[b"GET", b"auth"]), ["GET", "auth"]);
    }

    #[test]
    fn reads_memory_and_cpu_from_proc() {
        let stat = "42 (a name) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0";
        let u = ProcessUsage::parse("100 7 3", stat, 4096, 100);
        assert_eq!(u.rss_bytes, 7 * 4096);
        assert_eq!((u.user_seconds, u.sys_seconds), (2.5, 0.5));
        assert!(ProcessUsage::read().rss_bytes > 0);
    }
}
