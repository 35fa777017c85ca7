//! An event-driven ping-pong transport: two eventfds, each side blocked in `read(2)`
//! until the other writes. This is the wake-up path of pvnet's event channels (which
//! are eventfds in user space), without any ring work around it.
//!
//! The sequence number travels as the eventfd counter value: with one round trip in
//! flight the counter holds exactly the value written. Stop and failure are signalled
//! out of band (flags plus a wake-up write of 1) so the counter can never overflow and
//! block a writer.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::event::{eventfd, EventfdFlags};

use super::{PingPong, FIRST_TIMED_SEQ};
use crate::cpu::{CpuStopwatch, CpuTime};
use crate::workload::WorkloadError;

/// The two eventfds and the out-of-band flags.
pub struct EventfdLink {
    ping: OwnedFd,
    pong: OwnedFd,
    quit: AtomicBool,
    echo_gone: AtomicBool,
}

impl EventfdLink {
    /// Creates both eventfds (blocking, close-on-exec).
    pub fn new() -> io::Result<Self> {
        Ok(EventfdLink {
            ping: eventfd(0, EventfdFlags::CLOEXEC)?,
            pong: eventfd(0, EventfdFlags::CLOEXEC)?,
            quit: AtomicBool::new(false),
            echo_gone: AtomicBool::new(false),
        })
    }

    /// The echo side: waits for a ping, writes the same value back, until the client is
    /// dropped. On exit (also by panic) it wakes the client so it cannot block forever.
    /// Returns its CPU time from the first timed round trip ([`FIRST_TIMED_SEQ`]) on.
    pub fn echo(&self) -> io::Result<CpuTime> {
        struct Gone<'a>(&'a EventfdLink);
        impl Drop for Gone<'_> {
            fn drop(&mut self) {
                self.0.echo_gone.store(true, Ordering::Release);
                let _ = signal(&self.0.pong, 1);
            }
        }
        let _gone = Gone(self);
        let mut cpu = None;
        loop {
            let v = wait(&self.ping)?;
            if self.quit.load(Ordering::Acquire) {
                return Ok(cpu.map(CpuStopwatch::stop).unwrap_or_default());
            }
            if v == FIRST_TIMED_SEQ {
                cpu = Some(CpuStopwatch::start());
            }
            signal(&self.pong, v)?;
        }
    }

    /// The client side; dropping it stops the echo.
    pub fn client(&self) -> EventfdClient<'_> {
        EventfdClient { link: self }
    }
}

/// The client half of an [`EventfdLink`].
pub struct EventfdClient<'a> {
    link: &'a EventfdLink,
}

impl PingPong for EventfdClient<'_> {
    fn round_trip(&mut self, seq: u64) -> Result<u64, WorkloadError> {
        signal(&self.link.ping, seq)?;
        let v = wait(&self.link.pong)?;
        if self.link.echo_gone.load(Ordering::Acquire) {
            return Err(WorkloadError::WorkerPanicked("eventfd echo"));
        }
        Ok(v)
    }
}

impl Drop for EventfdClient<'_> {
    fn drop(&mut self) {
        self.link.quit.store(true, Ordering::Release);
        let _ = signal(&self.link.ping, 1);
    }
}

/// Adds `v` to the eventfd's counter, waking a reader.
fn signal(fd: impl AsFd, v: u64) -> io::Result<()> {
    loop {
        match rustix::io::write(&fd, &v.to_ne_bytes()) {
            Ok(8) => return Ok(()),
            Ok(n) => {
                return Err(io::Error::other(format!("eventfd write of {n} bytes")));
            }
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Blocks until the eventfd's counter is non-zero, then reads and resets it.
fn wait(fd: impl AsFd) -> io::Result<u64> {
    let mut buf = [0u8; 8];
    loop {
        match rustix::io::read(&fd, &mut buf) {
            Ok(8) => return Ok(u64::from_ne_bytes(buf)),
            Ok(n) => return Err(io::Error::other(format!("eventfd read of {n} bytes"))),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_answers_each_sequence_and_quits_on_drop() {
        let link = EventfdLink::new().expect("eventfd available");
        std::thread::scope(|s| {
            let echo = s.spawn(|| link.echo());
            let mut c = link.client();
            for seq in 1..=100 {
                assert_eq!(c.round_trip(seq).expect("echo alive"), seq);
            }
            drop(c);
            let r = echo.join().expect("echo does not panic");
            assert!(r.is_ok(), "{r:?}");
        });
    }

    #[test]
    fn client_learns_when_the_echo_is_gone() {
        let link = EventfdLink::new().expect("eventfd available");
        // Stop the echo first, then ping: the client must get an error, not block.
        link.quit.store(true, Ordering::Release);
        std::thread::scope(|s| {
            let echo = s.spawn(|| link.echo());
            signal(&link.ping, 1).expect("write");
            echo.join().expect("no panic").expect("clean exit");
            let mut c = EventfdClient { link: &link };
            assert!(matches!(
                c.round_trip(5),
                Err(WorkloadError::WorkerPanicked(_))
            ));
        });
    }
}
