//! `loadtest host` end to end (root): the binary builds its namespace, bridge, TAP,
//! netback and guest, measures both directions, and removes the namespace — after a
//! normal run and after Ctrl-C. Without root the tests fail with an explanation,
//! unless PVNET_SKIP_ROOT_TESTS=1 (the project's convention). The privilege check
//! itself is tested as an unprivileged user (root drops to `nobody` for it).

mod common;

use std::os::unix::process::CommandExt as _;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{is_root, root_or_skip};
use loadtest::host::{netns, HostDirection, HostReport, NEEDS_ROOT};

fn loadtest() -> Command {
    Command::new(env!("CARGO_BIN_EXE_loadtest"))
}

fn run_host(args: &[&str]) -> Output {
    let mut a = vec!["host"];
    a.extend_from_slice(args);
    loadtest()
        .args(&a)
        .output()
        .expect("the loadtest binary runs")
}

#[test]
fn host_mode_moves_frames_both_ways_and_removes_its_namespace() {
    if !root_or_skip("host_mode_moves_frames_both_ways_and_removes_its_namespace") {
        return;
    }
    let out = run_host(&["--duration", "0.3", "--sizes", "64,1514", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "loadtest host failed: {stderr}");
    let r: HostReport = serde_json::from_slice(&out.stdout).expect("stdout is a HostReport");
    assert!(r.namespace.starts_with("pvnet-lt-"), "{}", r.namespace);
    assert!(
        !netns::exists(&r.namespace),
        "namespace {} left behind",
        r.namespace
    );
    assert_eq!(r.cells.len(), 4, "two sizes × two directions");
    for size in [64u32, 1514] {
        for dir in [HostDirection::GuestToHost, HostDirection::HostToGuest] {
            let c = r
                .cells
                .iter()
                .find(|c| c.frame_size == size && c.direction == dir)
                .unwrap_or_else(|| panic!("no {size}-byte {dir:?} cell"));
            let m = &c.measurement;
            assert!(m.frames > 0, "{size} {dir:?}: no frames: {c:?}");
            assert_eq!(m.bytes, m.frames * u64::from(size), "{c:?}");
            assert!(m.frames <= c.offered, "more arrived than was sent: {c:?}");
            let secs = m.elapsed.as_secs_f64();
            assert!((0.25..5.0).contains(&secs), "window of {secs} s: {c:?}");
            assert!(m.mpps() > 0.0 && m.gbps() > 0.0, "{c:?}");
        }
    }
}

#[test]
fn host_mode_cleans_up_after_ctrl_c() {
    if !root_or_skip("host_mode_cleans_up_after_ctrl_c") {
        return;
    }
    // Long cells: the interrupt lands in the middle of a window.
    let mut child = loadtest()
        .args(["host", "--duration", "30", "--sizes", "64"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the loadtest binary starts");
    let ns = format!("pvnet-lt-{}", child.id());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !netns::exists(&ns) {
        assert!(Instant::now() < deadline, "{ns} never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Into a window (set-up takes tens of milliseconds).
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: kill(2) on our own child's pid.
    let r = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(r, 0, "kill: {}", std::io::Error::last_os_error());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for loadtest") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("loadtest host did not stop within 20 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().expect("stderr");
    assert_eq!(
        status.code(),
        Some(130),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!netns::exists(&ns), "{ns} left behind after SIGINT");
}

#[test]
fn host_mode_without_root_says_why() {
    let mut cmd = loadtest();
    cmd.args(["host", "--duration", "0.1"]);
    if is_root() {
        // Drop to `nobody` to see what an unprivileged user gets.
        cmd.uid(65534).gid(65534);
    }
    let out = cmd.output().expect("the loadtest binary runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(NEEDS_ROOT), "stderr: {stderr}");
}

#[test]
fn host_mode_rejects_frames_it_cannot_send() {
    // Checked before the privilege check, so this runs as anyone.
    let out = run_host(&["--sizes", "9000"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--sizes 9000"), "stderr: {stderr}");
}
