//! Shared by the `daemon_*` tests: an in-process daemon on a private socket, and
//! guests as separate processes — the test binary re-executed with
//! `HV_GUEST_ROLE=<role>`, running one of [`roles`].
#![allow(dead_code)]

pub mod roles;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hv::daemon::{Server, ServerConfig};
use hv::embedded::Hypervisor;

/// A socket path private to this test process and `name`.
pub fn tmp_socket(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pvnet-test-{}-{name}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir.join("hv.sock")
}

/// A daemon serving a fresh hypervisor at a private socket.
pub fn start_server(name: &str) -> Server {
    let path = tmp_socket(name);
    let _ = std::fs::remove_file(&path);
    Server::start(
        Hypervisor::new().expect("hypervisor"),
        ServerConfig::new(&path),
    )
    .expect("daemon starts")
}

/// Open descriptors of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// If this process was started as a guest, run the role and exit with its status.
/// Every `daemon_*` test binary calls this from one entry point.
pub fn guest_process_entry() {
    let Ok(role) = std::env::var("HV_GUEST_ROLE") else {
        return;
    };
    let socket = PathBuf::from(std::env::var("HV_SOCKET").expect("HV_SOCKET set for a guest"));
    // The harness printed "test zz_guest_process_entry ... " without a newline: end
    // that line so the role's first line stands alone.
    println!();
    let code = roles::run(&role, &socket);
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

/// A guest process and its stdout lines.
pub struct GuestProc {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    reader: Option<JoinHandle<()>>,
}

/// Start the test binary as a guest running `role`, served at `socket`.
pub fn spawn_guest(socket: &Path, role: &str, env: &[(&str, String)]) -> GuestProc {
    let exe = std::env::current_exe().expect("current exe");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        "zz_guest_process_entry",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("HV_GUEST_ROLE", role)
    .env("HV_SOCKET", socket)
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn guest");
    let stdout = child.stdout.take().expect("stdout");
    let stdin = child.stdin.take();
    let (tx, rx) = channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    GuestProc {
        child,
        stdin,
        lines: rx,
        reader: Some(reader),
    }
}

impl GuestProc {
    /// The first line starting with `prefix` (others are skipped), without it.
    pub fn expect(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        // Lines skipped on the way (a guest's `fail: ...` among them), for the panic.
        let mut skipped: Vec<String> = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    if let Some(rest) = l.strip_prefix(prefix) {
                        return rest.trim().to_string();
                    }
                    skipped.push(l);
                }
                Err(e) => panic!("guest never printed {prefix:?}: {e}; it printed {skipped:?}"),
            }
        }
    }

    /// Send a line to the guest's stdin.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to guest");
        stdin.flush().expect("flush");
    }

    /// SIGKILL, reap, and close every pipe to it.
    pub fn kill9(mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
        self.close_pipes();
    }

    /// Wait for the guest to exit by itself.
    pub fn wait_exit(mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                self.close_pipes();
                return st;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("guest did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn close_pipes(&mut self) {
        self.stdin.take();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// Poll `f` until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
