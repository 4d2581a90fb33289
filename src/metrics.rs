//! `/metrics`: the Prometheus text format, served over HTTP from inside the event loop.
//!
//! The HTTP side is one request per connection: `httparse` (a small, allocation-free parser used
//! by hyper) reads the request line; anything but `GET /metrics` answers 404; the response is
//! written and the connection closed. The text is rendered from the same counters as `INFO`.

use crate::proxy::{Conn, Proxy};
use crate::stats::{command_name, PROM_BUCKETS};
use bytes::BytesMut;
use mio::net::TcpStream;
use std::fmt::Write;

/// Largest request head accepted before answering 431.
const MAX_HEAD_BYTES: usize = 8 * 1024;

/// One HTTP connection to the metrics port.
#[derive(Debug)]
pub struct HttpConn {
    /// The socket.
    pub stream: TcpStream,
    /// Request bytes read so far.
    pub rbuf: BytesMut,
    /// Response bytes not yet written.
    pub out: Vec<u8>,
    /// The response is queued: close once it is written.
    pub responded: bool,
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum HttpAsk {
    /// Not complete yet.
    Partial,
    /// `GET /metrics`.
    Metrics,
    /// Anything else, with the status to answer.
    Status(u16, &'static str),
}

/// Parses a request head with `httparse`.
pub fn parse_request(buf: &[u8]) -> HttpAsk {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {
            let path = req.path.unwrap_or("");
            let path = path.split('?').next().unwrap_or("");
            match (req.method, path) {
                (Some("GET"), "/metrics") => HttpAsk::Metrics,
                (Some("GET"), _) => HttpAsk::Status(404, "Not Found"),
                _ => HttpAsk::Status(405, "Method Not Allowed"),
            }
        }
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD_BYTES => HttpAsk::Partial,
        Ok(httparse::Status::Partial) => HttpAsk::Status(431, "Request Header Fields Too Large"),
        Err(_) => HttpAsk::Status(400, "Bad Request"),
    }
}

/// A complete HTTP/1.1 response that closes the connection.
pub fn response(status: u16, reason: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

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
        let groups = [("backend", &self.backends), ("shard", &self.shards)];
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
                    let _ = writeln!(o, "{name}{{{group}=\"{}\"}} {v}", label(&b.label));
                }
            }
        }
        o
    }

    /// Readiness on a metrics connection: read the request, queue the response, write it.
    pub(crate) fn on_http_event(&mut self, token: usize) {
        let body = {
            let Some(Conn::Http(h)) = self.conns.get_mut(token).map(|e| &mut e.conn) else {
                return;
            };
            if !h.responded {
                match crate::net::read_into(&mut h.stream, &mut h.rbuf, &mut self.scratch, true) {
                    Ok(r) if r.eof && h.rbuf.is_empty() => {
                        self.remove(token);
                        return;
                    }
                    Ok(_) => {}
                    Err(_) => {
                        self.remove(token);
                        return;
                    }
                }
            }
            if h.responded {
                None
            } else {
                Some(parse_request(&h.rbuf))
            }
        };
        match body {
            Some(HttpAsk::Partial) => return,
            Some(HttpAsk::Metrics) => {
                let text = self.render_metrics();
                self.queue_http(
                    token,
                    response(200, "OK", "text/plain; version=0.0.4", &text),
                );
            }
            Some(HttpAsk::Status(code, reason)) => {
                self.queue_http(token, response(code, reason, "text/plain", reason));
            }
            None => {}
        }
        let Some(Conn::Http(h)) = self.conns.get_mut(token).map(|e| &mut e.conn) else {
            return;
        };
        while !h.out.is_empty() {
            match std::io::Write::write(&mut h.stream, &h.out) {
                Ok(0) => break,
                Ok(n) => {
                    h.out.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => break,
            }
        }
        if h.responded {
            self.remove(token);
        }
    }

    fn queue_http(&mut self, token: usize, bytes: Vec<u8>) {
        if let Some(Conn::Http(h)) = self.conns.get_mut(token).map(|e| &mut e.conn) {
            h.out = bytes;
            h.responded = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_http_requests() {
        assert_eq!(
            parse_request(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            HttpAsk::Metrics
        );
        assert_eq!(
            parse_request(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"),
            HttpAsk::Metrics
        );
        assert_eq!(
            parse_request(b"GET /metrics HTTP/1.1\r\nHo"),
            HttpAsk::Partial
        );
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\n\r\n"),
            HttpAsk::Status(404, "Not Found")
        );
        assert_eq!(
            parse_request(b"POST /metrics HTTP/1.1\r\n\r\n"),
            HttpAsk::Status(405, "Method Not Allowed")
        );
        assert_eq!(
            parse_request(b"\x00\x01garbage\r\n\r\n"),
            HttpAsk::Status(400, "Bad Request")
        );
    }
}
