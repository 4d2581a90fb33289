//! `Conns`: every connection of one loop in one `Slab`, keyed by token, each with a generation.
//!
//! ```text
//!  token 7: gen 41 Client ──┐   ConnRef { token: 7, gen: 41 } held by an origin or a session
//!  token 7: gen 58 Client   └─▶ after client 41 left and a newcomer took key 7: the reference
//!                               is stale, every `live_*` getter says None, nothing is delivered
//! ```
//!
//! A `ConnRef` is how anything outside the slab (an origin in a backend's FIFO, a session, a
//! fan-out, a pool slot) names a connection; a stale one is dropped, never followed. The typed
//! getters are the only way in, so no caller matches on `Conn` to find what it wants.

use crate::backend::BackendConn;
use crate::client::ClientConn;
use crate::health::ProbeConn;
use crate::metrics::HttpConn;
use crate::tls::Stream;
use slab::Slab;

/// A reference to a slab entry that may have been replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnRef {
    /// Slab key.
    pub token: usize,
    /// Generation of the entry when the reference was taken.
    pub gen: u32,
}

/// One connection of the loop.
#[derive(Debug)]
pub enum Conn {
    /// A downstream client (boxed: clients outnumber the rest, and this keeps entries small).
    Client(Box<ClientConn>),
    /// A data or session connection to a backend, shard or the pub/sub target.
    Backend(BackendConn),
    /// A health probe connection.
    Probe(ProbeConn),
    /// A connection to the metrics port.
    Http(HttpConn),
}

impl Conn {
    /// Its socket.
    pub fn stream_mut(&mut self) -> &mut Stream {
        match self {
            Conn::Client(c) => &mut c.stream,
            Conn::Backend(b) => &mut b.stream,
            Conn::Probe(p) => &mut p.stream,
            Conn::Http(h) => &mut h.stream,
        }
    }
}

#[derive(Debug)]
struct Entry {
    gen: u32,
    conn: Conn,
}

/// The slab of connections.
#[derive(Debug)]
pub struct Conns {
    slab: Slab<Entry>,
    next_gen: u32,
}

/// Typed getters by token and, checked against the generation, by `ConnRef`.
macro_rules! getters {
    ($variant:ident, $ty:ty, $get:ident, $get_mut:ident, $live:ident, $live_mut:ident) => {
        #[doc = concat!("The `", stringify!($variant), "` at `token`.")]
        #[inline]
        pub fn $get(&self, token: usize) -> Option<&$ty> {
            match self.slab.get(token) {
                Some(Entry {
                    conn: Conn::$variant(c),
                    ..
                }) => Some(c),
                _ => None,
            }
        }

        #[doc = concat!("The `", stringify!($variant), "` at `token`, mutably.")]
        #[inline]
        pub fn $get_mut(&mut self, token: usize) -> Option<&mut $ty> {
            match self.slab.get_mut(token) {
                Some(Entry {
                    conn: Conn::$variant(c),
                    ..
                }) => Some(c),
                _ => None,
            }
        }

        #[doc = concat!("The `", stringify!($variant), "` `r` names, if it is still there.")]
        #[inline]
        pub fn $live(&self, r: ConnRef) -> Option<&$ty> {
            match self.slab.get(r.token) {
                Some(Entry {
                    gen,
                    conn: Conn::$variant(c),
                }) if *gen == r.gen => Some(c),
                _ => None,
            }
        }

        #[doc = concat!("The `", stringify!($variant), "` `r` names, if it is still there, mutably.")]
        #[inline]
        pub fn $live_mut(&mut self, r: ConnRef) -> Option<&mut $ty> {
            match self.slab.get_mut(r.token) {
                Some(Entry {
                    gen,
                    conn: Conn::$variant(c),
                }) if *gen == r.gen => Some(c),
                _ => None,
            }
        }
    };
}

impl Conns {
    /// An empty slab with room for `n` connections.
    pub fn with_capacity(n: usize) -> Self {
        Conns {
            slab: Slab::with_capacity(n),
            next_gen: 0,
        }
    }

    /// Adds a connection under a new generation.
    pub fn insert(&mut self, conn: Conn) -> ConnRef {
        self.next_gen = self.next_gen.wrapping_add(1);
        let gen = self.next_gen;
        let token = self.slab.insert(Entry { gen, conn });
        ConnRef { token, gen }
    }

    /// Takes the connection at `token` out (the caller deregisters its socket).
    pub fn remove(&mut self, token: usize) -> Option<Conn> {
        self.slab.try_remove(token).map(|e| e.conn)
    }

    /// The reference to the connection at `token` now.
    #[inline]
    pub fn at(&self, token: usize) -> Option<ConnRef> {
        self.slab.get(token).map(|e| ConnRef { token, gen: e.gen })
    }

    /// True if `r` still names the connection it was taken for.
    #[inline]
    pub fn is_live(&self, r: ConnRef) -> bool {
        self.slab.get(r.token).is_some_and(|e| e.gen == r.gen)
    }

    /// The connection at `token`, of any kind.
    #[inline]
    pub fn get(&self, token: usize) -> Option<&Conn> {
        self.slab.get(token).map(|e| &e.conn)
    }

    /// The connection at `token`, of any kind, mutably.
    pub fn get_mut(&mut self, token: usize) -> Option<&mut Conn> {
        self.slab.get_mut(token).map(|e| &mut e.conn)
    }

    getters!(
        Client,
        ClientConn,
        client,
        client_mut,
        live_client,
        live_client_mut
    );
    getters!(
        Backend,
        BackendConn,
        backend,
        backend_mut,
        live_backend,
        live_backend_mut
    );
    getters!(
        Probe,
        ProbeConn,
        probe,
        probe_mut,
        live_probe,
        live_probe_mut
    );
    getters!(Http, HttpConn, http, http_mut, live_http, live_http_mut);

    /// Every connection with its token.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &Conn)> {
        self.slab.iter().map(|(t, e)| (t, &e.conn))
    }

    /// Every client with its token.
    pub fn clients(&self) -> impl Iterator<Item = (usize, &ClientConn)> {
        self.slab.iter().filter_map(|(t, e)| match &e.conn {
            Conn::Client(c) => Some((t, &**c)),
            _ => None,
        })
    }

    /// Every client, mutably.
    pub fn clients_mut(&mut self) -> impl Iterator<Item = &mut ClientConn> {
        self.slab.iter_mut().filter_map(|(_, e)| match &mut e.conn {
            Conn::Client(c) => Some(&mut **c),
            _ => None,
        })
    }

    /// Every backend connection with its token.
    pub fn backends(&self) -> impl Iterator<Item = (usize, &BackendConn)> {
        self.slab.iter().filter_map(|(t, e)| match &e.conn {
            Conn::Backend(b) => Some((t, b)),
            _ => None,
        })
    }

    /// The tokens of the connections `keep` selects.
    pub fn tokens(&self, keep: impl Fn(&Conn) -> bool) -> Vec<usize> {
        self.slab
            .iter()
            .filter(|(_, e)| keep(&e.conn))
            .map(|(t, _)| t)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::HttpConn;

    fn http() -> Conn {
        // Any connected socket will do: the slab never touches it.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        Conn::Http(HttpConn::new(Stream::Plain(mio::net::TcpStream::from_std(
            s,
        ))))
    }

    #[test]
    fn a_reference_to_a_replaced_entry_is_stale() {
        let mut conns = Conns::with_capacity(4);
        let first = conns.insert(http());
        assert!(conns.is_live(first) && conns.live_http(first).is_some());
        assert!(
            conns.live_client(first).is_none(),
            "typed getters check the kind"
        );
        assert!(conns.remove(first.token).is_some());
        let second = conns.insert(http());
        assert_eq!(second.token, first.token, "the slab reuses the key");
        assert!(!conns.is_live(first) && conns.live_http(first).is_none());
        assert!(conns.live_http_mut(second).is_some());
        assert_eq!(conns.at(second.token), Some(second));
        assert!(conns.remove(first.token).is_some() && conns.remove(first.token).is_none());
    }
}
