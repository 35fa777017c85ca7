//! What a guest process does in the tests. Each role prints `key value` lines the
//! test reads, takes commands on stdin, and exits 0 on success.

use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, Instant};

use hv::client::{connect_with, GuestConfig, RemoteGuestEnv, Toolstack};
use hv::env::{EventChannel, GuestEnv, StoreError, XBT_NIL};

macro_rules! check {
    ($cond:expr, $($msg:tt)*) => {
        if !$cond {
            println!("fail: {}", format!($($msg)*));
            return 1;
        }
    };
}

fn stdin_line() -> String {
    let mut s = String::new();
    let _ = std::io::stdin().lock().read_line(&mut s);
    s.trim().to_string()
}

fn env_u32(k: &str, default: u32) -> u32 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn guest(socket: &Path, role: &str) -> RemoteGuestEnv {
    let cfg = GuestConfig {
        name: format!("test-{role}"),
        memory_frames: 256,
        grant_frames: 1,
        max_ports: 63,
        vifs: env_u32("HV_VIFS", 0),
    };
    match connect_with(socket, &cfg) {
        Ok(e) => e,
        Err(e) => {
            println!("fail: connect: {e}");
            std::process::exit(1);
        }
    }
}

pub fn run(role: &str, socket: &Path) -> i32 {
    match role {
        "xenstore" => xenstore(socket),
        "grant" => grant(socket),
        "pingpong-backend" => pingpong_backend(socket),
        "pp-a" => pp_a(socket),
        "pp-b" => pp_b(socket),
        "notify-exit" => notify_exit(socket),
        "echo" => echo(socket),
        "idle" => idle(socket),
        "wait-disconnect" => wait_disconnect(socket),
        "as-nobody" => as_nobody(socket),
        other => {
            println!("fail: unknown role {other}");
            2
        }
    }
}

fn xenstore(socket: &Path) -> i32 {
    let env = guest(socket, "xenstore");
    let me = env.domid();
    let st = env.store();
    let home = format!("/local/domain/{me}");
    check!(
        st.write(XBT_NIL, &format!("{home}/data"), b"hello").is_ok(),
        "write own node"
    );
    check!(
        st.read(XBT_NIL, &format!("{home}/data")).ok().as_deref() == Some(&b"hello"[..]),
        "read back"
    );
    check!(
        st.directory(XBT_NIL, &home)
            .is_ok_and(|d| d.contains(&"data".to_string())),
        "directory"
    );
    check!(
        st.get_perms(XBT_NIL, &home)
            .is_ok_and(|p| p.first().is_some_and(|p| p.domid == me)),
        "owner of home"
    );
    // Another domain's nodes are out of reach.
    let other = env_u32("HV_OTHER", 0);
    let secret = format!("/local/domain/{other}/secret");
    let r = st.read(XBT_NIL, &secret);
    check!(
        r == Err(StoreError::PermissionDenied),
        "reading {secret} gave {r:?}"
    );
    let w = st.write(XBT_NIL, &secret, b"stolen");
    check!(
        w == Err(StoreError::PermissionDenied),
        "writing {secret} gave {w:?}"
    );
    // A transaction.
    let tx = match st.transaction_start() {
        Ok(t) => t,
        Err(e) => {
            println!("fail: transaction_start: {e}");
            return 1;
        }
    };
    check!(
        st.write(tx, &format!("{home}/tx"), b"1").is_ok(),
        "write in tx"
    );
    check!(
        st.read(XBT_NIL, &format!("{home}/tx")) == Err(StoreError::NotFound),
        "tx isolation"
    );
    check!(st.transaction_end(tx, true).is_ok(), "commit");
    check!(
        st.read(XBT_NIL, &format!("{home}/tx")).ok().as_deref() == Some(&b"1"[..]),
        "committed"
    );
    // A watch: fires at registration, then on a change.
    let w = format!("{home}/w");
    check!(st.watch(&w, "tok").is_ok(), "watch");
    let first = st.next_watch_event(Some(Duration::from_secs(5)));
    check!(
        first
            .as_ref()
            .is_some_and(|e| e.path == w && e.token == "tok"),
        "initial watch event {first:?}"
    );
    check!(st.write(XBT_NIL, &w, b"x").is_ok(), "write watched");
    let fired = st.next_watch_event(Some(Duration::from_secs(5)));
    check!(fired.is_some_and(|e| e.path == w), "watch fired on write");
    check!(st.unwatch(&w, "tok").is_ok(), "unwatch");
    println!("ok");
    0
}

fn grant(socket: &Path) -> i32 {
    let env = guest(socket, "grant");
    let pages = match env.grant_pages(0, 1, false) {
        Ok(p) => p,
        Err(e) => {
            println!("fail: grant: {e}");
            return 1;
        }
    };
    let page = &pages[0];
    for i in 0..4096usize {
        // SAFETY: the granted page is 4 KiB of our own mapped RAM.
        unsafe { page.ptr.as_ptr().add(i).write((i % 251) as u8) };
    }
    println!("domid {}", env.domid());
    println!("gref {}", page.gref);
    check!(stdin_line() == "check", "expected check");
    for i in 100..200usize {
        // SAFETY: as above.
        let b = unsafe { page.ptr.as_ptr().add(i).read_volatile() };
        check!(
            b == 0xA5,
            "byte {i} is {b:#x}, the backend's copy did not land"
        );
    }
    // The backend unmapped: ending the grant must work now.
    check!(env.end_grants(pages).is_ok(), "end_grants after unmap");
    println!("ok");
    0
}

fn stats(mut v: Vec<u64>) -> String {
    v.sort_unstable();
    let p = |q: f64| v[((q / 100.0) * (v.len() - 1) as f64).round() as usize];
    let mean = v.iter().sum::<u64>() / v.len() as u64;
    format!("{} {} {}", p(50.0), p(99.0), mean)
}

fn pingpong(ch: &impl EventChannel, rounds: usize) -> Result<Vec<u64>, String> {
    let mut rtt = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let t = Instant::now();
        ch.notify();
        if !ch.wait(Some(Duration::from_secs(5))) {
            return Err(format!("no answer in round {i}"));
        }
        rtt.push(t.elapsed().as_nanos() as u64);
    }
    Ok(rtt)
}

fn pingpong_backend(socket: &Path) -> i32 {
    let env = guest(socket, "pingpong");
    let ch = match env.alloc_unbound(0) {
        Ok(c) => c,
        Err(e) => {
            println!("fail: alloc_unbound: {e}");
            return 1;
        }
    };
    println!("domid {}", env.domid());
    println!("port {}", ch.port());
    let rounds: usize = stdin_line()
        .strip_prefix("go ")
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    check!(rounds > 0, "expected go <rounds>");
    match pingpong(&ch, rounds) {
        Ok(rtt) => println!("rtt {}", stats(rtt)),
        Err(e) => {
            println!("fail: {e}");
            return 1;
        }
    }
    // The cost of one notify as the guest sees it: a write(2).
    let n = 100_000u64;
    let t = Instant::now();
    for _ in 0..n {
        ch.notify();
    }
    println!("notify_ns {}", t.elapsed().as_nanos() as u64 / n);
    println!("ok");
    0
}

fn pp_a(socket: &Path) -> i32 {
    let env = guest(socket, "pp-a");
    println!("ready {}", env.domid());
    let peer: u16 = stdin_line()
        .strip_prefix("peer ")
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    check!(peer != 0, "expected peer <domid>");
    let ch = match env.alloc_unbound(peer) {
        Ok(c) => c,
        Err(e) => {
            println!("fail: alloc_unbound: {e}");
            return 1;
        }
    };
    println!("port {}", ch.port());
    let rounds: usize = stdin_line()
        .strip_prefix("go ")
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    check!(rounds > 0, "expected go <rounds>");
    match pingpong(&ch, rounds) {
        Ok(rtt) => println!("rtt {}", stats(rtt)),
        Err(e) => {
            println!("fail: {e}");
            return 1;
        }
    }
    println!("ok");
    0
}

fn pp_b(socket: &Path) -> i32 {
    let env = guest(socket, "pp-b");
    println!("ready {}", env.domid());
    let line = stdin_line();
    let parts: Vec<u32> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|s| s.parse().ok())
        .collect();
    check!(
        parts.len() == 3,
        "expected bind <domid> <port> <rounds>, got {line}"
    );
    let ch = match env.bind_interdomain(parts[0] as u16, parts[1]) {
        Ok(c) => c,
        Err(e) => {
            println!("fail: bind: {e}");
            return 1;
        }
    };
    // Xen marks a freshly bound port pending.
    ch.try_consume();
    println!("bound");
    for i in 0..parts[2] {
        if !ch.wait(Some(Duration::from_secs(5))) {
            println!("fail: no ping in round {i}");
            return 1;
        }
        ch.notify();
    }
    println!("ok");
    0
}

/// Notify the backend once on "go", then exit at once: the notify must not be lost to
/// the port closing with the process.
fn notify_exit(socket: &Path) -> i32 {
    let env = guest(socket, "notify-exit");
    let ch = match env.alloc_unbound(0) {
        Ok(c) => c,
        Err(e) => {
            println!("fail: alloc_unbound: {e}");
            return 1;
        }
    };
    println!("domid {}", env.domid());
    println!("port {}", ch.port());
    check!(stdin_line() == "go", "expected go");
    ch.notify();
    0
}

fn echo(socket: &Path) -> i32 {
    let env = guest(socket, "echo");
    let ch = match env.alloc_unbound(0) {
        Ok(c) => c,
        Err(e) => {
            println!("fail: alloc_unbound: {e}");
            return 1;
        }
    };
    println!("domid {}", env.domid());
    println!("port {}", ch.port());
    while env.is_connected() {
        if ch.wait(Some(Duration::from_millis(200))) {
            ch.notify();
        }
    }
    0
}

fn idle(socket: &Path) -> i32 {
    let env = guest(socket, "idle");
    let pages = env.grant_pages(0, 2, true).unwrap_or_default();
    let chans: Vec<_> = (0..2).filter_map(|_| env.alloc_unbound(0).ok()).collect();
    let home = format!("/local/domain/{}", env.domid());
    let _ = env.store().watch(&home, "idle");
    check!(pages.len() == 2 && chans.len() == 2, "setup");
    println!("gref {}", pages[0].gref);
    println!("ready {}", env.domid());
    while env.is_connected() {
        std::thread::sleep(Duration::from_millis(50));
    }
    0
}

fn wait_disconnect(socket: &Path) -> i32 {
    let env = guest(socket, "wait-disconnect");
    let me = env.domid();
    let st = env.store();
    let be_state = format!("/local/domain/0/backend/vif/{me}/0/state");
    let fe_state = format!("/local/domain/{me}/device/vif/0/state");
    let _ = st.watch(&be_state, "be");
    println!("ready {me}");
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match st.next_watch_event(Some(Duration::from_millis(100))) {
            Some(_) => {
                let Ok(v) = st.read(XBT_NIL, &be_state) else {
                    continue;
                };
                let v = String::from_utf8_lossy(&v).into_owned();
                if v == "5" && seen.last().map(String::as_str) != Some("5") {
                    // What netfront does when its backend closes: close too.
                    let _ = st.write(XBT_NIL, &fe_state, b"6");
                }
                if seen.last() != Some(&v) {
                    seen.push(v);
                }
            }
            None if !env.is_connected() => break,
            None => {}
        }
    }
    check!(!env.is_connected(), "still connected after 30 s");
    println!("states {}", seen.join(","));
    println!("disconnected");
    0
}

fn as_nobody(socket: &Path) -> i32 {
    // SAFETY: plain syscalls changing this (single-purpose) process's credentials.
    let dropped = unsafe { libc::setgid(65534) == 0 && libc::setuid(65534) == 0 };
    check!(dropped, "setuid(nobody) failed: run the tests as root");
    match Toolstack::connect(socket) {
        Ok(_) => {
            println!("fail: nobody became the toolstack");
            1
        }
        Err(e) => {
            println!("refused {e}");
            0
        }
    }
}
