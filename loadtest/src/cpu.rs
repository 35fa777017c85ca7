//! CPU time of the calling thread, split into user and system time.
//!
//! Each worker reads its own counters when the window opens and when it ends; the
//! difference is that side's CPU cost. `getrusage(RUSAGE_THREAD)` is used rather than
//! `/proc/self/task/<tid>/stat` because it is exact to the microsecond, while the
//! `/proc` counters tick at USER_HZ (10 ms) — too coarse for one-second cells.

use std::io;
use std::ops::{Add, AddAssign};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// CPU time spent by one or more threads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuTime {
    /// Time in user mode.
    #[serde(with = "crate::measurement::secs")]
    pub user: Duration,
    /// Time in the kernel on the thread's behalf (syscalls, page faults, wake-ups).
    #[serde(with = "crate::measurement::secs")]
    pub system: Duration,
}

impl CpuTime {
    /// User plus system time.
    pub fn total(&self) -> Duration {
        self.user + self.system
    }

    /// `self - earlier`, clamped at zero.
    pub fn since(&self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }

    /// The calling thread's CPU time so far.
    pub fn thread() -> io::Result<CpuTime> {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: getrusage writes one `struct rusage` through the pointer, which points
        // to a properly sized and aligned local; RUSAGE_THREAD reads only this thread.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the call succeeded, so the kernel filled the whole struct (and it was
        // zero-initialised before anyway).
        let usage = unsafe { usage.assume_init() };
        Ok(CpuTime {
            user: timeval(usage.ru_utime),
            system: timeval(usage.ru_stime),
        })
    }
}

fn timeval(tv: libc::timeval) -> Duration {
    let secs = u64::try_from(tv.tv_sec).unwrap_or(0);
    let micros = u32::try_from(tv.tv_usec).unwrap_or(0).min(999_999);
    Duration::new(secs, micros * 1000)
}

impl Add for CpuTime {
    type Output = CpuTime;
    fn add(self, rhs: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user + rhs.user,
            system: self.system + rhs.system,
        }
    }
}

impl AddAssign for CpuTime {
    fn add_assign(&mut self, rhs: CpuTime) {
        *self = *self + rhs;
    }
}

/// Measures the calling thread's CPU time from its creation to [`CpuStopwatch::stop`].
/// A stopwatch whose start reading failed reports zero rather than failing the cell:
/// CPU time is secondary to the throughput it accompanies.
pub struct CpuStopwatch {
    start: Option<CpuTime>,
}

impl CpuStopwatch {
    /// Reads the calling thread's counters now.
    pub fn start() -> Self {
        CpuStopwatch {
            start: CpuTime::thread().ok(),
        }
    }

    /// CPU time the calling thread (which must be the one that started it) used since.
    pub fn stop(self) -> CpuTime {
        match (self.start, CpuTime::thread()) {
            (Some(a), Ok(b)) => b.since(a),
            _ => CpuTime::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn busy_thread_accumulates_user_time_and_idle_thread_does_not() {
        let sw = CpuStopwatch::start();
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let busy = sw.stop();
        // Others share this machine, so only require a fraction of the wall time.
        assert!(busy.total() >= Duration::from_millis(5), "{busy:?}");

        let sw = CpuStopwatch::start();
        std::thread::sleep(Duration::from_millis(50));
        let idle = sw.stop();
        assert!(idle.total() < Duration::from_millis(20), "{idle:?}");
    }
}
