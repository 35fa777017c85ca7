//! Byte counts of a test: per stream, per reporting interval, and the results JSON
//! both ends exchange after `EXCHANGE_RESULTS` (`send_results` / `get_results`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::proto::ie;
use crate::cpu::CpuTime;

/// One closed reporting interval of one stream.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    /// Seconds from the test start.
    pub start: f64,
    /// Seconds from the test start.
    pub end: f64,
    /// Bytes moved in it.
    pub bytes: u64,
}

/// One data stream's numbers.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamStats {
    /// iperf3's stream id (1, 3, 4, …).
    pub id: u32,
    /// Our address.
    pub local: Option<SocketAddr>,
    /// The peer's address.
    pub remote: Option<SocketAddr>,
    /// Bytes this end moved (sent if it sends, received if it receives), counted
    /// until the end of the test.
    pub bytes: u64,
    /// Bytes that arrived after the test ended (received while draining).
    pub late_bytes: u64,
    /// What the peer reported for this stream.
    pub peer_bytes: Option<u64>,
    /// Closed intervals.
    pub intervals: Vec<Interval>,
    interval_bytes: u64,
}

impl StreamStats {
    /// A stream with nothing counted yet.
    pub fn new(id: u32, local: Option<SocketAddr>, remote: Option<SocketAddr>) -> Self {
        StreamStats {
            id,
            local,
            remote,
            bytes: 0,
            late_bytes: 0,
            peer_bytes: None,
            intervals: Vec::new(),
            interval_bytes: 0,
        }
    }
}

/// The numbers of one test, at one end.
#[derive(Debug)]
pub struct Stats {
    /// Whether this end sends the data.
    pub sending: bool,
    /// Streams in id order.
    pub streams: Vec<StreamStats>,
    /// When `TEST_START` was seen (client) or sent (server).
    pub started: Option<Instant>,
    /// Seconds from start to `TEST_END`.
    pub duration: f64,
    /// Length of a reporting interval; zero disables intervals.
    pub interval: Duration,
    next_interval: f64,
    last_boundary: f64,
    cpu_start: Option<CpuTime>,
    wall_start: Option<Instant>,
    /// This end's CPU use over the test, percent: total, user, system.
    pub cpu: [f64; 3],
    /// The peer's CPU use, from its results.
    pub peer_cpu: [f64; 3],
    /// Whether the peer was finished counting (results received).
    pub peer_results: bool,
}

impl Stats {
    /// Empty numbers for a test in which this end sends (`sending`) or receives.
    pub fn new(sending: bool, interval: Duration) -> Self {
        Stats {
            sending,
            streams: Vec::new(),
            started: None,
            duration: 0.0,
            interval,
            next_interval: interval.as_secs_f64(),
            last_boundary: 0.0,
            cpu_start: None,
            wall_start: None,
            cpu: [0.0; 3],
            peer_cpu: [0.0; 3],
            peer_results: false,
        }
    }

    /// The test starts now.
    pub fn start(&mut self, now: Instant) {
        self.started = Some(now);
        self.wall_start = Some(now);
        self.cpu_start = CpuTime::thread().ok();
    }

    /// Seconds since the start.
    pub fn elapsed(&self, now: Instant) -> f64 {
        self.started
            .map(|s| now.saturating_duration_since(s).as_secs_f64())
            .unwrap_or(0.0)
    }

    /// Counts `n` bytes on stream index `i` (during the test).
    pub fn add(&mut self, i: usize, n: u64) {
        if let Some(s) = self.streams.get_mut(i) {
            s.bytes += n;
            s.interval_bytes += n;
        }
    }

    /// Counts `n` bytes that arrived on stream `i` after the test ended.
    pub fn add_late(&mut self, i: usize, n: u64) {
        if let Some(s) = self.streams.get_mut(i) {
            s.late_bytes += n;
        }
    }

    /// Bytes this end moved, all streams (late bytes included).
    pub fn total(&self) -> u64 {
        self.streams.iter().map(|s| s.bytes + s.late_bytes).sum()
    }

    /// Closes the interval if it is due; returns when the next one is.
    pub fn tick(&mut self, now: Instant) -> Option<Instant> {
        let start = self.started?;
        if self.interval.is_zero() {
            return None;
        }
        let t = self.elapsed(now);
        if t >= self.next_interval {
            self.close_interval(t);
            while self.next_interval <= t {
                self.next_interval += self.interval.as_secs_f64();
            }
        }
        Some(start + Duration::from_secs_f64(self.next_interval))
    }

    fn close_interval(&mut self, t: f64) {
        let from = self.last_boundary;
        for s in &mut self.streams {
            s.intervals.push(Interval {
                start: from,
                end: t,
                bytes: s.interval_bytes,
            });
            s.interval_bytes = 0;
        }
        self.last_boundary = t;
    }

    /// The test ended now (`TEST_END`): the last, partial interval is closed if it
    /// is long enough to mean anything, and CPU use is taken.
    pub fn end(&mut self, now: Instant) {
        let t = self.elapsed(now);
        self.duration = t;
        if !self.interval.is_zero() && t - self.last_boundary > self.interval.as_secs_f64() / 10.0 {
            self.close_interval(t);
        }
        if let (Some(c0), Some(w0), Ok(c1)) = (self.cpu_start, self.wall_start, CpuTime::thread()) {
            let wall = now.saturating_duration_since(w0).as_secs_f64();
            if wall > 0.0 {
                let used = c1.since(c0);
                let pct = |d: Duration| d.as_secs_f64() / wall * 100.0;
                self.cpu = [pct(used.total()), pct(used.user), pct(used.system)];
            }
        }
    }

    /// Our results object for the peer (`send_results`).
    pub fn results_json(&self) -> Value {
        let streams: Vec<Value> = self
            .streams
            .iter()
            .map(|s| {
                json!({
                    "id": s.id,
                    "bytes": s.bytes + s.late_bytes,
                    // -1: no TCP_INFO retransmit count (the stream is a generic byte
                    // stream; smoltcp has no such counter either).
                    "retransmits": -1,
                    "jitter": 0,
                    "errors": 0,
                    "packets": 0,
                    "start_time": 0,
                    "end_time": self.duration,
                })
            })
            .collect();
        json!({
            "cpu_util_total": self.cpu[0],
            "cpu_util_user": self.cpu[1],
            "cpu_util_system": self.cpu[2],
            // get_results: -1 from a receiver, else whether the sender counts
            // retransmits (we do not).
            "sender_has_retransmits": if self.sending { 0 } else { -1 },
            "streams": streams,
        })
    }

    /// Takes the peer's results (`get_results`): its CPU use and per-stream bytes.
    /// Errors carry iperf3's `i_errno`.
    pub fn apply_peer_results(&mut self, m: &Map<String, Value>) -> Result<(), (i32, String)> {
        let num = |m: &Map<String, Value>, k: &str| m.get(k).and_then(Value::as_f64);
        let bad = |what: String| (ie::RECVRESULTS, what);
        let (Some(t), Some(u), Some(s)) = (
            num(m, "cpu_util_total"),
            num(m, "cpu_util_user"),
            num(m, "cpu_util_system"),
        ) else {
            return Err(bad("results lack cpu_util_*".into()));
        };
        if m.get("sender_has_retransmits").is_none() {
            return Err(bad("results lack sender_has_retransmits".into()));
        }
        let Some(streams) = m.get("streams").and_then(Value::as_array) else {
            return Err(bad("results lack a streams array".into()));
        };
        let mut got = Vec::with_capacity(streams.len());
        for st in streams {
            let Some(st) = st.as_object() else {
                return Err(bad("a stream result is not an object".into()));
            };
            for k in ["retransmits", "jitter", "errors", "packets"] {
                if num(st, k).is_none() {
                    return Err(bad(format!("a stream result lacks {k:?}")));
                }
            }
            let id = st.get("id").and_then(Value::as_u64);
            let bytes = st
                .get("bytes")
                .and_then(|b| b.as_u64().or_else(|| b.as_f64().map(|f| f.max(0.0) as u64)));
            let (Some(id), Some(bytes)) = (id, bytes) else {
                return Err(bad("a stream result lacks id or bytes".into()));
            };
            let Some(idx) = self.streams.iter().position(|s| u64::from(s.id) == id) else {
                return Err((ie::STREAMID, format!("results name unknown stream {id}")));
            };
            got.push((idx, bytes));
        }
        for (idx, bytes) in got {
            self.streams[idx].peer_bytes = Some(bytes);
        }
        self.peer_cpu = [t, u, s];
        self.peer_results = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_and_results_round_trip() {
        let t0 = Instant::now();
        let mut a = Stats::new(true, Duration::from_secs(1));
        a.streams.push(StreamStats::new(1, None, None));
        a.streams.push(StreamStats::new(3, None, None));
        a.start(t0);
        a.add(0, 100);
        a.add(1, 50);
        a.tick(t0 + Duration::from_millis(1001));
        a.add(0, 7);
        a.end(t0 + Duration::from_millis(1500));
        assert_eq!(a.streams[0].intervals.len(), 2);
        assert_eq!(a.streams[0].intervals[0].bytes, 100);
        assert_eq!(a.streams[0].intervals[1].bytes, 7);
        assert_eq!(a.total(), 157);

        let mut b = Stats::new(false, Duration::ZERO);
        b.streams.push(StreamStats::new(1, None, None));
        b.streams.push(StreamStats::new(3, None, None));
        let Value::Object(m) = a.results_json() else {
            unreachable!("results are an object")
        };
        b.apply_peer_results(&m).expect("valid results");
        assert_eq!(b.streams[0].peer_bytes, Some(107));
        assert_eq!(b.streams[1].peer_bytes, Some(50));

        let mut c = Stats::new(false, Duration::ZERO);
        c.streams.push(StreamStats::new(1, None, None));
        assert_eq!(c.apply_peer_results(&m).unwrap_err().0, ie::STREAMID);
        let mut broken = m.clone();
        broken.remove("cpu_util_user");
        assert_eq!(
            c.apply_peer_results(&broken).unwrap_err().0,
            ie::RECVRESULTS
        );
    }
}
