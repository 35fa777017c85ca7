//! The iperf3 server (`iperf3 -s`) as a poll-driven state machine.
//!
//! One test at a time, as iperf3 does: the first connection on the port is a control
//! connection; while its test is creating streams, further connections are data
//! streams that must open with the test's cookie (a wrong one gets `ACCESS_DENIED`);
//! at any other time a newcomer gets `ACCESS_DENIED` and is closed.
//!
//! A test, from the server's side (`iperf_server_api.c`):
//! cookie → `PARAM_EXCHANGE` → parameters JSON → `CREATE_STREAMS` → streams connect →
//! `TEST_START`, `TEST_RUNNING` → data → client's `TEST_END` → `EXCHANGE_RESULTS` →
//! client results JSON → our results JSON → `DISPLAY_RESULTS` → client's `IPERF_DONE`.
//!
//! Unlike iperf3, a receiving server drains what is still in flight after `TEST_END`
//! (until the streams are quiet) before it reports, so both ends' byte counts agree.
//!
//! Every phase has a deadline and every read is bounded: a silent, slow or hostile
//! peer costs one test, never the server.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::ctrl::{Ctrl, CtrlError, Msg};
use super::data::{self, DataStream};
use super::net::Net;
use super::params::TestParams;
use super::proto::{
    frame_json, ie, server_error, stream_id, Cookie, State, COOKIE_SIZE, DEFAULT_PORT,
    MAX_PARAMS_JSON, MAX_RESULTS_JSON,
};
use super::report::{self, Endpoint, Outcome, Side};
use super::stats::{Stats, StreamStats};

/// Server settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Port to listen on (`-p`, default 5201).
    pub port: u16,
    /// Serve one test, then stop (`-1`).
    pub one_off: bool,
    /// Reporting interval (`-i`); zero disables intervals.
    pub interval: Duration,
    /// Longest wait for each setup and teardown message.
    pub setup_timeout: Duration,
    /// Longest time a running test may go without any byte or message.
    pub idle_timeout: Duration,
    /// After `TEST_END`, drain until the streams were quiet this long...
    pub drain_quiet: Duration,
    /// ... but at most this long.
    pub drain_max: Duration,
    /// Slack past the client's `-t` before the server ends the test itself.
    pub overrun: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            port: DEFAULT_PORT,
            one_off: false,
            interval: Duration::from_secs(1),
            setup_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            drain_quiet: Duration::from_millis(100),
            drain_max: Duration::from_secs(2),
            overrun: Duration::from_secs(10),
        }
    }
}

/// Why a test did not complete.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TestError {
    /// iperf3's error number, when there is one.
    pub i_errno: Option<i32>,
    /// What happened.
    pub message: String,
    /// The client's control address.
    pub peer: Option<SocketAddr>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Cookie,
    Params,
    Creating,
    Running,
    Draining {
        quiet_since: Instant,
        until: Instant,
    },
    Results,
    Display,
    /// An error message is queued: flush it, then close.
    Failing,
}

struct Test<C> {
    ctrl: Ctrl<C>,
    peer: Option<SocketAddr>,
    phase: Phase,
    since: Instant,
    last_activity: Instant,
    cookie: Option<Cookie>,
    params: Option<TestParams>,
    streams: Vec<DataStream<C>>,
    stats: Stats,
    error: Option<TestError>,
    /// The client said `IPERF_DONE` (or hung up after the results).
    done: bool,
}

/// A connection that is being sent `ACCESS_DENIED` (or nothing) and closed.
struct Reject<C> {
    ctrl: Ctrl<C>,
    since: Instant,
}

/// A connection during `CREATE_STREAMS` whose cookie is still arriving.
struct Candidate<C> {
    ctrl: Ctrl<C>,
    since: Instant,
}

/// The server.
pub struct Server<N: Net> {
    cfg: ServerConfig,
    listener: Option<N::Listener>,
    test: Option<Test<N::Conn>>,
    candidates: Vec<Candidate<N::Conn>>,
    rejects: Vec<Reject<N::Conn>>,
    results: Vec<Result<Outcome, TestError>>,
    tests_done: usize,
    buf: Vec<u8>,
    block: Vec<u8>,
}

/// How long a refused connection may take to receive its one byte.
const REJECT_LINGER: Duration = Duration::from_secs(1);

impl<N: Net> Server<N> {
    /// Listens on `cfg.port`.
    pub fn new(net: &mut N, cfg: ServerConfig) -> io::Result<Self> {
        let listener = net.listen(cfg.port)?;
        Ok(Server {
            cfg,
            listener: Some(listener),
            test: None,
            candidates: Vec::new(),
            rejects: Vec::new(),
            results: Vec::new(),
            tests_done: 0,
            buf: vec![0; 256 * 1024],
            block: Vec::new(),
        })
    }

    /// The port the server listens on.
    pub fn port(&self, net: &N) -> Option<u16> {
        self.listener.as_ref().and_then(|l| net.listener_port(l))
    }

    /// Whether a `-1` server has served its test.
    pub fn finished(&self) -> bool {
        self.cfg.one_off && self.tests_done > 0 && self.rejects.is_empty()
    }

    /// Results of the tests that ended since the last call.
    pub fn take_results(&mut self) -> Vec<Result<Outcome, TestError>> {
        std::mem::take(&mut self.results)
    }

    /// Stops listening and drops every connection.
    pub fn close(mut self, net: &mut N) {
        if let Some(l) = self.listener.take() {
            net.close_listener(l);
        }
        if let Some(mut t) = self.test.take() {
            t.ctrl.close(net);
            data::close_all(net, &mut t.streams);
        }
        for mut c in self.candidates.drain(..) {
            c.ctrl.close(net);
        }
        for mut r in self.rejects.drain(..) {
            r.ctrl.close(net);
        }
    }

    /// Serves until `stop` is set or a `-1` server is done, handing each test's result
    /// to `on_result`.
    pub fn run(
        &mut self,
        net: &mut N,
        stop: &AtomicBool,
        mut on_result: impl FnMut(&Result<Outcome, TestError>),
    ) {
        while !stop.load(Ordering::Relaxed) && !self.finished() {
            let progressed = self.step(net, Instant::now());
            for r in self.take_results() {
                on_result(&r);
                self.results.push(r);
            }
            // Keep results for the caller of take_results after run returns.
            net.wait(if progressed {
                Duration::ZERO
            } else {
                Duration::from_millis(10)
            });
        }
    }

    /// Does everything that can be done now. True if anything moved.
    pub fn step(&mut self, net: &mut N, now: Instant) -> bool {
        let mut progressed = self.accept(net, now);
        progressed |= self.step_rejects(net, now);
        progressed |= self.step_candidates(net, now);
        if let Some(mut t) = self.test.take() {
            progressed |= self.step_test(net, &mut t, now);
            if t.phase == Phase::Failing && (t.ctrl.flushed() || t.ctrl.conn().is_none()) {
                self.end_test(net, t, now);
            } else if let Some(outcome) = self.finished_outcome(&t) {
                t.ctrl.close(net);
                data::close_all(net, &mut t.streams);
                self.results.push(Ok(outcome));
                self.tests_done += 1;
            } else {
                self.test = Some(t);
            }
        }
        progressed
    }

    fn accept(&mut self, net: &mut N, now: Instant) -> bool {
        let mut progressed = false;
        let Some(listener) = self.listener.as_mut() else {
            return false;
        };
        loop {
            let conn = match net.accept(listener) {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    // Out of descriptors and the like: try again on the next pass.
                    log::warn!("iperf3 server: accept: {e}");
                    break;
                }
            };
            progressed = true;
            let busy = self.cfg.one_off && self.tests_done > 0;
            match &self.test {
                None if !busy => {
                    let peer = net.peer_addr(&conn);
                    self.test = Some(Test {
                        ctrl: Ctrl::new(conn),
                        peer,
                        phase: Phase::Cookie,
                        since: now,
                        last_activity: now,
                        cookie: None,
                        params: None,
                        streams: Vec::new(),
                        stats: Stats::new(false, self.cfg.interval),
                        error: None,
                        done: false,
                    });
                }
                Some(t) if t.phase == Phase::Creating => self.candidates.push(Candidate {
                    ctrl: Ctrl::new(conn),
                    since: now,
                }),
                _ => {
                    // iperf_accept: a second client while busy gets ACCESS_DENIED
                    // without its cookie being read.
                    let mut ctrl = Ctrl::new(conn);
                    ctrl.queue_state(State::AccessDenied);
                    self.rejects.push(Reject { ctrl, since: now });
                }
            }
        }
        progressed
    }

    fn step_rejects(&mut self, net: &mut N, now: Instant) -> bool {
        let mut progressed = false;
        let mut i = 0;
        while i < self.rejects.len() {
            let r = &mut self.rejects[i];
            let flush_ok = r.ctrl.flush(net).is_ok();
            if !flush_ok || r.ctrl.flushed() || now.duration_since(r.since) > REJECT_LINGER {
                let mut r = self.rejects.swap_remove(i);
                // Read what the peer already sent (its cookie): closing a socket with
                // unread bytes resets it, and the reset could overtake our answer.
                let _ = r.ctrl.discard_input(net, 4096);
                r.ctrl.close(net);
                progressed = true;
            } else {
                i += 1;
            }
        }
        progressed
    }

    fn step_candidates(&mut self, net: &mut N, now: Instant) -> bool {
        let mut progressed = false;
        while !self.candidates.is_empty() {
            let creating = self
                .test
                .as_ref()
                .is_some_and(|t| t.phase == Phase::Creating);
            let c = &mut self.candidates[0];
            let verdict = if !creating {
                Some(false)
            } else {
                match c.ctrl.take_bytes(net, COOKIE_SIZE) {
                    Ok(Msg::Ready(raw)) => {
                        let want = self.test.as_ref().and_then(|t| t.cookie);
                        Some(Cookie::parse(&raw).is_some() && Cookie::parse(&raw) == want)
                    }
                    Ok(Msg::Pending) if now.duration_since(c.since) < self.cfg.setup_timeout => {
                        None
                    }
                    Ok(Msg::Pending) | Err(_) => Some(false),
                }
            };
            match verdict {
                // Streams are numbered in the order they connected, as iperf3 reads
                // their cookies one after the other: a later stream waits for an
                // earlier one's cookie.
                None => break,
                Some(ok) => {
                    progressed = true;
                    let Candidate { mut ctrl, .. } = self.candidates.remove(0);
                    match (ok, self.test.as_mut()) {
                        (true, Some(t)) => {
                            let Some(conn) = ctrl.take_conn() else {
                                continue;
                            };
                            let n = t.streams.len();
                            let (local, remote) = (net.local_addr(&conn), net.peer_addr(&conn));
                            t.stats
                                .streams
                                .push(StreamStats::new(stream_id(n), local, remote));
                            t.streams.push(DataStream::new(conn, Vec::new()));
                            t.last_activity = now;
                        }
                        _ => {
                            // iperf_tcp_accept: a stream with the wrong cookie is
                            // answered ACCESS_DENIED and closed.
                            ctrl.queue_state(State::AccessDenied);
                            self.rejects.push(Reject { ctrl, since: now });
                        }
                    }
                }
            }
        }
        progressed
    }

    fn finished_outcome(&self, t: &Test<N::Conn>) -> Option<Outcome> {
        if t.phase != Phase::Display || t.error.is_some() || !t.done {
            return None;
        }
        let params = t.params.as_ref()?;
        let cookie = t.cookie.map(|c| c.as_str().to_owned()).unwrap_or_default();
        Some(report::finish(
            Side::Server,
            params,
            &cookie,
            &t.stats,
            &Endpoint {
                connecting_to: None,
                accepted_from: t.peer,
            },
        ))
    }

    fn end_test(&mut self, net: &mut N, mut t: Test<N::Conn>, _now: Instant) {
        t.ctrl.close(net);
        data::close_all(net, &mut t.streams);
        for mut c in self.candidates.drain(..) {
            c.ctrl.close(net);
        }
        let err = t.error.take().unwrap_or(TestError {
            i_errno: None,
            message: "test ended".into(),
            peer: t.peer,
        });
        log::info!(
            "iperf3 server: test from {:?} failed: {}",
            t.peer,
            err.message
        );
        self.results.push(Err(err));
        self.tests_done += 1;
    }

    fn step_test(&mut self, net: &mut N, t: &mut Test<N::Conn>, now: Instant) -> bool {
        let mut progressed = match t.ctrl.flush(net) {
            Ok(p) => p,
            Err(e) => {
                t.fail(None, format!("control connection: {e}"), None);
                t.ctrl.close(net);
                return true;
            }
        };
        if t.phase == Phase::Failing {
            if now.duration_since(t.since) > self.cfg.setup_timeout {
                t.ctrl.close(net);
            }
            return progressed;
        }
        match self.advance(net, t, now) {
            Ok(p) => progressed |= p,
            Err(e) => {
                progressed = true;
                match e {
                    CtrlError::Closed => t.fail(
                        Some(ie::CTRLCLOSE),
                        "the client closed the control connection".into(),
                        None,
                    ),
                    CtrlError::BadState(b) => {
                        t.fail(Some(ie::MESSAGE), format!("unknown state byte {b}"), None)
                    }
                    other => t.fail(None, other.to_string(), None),
                }
            }
        }
        // Deadlines.
        let setup = matches!(
            t.phase,
            Phase::Cookie | Phase::Params | Phase::Creating | Phase::Results | Phase::Display
        );
        if setup && now.duration_since(t.since) > self.cfg.setup_timeout {
            t.fail(
                Some(ie::NOMSG),
                format!(
                    "no progress in {:?} for {:?}",
                    t.phase, self.cfg.setup_timeout
                ),
                None,
            );
        }
        if matches!(t.phase, Phase::Running)
            && now.duration_since(t.last_activity) > self.cfg.idle_timeout
        {
            t.fail(
                Some(ie::NOMSG),
                format!("test idle for {:?}", self.cfg.idle_timeout),
                Some(State::ServerTerminate),
            );
        }
        if let (Phase::Running, Some(p)) = (t.phase, &t.params) {
            if p.time > 0
                && t.stats.elapsed(now)
                    > (Duration::from_secs(p.time) + self.cfg.overrun).as_secs_f64()
            {
                t.fail(
                    Some(ie::SERVERTERM),
                    format!("the client did not end its {} s test", p.time),
                    Some(State::ServerTerminate),
                );
            }
        }
        if t.phase == Phase::Failing {
            let _ = t.ctrl.flush(net);
            data::close_all(net, &mut t.streams);
        }
        progressed
    }

    /// Moves the test on by what the control connection and streams allow.
    fn advance(
        &mut self,
        net: &mut N,
        t: &mut Test<N::Conn>,
        now: Instant,
    ) -> Result<bool, CtrlError> {
        let mut progressed = false;
        loop {
            let before = t.phase;
            match t.phase {
                Phase::Cookie => match t.ctrl.take_bytes(net, COOKIE_SIZE)? {
                    Msg::Pending => {}
                    Msg::Ready(raw) => match Cookie::parse(&raw) {
                        Some(c) => {
                            t.cookie = Some(c);
                            t.ctrl.queue_state(State::ParamExchange);
                            t.enter(Phase::Params, now);
                        }
                        None => {
                            // Not an iperf3 client: close without a word, as iperf3
                            // does with anything it cannot use.
                            t.fail(Some(ie::RECVCOOKIE), "malformed cookie".into(), None);
                            t.ctrl.close(net);
                            return Ok(true);
                        }
                    },
                },
                Phase::Params => {
                    let m = match t.ctrl.take_json(net, MAX_PARAMS_JSON) {
                        Ok(Msg::Pending) => break,
                        Ok(Msg::Ready(m)) => m,
                        Err(e @ (CtrlError::TooLong { .. } | CtrlError::BadJson(_))) => {
                            t.refuse(ie::RECVPARAMS, format!("parameters: {e}"), now);
                            return Ok(true);
                        }
                        Err(e) => return Err(e),
                    };
                    let params = match TestParams::from_json(&m) {
                        Ok(p) => p,
                        Err(r) => {
                            t.refuse(r.i_errno, r.reason, now);
                            return Ok(true);
                        }
                    };
                    if let Some(r) = params.unsupported() {
                        t.refuse(r.i_errno, r.reason, now);
                        return Ok(true);
                    }
                    t.stats = Stats::new(params.reverse, self.cfg.interval);
                    self.block = data::payload(params.len);
                    t.params = Some(params);
                    t.ctrl.queue_state(State::CreateStreams);
                    t.enter(Phase::Creating, now);
                }
                Phase::Creating => {
                    let want = t.params.as_ref().map_or(1, |p| p.parallel as usize);
                    if t.streams.len() >= want {
                        t.ctrl.queue_state(State::TestStart);
                        t.ctrl.queue_state(State::TestRunning);
                        t.stats.start(now);
                        t.enter(Phase::Running, now);
                    } else {
                        self.expect_quiet_ctrl(net, t)?;
                    }
                }
                Phase::Running => {
                    let moved = if t.stats.sending {
                        data::pump_send(net, &mut t.streams, &mut t.stats, &self.block, &mut None)
                    } else {
                        data::pump_recv(net, &mut t.streams, &mut t.stats, &mut self.buf, false)
                    };
                    match moved {
                        Ok(0) => {}
                        Ok(_) => {
                            progressed = true;
                            t.last_activity = now;
                        }
                        Err(e) => {
                            t.fail(
                                Some(ie::STREAMCLOSE),
                                format!("data stream: {e}"),
                                Some(State::ServerTerminate),
                            );
                            return Ok(true);
                        }
                    }
                    t.stats.tick(now);
                    match t.ctrl.take_state(net)? {
                        Msg::Pending => {}
                        Msg::Ready(State::TestEnd) => {
                            t.last_activity = now;
                            t.stats.end(now);
                            if t.stats.sending {
                                // iperf3 closes the streams at TEST_END.
                                data::close_all(net, &mut t.streams);
                                t.ctrl.queue_state(State::ExchangeResults);
                                t.enter(Phase::Results, now);
                            } else {
                                t.enter(
                                    Phase::Draining {
                                        quiet_since: now,
                                        until: now + self.cfg.drain_max,
                                    },
                                    now,
                                );
                            }
                        }
                        Msg::Ready(s) => {
                            t.unexpected(s);
                            return Ok(true);
                        }
                    }
                }
                Phase::Draining { quiet_since, until } => {
                    let got =
                        data::pump_recv(net, &mut t.streams, &mut t.stats, &mut self.buf, true)
                            .unwrap_or(0);
                    let quiet_since = if got > 0 { now } else { quiet_since };
                    let all_eof = t.streams.iter().all(|s| s.eof || s.conn.is_none());
                    if all_eof
                        || now.duration_since(quiet_since) >= self.cfg.drain_quiet
                        || now >= until
                    {
                        t.ctrl.queue_state(State::ExchangeResults);
                        t.enter(Phase::Results, now);
                    } else {
                        t.phase = Phase::Draining { quiet_since, until };
                        progressed |= got > 0;
                        self.expect_quiet_ctrl(net, t)?;
                    }
                }
                Phase::Results => match t.ctrl.take_json(net, MAX_RESULTS_JSON) {
                    Ok(Msg::Pending) => {}
                    Ok(Msg::Ready(m)) => {
                        if let Err((code, why)) = t.stats.apply_peer_results(&m) {
                            // The client is reading our results now: an error message
                            // would be misread as a length. iperf3 just hangs up.
                            t.fail(Some(code), format!("client results: {why}"), None);
                            t.ctrl.close(net);
                            return Ok(true);
                        }
                        let mut ours = t.stats.results_json();
                        if t.params.as_ref().is_some_and(|p| p.get_server_output) {
                            ours["server_output_text"] = Value::String(format!(
                                "pvnet-loadtest iperf3 server: {} bytes {} in {:.2} s\n",
                                t.stats.total(),
                                if t.stats.sending { "sent" } else { "received" },
                                t.stats.duration
                            ));
                        }
                        t.ctrl.queue(&frame_json(&ours));
                        t.ctrl.queue_state(State::DisplayResults);
                        t.enter(Phase::Display, now);
                    }
                    Err(e @ (CtrlError::TooLong { .. } | CtrlError::BadJson(_))) => {
                        t.fail(Some(ie::RECVRESULTS), format!("client results: {e}"), None);
                        t.ctrl.close(net);
                        return Ok(true);
                    }
                    Err(e) => return Err(e),
                },
                Phase::Display => {
                    if !t.ctrl.flushed() {
                        break;
                    }
                    match t.ctrl.take_state(net) {
                        Ok(Msg::Pending) => {}
                        Ok(Msg::Ready(State::IperfDone)) | Err(CtrlError::Closed) => {
                            t.done = true;
                        }
                        Ok(Msg::Ready(s)) => {
                            t.unexpected(s);
                            return Ok(true);
                        }
                        Err(e) => return Err(e),
                    }
                }
                Phase::Failing => {}
            }
            if t.phase == before {
                break;
            }
            progressed = true;
            let _ = t.ctrl.flush(net);
        }
        Ok(progressed)
    }

    /// Outside the running phase the client only speaks to end the test early.
    fn expect_quiet_ctrl(&mut self, net: &mut N, t: &mut Test<N::Conn>) -> Result<(), CtrlError> {
        match t.ctrl.take_state(net)? {
            Msg::Pending => Ok(()),
            Msg::Ready(s) => {
                t.unexpected(s);
                Ok(())
            }
        }
    }
}

impl<C> Test<C> {
    fn enter(&mut self, phase: Phase, now: Instant) {
        self.phase = phase;
        self.since = now;
    }

    /// Marks the test failed; `tell` is a state to send the client first.
    fn fail(&mut self, i_errno: Option<i32>, message: String, tell: Option<State>) {
        if self.error.is_some() {
            return;
        }
        if let Some(s) = tell {
            self.ctrl.queue_state(s);
        }
        self.error = Some(TestError {
            i_errno,
            message,
            peer: self.peer,
        });
        self.phase = Phase::Failing;
    }

    /// Refuses the test with `SERVER_ERROR`, which the client prints as iperf3's
    /// message for `i_errno`.
    fn refuse(&mut self, i_errno: i32, reason: String, now: Instant) {
        self.ctrl.queue(&server_error(i_errno, 0));
        self.fail(Some(i_errno), format!("refused: {reason}"), None);
        self.since = now;
    }

    fn unexpected(&mut self, s: State) {
        match s {
            State::ClientTerminate => self.fail(
                Some(ie::CLIENTTERM),
                "the client has terminated".into(),
                None,
            ),
            other => self.fail(
                Some(ie::MESSAGE),
                format!("unexpected {other:?} in phase {:?}", self.phase),
                None,
            ),
        }
    }
}
