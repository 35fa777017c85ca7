//! What a workload returns for one cell, and the rates derived from it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cpu::CpuTime;
use crate::latency::LatencySummary;

/// CPU time of one side of a data path (e.g. `guest` / `dom0`, `producer` / `consumer`),
/// summed over that side's threads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SideCpu {
    /// The side's name.
    pub side: String,
    /// How many threads' times were summed.
    pub threads: u32,
    /// Their CPU time during the window.
    pub cpu: CpuTime,
}

/// The result of one cell.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// Frames delivered to (and verified by) the receiving side.
    pub frames: u64,
    /// Bytes of those frames (frame bytes, Ethernet header included).
    pub bytes: u64,
    /// Length of the measurement window.
    #[serde(with = "secs")]
    pub elapsed: Duration,
    /// Frames the path dropped (e.g. no RX buffer posted); peers never drop.
    pub drops: u64,
    /// Frames answered with an error (e.g. `NETIF_RSP_ERROR`).
    pub errors: u64,
    /// CPU time per side.
    pub sides: Vec<SideCpu>,
    /// Round-trip latency, for ping-pong cells.
    pub latency: Option<LatencySummary>,
}

impl Measurement {
    /// A measurement of `frames` frames of `frame_size` bytes over `elapsed`.
    pub fn frames(frames: u64, frame_size: u32, elapsed: Duration) -> Self {
        Measurement {
            frames,
            bytes: frames.saturating_mul(u64::from(frame_size)),
            elapsed,
            ..Measurement::default()
        }
    }

    /// Adds one thread's CPU time to `side` (creating the side on first use).
    pub fn add_cpu(&mut self, side: &str, cpu: CpuTime) {
        match self.sides.iter_mut().find(|s| s.side == side) {
            Some(s) => {
                s.cpu += cpu;
                s.threads += 1;
            }
            None => self.sides.push(SideCpu {
                side: side.to_owned(),
                threads: 1,
                cpu,
            }),
        }
    }

    /// Millions of frames per second.
    pub fn mpps(&self) -> f64 {
        rate(self.frames as f64, self.elapsed) / 1e6
    }

    /// Gigabits per second of frame bytes.
    pub fn gbps(&self) -> f64 {
        rate(self.bytes as f64 * 8.0, self.elapsed) / 1e9
    }

    /// CPU use of each side in percent of one core over the window (above 100 when a
    /// side runs several busy threads).
    pub fn cpu_percent(&self) -> Vec<(String, f64)> {
        self.sides
            .iter()
            .map(|s| {
                let pct = 100.0 * s.cpu.total().as_secs_f64() / self.elapsed.as_secs_f64();
                (s.side.clone(), if pct.is_finite() { pct } else { 0.0 })
            })
            .collect()
    }
}

fn rate(count: f64, elapsed: Duration) -> f64 {
    let s = elapsed.as_secs_f64();
    if s > 0.0 {
        count / s
    } else {
        0.0
    }
}

/// Serialises a [`Duration`] as floating-point seconds (readable in JSON, exact enough
/// for nanoseconds up to months).
pub mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Writes seconds as `f64`.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    /// Reads seconds from `f64`; negative, infinite or NaN values are an error.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_follow_frames_bytes_and_time() {
        let m = Measurement::frames(2_000_000, 1514, Duration::from_secs(2));
        assert_eq!(m.bytes, 2_000_000 * 1514);
        assert!((m.mpps() - 1.0).abs() < 1e-9);
        assert!((m.gbps() - 1514.0 * 8.0 / 1e3).abs() < 1e-9);
        assert_eq!(Measurement::frames(5, 64, Duration::ZERO).gbps(), 0.0);
    }

    #[test]
    fn cpu_is_summed_per_side() {
        let mut m = Measurement::frames(1, 64, Duration::from_secs(1));
        let half = CpuTime {
            user: Duration::from_millis(400),
            system: Duration::from_millis(100),
        };
        m.add_cpu("guest", half);
        m.add_cpu("guest", half);
        m.add_cpu("dom0", half);
        let pct = m.cpu_percent();
        assert_eq!(pct.len(), 2);
        assert_eq!(pct[0].0, "guest");
        assert!((pct[0].1 - 100.0).abs() < 1e-9);
        assert!((pct[1].1 - 50.0).abs() < 1e-9);
        assert_eq!(m.sides[0].threads, 2);
    }
}
