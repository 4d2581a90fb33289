//! Socket helpers shared by every connection kind: draining reads through the loop's scratch
//! buffer, vectored writes of queued `Bytes`, and the non-blocking connect check.

use crate::tls::TlsEvents;
use bytes::{Buf, Bytes, BytesMut};
use mio::net::TcpStream;
use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};

/// Size of the loop's scratch read buffer.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Smallest growth of a connection's read buffer.
const RESERVE_CHUNK_BYTES: usize = 16 * 1024;
/// Reads per readiness event before other connections get a turn.
pub const READS_PER_EVENT: usize = 16;
/// Buffers handed to one `write_vectored` call.
const IOV_PER_WRITE: usize = 64;

/// A socket the loop reads and writes: a plain TCP stream, or a TLS one (`tls::stream`). The
/// functions below are generic over it, so that a plain socket runs exactly the plaintext code
/// (`tls::Stream` picks the kind once per call, not once per system call).
pub trait Socket: Read + Write {
    /// A read has seen the peer close while it still returned bytes.
    #[inline]
    fn saw_eof(&self) -> bool {
        false
    }

    /// Writes bytes waiting below the caller's buffers (TLS records): `Ok(true)` when none are
    /// left.
    #[inline]
    fn flush_pending(&mut self) -> io::Result<bool> {
        Ok(true)
    }

    /// What the reads since the last call did beyond returning bytes.
    #[inline]
    fn take_events(&mut self) -> TlsEvents {
        TlsEvents::default()
    }
}

impl Socket for TcpStream {}

/// What draining a socket found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadOutcome {
    /// Bytes appended to the read buffer.
    pub bytes: usize,
    /// The peer closed its side.
    pub eof: bool,
    /// The read cap was hit before `WouldBlock`: the socket may still be readable.
    pub more: bool,
    /// What TLS did on the way (a handshake completed, a refused write may go again).
    pub tls: TlsEvents,
}

/// Reads `stream` until `WouldBlock`, EOF or the per-event cap, appending to `rbuf`. Unless
/// `hup` (the event said the peer closed), a short read ends the drain: the kernel gave all it
/// had, and new data raises a new edge.
pub fn read_into<S: Socket>(
    stream: &mut S,
    rbuf: &mut BytesMut,
    scratch: &mut [u8],
    hup: bool,
) -> io::Result<ReadOutcome> {
    let mut out = ReadOutcome::default();
    let result = drain(stream, rbuf, scratch, hup, &mut out);
    out.tls = stream.take_events();
    out.more |= out.tls.more;
    result.map(|()| out)
}

#[inline]
fn drain<S: Socket>(
    stream: &mut S,
    rbuf: &mut BytesMut,
    scratch: &mut [u8],
    hup: bool,
    out: &mut ReadOutcome,
) -> io::Result<()> {
    for _ in 0..READS_PER_EVENT {
        match stream.read(scratch) {
            Ok(0) => {
                out.eof = true;
                return Ok(());
            }
            Ok(n) => {
                if rbuf.capacity() - rbuf.len() < n {
                    // Reserve in chunks: replies and requests split off the buffer keep its
                    // old allocation alive, so exact growth would allocate on every read.
                    // A connection's first small read gets a small buffer: idle clients
                    // (the common case at 10,000 connections) then cost about 1 KB each.
                    let chunk = if rbuf.capacity() == 0 && n <= 512 {
                        1024
                    } else {
                        RESERVE_CHUNK_BYTES
                    };
                    rbuf.reserve(n.max(chunk));
                }
                rbuf.extend_from_slice(&scratch[..n]);
                out.bytes += n;
                if n < scratch.len() && !hup && !stream.saw_eof() {
                    // A short read almost always means the socket is drained; the next
                    // edge will tell us otherwise. Saves one EAGAIN read per event.
                    return Ok(());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    out.more = true;
    Ok(())
}

/// Writes as much of `queue` as the socket takes, starting `offset` bytes into its front, with
/// one vectored write per call of the kernel. Returns the bytes written and whether the socket
/// would block (the rest waits for WRITABLE).
#[inline]
pub fn write_queue<'a, S: Socket, I>(
    stream: &mut S,
    mut bufs: impl FnMut() -> I,
) -> io::Result<usize>
where
    I: Iterator<Item = &'a [u8]>,
{
    // Small arrays for the common short queues: initialising 64 slices costs more than the
    // bookkeeping of a P1 request.
    let mut it = bufs();
    let Some(first) = it.next() else {
        return Ok(0);
    };
    let Some(second) = it.next() else {
        return retry(|| stream.write(first));
    };
    let mut few = [IoSlice::new(&[]); 8];
    few[0] = IoSlice::new(first);
    few[1] = IoSlice::new(second);
    let mut n = 2;
    for b in it.by_ref().take(6) {
        few[n] = IoSlice::new(b);
        n += 1;
    }
    if n < 8 {
        return retry(|| stream.write_vectored(&few[..n]));
    }
    let mut many = [IoSlice::new(&[]); IOV_PER_WRITE];
    many[..8].copy_from_slice(&few);
    for b in it.take(IOV_PER_WRITE - 8) {
        many[n] = IoSlice::new(b);
        n += 1;
    }
    retry(|| stream.write_vectored(&many[..n]))
}

fn retry(mut op: impl FnMut() -> io::Result<usize>) -> io::Result<usize> {
    loop {
        match op() {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// A FIFO of byte buffers being written out, with the offset into its front.
#[derive(Debug, Default)]
pub struct OutQueue {
    bufs: VecDeque<Bytes>,
    bytes: usize,
}

impl OutQueue {
    /// Appends a buffer.
    pub fn push(&mut self, b: Bytes) {
        self.bytes += b.len();
        self.bufs.push_back(b);
    }

    /// Queued bytes not yet written.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.bufs.is_empty()
    }

    /// Releases the memory of an empty queue.
    pub fn shrink(&mut self) {
        self.bufs.shrink_to_fit();
    }

    /// Drops everything queued.
    pub fn clear(&mut self) {
        self.bufs.clear();
        self.bytes = 0;
    }

    /// Everything queued, as one buffer (tests).
    pub fn concat(&self) -> Vec<u8> {
        self.bufs.iter().flat_map(|b| b.iter().copied()).collect()
    }

    /// Writes until empty or `WouldBlock`. Returns `Ok(true)` when everything was written
    /// (TLS records included).
    pub fn flush<S: Socket>(&mut self, stream: &mut S) -> io::Result<bool> {
        if self.bufs.len() == 1 {
            // The common case (one reply, or one run's replies): a plain write.
            let n = match retry(|| stream.write(&self.bufs[0])) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            };
            self.consume(n);
        }
        while !self.bufs.is_empty() {
            let n = match write_queue(stream, || self.bufs.iter().map(|b| &b[..])) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.consume(n);
        }
        stream.flush_pending()
    }

    fn consume(&mut self, mut n: usize) {
        self.bytes -= n;
        while n > 0 {
            let Some(front) = self.bufs.front_mut() else {
                return;
            };
            if n >= front.len() {
                n -= front.len();
                self.bufs.pop_front();
            } else {
                front.advance(n);
                return;
            }
        }
    }
}

/// How many clients one loop may accept: `requested` (0: as many as the open-file limit
/// allows), after raising the process's soft limit on open files toward its hard limit as far
/// as needed, less `reserve` descriptors kept for backend connections, probes and listeners,
/// shared by `loops` loops. Like Redis, a request the limit cannot meet is lowered (the second
/// value says so).
pub fn client_capacity(requested: usize, reserve: usize, loops: usize) -> (usize, bool) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    let hard = lim.maximum.unwrap_or(u64::MAX);
    let loops = loops.max(1) as u64;
    let needed = match requested {
        0 => hard,
        n => (n as u64 + reserve as u64).saturating_mul(loops),
    };
    let soft = lim.current.unwrap_or(u64::MAX);
    if needed > soft {
        let raised = Rlimit {
            current: Some(needed.min(hard)),
            maximum: lim.maximum,
        };
        let _ = setrlimit(Resource::Nofile, raised);
    }
    let limit = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    let fit = usize::try_from(limit / loops)
        .unwrap_or(usize::MAX)
        .saturating_sub(reserve)
        .max(1);
    match requested {
        0 => (fit, false),
        n if n > fit => (fit, true),
        n => (n, false),
    }
}

/// After WRITABLE on a connecting socket: `Ok(true)` once connected, `Ok(false)` if still
/// connecting (a spurious event), `Err` if the connect failed.
pub fn connect_finished(stream: &mut crate::tls::Stream) -> io::Result<bool> {
    if !tcp_connected(stream.tcp())? {
        return Ok(false);
    }
    // A TLS client speaks first: its ClientHello goes out now (the rest on WRITABLE).
    stream.flush_tls()?;
    Ok(true)
}

fn tcp_connected(stream: &TcpStream) -> io::Result<bool> {
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    match stream.peer_addr() {
        Ok(_) => {
            let _ = stream.set_nodelay(true);
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_capacity_follows_the_open_file_limit() {
        let (auto, lowered) = client_capacity(0, 100, 1);
        assert!(auto >= 1 && !lowered);
        assert_eq!(client_capacity(10, 100, 1), (10, false));
        let (huge, lowered) = client_capacity(usize::MAX / 4, 100, 1);
        assert!(lowered && huge <= auto, "{huge} {auto}");
        let (half, _) = client_capacity(0, 100, 2);
        assert!(half <= auto / 2 + 100);
    }
}
