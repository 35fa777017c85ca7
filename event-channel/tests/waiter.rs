//! The spin-then-sleep waiter: no lost wake-ups, sleeping and being woken,
//! timeouts, and the eventfd writes a polling receiver saves.

#![cfg(feature = "std")]

mod common;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::connect;
use event_channel::{EventChannels, EvtchnBits, EvtchnError, Waiter, DEFAULT_SPIN};

/// A wait that takes this long means a wake-up was lost.
const LOST: Duration = Duration::from_secs(10);

/// Two domains and two channels: 1 → 0 ("ping") and 0 → 1 ("pong").
struct PingPong {
    hub: Arc<EventChannels>,
    ping_tx: u32,
    ping_rx: u32,
    pong_tx: u32,
    pong_rx: u32,
}

fn ping_pong() -> PingPong {
    let hub = EventChannels::new();
    hub.add_domain(0, 8).expect("add");
    hub.add_domain(1, 8).expect("add");
    let (ping_tx, ping_rx) = connect(&hub, 1, 0);
    let (pong_rx, pong_tx) = connect(&hub, 1, 0);
    PingPong {
        hub: Arc::new(hub),
        ping_tx,
        ping_rx,
        pong_tx,
        pong_rx,
    }
}

/// `round_trips` ping-pongs (2 handoffs each). Panics on a lost wake-up.
/// Returns the wall time and both waiters.
fn run_handoffs(spin: Duration, round_trips: usize) -> (Duration, Waiter, Waiter) {
    let pp = ping_pong();
    let mut echo_w = pp.hub.waiter(0, pp.ping_rx).expect("waiter");
    let mut main_w = pp.hub.waiter(1, pp.pong_rx).expect("waiter");
    echo_w.set_spin(spin);
    main_w.set_spin(spin);
    let hub = pp.hub.clone();
    let pong_tx = pp.pong_tx;
    let start = Instant::now();
    let echo = thread::spawn(move || {
        for i in 0..round_trips {
            assert!(echo_w.wait(Some(LOST)), "echo lost wake-up at {i}");
            hub.send(0, pong_tx).expect("send pong");
        }
        echo_w
    });
    for i in 0..round_trips {
        pp.hub.send(1, pp.ping_tx).expect("send ping");
        assert!(main_w.wait(Some(LOST)), "main lost wake-up at {i}");
    }
    let echo_w = echo.join().expect("echo thread");
    (start.elapsed(), echo_w, main_w)
}

#[test]
fn million_handoffs_lose_no_wakeup() {
    // 500k round trips = 1M notify/wait handoffs, default spin-then-sleep.
    let (elapsed, a, b) = run_handoffs(DEFAULT_SPIN, 500_000);
    assert!(elapsed < Duration::from_secs(240), "took {elapsed:?}");
    // Every handoff kicked the receiver exactly once (each send found the bit clear).
    assert_eq!(a.stats().kicks, 500_000);
    assert_eq!(b.stats().kicks, 500_000);
    eprintln!(
        "1M handoffs in {elapsed:?}; a={:?} b={:?}",
        a.stats(),
        b.stats()
    );
}

#[test]
fn sleep_path_handoffs_lose_no_wakeup() {
    // No spinning at all: every wait that does not find the bit at once goes
    // through the announce / re-check / poll path.
    let (elapsed, a, b) = run_handoffs(Duration::ZERO, 50_000);
    assert!(elapsed < Duration::from_secs(120), "took {elapsed:?}");
    let (sa, sb) = (a.stats(), b.stats());
    assert!(sa.sleeps + sb.sleeps > 0, "the sleep path was never taken");
    assert!(sa.eventfd_writes + sb.eventfd_writes > 0);
    assert!(sa.eventfd_writes <= sa.kicks && sb.eventfd_writes <= sb.kicks);
}

#[test]
fn sleeping_waiter_is_woken_by_a_send() {
    let pp = ping_pong();
    let mut w = pp.hub.waiter(0, pp.ping_rx).expect("waiter");
    w.set_spin(Duration::ZERO);
    let t = thread::spawn(move || {
        let start = Instant::now();
        let got = w.wait(Some(LOST));
        (got, start.elapsed(), w)
    });
    // Give the waiter time to fall asleep in poll, then wake it.
    thread::sleep(Duration::from_millis(100));
    pp.hub.send(1, pp.ping_tx).expect("send");
    let (got, waited, w) = t.join().expect("waiter thread");
    assert!(got, "waiter did not see the event");
    assert!(
        waited >= Duration::from_millis(100),
        "returned before the send: {waited:?}"
    );
    assert!(waited < LOST, "woke only at the timeout: {waited:?}");
    let s = w.stats();
    assert_eq!(s.sleeps, 1);
    assert_eq!(s.kicks, 1);
    assert_eq!(
        s.eventfd_writes, 1,
        "a sleeping waiter must cost exactly one write"
    );
    assert_eq!(
        pp.hub.is_pending(0, pp.ping_rx),
        Ok(false),
        "event consumed"
    );
}

#[test]
fn wait_times_out_without_an_event() {
    let pp = ping_pong();
    let mut w = pp.hub.waiter(0, pp.ping_rx).expect("waiter");
    let start = Instant::now();
    assert!(!w.wait(Some(Duration::from_millis(30))));
    assert!(start.elapsed() >= Duration::from_millis(30));
    assert!(!w.wait(Some(Duration::ZERO)));
    // A pending event is returned at once, even with a zero timeout.
    pp.hub.send(1, pp.ping_tx).expect("send");
    assert!(w.wait(Some(Duration::ZERO)));
    assert!(!w.try_consume());
}

#[test]
fn masked_port_wakes_sleeper_only_on_unmask() {
    let pp = ping_pong();
    let mut w = pp.hub.waiter(0, pp.ping_rx).expect("waiter");
    w.set_spin(Duration::ZERO);
    pp.hub.mask(0, pp.ping_rx).expect("mask");
    let t = thread::spawn(move || (w.wait(Some(LOST)), w));
    thread::sleep(Duration::from_millis(50));
    pp.hub.send(1, pp.ping_tx).expect("send");
    thread::sleep(Duration::from_millis(50));
    assert!(!t.is_finished(), "a masked port must not kick the sleeper");
    pp.hub.unmask(0, pp.ping_rx).expect("unmask");
    let (got, w) = t.join().expect("waiter thread");
    assert!(got);
    assert_eq!(w.stats().eventfd_writes, 1);
}

#[test]
fn polling_waiter_costs_no_eventfd_writes() {
    // Receivers that never reach their sleep phase: every kick sees them awake.
    let n = 20_000;
    let (_, a, b) = run_handoffs(Duration::from_secs(60), n);
    for s in [a.stats(), b.stats()] {
        assert_eq!(s.kicks, n as u64, "every send newly set the bit and kicked");
        assert_eq!(
            s.eventfd_writes, 0,
            "a polling receiver needs no syscall: {s:?}"
        );
        assert_eq!(s.sleeps, 0);
    }
}

#[test]
fn waiter_rejects_bad_ports() {
    let hub = EventChannels::new();
    hub.add_domain(3, 4).expect("add");
    assert_eq!(
        hub.waiter(3, 0).err(),
        Some(EvtchnError::InvalidPort { dom: 3, port: 0 })
    );
    assert_eq!(
        hub.waiter(3, 5).err(),
        Some(EvtchnError::InvalidPort { dom: 3, port: 5 })
    );
    assert_eq!(
        hub.waiter(3, 1).err(),
        Some(EvtchnError::WrongState { dom: 3, port: 1 })
    );
    assert_eq!(hub.waiter(4, 1).err(), Some(EvtchnError::NoSuchDomain(4)));
    let bits = Arc::new(EvtchnBits::new(8));
    assert!(Waiter::new(bits.clone(), 8).is_err());
    assert!(Waiter::new(bits.clone(), 0).is_err());
    assert!(Waiter::new(bits, 7).is_ok());
}
