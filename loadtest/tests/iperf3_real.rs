//! loadtest's iperf3 server and client against Debian's real `iperf3` binary, on the
//! loopback interface (127.0.0.1) only, on ports picked free by the kernel. Every
//! process and thread is bounded in time: a hang fails the test, it never blocks it.
//!
//! Also: hostile control connections (bad cookie, garbage JSON, oversized length,
//! silent peers, busy server, wrong-cookie data streams) are rejected cleanly and the
//! server still serves a real client afterwards.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use loadtest::iperf3::proto::{ie, Cookie, State};
use loadtest::iperf3::{
    Client, ClientConfig, Outcome, Server, ServerConfig, StdNet, TestError, TestParams,
};
use serde_json::Value;

const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// Runs `iperf3 ARGS` with a hard time limit; returns (exit ok, stdout).
fn iperf3(args: &[&str], limit: Duration) -> (bool, String) {
    let mut child = Command::new("iperf3")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("running iperf3: {e} (these tests need Debian's iperf3: apt-get install iperf3)")
        });
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait().expect("waiting for iperf3") {
            Some(_) => break,
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("iperf3 {args:?} did not finish within {limit:?}");
            }
            None => thread::sleep(Duration::from_millis(20)),
        }
    }
    let out = child.wait_with_output().expect("iperf3 output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn bytes(v: &Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for k in path {
        cur = &cur[*k];
    }
    cur.as_u64()
        .unwrap_or_else(|| panic!("{path:?} is not a byte count in {v:#}"))
}

/// A port the kernel says is free right now.
fn free_port() -> u16 {
    TcpListener::bind((LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Our server on 127.0.0.1 in a thread; stopped (and joined) by `finish`.
struct OurServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<Vec<Result<Outcome, TestError>>>>,
}

impl OurServer {
    fn start(cfg: ServerConfig) -> OurServer {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let st = stop.clone();
        let thread = thread::spawn(move || {
            let mut net = StdNet::bound_to(LOCALHOST.into());
            let mut server =
                Server::new(&mut net, ServerConfig { port: 0, ..cfg }).expect("listen");
            tx.send(server.port(&net).expect("bound port"))
                .expect("report port");
            let mut all = Vec::new();
            server.run(&mut net, &st, |_| {});
            all.extend(server.take_results());
            server.close(&mut net);
            all
        });
        let port = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("server started");
        OurServer {
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// Waits (bounded) for a one-off server to end, or stops a serving one.
    fn finish(mut self, limit: Duration) -> Vec<Result<Outcome, TestError>> {
        let t = self.thread.take().expect("running");
        let deadline = Instant::now() + limit;
        while !t.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        self.stop.store(true, Ordering::Relaxed);
        t.join().expect("server thread panicked")
    }
}

impl Drop for OurServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn one_off() -> ServerConfig {
    ServerConfig {
        one_off: true,
        ..ServerConfig::default()
    }
}

fn only_ok(results: Vec<Result<Outcome, TestError>>) -> Outcome {
    assert_eq!(results.len(), 1, "one test expected: {results:?}");
    results
        .into_iter()
        .next()
        .and_then(|r| r.map_err(|e| panic!("test failed: {e:?}")).ok())
        .expect("one outcome")
}

/// Runs the real client against our one-off server.
fn real_client(args: &[&str], secs: u64) -> (Value, Outcome) {
    let server = OurServer::start(one_off());
    let port = server.port.to_string();
    let mut a = vec!["-c", "127.0.0.1", "-p", &port, "-J"];
    a.extend_from_slice(args);
    let (ok, out) = iperf3(&a, Duration::from_secs(secs + 20));
    let client = json(&out);
    assert!(ok, "iperf3 failed: {out}");
    assert!(client.get("error").is_none(), "iperf3 error: {out}");
    let ours = only_ok(server.finish(Duration::from_secs(10)));
    (client, ours)
}

#[test]
fn real_client_5s_agrees_with_our_server_on_bytes() {
    let (c, o) = real_client(&["-t", "5"], 5);
    let client_sent = bytes(&c, &["end", "sum_sent", "bytes"]);
    let client_view_received = bytes(&c, &["end", "sum_received", "bytes"]);
    eprintln!(
        "iperf3 -c -t 5: client sent {client_sent} B, our server received {} B ({:.2} Gbit/s)",
        o.bytes_local,
        o.bytes_local as f64 * 8.0 / o.duration / 1e9
    );
    assert!(client_sent > 0);
    // Our server drains after TEST_END, so it counts every byte the client sent.
    assert_eq!(o.bytes_local, client_sent);
    assert_eq!(o.bytes_received, client_sent);
    assert_eq!(client_view_received, o.bytes_local);
    assert_eq!(o.bytes_sent, client_sent, "the client's results reached us");
    assert_eq!(
        (o.params.time, o.params.parallel, o.params.reverse),
        (5, 1, false)
    );
    assert!((4.5..8.0).contains(&o.duration), "duration {}", o.duration);
    // One interval per second at both ends.
    let ours = o.json["intervals"].as_array().expect("intervals").len();
    let theirs = c["intervals"].as_array().expect("intervals").len();
    assert!(
        (5..=6).contains(&ours) && (5..=6).contains(&theirs),
        "{ours} {theirs}"
    );
    assert_eq!(c["start"]["cookie"].as_str(), Some(o.cookie.as_str()));
}

#[test]
fn real_client_reverse() {
    let (c, o) = real_client(&["-t", "2", "-R"], 2);
    let sent = bytes(&c, &["end", "sum_sent", "bytes"]);
    let received = bytes(&c, &["end", "sum_received", "bytes"]);
    assert!(o.we_sent && o.params.reverse);
    // The server's count is what the client reports as sent...
    assert_eq!(sent, o.bytes_local);
    assert_eq!(
        o.bytes_received, received,
        "the client's results reached us"
    );
    // ...and iperf3's client stops counting at TEST_END, so it saw at most that, short
    // by no more than what the socket buffers hold.
    assert!(received > 0 && received <= sent, "{received} > {sent}");
    assert!(sent - received < 64 << 20, "{sent} vs {received}");
}

#[test]
fn real_client_two_streams() {
    let (c, o) = real_client(&["-t", "2", "-P", "2"], 2);
    let streams = c["end"]["streams"].as_array().expect("streams");
    assert_eq!(streams.len(), 2);
    assert_eq!(o.streams.len(), 2);
    assert_eq!(
        o.streams.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![1, 3],
        "iperf3's stream numbering"
    );
    for (s, ours) in streams.iter().zip(&o.streams) {
        let sent = bytes(s, &["sender", "bytes"]);
        assert!(sent > 0);
        assert_eq!(ours.received, sent, "stream {}", ours.id);
        assert_eq!(bytes(s, &["receiver", "bytes"]), ours.received);
    }
    assert_eq!(o.bytes_local, bytes(&c, &["end", "sum_sent", "bytes"]));
}

#[test]
fn real_client_byte_count() {
    let (c, o) = real_client(&["-n", "20M"], 10);
    assert_eq!(bytes(&c, &["end", "sum_sent", "bytes"]), 20 << 20);
    assert_eq!(o.bytes_local, 20 << 20);
    assert_eq!(o.params.bytes, 20 << 20);
    assert_eq!(o.params.time, 0);
}

/// The real server (`iperf3 -s -1 -J`) in a child process, and our client.
fn our_client_vs_real_server(params: TestParams) -> (Outcome, Value) {
    let port = free_port();
    let ps = port.to_string();
    let limit = Duration::from_secs(params.time + 20);
    let srv =
        thread::spawn(move || iperf3(&["-s", "-1", "-B", "127.0.0.1", "-p", &ps, "-J"], limit));
    // Bounded wait for the server to listen.
    let addr = SocketAddr::from((LOCALHOST, port));
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut net = StdNet::new();
    let mut last = None;
    let outcome = loop {
        assert!(
            Instant::now() < deadline,
            "iperf3 -s never accepted: {last:?}"
        );
        match Client::new(&mut net, ClientConfig::new(addr, params.clone())) {
            Ok(c) => break c.run(&mut net, &AtomicBool::new(false)),
            Err(e) => {
                last = Some(e);
                thread::sleep(Duration::from_millis(50));
            }
        }
    };
    let (ok, out) = srv.join().expect("iperf3 thread");
    let outcome = outcome.unwrap_or_else(|e| panic!("our client failed: {e:?}; server: {out}"));
    assert!(ok, "iperf3 -s failed: {out}");
    (outcome, json(&out))
}

#[test]
fn our_client_against_real_server() {
    let (o, s) = our_client_vs_real_server(TestParams {
        time: 2,
        ..TestParams::default()
    });
    let server_received = bytes(&s, &["end", "sum_received", "bytes"]);
    assert!(o.we_sent && o.bytes_local > 0);
    assert_eq!(o.bytes_sent, o.bytes_local);
    // What the real server reports in its own JSON is what it told us.
    assert_eq!(o.bytes_received, server_received);
    // iperf3's server stops counting at TEST_END: at most what we sent.
    assert!(server_received > 0 && server_received <= o.bytes_local);
    assert_eq!(s["start"]["cookie"].as_str(), Some(o.cookie.as_str()));
    assert_eq!(s["start"]["test_start"]["duration"].as_u64(), Some(2));
    // Our document has iperf3's shape.
    for k in ["start", "intervals", "end"] {
        assert!(o.json.get(k).is_some(), "no {k}");
    }
    assert!(o.json["intervals"].as_array().is_some_and(|v| v.len() >= 2));
}

#[test]
fn our_client_against_real_server_reverse_two_streams() {
    let (o, s) = our_client_vs_real_server(TestParams {
        time: 2,
        parallel: 2,
        reverse: true,
        ..TestParams::default()
    });
    assert!(!o.we_sent);
    // We read until the server closed the streams: every byte it sent is counted.
    assert_eq!(o.bytes_local, bytes(&s, &["end", "sum_sent", "bytes"]));
    assert_eq!(o.bytes_sent, o.bytes_local);
    let theirs = s["end"]["streams"].as_array().expect("streams");
    assert_eq!(theirs.len(), 2);
    for (t, ours) in theirs.iter().zip(&o.streams) {
        assert_eq!(
            bytes(t, &["sender", "bytes"]),
            ours.received,
            "stream {}",
            ours.id
        );
        assert!(ours.received > 0);
    }
}

#[test]
fn real_client_unsupported_options_get_iperf3_errors() {
    for (opt, what) in [("-u", "UDP"), ("--bidir", "bidirectional")] {
        let server = OurServer::start(one_off());
        let port = server.port.to_string();
        let started = Instant::now();
        let (_, out) = iperf3(
            &["-c", "127.0.0.1", "-p", &port, "-t", "1", "-J", opt],
            Duration::from_secs(15),
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        let c = json(&out);
        let err = c["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error: {out}"));
        assert!(err.contains("not implemented"), "{opt}: {err}");
        let results = server.finish(Duration::from_secs(5));
        match results.as_slice() {
            [Err(e)] => {
                assert_eq!(e.i_errno, Some(ie::UNIMP));
                assert!(e.message.contains(what), "{e:?}");
            }
            other => panic!("{opt}: {other:?}"),
        }
    }
}

/// Reads until EOF or `limit`; panics on a hang.
fn read_to_close(s: &mut TcpStream, limit: Duration) -> Vec<u8> {
    s.set_read_timeout(Some(limit)).expect("timeout");
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("no close within {limit:?} ({e}); got {out:?}"),
        }
    }
}

fn connect(port: u16) -> TcpStream {
    TcpStream::connect((LOCALHOST, port)).expect("connect")
}

fn hello(port: u16) -> (TcpStream, Cookie) {
    let mut s = connect(port);
    let c = Cookie::generate();
    s.write_all(&c.0).expect("cookie");
    let mut b = [0u8; 1];
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.read_exact(&mut b).expect("PARAM_EXCHANGE");
    assert_eq!(b[0], State::ParamExchange.byte());
    (s, c)
}

fn send_json(s: &mut TcpStream, len: u32, body: &[u8]) {
    s.write_all(&len.to_be_bytes()).expect("length");
    s.write_all(body).expect("body");
}

#[test]
fn hostile_control_connections_are_rejected_and_server_survives() {
    let server = OurServer::start(ServerConfig {
        setup_timeout: Duration::from_millis(700),
        ..ServerConfig::default()
    });
    let port = server.port;
    let limit = Duration::from_secs(5);
    let refusal = |code: i32| {
        let mut v = vec![State::ServerError.byte()];
        v.extend_from_slice(&code.to_be_bytes());
        v.extend_from_slice(&0i32.to_be_bytes());
        v
    };

    // 1. A cookie without its NUL: closed without a word.
    let mut s = connect(port);
    s.write_all(&[b'A'; 37]).expect("junk");
    assert_eq!(read_to_close(&mut s, limit), b"");

    // 2. Garbage where the parameters JSON goes: SERVER_ERROR(IERECVPARAMS).
    let (mut s, _) = hello(port);
    send_json(&mut s, 9, b"{not json");
    assert_eq!(read_to_close(&mut s, limit), refusal(ie::RECVPARAMS));

    // 3. JSON that is not an object.
    let (mut s, _) = hello(port);
    send_json(&mut s, 7, b"[1,2,3]");
    assert_eq!(read_to_close(&mut s, limit), refusal(ie::RECVPARAMS));

    // 4. An absurd length: refused at once, nothing allocated, no waiting for 4 GB.
    let (mut s, _) = hello(port);
    s.write_all(&u32::MAX.to_be_bytes()).expect("length");
    let got = read_to_close(&mut s, limit);
    assert!(got.is_empty() || got == refusal(ie::RECVPARAMS), "{got:?}");

    // 5. Out-of-range parameters get iperf3's specific errors.
    let (mut s, _) = hello(port);
    let body = br#"{"tcp":true,"time":1,"parallel":100000,"len":131072}"#;
    send_json(&mut s, body.len() as u32, body);
    assert_eq!(read_to_close(&mut s, limit), refusal(ie::NUMSTREAMS));

    // 6. A peer that never sends its cookie is dropped after the setup timeout.
    let started = Instant::now();
    let mut s = connect(port);
    assert_eq!(read_to_close(&mut s, limit), b"");
    assert!(started.elapsed() >= Duration::from_millis(600));

    // 7. Busy: while one test waits in CREATE_STREAMS, a newcomer with the wrong
    //    cookie gets ACCESS_DENIED; after it, one more also does.
    let (mut a, _) = hello(port);
    let body = br#"{"tcp":true,"time":1,"parallel":1,"len":1024}"#;
    send_json(&mut a, body.len() as u32, body);
    let mut b = [0u8; 1];
    a.read_exact(&mut b).expect("CREATE_STREAMS");
    assert_eq!(b[0], State::CreateStreams.byte());
    let mut intruder = connect(port);
    intruder
        .write_all(&Cookie::generate().0)
        .expect("wrong cookie");
    assert_eq!(
        read_to_close(&mut intruder, limit),
        [State::AccessDenied.byte()]
    );
    // The real test's controller gives up: CLIENT_TERMINATE ends it cleanly.
    a.write_all(&[State::ClientTerminate.byte()])
        .expect("terminate");
    assert_eq!(read_to_close(&mut a, limit), b"");

    // 8. Unknown state byte in the middle of setup.
    let (mut s, _) = hello(port);
    send_json(&mut s, body.len() as u32, body);
    s.read_exact(&mut b).expect("CREATE_STREAMS");
    s.write_all(&[0x55]).expect("junk state");
    assert_eq!(read_to_close(&mut s, limit), b"");

    // After all that, the real client still gets a clean test.
    let ps = port.to_string();
    let (ok, out) = iperf3(
        &["-c", "127.0.0.1", "-p", &ps, "-t", "1", "-J"],
        Duration::from_secs(20),
    );
    assert!(ok, "{out}");
    let c = json(&out);
    let sent = bytes(&c, &["end", "sum_sent", "bytes"]);

    let results = server.finish(Duration::ZERO);
    let errors: Vec<Option<i32>> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| e.i_errno))
        .collect();
    assert_eq!(
        errors,
        vec![
            Some(ie::RECVCOOKIE),
            Some(ie::RECVPARAMS),
            Some(ie::RECVPARAMS),
            Some(ie::RECVPARAMS),
            Some(ie::NUMSTREAMS),
            Some(ie::NOMSG),
            Some(ie::CLIENTTERM),
            Some(ie::MESSAGE),
        ]
    );
    let good: Vec<&Outcome> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(good.len(), 1);
    assert_eq!(good[0].bytes_local, sent);
}

#[test]
fn our_client_and_server_on_kernel_tcp_and_busy_refusal() {
    let server = OurServer::start(ServerConfig::default());
    let addr = SocketAddr::from((LOCALHOST, server.port));
    let params = TestParams {
        time: 1,
        parallel: 3,
        ..TestParams::default()
    };
    // A first client holds the server in setup (cookie only) ...
    let (mut holder, _) = hello(server.port);
    // ... so a second one is told the server is busy.
    let mut net = StdNet::new();
    let busy = Client::new(&mut net, ClientConfig::new(addr, params.clone()))
        .and_then(|c| c.run(&mut net, &AtomicBool::new(false)));
    assert_eq!(
        busy.map(|o| o.bytes_local).unwrap_err().i_errno,
        Some(ie::ACCESSDENIED)
    );
    holder
        .write_all(&[State::ClientTerminate.byte()])
        .expect("terminate");
    drop(holder);
    thread::sleep(Duration::from_millis(100));

    let o = Client::new(&mut net, ClientConfig::new(addr, params))
        .and_then(|c| c.run(&mut net, &AtomicBool::new(false)))
        .expect("test");
    let results = server.finish(Duration::ZERO);
    let srv = results
        .iter()
        .find_map(|r| r.as_ref().ok())
        .expect("server outcome");
    assert_eq!(o.streams.len(), 3);
    assert_eq!(o.bytes_local, srv.bytes_local, "exact agreement both ways");
    assert_eq!(o.bytes_received, srv.bytes_local);
    for (a, b) in o.streams.iter().zip(&srv.streams) {
        assert_eq!((a.id, a.sent), (b.id, b.received));
    }
}
