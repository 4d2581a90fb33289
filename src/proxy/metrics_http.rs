//! `/metrics` in the loop: accepting HTTP connections, answering them, and rendering the
//! Prometheus text from the same counters as `INFO` (the HTTP parsing is in `metrics.rs`).

use super::Proxy;
use crate::conns::Conn;
use crate::metrics::{escape_label, response, HttpAsk, HttpConn};
use crate::upstream::Backend;
use log::warn;
use std::fmt::Write;
use std::io;

impl Proxy {
    /// The metrics text in the Prometheus exposition format (version 0.0.4).
    pub(super) fn render_metrics(&self) -> String {
        let s = &self.stats;
        let (blocked, subscribed) = self.session_counts();
        let scalars = [
            (
                "respite_connected_clients",
                "Clients connected.",
                "gauge",
                self.clients as u64,
            ),
            (
                "respite_blocked_clients",
                "Clients waiting on a blocking command.",
                "gauge",
                blocked as u64,
            ),
            (
                "respite_pubsub_clients",
                "Clients in subscribed mode.",
                "gauge",
                subscribed as u64,
            ),
            (
                "respite_connections_received_total",
                "Connections accepted.",
                "counter",
                s.total_connections_received,
            ),
            (
                "respite_rejected_connections_total",
                "Connections refused at maxclients.",
                "counter",
                s.rejected_connections,
            ),
            (
                "respite_protocol_errors_total",
                "Clients closed for a protocol error.",
                "counter",
                s.protocol_errors,
            ),
            (
                "respite_cluster_moved_total",
                "Redis Cluster -MOVED redirects respite followed.",
                "counter",
                s.cluster_moves,
            ),
            (
                "respite_cluster_ask_total",
                "Redis Cluster -ASK redirects respite followed.",
                "counter",
                s.cluster_asks,
            ),
        ];
        let mut o = String::new();
        for (name, help, kind, v) in scalars {
            let _ = write!(
                o,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            );
        }
        s.write_prometheus(&mut o);
        self.upstream_metrics(&mut o);
        self.tls_metrics(&mut o);
        o
    }

    /// Health, requests and errors of every backend and shard, by address.
    fn upstream_metrics(&self, o: &mut String) {
        type Read = fn(&Backend) -> u64;
        let metrics: [(&str, &str, &str, Read); 3] = [
            ("up", "1 if healthy.", "gauge", |b| u64::from(b.health.up)),
            ("requests_total", "Requests sent.", "counter", |b| {
                b.requests
            }),
            (
                "errors_total",
                "Requests failed by a connection failure.",
                "counter",
                |b| b.errors,
            ),
        ];
        let groups = [("backend", &self.ups.backends), ("shard", &self.ups.shards)];
        for (metric, help, kind, read) in metrics {
            for (group, list) in groups.iter().filter(|(_, list)| !list.is_empty()) {
                let name = format!("respite_{group}_{metric}");
                let _ = write!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
                for b in list.iter() {
                    let _ = writeln!(
                        o,
                        "{name}{{{group}=\"{}\"}} {}",
                        escape_label(&b.label),
                        read(b)
                    );
                }
            }
            if metric == "errors_total" && !self.ups.backends.is_empty() {
                let name = "respite_health_transitions_total";
                let _ = write!(
                    o,
                    "# HELP {name} Health state changes.\n# TYPE {name} counter\n"
                );
                for b in &self.ups.backends {
                    let label = escape_label(&b.label);
                    let _ = writeln!(o, "{name}{{backend=\"{label}\"}} {}", b.health.transitions);
                }
            }
        }
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
            let _ = self.add(Conn::Http(HttpConn::new(crate::tls::Stream::Plain(stream))));
        }
    }
}
