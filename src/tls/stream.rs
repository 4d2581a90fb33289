//! `Stream`: a connection's socket, plain or TLS. rustls is sans-I/O: this file drives it from
//! the loop's non-blocking reads and writes, so TLS connections look like plain ones to the rest
//! of the proxy (`Read`/`Write` with `WouldBlock`).
//!
//! ```text
//!  read:  socket ─read_tls─▶ rustls ─process_new_packets─▶ plaintext ─reader─▶ caller's buffer
//!                                  └─ handshake replies, alerts ─write_tls─▶ socket
//!  write: caller's buffers ─writer (encrypts)─▶ records ─write_tls (vectored)─▶ socket
//! ```
//!
//! Invariants: a TLS read returns short only when the socket would block, the peer has closed
//! (`saw_eof`: a TCP EOF or a close_notify), or it has decrypted its byte budget (then
//! `TlsEvents::more` asks the loop to come back), so the loop's short-read shortcut stays right
//! for edge-triggered readiness and one peer cannot hold the loop with records that carry no
//! plaintext; a write first pushes out the records of earlier writes and takes no new bytes
//! while any are left (the socket's backpressure reaches the caller as `WouldBlock`), so at
//! most one write's records (`wants_write`) wait for WRITABLE; nothing is written before the
//! handshake completes (the writer is told `WouldBlock` and woken by the read that ends it,
//! `TlsEvents::writable_again`), so requests a failed handshake never carried are still unsent.
//! Plain streams pay one branch per call.

use crate::net::{self, OutQueue, ReadOutcome, Socket};
use bytes::BytesMut;
use mio::event::Source;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::Connection;
use std::io::{self, IoSlice, Read, Write};

/// A connection's socket.
#[derive(Debug)]
pub enum Stream {
    /// Plaintext.
    Plain(TcpStream),
    /// TLS, driven by rustls.
    Tls(Box<TlsStream>),
}

/// What a TLS stream's reads did beyond returning bytes (`Stream::take_events`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TlsEvents {
    /// The handshake completed.
    pub handshake_done: bool,
    /// A write was refused while the handshake ran: the writer may write again.
    pub writable_again: bool,
    /// A read stopped at its byte budget: the socket may still hold data.
    pub more: bool,
}

/// A TLS connection over a non-blocking socket.
#[derive(Debug)]
pub struct TlsStream {
    tcp: TcpStream,
    conn: Connection,
    /// The peer closed the socket (a read returned 0) or sent close_notify.
    eof: bool,
    /// Plaintext has arrived: later failures are not the handshake's.
    established: bool,
    /// Why the handshake failed, if it did (`super::Failure`).
    failure: Option<super::Failure>,
    events: TlsEvents,
    /// A write was refused during the handshake.
    write_refused: bool,
}

impl Stream {
    /// A TLS stream over `tcp`, the handshake not yet begun.
    pub fn tls(tcp: TcpStream, conn: impl Into<Connection>) -> Stream {
        Stream::Tls(Box::new(TlsStream {
            tcp,
            conn: conn.into(),
            eof: false,
            established: false,
            failure: None,
            events: TlsEvents::default(),
            write_refused: false,
        }))
    }

    /// The socket under it.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &t.tcp,
        }
    }

    fn tcp_mut(&mut self) -> &mut TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &mut t.tcp,
        }
    }

    /// True for a TLS stream.
    #[inline]
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// True while a TLS handshake has not completed.
    pub fn handshaking(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(t) => t.conn.is_handshaking() && t.failure.is_none(),
        }
    }

    /// Encrypted bytes wait for the socket to take them.
    #[inline]
    pub fn wants_write(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(t) => t.conn.wants_write(),
        }
    }

    /// Why the handshake failed, once it has.
    pub fn failure(&self) -> Option<super::Failure> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(t) => t.failure,
        }
    }

    /// The peer's certificate chain (a TLS stream past its handshake).
    pub fn peer_certificates(&self) -> Option<&[rustls::pki_types::CertificateDer<'static>]> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(t) => t.conn.peer_certificates(),
        }
    }

    /// Writes the encrypted bytes waiting, until none are left (`Ok(true)`) or the socket
    /// would block (`Ok(false)`). Plain streams have none.
    #[inline]
    pub fn flush_tls(&mut self) -> io::Result<bool> {
        match self {
            Stream::Plain(_) => Ok(true),
            Stream::Tls(t) => t.flush_records(),
        }
    }

    /// `net::read_into` on the socket of its kind.
    #[inline]
    pub fn read_into(
        &mut self,
        rbuf: &mut BytesMut,
        scratch: &mut [u8],
        hup: bool,
    ) -> io::Result<ReadOutcome> {
        match self {
            Stream::Plain(s) => net::read_into(s, rbuf, scratch, hup),
            Stream::Tls(t) => net::read_into(&mut **t, rbuf, scratch, hup),
        }
    }

    /// `OutQueue::flush` on the socket of its kind.
    #[inline]
    pub fn flush_queue(&mut self, out: &mut OutQueue) -> io::Result<bool> {
        match self {
            Stream::Plain(s) => out.flush(s),
            Stream::Tls(t) => out.flush(&mut **t),
        }
    }

    /// `net::write_queue` on the socket of its kind.
    #[inline]
    pub fn write_queue<'a, I>(&mut self, bufs: impl FnMut() -> I) -> io::Result<usize>
    where
        I: Iterator<Item = &'a [u8]>,
    {
        match self {
            Stream::Plain(s) => net::write_queue(s, bufs),
            Stream::Tls(t) => net::write_queue(&mut **t, bufs),
        }
    }

    /// Queues a TLS close_notify and tries once to send it (a clean close; nothing waits).
    pub fn close_notify(&mut self) {
        if let Stream::Tls(t) = self {
            if !t.conn.is_handshaking() && t.failure.is_none() {
                t.conn.send_close_notify();
                let _ = t.conn.write_tls(&mut t.tcp);
            }
        }
    }
}

impl TlsStream {
    /// A failure now is the handshake's: while it runs, and on a connection to a backend until
    /// the first plaintext (a TLS 1.3 server refuses a client certificate after the client has
    /// finished its side).
    fn handshake_may_fail(&self) -> bool {
        let to_backend = matches!(self.conn, Connection::Client(_));
        self.conn.is_handshaking() || (to_backend && !self.established)
    }

    fn flush_records(&mut self) -> io::Result<bool> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.tcp) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Reads plaintext into `out` until it is full, the socket would block, the peer closed, or
    /// the byte budget is spent.
    fn read_plain(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let result = self.read_records(out);
        if let Err(e) = result.as_ref() {
            let fatal = e.kind() != io::ErrorKind::WouldBlock;
            if fatal && self.handshake_may_fail() {
                self.failure.get_or_insert(super::Failure::of_io(e));
            }
        }
        result
    }

    fn read_records(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        // Records may carry no plaintext at all: past this many bytes of them, come back later.
        let budget = 4 * out.len().max(16 * 1024);
        let mut read = 0;
        // Bounded: each pass fills `out`, returns, or reads more of the socket (which ends in
        // WouldBlock, EOF or the budget).
        loop {
            match self.conn.reader().read(&mut out[filled..]) {
                Ok(0) if filled < out.len() => {
                    // close_notify: nothing more will come.
                    self.eof = true;
                    return Ok(filled);
                }
                Ok(0) => return Ok(filled),
                Ok(n) => {
                    self.established = true;
                    filled += n;
                    if filled == out.len() {
                        return Ok(filled);
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // Closed without close_notify: Redis clients do, and so is any EOF.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(filled),
                Err(e) => return Err(e),
            }
            if self.eof {
                return Ok(filled);
            }
            if read >= budget {
                self.events.more = true;
                return if filled > 0 {
                    Ok(filled)
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                };
            }
            match self.conn.read_tls(&mut self.tcp) {
                Ok(0) => {
                    self.eof = true;
                    if self.conn.is_handshaking() && self.failure.is_none() {
                        self.failure = Some(super::Failure::Eof);
                    }
                }
                Ok(n) => read += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return if filled > 0 { Ok(filled) } else { Err(e) };
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let handshaking = self.conn.is_handshaking();
            if let Err(e) = self.conn.process_new_packets() {
                // Send the alert rustls queued, once; the connection is done.
                let _ = self.conn.write_tls(&mut self.tcp);
                if handshaking || self.handshake_may_fail() {
                    self.failure.get_or_insert(super::Failure::of(&e));
                }
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            if handshaking && !self.conn.is_handshaking() {
                self.events.handshake_done = true;
                self.events.writable_again |= std::mem::take(&mut self.write_refused);
            }
            // Handshake messages, key updates: out now, or on WRITABLE.
            self.flush_records()?;
        }
    }

    fn write_plain(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if !self.flush_records()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        if self.conn.is_handshaking() {
            // Kept by the writer until the handshake is done (see the module comment).
            self.write_refused = true;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.conn.writer().write_vectored(bufs)?;
        self.flush_records()?;
        Ok(n)
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_plain(buf)
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_plain(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.write_plain(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_records().map(|_| ())
    }
}

impl Socket for TlsStream {
    fn saw_eof(&self) -> bool {
        self.eof
    }

    fn flush_pending(&mut self) -> io::Result<bool> {
        self.flush_records()
    }

    fn take_events(&mut self) -> TlsEvents {
        std::mem::take(&mut self.events)
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_tls().map(|_| ())
    }
}

impl Source for Stream {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.tcp_mut().register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.tcp_mut().reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        self.tcp_mut().deregister(registry)
    }
}
