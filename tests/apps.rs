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

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use support::*;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// How long one run of a driver may take before its process group is killed (each driver bounds
/// its own waits well below this).
const DRIVER_LIMIT: Duration = Duration::from_secs(90);

/// An application's driver script and the arguments after the port.
struct App {
    name: &'static str,
    program: PathBuf,
    script: PathBuf,
    args: &'static [&'static str],
}

impl App {
    fn python(name: &'static str, script: &str, args: &'static [&'static str]) -> App {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py");
        let program = dir.join(".venv/bin/python");
        assert!(
            program.exists(),
            "{} is missing: run scripts/install-deps",
            program.display()
        );
        App {
            name,
            program,
            script: dir.join(script),
            args,
        }
    }

    fn node(name: &'static str, script: &str, args: &'static [&'static str]) -> App {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
        App {
            name,
            program: PathBuf::from("node"),
            script: dir.join(script),
            args,
        }
    }

    /// Runs the driver against `port`, in a process group of its own so that a driver which
    /// outlives `DRIVER_LIMIT` is killed with its workers.
    fn run(&self, port: u16) -> Run {
        let out = tempfile::tempdir().expect("temp dir");
        let (stdout, stderr) = (out.path().join("stdout"), out.path().join("stderr"));
        let began = Instant::now();
        let mut child = Command::new(&self.program)
            .arg(&self.script)
            .arg(port.to_string())
            .args(self.args)
            .current_dir(self.script.parent().expect("script dir"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e} (scripts/install-deps)", self.program.display()));
        let mut status = None;
        let exited = wait_until(DRIVER_LIMIT, || {
            status = child.try_wait().expect("try_wait");
            status.is_some()
        });
        if !exited {
            let _ = Command::new("kill")
                .args(["-KILL", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
        }
        let wall = began.elapsed();
        let stdout = std::fs::read_to_string(&stdout).unwrap_or_default();
        let stderr = std::fs::read_to_string(&stderr).unwrap_or_default();
        let line = stdout.lines().rev().find(|l| l.starts_with('{'));
        let (summary, elapsed) = line.map(split_elapsed).unwrap_or_default();
        Run {
            passed: status.is_some_and(|s| s.success()) && !summary.is_empty(),
            summary,
            elapsed,
            wall,
            output: if exited {
                format!("{stdout}{stderr}")
            } else {
                format!("killed after {DRIVER_LIMIT:?}\n{stdout}{stderr}")
            },
        }
    }
}

/// One run of a driver.
struct Run {
    passed: bool,
    /// The JSON line without its `elapsed`.
    summary: String,
    /// The workload's seconds, as the driver timed them (interpreter start-up left out).
    elapsed: f64,
    /// The whole process's time.
    wall: Duration,
    output: String,
}

/// `{"a": 1, "elapsed": 2.5}` -> (`{"a": 1}`, 2.5), for Python's and Node's spacing alike.
fn split_elapsed(line: &str) -> (String, f64) {
    let Some(at) = line.rfind("\"elapsed\"") else {
        return (line.to_string(), 0.0);
    };
    let value = line[at..]
        .trim_start_matches("\"elapsed\"")
        .trim_start_matches([':', ' '])
        .trim_end_matches('}');
    let head = line[..at].trim_end().trim_end_matches(',');
    (format!("{head}}}"), value.trim().parse().unwrap_or(0.0))
}

/// Runs `app` directly against one fresh redis-server and through respite over another, prints
/// the ratio of their run times, and asserts both pass with the same summary.
fn direct_and_through_respite(app: App) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let direct = {
        let redis = RedisServer::start();
        app.run(redis.port)
    };
    assert!(
        direct.passed,
        "{} failed directly against redis-server (so the driver or its install is at fault):\n{}",
        app.name, direct.output
    );
    let via = {
        let redis = RedisServer::start();
        let proxy = TestProxy::over(&[&redis]);
        app.run(proxy.addr.port())
    };
    if via.passed {
        eprintln!(
            "apps: {:<22} direct {:>6.3}s  through respite {:>6.3}s  ratio {:.2}  \
             (whole process {:.2}s vs {:.2}s)",
            app.name,
            direct.elapsed,
            via.elapsed,
            via.elapsed / direct.elapsed,
            direct.wall.as_secs_f64(),
            via.wall.as_secs_f64()
        );
    } else {
        eprintln!(
            "apps: {:<22} direct {:>6.3}s  through respite FAILED after {:.2}s",
            app.name,
            direct.elapsed,
            via.wall.as_secs_f64()
        );
    }
    assert!(
        via.passed,
        "{} passed directly against redis-server but failed through respite:\n{}\n\
         direct summary: {}",
        app.name, via.output, direct.summary
    );
    assert_eq!(
        via.summary, direct.summary,
        "{}: the same verified results through respite as directly",
        app.name
    );
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
