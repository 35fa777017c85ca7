//! `loadtest host --guest daemon` end to end (root): the guest is a separate process
//! (`loadtest __host-guest`) served by the hv daemon loadtest runs. The tests check that
//! frames move both ways with plausible counts, and that after a normal run, after
//! SIGTERM and after SIGKILL of loadtest no guest process, no namespace and no socket
//! directory remain. Root handling follows `host.rs`: without root they fail with an
//! explanation unless PVNET_SKIP_ROOT_TESTS=1.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::root_or_skip;
use loadtest::host::daemon::run_dir;
use loadtest::host::{netns, GuestKind, GuestMode, HostDirection, HostReport};

/// Bound of every wait in these tests.
const T: Duration = Duration::from_secs(60);

/// `loadtest host ARGS`, started.
fn spawn_host(args: &[&str], stdout: Stdio) -> Child {
    Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .arg("host")
        .args(args)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .expect("the loadtest binary starts")
}

/// Waits (bounded) for `child` to exit and collects its output; kills it on timeout.
fn finish(mut child: Child, what: &str) -> Output {
    let deadline = Instant::now() + T;
    while child.try_wait().expect("waiting for loadtest").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: loadtest did not exit within {T:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("loadtest's output")
}

/// The pids of guest processes started by loadtest process `parent` (their command
/// line names it), alive or not yet reaped.
fn guest_processes(parent: u32) -> Vec<u32> {
    let marker = format!("--parent\0{parent}\0");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    let c = String::from_utf8_lossy(&c);
                    c.contains("__host-guest") && c.contains(&marker)
                })
                .unwrap_or(false)
        })
        .collect()
}

/// True if `pid` is gone or a zombie (dead; a container's init may reap it late).
fn dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // `pid (comm) S ...`: the state follows the last ')'.
        Ok(s) => s
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|st| st == "Z" || st == "X"),
    }
}

fn wait_until(what: &str, bound: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + bound;
    while !ok() {
        assert!(Instant::now() < deadline, "{what} within {bound:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whatever a test's loadtest run leaves when the test fails (or, after SIGKILL,
/// always): guest processes are killed, the namespace and directory removed.
struct Leftovers {
    pid: u32,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        // loadtest itself, if a failed assertion left it running (not reaped yet, so
        // the pid is still its own).
        let own = std::fs::read(format!("/proc/{}/cmdline", self.pid))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains("loadtest\0host"));
        if own && !dead(self.pid) {
            // SAFETY: kill(2) on the loadtest process this test started.
            unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
        }
        for g in guest_processes(self.pid) {
            // SAFETY: kill(2) on a process of the run this test started.
            unsafe { libc::kill(g as libc::pid_t, libc::SIGKILL) };
        }
        let ns = format!("pvnet-lt-{}", self.pid);
        if netns::exists(&ns) {
            let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        }
        let _ = std::fs::remove_dir_all(run_dir(self.pid));
    }
}

/// Starts a long daemon-mode run and waits until its guest process is in a window.
fn started_run(test: &str) -> (Leftovers, Child, u32, String) {
    let child = spawn_host(
        &["--guest", "daemon", "--duration", "30", "--sizes", "64"],
        Stdio::null(),
    );
    let pid = child.id();
    let leftovers = Leftovers { pid };
    let ns = format!("pvnet-lt-{pid}");
    wait_until(&format!("{test}: {ns} appears"), T, || netns::exists(&ns));
    let mut guests = Vec::new();
    wait_until(&format!("{test}: the guest process appears"), T, || {
        guests = guest_processes(pid);
        !guests.is_empty()
    });
    assert_eq!(guests.len(), 1, "one guest process: {guests:?}");
    assert!(
        run_dir(pid).join("hv.sock").exists(),
        "the daemon's socket is in {}",
        run_dir(pid).display()
    );
    // Into a window: connecting and the handshake take well under a second.
    std::thread::sleep(Duration::from_millis(1500));
    (leftovers, child, guests[0], ns)
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a pid this test started.
    let r = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(r, 0, "kill: {}", std::io::Error::last_os_error());
}

#[test]
fn daemon_guest_moves_frames_both_ways_and_leaves_nothing_behind() {
    if !root_or_skip("daemon_guest_moves_frames_both_ways_and_leaves_nothing_behind") {
        return;
    }
    let child = spawn_host(
        &[
            "--guest",
            "daemon",
            "--duration",
            "0.3",
            "--sizes",
            "64,1514",
            "--json",
        ],
        Stdio::piped(),
    );
    let pid = child.id();
    // Checked below; this only cleans up after a failed assertion.
    let _leftovers = Leftovers { pid };
    let out = finish(child, "daemon mode");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "loadtest host failed: {stderr}");
    let r: HostReport = serde_json::from_slice(&out.stdout).expect("stdout is a HostReport");
    assert_eq!(r.guest, GuestMode::Daemon);
    assert!(r.ratios.is_empty(), "one mode: no ratios");
    assert_eq!(r.cells.len(), 4, "two sizes × two directions: {r:?}");
    for size in [64u32, 1514] {
        for dir in [HostDirection::GuestToHost, HostDirection::HostToGuest] {
            let c = r
                .cells
                .iter()
                .find(|c| c.frame_size == size && c.direction == dir)
                .unwrap_or_else(|| panic!("no {size}-byte {dir:?} cell"));
            assert_eq!(c.guest, GuestKind::Daemon, "{c:?}");
            let m = &c.measurement;
            assert!(m.frames > 0, "{size} {dir:?}: no frames: {c:?}");
            assert_eq!(m.bytes, m.frames * u64::from(size), "{c:?}");
            // What arrived in the window plus what was lost never exceeds what was
            // sent (host→guest: drops = sent − verified in total).
            assert!(m.frames + m.drops <= c.offered, "{c:?}");
            let secs = m.elapsed.as_secs_f64();
            assert!((0.25..5.0).contains(&secs), "window of {secs} s: {c:?}");
            assert!(m.mpps() > 0.0 && m.gbps() > 0.0, "{c:?}");
            // The guest process reported its worker's CPU time.
            let cpu = m
                .sides
                .iter()
                .find(|s| s.side == "guest")
                .expect("guest CPU");
            assert!(cpu.cpu.total() > Duration::ZERO, "{c:?}");
        }
    }
    assert!(!netns::exists(&r.namespace), "{} left behind", r.namespace);
    assert!(
        guest_processes(pid).into_iter().all(dead),
        "a guest process of {pid} is still running"
    );
    assert!(
        !run_dir(pid).exists(),
        "{} (socket, board) left behind",
        run_dir(pid).display()
    );
}

#[test]
fn sigterm_mid_run_stops_the_guest_process_and_cleans_up() {
    let test = "sigterm_mid_run_stops_the_guest_process_and_cleans_up";
    if !root_or_skip(test) {
        return;
    }
    let (_leftovers, child, guest, ns) = started_run(test);
    let pid = child.id();
    signal(pid, libc::SIGTERM);
    let out = finish(child, "after SIGTERM");
    assert_eq!(
        out.status.code(),
        Some(130),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // loadtest reaped its guest before it exited.
    assert!(
        !Path::new(&format!("/proc/{guest}")).exists(),
        "guest process {guest} survived its parent's SIGTERM"
    );
    assert!(!netns::exists(&ns), "{ns} left behind after SIGTERM");
    assert!(
        !run_dir(pid).exists(),
        "{} left behind after SIGTERM",
        run_dir(pid).display()
    );
}

#[test]
fn sigkill_of_loadtest_takes_the_guest_process_with_it() {
    let test = "sigkill_of_loadtest_takes_the_guest_process_with_it";
    if !root_or_skip(test) {
        return;
    }
    let (_leftovers, child, guest, _ns) = started_run(test);
    let pid = child.id();
    signal(pid, libc::SIGKILL);
    let _ = finish(child, "after SIGKILL");
    // PR_SET_PDEATHSIG: the kernel kills the guest when loadtest dies.
    wait_until(
        &format!("{test}: guest {guest} dies with its parent"),
        Duration::from_secs(10),
        || dead(guest),
    );
    // SIGKILL leaves loadtest no chance to clean up: `_leftovers` removes the
    // namespace and the directory (the daemon's socket file outlives the process).
}
