//! Pub/sub: a subscriber's connection of its own to the pub/sub target, its subscribed mode,
//! and the messages that stream back to it.
//!
//! ```text
//!  SUBSCRIBE ──▶ session conn to the pub/sub target (Origin::Push): Mode::Subscribed
//!  every frame on it ──▶ straight to the client's output (a push frame for RESP3 clients)
//!  the UNSUBSCRIBE whose count reaches 0 ──▶ the connection closes, Mode::Normal
//!  PUBLISH, PUBSUB ──▶ the same target over a shared connection, so publishers and subscribers meet
//! ```

use super::Proxy;
use crate::backend::Origin;
use crate::client::Mode;
use crate::command::{Local, Route, Session};
use crate::request::Request;
use crate::resp;
use crate::resp3::{convert, Shape};
use bytes::{Bytes, BytesMut};

impl Proxy {
    /// A request from a subscribed client: the subscribe family and PING go to its
    /// subscription; QUIT and RESET are answered here; anything else is refused as Redis
    /// refuses it (RESP2), or takes the ordinary path beside the subscription (RESP3).
    pub(super) fn dispatch_subscribed(
        &mut self,
        token: usize,
        route: Route,
        req: Request,
    ) -> Option<Request> {
        let resp3 = self.conns.client(token)?.resp3;
        match route {
            Route::Session(Session::Subscribe | Session::Unsubscribe) => {
                let unsub = matches!(route, Route::Session(Session::Unsubscribe));
                self.send_push(token, req, unsub);
            }
            Route::Local(Local::Quit | Local::Reset) => return Some(req),
            // In RESP3 any command may run on a subscribed connection (PING gets +PONG).
            _ if resp3 => return Some(req),
            Route::Local(Local::Ping) => self.send_push(token, req, false),
            _ => {
                let name = req
                    .spec()
                    .map_or("unknown", |s| s.name)
                    .to_ascii_lowercase();
                let refusal = resp::error(&format!(
                    "ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
                ));
                self.reply_now(token, &req, refusal);
            }
        }
        None
    }

    /// SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE from a client not subscribed yet.
    pub(super) fn subscribe(&mut self, token: usize, req: Request) {
        if self.open_session(token, &req, true).is_some() {
            if let Some(c) = self.conns.client_mut(token) {
                c.mode = Mode::Subscribed;
            }
            self.send_push(token, req, false);
        }
    }

    /// An UNSUBSCRIBE-family command from a client that is not subscribed: answered as Redis
    /// does, one reply per channel with count 0.
    pub(super) fn unsubscribe_unsubscribed(&mut self, token: usize, req: Request) {
        let kind = req.arg(0).unwrap_or_default().to_ascii_lowercase();
        let channels: Vec<Option<&[u8]>> = if req.argc() > 1 {
            req.args().skip(1).map(Some).collect()
        } else {
            vec![None]
        };
        let push = self.conns.client(token).is_some_and(|c| c.resp3);
        let mut out = BytesMut::new();
        for ch in channels {
            if push {
                out.extend_from_slice(b">3\r\n");
            } else {
                resp::put_array_header(&mut out, 3);
            }
            resp::put_bulk(&mut out, &kind);
            match ch {
                Some(ch) => resp::put_bulk(&mut out, ch),
                None => out.extend_from_slice(b"$-1\r\n"),
            }
            resp::put_integer(&mut out, 0);
        }
        self.reply_now(token, &req, out.freeze());
    }

    /// PUBLISH, SPUBLISH, PUBSUB: to the pub/sub target, where the subscribers are.
    pub(super) fn publish(&mut self, token: usize, req: Request) {
        let Some(u) = self.ups.pubsub_target() else {
            let refusal = resp::error("ERR no pub/sub target available");
            return self.reply_now(token, &req, refusal);
        };
        let resp3 = self.conns.client(token).is_some_and(|c| c.resp3);
        let slot = self.ups.get(u).slot_for(token, resp3);
        self.forward_to(token, req, u, slot);
    }

    /// Sends a request on the subscribed session connection; its answers stream to the client.
    fn send_push(&mut self, token: usize, req: Request, unsub: bool) {
        let Some(conn) = self.open_session(token, &req, true) else {
            return;
        };
        if let Some(bc) = self.conns.backend_mut(conn) {
            bc.subscribed = true;
            bc.last_push_unsub = unsub;
        }
        self.enqueue(conn, Origin::Push, req.bytes);
    }

    /// A frame from a subscribed session connection: straight to its owner. Returns true if the
    /// connection left subscribed mode and was closed.
    pub(super) fn on_push_frame(&mut self, conn: usize, frame: Bytes) -> bool {
        let Some(bc) = self.conns.backend_mut(conn) else {
            return true;
        };
        bc.pipe.forget_inflight();
        let leave = bc.last_push_unsub && !bc.pipe.has_unsent() && unsubscribed_all(&frame);
        let Some(owner) = bc.owner else {
            return false;
        };
        let Some(c) = self.conns.live_client_mut(owner) else {
            return false;
        };
        let frame = if c.resp3 && frame.first() == Some(&b'*') {
            convert(Shape::Push, &frame)
        } else {
            frame
        };
        c.out.push(frame);
        if leave {
            c.mode = Mode::Normal;
        }
        self.mark_client_dirty(owner.token);
        if leave {
            self.close_session_of(owner.token);
        }
        leave
    }
}

/// True for an `unsubscribe`/`punsubscribe`/`sunsubscribe` message whose count is 0.
fn unsubscribed_all(frame: &[u8]) -> bool {
    let Some(rest) = frame.strip_prefix(b"*3\r\n") else {
        return false;
    };
    let kind = [
        &b"$11\r\nunsubscribe\r\n"[..],
        b"$12\r\npunsubscribe\r\n",
        b"$12\r\nsunsubscribe\r\n",
    ]
    .iter()
    .any(|k| rest.starts_with(k));
    kind && frame.ends_with(b"\r\n:0\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_last_unsubscribe() {
        assert!(unsubscribed_all(
            b"*3\r\n$11\r\nunsubscribe\r\n$2\r\nch\r\n:0\r\n"
        ));
        assert!(unsubscribed_all(
            b"*3\r\n$12\r\npunsubscribe\r\n$-1\r\n:0\r\n"
        ));
        assert!(!unsubscribed_all(
            b"*3\r\n$11\r\nunsubscribe\r\n$2\r\nch\r\n:1\r\n"
        ));
        assert!(!unsubscribed_all(
            b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\n:0\r\n"
        ));
    }
}
