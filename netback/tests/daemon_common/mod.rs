//! Shared by the `daemon_*` tests: the real `hv` daemon (netback's binary) and real
//! `pvnet-guest` processes, a private socket per test, `hv` CLI calls, and what the
//! kernel says about a process (descriptors, threads, resident memory).
//!
//! Every child is owned by a guard that kills it on drop, so a failing assertion
//! leaves nothing running; every wait is bounded.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bound of every wait for a line or a state.
pub const T: Duration = Duration::from_secs(60);

pub const HV: &str = env!("CARGO_BIN_EXE_hv");
pub const GUEST: &str = env!("CARGO_BIN_EXE_pvnet-guest");

/// A socket path in a private directory for this test process and `tag`; the
/// directory is removed on drop.
pub struct TmpSocket {
    pub path: PathBuf,
}

impl Drop for TmpSocket {
    fn drop(&mut self) {
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

pub fn tmp_socket(tag: &str) -> TmpSocket {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "pvnet-d2-{}-{tag}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    TmpSocket {
        path: dir.join("hv.sock"),
    }
}

/// A child process whose stdout lines are collected (and echoed to stderr, tagged,
/// so a failing test shows what every process said).
pub struct Proc {
    pub child: Child,
    pub tag: String,
    lines: Receiver<String>,
    /// Lines read while looking for another prefix, not yet consumed by `expect`.
    skipped: Vec<String>,
    /// Every line so far.
    pub seen: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Proc {
    pub fn spawn(tag: &str, mut cmd: Command) -> Self {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {tag}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (t, s) = (tag.to_string(), seen.clone());
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                eprintln!("[{t}] {line}");
                s.lock().expect("lines").push(line.clone());
                if tx.send(line).is_err() {
                    // Nobody waits any more; keep draining so the child never blocks.
                }
            }
        });
        Self {
            child,
            tag: tag.to_string(),
            lines: rx,
            skipped: Vec::new(),
            seen,
            reader: Some(reader),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The rest of the oldest not yet consumed line starting with `prefix`.
    pub fn expect(&mut self, prefix: &str, timeout: Duration) -> String {
        // A guest prints concurrent events (a ping finishing, a transfer finishing) in
        // either order: look at lines an earlier `expect` passed over first.
        if let Some(i) = self.skipped.iter().position(|l| l.starts_with(prefix)) {
            let l = self.skipped.remove(i);
            return l[prefix.len()..].trim().to_string();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    if let Some(rest) = l.strip_prefix(prefix) {
                        return rest.trim().to_string();
                    }
                    self.skipped.push(l);
                }
                Err(e) => panic!("{} never printed {prefix:?}: {e}", self.tag),
            }
        }
    }

    /// Every line seen so far that starts with `prefix`, without it.
    pub fn seen_with(&self, prefix: &str) -> Vec<String> {
        self.seen
            .lock()
            .expect("lines")
            .iter()
            .filter_map(|l| l.strip_prefix(prefix).map(|r| r.trim().to_string()))
            .collect()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// SIGKILL and reap.
    pub fn kill9(mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
        self.join_reader();
    }

    /// Wait for the exit (after a signal, or by itself); its status code.
    pub fn wait_exit(mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.join_reader();
                return st.code();
            }
            if Instant::now() >= deadline {
                panic!("{} did not exit within {timeout:?}", self.tag);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn join_reader(&mut self) {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `hv serve` on a private socket; `netns` runs it inside a network namespace (its
/// TAPs are created there).
pub struct Daemon {
    pub socket: PathBuf,
    pub proc: Proc,
    /// Declared last: the directory goes after the daemon stopped.
    _dir: TmpSocket,
}

impl Daemon {
    pub fn start(tag: &str, extra: &[&str], netns: Option<&str>) -> Self {
        let dir = tmp_socket(tag);
        let socket = dir.path.clone();
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, HV]);
                c
            }
            None => Command::new(HV),
        };
        cmd.arg("--socket").arg(&socket).arg("serve").args(extra);
        // Warnings and errors only: a failing test shows them, a passing one stays quiet.
        cmd.env("HV_LOG", "warn");
        let mut proc = Proc::spawn(&format!("hv-{tag}"), cmd);
        proc.expect("hv: serving", T);
        Self {
            socket,
            proc,
            _dir: dir,
        }
    }

    /// Run an `hv` command against this daemon.
    pub fn hv(&self, args: &[&str]) -> Output {
        Command::new(HV)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run hv")
    }

    /// Its stdout; panics if it failed.
    pub fn hv_ok(&self, args: &[&str]) -> String {
        let o = self.hv(args);
        assert!(
            o.status.success(),
            "hv {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `hv network-list --json DOMID`, parsed.
    pub fn vifs(&self, domid: u16) -> Option<serde_json::Value> {
        let o = self.hv(&["network-list", "--json", &domid.to_string()]);
        if !o.status.success() {
            return None;
        }
        serde_json::from_slice(&o.stdout).ok()
    }

    /// Domids `hv list` shows.
    pub fn domids(&self) -> Vec<u16> {
        let v: serde_json::Value =
            serde_json::from_str(&self.hv_ok(&["list", "--json"])).expect("list json");
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|d| d["domid"].as_u64().map(|x| x as u16))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The daemon's pid (when run under `ip netns exec`, that process execs hv, so it
    /// is the same pid).
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// SIGTERM; waits for a clean exit.
    pub fn stop(self) -> Option<i32> {
        self.stop_and_check_socket().0
    }

    /// SIGTERM, wait for the exit; its code and whether the socket is still there
    /// (checked before the private directory is removed).
    pub fn stop_and_check_socket(self) -> (Option<i32>, bool) {
        let Daemon { socket, proc, _dir } = self;
        proc.signal(libc::SIGTERM);
        let code = proc.wait_exit(T);
        (code, exists(&socket))
    }
}

/// A `pvnet-guest` process on `daemon`.
pub fn guest(daemon: &Daemon, name: &str, args: &[&str]) -> Guest {
    let mut cmd = Command::new(GUEST);
    cmd.arg("--socket")
        .arg(&daemon.socket)
        .args(["--name", name])
        .args(args);
    let mut proc = Proc::spawn(name, cmd);
    let domid: u16 = proc
        .expect("domid ", T)
        .split_whitespace()
        .next()
        .and_then(|d| d.parse().ok())
        .expect("domid");
    proc.expect("ready", T);
    Guest { proc, domid }
}

pub struct Guest {
    pub proc: Proc,
    pub domid: u16,
}

/// `bytes N sha256 H` out of a result line.
pub fn bytes_and_hash(line: &str) -> (u64, String) {
    let w: Vec<&str> = line.split_whitespace().collect();
    let find = |k: &str| {
        w.iter()
            .position(|x| *x == k)
            .and_then(|i| w.get(i + 1))
            .unwrap_or_else(|| panic!("no {k} in {line:?}"))
            .to_string()
    };
    (find("bytes").parse().expect("bytes"), find("sha256"))
}

/// Open descriptors of `pid`.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Threads of `pid`.
pub fn task_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Resident memory of `pid` in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Poll `f` until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// True if the test may run; panics with an explanation when not root, unless
/// `PVNET_SKIP_ROOT_TESTS=1` asks to skip (then it says so and returns false).
pub fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("PVNET_SKIP_ROOT_TESTS").as_deref() == Ok("1") {
        eprintln!("{test}: not run: needs root and PVNET_SKIP_ROOT_TESTS=1 is set");
        return false;
    }
    panic!(
        "{test} needs root (a network namespace, a bridge and TAPs): run the tests as root, \
         or set PVNET_SKIP_ROOT_TESTS=1"
    );
}

/// A throw-away network namespace with bridge `br` at `cidr`; deleted on drop.
pub struct BridgeNs {
    pub name: String,
    pub bridge: String,
}

impl BridgeNs {
    pub fn new(tag: &str, bridge: &str, cidr: &str) -> Self {
        let name = format!("pvnet-d2-{tag}-{}", std::process::id());
        run("ip", &["netns", "add", &name]);
        let ns = Self {
            name,
            bridge: bridge.into(),
        };
        ns.exec(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
        ns.exec(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
        ns.ip(&["link", "set", "lo", "up"]);
        ns.ip(&["link", "add", bridge, "type", "bridge"]);
        ns.ip(&[
            "link",
            "set",
            bridge,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ]);
        ns.ip(&["addr", "add", cidr, "dev", bridge]);
        ns.ip(&["link", "set", bridge, "up"]);
        ns
    }

    pub fn ip(&self, args: &[&str]) -> String {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    pub fn exec(&self, args: &[&str]) -> String {
        let mut a = vec!["netns", "exec", self.name.as_str()];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    pub fn has_link(&self, dev: &str) -> bool {
        Command::new("ip")
            .args(["-n", &self.name, "link", "show", "dev", dev])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// Interfaces enslaved to the bridge.
    pub fn bridge_ports(&self) -> Vec<String> {
        self.ip(&["-o", "link", "show", "master", &self.bridge])
            .lines()
            .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().to_string()))
            .map(|n| n.split('@').next().unwrap_or(&n).to_string())
            .collect()
    }
}

impl Drop for BridgeNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether `path` exists (a socket removed on shutdown, ...).
pub fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}
