//! Counters, and the `INFO` text built from them and from the live state of the loop.

use crate::proxy::{Conn, Proxy};
use std::fmt::Write;

/// The version of Redis respite presents itself as (`INFO`, `HELLO`), for clients that gate
/// features on it.
pub const REDIS_VERSION: &str = "7.2.0";

/// Process-wide counters of one event loop.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Connections accepted (including rejected ones).
    pub total_connections_received: u64,
    /// Requests framed.
    pub total_commands_processed: u64,
    /// Connections refused at `maxclients`.
    pub rejected_connections: u64,
    /// Clients closed for a protocol error.
    pub protocol_errors: u64,
    /// Requests failed by a backend connection failure.
    pub backend_errors: u64,
    /// Clients closed for passing `client_output_limit`.
    pub output_limit_disconnects: u64,
    /// `accept` calls that failed (EMFILE...).
    pub accept_errors: u64,
}

const SECTIONS: [&str; 5] = ["server", "clients", "stats", "backends", "shards"];

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

    fn info_section(&self, name: &str, out: &mut String) {
        let s = &self.stats;
        // Writing to a String cannot fail.
        let _ = match name {
            "server" => write!(
                out,
                "# Server\r\nredis_version:{REDIS_VERSION}\r\nrespite_version:{}\r\nredis_mode:standalone\r\n\
                 process_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\nconfig_file:{}\r\n",
                env!("CARGO_PKG_VERSION"),
                std::process::id(),
                self.port,
                self.now.duration_since(self.started).as_secs(),
                self.config
                    .config_file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
            "clients" => {
                let (blocked, subscribed) = self.session_counts();
                write!(
                    out,
                    "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:{blocked}\r\npubsub_clients:{subscribed}\r\n",
                    self.clients, self.config.maxclients
                )
            }
            "stats" => write!(
                out,
                "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
                 rejected_connections:{}\r\nprotocol_errors:{}\r\nbackend_errors:{}\r\n\
                 client_output_limit_disconnections:{}\r\n",
                s.total_connections_received,
                s.total_commands_processed,
                s.rejected_connections,
                s.protocol_errors,
                s.backend_errors,
                s.output_limit_disconnects,
            ),
            "backends" => {
                out.push_str("# Backends\r\n");
                for (i, b) in self.backends.iter().enumerate() {
                    let conns = b
                        .conns
                        .iter()
                        .flatten()
                        .filter(|r| self.conns.get(r.token).is_some_and(|e| e.gen == r.gen))
                        .count();
                    let _ = write!(
                        out,
                        "backend{i}:addr={},state={},fails={},connections={conns},requests={},errors={},transitions={}\r\n",
                        b.label,
                        if b.health.up { "up" } else { "down" },
                        b.health.fails,
                        b.requests,
                        b.errors,
                        b.health.transitions,
                    );
                }
                Ok(())
            }
            "shards" => {
                out.push_str("# Shards\r\n");
                for (i, sh) in self.shards.iter().enumerate() {
                    let role = match &sh.role {
                        crate::backend::Role::Unknown => "unknown".to_string(),
                        crate::backend::Role::Master => "master".to_string(),
                        crate::backend::Role::Replica(m) => format!("replica,master={m}"),
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
                Ok(())
            }
            _ => Ok(()),
        };
    }

    /// One `CLIENT LIST` line for the client at `token`.
    pub(crate) fn client_line(&self, token: usize) -> Option<String> {
        let Conn::Client(c) = &self.conns.get(token)?.conn else {
            return None;
        };
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
