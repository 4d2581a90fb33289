//! Real applications through respite in front of a sharded fleet: 3 Redis masters with a
//! replica each behind 2 twemproxies (`Fleet`), and respite with their pool
//! (`Fleet::routed_config`), so that what twemproxy refuses (MULTI/EXEC, WATCH, blocking
//! commands, streams, pub/sub) runs on the master that holds its keys. Each application keeps
//! its default options (RESP3 where that is its default) and puts the keys of each multi-key
//! operation under one hash tag, as its docs prescribe for sharded Redis: BullMQ with the
//! `{bull}` prefix, node-redis and redis-py's asyncio client with their transactions' keys
//! under `{tx}`. Each runs the driver of `tests/apps.rs` with the same arguments directly
//! against one redis-server, then through respite in front of the fleet, asserts the same
//! verified summary, checks where the keys landed, and prints the ratio of the run times (the
//! path through respite has a twemproxy hop too; `--nocapture` shows it).
//!
//! RQ and Celery cannot be sharded: their transactions span keys that twemproxy places on
//! different masters. For them the first transactional step (RQ's enqueue, Celery's task send)
//! must fail with respite's `CROSSSLOT` error, write nothing, and never look like a lost
//! connection. The keys' placement is fixed (nutcracker's ketama hashes the servers' names,
//! `shard0`..`shard2`, not their ports), and each test first asserts the placement it relies on.

mod support;

use std::collections::BTreeSet;
use support::*;

/// The hash tag of the transactions' keys in the node-redis and redis-py workloads.
const TAG: &str = "{tx}";

/// The fleet and respite in front of it with the pool, once every shard reported its role.
fn routed(fleet: &Fleet) -> TestProxy {
    let proxy = TestProxy::start(fleet.routed_config());
    wait_for_roles(&proxy);
    proxy
}

/// The masters that hold `keys`.
fn masters_of(fleet: &Fleet, keys: impl IntoIterator<Item = String>) -> BTreeSet<usize> {
    keys.into_iter()
        .map(|k| fleet.master_of(k.as_bytes()))
        .collect()
}

/// `KEYS pattern` on each master, read from the masters directly.
fn keys_on_masters(fleet: &Fleet, pattern: &str) -> Vec<Vec<String>> {
    fleet
        .masters
        .iter()
        .map(|m| {
            let mut keys: Vec<String> = redis::cmd("KEYS")
                .arg(pattern)
                .query(&mut m.client())
                .expect("KEYS on a master");
            keys.sort();
            keys
        })
        .collect()
}

/// Runs `app` against one fresh redis-server, then through respite in front of `fleet`;
/// asserts both pass with the same summary and prints the ratio of their run times.
fn direct_and_through_the_fleet(app: &App, fleet: &Fleet) {
    let direct = {
        let redis = RedisServer::start();
        app.run(redis.port)
    };
    assert_passed_directly(app, &direct);
    let via = {
        let proxy = routed(fleet);
        app.run(proxy.addr.port())
    };
    compare_runs("apps_sharded", app, &direct, &via);
}

/// Asserts that every key matching `pattern` is on master `home`, and that there are some.
fn all_on(fleet: &Fleet, pattern: &str, home: usize) {
    let found = keys_on_masters(fleet, pattern);
    for (i, keys) in found.iter().enumerate() {
        if i == home {
            assert!(!keys.is_empty(), "{pattern} on master {home}: {found:?}");
        } else {
            assert!(
                keys.is_empty(),
                "{pattern} only on master {home}: {found:?}"
            );
        }
    }
}

/// BullMQ's workload with `prefix` on its Queue, Worker and QueueEvents, then every key of the
/// queue on the prefix's master.
fn bullmq_with_a_hash_tag_prefix(name: &'static str, resp: &[&str]) {
    let _one = one_at_a_time();
    let fleet = Fleet::start();
    let mut args = resp.to_vec();
    args.extend(["--prefix", "{bull}"]);
    direct_and_through_the_fleet(&App::node(name, "bullmq_app.js", &args), &fleet);
    all_on(&fleet, "{bull}:apps:*", fleet.master_of(b"{bull}"));
}

#[test]
fn bullmq_with_its_hash_tag_prefix_runs_jobs_delays_backoff_and_queue_events_on_one_master() {
    bullmq_with_a_hash_tag_prefix("bullmq {bull}", &[]);
}

#[test]
fn bullmq_over_resp2_with_its_hash_tag_prefix_runs_jobs_delays_backoff_and_queue_events() {
    bullmq_with_a_hash_tag_prefix("bullmq resp2 {bull}", &["2"]);
}

/// node-redis's workload with its MULTI/EXEC keys under `TAG`: 200 keys spread over several
/// masters (found again by the SCAN respite fans out over all three), a transaction on the
/// tag's master (not the pub/sub target, the first master, which a RESP3 subscriber's GET of a
/// tagged key must not be sent to), and one connection blocking first on `q`, then on the
/// stream `st`, which live on two different masters.
fn node_redis_sharded(name: &'static str, resp: &str) {
    let _one = one_at_a_time();
    let fleet = Fleet::start();
    let spread = masters_of(&fleet, (0..200).map(|i| format!("nr:{i}")));
    assert!(spread.len() > 1, "the SET/GET keys on several masters");
    let home = fleet.master_of(format!("{TAG}k").as_bytes());
    assert_ne!(
        home, 0,
        "the transaction's keys away from the pub/sub target"
    );
    assert_ne!(
        fleet.master_of(b"q"),
        fleet.master_of(b"st"),
        "one connection blocks on two masters"
    );
    let app = App::node(name, "node_redis_app.js", &[resp, TAG]);
    direct_and_through_the_fleet(&app, &fleet);
    all_on(&fleet, &format!("{TAG}*"), home);
}

#[test]
fn node_redis_resp3_tagged_transactions_pubsub_fanned_out_scans_and_blocking_reads_work() {
    node_redis_sharded("node-redis resp3 {tx}", "3");
}

#[test]
fn node_redis_resp2_tagged_transactions_pubsub_fanned_out_scans_and_blocking_reads_work() {
    node_redis_sharded("node-redis resp2 {tx}", "2");
}

/// redis-py asyncio's workload with its MULTI/EXEC keys (and the stream the blocking XREAD
/// reads) under `TAG`: 200 keys spread over several masters, found again by a fanned-out SCAN; a
/// transaction on the tag's master, and WATCH/MULTI/EXEC on a counter that lives on another
/// one, over the same pool of connections; a BLPOP and an XREAD BLOCK on two masters.
fn redis_py_sharded(name: &'static str, resp: &str) {
    let _one = one_at_a_time();
    let fleet = Fleet::start();
    let spread = masters_of(&fleet, (0..200).map(|i| format!("py:{i}")));
    assert!(spread.len() > 1, "the SET/GET keys on several masters");
    let home = fleet.master_of(format!("{TAG}k").as_bytes());
    assert_ne!(
        fleet.master_of(b"py:counter"),
        home,
        "WATCH on another master than the transaction's"
    );
    assert_ne!(fleet.master_of(b"q"), home, "blocking on two masters");
    let app = App::python(name, "redis_asyncio_app.py", &[resp, TAG]);
    direct_and_through_the_fleet(&app, &fleet);
    all_on(&fleet, &format!("{TAG}*"), home);
}

#[test]
fn redis_py_asyncio_resp3_tagged_transactions_watch_pubsub_fanned_out_scans_and_blocking_reads() {
    redis_py_sharded("redis-py asyncio resp3 {tx}", "3");
}

#[test]
fn redis_py_asyncio_resp2_tagged_transactions_watch_pubsub_fanned_out_scans_and_blocking_reads() {
    redis_py_sharded("redis-py asyncio resp2 {tx}", "2");
}

/// The value the driver printed for `key` in its summary line (Python's `"key": "value"`).
fn outcome<'a>(run: &'a AppRun, key: &str) -> &'a str {
    let head = format!("\"{key}\": \"");
    let at = run
        .summary
        .find(&head)
        .unwrap_or_else(|| panic!("no {key} in {}", run.summary));
    &run.summary[at + head.len()..]
}

/// Asserts that the application raised respite's cross-master error and never saw a lost
/// connection.
fn assert_refused_across_masters(app: &App, run: &AppRun, key: &str) {
    assert!(run.passed, "{} broke:\n{}", app.name, run.output);
    assert!(
        outcome(run, key).starts_with("CROSSSLOT "),
        "{}: CROSSSLOT, got {}\n{}",
        app.name,
        outcome(run, key),
        run.output
    );
    assert!(
        !run.output.to_lowercase().contains("connection lost"),
        "{}: a refusal, not a lost connection:\n{}",
        app.name,
        run.output
    );
}

#[test]
fn rq_enqueue_of_a_job_whose_hash_is_on_another_master_than_its_queue_fails_with_crossslot() {
    let _one = one_at_a_time();
    let fleet = Fleet::start();
    // The enqueue's MULTI/EXEC writes `rq:job:ID` and pushes ID on `rq:queue:apps`. Job ids are
    // random UUIDs by default, and an enqueue whose hash lands on the queue's master succeeds:
    // the test names its jobs, one whose hash lives elsewhere and one beside the queue.
    let queue = fleet.master_of(b"rq:queue:apps");
    let named = |beside_the_queue: bool| {
        (0..100)
            .map(|i| format!("job-{i}"))
            .find(|id| {
                (fleet.master_of(format!("rq:job:{id}").as_bytes()) == queue) == beside_the_queue
            })
            .expect("a job id")
    };
    let (apart, beside) = (named(false), named(true));
    let app = App::python("rq enqueue", "rq_enqueue.py", &["apps", &apart, &beside]);

    let direct = {
        let redis = RedisServer::start();
        let run = app.run(redis.port);
        assert_passed_directly(&app, &run);
        let queued: Vec<String> = redis::cmd("LRANGE")
            .arg("rq:queue:apps")
            .arg(0)
            .arg(-1)
            .query(&mut redis.client())
            .expect("LRANGE");
        assert_eq!(queued, [apart.as_str(), beside.as_str()], "both enqueued");
        run
    };
    assert!(
        outcome(&direct, &apart).starts_with("enqueued"),
        "{direct:?}"
    );

    let via = {
        let proxy = routed(&fleet);
        app.run(proxy.addr.port())
    };
    assert_refused_across_masters(&app, &via, &apart);
    // The refused transaction wrote nothing; the next enqueue, on the same connection, did.
    assert!(outcome(&via, &beside).starts_with("enqueued"), "{via:?}");
    let hashes = keys_on_masters(&fleet, &format!("rq:job:{apart}"));
    assert!(hashes.iter().all(Vec::is_empty), "no job hash: {hashes:?}");
    let queued: Vec<String> = redis::cmd("LRANGE")
        .arg("rq:queue:apps")
        .arg(0)
        .arg(-1)
        .query(&mut fleet.masters[queue].client())
        .expect("LRANGE");
    assert_eq!(
        queued,
        [beside.as_str()],
        "only the second job in the queue"
    );
    all_on(&fleet, &format!("rq:job:{beside}"), queue);
    eprintln!(
        "apps_sharded: {:<22} direct {:>6.3}s (enqueued)  through respite {:>6.3}s (CROSSSLOT, \
         then enqueued)",
        app.name, direct.elapsed, via.elapsed
    );
}

#[test]
fn celery_task_send_whose_queue_lists_span_masters_fails_with_crossslot_and_writes_nothing() {
    let _one = one_at_a_time();
    let fleet = Fleet::start();
    // Sending declares the queue (a MULTI/EXEC of LLEN over its four priority lists) and binds
    // it (a MULTI/EXEC of SADD on two binding sets). With Celery's default queue, `celery`,
    // both span masters: no other queue name is needed.
    let lists: Vec<String> = ["", "\x06\x163", "\x06\x166", "\x06\x169"]
        .iter()
        .map(|p| format!("celery{p}"))
        .collect();
    assert!(masters_of(&fleet, lists).len() > 1, "lists apart");
    let bindings = ["_kombu.binding.celery", "_kombu.binding_permanent.celery"];
    let binding_masters = masters_of(&fleet, bindings.map(String::from));
    assert!(binding_masters.len() > 1, "bindings apart");
    let app = App::python("celery send", "celery_send.py", &[]);

    let direct = {
        let redis = RedisServer::start();
        let run = app.run(redis.port);
        assert_passed_directly(&app, &run);
        let queued: u64 = redis::cmd("LLEN")
            .arg("celery")
            .query(&mut redis.client())
            .expect("LLEN");
        assert_eq!(queued, 1, "the message queued directly");
        run
    };
    assert!(outcome(&direct, "send").starts_with("sent\""), "{direct:?}");

    let via = {
        let proxy = routed(&fleet);
        app.run(proxy.addr.port())
    };
    assert_refused_across_masters(&app, &via, "send");
    let written = keys_on_masters(&fleet, "*");
    assert!(
        written.iter().all(Vec::is_empty),
        "no message, no binding, nothing written: {written:?}"
    );
    eprintln!(
        "apps_sharded: {:<22} direct {:>6.3}s (sent)  through respite {:>6.3}s (CROSSSLOT)",
        app.name, direct.elapsed, via.elapsed
    );
}
