//! Test harness, one concept per file: real `redis-server` and `nutcracker` processes on free
//! ports (`servers`), nutcracker over a pool config a test writes (`nutcracker_pool`), respite
//! on a listener bound to port 0 in a thread of the test and a raw client with read timeouts
//! (`proxy`), the respite binary as a child process (`process`), backends that are not Redis
//! (`fake_backend`), a real Codis (`codis`), a real Redis Cluster with resharding and failovers
//! (`cluster`), a load generator (`load`) and real applications'
//! driver scripts (`apps`). This file keeps the re-exports and the small helpers every part
//! uses: ports, bounded waits, a bulk string, clients.

// Each test binary uses a subset of the harness.
#![allow(dead_code)]

mod apps;
mod cluster;
mod codis;
mod fake_backend;
mod load;
mod nutcracker_pool;
mod process;
mod proxy;
mod servers;
mod tls;

#[allow(unused_imports)]
pub use apps::{
    assert_passed_directly, compare_runs, one_at_a_time, split_elapsed, App, AppRun, DRIVER_LIMIT,
};
#[allow(unused_imports)]
pub use cluster::Cluster;
#[allow(unused_imports)]
pub use codis::Codis;
#[allow(unused_imports)]
pub use fake_backend::{FakeBackend, RefusedPort, Reply};
#[allow(unused_imports)]
pub use load::{
    assert_blpop_woken_by_lpush, others_are_unharmed, watched_increments, Load, LoadReport, Outcome,
};
#[allow(unused_imports)]
pub use nutcracker_pool::NutcrackerPool;
#[allow(unused_imports)]
pub use process::{signal, RespiteProcess};
#[allow(unused_imports)]
pub use proxy::{config_for, config_over, patient, wait_for_roles, RawClient, TestProxy};
#[allow(unused_imports)]
pub use servers::{Fleet, Nutcracker, RedisServer};
#[allow(unused_imports)]
pub use tls::{
    cert_der, client_config, client_hello, info_number, ping_over_tls, tls_proxy, tls_stat,
    unix_now, Pki, TlsClient, TlsRedis, SERVER_CERT_DAYS,
};

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

/// A port that was free a moment ago (bound to 127.0.0.1:0, then released), for child processes
/// that must bind it themselves: each of them retries with another port when it was taken.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// Polls `f` every 20 ms until it returns true or `limit` passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// `v` as a RESP bulk string: `$<len>\r\n<v>\r\n`.
pub fn bulk(v: &[u8]) -> Vec<u8> {
    let mut b = format!("${}\r\n", v.len()).into_bytes();
    b.extend_from_slice(v);
    b.extend_from_slice(b"\r\n");
    b
}

/// A Lua loop on the server's clock that keeps it busy for `ARGV[1]` microseconds, then
/// answers `+OK`: what `DEBUG SLEEP` did before respite refused DEBUG.
pub const SLEEP_SCRIPT: &[u8] = b"local s=redis.call('TIME')repeat local n=redis.call('TIME')until(n[1]-s[1])*1e6+n[2]-s[2]>=ARGV[1]+0 return{ok='OK'}";

/// A request that keeps the server busy for `micros` and answers `+OK`.
pub fn sleep_request(micros: u64) -> Vec<u8> {
    let micros = micros.to_string();
    respite::resp::encode_request(&[&b"EVAL"[..], SLEEP_SCRIPT, b"0", micros.as_bytes()]).to_vec()
}

/// A `redis` crate client with timeouts.
pub fn client_at(addr: SocketAddr) -> redis::Connection {
    let client = redis::Client::open(format!("redis://{addr}/")).expect("client");
    let conn = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    conn.set_write_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    conn
}

/// `n` pseudo-random bytes from `seed`, which moves on (xorshift: the same seed, the same bytes).
pub fn noise(seed: &mut u64, n: usize) -> Vec<u8> {
    (0..n)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed as u8
        })
        .collect()
}
