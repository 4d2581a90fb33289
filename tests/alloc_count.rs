//! Counts respite's heap allocations while it forwards requests: with dhat's counting global
//! allocator (its `unsafe` lives in dhat; this crate forbids its own), the proxy runs in this
//! process and `redis-benchmark`, in another, sends the requests, so every block allocated
//! during the measured run is the proxy's (or the few this thread needs to start the client).
//!
//! Forwarding must not allocate per request: read buffers grow in chunks shared by many
//! requests, queues keep their capacity, and replies are slices of the backend's read buffer.
//! The test allows one block per 100 requests, far below one per request.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use support::*;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// Runs `redis-benchmark` against `addr`: `n` requests of each of SET and GET from 20 clients,
/// pipelined `p` deep. Returns the requests sent.
fn benchmark(addr: SocketAddr, n: u64, p: u32) -> u64 {
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(["-q", "-c", "20", "-t", "set,get", "-r", "100000"])
        .args(["-n", &n.to_string(), "-P", &p.to_string()])
        .output()
        .expect("redis-benchmark must be installed (scripts/install-deps)");
    assert!(out.status.success(), "redis-benchmark failed: {out:?}");
    2 * n
}

#[test]
fn forwarding_does_not_allocate_per_request() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let redis = RedisServer::start();
    let proxy = TestProxy::over(&[&redis]);
    // Warm up: connections open, buffers and queues reach their working size.
    benchmark(proxy.addr, 20_000, 1);
    benchmark(proxy.addr, 20_000, 16);
    let before = dhat::HeapStats::get();
    let requests = benchmark(proxy.addr, 50_000, 1) + benchmark(proxy.addr, 200_000, 16);
    let after = dhat::HeapStats::get();
    let blocks = after.total_blocks - before.total_blocks;
    let bytes = after.total_bytes - before.total_bytes;
    eprintln!(
        "{requests} requests forwarded: {blocks} blocks ({bytes} bytes) allocated, {:.5} per request",
        blocks as f64 / requests as f64
    );
    assert!(
        blocks * 100 < requests,
        "{blocks} allocations for {requests} requests"
    );
}
