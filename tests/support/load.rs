//! A load generator: `Load` runs raw clients in threads, each sending `SET <prefix><client>:<n>
//! v` one request at a time until stopped (a million at the most), and `LoadReport` holds every
//! request's outcome (ok or not, when it ended, how long it took) for the test to judge; and
//! `watched_increments`, writers racing WATCH/MULTI/EXEC on one counter; and
//! `others_are_unharmed`, pipelining writers that must see no error while a test offends; and
//! `assert_blpop_woken_by_lpush`.

use super::proxy::RawClient;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The most requests one client sends.
const MAX_REQUESTS: u64 = 1_000_000;

/// One request: the `n`th of `client`, answered `+OK` or not, ended `at`, after `took`.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    pub client: usize,
    pub n: u64,
    pub ok: bool,
    pub at: Instant,
    pub took: Duration,
}

/// Clients writing to respite in threads until `stop`.
pub struct Load {
    prefix: String,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Vec<Outcome>>>,
}

impl Load {
    /// Starts `clients` clients of `addr`, each writing its own keys `<prefix><client>:<n>`.
    pub fn start(addr: SocketAddr, clients: usize, prefix: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..clients)
            .map(|client| {
                let (stop, prefix) = (stop.clone(), prefix.to_string());
                std::thread::spawn(move || {
                    let mut raw = RawClient::connect(addr);
                    let mut log = Vec::new();
                    for n in 0..MAX_REQUESTS {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let start = Instant::now();
                        let key = format!("{prefix}{client}:{n}");
                        let ok = raw.cmd(&[b"SET", key.as_bytes(), b"v"]) == b"+OK\r\n";
                        log.push(Outcome {
                            client,
                            n,
                            ok,
                            at: Instant::now(),
                            took: start.elapsed(),
                        });
                    }
                    log
                })
            })
            .collect();
        Load {
            prefix: prefix.to_string(),
            stop,
            threads,
        }
    }

    /// Stops the clients and collects what they saw (a client that panicked fails the test).
    pub fn stop(mut self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        let outcomes = self
            .threads
            .drain(..)
            .flat_map(|t| t.join().expect("load thread"))
            .collect();
        LoadReport {
            prefix: std::mem::take(&mut self.prefix),
            outcomes,
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Every request a `Load` sent.
pub struct LoadReport {
    prefix: String,
    pub outcomes: Vec<Outcome>,
}

impl LoadReport {
    /// The longest any request took.
    pub fn slowest(&self) -> Duration {
        self.outcomes
            .iter()
            .map(|o| o.took)
            .max()
            .unwrap_or_default()
    }

    /// How many failed.
    pub fn errors(&self) -> usize {
        self.outcomes.iter().filter(|o| !o.ok).count()
    }

    /// How many failed after `t`.
    pub fn errors_after(&self, t: Instant) -> usize {
        self.outcomes.iter().filter(|o| !o.ok && o.at > t).count()
    }

    /// How many succeeded after `t`.
    pub fn oks_after(&self, t: Instant) -> usize {
        self.outcomes.iter().filter(|o| o.ok && o.at > t).count()
    }

    /// From the first failure to the last (zero if none failed).
    pub fn error_window(&self) -> Duration {
        let failed = || self.outcomes.iter().filter(|o| !o.ok).map(|o| o.at);
        failed()
            .min()
            .zip(failed().max())
            .map_or(Duration::ZERO, |(first, last)| last - first)
    }

    /// How long after `t` the last failure ended, if any failed.
    pub fn last_error_since(&self, t: Instant) -> Option<Duration> {
        self.outcomes
            .iter()
            .filter(|o| !o.ok)
            .map(|o| o.at.saturating_duration_since(t))
            .max()
    }

    /// The keys of the writes that were acknowledged.
    pub fn acked_keys(&self) -> Vec<String> {
        self.outcomes
            .iter()
            .filter(|o| o.ok)
            .map(|o| format!("{}{}:{}", self.prefix, o.client, o.n))
            .collect()
    }
}

/// `writers` clients of `proxy` each add one to `key` `each` times with WATCH, GET and
/// MULTI/SET/EXEC, retrying when EXEC is aborted (at most 10 tries per increment on average);
/// returns the increments that committed.
pub fn watched_increments(
    proxy: &super::TestProxy,
    key: &str,
    writers: usize,
    each: usize,
) -> usize {
    let threads: Vec<_> = (0..writers)
        .map(|_| {
            let (mut c, key) = (proxy.client(), key.to_string());
            std::thread::spawn(move || {
                let mut done = 0;
                for _ in 0..each * 10 {
                    if done == each {
                        break;
                    }
                    let () = redis::cmd("WATCH").arg(&key).query(&mut c).expect("WATCH");
                    let v: Option<i64> = redis::cmd("GET").arg(&key).query(&mut c).expect("GET");
                    let r: Option<Vec<String>> = redis::pipe()
                        .atomic()
                        .cmd("SET")
                        .arg(&key)
                        .arg(v.unwrap_or(0) + 1)
                        .query(&mut c)
                        .expect("MULTI/EXEC");
                    done += usize::from(r.is_some());
                }
                done
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().expect("writer")).sum()
}

/// Four clients pipelining SETs (20 at a time) until `stop`; the replies that were not `+OK`.
fn pipelined_writers(
    proxy: &super::TestProxy,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Vec<String>>> {
    (0..4)
        .map(|client| {
            let mut raw = proxy.raw();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut bad = Vec::new();
                for round in 0..2_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let mut batch = Vec::new();
                    for i in 0..20 {
                        let key = format!("w{client}:{round}:{i}");
                        batch.extend_from_slice(&respite::resp::encode_request(&[
                            &b"SET"[..],
                            key.as_bytes(),
                            b"v",
                        ]));
                    }
                    raw.send(&batch);
                    for _ in 0..20 {
                        let reply = raw.reply();
                        if reply != b"+OK\r\n" {
                            bad.push(String::from_utf8_lossy(&reply).into_owned());
                        }
                    }
                }
                bad
            })
        })
        .collect()
}

/// Runs four pipelining writers while `offend` runs, then checks no writer saw an error.
pub fn others_are_unharmed(proxy: &super::TestProxy, offend: impl FnOnce()) {
    let stop = Arc::new(AtomicBool::new(false));
    let writers = pipelined_writers(proxy, stop.clone());
    std::thread::sleep(Duration::from_millis(200));
    offend();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let bad = w.join().expect("writer");
        assert!(
            bad.is_empty(),
            "{} failed, first: {:?}",
            bad.len(),
            bad.first()
        );
    }
}

/// A client of `proxy` blocked in `BLPOP key 5` is woken by an `LPUSH key value` from another
/// client 300 ms later, and gets it.
pub fn assert_blpop_woken_by_lpush(proxy: &super::TestProxy, key: &str, value: &str) {
    let mut blocked = proxy.client();
    let k = key.to_string();
    let waiter = std::thread::spawn(move || {
        redis::cmd("BLPOP")
            .arg(&k)
            .arg(5)
            .query::<Option<(String, String)>>(&mut blocked)
            .expect("BLPOP")
    });
    std::thread::sleep(Duration::from_millis(300));
    let _: i64 = redis::cmd("LPUSH")
        .arg(key)
        .arg(value)
        .query(&mut proxy.client())
        .expect("LPUSH");
    let got = waiter.join().expect("waiter");
    assert_eq!(got, Some((key.to_string(), value.to_string())));
}
