//! `/metrics` in the loop: accepting HTTP connections, answering them, and rendering the
//! Prometheus text from the same counters as `INFO` (the HTTP parsing is in `metrics.rs`).

use super::Proxy;
use crate::conns::Conn;
use crate::metrics::{escape_label, response, HttpAsk, HttpConn};
use crate::stats::{command_name, PROM_BUCKETS};
use log::warn;
use std::fmt::Write;
use std::io;

impl Proxy {
    /// The metrics text in the Prometheus exposition format (version 0.0.4).
    pub(crate) fn render_metrics(&self) -> String {
        let s = &self.stats;
        let mut o = String::new();
        let (blocked, subscribed) = self.session_counts();
        let gauge = |o: &mut String, name: &str, help: &str, v: u64| {
            let _ = write!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n");
        };
        let counter = |o: &mut String, name: &str, help: &str, v: u64| {
            let _ = write!(
                o,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
            );
        };
        gauge(
            &mut o,
            "respite_connected_clients",
            "Clients connected.",
            self.clients as u64,
        );
        gauge(
            &mut o,
            "respite_blocked_clients",
            "Clients waiting on a blocking command.",
            blocked as u64,
        );
        gauge(
            &mut o,
            "respite_pubsub_clients",
            "Clients in subscribed mode.",
            subscribed as u64,
        );
        counter(
            &mut o,
            "respite_connections_received_total",
            "Connections accepted.",
            s.total_connections_received,
        );
        counter(
            &mut o,
            "respite_rejected_connections_total",
            "Connections refused at maxclients.",
            s.rejected_connections,
        );
        counter(
            &mut o,
            "respite_protocol_errors_total",
            "Clients closed for a protocol error.",
            s.protocol_errors,
        );
        o.push_str("# HELP respite_commands_total Commands answered, by command.\n# TYPE respite_commands_total counter\n");
        for (i, c) in s.commands.iter().enumerate().filter(|(_, c)| c.calls > 0) {
            let _ = writeln!(
                o,
                "respite_commands_total{{command=\"{}\"}} {}",
                command_name(i),
                c.calls
            );
        }
        o.push_str("# HELP respite_command_failures_total Commands answered with an error, by command.\n# TYPE respite_command_failures_total counter\n");
        for (i, c) in s.commands.iter().enumerate().filter(|(_, c)| c.calls > 0) {
            let _ = writeln!(
                o,
                "respite_command_failures_total{{command=\"{}\"}} {}",
                command_name(i),
                c.failed
            );
        }
        o.push_str("# HELP respite_command_duration_seconds Time from a request's arrival to its reply being ready.\n# TYPE respite_command_duration_seconds histogram\n");
        let count: u64 = s.commands.iter().map(|c| c.calls).sum();
        let mut cumulative = 0;
        for (bound, n) in PROM_BUCKETS.iter().zip(s.prom_buckets) {
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
        let _ = writeln!(
            o,
            "respite_command_duration_seconds_sum {}",
            s.prom_sum_us as f64 / 1e6
        );
        let _ = writeln!(o, "respite_command_duration_seconds_count {count}");
        let groups = [("backend", &self.ups.backends), ("shard", &self.ups.shards)];
        for (metric, help, kind) in [
            ("up", "1 if healthy.", "gauge"),
            ("requests_total", "Requests sent.", "counter"),
            (
                "errors_total",
                "Requests failed by a connection failure.",
                "counter",
            ),
            (
                "health_transitions_total",
                "Health state changes.",
                "counter",
            ),
        ] {
            for (group, list) in groups {
                if list.is_empty() {
                    continue;
                }
                let name = if metric == "health_transitions_total" {
                    "respite_health_transitions_total".to_string()
                } else {
                    format!("respite_{group}_{metric}")
                };
                if metric == "health_transitions_total" && group == "shard" {
                    continue;
                }
                let _ = write!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
                for b in list.iter() {
                    let v = match metric {
                        "up" => u64::from(b.health.up),
                        "requests_total" => b.requests,
                        "errors_total" => b.errors,
                        _ => b.health.transitions,
                    };
                    let _ = writeln!(o, "{name}{{{group}=\"{}\"}} {v}", escape_label(&b.label));
                }
            }
        }
        o
    }

    /// Readiness on a metrics connection: read the request, queue the response, write it.
    pub(super) fn on_http_event(&mut self, token: usize) {
        let Some(h) = self.conns.http_mut(token) else {
            return;
        };
        let answer = match h.read(&mut self.scratch) {
            Ok(Some(HttpAsk::Partial)) | Ok(None) => None,
            Ok(Some(HttpAsk::Metrics)) => Some(response(
                200,
                "OK",
                "text/plain; version=0.0.4",
                &self.render_metrics(),
            )),
            Ok(Some(HttpAsk::Status(code, reason))) => {
                Some(response(code, reason, "text/plain", reason))
            }
            Err(_) => {
                self.remove(token);
                return;
            }
        };
        let Some(h) = self.conns.http_mut(token) else {
            return;
        };
        if let Some(bytes) = answer {
            h.respond(bytes);
        }
        if h.write().unwrap_or(true) {
            self.remove(token);
        }
    }

    /// Accepts connections to the metrics port.
    pub(super) fn accept_http(&mut self) {
        loop {
            let Some(l) = &self.metrics_listener else {
                return;
            };
            let stream = match l.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!("metrics accept failed: {e}");
                    return;
                }
            };
            let _ = self.add(Conn::Http(HttpConn::new(stream)));
        }
    }
}
