//! `hv::abi` against Xen's own C headers (`libxen-dev`: xen/io/netif.h, xen/io/ring.h).
//!
//! A generated C program prints `name value` lines: sizes, alignments, field offsets,
//! slot counts, every netif constant, the bytes of sample slots, and the results of the
//! ring.h macros (notify decisions, free/unconsumed counts, overflow checks, final
//! checks) on a shared table of scenarios, many starting near `u32::MAX`. The Rust side
//! computes the same names from `hv::abi` and the two tables must agree exactly.
//! Missing headers fail the test (CI installs libxen-dev first).

#[path = "abi_c_headers/harness.rs"]
mod harness;

use harness::{run_c, Expected, C_PRELUDE};
use hv::abi::netif::*;
use hv::abi::ring::*;
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::fmt::Write as _;
use std::mem::{align_of, offset_of, size_of};
use std::ptr::NonNull;
use std::sync::atomic::Ordering;

/// One 4 KiB page-aligned ring page on the heap.
struct Page(NonNull<u8>);

impl Page {
    const LAYOUT: Layout = match Layout::from_size_align(RING_PAGE_SIZE, RING_PAGE_SIZE) {
        Ok(l) => l,
        Err(_) => panic!("bad layout"),
    };

    fn new(fill: u8) -> Self {
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc_zeroed(Self::LAYOUT) };
        let p = NonNull::new(p).expect("allocation failed");
        // SAFETY: p is valid for RING_PAGE_SIZE bytes.
        unsafe { p.as_ptr().write_bytes(fill, RING_PAGE_SIZE) };
        Page(p)
    }

    fn sring(&self) -> &TxSharedRing {
        // SAFETY: the page outlives the borrow, which covers only the 64-byte header
        // (the slot array is zero-length in the type); the rings touch the header only
        // through its atomics, and this test is single-threaded.
        unsafe { self.0.cast::<TxSharedRing>().as_ref() }
    }

    fn bytes(&self, n: usize) -> Vec<u8> {
        // SAFETY: the page holds RING_PAGE_SIZE initialised bytes; n is at most that.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr(), n.min(RING_PAGE_SIZE)).to_vec() }
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // SAFETY: allocated in Page::new with the same layout.
        unsafe { dealloc(self.0.as_ptr(), Self::LAYOUT) }
    }
}

/// Deterministic generator for scenario parameters (same values on both sides).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
    fn below(&mut self, n: u32) -> u32 {
        self.next() % n
    }
    /// Mostly small offsets around the ring size, sometimes anything (hostile peers).
    fn offset(&mut self) -> u32 {
        match self.below(4) {
            0 => self.next(),
            1 => u32::MAX - self.below(300),
            _ => self.below(300),
        }
    }
}

const STARTS: [u32; 7] = [
    0,
    1,
    100,
    0x7fff_ffff,
    u32::MAX - 255,
    u32::MAX - 3,
    u32::MAX,
];
const N_SCENARIOS: usize = 60;

struct Scenarios {
    /// start, pre (already pushed), produced (after pre), req_event offset.
    front_push: Vec<[u32; 4]>,
    /// start, consumed, responded (<= consumed), req_prod offset.
    back_reqs: Vec<[u32; 4]>,
    /// start, consumed, pre (already pushed), responded (pre + responded <= consumed), rsp_event offset.
    back_push: Vec<[u32; 5]>,
    /// start, produced, rsp_cons offset, rsp_prod offset.
    front_rsps: Vec<[u32; 4]>,
}

fn scenarios() -> Scenarios {
    let mut r = Lcg(0x5eed_0fab);
    let size = NET_TX_RING_SIZE;
    let mut s = Scenarios {
        front_push: vec![],
        back_reqs: vec![],
        back_push: vec![],
        front_rsps: vec![],
    };
    for i in 0..N_SCENARIOS {
        let start = if i < STARTS.len() * 2 {
            STARTS[i % STARTS.len()]
        } else {
            r.next()
        };
        let pre = r.below(size + 1);
        let produced = r.below(size - pre + 1);
        let ev = match i % 3 {
            0 => r.below(size + 10),
            1 => pre.wrapping_add(1),
            _ => r.offset(),
        };
        s.front_push.push([start, pre, produced, ev]);

        let consumed = r.below(size + 1);
        let responded = r.below(consumed + 1);
        let prod = match i % 3 {
            0 => consumed.wrapping_add(r.below(size + 2)),
            1 => responded.wrapping_add(size).wrapping_add(r.below(3)),
            _ => r.offset(),
        };
        s.back_reqs.push([start, consumed, responded, prod]);

        let consumed = r.below(size + 1);
        let pre = r.below(consumed + 1);
        let responded = r.below(consumed - pre + 1);
        let ev = match i % 2 {
            0 => r.below(size + 10),
            _ => r.offset(),
        };
        s.back_push.push([start, consumed, pre, responded, ev]);

        let produced = r.below(size + 1);
        let cons = r.below(produced + 1);
        let prod = match i % 3 {
            0 => cons.wrapping_add(r.below(produced - cons + 1)),
            1 => cons.wrapping_add(size).wrapping_add(r.below(3)),
            _ => r.offset(),
        };
        s.front_rsps.push([start, produced, cons, prod]);
    }
    s
}

fn c_array<const N: usize>(name: &str, rows: &[[u32; N]]) -> String {
    let mut out = format!("static const unsigned {name}[][{N}] = {{\n");
    for row in rows {
        let cells: Vec<String> = row.iter().map(|v| format!("{v}u")).collect();
        let _ = writeln!(out, "    {{{}}},", cells.join(", "));
    }
    out.push_str("};\n");
    out
}

/// The C side: layouts, constants, sample bytes, and the ring macros on each scenario.
const C_BODY: &str = r#"
static unsigned char page[4096] __attribute__((aligned(4096)));
static char nm[128];
#define PN(fmt, i, expr) do { snprintf(nm, sizeof nm, fmt, (i)); P(nm, (expr)); } while (0)

static netif_tx_sring_t *fresh(unsigned start) {
    netif_tx_sring_t *s = (netif_tx_sring_t *)page;
    memset(page, 0, sizeof page);
    SHARED_RING_INIT(s);
    s->req_prod = s->rsp_prod = start;
    s->req_event = s->rsp_event = start + 1;
    return s;
}

int main(void) {
    /* ---- sizes, alignments, offsets ---- */
    SZ(struct netif_tx_request); AL(struct netif_tx_request);
    OFF(struct netif_tx_request, gref); OFF(struct netif_tx_request, offset);
    OFF(struct netif_tx_request, flags); OFF(struct netif_tx_request, id);
    OFF(struct netif_tx_request, size);
    SZ(struct netif_tx_response); AL(struct netif_tx_response);
    OFF(struct netif_tx_response, id); OFF(struct netif_tx_response, status);
    SZ(struct netif_rx_request); AL(struct netif_rx_request);
    OFF(struct netif_rx_request, id); OFF(struct netif_rx_request, pad);
    OFF(struct netif_rx_request, gref);
    SZ(struct netif_rx_response); AL(struct netif_rx_response);
    OFF(struct netif_rx_response, id); OFF(struct netif_rx_response, offset);
    OFF(struct netif_rx_response, flags); OFF(struct netif_rx_response, status);
    SZ(struct netif_extra_info); AL(struct netif_extra_info);
    OFF(struct netif_extra_info, type); OFF(struct netif_extra_info, flags);
    OFF(struct netif_extra_info, u);
    SZ(union netif_tx_sring_entry); AL(union netif_tx_sring_entry);
    SZ(union netif_rx_sring_entry); AL(union netif_rx_sring_entry);
    OFF(struct netif_tx_sring, req_prod); OFF(struct netif_tx_sring, req_event);
    OFF(struct netif_tx_sring, rsp_prod); OFF(struct netif_tx_sring, rsp_event);
    OFF(struct netif_tx_sring, pvt); OFF(struct netif_tx_sring, __pad);
    OFF(struct netif_tx_sring, ring);
    OFF(struct netif_rx_sring, req_prod); OFF(struct netif_rx_sring, req_event);
    OFF(struct netif_rx_sring, rsp_prod); OFF(struct netif_rx_sring, rsp_event);
    OFF(struct netif_rx_sring, pvt); OFF(struct netif_rx_sring, __pad);
    OFF(struct netif_rx_sring, ring);
    P("sizeof.RING_IDX", sizeof(RING_IDX));
    P("NET_TX_RING_SIZE", __CONST_RING_SIZE(netif_tx, 4096));
    P("NET_RX_RING_SIZE", __CONST_RING_SIZE(netif_rx, 4096));
    {
        netif_tx_front_ring_t tf; netif_rx_front_ring_t rf;
        FRONT_RING_INIT(&tf, (netif_tx_sring_t *)page, 4096);
        FRONT_RING_INIT(&rf, (netif_rx_sring_t *)page, 4096);
        P("RING_SIZE.tx", RING_SIZE(&tf));
        P("RING_SIZE.rx", RING_SIZE(&rf));
    }

    /* ---- constants ---- */
    P("XEN_NETIF_NR_SLOTS_MIN", XEN_NETIF_NR_SLOTS_MIN);
    P("XEN_NETIF_MAX_TX_SIZE", XEN_NETIF_MAX_TX_SIZE);
    P("_NETTXF_csum_blank", _NETTXF_csum_blank); P("NETTXF_csum_blank", NETTXF_csum_blank);
    P("_NETTXF_data_validated", _NETTXF_data_validated); P("NETTXF_data_validated", NETTXF_data_validated);
    P("_NETTXF_more_data", _NETTXF_more_data); P("NETTXF_more_data", NETTXF_more_data);
    P("_NETTXF_extra_info", _NETTXF_extra_info); P("NETTXF_extra_info", NETTXF_extra_info);
    P("_NETRXF_data_validated", _NETRXF_data_validated); P("NETRXF_data_validated", NETRXF_data_validated);
    P("_NETRXF_csum_blank", _NETRXF_csum_blank); P("NETRXF_csum_blank", NETRXF_csum_blank);
    P("_NETRXF_more_data", _NETRXF_more_data); P("NETRXF_more_data", NETRXF_more_data);
    P("_NETRXF_extra_info", _NETRXF_extra_info); P("NETRXF_extra_info", NETRXF_extra_info);
    P("_NETRXF_gso_prefix", _NETRXF_gso_prefix); P("NETRXF_gso_prefix", NETRXF_gso_prefix);
    P("XEN_NETIF_EXTRA_TYPE_NONE", XEN_NETIF_EXTRA_TYPE_NONE);
    P("XEN_NETIF_EXTRA_TYPE_GSO", XEN_NETIF_EXTRA_TYPE_GSO);
    P("XEN_NETIF_EXTRA_TYPE_MCAST_ADD", XEN_NETIF_EXTRA_TYPE_MCAST_ADD);
    P("XEN_NETIF_EXTRA_TYPE_MCAST_DEL", XEN_NETIF_EXTRA_TYPE_MCAST_DEL);
    P("XEN_NETIF_EXTRA_TYPE_HASH", XEN_NETIF_EXTRA_TYPE_HASH);
#ifdef XEN_NETIF_EXTRA_TYPE_XDP
    P("HEADER_HAS_XDP", 1);
    P("XEN_NETIF_EXTRA_TYPE_XDP", XEN_NETIF_EXTRA_TYPE_XDP);
    P("XEN_NETIF_EXTRA_TYPE_MAX", XEN_NETIF_EXTRA_TYPE_MAX);
    {
        struct netif_extra_info e; memset(&e, 0, sizeof e);
        e.type = XEN_NETIF_EXTRA_TYPE_XDP; e.u.xdp.headroom = 0x1234;
        bytes("bytes.extra.xdp", &e, sizeof e);
    }
#else
    /* Xen 4.17's header predates XDP: XDP took the old MAX value and MAX moved up. */
    P("HEADER_HAS_XDP", 0);
    P("XEN_NETIF_EXTRA_TYPE_XDP", XEN_NETIF_EXTRA_TYPE_MAX);
    P("XEN_NETIF_EXTRA_TYPE_MAX", XEN_NETIF_EXTRA_TYPE_MAX + 1);
#endif
    P("_XEN_NETIF_EXTRA_FLAG_MORE", _XEN_NETIF_EXTRA_FLAG_MORE);
    P("XEN_NETIF_EXTRA_FLAG_MORE", XEN_NETIF_EXTRA_FLAG_MORE);
    P("XEN_NETIF_GSO_TYPE_NONE", XEN_NETIF_GSO_TYPE_NONE);
    P("XEN_NETIF_GSO_TYPE_TCPV4", XEN_NETIF_GSO_TYPE_TCPV4);
    P("XEN_NETIF_GSO_TYPE_TCPV6", XEN_NETIF_GSO_TYPE_TCPV6);
    P("NETIF_RSP_DROPPED", NETIF_RSP_DROPPED);
    P("NETIF_RSP_ERROR", NETIF_RSP_ERROR);
    P("NETIF_RSP_OKAY", NETIF_RSP_OKAY);
    P("NETIF_RSP_NULL", NETIF_RSP_NULL);

    /* ---- sample slot bytes ---- */
    {
        struct netif_tx_request tx = { .gref = 0x01020304, .offset = 0x0506, .flags = 0x0708,
                                       .id = 0x090a, .size = 0x0b0c };
        struct netif_tx_response txr = { .id = 0x0102, .status = -3 };
        struct netif_rx_request rx = { .id = 0x0102, .pad = 0x0304, .gref = 0x05060708 };
        struct netif_rx_response rxr = { .id = 0x0102, .offset = 0x0304, .flags = 0x0506,
                                         .status = -7 };
        bytes("bytes.netif_tx_request", &tx, sizeof tx);
        bytes("bytes.netif_tx_response", &txr, sizeof txr);
        bytes("bytes.netif_rx_request", &rx, sizeof rx);
        bytes("bytes.netif_rx_response", &rxr, sizeof rxr);
    }
    {
        struct netif_extra_info e;
        memset(&e, 0, sizeof e);
        e.type = XEN_NETIF_EXTRA_TYPE_GSO; e.flags = XEN_NETIF_EXTRA_FLAG_MORE;
        e.u.gso.size = 0x1234; e.u.gso.type = XEN_NETIF_GSO_TYPE_TCPV6; e.u.gso.pad = 0x56;
        e.u.gso.features = 0x789a;
        bytes("bytes.extra.gso", &e, sizeof e);
        {
            /* How netfront places an extra: in the next TX request slot. */
            union { struct netif_tx_request r; struct netif_extra_info e; } slot;
            memset(&slot, 0, sizeof slot);
            slot.e = e;
            P("extra_in_tx.gref", slot.r.gref); P("extra_in_tx.offset", slot.r.offset);
            P("extra_in_tx.flags", slot.r.flags); P("extra_in_tx.id", slot.r.id);
            P("extra_in_tx.size", slot.r.size);
        }
        {
            /* How netback places an extra: in the next RX response slot. */
            union { struct netif_rx_response r; struct netif_extra_info e; } slot;
            memset(&slot, 0, sizeof slot);
            slot.e = e;
            P("extra_in_rx.id", slot.r.id); P("extra_in_rx.offset", slot.r.offset);
            P("extra_in_rx.flags", slot.r.flags); P("extra_in_rx.status", slot.r.status);
        }
        memset(&e, 0, sizeof e);
        e.type = XEN_NETIF_EXTRA_TYPE_MCAST_ADD;
        for (int i = 0; i < 6; i++) e.u.mcast.addr[i] = (uint8_t)(0x10 + i);
        bytes("bytes.extra.mcast", &e, sizeof e);
        memset(&e, 0, sizeof e);
        e.type = XEN_NETIF_EXTRA_TYPE_HASH; e.u.hash.type = 3; e.u.hash.algorithm = 1;
        e.u.hash.value[0] = 9; e.u.hash.value[1] = 8; e.u.hash.value[2] = 7; e.u.hash.value[3] = 6;
        bytes("bytes.extra.hash", &e, sizeof e);
    }

    /* ---- SHARED_RING_INIT on a dirty page, and slot placement across the wrap ---- */
    {
        netif_tx_sring_t *s = (netif_tx_sring_t *)page;
        netif_tx_front_ring_t fr; netif_tx_back_ring_t br;
        memset(page, 0xAA, sizeof page);
        SHARED_RING_INIT(s);
        bytes("bytes.shared_ring_init", page, 80);
        s->req_prod = s->rsp_prod = 0xfffffffdu;
        FRONT_RING_ATTACH(&fr, s, 0xfffffffdu, 4096);
        BACK_RING_ATTACH(&br, s, 0xfffffffdu, 4096);
        for (unsigned k = 0; k < 6; k++) {
            netif_tx_request_t *r = RING_GET_REQUEST(&fr, fr.req_prod_pvt++);
            r->gref = 0x100 + k; r->offset = (uint16_t)(2 * k); r->flags = NETTXF_more_data;
            r->id = (uint16_t)k; r->size = (uint16_t)(1000 + k);
        }
        RING_PUSH_REQUESTS(&fr);
        P("wrap.req_prod", s->req_prod);
        for (unsigned k = 0; k < 4; k++) {
            netif_tx_request_t q;
            RING_COPY_REQUEST(&br, br.req_cons++, &q);
            netif_tx_response_t *p = RING_GET_RESPONSE(&br, br.rsp_prod_pvt++);
            p->id = q.id; p->status = (int16_t)(q.size - 1000 - 2);
        }
        RING_PUSH_RESPONSES(&br);
        P("wrap.rsp_prod", s->rsp_prod);
        bytes("bytes.wrap.slots", page + 64, 12 * 256);
    }

    /* ---- ring macros on the scenario tables ---- */
    for (unsigned i = 0; i < sizeof front_push / sizeof front_push[0]; i++) {
        const unsigned *a = front_push[i];
        netif_tx_sring_t *s = fresh(a[0]);
        netif_tx_front_ring_t fr; int notify;
        FRONT_RING_ATTACH(&fr, s, a[0], 4096);
        s->req_prod = a[0] + a[1];
        fr.req_prod_pvt = a[0] + a[1] + a[2];
        s->req_event = a[0] + a[3];
        RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(&fr, notify);
        PN("front_push.%u.notify", i, notify);
        PN("front_push.%u.req_prod", i, s->req_prod);
        PN("front_push.%u.free", i, RING_FREE_REQUESTS(&fr));
        PN("front_push.%u.full", i, RING_FULL(&fr));
    }
    for (unsigned i = 0; i < sizeof back_reqs / sizeof back_reqs[0]; i++) {
        const unsigned *a = back_reqs[i];
        netif_tx_sring_t *s = fresh(a[0]);
        netif_tx_back_ring_t br; unsigned work;
        BACK_RING_ATTACH(&br, s, a[0], 4096);
        br.req_cons = a[0] + a[1];
        br.rsp_prod_pvt = a[0] + a[2];
        s->req_prod = a[0] + a[3];
        PN("back_reqs.%u.unconsumed", i, XEN_RING_NR_UNCONSUMED_REQUESTS(&br));
        PN("back_reqs.%u.prod_overflow", i, RING_REQUEST_PROD_OVERFLOW(&br, s->req_prod));
        PN("back_reqs.%u.cons_overflow", i, RING_REQUEST_CONS_OVERFLOW(&br, br.req_cons));
        RING_FINAL_CHECK_FOR_REQUESTS(&br, work);
        PN("back_reqs.%u.final_check", i, !!work);
        PN("back_reqs.%u.req_event", i, s->req_event);
    }
    for (unsigned i = 0; i < sizeof back_push / sizeof back_push[0]; i++) {
        const unsigned *a = back_push[i];
        netif_tx_sring_t *s = fresh(a[0]);
        netif_tx_back_ring_t br; int notify;
        BACK_RING_ATTACH(&br, s, a[0], 4096);
        s->req_prod = a[0] + a[1];
        br.req_cons = a[0] + a[1];
        s->rsp_prod = a[0] + a[2];
        br.rsp_prod_pvt = a[0] + a[2] + a[3];
        s->rsp_event = a[0] + a[4];
        RING_PUSH_RESPONSES_AND_CHECK_NOTIFY(&br, notify);
        PN("back_push.%u.notify", i, notify);
        PN("back_push.%u.rsp_prod", i, s->rsp_prod);
    }
    for (unsigned i = 0; i < sizeof front_rsps / sizeof front_rsps[0]; i++) {
        const unsigned *a = front_rsps[i];
        netif_tx_sring_t *s = fresh(a[0]);
        netif_tx_front_ring_t fr; unsigned work;
        FRONT_RING_ATTACH(&fr, s, a[0], 4096);
        fr.req_prod_pvt = a[0] + a[1];
        fr.rsp_cons = a[0] + a[2];
        s->rsp_prod = a[0] + a[3];
        PN("front_rsps.%u.unconsumed", i, XEN_RING_NR_UNCONSUMED_RESPONSES(&fr));
        PN("front_rsps.%u.prod_overflow", i, RING_RESPONSE_PROD_OVERFLOW(&fr, s->rsp_prod));
        PN("front_rsps.%u.free", i, RING_FREE_REQUESTS(&fr));
        RING_FINAL_CHECK_FOR_RESPONSES(&fr, work);
        PN("front_rsps.%u.final_check", i, !!work);
        PN("front_rsps.%u.rsp_event", i, s->rsp_event);
    }
    return 0;
}
"#;

macro_rules! off {
    ($e:expr, $cty:literal, $ty:ty, $($field:ident => $cf:literal),+ $(,)?) => {
        $( $e.add(concat!("offsetof.", $cty, ".", $cf), offset_of!($ty, $field)); )+
    };
}

fn layout_rows(e: &mut Expected) {
    macro_rules! sz_al {
        ($cty:literal, $ty:ty) => {
            e.add(concat!("sizeof.", $cty), size_of::<$ty>());
            e.add(concat!("alignof.", $cty), align_of::<$ty>());
        };
    }
    sz_al!("struct netif_tx_request", NetifTxRequest);
    sz_al!("struct netif_tx_response", NetifTxResponse);
    sz_al!("struct netif_rx_request", NetifRxRequest);
    sz_al!("struct netif_rx_response", NetifRxResponse);
    sz_al!("struct netif_extra_info", NetifExtraInfo);
    sz_al!("union netif_tx_sring_entry", SringEntry<NetifTxRequest, NetifTxResponse>);
    sz_al!("union netif_rx_sring_entry", SringEntry<NetifRxRequest, NetifRxResponse>);
    off!(e, "struct netif_tx_request", NetifTxRequest,
        gref => "gref", offset => "offset", flags => "flags", id => "id", size => "size");
    off!(e, "struct netif_tx_response", NetifTxResponse, id => "id", status => "status");
    off!(e, "struct netif_rx_request", NetifRxRequest, id => "id", pad => "pad", gref => "gref");
    off!(e, "struct netif_rx_response", NetifRxResponse,
        id => "id", offset => "offset", flags => "flags", status => "status");
    off!(e, "struct netif_extra_info", NetifExtraInfo, ty => "type", flags => "flags", u => "u");
    off!(e, "struct netif_tx_sring", TxSharedRing,
        req_prod => "req_prod", req_event => "req_event", rsp_prod => "rsp_prod",
        rsp_event => "rsp_event", pvt => "pvt", pad => "__pad", ring => "ring");
    off!(e, "struct netif_rx_sring", RxSharedRing,
        req_prod => "req_prod", req_event => "req_event", rsp_prod => "rsp_prod",
        rsp_event => "rsp_event", pvt => "pvt", pad => "__pad", ring => "ring");
    e.add("sizeof.RING_IDX", size_of::<RingIdx>());
    e.add("NET_TX_RING_SIZE", NET_TX_RING_SIZE);
    e.add("NET_RX_RING_SIZE", NET_RX_RING_SIZE);
    // The runtime RING_SIZE of a ring on a 4 KiB page, as FRONT_RING_INIT computes it.
    let page = Page::new(0);
    // SAFETY: page is a live, 4096-aligned, zeroed ring page used by nobody else.
    let tx = unsafe { TxFrontRing::init(page.0) };
    e.add("RING_SIZE.tx", tx.size());
    // SAFETY: as above (the TX view is no longer used).
    let rx = unsafe { RxFrontRing::init(page.0) };
    e.add("RING_SIZE.rx", rx.size());
}

fn constant_rows(e: &mut Expected, header_has_xdp: bool) {
    macro_rules! k {
        ($($c:literal => $v:expr),+ $(,)?) => { $( e.add($c, $v); )+ };
    }
    k!(
        "XEN_NETIF_NR_SLOTS_MIN" => XEN_NETIF_NR_SLOTS_MIN,
        "XEN_NETIF_MAX_TX_SIZE" => XEN_NETIF_MAX_TX_SIZE,
        "_NETTXF_csum_blank" => NETTXF_CSUM_BLANK_BIT,
        "NETTXF_csum_blank" => NETTXF_CSUM_BLANK,
        "_NETTXF_data_validated" => NETTXF_DATA_VALIDATED_BIT,
        "NETTXF_data_validated" => NETTXF_DATA_VALIDATED,
        "_NETTXF_more_data" => NETTXF_MORE_DATA_BIT,
        "NETTXF_more_data" => NETTXF_MORE_DATA,
        "_NETTXF_extra_info" => NETTXF_EXTRA_INFO_BIT,
        "NETTXF_extra_info" => NETTXF_EXTRA_INFO,
        "_NETRXF_data_validated" => NETRXF_DATA_VALIDATED_BIT,
        "NETRXF_data_validated" => NETRXF_DATA_VALIDATED,
        "_NETRXF_csum_blank" => NETRXF_CSUM_BLANK_BIT,
        "NETRXF_csum_blank" => NETRXF_CSUM_BLANK,
        "_NETRXF_more_data" => NETRXF_MORE_DATA_BIT,
        "NETRXF_more_data" => NETRXF_MORE_DATA,
        "_NETRXF_extra_info" => NETRXF_EXTRA_INFO_BIT,
        "NETRXF_extra_info" => NETRXF_EXTRA_INFO,
        "_NETRXF_gso_prefix" => NETRXF_GSO_PREFIX_BIT,
        "NETRXF_gso_prefix" => NETRXF_GSO_PREFIX,
        "XEN_NETIF_EXTRA_TYPE_NONE" => XEN_NETIF_EXTRA_TYPE_NONE,
        "XEN_NETIF_EXTRA_TYPE_GSO" => XEN_NETIF_EXTRA_TYPE_GSO,
        "XEN_NETIF_EXTRA_TYPE_MCAST_ADD" => XEN_NETIF_EXTRA_TYPE_MCAST_ADD,
        "XEN_NETIF_EXTRA_TYPE_MCAST_DEL" => XEN_NETIF_EXTRA_TYPE_MCAST_DEL,
        "XEN_NETIF_EXTRA_TYPE_HASH" => XEN_NETIF_EXTRA_TYPE_HASH,
        "XEN_NETIF_EXTRA_TYPE_XDP" => XEN_NETIF_EXTRA_TYPE_XDP,
        "XEN_NETIF_EXTRA_TYPE_MAX" => XEN_NETIF_EXTRA_TYPE_MAX,
        "_XEN_NETIF_EXTRA_FLAG_MORE" => XEN_NETIF_EXTRA_FLAG_MORE_BIT,
        "XEN_NETIF_EXTRA_FLAG_MORE" => XEN_NETIF_EXTRA_FLAG_MORE,
        "XEN_NETIF_GSO_TYPE_NONE" => XEN_NETIF_GSO_TYPE_NONE,
        "XEN_NETIF_GSO_TYPE_TCPV4" => XEN_NETIF_GSO_TYPE_TCPV4,
        "XEN_NETIF_GSO_TYPE_TCPV6" => XEN_NETIF_GSO_TYPE_TCPV6,
        "NETIF_RSP_DROPPED" => NETIF_RSP_DROPPED,
        "NETIF_RSP_ERROR" => NETIF_RSP_ERROR,
        "NETIF_RSP_OKAY" => NETIF_RSP_OKAY,
        "NETIF_RSP_NULL" => NETIF_RSP_NULL,
    );
    e.add("HEADER_HAS_XDP", u8::from(header_has_xdp));
    if header_has_xdp {
        let x = NetifExtraInfo::new_xdp(NetifExtraXdp { headroom: 0x1234 }, 0);
        e.add_bytes("bytes.extra.xdp", &x.to_bytes());
    }
}

fn sample_rows(e: &mut Expected) {
    let tx = NetifTxRequest {
        gref: 0x0102_0304,
        offset: 0x0506,
        flags: 0x0708,
        id: 0x090a,
        size: 0x0b0c,
    };
    e.add_bytes("bytes.netif_tx_request", &tx.to_bytes());
    // Structs without to_bytes: view their memory directly.
    fn raw<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: T is a padding-free repr(C) ABI struct; reading its bytes is defined.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }
    e.add_bytes(
        "bytes.netif_tx_response",
        &raw(&NetifTxResponse {
            id: 0x0102,
            status: -3,
        }),
    );
    e.add_bytes(
        "bytes.netif_rx_request",
        &raw(&NetifRxRequest {
            id: 0x0102,
            pad: 0x0304,
            gref: 0x0506_0708,
        }),
    );
    let rxr = NetifRxResponse {
        id: 0x0102,
        offset: 0x0304,
        flags: 0x0506,
        status: -7,
    };
    assert_eq!(raw(&rxr), rxr.to_bytes(), "NetifRxResponse::to_bytes");
    e.add_bytes("bytes.netif_rx_response", &rxr.to_bytes());

    let gso = NetifExtraInfo::new_gso(
        NetifExtraGso {
            size: 0x1234,
            ty: XEN_NETIF_GSO_TYPE_TCPV6,
            pad: 0x56,
            features: 0x789a,
        },
        XEN_NETIF_EXTRA_FLAG_MORE,
    );
    assert_eq!(
        raw(&gso).as_slice(),
        gso.to_bytes(),
        "NetifExtraInfo::to_bytes"
    );
    e.add_bytes("bytes.extra.gso", &gso.to_bytes());
    let t = gso.to_tx_slot();
    e.add("extra_in_tx.gref", t.gref);
    e.add("extra_in_tx.offset", t.offset);
    e.add("extra_in_tx.flags", t.flags);
    e.add("extra_in_tx.id", t.id);
    e.add("extra_in_tx.size", t.size);
    let r = gso.to_rx_slot();
    e.add("extra_in_rx.id", r.id);
    e.add("extra_in_rx.offset", r.offset);
    e.add("extra_in_rx.flags", r.flags);
    e.add("extra_in_rx.status", r.status);
    let addr = [0x10, 0x11, 0x12, 0x13, 0x14, 0x15];
    e.add_bytes(
        "bytes.extra.mcast",
        &NetifExtraInfo::new_mcast(true, addr, 0).to_bytes(),
    );
    let hash = NetifExtraHash {
        ty: 3,
        algorithm: 1,
        value: [9, 8, 7, 6],
    };
    e.add_bytes(
        "bytes.extra.hash",
        &NetifExtraInfo::new_hash(hash, 0).to_bytes(),
    );
}

fn wrap_rows(e: &mut Expected) {
    let page = Page::new(0xAA);
    // SAFETY: page is a live, aligned ring page used only by the rings below.
    unsafe { shared_ring_init(page.0) };
    e.add_bytes("bytes.shared_ring_init", &page.bytes(80));
    let start = 0xffff_fffd;
    page.sring().req_prod.store(start, Ordering::Relaxed);
    page.sring().rsp_prod.store(start, Ordering::Relaxed);
    // SAFETY: as above; one front and one back view of the page.
    let (mut fr, mut br) = unsafe {
        (
            TxFrontRing::attach(page.0, start),
            TxBackRing::attach(page.0, start),
        )
    };
    for k in 0..6u16 {
        let req = NetifTxRequest {
            gref: 0x100 + u32::from(k),
            offset: 2 * k,
            flags: NETTXF_MORE_DATA,
            id: k,
            size: 1000 + k,
        };
        fr.produce_request(req).expect("ring has room");
    }
    fr.push_requests();
    e.add(
        "wrap.req_prod",
        page.sring().req_prod.load(Ordering::Relaxed),
    );
    let reqs: Vec<NetifTxRequest> = br
        .take_requests()
        .expect("valid req_prod")
        .take(4)
        .collect();
    for q in reqs {
        br.produce_response(NetifTxResponse {
            id: q.id,
            status: (q.size - 1000) as i16 - 2,
        })
        .expect("answers a consumed request");
    }
    br.push_responses();
    e.add(
        "wrap.rsp_prod",
        page.sring().rsp_prod.load(Ordering::Relaxed),
    );
    e.add_bytes("bytes.wrap.slots", &page.bytes(64 + 12 * 256)[64..]);
}

fn fresh(page: &Page, start: u32) {
    // SAFETY: page is a live, aligned ring page; no ring is active on it.
    unsafe { shared_ring_init_at(page.0, start) };
}

fn scenario_rows(e: &mut Expected, s: &Scenarios) {
    let page = Page::new(0);
    let sr = || page.sring();
    let b = u8::from;
    for (i, &[start, pre, produced, ev]) in s.front_push.iter().enumerate() {
        fresh(&page, start);
        // SAFETY: page is live and aligned; this is the only view of it.
        let mut fr = unsafe { TxFrontRing::attach(page.0, start) };
        for _ in 0..pre {
            fr.produce_request(NetifTxRequest::default()).expect("room");
        }
        fr.push_requests();
        for _ in 0..produced {
            fr.produce_request(NetifTxRequest::default()).expect("room");
        }
        sr().req_event
            .store(start.wrapping_add(ev), Ordering::Relaxed);
        e.add(
            format!("front_push.{i}.notify"),
            b(fr.push_requests_and_check_notify()),
        );
        e.add(
            format!("front_push.{i}.req_prod"),
            sr().req_prod.load(Ordering::Relaxed),
        );
        e.add(format!("front_push.{i}.free"), fr.free_requests());
        e.add(format!("front_push.{i}.full"), b(fr.is_full()));
    }
    for (i, &[start, consumed, responded, prod]) in s.back_reqs.iter().enumerate() {
        fresh(&page, start);
        // SAFETY: as above.
        let mut br = unsafe { TxBackRing::attach(page.0, start) };
        br.set_req_cons(start.wrapping_add(consumed));
        for _ in 0..responded {
            br.produce_response(NetifTxResponse::default())
                .expect("consumed");
        }
        sr().req_prod
            .store(start.wrapping_add(prod), Ordering::Relaxed);
        e.add(
            format!("back_reqs.{i}.unconsumed"),
            br.unconsumed_requests(),
        );
        let overflow = br.check_request_prod(br.req_prod()).is_err();
        e.add(format!("back_reqs.{i}.prod_overflow"), b(overflow));
        e.add(
            format!("back_reqs.{i}.cons_overflow"),
            b(br.request_cons_overflow(br.req_cons())),
        );
        e.add(
            format!("back_reqs.{i}.final_check"),
            b(br.final_check_for_requests()),
        );
        e.add(
            format!("back_reqs.{i}.req_event"),
            sr().req_event.load(Ordering::Relaxed),
        );
    }
    for (i, &[start, consumed, pre, responded, ev]) in s.back_push.iter().enumerate() {
        fresh(&page, start);
        sr().req_prod
            .store(start.wrapping_add(consumed), Ordering::Relaxed);
        // SAFETY: as above.
        let mut br = unsafe { TxBackRing::attach(page.0, start) };
        let n = br.take_requests().expect("honest req_prod").count() as u32;
        assert_eq!(n, consumed);
        for _ in 0..pre {
            br.produce_response(NetifTxResponse::default())
                .expect("consumed");
        }
        br.push_responses();
        for _ in 0..responded {
            br.produce_response(NetifTxResponse::default())
                .expect("consumed");
        }
        sr().rsp_event
            .store(start.wrapping_add(ev), Ordering::Relaxed);
        e.add(
            format!("back_push.{i}.notify"),
            b(br.push_responses_and_check_notify()),
        );
        e.add(
            format!("back_push.{i}.rsp_prod"),
            sr().rsp_prod.load(Ordering::Relaxed),
        );
    }
    for (i, &[start, produced, cons, prod]) in s.front_rsps.iter().enumerate() {
        fresh(&page, start);
        // SAFETY: as above.
        let mut fr = unsafe { TxFrontRing::attach(page.0, start) };
        for _ in 0..produced {
            fr.produce_request(NetifTxRequest::default()).expect("room");
        }
        fr.set_rsp_cons(start.wrapping_add(cons));
        sr().rsp_prod
            .store(start.wrapping_add(prod), Ordering::Relaxed);
        e.add(
            format!("front_rsps.{i}.unconsumed"),
            fr.unconsumed_responses(),
        );
        let overflow = fr.check_response_prod(fr.rsp_prod()).is_err();
        e.add(format!("front_rsps.{i}.prod_overflow"), b(overflow));
        e.add(format!("front_rsps.{i}.free"), fr.free_requests());
        e.add(
            format!("front_rsps.{i}.final_check"),
            b(fr.final_check_for_responses()),
        );
        e.add(
            format!("front_rsps.{i}.rsp_event"),
            sr().rsp_event.load(Ordering::Relaxed),
        );
    }
}

#[test]
fn netif_and_ring_match_libxen_dev_headers() {
    let s = scenarios();
    let mut src = String::from(C_PRELUDE);
    src.push_str(&c_array("front_push", &s.front_push));
    src.push_str(&c_array("back_reqs", &s.back_reqs));
    src.push_str(&c_array("back_push", &s.back_push));
    src.push_str(&c_array("front_rsps", &s.front_rsps));
    src.push_str(C_BODY);
    let c = run_c("netif_ring", &src);

    let header_has_xdp = match c.get("HEADER_HAS_XDP").map(String::as_str) {
        Some("1") => true,
        Some("0") => false,
        other => panic!("C program did not report HEADER_HAS_XDP: {other:?}"),
    };
    let mut e = Expected::default();
    layout_rows(&mut e);
    constant_rows(&mut e, header_has_xdp);
    sample_rows(&mut e);
    wrap_rows(&mut e);
    scenario_rows(&mut e, &s);
    // Sanity: the scenario tables really were exercised on both sides.
    assert!(
        e.len() > 4 * N_SCENARIOS * 4,
        "only {} rows compared",
        e.len()
    );
    e.compare(&c);
}

/// The scenarios must reach the interesting branches, or the comparison proves little.
#[test]
fn scenarios_cover_notify_overflow_and_wrap() {
    let s = scenarios();
    let size = NET_TX_RING_SIZE;
    let notifies = s
        .front_push
        .iter()
        .filter(|&&[_, pre, produced, ev]| notify_needed(pre, pre + produced, ev))
        .count();
    assert!(
        notifies > 5 && notifies < N_SCENARIOS - 5,
        "notify cases: {notifies}"
    );
    let overflows = s
        .back_reqs
        .iter()
        .filter(|&&[_, _, responded, prod]| prod.wrapping_sub(responded) > size)
        .count();
    assert!(
        overflows > 5 && overflows < N_SCENARIOS - 5,
        "overflow cases: {overflows}"
    );
    let wraps = s
        .front_push
        .iter()
        .filter(|&&[start, pre, produced, _]| start.checked_add(pre + produced).is_none())
        .count();
    assert!(wraps >= 3, "wrapping cases: {wraps}");
}
