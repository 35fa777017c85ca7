//! The iperf3 client (`iperf3 -c`) as a poll-driven state machine.
//!
//! From the client's side (`iperf_client_api.c`): connect, send the cookie; on
//! `PARAM_EXCHANGE` send the parameters; on `CREATE_STREAMS` connect the streams one
//! after the other (each opens with the cookie, so stream ids match the server's);
//! `TEST_START` starts the clock, `TEST_RUNNING` the data; when the time or byte
//! count is reached send `TEST_END`; on `EXCHANGE_RESULTS` send our results and read
//! the server's; on `DISPLAY_RESULTS` report and send `IPERF_DONE`.
//!
//! In reverse mode the client keeps reading after `TEST_END` until the server closes
//! the streams (iperf3's server closes them at `TEST_END`), so it counts everything
//! the server sent. `ACCESS_DENIED`, `SERVER_ERROR` and `SERVER_TERMINATE` end the
//! test with iperf3's error numbers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::ctrl::{Ctrl, CtrlError, Msg};
use super::data::{self, DataStream};
use super::net::Net;
use super::params::TestParams;
use super::proto::{frame_json, ie, stream_id, strerror, Cookie, State, MAX_RESULTS_JSON};
use super::report::{self, Endpoint, Outcome, Side};
use super::server::TestError;
use super::stats::{Stats, StreamStats};

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The server.
    pub server: SocketAddr,
    /// The name the user gave the server (for the report).
    pub host: String,
    /// The test.
    pub params: TestParams,
    /// Reporting interval; zero disables intervals.
    pub interval: Duration,
    /// Longest wait for each setup and teardown message.
    pub setup_timeout: Duration,
    /// Reverse mode: longest wait for the server to close the streams after
    /// `TEST_END`.
    pub drain_max: Duration,
}

impl ClientConfig {
    /// A client for `params` against `server`.
    pub fn new(server: SocketAddr, params: TestParams) -> Self {
        ClientConfig {
            server,
            host: server.ip().to_string(),
            params,
            interval: Duration::from_secs(1),
            setup_timeout: Duration::from_secs(10),
            drain_max: Duration::from_secs(2),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for `PARAM_EXCHANGE` / `CREATE_STREAMS`.
    Setup,
    /// Connecting streams.
    Creating,
    /// Streams connected, waiting for `TEST_START` / `TEST_RUNNING`.
    Starting,
    Running,
    /// `TEST_END` sent.
    Ending,
    /// Our results sent, reading the server's.
    Results,
    /// Waiting for `DISPLAY_RESULTS`.
    Display,
    /// `SERVER_ERROR` seen: reading its two numbers.
    ServerError,
    Done,
    Failed,
}

/// The client.
pub struct Client<N: Net> {
    cfg: ClientConfig,
    cookie: Cookie,
    ctrl: Ctrl<N::Conn>,
    phase: Phase,
    since: Instant,
    streams: Vec<DataStream<N::Conn>>,
    stats: Stats,
    remaining: Option<u64>,
    /// Reverse mode: when `EXCHANGE_RESULTS` arrived (results wait for the drain).
    results_asked: Option<Instant>,
    ended_at: Option<Instant>,
    result: Option<Result<Outcome, TestError>>,
    buf: Vec<u8>,
    block: Vec<u8>,
}

impl<N: Net> Client<N> {
    /// Connects the control connection and queues the cookie.
    pub fn new(net: &mut N, cfg: ClientConfig) -> Result<Self, TestError> {
        let conn = net.connect(cfg.server).map_err(|e| TestError {
            i_errno: Some(103), // IECONNECT
            message: format!("unable to connect to server {}: {e}", cfg.server),
            peer: Some(cfg.server),
        })?;
        let cookie = Cookie::generate();
        let mut ctrl = Ctrl::new(conn);
        ctrl.queue(&cookie.0);
        let mut params = cfg.params.clone();
        if params.blocks > 0 && params.bytes == 0 {
            params.bytes = params.blocks.saturating_mul(params.len as u64);
        }
        let remaining = (!params.reverse && params.bytes > 0).then_some(params.bytes);
        Ok(Client {
            stats: Stats::new(!params.reverse, cfg.interval),
            block: data::payload(params.len),
            buf: vec![0; params.len.max(64 * 1024)],
            cfg: ClientConfig { params, ..cfg },
            cookie,
            ctrl,
            phase: Phase::Setup,
            since: Instant::now(),
            streams: Vec::new(),
            remaining,
            results_asked: None,
            ended_at: None,
            result: None,
        })
    }

    /// The test's cookie.
    pub fn cookie(&self) -> &str {
        self.cookie.as_str()
    }

    /// The result, once the test is over.
    pub fn take_result(&mut self) -> Option<Result<Outcome, TestError>> {
        self.result.take()
    }

    /// Whether the test is over.
    pub fn finished(&self) -> bool {
        matches!(self.phase, Phase::Done | Phase::Failed)
    }

    /// Runs the test to its end (or until `stop`: then `CLIENT_TERMINATE` is sent).
    pub fn run(mut self, net: &mut N, stop: &AtomicBool) -> Result<Outcome, TestError> {
        while !self.finished() {
            if stop.load(Ordering::Relaxed) {
                self.ctrl.queue_state(State::ClientTerminate);
                let _ = self.ctrl.flush(net);
                self.fail(Some(ie::CLIENTTERM), "interrupted".into());
                break;
            }
            let progressed = self.step(net, Instant::now());
            net.wait(if progressed {
                Duration::ZERO
            } else {
                Duration::from_millis(10)
            });
        }
        // Let the last message (IPERF_DONE, CLIENT_TERMINATE) leave.
        let until = Instant::now() + Duration::from_millis(200);
        while !self.ctrl.flushed() && Instant::now() < until {
            if self.ctrl.flush(net).is_err() {
                break;
            }
            net.wait(Duration::from_millis(5));
        }
        self.ctrl.close(net);
        data::close_all(net, &mut self.streams);
        // Give a user-space stack the chance to send the FINs.
        net.wait(Duration::from_millis(1));
        self.result.take().unwrap_or_else(|| {
            Err(TestError {
                i_errno: None,
                message: "the test did not finish".into(),
                peer: Some(self.cfg.server),
            })
        })
    }

    fn fail(&mut self, i_errno: Option<i32>, message: String) {
        if self.result.is_none() {
            self.result = Some(Err(TestError {
                i_errno,
                message,
                peer: Some(self.cfg.server),
            }));
        }
        self.phase = Phase::Failed;
    }

    fn enter(&mut self, phase: Phase, now: Instant) {
        self.phase = phase;
        self.since = now;
    }

    /// Does everything that can be done now. True if anything moved.
    pub fn step(&mut self, net: &mut N, now: Instant) -> bool {
        if self.finished() {
            return false;
        }
        // A failed send is looked at only after reading: a server that refused us
        // (ACCESS_DENIED, SERVER_ERROR) may have closed before our bytes arrived, and
        // its message is still waiting to be read.
        let (mut progressed, send_error) = match self.ctrl.flush(net) {
            Ok(p) => (p, None),
            Err(e) => (false, Some(e)),
        };
        match self.advance(net, now) {
            Ok(p) => progressed |= p,
            Err(CtrlError::Closed) => {
                self.fail(Some(ie::CTRLCLOSE), strerror(ie::CTRLCLOSE).into());
                return true;
            }
            Err(CtrlError::BadState(b)) => {
                self.fail(Some(ie::MESSAGE), format!("unknown state byte {b}"));
                return true;
            }
            Err(e) => {
                self.fail(Some(ie::RECVRESULTS), e.to_string());
                return true;
            }
        }
        if let (Some(e), false) = (send_error, self.finished()) {
            self.fail(Some(ie::CTRLCLOSE), format!("control connection: {e}"));
            return true;
        }
        let _ = self.ctrl.flush(net);
        let waiting = !matches!(self.phase, Phase::Running | Phase::Done | Phase::Failed);
        if waiting && now.duration_since(self.since) > self.cfg.setup_timeout + self.cfg.drain_max {
            self.fail(
                Some(ie::NOMSG),
                format!("no answer from the server in {:?}", self.phase),
            );
        }
        progressed
    }

    fn advance(&mut self, net: &mut N, now: Instant) -> Result<bool, CtrlError> {
        let mut progressed = false;
        // Data first: it is what the test measures.
        match self.phase {
            Phase::Creating => {
                progressed |= self.create_streams(net, now);
            }
            Phase::Running => {
                let moved = if self.stats.sending {
                    data::pump_send(
                        net,
                        &mut self.streams,
                        &mut self.stats,
                        &self.block,
                        &mut self.remaining,
                    )
                } else {
                    data::pump_recv(
                        net,
                        &mut self.streams,
                        &mut self.stats,
                        &mut self.buf,
                        false,
                    )
                };
                match moved {
                    Ok(n) => progressed |= n > 0,
                    Err(e) => {
                        self.fail(Some(ie::STREAMCLOSE), format!("data stream: {e}"));
                        return Ok(true);
                    }
                }
                self.stats.tick(now);
                let p = &self.cfg.params;
                let time_up = p.time > 0 && self.stats.elapsed(now) >= p.time as f64;
                let bytes_done = p.bytes > 0 && self.stats.total() >= p.bytes;
                if time_up || bytes_done {
                    self.stats.end(now);
                    self.ctrl.queue_state(State::TestEnd);
                    self.ended_at = Some(now);
                    self.enter(Phase::Ending, now);
                    progressed = true;
                }
            }
            Phase::Ending if !self.stats.sending => {
                let got =
                    data::pump_recv(net, &mut self.streams, &mut self.stats, &mut self.buf, true)
                        .unwrap_or(0);
                progressed |= got > 0;
                let drained = self.streams.iter().all(|s| s.eof || s.conn.is_none());
                let ended = self.ended_at.unwrap_or(now);
                if self.results_asked.is_some()
                    && (drained || now.duration_since(ended) >= self.cfg.drain_max)
                {
                    self.send_results(now);
                    progressed = true;
                }
            }
            _ => {}
        }
        // Then whatever the server said.
        loop {
            if self.finished() {
                return Ok(progressed);
            }
            if self.phase == Phase::ServerError {
                match self.ctrl.take_bytes(net, 8)? {
                    Msg::Pending => return Ok(progressed),
                    Msg::Ready(b) => {
                        let code = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                        let errno = i32::from_be_bytes([b[4], b[5], b[6], b[7]]);
                        let mut msg = format!("error - {}", strerror(code));
                        if errno != 0 {
                            msg.push_str(&format!(
                                ": {}",
                                std::io::Error::from_raw_os_error(errno)
                            ));
                        }
                        self.fail(Some(code), msg);
                        return Ok(true);
                    }
                }
            }
            if self.phase == Phase::Results {
                match self.ctrl.take_json(net, MAX_RESULTS_JSON)? {
                    Msg::Pending => return Ok(progressed),
                    Msg::Ready(m) => {
                        if let Err((code, why)) = self.stats.apply_peer_results(&m) {
                            self.fail(Some(code), format!("server results: {why}"));
                            return Ok(true);
                        }
                        self.enter(Phase::Display, now);
                        progressed = true;
                        continue;
                    }
                }
            }
            let s = match self.ctrl.take_state(net)? {
                Msg::Pending => return Ok(progressed),
                Msg::Ready(s) => s,
            };
            progressed = true;
            self.on_state(s, now);
        }
    }

    fn on_state(&mut self, s: State, now: Instant) {
        match (s, self.phase) {
            (State::ParamExchange, Phase::Setup) => {
                let json = self.cfg.params.to_json();
                self.ctrl.queue(&frame_json(&json));
                self.since = now;
            }
            (State::CreateStreams, Phase::Setup) => self.enter(Phase::Creating, now),
            (State::TestStart, Phase::Starting) => {
                self.stats.start(now);
                self.since = now;
            }
            (State::TestRunning, Phase::Starting) => {
                if self.stats.started.is_none() {
                    self.stats.start(now);
                }
                self.enter(Phase::Running, now);
            }
            (State::ExchangeResults, Phase::Ending) => {
                if self.stats.sending {
                    self.send_results(now);
                } else {
                    // Reverse: the results go out once the streams are drained.
                    self.results_asked = Some(now);
                }
            }
            (State::DisplayResults, Phase::Display) => {
                self.ctrl.queue_state(State::IperfDone);
                let o = report::finish(
                    Side::Client,
                    &self.cfg.params,
                    self.cookie.as_str(),
                    &self.stats,
                    &Endpoint {
                        connecting_to: Some((self.cfg.host.clone(), self.cfg.server.port())),
                        accepted_from: None,
                    },
                );
                self.result = Some(Ok(o));
                self.phase = Phase::Done;
            }
            (State::AccessDenied, _) => self.fail(
                Some(ie::ACCESSDENIED),
                format!("error - {}", strerror(ie::ACCESSDENIED)),
            ),
            (State::ServerError, _) => self.enter(Phase::ServerError, now),
            (State::ServerTerminate, _) => self.fail(
                Some(ie::SERVERTERM),
                format!("error - {}", strerror(ie::SERVERTERM)),
            ),
            (other, phase) => self.fail(
                Some(ie::MESSAGE),
                format!("unexpected {other:?} while {phase:?}"),
            ),
        }
    }

    fn send_results(&mut self, now: Instant) {
        let json = self.stats.results_json();
        self.ctrl.queue(&frame_json(&json));
        self.results_asked = None;
        self.enter(Phase::Results, now);
    }

    /// Connects the streams one at a time, each once the previous one has sent its
    /// cookie, so the server numbers them in our order.
    fn create_streams(&mut self, net: &mut N, now: Instant) -> bool {
        let mut progressed = false;
        loop {
            match data::send_hellos(net, &mut self.streams) {
                Ok(true) => {}
                Ok(false) => return progressed,
                Err(e) => {
                    self.fail(Some(203), format!("unable to connect stream: {e}")); // IESTREAMCONNECT
                    return true;
                }
            }
            // Addresses are known once connected (a smoltcp socket learns its local
            // address on connect).
            for (i, s) in self.streams.iter().enumerate() {
                if let (Some(st), Some(c)) = (self.stats.streams.get_mut(i), s.conn.as_ref()) {
                    st.local = net.local_addr(c);
                    st.remote = net.peer_addr(c);
                }
            }
            let n = self.streams.len();
            if n >= self.cfg.params.parallel as usize {
                self.enter(Phase::Starting, now);
                return true;
            }
            match net.connect(self.cfg.server) {
                Ok(c) => {
                    self.stats.streams.push(StreamStats::new(
                        stream_id(n),
                        None,
                        Some(self.cfg.server),
                    ));
                    self.streams
                        .push(DataStream::new(c, self.cookie.0.to_vec()));
                    progressed = true;
                }
                Err(e) => {
                    self.fail(Some(203), format!("unable to connect stream: {e}"));
                    return true;
                }
            }
        }
    }
}
