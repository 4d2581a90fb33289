//! Real applications' driver scripts (`tests/py/*.py`, `tests/node/*.js`, installed by
//! `scripts/install-deps`) as child processes, for `tests/apps.rs` and `tests/apps_sharded.rs`:
//! `App` names a driver and its arguments after the port and runs it in a process group of its
//! own, killed with its workers after `DRIVER_LIMIT`; `AppRun` is what one run printed, its
//! summary line split from its `elapsed`; `compare_runs` prints the ratio of the run times
//! through respite and directly and asserts both passed with the same summary.
//!
//! Drivers run one at a time (`one_at_a_time`): on a machine of two cores the workers of one
//! application would slow another's run and the ratios would say nothing.

use super::wait_until;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Held while a test runs drivers, so that no two tests of one binary run theirs at once.
pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long one run of a driver may take before its process group is killed (each driver bounds
/// its own waits well below this).
pub const DRIVER_LIMIT: Duration = Duration::from_secs(90);

/// An application's driver script and the arguments after the port.
pub struct App {
    pub name: &'static str,
    program: PathBuf,
    script: PathBuf,
    args: Vec<String>,
}

impl App {
    /// A driver in `tests/py`, run by the virtualenv's Python.
    pub fn python(name: &'static str, script: &str, args: &[&str]) -> App {
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
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// A driver in `tests/node`.
    pub fn node(name: &'static str, script: &str, args: &[&str]) -> App {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
        App {
            name,
            program: PathBuf::from("node"),
            script: dir.join(script),
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// Runs the driver against `port`, in a process group of its own so that a driver which
    /// outlives `DRIVER_LIMIT` is killed with its workers.
    pub fn run(&self, port: u16) -> AppRun {
        let out = tempfile::tempdir().expect("temp dir");
        let (stdout, stderr) = (out.path().join("stdout"), out.path().join("stderr"));
        let began = Instant::now();
        let mut child = Command::new(&self.program)
            .arg(&self.script)
            .arg(port.to_string())
            .args(&self.args)
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
        AppRun {
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
#[derive(Debug)]
pub struct AppRun {
    /// It exited 0 and printed its summary line.
    pub passed: bool,
    /// The JSON line without its `elapsed`.
    pub summary: String,
    /// The workload's seconds, as the driver timed them (interpreter start-up left out).
    pub elapsed: f64,
    /// The whole process's time.
    pub wall: Duration,
    /// Everything it printed (stdout, then stderr).
    pub output: String,
}

/// `{"a": 1, "elapsed": 2.5}` -> (`{"a": 1}`, 2.5), for Python's and Node's spacing alike.
pub fn split_elapsed(line: &str) -> (String, f64) {
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

/// Asserts that `direct` (the run against a redis-server) passed: when it did not, the driver
/// or its install is at fault, not respite.
pub fn assert_passed_directly(app: &App, direct: &AppRun) {
    assert!(
        direct.passed,
        "{} failed directly against redis-server (so the driver or its install is at fault):\n{}",
        app.name, direct.output
    );
}

/// Prints `label: name direct Xs through respite Ys ratio Y/X`, then asserts that `via` (the
/// run through respite) passed with the summary of `direct`.
pub fn compare_runs(label: &str, app: &App, direct: &AppRun, via: &AppRun) {
    if via.passed {
        eprintln!(
            "{label}: {:<22} direct {:>6.3}s  through respite {:>6.3}s  ratio {:.2}  \
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
            "{label}: {:<22} direct {:>6.3}s  through respite FAILED after {:.2}s",
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
