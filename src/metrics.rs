//! `/metrics`: the Prometheus text format, served over HTTP from inside the event loop.
//!
//! The HTTP side is one request per connection: `httparse` (a small, allocation-free parser used
//! by hyper) reads the request line; anything but `GET /metrics` answers 404; the response is
//! written and the connection closed. The text is rendered from the same counters as `INFO`.

use bytes::BytesMut;
use mio::net::TcpStream;

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
