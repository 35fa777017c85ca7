//! Cost of delivering an event to a polling receiver: `EVTCHNOP_send` plus the
//! receiver's `test_and_clear_bit`, with and without a waiter's notifier bound.
//!
//! `cargo bench -p event-channel --bench evtchn`

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use event_channel::{EventChannels, Port};

fn bound_pair(hub: &EventChannels) -> (Port, Port) {
    hub.add_domain(0, 64).expect("dom0");
    hub.add_domain(1, 64).expect("dom1");
    let tx = hub.alloc_unbound(1, 0).expect("alloc");
    let rx = hub.bind_interdomain(0, 1, tx).expect("bind");
    hub.test_and_clear_pending(0, rx).expect("clear");
    (tx, rx)
}

fn send_consume(c: &mut Criterion) {
    let mut g = c.benchmark_group("send_consume");

    let hub = EventChannels::new();
    let (tx, rx) = bound_pair(&hub);
    g.bench_function("hub_no_notifier", |b| {
        b.iter(|| {
            hub.send(1, black_box(tx)).expect("send");
            assert!(hub
                .test_and_clear_pending(0, black_box(rx))
                .expect("consume"));
        })
    });

    // A waiter that is polling: every send kicks its notifier, which sees the
    // waiter awake and skips the eventfd write. Consumed through the bitmap
    // directly, as the waiter's spin loop does.
    let hub = EventChannels::new();
    let (tx, rx) = bound_pair(&hub);
    let waiter = hub.waiter(0, rx).expect("waiter");
    g.bench_function("waiter_polling", |b| {
        b.iter(|| {
            hub.send(1, black_box(tx)).expect("send");
            assert!(waiter.try_consume());
        })
    });
    assert_eq!(waiter.stats().eventfd_writes, 0);
    g.finish();
}

criterion_group!(benches, send_consume);
criterion_main!(benches);
