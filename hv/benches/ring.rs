//! Ring throughput: how many netif_tx-shaped requests per second one `hv::abi::ring`
//! page carries, single-threaded in batches and between two threads (SPSC with event
//! indices, as netfront and netback use it).
//!
//! `cargo bench -p hv --bench ring`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hv::abi::netif::{
    NetifTxRequest, NetifTxResponse, TxBackRing, TxFrontRing, NETIF_RSP_OKAY, NET_TX_RING_SIZE,
};
use hv::abi::ring::{shared_ring_init, RING_PAGE_SIZE};
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::hint::black_box;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Page(NonNull<u8>);
// SAFETY: plain memory; the rings on it synchronise through atomics.
unsafe impl Send for Page {}
// SAFETY: as above.
unsafe impl Sync for Page {}
impl Page {
    fn layout() -> Layout {
        Layout::from_size_align(RING_PAGE_SIZE, RING_PAGE_SIZE).expect("valid layout")
    }
    fn new() -> Self {
        // SAFETY: non-zero size.
        let p = unsafe { alloc_zeroed(Self::layout()) };
        Page(NonNull::new(p).expect("allocation failed"))
    }
}
impl Drop for Page {
    fn drop(&mut self) {
        // SAFETY: allocated in Page::new with the same layout.
        unsafe { dealloc(self.0.as_ptr(), Self::layout()) }
    }
}

fn rings(page: &Page) -> (TxFrontRing, TxBackRing) {
    // SAFETY: the page is live, aligned and used by exactly these two views, which do
    // not outlive it in any benchmark below.
    unsafe {
        shared_ring_init(page.0);
        (
            TxFrontRing::attach(page.0, 0),
            TxBackRing::attach(page.0, 0),
        )
    }
}

fn req(i: u32) -> NetifTxRequest {
    NetifTxRequest {
        gref: i,
        offset: 0,
        flags: 0,
        id: i as u16,
        size: 1514,
    }
}

/// One full batch: the front fills the ring and pushes once, the back copies every
/// request out, answers each and pushes once, the front reaps the responses.
fn single_thread(c: &mut Criterion) {
    let page = Page::new();
    let (mut front, mut back) = rings(&page);
    let batch = NET_TX_RING_SIZE;
    let mut g = c.benchmark_group("ring_single_thread");
    g.throughput(Throughput::Elements(u64::from(batch)));
    g.bench_function("batch_256_push_consume_respond_reap", |b| {
        b.iter(|| {
            for i in 0..batch {
                let _ = front.produce_request(req(i));
            }
            black_box(front.push_requests_and_check_notify());
            let mut ids = [0u16; NET_TX_RING_SIZE as usize];
            let mut n = 0;
            for r in back.take_requests().expect("honest front") {
                ids[n] = r.id;
                n += 1;
            }
            for &id in &ids[..n] {
                let _ = back.produce_response(NetifTxResponse {
                    id,
                    status: NETIF_RSP_OKAY,
                });
            }
            black_box(back.push_responses_and_check_notify());
            let mut sum = 0u32;
            for r in front.take_responses().expect("honest back") {
                sum = sum.wrapping_add(u32::from(r.id));
            }
            black_box(sum)
        })
    });
    g.finish();
}

struct Evtchn(AtomicBool);
impl Evtchn {
    fn notify(&self) {
        self.0.store(true, Ordering::Release);
    }
    fn wait(&self, stop: &AtomicBool) {
        let mut spins = 0u32;
        while !self.0.swap(false, Ordering::Acquire) {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            spins = spins.wrapping_add(1);
            if spins & 255 == 0 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// Pushes `items` requests through the ring with a backend thread answering them;
/// returns the elapsed time.
fn spsc_run(items: u64) -> Duration {
    let page = Arc::new(Page::new());
    let (mut front, mut back) = rings(&page);
    let to_back = Arc::new(Evtchn(AtomicBool::new(false)));
    let to_front = Arc::new(Evtchn(AtomicBool::new(false)));
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let backend = {
        let (page, to_back, to_front, stop) = (
            page.clone(),
            to_back.clone(),
            to_front.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || {
            let _keep = page;
            let mut ids = [0u16; NET_TX_RING_SIZE as usize];
            let mut done = 0u64;
            while done < items && !stop.load(Ordering::Relaxed) {
                let mut n = 0;
                for r in back.take_requests().expect("honest front") {
                    ids[n] = r.id;
                    n += 1;
                }
                for &id in &ids[..n] {
                    let _ = back.produce_response(NetifTxResponse {
                        id,
                        status: NETIF_RSP_OKAY,
                    });
                }
                done += n as u64;
                if n > 0 && back.push_responses_and_check_notify() {
                    to_front.notify();
                }
                if done < items && !back.final_check_for_requests() {
                    to_back.wait(&stop);
                }
            }
        })
    };
    let (mut sent, mut received) = (0u64, 0u64);
    let deadline = t0 + Duration::from_secs(60);
    while received < items {
        let mut queued = false;
        while sent < items && front.produce_request(req(sent as u32)).is_ok() {
            sent += 1;
            queued = true;
        }
        if queued && front.push_requests_and_check_notify() {
            to_back.notify();
        }
        received += front.take_responses().expect("honest back").count() as u64;
        let can_send = sent < items && !front.is_full();
        if received < items && !can_send && !front.final_check_for_responses() {
            to_front.wait(&stop);
        }
        if Instant::now() > deadline {
            stop.store(true, Ordering::Relaxed);
            to_back.notify();
            panic!("SPSC bench stalled");
        }
    }
    let elapsed = t0.elapsed();
    backend.join().expect("backend thread");
    elapsed
}

fn two_threads(c: &mut Criterion) {
    const PER_ITER: u64 = 1 << 16;
    let mut g = c.benchmark_group("ring_two_threads");
    g.throughput(Throughput::Elements(PER_ITER));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("spsc_event_indices_64k_items", |b| {
        b.iter_custom(|iters| spsc_run(PER_ITER * iters))
    });
    g.finish();
}

criterion_group!(benches, single_thread, two_threads);
criterion_main!(benches);
