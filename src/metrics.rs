//! The HTTP side of `/metrics`: one request per connection. `httparse` (a small,
//! allocation-free parser used by hyper) reads the request head; anything but `GET /metrics`
//! gets its error status; the response is written and the connection closed. The Prometheus
//! text itself is rendered in the loop (`proxy/metrics_http.rs`) from the counters `INFO` uses.
//!
//! ```text
//!  read ─▶ head complete? ─▶ GET /metrics: 200 + text │ else 404/405/400/431 ─▶ write ─▶ close
//! ```

use crate::tls::Stream;
use bytes::BytesMut;
use std::io::{self, Write};

/// Largest request head accepted before answering 431.
const MAX_HEAD_BYTES: usize = 8 * 1024;

/// One HTTP connection to the metrics port.
#[derive(Debug)]
pub struct HttpConn {
    /// The socket.
    pub stream: Stream,
    /// Request bytes read so far.
    pub rbuf: BytesMut,
    /// Response bytes not yet written.
    pub out: Vec<u8>,
    /// The response is queued: close once it is written.
    pub responded: bool,
}

impl HttpConn {
    /// A connection just accepted.
    pub fn new(stream: Stream) -> Self {
        HttpConn {
            stream,
            rbuf: BytesMut::new(),
            out: Vec::new(),
            responded: false,
        }
    }

    /// Reads what has arrived and says what the request asks for, once it is known (`None`
    /// after the response is queued). An error or a peer gone before asking is `Err`.
    pub fn read(&mut self, scratch: &mut [u8]) -> io::Result<Option<HttpAsk>> {
        if self.responded {
            return Ok(None);
        }
        let r = self.stream.read_into(&mut self.rbuf, scratch, true)?;
        if r.eof && self.rbuf.is_empty() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(Some(parse_request(&self.rbuf)))
    }

    /// Queues the response; the connection closes once it is written.
    pub fn respond(&mut self, bytes: Vec<u8>) {
        self.out = bytes;
        self.responded = true;
    }

    /// Writes the queued response. `Ok(true)` once the connection is done with: the response
    /// is written (or the peer stopped taking it).
    pub fn write(&mut self) -> io::Result<bool> {
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(0) => break,
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(self.responded)
    }
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

/// A Prometheus label value with backslashes, quotes and newlines escaped.
pub fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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
