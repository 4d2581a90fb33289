//! `Request`: one client request on its way through dispatch — its bytes, its command, when it
//! arrived, and where each argument lies in the bytes, found once when it is formed.
//!
//! ```text
//!  *3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n      args: [(8,3) "SET", (17,1) "k", (24,1) "v"]
//!  └──────────────── bytes (a slice of the client's read buffer, forwarded unchanged) ───────┘
//! ```
//!
//! Everything downstream (routing by a subcommand or a flag such as `BLOCK`, local answers,
//! fan-out plans, the RESP3 shape of the reply, the keys) reads the arguments from here; nothing
//! parses the frame again. Up to `INLINE_ARGS` offsets live in the value itself, so a request
//! costs no allocation of its own. Runs of plain requests never become a `Request`: they are
//! forwarded as one slice without looking past their command names.

use crate::command::{CommandId, CommandTable, Spec};
use crate::command_table::COMMANDS;
use crate::keys::{Begin, Find, KeySpec};
use crate::resp::parse_i64;
use bytes::Bytes;
use memchr::memchr;

/// Arguments whose offsets are kept without allocating.
const INLINE_ARGS: usize = 6;

/// Where each argument lies: `(start, len)` within the request's bytes.
#[derive(Debug, Clone)]
enum Offsets {
    Inline {
        n: u8,
        at: [(u32, u32); INLINE_ARGS],
    },
    Heap(Vec<(u32, u32)>),
}

/// One complete request, indexed.
#[derive(Debug, Clone)]
pub struct Request {
    /// The frame as it arrived (re-encoded as a multibulk for an inline command).
    pub bytes: Bytes,
    /// Its command, when the table knows the name.
    pub cmd: Option<CommandId>,
    /// When it arrived (loop clock, µs).
    pub start: u64,
    offsets: Offsets,
}

impl Request {
    /// Indexes the arguments of `bytes`, a complete multibulk frame the request scanner
    /// accepted (a frame it did not accept yields the arguments up to where it stops making
    /// sense, never a panic).
    pub fn new(bytes: Bytes, cmd: Option<CommandId>, start: u64) -> Request {
        let mut offsets = Offsets::Inline {
            n: 0,
            at: [(0, 0); INLINE_ARGS],
        };
        for (at, len) in ArgWalk::new(&bytes) {
            let arg = (at as u32, len as u32);
            match &mut offsets {
                Offsets::Inline { n, at } if (*n as usize) < INLINE_ARGS => {
                    at[*n as usize] = arg;
                    *n += 1;
                }
                Offsets::Inline { at, .. } => {
                    let mut all = at.to_vec();
                    all.push(arg);
                    offsets = Offsets::Heap(all);
                }
                Offsets::Heap(all) => all.push(arg),
            }
        }
        Request {
            bytes,
            cmd,
            start,
            offsets,
        }
    }

    fn offsets(&self) -> &[(u32, u32)] {
        match &self.offsets {
            Offsets::Inline { n, at } => &at[..*n as usize],
            Offsets::Heap(all) => all,
        }
    }

    /// How many arguments it has, the command name included.
    pub fn argc(&self) -> usize {
        self.offsets().len()
    }

    /// Argument `i` (0 is the command name).
    pub fn arg(&self, i: usize) -> Option<&[u8]> {
        let &(at, len) = self.offsets().get(i)?;
        self.bytes.get(at as usize..(at + len) as usize)
    }

    /// Every argument, in order.
    pub fn args(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.offsets()
            .iter()
            .map(|&(at, len)| &self.bytes[at as usize..(at + len) as usize])
    }

    /// Every argument, collected (for commands answered or planned here, off the hot path).
    pub fn arg_list(&self) -> Vec<&[u8]> {
        self.args().collect()
    }

    /// True if an argument after the name is `word`, in any case (`BLOCK`, `WITHSCORES`).
    pub fn has_word(&self, word: &[u8]) -> bool {
        self.args().skip(1).any(|a| a.eq_ignore_ascii_case(word))
    }

    /// True if argument `i` is `word`, in any case (a subcommand).
    pub fn arg_is(&self, i: usize, word: &[u8]) -> bool {
        self.arg(i).is_some_and(|a| a.eq_ignore_ascii_case(word))
    }

    /// What the command table says about its command.
    pub fn spec(&self) -> Option<&'static Spec> {
        COMMANDS.get(usize::from(self.cmd?))
    }

    /// Its keys, where the key specs of its command (or subcommand) put them (`keys.rs`).
    pub fn keys(&self) -> Vec<&[u8]> {
        let Some(spec) = self.spec() else {
            return Vec::new();
        };
        // The common case, one key right after the name (GET, SET, HSET...), without walking
        // the arguments.
        if let [KeySpec {
            begin: Begin::Index(1),
            find: Find::Range { last: 0, .. },
        }] = spec.keys
        {
            return self.arg(1).into_iter().collect();
        }
        let args = self.arg_list();
        // Only a container (OBJECT, XINFO, MEMORY...) has no key specs of its own.
        let sub = (spec.keys.is_empty())
            .then(|| {
                args.get(1)
                    .and_then(|a| CommandTable::subcommand(spec.name, a))
            })
            .flatten();
        let spec = sub.unwrap_or(spec);
        crate::keys::positions(spec.name, spec.keys, &args)
            .into_iter()
            .map(|i| args[i])
            .collect()
    }
}

/// Walks the argument headers of a multibulk frame: `(offset, length)` of each argument's body.
struct ArgWalk<'a> {
    buf: &'a [u8],
    at: usize,
    left: usize,
}

impl<'a> ArgWalk<'a> {
    fn new(buf: &'a [u8]) -> Self {
        let (left, at) = match line(buf, 0, b'*') {
            Some((n, next)) => (usize::try_from(n).unwrap_or(0), next),
            None => (0, buf.len()),
        };
        ArgWalk { buf, at, left }
    }
}

impl Iterator for ArgWalk<'_> {
    type Item = (usize, usize);

    fn next(&mut self) -> Option<(usize, usize)> {
        if self.left == 0 {
            return None;
        }
        let (len, body) = line(self.buf, self.at, b'$')?;
        let len = usize::try_from(len).ok()?;
        let end = body.checked_add(len)?;
        if end + 2 > self.buf.len() {
            self.left = 0;
            return None;
        }
        self.at = end + 2;
        self.left -= 1;
        Some((body, len))
    }
}

/// The number on the header line at `buf[at..]` that starts with `mark`, and where the line
/// after it starts.
fn line(buf: &[u8], at: usize, mark: u8) -> Option<(i64, usize)> {
    let rest = buf.get(at..)?;
    if rest.first() != Some(&mark) {
        return None;
    }
    let nl = memchr(b'\n', rest)?;
    let n = parse_i64(rest.get(1..nl.checked_sub(1)?)?)?;
    Some((n, at + nl + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::CommandTable;
    use crate::resp::encode_request;

    fn req(args: &[&[u8]]) -> Request {
        let t = CommandTable::new();
        let cmd = t.lookup(args[0]);
        Request::new(encode_request(args), cmd, 0)
    }

    #[test]
    fn indexes_every_argument_inline_and_on_the_heap() {
        let r = req(&[b"SET", b"k\r\n", b""]);
        assert_eq!(r.arg_list(), vec![&b"SET"[..], b"k\r\n", b""]);
        assert_eq!(
            (r.argc(), r.arg(1), r.arg(3)),
            (3, Some(&b"k\r\n"[..]), None)
        );
        let many: Vec<Vec<u8>> = (0..40).map(|i| format!("a{i}").into_bytes()).collect();
        let mut args: Vec<&[u8]> = vec![b"MGET"];
        args.extend(many.iter().map(|a| &a[..]));
        let r = req(&args);
        assert_eq!(r.arg_list(), args);
        assert!(matches!(r.offsets, Offsets::Heap(_)));
    }

    #[test]
    fn finds_words_subcommands_and_keys() {
        let r = req(&[
            b"XREAD", b"COUNT", b"1", b"block", b"0", b"STREAMS", b"s", b"0",
        ]);
        assert!(r.has_word(b"BLOCK") && !r.has_word(b"XREAD"));
        assert!(req(&[b"SCRIPT", b"load", b"x"]).arg_is(1, b"LOAD"));
        let keys = |args: &[&[u8]]| {
            req(args)
                .keys()
                .into_iter()
                .map(<[u8]>::to_vec)
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(&[b"GET", b"k"]), [b"k"]);
        assert_eq!(keys(&[b"MSET", b"a", b"1", b"b", b"2"]), [b"a", b"b"]);
        assert_eq!(keys(&[b"BLPOP", b"a", b"b", b"0"]), [b"a", b"b"]);
        assert!(keys(&[b"PING"]).is_empty());
        assert!(
            keys(&[b"GET"]).is_empty(),
            "a short request has no key to give"
        );
    }

    #[test]
    fn a_frame_cut_short_yields_what_it_holds() {
        let full = encode_request(&[&b"SET"[..], b"key", b"value"]);
        for end in 0..full.len() {
            let r = Request::new(full.slice(..end), None, 0);
            assert!(r.argc() <= 3);
            assert!(r.args().all(|a| full.windows(a.len()).any(|w| w == a)));
        }
    }
}
