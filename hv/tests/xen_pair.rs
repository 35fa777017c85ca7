//! One guest and one backend exercising every environment operation against each
//! other: grant pages, map them, batched grant copies both ways (with bad segments),
//! an event channel both ways, xenstore watches and a transaction.
//!
//! The roles are generic over [`GuestEnv`] / [`BackendEnv`]. On a development machine
//! the test runs both on the embedded hypervisor. In the Xen lab (`xenlab/run
//! xen-env`) the same test binary runs with `XENLAB_ROLE=domu` in a PV domU
//! (`hv::xen::XenGuestEnv` on gntalloc/evtchn/xenbus) and `XENLAB_ROLE=dom0` in dom0
//! (`hv::xen::XenBackendEnv` on gntdev/evtchn/xenbus), so the Linux-device environment
//! is proven against real Xen by the very checks proven here.

use std::time::{Duration, Instant};

use hv::env::{
    BackendEnv, CopyDir, CopySeg, DomId, EventChannel, GuestEnv, MappedPage, Store, XBT_NIL,
};

const PAGE: usize = 4096;
const WAIT: Duration = Duration::from_secs(60);
/// GNTST_bad_copy_arg
const GNTST_BAD_COPY_ARG: i16 = -10;

fn pattern(seed: u8, i: usize) -> u8 {
    (i as u8).wrapping_mul(7).wrapping_add(seed)
}

fn read_str(store: &dyn Store, path: &str) -> Result<String, String> {
    store
        .read(XBT_NIL, path)
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .map_err(|e| format!("read {path}: {e}"))
}

fn read_num<T: std::str::FromStr>(store: &dyn Store, path: &str) -> Result<T, String> {
    read_str(store, path)?
        .trim()
        .parse()
        .map_err(|_| format!("{path} is not a number"))
}

/// Wait, through a watch, until `path` holds `want`.
fn wait_for(store: &dyn Store, path: &str, want: &str) -> Result<(), String> {
    let token = format!("wait-{path}");
    store
        .watch(path, &token)
        .map_err(|e| format!("watch {path}: {e}"))?;
    let deadline = Instant::now() + WAIT;
    let result = loop {
        if store.read(XBT_NIL, path).ok().as_deref() == Some(want.as_bytes()) {
            break Ok(());
        }
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break Err(format!("{path} never became {want:?}"));
        };
        let _ = store.next_watch_event(Some(left.min(Duration::from_secs(1))));
    };
    let _ = store.unwatch(path, &token);
    result
}

/// The guest: grants two pages (one filled with a pattern, one for the backend to
/// fill), offers an unbound port, publishes both under `dir`, then checks what the
/// backend did.
fn guest_role<E: GuestEnv>(env: &E, backend: DomId, dir: &str) -> Result<(), String> {
    let store = env.store();
    let pages = env
        .grant_pages(backend, 2, false)
        .map_err(|e| format!("grant_pages: {e}"))?;
    let seed = env.domid() as u8 ^ 0x5a;
    // SAFETY: each GrantedPage is a live, page-aligned 4 KiB mapping of this domain.
    let (p0, p1) = unsafe {
        (
            std::slice::from_raw_parts_mut(pages[0].ptr.as_ptr(), PAGE),
            std::slice::from_raw_parts_mut(pages[1].ptr.as_ptr(), PAGE),
        )
    };
    if p1.iter().any(|&b| b != 0) {
        return Err("granted pages must start zeroed".into());
    }
    for (i, b) in p0.iter_mut().enumerate() {
        *b = pattern(seed, i);
    }
    let ch = env
        .alloc_unbound(backend)
        .map_err(|e| format!("alloc_unbound: {e}"))?;
    let w = |k: &str, v: String| {
        store
            .write(XBT_NIL, &format!("{dir}/{k}"), v.as_bytes())
            .map_err(|e| format!("write {k}: {e}"))
    };
    w("gref0", pages[0].gref.to_string())?;
    w("gref1", pages[1].gref.to_string())?;
    w("port", ch.port().to_string())?;
    w("seed", seed.to_string())?;
    w("state", "ready".into())?;

    // The backend maps page 0, writes a marker into it, grant-copies into page 1, then
    // notifies us.
    if !ch.wait(Some(WAIT)) {
        return Err("no event from the backend".into());
    }
    wait_for(store, &format!("{dir}/state"), "copied")?;
    if &p0[100..104] != b"BACK" {
        return Err(format!(
            "marker written through the mapping is {:?}",
            &p0[100..104]
        ));
    }
    for (i, &b) in p1.iter().enumerate() {
        if b != pattern(!seed, i) {
            return Err(format!("page 1 byte {i} is {b}, grant copy did not land"));
        }
    }
    w("result", "guest-ok".into())?;
    ch.notify();
    wait_for(store, &format!("{dir}/state"), "unmapped")?;
    env.end_grants(pages)
        .map_err(|(e, _)| format!("end_grants: {e}"))?;
    Ok(())
}

/// The backend: waits for the guest's keys, maps and copies, binds the port, and
/// checks the guest's verdict.
fn backend_role<E: BackendEnv>(env: &E, guest: DomId, dir: &str) -> Result<(), String> {
    let store = env.store();
    wait_for(store, &format!("{dir}/state"), "ready")?;
    let gref0: u32 = read_num(store, &format!("{dir}/gref0"))?;
    let gref1: u32 = read_num(store, &format!("{dir}/gref1"))?;
    let port: u32 = read_num(store, &format!("{dir}/port"))?;
    let seed: u8 = read_num(store, &format!("{dir}/seed"))?;

    let map = env
        .map_grant(guest, gref0, false)
        .map_err(|e| format!("map_grant: {e}"))?;
    // SAFETY: the mapping is a live 4 KiB page until `map` is dropped.
    let page = unsafe { std::slice::from_raw_parts_mut(map.ptr().as_ptr(), PAGE) };
    for (i, &b) in page.iter().enumerate() {
        if b != pattern(seed, i) {
            return Err(format!("mapped page byte {i} is {b}"));
        }
    }
    page[100..104].copy_from_slice(b"BACK");

    // A batch: page 0 in two halves into a local buffer, a local pattern into page 1,
    // and two segments Xen must refuse without spoiling the others.
    let mut from = vec![0u8; PAGE];
    let mut to: Vec<u8> = (0..PAGE).map(|i| pattern(!seed, i)).collect();
    let mut scratch = vec![0u8; 64];
    let seg = |dir, gref, offset: u16, len: u16, local: *mut u8| CopySeg {
        dir,
        domid: guest,
        gref,
        offset,
        len,
        local,
        status: 1,
    };
    let half = (PAGE / 2) as u16;
    let mut segs = [
        seg(CopyDir::FromForeign, gref0, 0, half, from.as_mut_ptr()),
        seg(CopyDir::FromForeign, gref0, 4000, 200, scratch.as_mut_ptr()),
        // SAFETY: offset PAGE/2 is inside `from`.
        seg(CopyDir::FromForeign, gref0, half, half, unsafe {
            from.as_mut_ptr().add(PAGE / 2)
        }),
        seg(
            CopyDir::FromForeign,
            0x00ff_ffff,
            0,
            64,
            scratch.as_mut_ptr(),
        ),
        seg(CopyDir::ToForeign, gref1, 0, PAGE as u16, to.as_mut_ptr()),
    ];
    env.grant_copy(&mut segs);
    let st: Vec<i16> = segs.iter().map(|s| s.status).collect();
    if st[0] != 0 || st[2] != 0 || st[4] != 0 {
        return Err(format!("good copy segments failed: {st:?}"));
    }
    if st[1] != GNTST_BAD_COPY_ARG {
        return Err(format!("a segment crossing the page end got {}", st[1]));
    }
    if st[3] >= 0 {
        return Err(format!("a copy from an unknown grant ref got {}", st[3]));
    }
    for (i, &b) in from.iter().enumerate() {
        let want = if (100..104).contains(&i) {
            b"BACK"[i - 100]
        } else {
            pattern(seed, i)
        };
        if b != want {
            return Err(format!("copied byte {i} is {b}, expected {want}"));
        }
    }

    // A transaction on the backend's side of the store.
    let tx = store
        .transaction_start()
        .map_err(|e| format!("transaction_start: {e}"))?;
    store
        .write(tx, &format!("{dir}/state"), b"copied")
        .map_err(|e| format!("write in transaction: {e}"))?;
    store
        .transaction_end(tx, true)
        .map_err(|e| format!("commit: {e}"))?;

    let ch = env
        .bind_interdomain(guest, port)
        .map_err(|e| format!("bind_interdomain: {e}"))?;
    // Xen marks a freshly bound port pending (notifications sent to the unbound port
    // may have been lost). Consume that before notifying: the guest answers only after
    // our notification, so any event after this point is its answer.
    while ch.try_consume() {}
    ch.notify();
    if !ch.wait(Some(WAIT)) {
        return Err("no event back from the guest".into());
    }
    let verdict = read_str(store, &format!("{dir}/result"))?;
    if verdict != "guest-ok" {
        return Err(format!("guest said {verdict}"));
    }
    drop(map);
    store
        .write(XBT_NIL, &format!("{dir}/state"), b"unmapped")
        .map_err(|e| format!("write state: {e}"))?;
    Ok(())
}

#[cfg(target_os = "linux")]
fn run_on_xen(role: &str) {
    use hv::xen::{XenBackendEnv, XenGuestEnv};
    match role {
        "domu" => {
            let env = XenGuestEnv::open().unwrap_or_else(|e| panic!("{e}"));
            let dir = format!("/local/domain/{}/data/xenlab-pair", env.domid());
            guest_role(&env, 0, &dir).unwrap_or_else(|e| panic!("guest role: {e}"));
            println!("XENLAB-PAIR guest role passed as domain {}", env.domid());
        }
        "dom0" => {
            let guest: DomId = std::env::var("XENLAB_GUEST")
                .ok()
                .and_then(|v| v.parse().ok())
                .expect("XENLAB_GUEST=<domid of the guest>");
            let env = XenBackendEnv::open().unwrap_or_else(|e| panic!("{e}"));
            let dir = format!("/local/domain/{guest}/data/xenlab-pair");
            backend_role(&env, guest, &dir).unwrap_or_else(|e| panic!("backend role: {e}"));
            println!("XENLAB-PAIR backend role passed in domain {}", env.domid());
        }
        other => panic!("XENLAB_ROLE must be domu or dom0, not {other:?}"),
    }
}

#[test]
fn guest_and_backend_roles_agree() {
    #[cfg(target_os = "linux")]
    if let Ok(role) = std::env::var("XENLAB_ROLE") {
        return run_on_xen(&role);
    }
    let hv = hv::embedded::Hypervisor::new().unwrap();
    let guest = hv
        .create_domain(&hv::embedded::DomainConfig::default())
        .unwrap();
    let genv = hv.guest_env(guest).unwrap();
    let benv = hv.backend_env().unwrap();
    let dir = format!("/local/domain/{guest}/data/xenlab-pair");
    std::thread::scope(|s| {
        let g = s.spawn(|| guest_role(&genv, 0, &dir));
        let b = s.spawn(|| backend_role(&benv, guest, &dir));
        b.join().unwrap().unwrap();
        g.join().unwrap().unwrap();
    });
}
