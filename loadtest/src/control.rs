//! The stop signal that bounds every cell in time.
//!
//! A workload sets itself up (buffers, threads, rings), then calls [`Control::begin`]
//! when its measurement window opens: only then does the cell's clock start, so setup
//! costs are not counted. Workers poll [`Control::should_stop`] — one relaxed load, cheap
//! enough for every frame — and a timer thread owned by [`Control::run_timed`] raises the
//! flag when the window closes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Extra time, beyond the window, a worker may wait for its peer before it declares the
/// peer stalled (see [`Control::overdue`]).
const MIN_GRACE: Duration = Duration::from_secs(2);

#[derive(Default)]
struct TimerState {
    started: Option<Instant>,
    finished: bool,
}

/// Start/stop control for one cell.
pub struct Control {
    duration: Duration,
    stop: AtomicBool,
    state: Mutex<TimerState>,
    wake: Condvar,
}

impl Control {
    /// A control whose window lasts `duration` once opened.
    pub fn new(duration: Duration) -> Self {
        Control {
            duration,
            stop: AtomicBool::new(false),
            state: Mutex::new(TimerState::default()),
            wake: Condvar::new(),
        }
    }

    /// The length of the measurement window.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// Opens the measurement window (first call only; later calls return the same
    /// instant) and returns when it opened.
    pub fn begin(&self) -> Instant {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let started = *st.started.get_or_insert_with(Instant::now);
        self.wake.notify_all();
        started
    }

    /// When the window opened, if it has.
    pub fn started(&self) -> Option<Instant> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .started
    }

    /// True once the window has closed (or someone requested a stop).
    #[inline]
    pub fn should_stop(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Closes the window now.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// True if the window closed more than a grace period ago (the larger of 2 s and the
    /// window itself): a worker still waiting for its peer then should give up and report
    /// the peer as stalled instead of hanging the run.
    pub fn overdue(&self) -> bool {
        match self.started() {
            Some(t) => t.elapsed() > self.duration + self.duration.max(MIN_GRACE),
            None => false,
        }
    }

    /// Runs `body` (the workload) while a timer thread raises the stop flag `duration`
    /// after the first [`Control::begin`]. The timer ends as soon as `body` returns.
    pub fn run_timed<R>(&self, body: impl FnOnce(&Control) -> R) -> R {
        std::thread::scope(|s| {
            s.spawn(|| self.timer());
            let out = body(self);
            let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            st.finished = true;
            self.wake.notify_all();
            out
        })
    }

    fn timer(&self) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if st.finished {
                return;
            }
            st = match st.started {
                None => self.wake.wait(st).unwrap_or_else(PoisonError::into_inner),
                Some(t) => {
                    let deadline = t + self.duration;
                    let now = Instant::now();
                    if now >= deadline {
                        self.request_stop();
                        return;
                    }
                    self.wake
                        .wait_timeout(st, deadline - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_is_raised_after_the_window_not_before_begin() {
        let ctl = Control::new(Duration::from_millis(30));
        let waited = ctl.run_timed(|c| {
            std::thread::sleep(Duration::from_millis(60));
            // Setup time before begin() must not count against the window.
            assert!(!c.should_stop());
            let t = c.begin();
            while !c.should_stop() {
                std::hint::spin_loop();
            }
            t.elapsed()
        });
        assert!(waited >= Duration::from_millis(30), "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");
    }

    #[test]
    fn run_timed_returns_early_when_body_does() {
        let ctl = Control::new(Duration::from_secs(3600));
        let t = Instant::now();
        ctl.run_timed(|c| {
            c.begin();
        });
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(!ctl.overdue());
    }
}
