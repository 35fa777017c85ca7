//! Properties of `hv::abi::ring`: a FrontRing and a BackRing on one 4 KiB page, driven
//! by random interleavings from start indices near `u32::MAX`, checked against a
//! model: FIFO order and content, no loss, free/full counts, notify decisions (Xen's
//! "event in (old, new]" rule), final-check semantics (no lost wake-up) and the
//! detection of a hostile peer's producer index. Then two threads pass 10 million
//! items through a real ring, sleeping on event indices.

use hv::abi::ring::*;
use proptest::prelude::*;
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::collections::VecDeque;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A page-aligned, zeroed 4 KiB ring page.
struct Page(NonNull<u8>);

// SAFETY: the page is plain memory; the rings on it synchronise through atomics.
unsafe impl Send for Page {}
// SAFETY: as above; shared access goes through the ring's atomics and volatile copies.
unsafe impl Sync for Page {}

impl Page {
    const LAYOUT: Layout = match Layout::from_size_align(RING_PAGE_SIZE, RING_PAGE_SIZE) {
        Ok(l) => l,
        Err(_) => panic!("bad layout"),
    };

    fn new() -> Self {
        // SAFETY: non-zero size.
        let p = unsafe { alloc_zeroed(Self::LAYOUT) };
        Page(NonNull::new(p).expect("allocation failed"))
    }

    /// The header's index words, as the peer sees them.
    fn idx(&self, word: usize) -> &AtomicU32 {
        assert!(word < 4);
        // SAFETY: the header's first four u32 words are the ring indices; the page is
        // live, aligned and only accessed atomically at these offsets.
        unsafe { &*self.0.as_ptr().cast::<AtomicU32>().add(word) }
    }
    fn req_prod(&self) -> &AtomicU32 {
        self.idx(0)
    }
    fn req_event(&self) -> &AtomicU32 {
        self.idx(1)
    }
    fn rsp_prod(&self) -> &AtomicU32 {
        self.idx(2)
    }
    fn rsp_event(&self) -> &AtomicU32 {
        self.idx(3)
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // SAFETY: allocated in Page::new with the same layout.
        unsafe { dealloc(self.0.as_ptr(), Self::LAYOUT) }
    }
}

/// Xen's notify rule stated directly: the peer asked to be woken when the producer
/// reaches `event`; notify iff one of the newly published indices `old+1..=new` is it.
fn event_crossed(old: u32, new: u32, event: u32) -> bool {
    let n = new.wrapping_sub(old);
    (1..=n).any(|i| old.wrapping_add(i) == event)
}

#[derive(Debug, Clone)]
enum Op {
    /// Front queues up to k requests, then pushes (with the notify check if `notify`).
    FrontPush { k: u32, notify: bool },
    /// Back consumes up to k published requests.
    BackConsume { k: u32 },
    /// Back answers up to k consumed requests, then pushes.
    BackRespond { k: u32, notify: bool },
    /// Front consumes up to k published responses.
    FrontConsume { k: u32 },
    /// Back runs RING_FINAL_CHECK_FOR_REQUESTS.
    BackFinalCheck,
    /// Front runs RING_FINAL_CHECK_FOR_RESPONSES.
    FrontFinalCheck,
    /// A hostile front writes req_prod = rsp_prod_pvt + SIZE + 1 + extra.
    HostileReqProd { extra: u32 },
    /// A hostile front moves req_prod back behind req_cons by `back` (if it can).
    RegressReqProd { back: u32 },
    /// A hostile back writes rsp_prod past the outstanding requests.
    HostileRspProd { extra: u32 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u32..300, any::<bool>()).prop_map(|(k, notify)| Op::FrontPush { k, notify }),
        4 => (0u32..300).prop_map(|k| Op::BackConsume { k }),
        4 => (0u32..300, any::<bool>()).prop_map(|(k, notify)| Op::BackRespond { k, notify }),
        4 => (0u32..300).prop_map(|k| Op::FrontConsume { k }),
        2 => Just(Op::BackFinalCheck),
        2 => Just(Op::FrontFinalCheck),
        1 => prop_oneof![0u32..4, any::<u32>().prop_map(|x| x >> 1)]
            .prop_map(|extra| Op::HostileReqProd { extra }),
        1 => (1u32..300).prop_map(|back| Op::RegressReqProd { back }),
        1 => (1u32..300).prop_map(|extra| Op::HostileRspProd { extra }),
    ]
}

fn start_index() -> impl Strategy<Value = u32> {
    prop_oneof![
        (0u32..2048).prop_map(|d| u32::MAX - d),
        Just(u32::MAX),
        Just(0u32),
        any::<u32>(),
    ]
}

/// Encodes a sequence number into a slot value that also checks the content.
trait Payload: RingEntry + PartialEq + std::fmt::Debug {
    fn make(seq: u64) -> Self;
}
impl Payload for [u32; 3] {
    fn make(seq: u64) -> Self {
        [
            seq as u32,
            (seq >> 32) as u32,
            (seq as u32).wrapping_mul(0x9e37_79b9),
        ]
    }
}
impl Payload for u32 {
    fn make(seq: u64) -> Self {
        (seq as u32) ^ 0xa5a5_0000
    }
}
impl Payload for u16 {
    fn make(seq: u64) -> Self {
        (seq as u16) ^ 0x5a5a
    }
}

/// Model of both ends: what has been produced, published, consumed.
struct Model {
    next_req: u64,
    /// Requests published (pushed) and not consumed by the back.
    published: VecDeque<u64>,
    /// Requests queued by the front but not pushed yet.
    queued: VecDeque<u64>,
    /// Requests consumed by the back and not answered.
    consumed: VecDeque<u64>,
    /// Responses answered but not pushed.
    answered: VecDeque<u64>,
    /// Responses pushed and not consumed by the front.
    responses: VecDeque<u64>,
    /// The back's final check returned false: it sleeps until notified.
    back_sleeping: bool,
    /// The front's final check returned false: it sleeps until notified.
    front_sleeping: bool,
}

fn run_ops<Req: Payload, Rsp: Payload>(start: u32, ops: &[Op]) -> Result<(), TestCaseError> {
    let size = SharedRing::<Req, Rsp>::SIZE;
    let page = Page::new();
    // SAFETY: the page is live, aligned, and used only by these two views.
    let (mut front, mut back) = unsafe {
        shared_ring_init_at(page.0, start);
        (
            FrontRing::<Req, Rsp>::attach(page.0, start),
            BackRing::<Req, Rsp>::attach(page.0, start),
        )
    };
    let mut m = Model {
        next_req: 0,
        published: VecDeque::new(),
        queued: VecDeque::new(),
        consumed: VecDeque::new(),
        answered: VecDeque::new(),
        responses: VecDeque::new(),
        back_sleeping: false,
        front_sleeping: false,
    };
    let mut answered_total: u64 = 0;
    let mut front_consumed_total: u64 = 0;

    for op in ops {
        match *op {
            Op::FrontPush { k, notify } => {
                let in_flight = m.queued.len()
                    + m.published.len()
                    + m.consumed.len()
                    + m.answered.len()
                    + m.responses.len();
                prop_assert_eq!(front.free_requests(), size - in_flight as u32);
                prop_assert_eq!(front.is_full(), in_flight as u32 == size);
                for _ in 0..k {
                    let free = front.free_requests();
                    match front.produce_request(Req::make(m.next_req)) {
                        Ok(idx) => {
                            prop_assert!(free > 0);
                            // Slot indices are consecutive from the start value.
                            prop_assert_eq!(idx, start.wrapping_add(m.next_req as u32));
                            m.queued.push_back(m.next_req);
                            m.next_req += 1;
                        }
                        Err(e) => {
                            prop_assert_eq!(e, RingError::Full);
                            prop_assert_eq!(free, 0);
                            prop_assert!(front.is_full());
                        }
                    }
                }
                let old = page.req_prod().load(Ordering::Relaxed);
                let event = page.req_event().load(Ordering::Relaxed);
                let new = front.req_prod_pvt();
                if notify {
                    let n = front.push_requests_and_check_notify();
                    prop_assert_eq!(
                        n,
                        event_crossed(old, new, event),
                        "old {} new {} event {}",
                        old,
                        new,
                        event
                    );
                    if m.back_sleeping && new != old {
                        // The back asked for req_cons + 1; any new request must wake it.
                        prop_assert!(
                            n,
                            "lost wake-up: back sleeps, {} new requests, no notify",
                            new.wrapping_sub(old)
                        );
                        m.back_sleeping = false;
                    }
                } else {
                    front.push_requests();
                    // Pushing without the check is the caller's choice to skip waking.
                    m.back_sleeping &= new == old;
                }
                prop_assert_eq!(page.req_prod().load(Ordering::Relaxed), new);
                m.published.extend(m.queued.drain(..));
            }
            Op::BackConsume { k } => {
                prop_assert_eq!(back.unconsumed_requests(), m.published.len() as u32);
                prop_assert_eq!(back.has_unconsumed_requests(), !m.published.is_empty());
                let batch = back.take_requests();
                prop_assert!(batch.is_ok(), "honest req_prod rejected: {:?}", batch.err());
                let Ok(batch) = batch else { unreachable!() };
                prop_assert_eq!(batch.len(), m.published.len());
                for req in batch.take(k as usize) {
                    let Some(seq) = m.published.pop_front() else {
                        return Err(TestCaseError::fail("back read a request never published"));
                    };
                    prop_assert_eq!(req, Req::make(seq), "request out of order or corrupted");
                    m.consumed.push_back(seq);
                }
                // Consumed-but-unanswered requests fill the ring exactly when
                // RING_REQUEST_CONS_OVERFLOW says reading one more would overrun.
                prop_assert_eq!(
                    back.request_cons_overflow(back.req_cons()),
                    m.consumed.len() as u32 >= size
                );
            }
            Op::BackRespond { k, notify } => {
                for _ in 0..k {
                    match back.produce_response(Rsp::make(m.consumed.front().copied().unwrap_or(0)))
                    {
                        Ok(_) => {
                            let Some(seq) = m.consumed.pop_front() else {
                                return Err(TestCaseError::fail("answered an unconsumed request"));
                            };
                            m.answered.push_back(seq);
                            answered_total += 1;
                        }
                        Err(e) => {
                            prop_assert_eq!(e, RingError::NoRequestToAnswer);
                            prop_assert!(m.consumed.is_empty());
                        }
                    }
                }
                prop_assert_eq!(
                    back.rsp_prod_pvt(),
                    start.wrapping_add(answered_total as u32)
                );
                let old = page.rsp_prod().load(Ordering::Relaxed);
                let event = page.rsp_event().load(Ordering::Relaxed);
                let new = back.rsp_prod_pvt();
                if notify {
                    let n = back.push_responses_and_check_notify();
                    prop_assert_eq!(n, event_crossed(old, new, event));
                    if m.front_sleeping && new != old {
                        prop_assert!(n, "lost wake-up: front sleeps, new responses, no notify");
                        m.front_sleeping = false;
                    }
                } else {
                    back.push_responses();
                    m.front_sleeping &= new == old;
                }
                m.responses.extend(m.answered.drain(..));
            }
            Op::FrontConsume { k } => {
                prop_assert_eq!(front.unconsumed_responses(), m.responses.len() as u32);
                let batch = front.take_responses();
                prop_assert!(batch.is_ok(), "honest rsp_prod rejected: {:?}", batch.err());
                let Ok(batch) = batch else { unreachable!() };
                for rsp in batch.take(k as usize) {
                    let Some(seq) = m.responses.pop_front() else {
                        return Err(TestCaseError::fail("front read a response never pushed"));
                    };
                    prop_assert_eq!(rsp, Rsp::make(seq), "response out of order or corrupted");
                    front_consumed_total += 1;
                }
                prop_assert_eq!(
                    front.rsp_cons(),
                    start.wrapping_add(front_consumed_total as u32)
                );
            }
            Op::BackFinalCheck => {
                let work = back.final_check_for_requests();
                prop_assert_eq!(work, !m.published.is_empty());
                if !work {
                    prop_assert_eq!(
                        page.req_event().load(Ordering::Relaxed),
                        back.req_cons().wrapping_add(1)
                    );
                    m.back_sleeping = true;
                }
            }
            Op::FrontFinalCheck => {
                let work = front.final_check_for_responses();
                prop_assert_eq!(work, !m.responses.is_empty());
                if !work {
                    prop_assert_eq!(
                        page.rsp_event().load(Ordering::Relaxed),
                        front.rsp_cons().wrapping_add(1)
                    );
                    m.front_sleeping = true;
                }
            }
            Op::HostileReqProd { extra } => {
                let honest = page.req_prod().load(Ordering::Relaxed);
                let bad = back
                    .rsp_prod_pvt()
                    .wrapping_add(size)
                    .wrapping_add(1)
                    .wrapping_add(extra);
                page.req_prod().store(bad, Ordering::Relaxed);
                let err = back.take_requests().err();
                prop_assert_eq!(
                    err,
                    Some(RingError::RequestProdOverflow {
                        prod: bad,
                        rsp_prod_pvt: back.rsp_prod_pvt(),
                        size
                    })
                );
                prop_assert!(back.check_request_prod(bad).is_err());
                // An honest index one slot short of overflow is accepted.
                prop_assert!(back
                    .check_request_prod(back.rsp_prod_pvt().wrapping_add(size))
                    .is_ok());
                // The min rule still bounds what a careless loop would read.
                prop_assert!(back.unconsumed_requests() <= size);
                prop_assert!(
                    back.unconsumed_requests()
                        <= size - back.req_cons().wrapping_sub(back.rsp_prod_pvt())
                );
                page.req_prod().store(honest, Ordering::Relaxed);
            }
            Op::RegressReqProd { back: by } => {
                let unanswered = back.req_cons().wrapping_sub(back.rsp_prod_pvt());
                if unanswered > 0 {
                    let honest = page.req_prod().load(Ordering::Relaxed);
                    let by = 1 + by % unanswered;
                    let bad = back.req_cons().wrapping_sub(by);
                    page.req_prod().store(bad, Ordering::Relaxed);
                    prop_assert!(back.check_request_prod(bad).is_ok());
                    let err = back.take_requests().err();
                    prop_assert_eq!(
                        err,
                        Some(RingError::RequestProdRegressed {
                            prod: bad,
                            cons: back.req_cons()
                        })
                    );
                    page.req_prod().store(honest, Ordering::Relaxed);
                }
            }
            Op::HostileRspProd { extra } => {
                let honest = page.rsp_prod().load(Ordering::Relaxed);
                let outstanding = front.req_prod_pvt().wrapping_sub(front.rsp_cons());
                let bad = front
                    .rsp_cons()
                    .wrapping_add(outstanding)
                    .wrapping_add(extra);
                page.rsp_prod().store(bad, Ordering::Relaxed);
                let err = front.take_responses().err();
                prop_assert!(
                    matches!(err, Some(RingError::ResponseProdOverflow { prod, .. }) if prod == bad),
                    "hostile rsp_prod accepted: {:?}",
                    err
                );
                prop_assert_eq!(
                    front.check_response_prod(bad).is_err(),
                    bad.wrapping_sub(front.rsp_cons()) > size
                );
                page.rsp_prod().store(honest, Ordering::Relaxed);
            }
        }
    }

    // Drain everything: every request ever produced comes back, in order.
    let fail = |e: RingError| TestCaseError::fail(e.to_string());
    front.push_requests();
    m.published.extend(m.queued.drain(..));
    let reqs: Vec<Req> = back.take_requests().map_err(fail)?.collect();
    prop_assert_eq!(reqs.len(), m.published.len());
    for r in reqs {
        let seq = m
            .published
            .pop_front()
            .ok_or_else(|| TestCaseError::fail("extra request"))?;
        prop_assert_eq!(r, Req::make(seq));
        m.consumed.push_back(seq);
    }
    // Pushed, then answered-but-unpushed, then the rest, in request order.
    let mut expected: Vec<Rsp> = m
        .responses
        .iter()
        .chain(m.answered.iter())
        .map(|&s| Rsp::make(s))
        .collect();
    for &seq in &m.consumed {
        back.produce_response(Rsp::make(seq)).map_err(fail)?;
        expected.push(Rsp::make(seq));
    }
    prop_assert_eq!(
        back.produce_response(Rsp::make(0)),
        Err(RingError::NoRequestToAnswer)
    );
    back.push_responses();
    let rsps: Vec<Rsp> = front.take_responses().map_err(fail)?.collect();
    prop_assert_eq!(
        front_consumed_total + rsps.len() as u64,
        m.next_req,
        "requests lost"
    );
    prop_assert_eq!(rsps, expected);
    prop_assert_eq!(front.free_requests(), size);
    prop_assert!(!front.final_check_for_responses());
    prop_assert!(!back.final_check_for_requests());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// netif_tx-shaped ring: 12-byte requests, 4-byte responses, 256 slots.
    #[test]
    fn tx_shaped_ring_model(start in start_index(), ops in proptest::collection::vec(op(), 1..120)) {
        prop_assert_eq!(SharedRing::<[u32; 3], u32>::SIZE, 256);
        run_ops::<[u32; 3], u32>(start, &ops)?;
    }

    /// Small slots: 2-byte entries, 1024 slots (a different mask).
    #[test]
    fn small_slot_ring_model(start in start_index(), ops in proptest::collection::vec(op(), 1..120)) {
        prop_assert_eq!(SharedRing::<u16, u16>::SIZE, 1024);
        run_ops::<u16, u16>(start, &ops)?;
    }

    /// The notify formula equals "the event index lies in (old, new]" for any indices
    /// with at most a ring's worth of new entries.
    #[test]
    fn notify_formula_is_event_in_window(old in any::<u32>(), n in 0u32..=1024, d in any::<u32>(), near in any::<bool>()) {
        let new = old.wrapping_add(n);
        let event = if near { old.wrapping_add(d % 1100) } else { d };
        prop_assert_eq!(notify_needed(old, new, event), event_crossed(old, new, event));
    }
}

/// Xen's `RING_PUSH_*_AND_CHECK_NOTIFY` only: the answer is whether the event index
/// was crossed, for all values of the event around a small window at the wrap.
#[test]
fn notify_exhaustive_at_wrap() {
    for old in [u32::MAX - 5, u32::MAX, 0, 7] {
        for n in 0..12u32 {
            let new = old.wrapping_add(n);
            for de in 0..20u32 {
                let event = old.wrapping_sub(4).wrapping_add(de);
                assert_eq!(
                    notify_needed(old, new, event),
                    event_crossed(old, new, event),
                    "old {old} new {new} event {event}"
                );
            }
        }
    }
}

/// An event-channel stand-in: a pending bit set by the notifier, cleared by the waiter.
struct Evtchn(AtomicBool);

impl Evtchn {
    fn notify(&self) {
        self.0.store(true, Ordering::Release);
    }
    /// Spins (yielding: the machine is shared) until notified or the deadline passes.
    fn wait(&self, deadline: Instant, who: &str) {
        let mut spins = 0u32;
        while !self.0.swap(false, Ordering::Acquire) {
            spins += 1;
            if spins & 63 == 0 {
                std::thread::yield_now();
                assert!(
                    Instant::now() < deadline,
                    "{who} waited past the deadline: lost wake-up or stall"
                );
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// Two threads pass 10M items through a real ring. Each side sleeps only after its
/// final check says there is no work, and is woken only when the peer's
/// push-and-check says so; a wrong event index or a missing fence shows up as a
/// stall (deadline) and any reordering or loss as a sequence mismatch.
#[test]
fn two_threads_ten_million_items_in_order() {
    const ITEMS: u64 = 10_000_000;
    let deadline = Instant::now() + Duration::from_secs(120);
    let page = Arc::new(Page::new());
    let start = u32::MAX - 1000;
    // SAFETY: the page is live and aligned; one front and one back use it.
    let (mut front, mut back) = unsafe {
        shared_ring_init_at(page.0, start);
        (
            FrontRing::<u64, u64>::attach(page.0, start),
            BackRing::<u64, u64>::attach(page.0, start),
        )
    };
    let to_back = Arc::new(Evtchn(AtomicBool::new(false)));
    let to_front = Arc::new(Evtchn(AtomicBool::new(false)));

    let backend = {
        let (to_back, to_front, page) = (to_back.clone(), to_front.clone(), page.clone());
        std::thread::spawn(move || {
            let _keep = page;
            let mut expect: u64 = 0;
            let mut notifies = 0u64;
            let mut reqs = Vec::with_capacity(FrontRing::<u64, u64>::SIZE as usize);
            while expect < ITEMS {
                let mut n = 0;
                reqs.clear();
                reqs.extend(back.take_requests().expect("honest frontend"));
                for &req in &reqs {
                    assert_eq!(req, expect, "backend: request out of order");
                    back.produce_response(!req).expect("consumed request");
                    expect += 1;
                    n += 1;
                }
                if n > 0 && back.push_responses_and_check_notify() {
                    to_front.notify();
                    notifies += 1;
                }
                if expect < ITEMS && !back.final_check_for_requests() {
                    to_back.wait(deadline, "backend");
                }
            }
            notifies
        })
    };

    let mut sent: u64 = 0;
    let mut received: u64 = 0;
    let mut notifies = 0u64;
    while received < ITEMS {
        let mut queued = 0;
        while sent < ITEMS && !front.is_full() {
            front.produce_request(sent).expect("not full");
            sent += 1;
            queued += 1;
        }
        if queued > 0 && front.push_requests_and_check_notify() {
            to_back.notify();
            notifies += 1;
        }
        for rsp in front.take_responses().expect("honest backend") {
            assert_eq!(rsp, !received, "frontend: response out of order");
            received += 1;
        }
        // Sleep only with nothing to send: all sent, or every slot awaits a response.
        let can_send = sent < ITEMS && !front.is_full();
        if received < ITEMS && !can_send && !front.final_check_for_responses() {
            to_front.wait(deadline, "frontend");
        }
    }
    let back_notifies = backend.join().expect("backend thread panicked");
    assert_eq!(received, ITEMS);
    assert_eq!(front.free_requests(), FrontRing::<u64, u64>::SIZE);
    // Event indices must suppress most notifications at this rate.
    assert!(notifies < ITEMS / 4, "frontend notified {notifies} times");
    assert!(
        back_notifies < ITEMS / 4,
        "backend notified {back_notifies} times"
    );
    eprintln!("10M items: front notified {notifies}x, back notified {back_notifies}x");
}
