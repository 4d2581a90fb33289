//! `INFO`: respite's own sections in Redis's format, built from the counters and the live state
//! of the loop, and one `CLIENT LIST` line per client.

use super::Proxy;
use crate::stats::{ProcessUsage, REDIS_VERSION};
use crate::upstream::{Role, Tier};
use std::fmt::Write;

const SECTIONS: [&str; 13] = [
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "cpu",
    "backends",
    "shards",
    "cluster",
    "tls",
    "commandstats",
    "latencystats",
    "keyspace",
];

impl Proxy {
    /// The `INFO` text for the requested sections (none, `all`, `everything` or `default`: all).
    pub(crate) fn info(&self, sections: &[&[u8]]) -> String {
        let all = sections.is_empty()
            || sections.iter().any(|s| {
                [&b"all"[..], b"everything", b"default"]
                    .iter()
                    .any(|a| s.eq_ignore_ascii_case(a))
            });
        let mut out = String::new();
        for name in SECTIONS {
            if name == "keyspace" && self.ups.have_shards() {
                continue; // merged from the shards by the INFO fan-out
            }
            if all
                || sections
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(name.as_bytes()))
            {
                if !out.is_empty() {
                    out.push_str("\r\n");
                }
                self.info_section(name, &mut out);
            }
        }
        out
    }

    /// Appends section `name` (writing to a `String` cannot fail).
    fn info_section(&self, name: &str, out: &mut String) {
        match name {
            "server" => self.info_server(out),
            "clients" => {
                let (blocked, subscribed) = self.session_counts();
                let _ = write!(
                    out,
                    "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:{blocked}\r\npubsub_clients:{subscribed}\r\n",
                    self.clients, self.config.maxclients
                );
            }
            "memory" => {
                let rss = ProcessUsage::read().rss_bytes;
                let _ = write!(
                    out,
                    "# Memory\r\nused_memory:{rss}\r\nused_memory_human:{:.2}M\r\nused_memory_rss:{rss}\r\n\
                     maxmemory:0\r\nmem_allocator:libc\r\n",
                    rss as f64 / (1 << 20) as f64
                );
            }
            // respite persists nothing; the fields say so for scripts that wait on them.
            "persistence" => out.push_str(
                "# Persistence\r\nloading:0\r\nasync_loading:0\r\nrdb_changes_since_last_save:0\r\n\
                 rdb_bgsave_in_progress:0\r\naof_enabled:0\r\naof_rewrite_in_progress:0\r\n",
            ),
            "cpu" => {
                let usage = ProcessUsage::read();
                let _ = write!(
                    out,
                    "# CPU\r\nused_cpu_sys:{:.6}\r\nused_cpu_user:{:.6}\r\n",
                    usage.sys_seconds, usage.user_seconds
                );
            }
            "stats" => self.stats.write_info(out),
            "backends" => self.info_backends(out),
            "shards" => self.info_shards(out),
            "cluster" => self.info_cluster(out),
            "tls" => self.info_tls(out),
            "commandstats" => self.stats.write_commandstats(out),
            "latencystats" => self.stats.write_latencystats(out),
            // Without shards respite has no keyspace of its own to report; with shards the
            // section is merged from them by a fan-out (`fanout/`).
            "keyspace" => out.push_str("# Keyspace\r\n"),
            _ => {}
        }
    }

    fn info_server(&self, out: &mut String) {
        let config_file = self.config.config_file.as_ref();
        let _ = write!(
            out,
            "# Server\r\nredis_version:{REDIS_VERSION}\r\nrespite_version:{}\r\nredis_mode:standalone\r\n\
             worker_id:{}\r\nworkers:{}\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\nconfig_file:{}\r\n",
            env!("CARGO_PKG_VERSION"),
            self.worker_id,
            self.config.workers,
            std::process::id(),
            self.port,
            self.now.duration_since(self.started).as_secs(),
            config_file.map(|p| p.display().to_string()).unwrap_or_default(),
        );
    }

    fn info_backends(&self, out: &mut String) {
        out.push_str("# Backends\r\n");
        for (i, b) in self
            .ups
            .backends
            .iter()
            .enumerate()
            .filter(|(_, b)| !b.retired)
        {
            let conns = b
                .conns
                .iter()
                .flatten()
                .filter(|&&r| self.conns.is_live(r))
                .count();
            let _ = write!(
                out,
                "backend{i}:addr={},state={},tier={},resp3={},fails={},connections={conns},requests={},errors={},transitions={},p50_usec={},p99_usec={}\r\n",
                b.label,
                if b.health.up { "up" } else { "down" },
                match b.tier {
                    Some(Tier::Redis) => "redis",
                    Some(Tier::Twemproxy) => "twemproxy",
                    Some(Tier::Codis) => "codis",
                    Some(Tier::Cluster) => "cluster",
                    None => "unknown",
                },
                match b.resp3 {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "unknown",
                },
                b.health.fails,
                b.requests,
                b.errors,
                b.health.transitions,
                b.latency.quantile(0.5),
                b.latency.quantile(0.99),
            );
        }
    }

    fn info_shards(&self, out: &mut String) {
        out.push_str("# Shards\r\n");
        for (i, sh) in self
            .ups
            .shards
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.retired)
        {
            let role = match &sh.role {
                Role::Unknown => "unknown".to_string(),
                Role::Master => "master".to_string(),
                Role::Replica(m) => format!("replica,master={m}"),
            };
            let _ = write!(
                out,
                "shard{i}:addr={},role={role},state={},fails={},requests={},errors={}\r\n",
                sh.label,
                if sh.health.up { "up" } else { "down" },
                sh.health.fails,
                sh.requests,
                sh.errors,
            );
        }
    }

    /// `cluster_enabled:0` (respite is not a cluster node: cluster-aware clients must not take
    /// it for one); in front of a Redis Cluster (`--cluster`), its nodes, the slots of each
    /// master, the redirects respite followed and when the slot table was last read.
    fn info_cluster(&self, out: &mut String) {
        let _ = write!(
            out,
            "# Cluster\r\ncluster_enabled:0\r\ncluster_behind:{}\r\n",
            u8::from(self.ups.cluster)
        );
        let Some(ranges) = self.ups.cluster_slots.as_ref().filter(|_| self.ups.cluster) else {
            return;
        };
        let nodes = self.ups.shards.iter().filter(|s| !s.retired).count();
        let mut masters: Vec<(&str, usize)> = Vec::new();
        for r in ranges {
            let n = usize::from(r.last - r.first) + 1;
            match masters.iter_mut().find(|(m, _)| *m == r.master) {
                Some((_, slots)) => *slots += n,
                None => masters.push((&r.master, n)),
            }
        }
        let served: usize = masters.iter().map(|(_, n)| n).sum();
        let ago = self
            .cluster_refreshed
            .map(|t| self.now.duration_since(t).as_millis());
        let _ = write!(
            out,
            "cluster_known_nodes:{nodes}\r\ncluster_size:{}\r\ncluster_slots_served:{served}\r\ncluster_moved_followed:{}\r\ncluster_ask_followed:{}\r\ncluster_slots_read_ms_ago:{}\r\n",
            masters.len(),
            self.stats.cluster_moves,
            self.stats.cluster_asks,
            ago.map_or(-1, |ms| i64::try_from(ms).unwrap_or(i64::MAX)),
        );
        for (i, (addr, slots)) in masters.iter().enumerate() {
            let _ = write!(out, "master{i}:addr={addr},slots={slots}\r\n");
        }
    }

    /// One `CLIENT LIST` line for the client at `token`.
    pub(crate) fn client_line(&self, token: usize) -> Option<String> {
        let c = self.conns.client(token)?;
        let text = |v: &Option<Vec<u8>>| {
            v.as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default()
                .into_owned()
        };
        Some(format!(
            "id={} addr={} laddr={} name={} age={} idle={} flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 \
             qbuf={} obl=0 oll={} omem={} cmd={} user=default resp=2 lib-name={} lib-ver={}\n",
            c.id,
            c.peer,
            c.local.map(|a| a.to_string()).unwrap_or_default(),
            text(&c.name),
            self.now.duration_since(c.created).as_secs(),
            self.now.duration_since(c.last_active).as_secs(),
            c.rbuf.len(),
            c.pending.len(),
            c.out.bytes(),
            c.last_cmd.to_ascii_lowercase(),
            text(&c.lib_name),
            text(&c.lib_ver),
        ))
    }
}
