//! Where a request's keys are: the key specs of Redis 7 (generated from the command
//! specifications into `command_table.rs`), walked the way Redis's `getKeysUsingKeySpecs` walks
//! them. Routing by key (behind twemproxy or Codis, `keymap/`) places a request by these keys.
//!
//! ```text
//!  spec: begin_search ─▶ first key      find_keys ─▶ last key, step
//!        Index(pos)     pos             Range { last ≥ 0 }      first + last
//!        Keyword(w, from) after w       Range { last < 0 }      argc + last (or a share: limit)
//!                                       Keynum { index, .. }    first + numkeys - 1
//! ```
//!
//! A spec Redis marks unknown is walked by hand where Redis has a `getkeys_proc` for it: only
//! `SORT ... STORE key` matters here (`BY`/`GET` patterns name keys by content, which no one
//! can place).

/// Where a key spec's search for its first key starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Begin {
    /// At this argument.
    Index(i16),
    /// After this keyword, searched from argument `from` (negative: from the end, backwards).
    Keyword(&'static str, i16),
    /// Only the command itself knows.
    Unknown,
}

/// How a key spec's keys run from its first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Find {
    /// To `first + last` (`last ≥ 0`), else to `argc + last`, or with `limit`, over
    /// `1 / limit` of the arguments left (XREAD's keys are the first half after STREAMS).
    Range { last: i16, step: u8, limit: u8 },
    /// `numkeys` at argument `first + index`, keys from `first + first`.
    Keynum { index: u8, first: u8, step: u8 },
    /// Only the command itself knows.
    Unknown,
}

/// One key spec of a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeySpec {
    pub begin: Begin,
    pub find: Find,
}

/// The positions of the keys in `args` (the command name is `args[0]`) under `specs`, in spec
/// order; `name` is the command's (for the few walked by hand). Positions past the arguments
/// are skipped, as Redis skips them for commands of variable arity (the command then reports
/// its own syntax error).
pub fn positions(name: &str, specs: &[KeySpec], args: &[&[u8]]) -> Vec<usize> {
    let argc = args.len() as isize;
    let mut keys = Vec::new();
    for spec in specs {
        let Some(first) = first_of(spec.begin, args) else {
            continue;
        };
        let (first, last, step) = match spec.find {
            Find::Range { last, step, limit } => {
                let last = isize::from(last);
                let end = if last >= 0 {
                    first + last
                } else if limit == 0 {
                    argc + last
                } else {
                    first + ((argc - first) / isize::from(limit) + last)
                };
                (first, end, isize::from(step))
            }
            Find::Keynum {
                index,
                first: from,
                step,
            } => {
                let at = usize::try_from(first + isize::from(index)).ok();
                let Some(n) = at
                    .and_then(|i| args.get(i))
                    .and_then(|a| crate::resp::parse_i64(a))
                else {
                    continue;
                };
                if n < 0 {
                    continue;
                }
                let first = first + isize::from(from);
                (first, first + n as isize - 1, isize::from(step))
            }
            Find::Unknown => continue,
        };
        let mut i = first;
        while i <= last && step > 0 {
            if i >= 1 && i < argc {
                keys.push(i as usize);
            }
            i += step;
        }
    }
    if name == "SORT" {
        keys.extend(sort_store(args));
    }
    keys
}

/// The argument the key search of `begin` starts at, if there is one.
fn first_of(begin: Begin, args: &[&[u8]]) -> Option<isize> {
    let argc = args.len() as isize;
    match begin {
        Begin::Index(pos) => Some(isize::from(pos)),
        Begin::Keyword(word, from) => {
            let from = isize::from(from);
            let (start, end, dir) = if from > 0 {
                (from, argc - 1, 1)
            } else {
                (argc + from, 0, -1)
            };
            let mut i = start;
            while i >= 1 && i < argc {
                if args[i as usize].eq_ignore_ascii_case(word.as_bytes()) {
                    return Some(i + 1);
                }
                if i == end {
                    break;
                }
                i += dir;
            }
            None
        }
        Begin::Unknown => None,
    }
}

/// `SORT key ... STORE dest`: the destination, found as Redis's `sortGetKeys` finds it
/// (skipping `LIMIT`'s two arguments and `BY`'s and `GET`'s one; the last `STORE` wins).
fn sort_store(args: &[&[u8]]) -> Option<usize> {
    let mut store = None;
    let mut i = 2;
    while i < args.len() {
        let skip = match args[i].to_ascii_uppercase().as_slice() {
            b"LIMIT" => 2,
            b"GET" | b"BY" => 1,
            b"STORE" => {
                store = Some(i + 1).filter(|&k| k < args.len());
                1
            }
            _ => 0,
        };
        i += skip + 1;
    }
    store
}

#[cfg(test)]
mod tests {
    use crate::command::CommandTable;

    fn keys(line: &str) -> Vec<String> {
        let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        let spec = CommandTable::spec_of(&args).expect("a known command");
        super::positions(spec.name, spec.keys, &args)
            .into_iter()
            .map(|i| line.split(' ').nth(i).unwrap_or_default().to_string())
            .collect()
    }

    #[test]
    fn keys_are_found_as_redis_finds_them() {
        assert_eq!(keys("GET k"), ["k"]);
        assert_eq!(keys("MSET a 1 b 2"), ["a", "b"]);
        assert_eq!(keys("DEL a b c"), ["a", "b", "c"]);
        assert_eq!(keys("EVAL s 2 a b x"), ["a", "b"]);
        assert_eq!(keys("EVAL s 0 x"), Vec::<String>::new());
        assert_eq!(keys("FCALL f 1 a x"), ["a"]);
        assert_eq!(keys("XREAD COUNT 2 STREAMS a b 0 0"), ["a", "b"]);
        assert_eq!(keys("XREADGROUP GROUP g c STREAMS s >"), ["s"]);
        assert_eq!(keys("ZUNIONSTORE d 2 a b WEIGHTS 1 2"), ["d", "a", "b"]);
        assert_eq!(keys("BLMPOP 0 2 a b LEFT"), ["a", "b"]);
        assert_eq!(keys("BLPOP a b 0"), ["a", "b"]);
        assert_eq!(keys("SORT k LIMIT 0 1 GET # STORE d"), ["k", "d"]);
        assert_eq!(keys("SORT k BY store"), ["k"]);
        assert_eq!(keys("GEORADIUS g 1 2 3 km STORE d"), ["g", "d"]);
        assert_eq!(keys("OBJECT ENCODING k"), ["k"]);
        assert_eq!(keys("RENAME a b"), ["a", "b"]);
        assert_eq!(keys("PING"), Vec::<String>::new());
    }
}
