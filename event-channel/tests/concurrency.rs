//! Many threads at once: senders hammering one port, and random operations
//! racing across domains (lock ordering, no deadlock, invariants hold after).

mod common;

use std::sync::Arc;
use std::thread;

use event_channel::{EventChannels, PortState};

/// Needs the waiter, hence `std`.
#[cfg(feature = "std")]
mod with_waiter {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::thread;
    use std::time::{Duration, Instant};

    use crate::common::connect;
    use event_channel::{EventChannels, PortState};

    #[test]
    fn many_senders_to_one_port_lose_no_event() {
        // Eight threads of domain 1 all send on the same port; domain 0 waits on the
        // single port at the other end.
        const THREADS: u64 = 8;
        const SENDS: u64 = 20_000;
        let hub = Arc::new(EventChannels::new());
        hub.add_domain(0, 16).expect("add");
        hub.add_domain(1, 16).expect("add");
        let (tx1, rx1) = connect(&hub, 1, 0);
        let d1 = 1;
        let total = SENDS * THREADS;
        let produced = Arc::new(AtomicU64::new(0));
        let mut waiter = hub.waiter(0, rx1).expect("waiter");

        let mut senders = Vec::new();
        for t in 0..THREADS {
            let hub = hub.clone();
            let produced = produced.clone();
            senders.push(thread::spawn(move || {
                for _ in 0..SENDS {
                    // Publish the work, then notify: the receiver must see the last one.
                    produced.fetch_add(1, Ordering::SeqCst);
                    hub.send(d1, tx1).expect("send");
                }
                t
            }));
        }
        let start = Instant::now();
        let mut wakeups = 0u64;
        loop {
            let woke = waiter.wait(Some(Duration::from_secs(10)));
            let seen = produced.load(Ordering::SeqCst);
            if seen == total {
                break;
            }
            assert!(
                woke,
                "lost wake-up: {seen}/{total} produced and no event for 10 s"
            );
            wakeups += 1;
        }
        for s in senders {
            s.join().expect("sender");
        }
        assert!(start.elapsed() < Duration::from_secs(120));
        // Events coalesce: never more wake-ups than sends, never more kicks either.
        let st = waiter.stats();
        assert!(wakeups <= total && st.kicks <= total, "{st:?}");
        assert!(st.kicks >= 1);
        // The channel is intact.
        assert_eq!(
            hub.status(0, rx1),
            Ok(PortState::Interdomain {
                remote_dom: d1,
                remote_port: tx1
            })
        );
    }
}

#[test]
fn racing_operations_keep_pairs_consistent_and_do_not_deadlock() {
    const DOMS: u16 = 4;
    const MAX_PORT: u32 = 6;
    let hub = Arc::new(EventChannels::new());
    for d in 0..DOMS {
        hub.add_domain(d, MAX_PORT).expect("add");
    }
    let threads: Vec<_> = (0..4u64)
        .map(|seed| {
            let hub = hub.clone();
            thread::spawn(move || {
                // xorshift: deterministic per thread, no extra dependency.
                let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                let mut next = move || {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x
                };
                for _ in 0..40_000 {
                    let r = next();
                    let d = (r % DOMS as u64) as u16;
                    let e = ((r >> 8) % DOMS as u64) as u16;
                    let p = ((r >> 16) % (MAX_PORT as u64 + 1)) as u32;
                    // Errors are expected (races, full tables); panics and hangs are not.
                    let _ = match (r >> 24) % 6 {
                        0 => hub.alloc_unbound(d, e).map(|_| ()),
                        1 => hub.bind_interdomain(d, e, p).map(|_| ()),
                        2 | 3 => hub.send(d, p),
                        4 => hub.close(d, p),
                        _ => hub.test_and_clear_pending(d, p).map(|_| ()),
                    };
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("worker");
    }
    for d in 0..DOMS {
        for p in 1..=MAX_PORT {
            match hub.status(d, p).expect("status") {
                PortState::Interdomain {
                    remote_dom,
                    remote_port,
                } => assert_eq!(
                    hub.status(remote_dom, remote_port),
                    Ok(PortState::Interdomain {
                        remote_dom: d,
                        remote_port: p
                    })
                ),
                PortState::Free => assert_eq!(hub.is_pending(d, p), Ok(false)),
                PortState::Unbound { .. } => {}
            }
        }
    }
}
