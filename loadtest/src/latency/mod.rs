//! Round-trip latency: a ping-pong harness recording into an hdrhistogram.
//!
//! A transport implements [`PingPong`]: send a sequence number to an echo on the far
//! side and return what came back. [`ping_pong`] warms it up, then times one round trip
//! after another until the window closes. The same harness serves a polling transport
//! (both sides spin on shared memory) and an event-driven one (both sides sleep until
//! notified) — pvnet plugs its netfront→netback→netfront round trip in the same way, in
//! either mode. Two demonstration transports live in [`spin`] and [`eventfd`].

pub mod eventfd;
pub mod spin;

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::control::Control;
use crate::workload::WorkloadError;

/// How the two sides of a round trip wait for each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WaitMode {
    /// Busy-polling shared memory: lowest latency, one core burnt per side.
    Polling,
    /// Sleeping until notified (eventfd, event channel): a cross-core wake-up per hop.
    EventDriven,
}

impl WaitMode {
    /// Label for reports.
    pub fn label(self) -> &'static str {
        match self {
            WaitMode::Polling => "polling",
            WaitMode::EventDriven => "event-driven",
        }
    }
}

/// Most round trips run before the window opens and not recorded (caches, page faults,
/// first wake-ups); see also [`MAX_WARMUP`].
pub const WARMUP_ROUNDS: u64 = 1000;

/// Longest warm-up: on a loaded machine a spinning round trip can take a time slice.
pub const MAX_WARMUP: Duration = Duration::from_millis(50);

/// The first sequence number [`ping_pong`] times: echoes start their CPU stopwatch when
/// they see it, so warm-up is not counted on either side.
pub const FIRST_TIMED_SEQ: u64 = WARMUP_ROUNDS + 1;

/// Highest round trip the histogram tracks: 60 s, in nanoseconds. Longer ones are
/// clamped to it (and will show as the maximum).
const HIST_MAX_NS: u64 = 60_000_000_000;

/// Percentiles of round-trip time, in microseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Round trips recorded.
    pub samples: u64,
    /// Fastest.
    pub min_us: f64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Slowest.
    pub max_us: f64,
}

/// An hdrhistogram of round-trip times in nanoseconds (1 ns to 60 s, 3 significant
/// digits).
pub struct LatencyRecorder {
    hist: Histogram<u64>,
}

impl LatencyRecorder {
    /// An empty recorder.
    pub fn new() -> Result<Self, WorkloadError> {
        let hist = Histogram::new_with_bounds(1, HIST_MAX_NS, 3)
            .map_err(|e| WorkloadError::Setup(format!("histogram: {e}")))?;
        Ok(LatencyRecorder { hist })
    }

    /// Records one round trip.
    #[inline]
    pub fn record(&mut self, rtt: Duration) {
        let ns = u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX);
        self.hist.saturating_record(ns.clamp(1, HIST_MAX_NS));
    }

    /// The underlying histogram (e.g. to merge or export).
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.hist
    }

    /// Percentiles in microseconds; `None` if nothing was recorded.
    pub fn summary(&self) -> Option<LatencySummary> {
        let h = &self.hist;
        if h.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Some(LatencySummary {
            samples: h.len(),
            min_us: us(h.min()),
            mean_us: h.mean() / 1000.0,
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        })
    }
}

/// A request/response transport under test.
pub trait PingPong {
    /// Sends `seq` (never 0) to the echo and waits for its answer, which must be `seq`.
    fn round_trip(&mut self, seq: u64) -> Result<u64, WorkloadError>;
}

/// What [`ping_pong`] measured.
pub struct PingPongRun {
    /// Every timed round trip.
    pub recorder: LatencyRecorder,
    /// How many there were.
    pub round_trips: u64,
    /// CPU time of the calling (client) thread during the window.
    pub client_cpu: crate::cpu::CpuTime,
    /// Length of the window.
    pub elapsed: Duration,
}

/// Runs up to [`WARMUP_ROUNDS`] untimed round trips (at most [`MAX_WARMUP`]), opens the window, then times round trips
/// until it closes. An answer other than the sequence number sent is an error.
pub fn ping_pong<P: PingPong + ?Sized>(
    transport: &mut P,
    ctl: &Control,
) -> Result<PingPongRun, WorkloadError> {
    let mut recorder = LatencyRecorder::new()?;
    let mut seq = 1u64;
    let trip = |transport: &mut P, seq: u64| -> Result<Duration, WorkloadError> {
        let t = Instant::now();
        let got = transport.round_trip(seq)?;
        let rtt = t.elapsed();
        if got != seq {
            return Err(WorkloadError::Verify {
                expected: seq,
                detail: format!("echo answered {got}"),
            });
        }
        Ok(rtt)
    };
    let warm = Instant::now();
    while seq < FIRST_TIMED_SEQ && warm.elapsed() < MAX_WARMUP {
        trip(transport, seq)?;
        seq += 1;
    }
    // The window always starts at the same sequence number, however short the warm-up
    // was, so an echo knows when to start counting.
    seq = FIRST_TIMED_SEQ;
    let start = ctl.begin();
    let cpu = crate::cpu::CpuStopwatch::start();
    let mut round_trips = 0u64;
    while !ctl.should_stop() {
        recorder.record(trip(transport, seq)?);
        seq += 1;
        round_trips += 1;
    }
    Ok(PingPongRun {
        recorder,
        round_trips,
        client_cpu: cpu.stop(),
        elapsed: start.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake {
        answer_off_by: u64,
        delay: Duration,
    }

    impl PingPong for Fake {
        fn round_trip(&mut self, seq: u64) -> Result<u64, WorkloadError> {
            let t = Instant::now();
            while t.elapsed() < self.delay {
                std::hint::spin_loop();
            }
            Ok(seq + self.answer_off_by)
        }
    }

    #[test]
    fn percentiles_reflect_the_transport_delay() {
        let ctl = Control::new(Duration::from_millis(50));
        let mut fake = Fake {
            answer_off_by: 0,
            delay: Duration::from_micros(20),
        };
        let run = ctl
            .run_timed(|c| ping_pong(&mut fake, c))
            .expect("fake echo is correct");
        assert!(run.round_trips > 10);
        let s = run.recorder.summary().expect("recorded");
        assert_eq!(s.samples, run.round_trips);
        assert!(s.min_us >= 19.9, "{s:?}");
        assert!(s.p50_us <= s.p90_us && s.p90_us <= s.p99_us && s.p99_us <= s.p999_us);
        assert!(s.p999_us <= s.max_us);
    }

    #[test]
    fn a_wrong_answer_is_an_error() {
        let ctl = Control::new(Duration::from_millis(50));
        let mut fake = Fake {
            answer_off_by: 1,
            delay: Duration::ZERO,
        };
        let r = ctl.run_timed(|c| ping_pong(&mut fake, c));
        assert!(matches!(r, Err(WorkloadError::Verify { expected: 1, .. })));
    }

    #[test]
    fn empty_recorder_has_no_summary() {
        assert!(LatencyRecorder::new()
            .expect("bounds valid")
            .summary()
            .is_none());
    }
}
