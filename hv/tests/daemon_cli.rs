//! The `hv` binary: xl-style commands against a daemon, their errors, and `hv serve`
//! itself (SIGTERM, restart over a stale socket).

mod daemon_common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use daemon_common::*;
use hv::env::{DomId, Store, XBT_NIL};

const T: Duration = Duration::from_secs(20);

/// Entry point of the guest processes (the test binary re-executed); a no-op when
/// run as a test.
#[test]
fn zz_guest_process_entry() {
    guest_process_entry();
}

fn hv(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hv-core"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("run hv")
}

fn stdout_ok(socket: &Path, args: &[&str]) -> String {
    let o = hv(socket, args);
    assert!(
        o.status.success(),
        "hv {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).expect("utf-8")
}

fn stderr_fail(socket: &Path, args: &[&str]) -> String {
    let o = hv(socket, args);
    assert!(!o.status.success(), "hv {args:?} should fail");
    String::from_utf8(o.stderr).expect("utf-8")
}

#[test]
fn xl_style_commands_list_inspect_detach_and_destroy() {
    let server = start_server("cli");
    let s = server.socket_path().to_path_buf();
    let mut g = spawn_guest(&s, "idle", &[("HV_VIFS", "2".into())]);
    let domid: DomId = g.expect("ready ", T).parse().expect("domid");
    let id = domid.to_string();

    let list = stdout_ok(&s, &["list"]);
    assert!(
        list.lines().next().is_some_and(|h| h.starts_with("Name")),
        "{list}"
    );
    let row = list
        .lines()
        .find(|l| l.starts_with("test-idle"))
        .expect("guest row");
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[1], id);
    assert_eq!(cols[3], "2", "two vifs");
    assert_eq!(cols[4], g.child.id().to_string(), "its pid");
    let json: serde_json::Value =
        serde_json::from_str(&stdout_ok(&s, &["list", "--json"])).expect("json");
    let doms = json.as_array().expect("array");
    assert!(doms
        .iter()
        .any(|d| d["name"] == "Domain-0" && d["domid"] == 0));
    assert!(doms
        .iter()
        .any(|d| d["domid"] == domid && d["memory_kib"] == 1024));

    let nl = stdout_ok(&s, &["network-list", &id]);
    let rows: Vec<&str> = nl.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{nl}");
    assert!(
        rows[0].starts_with("0 ") && rows[0].contains(&format!("00:16:3e:00:{:02x}:00", domid)),
        "{nl}"
    );
    assert!(rows[1].contains("Initialising"), "{nl}");
    let json: serde_json::Value =
        serde_json::from_str(&stdout_ok(&s, &["network-list", &id, "--json"])).expect("json");
    assert_eq!(json.as_array().map(Vec::len), Some(2));
    assert_eq!(json[1]["devid"], 1);
    assert_eq!(json[1]["backend_state"], "Initialising");
    assert!(
        json[1]["counters"].is_null(),
        "no backend runs: no counters"
    );

    stdout_ok(&s, &["xenstore-write", "/tool/greeting", "hello world"]);
    assert_eq!(
        stdout_ok(&s, &["xenstore-read", "/tool/greeting"]),
        "hello world\n"
    );
    let ls = stdout_ok(&s, &["xenstore-ls", &format!("/local/domain/{domid}")]);
    assert!(
        ls.contains("device = \"\"") && ls.contains("   mac = \"00:16:3e"),
        "{ls}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&stdout_ok(&s, &["xenstore-ls", "/tool", "--json"])).expect("json");
    assert_eq!(json[0]["path"], "/tool/greeting");
    assert_eq!(json[0]["value"], "hello world");

    stdout_ok(&s, &["network-detach", &id, "1"]);
    let dom0 = server.hypervisor().store(0).expect("dom0");
    assert!(
        dom0.read(
            XBT_NIL,
            &format!("/local/domain/0/backend/vif/{domid}/1/state")
        )
        .is_err(),
        "backend dir removed"
    );
    assert!(
        dom0.read(
            XBT_NIL,
            &format!("/local/domain/{domid}/device/vif/1/state")
        )
        .is_err(),
        "frontend dir removed"
    );
    assert_eq!(
        stdout_ok(&s, &["network-list", &id]).lines().count(),
        2,
        "one vif left"
    );
    let err = stderr_fail(&s, &["network-detach", &id, "1"]);
    assert!(
        err.contains("has no vif 1") && err.contains("network-list"),
        "{err}"
    );

    stdout_ok(&s, &["destroy", &id]);
    assert!(g.wait_exit(T).success(), "guest saw its domain destroyed");
    assert!(!stdout_ok(&s, &["list"]).contains("test-idle"));
}

#[test]
fn errors_name_the_problem_and_the_fix() {
    let missing = tmp_socket("cli-missing");
    let _ = std::fs::remove_file(&missing);
    let err = stderr_fail(&missing, &["list"]);
    assert!(
        err.contains("no socket at") && err.contains("hv serve --socket"),
        "{err}"
    );

    let server = start_server("cli-errors");
    let s = server.socket_path();
    let err = stderr_fail(s, &["destroy", "999"]);
    assert!(
        err.contains("domain 999 does not exist") && err.contains("hv list"),
        "{err}"
    );
    let err = stderr_fail(s, &["network-list", "999"]);
    assert!(err.contains("does not exist"), "{err}");
    let err = stderr_fail(s, &["destroy", "0"]);
    assert!(err.contains("Domain-0 cannot be destroyed"), "{err}");
    let err = stderr_fail(s, &["xenstore-read", "/no/such/node"]);
    assert!(
        err.contains("/no/such/node") && err.contains("ENOENT"),
        "{err}"
    );
    let err = stderr_fail(s, &["serve", "--bridge", "nosuchbr0"]);
    assert!(
        err.contains("bridge nosuchbr0 does not exist") && err.contains("ip link add"),
        "{err}"
    );
    let err = stderr_fail(s, &["serve"]);
    assert!(err.contains("already serving"), "{err}");
}

/// Start `hv serve` and wait until it says it serves.
fn serve(socket: &Path) -> std::process::Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hv-core"))
        .arg("--socket")
        .arg(socket)
        .arg("serve")
        .stdout(Stdio::piped())
        .spawn()
        .expect("hv serve");
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    out.read_line(&mut line).expect("read");
    assert!(line.starts_with("hv: serving"), "{line}");
    // Keep draining its output so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in out.lines() {});
    child
}

fn signal(child: &std::process::Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

#[test]
fn hv_serve_stops_on_sigterm_and_restarts_over_a_stale_socket() {
    let s = tmp_socket("cli-serve");
    let _ = std::fs::remove_file(&s);
    let mut daemon = serve(&s);
    let mut g = spawn_guest(&s, "idle", &[]);
    g.expect("ready ", T);
    assert!(stdout_ok(&s, &["list"]).contains("test-idle"));
    signal(&daemon, libc::SIGTERM);
    assert!(
        daemon.wait().expect("wait").success(),
        "clean exit on SIGTERM"
    );
    assert!(g.wait_exit(T).success(), "the guest saw the daemon go");
    assert!(!s.exists(), "socket removed");

    // A daemon that dies hard leaves its socket; the next one replaces it.
    let mut daemon = serve(&s);
    signal(&daemon, libc::SIGKILL);
    let _ = daemon.wait();
    assert!(s.exists(), "SIGKILL leaves the socket behind");
    let err = stderr_fail(&s, &["list"]);
    assert!(err.contains("nobody listens"), "{err}");
    let mut daemon = serve(&s);
    let mut g = spawn_guest(&s, "xenstore", &[]);
    g.expect("ok", T);
    assert!(g.wait_exit(T).success());
    signal(&daemon, libc::SIGINT);
    assert!(daemon.wait().expect("wait").success());
}
