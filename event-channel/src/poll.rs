//! How long a driver thread busy-polls its ring before it sleeps on its event
//! channel, adapted to how soon the peer really answers.
//!
//! A fixed budget is wrong both ways. Too short, and a peer that answers every few
//! hundred microseconds (a TCP receiver's ACKs, one per batch it processed) always
//! finds the thread asleep: each answer pays for a wake-up (a system call on the
//! sending side, tens of microseconds of scheduling latency on a virtual CPU). Too
//! long, and an idle vif burns a CPU after every burst.
//!
//! [`PollBudget`] grows and shrinks the budget as KVM does with a vCPU's halt-polling
//! window (`halt_poll_ns`, `halt_poll_ns_grow`, `halt_poll_ns_grow_start`,
//! `halt_poll_ns_shrink`):
//! - a poll that finds work keeps the budget;
//! - a sleep that an event ended soon after the poll gave up (within
//!   [`PollBudget::worth`]) means polling longer would have caught it: the budget
//!   doubles, from [`POLL_GROW_START`] rounds, up to the configured maximum;
//! - a sleep that lasted longer, or timed out, means the peer went quiet: the budget
//!   halves, and drops to zero below [`POLL_GROW_START`].
//!
//! So a busy connection polls up to the maximum and an idle one sleeps at once.
//! Budgets are counted in poll rounds, not time, so the type needs no clock (it is
//! also used without `std`); the caller measures its sleep if it can.

use core::time::Duration;

/// Rounds a budget grows to from zero (KVM's `halt_poll_ns_grow_start`): a few
/// microseconds of polling.
pub const POLL_GROW_START: u32 = 128;

/// How soon after the poll gave up an event must end the sleep for the budget to
/// grow, by default: about what the largest default budget polls for.
pub const DEFAULT_POLL_WORTH: Duration = Duration::from_millis(1);

/// How a sleep after a fruitless poll ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    /// An event woke the thread after this long (`None`: the caller has no clock).
    Woken(Option<Duration>),
    /// Nothing came before the wait's timeout.
    TimedOut,
}

impl WaitOutcome {
    /// [`WaitOutcome::Woken`] after `slept` if an event ended the sleep (`woken`),
    /// else [`WaitOutcome::TimedOut`].
    pub const fn of(woken: bool, slept: Option<Duration>) -> Self {
        if woken {
            WaitOutcome::Woken(slept)
        } else {
            WaitOutcome::TimedOut
        }
    }
}

/// The adaptive poll budget of one waiting thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollBudget {
    rounds: u32,
    max: u32,
    worth: Duration,
}

impl PollBudget {
    /// A budget of at most `max` rounds, starting small (0 turns polling off).
    pub const fn new(max: u32) -> Self {
        Self {
            rounds: if max < POLL_GROW_START {
                max
            } else {
                POLL_GROW_START
            },
            max,
            worth: DEFAULT_POLL_WORTH,
        }
    }

    /// Grow only for sleeps an event ended within `worth` (instead of
    /// [`DEFAULT_POLL_WORTH`]).
    pub const fn with_worth(mut self, worth: Duration) -> Self {
        self.worth = worth;
        self
    }

    /// Rounds to poll before the next sleep.
    pub const fn rounds(&self) -> u32 {
        self.rounds
    }

    /// The most it grows to.
    pub const fn max(&self) -> u32 {
        self.max
    }

    /// The longest sleep that still makes the budget grow.
    pub const fn worth(&self) -> Duration {
        self.worth
    }

    /// Adapt after a poll of [`rounds`](Self::rounds) found nothing and the thread
    /// slept.
    pub fn after_sleep(&mut self, outcome: WaitOutcome) {
        let soon = match outcome {
            WaitOutcome::Woken(None) => true,
            WaitOutcome::Woken(Some(slept)) => slept <= self.worth,
            WaitOutcome::TimedOut => false,
        };
        if soon {
            self.rounds = self
                .rounds
                .saturating_mul(2)
                .max(POLL_GROW_START)
                .min(self.max);
        } else {
            self.rounds /= 2;
            if self.rounds < POLL_GROW_START {
                self.rounds = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOON: WaitOutcome = WaitOutcome::Woken(Some(Duration::from_micros(50)));
    const LATE: WaitOutcome = WaitOutcome::Woken(Some(Duration::from_millis(5)));

    #[test]
    fn starts_small_and_grows_to_the_maximum_while_events_come_soon() {
        let mut b = PollBudget::new(1000);
        assert_eq!(b.rounds(), POLL_GROW_START);
        let mut seen = vec![b.rounds()];
        for _ in 0..5 {
            b.after_sleep(SOON);
            seen.push(b.rounds());
        }
        assert_eq!(seen, [128, 256, 512, 1000, 1000, 1000]);
    }

    #[test]
    fn late_events_and_timeouts_shrink_it_to_zero_then_it_grows_again() {
        let mut b = PollBudget::new(1024);
        for _ in 0..4 {
            b.after_sleep(SOON);
        }
        assert_eq!(b.rounds(), 1024);
        b.after_sleep(LATE);
        assert_eq!(b.rounds(), 512);
        b.after_sleep(WaitOutcome::TimedOut);
        assert_eq!(b.rounds(), 256);
        b.after_sleep(WaitOutcome::TimedOut);
        assert_eq!(b.rounds(), 128);
        b.after_sleep(LATE);
        assert_eq!(b.rounds(), 0, "below the start value polling stops");
        b.after_sleep(WaitOutcome::TimedOut);
        assert_eq!(b.rounds(), 0);
        b.after_sleep(SOON);
        assert_eq!(b.rounds(), POLL_GROW_START);
    }

    #[test]
    fn zero_or_small_maximum_is_respected() {
        let mut off = PollBudget::new(0);
        off.after_sleep(SOON);
        off.after_sleep(WaitOutcome::Woken(None));
        assert_eq!(off.rounds(), 0);
        let mut small = PollBudget::new(50);
        assert_eq!(small.rounds(), 50);
        small.after_sleep(SOON);
        assert_eq!(small.rounds(), 50);
        small.after_sleep(WaitOutcome::TimedOut);
        assert_eq!(small.rounds(), 0);
        small.after_sleep(SOON);
        assert_eq!(small.rounds(), 50);
    }

    #[test]
    fn worth_decides_what_counts_as_soon() {
        let mut b = PollBudget::new(4096).with_worth(Duration::from_micros(10));
        b.after_sleep(SOON);
        assert_eq!(b.rounds(), 0, "50 µs is late against a 10 µs worth");
        b.after_sleep(WaitOutcome::Woken(Some(Duration::from_micros(10))));
        assert_eq!(b.rounds(), POLL_GROW_START);
        assert_eq!(b.worth(), Duration::from_micros(10));
        assert_eq!(b.max(), 4096);
    }

    #[test]
    fn outcome_of_a_wait() {
        let d = Some(Duration::from_micros(3));
        assert_eq!(WaitOutcome::of(true, d), WaitOutcome::Woken(d));
        assert_eq!(WaitOutcome::of(true, None), WaitOutcome::Woken(None));
        assert_eq!(WaitOutcome::of(false, d), WaitOutcome::TimedOut);
    }

    #[test]
    fn without_a_clock_any_event_counts_as_soon() {
        let mut b = PollBudget::new(512);
        b.after_sleep(WaitOutcome::Woken(None));
        assert_eq!(b.rounds(), 256);
    }
}
