//! The respite binary as a child process, for what a thread cannot show (signals, exit codes,
//! its own CPU time and memory, several workers): `RespiteProcess` spawns it on a free port and
//! retries another port when that one was taken, signals it by PID, waits for its exit with a
//! bounded timeout and kills it by PID on drop. `signal` sends a signal to any child by PID.

use super::{free_port, wait_until};
use respite::resp::{encode_request, ReplyScanner};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Sends `sig` (`"-STOP"`, `"-CONT"`, `"-TERM"`, `"-HUP"`) to process `pid` with `kill`, and
/// asserts that it was delivered.
pub fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {sig} {pid}");
}

/// How long the binary gets to serve once spawned.
const START_LIMIT: Duration = Duration::from_secs(5);
/// How long it gets to exit once asked (or, run to its end, to finish).
const EXIT_LIMIT: Duration = Duration::from_secs(5);

/// A `respite` child process, with its stderr in a temp file; killed by PID on drop.
pub struct RespiteProcess {
    child: Child,
    exited: Option<ExitStatus>,
    /// Where it listens for clients.
    pub addr: SocketAddr,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

/// How a start went.
enum Start {
    Serving,
    PortTaken(String),
    Failed(String),
}

impl RespiteProcess {
    /// Starts `respite --listen 127.0.0.1:<free port> <args>` and waits until it serves.
    pub fn start(args: &[&str]) -> RespiteProcess {
        Self::start_with(|addr| {
            let mut all = vec!["--listen".to_string(), addr.to_string()];
            all.extend(args.iter().map(|a| a.to_string()));
            all
        })
    }

    /// Starts respite with the arguments `args_for` gives for a listen address on a free port
    /// (it may write a config file naming it), and waits until it serves there: until `INFO`
    /// on that address names its PID, so it must not ask for a password. When the port was
    /// taken before respite could bind it, tries again on another port, 3 times at the most.
    pub fn start_with(mut args_for: impl FnMut(SocketAddr) -> Vec<String>) -> RespiteProcess {
        let mut last = String::new();
        for _ in 0..3 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let mut p = Self::spawn(&args_for(addr), addr);
            match p.wait_serving() {
                Start::Serving => return p,
                Start::PortTaken(stderr) => last = stderr,
                Start::Failed(stderr) => panic!("respite did not start on {addr}:\n{stderr}"),
            }
        }
        panic!("respite found no free port in 3 tries; last stderr:\n{last}");
    }

    /// Runs respite with `args` to its end (killed after 5 s): its exit code and its stderr.
    pub fn run(args: &[&str]) -> (Option<i32>, String) {
        let mut p = Self::spawn(args, SocketAddr::from(([127, 0, 0, 1], 0)));
        let code = p.wait_exit(EXIT_LIMIT);
        (code, p.stderr())
    }

    fn spawn<S: AsRef<std::ffi::OsStr>>(args: &[S], addr: SocketAddr) -> RespiteProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let stderr = dir.path().join("stderr.log");
        let file = std::fs::File::create(&stderr).expect("stderr file");
        let child = Command::new(env!("CARGO_BIN_EXE_respite"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("respite binary");
        RespiteProcess {
            child,
            exited: None,
            addr,
            stderr,
            _dir: dir,
        }
    }

    /// Waits until it serves on `addr`, or exits, or `START_LIMIT` passes.
    fn wait_serving(&mut self) -> Start {
        let pid = format!("process_id:{}\r\n", self.pid());
        let mut exited = false;
        let serving = wait_until(START_LIMIT, || {
            exited = self.try_exit().is_some();
            exited || info_server(self.addr).is_some_and(|info| info.contains(&pid))
        });
        let stderr = self.stderr();
        match (serving, exited) {
            (true, false) => Start::Serving,
            (true, true) if stderr.contains("cannot listen on") => Start::PortTaken(stderr),
            (true, true) => Start::Failed(format!("exited with {:?}:\n{stderr}", self.exited)),
            (false, _) => Start::Failed(format!("not serving after {START_LIMIT:?}:\n{stderr}")),
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `sig` (`"-TERM"`, `"-HUP"`, `"-STOP"`, `"-CONT"`) by PID; it must still run.
    pub fn signal(&self, sig: &str) {
        assert!(self.exited.is_none(), "respite already exited");
        signal(self.pid(), sig);
    }

    /// Its exit code once it has exited by itself, if it has.
    fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().expect("try_wait");
        }
        self.exited
    }

    /// Waits up to `limit` for it to exit; its exit code, or `None` when it had to be killed
    /// (or died of a signal).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        while self.try_exit().is_none() && start.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(20));
        }
        match self.exited {
            Some(status) => status.code(),
            None => {
                self.kill();
                None
            }
        }
    }

    /// SIGTERM, then waits up to 5 s for the exit: its exit code, or `None`.
    pub fn stop(&mut self) -> Option<i32> {
        self.signal("-TERM");
        self.wait_exit(EXIT_LIMIT)
    }

    /// SIGKILL by PID, and reap.
    pub fn kill(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// CPU seconds it used (user and system).
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        ticks / 100.0
    }

    /// Its resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for RespiteProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let text = self.stderr();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!("respite stderr (last lines):\n{}", tail.join("\n"));
        }
    }
}

/// The reply to `INFO server` at `addr`, if something there answers within 500 ms.
fn info_server(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.write_all(&encode_request(&[&b"INFO"[..], b"server"]))
        .ok()?;
    let mut scanner = ReplyScanner::new();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while buf.len() < 1 << 16 {
        if scanner.scan(&buf).ok()?.is_some() {
            return Some(String::from_utf8_lossy(&buf).into_owned());
        }
        let n = s.read(&mut chunk).ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
    None
}
