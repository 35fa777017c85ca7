//! Deadlines for the control plane's blocking waits.
//!
//! With `std` a deadline is wall-clock time. Without it there is no clock, so the
//! budget is spent by the waiter in the steps it slept for (each store or event wait
//! is given at most one step): an approximation that can only end early, never hang.

use core::time::Duration;

/// A point after which a wait gives up.
pub struct Deadline {
    #[cfg(feature = "std")]
    end: Option<std::time::Instant>,
    #[cfg(not(feature = "std"))]
    left: Duration,
}

impl Deadline {
    /// A deadline `timeout` from now.
    pub fn after(timeout: Duration) -> Self {
        #[cfg(feature = "std")]
        {
            Deadline {
                end: std::time::Instant::now().checked_add(timeout),
            }
        }
        #[cfg(not(feature = "std"))]
        {
            Deadline { left: timeout }
        }
    }

    /// Time left (zero once passed).
    pub fn remaining(&self) -> Duration {
        #[cfg(feature = "std")]
        {
            match self.end {
                Some(end) => end.saturating_duration_since(std::time::Instant::now()),
                None => Duration::MAX,
            }
        }
        #[cfg(not(feature = "std"))]
        {
            self.left
        }
    }

    /// True once the deadline passed.
    pub fn expired(&self) -> bool {
        self.remaining().is_zero()
    }

    /// The next wait step: at most `step`, never past the deadline. Without `std` the
    /// step is charged to the budget here.
    pub fn step(&mut self, step: Duration) -> Duration {
        let s = self.remaining().min(step);
        #[cfg(not(feature = "std"))]
        {
            self.left = self.left.saturating_sub(s);
        }
        s
    }
}

/// Pause briefly between retries of an operation the peer must unblock (e.g. ending a
/// grant it still maps). Without `std` this is a short spin.
pub fn pause(d: Duration) {
    #[cfg(feature = "std")]
    std::thread::sleep(d);
    #[cfg(not(feature = "std"))]
    {
        let spins = (d.as_micros() as u64).saturating_mul(64).min(1 << 20);
        for _ in 0..spins {
            core::hint::spin_loop();
        }
    }
}
