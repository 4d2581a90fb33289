//! The framing and routing hot path: request scanning (and the `split_to().freeze()` that
//! forwards each request), reply boundary scanning, command lookup and the pending queue.
//!
//! ```text
//!  read buffer ─▶ RequestScanner ─▶ split_to(len).freeze() ─▶ CommandTable::lookup ─▶ backend
//!  backend buffer ─▶ ReplyScanner ─▶ split_to(len).freeze() ─▶ PendingQueue ─▶ client
//! ```
//!
//! Throughput is reported in bytes for the scanners and in elements for lookups and the queue.
//! Run with `cargo bench --bench hot_path -- --warm-up-time 1 --measurement-time 2`.

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use respite::command::CommandTable;
use respite::net::OutQueue;
use respite::pending::{PendingQueue, Tag};
use respite::resp::{encode_request, Frame, Limits, ReplyScanner, RequestScanner};

/// Bytes handed to the scanner per read, as a connection reads them.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// `n` requests alternating `SET key:i value-i` and `GET key:i`.
fn get_set_pipeline(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let key = format!("key:{i:08}");
        let req = if i % 2 == 0 {
            encode_request(&[b"SET".as_slice(), key.as_bytes(), b"value-0123456789"])
        } else {
            encode_request(&[b"GET".as_slice(), key.as_bytes()])
        };
        out.extend_from_slice(&req);
    }
    out
}

/// Scans every request of `input` (all present at once); returns the request count.
fn scan_requests(input: &[u8], limits: &Limits) -> usize {
    let mut sc = RequestScanner::new();
    let mut at = 0;
    let mut n = 0;
    while let Ok(Some(frame)) = sc.scan(&input[at..], limits) {
        at += frame.consumed();
        n += 1;
    }
    n
}

/// Scans `input` as it arrives in `READ_CHUNK_BYTES` reads; returns the request count.
fn scan_requests_in_reads(input: &[u8], limits: &Limits) -> usize {
    let mut sc = RequestScanner::new();
    let (mut start, mut end, mut n) = (0, 0, 0);
    while end < input.len() {
        end = (end + READ_CHUNK_BYTES).min(input.len());
        while let Ok(Some(frame)) = sc.scan(&input[start..end], limits) {
            start += frame.consumed();
            n += 1;
        }
    }
    n
}

fn request_scanner(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("request_scanner");
    for n in [16, 1000] {
        let input = get_set_pipeline(n);
        g.throughput(Throughput::Bytes(input.len() as u64));
        g.bench_function(format!("get_set_pipeline_{n}"), |b| {
            b.iter(|| assert_eq!(scan_requests(black_box(&input), &limits), n))
        });
        // The forward path proper: scan, then cut each request off the read buffer as `Bytes`.
        g.bench_function(format!("get_set_pipeline_{n}_split_freeze"), |b| {
            b.iter_batched_ref(
                || BytesMut::from(&input[..]),
                |buf| {
                    let mut sc = RequestScanner::new();
                    while let Ok(Some(Frame::Multibulk { len, .. })) = sc.scan(buf, &limits) {
                        black_box(buf.split_to(len).freeze());
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }

    // Once per read, after the last complete frame: the scanner is handed an empty buffer.
    g.throughput(Throughput::Elements(1));
    g.bench_function("empty_buffer", |b| {
        let mut sc = RequestScanner::new();
        b.iter(|| assert!(matches!(sc.scan(black_box(&[]), &limits), Ok(None))))
    });

    let value = vec![b'v'; 1 << 20];
    let set_1mb = encode_request(&[b"SET".as_slice(), b"big", &value]);
    g.throughput(Throughput::Bytes(set_1mb.len() as u64));
    g.bench_function("set_1mb_whole", |b| {
        b.iter(|| assert_eq!(scan_requests(black_box(&set_1mb), &limits), 1))
    });
    g.bench_function("set_1mb_in_16k_reads", |b| {
        b.iter(|| assert_eq!(scan_requests_in_reads(black_box(&set_1mb), &limits), 1))
    });

    let mut mset: Vec<Vec<u8>> = vec![b"MSET".to_vec()];
    for i in 0..5000 {
        mset.push(format!("key:{i}").into_bytes());
        mset.push(format!("value:{i}").into_bytes());
    }
    let mset = encode_request(&mset);
    g.throughput(Throughput::Bytes(mset.len() as u64));
    g.bench_function("mset_10k_args", |b| {
        b.iter(|| assert_eq!(scan_requests(black_box(&mset), &limits), 1))
    });
    g.bench_function("mset_10k_args_in_16k_reads", |b| {
        b.iter(|| assert_eq!(scan_requests_in_reads(black_box(&mset), &limits), 1))
    });
    g.finish();
}

/// Scans every reply of `input` (all present at once); returns the reply count.
fn scan_replies(input: &[u8]) -> usize {
    let mut sc = ReplyScanner::new();
    let (mut at, mut n) = (0, 0);
    while let Ok(Some(len)) = sc.scan(&input[at..]) {
        at += len;
        n += 1;
    }
    n
}

fn reply_scanner(c: &mut Criterion) {
    let mut g = c.benchmark_group("reply_scanner");
    let mut pipelined = Vec::new();
    for i in 0..1000 {
        if i % 2 == 0 {
            pipelined.extend_from_slice(b"+OK\r\n");
        } else {
            pipelined.extend_from_slice(b"$16\r\nvalue-0123456789\r\n");
        }
    }
    g.throughput(Throughput::Bytes(pipelined.len() as u64));
    g.bench_function("ok_and_bulk_1000", |b| {
        b.iter(|| assert_eq!(scan_replies(black_box(&pipelined)), 1000))
    });

    g.throughput(Throughput::Elements(1));
    g.bench_function("empty_buffer", |b| {
        let mut sc = ReplyScanner::new();
        b.iter(|| assert_eq!(sc.scan(black_box(&[])), Ok(None)))
    });

    let mut array = b"*1000000\r\n".to_vec();
    for i in 0..1_000_000 {
        if i % 2 == 0 {
            array.extend_from_slice(b"$6\r\nmember\r\n");
        } else {
            array.extend_from_slice(b":12345\r\n");
        }
    }
    g.throughput(Throughput::Bytes(array.len() as u64));
    g.sample_size(10);
    g.bench_function("array_1m_elements", |b| {
        b.iter(|| assert_eq!(scan_replies(black_box(&array)), 1))
    });
    g.finish();
}

fn command_lookup(c: &mut Criterion) {
    let table = CommandTable::new();
    let names: [&[u8]; 6] = [
        b"GET",
        b"set",
        b"MSet",
        b"XREADGROUP",
        b"ping",
        b"NOSUCHCMD",
    ];
    let mut g = c.benchmark_group("command_table");
    g.throughput(Throughput::Elements(names.len() as u64));
    g.bench_function("lookup_and_route_6_names", |b| {
        b.iter(|| {
            for name in names {
                if let Some(id) = table.lookup(black_box(name)) {
                    black_box(table.route(id));
                }
            }
        })
    });
    g.finish();
}

fn pending_queue(c: &mut Criterion) {
    const DEPTH: usize = 16;
    let reply = Bytes::from_static(b"+OK\r\n");
    let mut g = c.benchmark_group("pending_queue");
    g.throughput(Throughput::Elements(DEPTH as u64));
    g.bench_function("push_complete_drain_16", |b| {
        let mut q = PendingQueue::new();
        let mut out = OutQueue::default();
        let mut seqs = [0u64; DEPTH];
        let start = 0u64;
        b.iter(|| {
            for s in seqs.iter_mut() {
                *s = q.push(Tag::unknown(start));
            }
            // Replies arrive out of order (two backends): odd slots first, then even ones.
            for s in seqs.iter().skip(1).step_by(2).chain(seqs.iter().step_by(2)) {
                q.complete(*s, reply.clone(), 1, &mut out, |_, _| {});
            }
            assert_eq!(out.bytes(), DEPTH * reply.len());
            out.clear();
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    request_scanner,
    reply_scanner,
    command_lookup,
    pending_queue
);
criterion_main!(benches);
