//! The embedded hypervisor: Dom0, its netback and the guests live in one process.
//!
//! Each domain owns memfd-backed RAM, a grant table in its own shared frames (the guest
//! writes entries, the hypervisor keeps the pins — Xen's active entries — privately), a
//! page holding its event-channel bitmaps (as in `shared_info`) and a xenstore
//! connection. [`Hypervisor::guest_env`] and [`Hypervisor::backend_env`] hand the drivers
//! the environments of [`crate::env`]; grants are the only way one domain reaches
//! another's memory.

use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use event_channel::{EventChannels, EvtchnBitmapPage, EvtchnBits, EvtchnError, Waiter};
use grant_table::{ActiveGrantTable, GrantEntryV1, GrantError, GuestGrantTable, SharedGrantTable};

use crate::env::{
    BackendEnv, CopyDir, CopySeg, DomId, EnvError, EventChannel, GrantRef, GrantedPage, GuestEnv,
    MappedPage, Port, Store,
};
use crate::memory::{FrameAllocator, FrameRegion, MemoryError, PAGE_SIZE};
use crate::store::{StoreConnection, XenStore};

/// `GNTST_okay`
const GNTST_OKAY: i16 = 0;
/// `GNTST_bad_domain`
const GNTST_BAD_DOMAIN: i16 = -2;
/// `GNTST_bad_copy_arg`
const GNTST_BAD_COPY_ARG: i16 = -10;
/// Grant entries per 4 KiB grant-table frame (v1 entries are 8 bytes).
const GRANT_ENTRIES_PER_FRAME: u32 = (PAGE_SIZE / core::mem::size_of::<GrantEntryV1>()) as u32;

/// How a new domain is sized.
#[derive(Debug, Clone)]
pub struct DomainConfig {
    /// Shown in listings (`xl list`'s Name).
    pub name: String,
    /// RAM in 4 KiB frames.
    pub memory_frames: usize,
    /// Grant-table frames (`max_grant_frames`): 512 refs each.
    pub grant_frames: u32,
    /// Highest event-channel port (`max_event_channels`).
    pub max_ports: u32,
}

impl Default for DomainConfig {
    fn default() -> Self {
        Self {
            name: String::from("guest"),
            // 64 MiB: room for several queues' ring and buffer pages.
            memory_frames: 16 * 1024,
            // 32 frames = 16384 refs, Xen's default max_grant_frames is 64.
            grant_frames: 32,
            max_ports: 1023,
        }
    }
}

/// Errors of the embedded hypervisor's own operations.
#[derive(Debug, thiserror::Error)]
pub enum HvError {
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error("event channels: {0}")]
    Evtchn(#[from] EvtchnError),
    #[error("xenstore: {0}")]
    Store(#[from] crate::env::StoreError),
    #[error("domain {0} does not exist: `hv list` shows the running ones")]
    NoSuchDomain(DomId),
    #[error("no free domid left")]
    NoDomid,
    #[error("invalid domain configuration: {0}")]
    Config(&'static str),
}

/// One domain's resources.
pub struct Domain {
    domid: DomId,
    name: String,
    ram: FrameRegion,
    frames: FrameAllocator,
    _gnttab_mem: FrameRegion,
    guest_gnttab: GuestGrantTable,
    active: ActiveGrantTable,
    _evtchn_page: FrameRegion,
    store: StoreConnection,
}

impl Domain {
    /// The domain's id.
    pub fn domid(&self) -> DomId {
        self.domid
    }
    /// The domain's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// RAM size in frames.
    pub fn memory_frames(&self) -> usize {
        self.ram.frames()
    }
    /// RAM frames not allocated by the guest.
    pub fn free_frames(&self) -> usize {
        self.frames.available()
    }
    /// Grant refs the guest could still hand out.
    pub fn free_grant_refs(&self) -> u32 {
        self.guest_gnttab.free_count()
    }
    /// The hypervisor's view of this domain's grants (pins).
    pub fn active_grants(&self) -> &ActiveGrantTable {
        &self.active
    }
    /// The domain's RAM (its memfd is what the `hv` daemon hands a guest process).
    pub fn ram(&self) -> &FrameRegion {
        &self.ram
    }
    /// The frames holding the domain's grant table (`grant_entry_v1[]`).
    pub fn gnttab_region(&self) -> &FrameRegion {
        &self._gnttab_mem
    }
    /// The page holding the domain's event-channel bitmaps
    /// ([`event_channel::EvtchnBitmapPage`] at offset 0).
    pub fn evtchn_region(&self) -> &FrameRegion {
        &self._evtchn_page
    }
}

struct Inner {
    domains: RwLock<BTreeMap<DomId, Arc<Domain>>>,
    evtchn: Arc<EventChannels>,
    xenstore: XenStore,
    next_domid: AtomicU16,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The hub outlives the hypervisor inside every EmbeddedChannel, but the
        // bitmaps it points at live in the domains' pages, which go now: unregister
        // every domain first so no port operation can touch freed memory.
        let domains = self.domains.get_mut().unwrap_or_else(|p| p.into_inner());
        for &domid in domains.keys() {
            let _ = self.evtchn.remove_domain(domid);
        }
    }
}

/// The in-process hypervisor. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Hypervisor {
    inner: Arc<Inner>,
}

/// Dom0's domid.
pub const DOM0: DomId = 0;
/// First domid that is not a real domain (`DOMID_FIRST_RESERVED`).
pub const DOMID_FIRST_RESERVED: DomId = 0x7FF0;

impl Hypervisor {
    /// A hypervisor with Dom0 (domid 0) running.
    pub fn new() -> Result<Self, HvError> {
        let hv = Self {
            inner: Arc::new(Inner {
                domains: RwLock::new(BTreeMap::new()),
                evtchn: Arc::new(EventChannels::new()),
                xenstore: XenStore::new(),
                next_domid: AtomicU16::new(1),
            }),
        };
        let cfg = DomainConfig {
            name: "Domain-0".into(),
            memory_frames: 64,
            ..Default::default()
        };
        hv.build_domain(DOM0, &cfg)?;
        Ok(hv)
    }

    /// The xenstore all domains share.
    pub fn xenstore(&self) -> &XenStore {
        &self.inner.xenstore
    }

    /// The event-channel hub.
    pub fn event_channels(&self) -> &Arc<EventChannels> {
        &self.inner.evtchn
    }

    /// Create a guest domain (`XEN_DOMCTL_createdomain` + the toolstack's
    /// `XS_INTRODUCE`) and return its domid.
    pub fn create_domain(&self, cfg: &DomainConfig) -> Result<DomId, HvError> {
        // Domids are not reused while the hypervisor lives, so a stale reference to a
        // dead guest never reaches a new one.
        let domid = self
            .inner
            .next_domid
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| {
                (d < DOMID_FIRST_RESERVED - 1).then_some(d + 1)
            })
            .map_err(|_| HvError::NoDomid)?;
        self.build_domain(domid, cfg)?;
        Ok(domid)
    }

    fn build_domain(&self, domid: DomId, cfg: &DomainConfig) -> Result<(), HvError> {
        if cfg.memory_frames == 0 || cfg.grant_frames == 0 || cfg.max_ports == 0 {
            return Err(HvError::Config(
                "memory, grant frames and ports must be non-zero",
            ));
        }
        let ram = FrameRegion::new(&format!("pvnet-d{domid}-ram"), cfg.memory_frames)?;
        let gnttab_mem =
            FrameRegion::new(&format!("pvnet-d{domid}-gnttab"), cfg.grant_frames as usize)?;
        let nr_entries = cfg.grant_frames * GRANT_ENTRIES_PER_FRAME;
        let base = gnttab_mem.base().cast::<GrantEntryV1>();
        // SAFETY: the region is page aligned, holds nr_entries 8-byte entries, lives as
        // long as the Domain (which owns it and both table views), and is only accessed
        // through the tables' atomics.
        let (guest_view, hv_view) = unsafe {
            (
                SharedGrantTable::from_raw(base, nr_entries),
                SharedGrantTable::from_raw(base, nr_entries),
            )
        };
        let guest_gnttab =
            GuestGrantTable::new(guest_view.map_err(|_| HvError::Config("grant table"))?);
        let active = ActiveGrantTable::new(hv_view.map_err(|_| HvError::Config("grant table"))?);
        let evtchn_page = FrameRegion::new(&format!("pvnet-d{domid}-evtchn"), 1)?;
        // SAFETY: the page is 4 KiB, page aligned (so 8-byte aligned), zeroed, at least
        // the size of EvtchnBitmapPage, owned by the Domain which outlives the hub's
        // entry (remove_domain runs before the Domain is dropped), atomics only.
        let bits = unsafe {
            EvtchnBits::from_page(
                evtchn_page.base().cast::<EvtchnBitmapPage>(),
                cfg.max_ports as usize + 1,
            )
        };
        self.inner
            .evtchn
            .add_domain_with_bits(domid, cfg.max_ports, Arc::new(bits))?;
        if domid != DOM0 {
            if let Err(e) = self.inner.xenstore.introduce_domain(domid) {
                let _ = self.inner.evtchn.remove_domain(domid);
                return Err(e.into());
            }
        }
        let store = self.inner.xenstore.connect(domid);
        let frames = FrameAllocator::new(0, cfg.memory_frames);
        let dom = Domain {
            domid,
            name: cfg.name.clone(),
            ram,
            frames,
            _gnttab_mem: gnttab_mem,
            guest_gnttab,
            active,
            _evtchn_page: evtchn_page,
            store,
        };
        self.inner
            .domains
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(domid, Arc::new(dom));
        Ok(())
    }

    /// Tear a guest down as Xen does when it dies: its event channels are closed (peers
    /// see their port fall back to unbound and are kicked), its xenstore watches and
    /// home are released, its vif backend directories are removed so netback frees the
    /// vifs, and its memory goes once the last mapping of one of its pages is unmapped.
    pub fn destroy_domain(&self, domid: DomId) -> Result<(), HvError> {
        if domid == DOM0 {
            return Err(HvError::Config("Dom0 cannot be destroyed"));
        }
        let dom = self
            .inner
            .domains
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&domid)
            .ok_or(HvError::NoSuchDomain(domid))?;
        let _ = self.inner.evtchn.remove_domain(domid);
        // Pins the dying domain held on other domains' grants (a guest backend).
        for other in self
            .inner
            .domains
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            other.active.release_all_pins_of(domid);
        }
        let xs = &self.inner.xenstore;
        xs.release_domain(domid);
        let _ = xs.remove_domain_tree(domid);
        // The toolstack removes the backend directories of the dead guest's devices.
        let dom0 = xs.connect(DOM0);
        for backend in self.domain_ids() {
            let p = format!("/local/domain/{backend}/backend/vif/{domid}");
            let _ = dom0.rm(crate::env::XBT_NIL, &p);
        }
        drop(dom);
        Ok(())
    }

    /// Running domains, Dom0 first.
    pub fn domain_ids(&self) -> Vec<DomId> {
        self.inner
            .domains
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect()
    }

    /// A running domain.
    pub fn domain(&self, domid: DomId) -> Option<Arc<Domain>> {
        self.inner
            .domains
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&domid)
            .cloned()
    }

    /// A xenstore connection of `domid` (what `/dev/xen/xenbus` is to a domain).
    pub fn store(&self, domid: DomId) -> Result<StoreConnection, HvError> {
        if self.domain(domid).is_none() {
            return Err(HvError::NoSuchDomain(domid));
        }
        Ok(self.inner.xenstore.connect(domid))
    }

    /// The environment netfront runs on inside guest `domid`.
    pub fn guest_env(&self, domid: DomId) -> Result<EmbeddedGuestEnv, HvError> {
        let dom = self.domain(domid).ok_or(HvError::NoSuchDomain(domid))?;
        Ok(EmbeddedGuestEnv {
            dom,
            evtchn: self.inner.evtchn.clone(),
        })
    }

    /// The environment netback runs on in Dom0.
    pub fn backend_env(&self) -> Result<EmbeddedBackendEnv, HvError> {
        self.backend_env_for(DOM0)
    }

    /// A backend environment for a driver domain `domid` (Dom0 usually).
    pub fn backend_env_for(&self, domid: DomId) -> Result<EmbeddedBackendEnv, HvError> {
        let dom = self.domain(domid).ok_or(HvError::NoSuchDomain(domid))?;
        Ok(EmbeddedBackendEnv {
            hv: self.clone(),
            dom,
        })
    }
}

/// A bound port of a domain, with its spin-then-sleep waiter.
pub struct EmbeddedChannel {
    /// Keeps the domain's event-channel page (where `bits` points) mapped.
    _dom: Arc<Domain>,
    hub: Arc<EventChannels>,
    dom: DomId,
    port: Port,
    bits: Arc<EvtchnBits>,
    waiter: Mutex<Waiter>,
}

impl EmbeddedChannel {
    fn new(hub: Arc<EventChannels>, domain: Arc<Domain>, port: Port) -> Result<Self, EnvError> {
        let dom = domain.domid;
        let setup = || -> Result<Self, EvtchnError> {
            let waiter = hub.waiter(dom, port)?;
            let bits = hub.bits(dom)?;
            Ok(Self {
                _dom: domain.clone(),
                hub: hub.clone(),
                dom,
                port,
                bits,
                waiter: Mutex::new(waiter),
            })
        };
        setup().map_err(|e| {
            let _ = hub.close(dom, port);
            EnvError::Evtchn(e.errno())
        })
    }
}

impl EventChannel for EmbeddedChannel {
    fn port(&self) -> Port {
        self.port
    }
    fn notify(&self) {
        // A peer that is gone makes the send fail; the driver notices through the
        // xenstore, as a real guest does.
        let _ = self.hub.send(self.dom, self.port);
    }
    fn try_consume(&self) -> bool {
        self.bits.pending.test_and_clear(self.port as usize)
    }
    fn wait(&self, timeout: Option<Duration>) -> bool {
        match self.waiter.try_lock() {
            Ok(mut w) => w.wait(timeout),
            // Another thread already waits on this port: poll for the event instead of
            // blocking behind it.
            Err(_) => {
                let deadline = timeout.map(|t| std::time::Instant::now() + t);
                loop {
                    if self.try_consume() {
                        return true;
                    }
                    if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                        return false;
                    }
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
        }
    }
}

impl Drop for EmbeddedChannel {
    fn drop(&mut self) {
        let _ = self.hub.close(self.dom, self.port);
    }
}

/// netfront's view of its domain.
pub struct EmbeddedGuestEnv {
    dom: Arc<Domain>,
    evtchn: Arc<EventChannels>,
}

impl EmbeddedGuestEnv {
    fn grant_error(e: GrantError) -> EnvError {
        match e {
            GrantError::NoSpace => EnvError::Exhausted("grant references"),
            GrantError::InUse(r) => EnvError::GrantInUse(r),
            GrantError::BadRef(_) => EnvError::Grant(-3),
            GrantError::StillGranted(_) => EnvError::Grant(-1),
        }
    }
}

impl GuestEnv for EmbeddedGuestEnv {
    type Channel = EmbeddedChannel;

    fn domid(&self) -> DomId {
        self.dom.domid
    }

    /// Granted pages are frames of the guest's RAM, one mapping.
    fn granted_pages_share_one_mapping(&self) -> bool {
        true
    }

    fn grant_pages(
        &self,
        remote: DomId,
        count: usize,
        readonly: bool,
    ) -> Result<Vec<GrantedPage>, EnvError> {
        let frames = self
            .dom
            .frames
            .alloc(count)
            .map_err(|_| EnvError::Exhausted("guest memory frames"))?;
        let mut pages = Vec::with_capacity(count);
        for (i, &gfn) in frames.iter().enumerate() {
            let Some(ptr) = self.dom.ram.frame_ptr(gfn) else {
                // The allocator hands out only frames of this region; stay safe anyway.
                self.dom.frames.free(frames[i..].iter().copied());
                return Err(EnvError::Exhausted("guest memory frames"));
            };
            // SAFETY: the frame was just allocated to us and lies inside our RAM.
            unsafe { std::ptr::write_bytes(ptr.as_ptr(), 0, PAGE_SIZE) };
            match self
                .dom
                .guest_gnttab
                .grant_foreign_access(remote, gfn as u32, readonly)
            {
                Ok(gref) => pages.push(GrantedPage { gref, ptr }),
                Err(e) => {
                    // Undo what was granted so far, then give every frame back.
                    for p in pages.drain(..) {
                        let _ = self.dom.guest_gnttab.end_foreign_access(p.gref);
                    }
                    self.dom.frames.free(
                        frames[i..]
                            .iter()
                            .copied()
                            .chain(frames[..i].iter().copied()),
                    );
                    return Err(Self::grant_error(e));
                }
            }
        }
        Ok(pages)
    }

    fn end_grants(&self, pages: Vec<GrantedPage>) -> Result<(), (EnvError, Vec<GrantedPage>)> {
        let mut iter = pages.into_iter();
        while let Some(page) = iter.next() {
            let gfn = self
                .dom
                .guest_gnttab
                .table()
                .read(page.gref)
                .map(|e| u64::from(e.frame));
            match self.dom.guest_gnttab.end_foreign_access(page.gref) {
                Ok(()) => {
                    if let Some(gfn) = gfn {
                        self.dom.frames.free([gfn]);
                    }
                }
                Err(e) => {
                    let mut rest = vec![page];
                    rest.extend(iter);
                    return Err((Self::grant_error(e), rest));
                }
            }
        }
        Ok(())
    }

    fn alloc_unbound(&self, remote: DomId) -> Result<EmbeddedChannel, EnvError> {
        let port = self
            .evtchn
            .alloc_unbound(self.dom.domid, remote)
            .map_err(|e| EnvError::Evtchn(e.errno()))?;
        EmbeddedChannel::new(self.evtchn.clone(), self.dom.clone(), port)
    }

    fn store(&self) -> &dyn Store {
        &self.dom.store
    }
}

/// A foreign page mapped by a backend. Holds the granting domain alive (as Xen holds a
/// page reference) until it is unmapped on drop.
pub struct EmbeddedMapping {
    dom: Arc<Domain>,
    gref: GrantRef,
    readonly: bool,
    ptr: NonNull<u8>,
}

// SAFETY: the mapping is a pointer into shared memory kept alive by `dom`; access to
// its contents is synchronised by the ring protocol.
unsafe impl Send for EmbeddedMapping {}
// SAFETY: see above.
unsafe impl Sync for EmbeddedMapping {}

impl MappedPage for EmbeddedMapping {
    fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }
}

impl Drop for EmbeddedMapping {
    fn drop(&mut self) {
        let _ = self.dom.active.unmap_grant_ref(self.gref, self.readonly);
    }
}

/// netback's view of Dom0 (or a driver domain).
pub struct EmbeddedBackendEnv {
    hv: Hypervisor,
    dom: Arc<Domain>,
}

impl EmbeddedBackendEnv {
    /// The hypervisor this environment belongs to.
    pub fn hypervisor(&self) -> &Hypervisor {
        &self.hv
    }

    /// Copy a chunk of segments that all name grants of `dom`: pin each run of
    /// segments naming the same grant in the same direction once
    /// (`acquire_grant_for_copy`, reused for consecutive ops as Xen's
    /// `gnttab_copy_buf_valid` does), then copy every segment, then release the pins.
    /// Taking every pin before the first copy and dropping them after the last lets
    /// the copies' stores to guest pages (cache misses on lines the guest just read)
    /// overlap, instead of each one stalling the next pin's locked instructions.
    /// Every segment still gets its own argument check and status.
    fn copy_chunk(&self, dom: &Domain, segs: &mut [CopySeg]) {
        debug_assert!(segs.len() <= COPY_CHUNK);
        let mut runs = [PinnedRun::EMPTY; COPY_CHUNK];
        let mut nruns = 0;
        let mut start = 0;
        while let (Some(first), Some(slot)) = (segs.get(start), runs.get_mut(nruns)) {
            let (gref, dir) = (first.gref, first.dir);
            let end = segs[start..]
                .iter()
                .position(|s| s.gref != gref || s.dir != dir)
                .map_or(segs.len(), |n| start + n);
            let readonly = dir == CopyDir::FromForeign;
            let page = dom
                .active
                .acquire_for_copy(gref, self.dom.domid, readonly)
                .and_then(|frame| {
                    dom.ram.frame_ptr(u64::from(frame)).ok_or_else(|| {
                        // A guest granted a frame number beyond its RAM.
                        let _ = dom.active.release_after_copy(gref, readonly);
                        grant_table::GNTST_BAD_PAGE
                    })
                });
            *slot = PinnedRun {
                end,
                gref,
                readonly,
                page,
            };
            nruns += 1;
            start = end;
        }
        let mut start = 0;
        for run in &runs[..nruns] {
            let Some(run_segs) = segs.get_mut(start..run.end) else {
                break;
            };
            start = run.end;
            match run.page {
                Ok(page) => run_segs.iter_mut().for_each(|seg| copy_seg(page, seg)),
                Err(st) => run_segs.iter_mut().for_each(|seg| seg.status = st),
            }
        }
        for run in &runs[..nruns] {
            if run.page.is_ok() {
                // Cannot fail: the pin was taken above.
                let _ = dom.active.release_after_copy(run.gref, run.readonly);
            }
        }
    }
}

/// Segments of one grant copy pinned, copied and released together
/// ([`EmbeddedBackendEnv::copy_chunk`]).
const COPY_CHUNK: usize = 64;

/// A run of a chunk's segments naming one grant in one direction, and its pin.
#[derive(Clone, Copy)]
struct PinnedRun {
    /// Index just past the run's last segment.
    end: usize,
    gref: GrantRef,
    readonly: bool,
    /// The pinned frame, or the status every segment of the run gets.
    page: Result<NonNull<u8>, i16>,
}

impl PinnedRun {
    const EMPTY: PinnedRun = PinnedRun {
        end: 0,
        gref: 0,
        readonly: true,
        page: Err(GNTST_BAD_COPY_ARG),
    };
}

/// One segment's copy from / to the pinned frame at `page`, with its argument check.
#[inline(always)]
fn copy_seg(page: NonNull<u8>, seg: &mut CopySeg) {
    if usize::from(seg.offset) + usize::from(seg.len) > PAGE_SIZE {
        seg.status = GNTST_BAD_COPY_ARG;
        return;
    }
    // SAFETY: offset + len <= PAGE_SIZE was checked, so the foreign range is inside one
    // frame of the granting domain's RAM, pinned until the chunk's copies are done;
    // `local` is valid for `len` bytes by the CopySeg contract. The ranges belong to
    // different allocations (backend buffer vs guest RAM).
    unsafe {
        let foreign = page.as_ptr().add(usize::from(seg.offset));
        match seg.dir {
            CopyDir::FromForeign => {
                std::ptr::copy_nonoverlapping(foreign, seg.local, usize::from(seg.len))
            }
            CopyDir::ToForeign => {
                std::ptr::copy_nonoverlapping(seg.local, foreign, usize::from(seg.len))
            }
        }
    }
    seg.status = GNTST_OKAY;
}

impl BackendEnv for EmbeddedBackendEnv {
    type Channel = EmbeddedChannel;
    type Mapping = EmbeddedMapping;

    fn domid(&self) -> DomId {
        self.dom.domid
    }

    fn map_grant(
        &self,
        domid: DomId,
        gref: GrantRef,
        readonly: bool,
    ) -> Result<EmbeddedMapping, EnvError> {
        let dom = self.hv.domain(domid).ok_or(EnvError::NoSuchDomain(domid))?;
        let frame = dom
            .active
            .map_grant_ref(gref, self.dom.domid, readonly)
            .map_err(EnvError::Grant)?;
        let Some(ptr) = dom.ram.frame_ptr(u64::from(frame)) else {
            let _ = dom.active.unmap_grant_ref(gref, readonly);
            return Err(EnvError::Grant(grant_table::GNTST_BAD_PAGE));
        };
        Ok(EmbeddedMapping {
            dom,
            gref,
            readonly,
            ptr,
        })
    }

    fn grant_copy(&self, segs: &mut [CopySeg]) {
        // Look the foreign domain up once per run of segments for the same domain;
        // copy in chunks of one domain's segments.
        let mut cached: Option<Arc<Domain>> = None;
        let mut rest = segs;
        while let Some(first) = rest.first() {
            let domid = first.domid;
            let len = rest
                .iter()
                .take(COPY_CHUNK)
                .position(|s| s.domid != domid)
                .unwrap_or(rest.len().min(COPY_CHUNK));
            let (head, tail) = rest.split_at_mut(len);
            rest = tail;
            if cached.as_ref().is_none_or(|d| d.domid != domid) {
                cached = self.hv.domain(domid);
            }
            match &cached {
                Some(dom) => self.copy_chunk(dom, head),
                None => head.iter_mut().for_each(|s| s.status = GNTST_BAD_DOMAIN),
            }
        }
    }

    fn bind_interdomain(
        &self,
        remote: DomId,
        remote_port: Port,
    ) -> Result<EmbeddedChannel, EnvError> {
        let hub = self.hv.inner.evtchn.clone();
        let port = hub
            .bind_interdomain(self.dom.domid, remote, remote_port)
            .map_err(|e| EnvError::Evtchn(e.errno()))?;
        EmbeddedChannel::new(hub, self.dom.clone(), port)
    }

    fn store(&self) -> &dyn Store {
        &self.dom.store
    }
}
