//! Real applications through respite, each with its default options: RQ, Celery, BullMQ,
//! node-redis (RESP3 and RESP2) and redis-py's asyncio client (RESP3 and RESP2); RQ and BullMQ
//! also with their client switched to RESP2 (their defaults speak RESP3). A driver script
//! per application (`tests/py/*.py`, `tests/node/*.js`, installed by `scripts/install-deps`) runs
//! a fixed, bounded workload, verifies its results itself and prints one JSON line whose last key
//! is `elapsed`. Each test runs its driver against a fresh redis-server directly, then through
//! respite over another fresh redis-server, and asserts that both pass with the same summary
//! (less `elapsed`). The run time through respite over the direct one is printed as a ratio
//! (`cargo test --test apps -- --nocapture` shows it).
//!
//! The drivers run one at a time: on a machine of two cores the workers of one application would
//! slow another's run and the ratios would say nothing.

mod support;

use support::*;

/// Runs `app` directly against one fresh redis-server and through respite over another, prints
/// the ratio of their run times, and asserts both pass with the same summary.
fn direct_and_through_respite(app: App) {
    let _one = one_at_a_time();
    let direct = {
        let redis = RedisServer::start();
        app.run(redis.port)
    };
    assert_passed_directly(&app, &direct);
    let via = {
        let redis = RedisServer::start();
        let proxy = TestProxy::over(&[&redis]);
        app.run(proxy.addr.port())
    };
    compare_runs("apps", &app, &direct, &via);
}

#[test]
fn rq_jobs_with_dependencies_failures_retries_and_scheduling_work_through_respite() {
    direct_and_through_respite(App::python("rq", "rq_app.py", &[]));
}

#[test]
fn rq_over_resp2_jobs_with_dependencies_failures_retries_and_scheduling_work_through_respite() {
    direct_and_through_respite(App::python("rq resp2", "rq_app.py", &["2"]));
}

#[test]
fn celery_groups_chords_retries_and_failures_work_through_respite() {
    direct_and_through_respite(App::python("celery", "celery_run.py", &[]));
}

#[test]
fn bullmq_jobs_delays_backoff_and_queue_events_work_through_respite() {
    direct_and_through_respite(App::node("bullmq", "bullmq_app.js", &[]));
}

#[test]
fn bullmq_over_resp2_jobs_delays_backoff_and_queue_events_work_through_respite() {
    direct_and_through_respite(App::node("bullmq resp2", "bullmq_app.js", &["2"]));
}

#[test]
fn node_redis_resp3_transactions_pubsub_scans_and_blocking_reads_work_through_respite() {
    direct_and_through_respite(App::node("node-redis resp3", "node_redis_app.js", &["3"]));
}

#[test]
fn node_redis_resp2_transactions_pubsub_scans_and_blocking_reads_work_through_respite() {
    direct_and_through_respite(App::node("node-redis resp2", "node_redis_app.js", &["2"]));
}

#[test]
fn redis_py_asyncio_resp3_transactions_pubsub_scans_and_blocking_reads_work_through_respite() {
    direct_and_through_respite(App::python(
        "redis-py asyncio resp3",
        "redis_asyncio_app.py",
        &["3"],
    ));
}

#[test]
fn redis_py_asyncio_resp2_transactions_pubsub_scans_and_blocking_reads_work_through_respite() {
    direct_and_through_respite(App::python(
        "redis-py asyncio resp2",
        "redis_asyncio_app.py",
        &["2"],
    ));
}

#[test]
fn a_summary_line_loses_only_its_elapsed() {
    assert_eq!(
        split_elapsed(r#"{"app": "rq", "checks": 15, "elapsed": 2.245}"#),
        (r#"{"app": "rq", "checks": 15}"#.to_string(), 2.245)
    );
    assert_eq!(
        split_elapsed(r#"{"app":"bullmq","checks":11,"elapsed":0.64}"#),
        (r#"{"app":"bullmq","checks":11}"#.to_string(), 0.64)
    );
}
