//! The xenbus side of the vif protocol, as Linux's xen-netfront does it
//! (`talk_to_netback`, `write_queue_xenstore_keys`, `netback_changed`,
//! `xennet_bus_close`).
//!
//! Order: the toolstack wrote the frontend directory (`backend`, `backend-id`, `mac`,
//! `state = Initialising`); netback publishes its `feature-*` keys and moves to
//! `InitWait`. The frontend then reads them, grants its rings, allocates event
//! channels, writes every key in one transaction (retried on `EAGAIN`) and — as Linux
//! does on the backend's `InitWait` — switches straight to `Connected`; netback maps
//! the rings and follows to `Connected`. Close: frontend `Closing`, wait for the
//! backend to follow, `Closed`. When the backend closes first, the frontend goes to
//! `Closed` (`xenbus_frontend_closed`).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;

use hv::abi::xenbus::XenbusState;
use hv::env::{DomId, GrantRef, Port, Store, StoreError, XBT_NIL};
use hv::toolstack::{frontend_path, parse_mac};
use hv::xenbus::{self, path_join, xenbus_read_state, Transaction, XenbusError};

use crate::clock::Deadline;
use crate::error::NetfrontError;

/// Longest single sleep while waiting for the backend: a watch event normally ends it
/// early; the bound only matters if another user of the store connection took it.
const WAIT_STEP: Duration = Duration::from_millis(20);

/// What the toolstack wrote for this vif.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontendInfo {
    /// `/local/domain/<domid>/device/vif/<devid>`
    pub fe_path: String,
    /// The `backend` key: the backend's directory.
    pub be_path: String,
    /// The `backend-id` key.
    pub backend_id: DomId,
    /// The `mac` key.
    pub mac: [u8; 6],
}

/// Read the frontend directory of vif `devid` of domain `domid`.
pub fn read_frontend(
    store: &dyn Store,
    domid: DomId,
    devid: u32,
) -> Result<FrontendInfo, NetfrontError> {
    let fe_path = frontend_path(domid, devid);
    let node = |name: &str| path_join(&fe_path, name);
    let be_path = xenbus::read_str(store, XBT_NIL, &node("backend"))?;
    if !be_path.starts_with('/') {
        return Err(NetfrontError::BadFrontendNode {
            path: node("backend"),
            why: "not an absolute path",
        });
    }
    let backend_id = xenbus::read_u32(store, XBT_NIL, &node("backend-id"))?;
    let backend_id = DomId::try_from(backend_id).map_err(|_| NetfrontError::BadFrontendNode {
        path: node("backend-id"),
        why: "not a domid",
    })?;
    let mac_s = xenbus::read_str(store, XBT_NIL, &node("mac"))?;
    let mac = parse_mac(&mac_s).ok_or(NetfrontError::BadFrontendNode {
        path: node("mac"),
        why: "not a MAC address",
    })?;
    Ok(FrontendInfo {
        fe_path,
        be_path,
        backend_id,
        mac,
    })
}

/// The backend's offers (`feature-*`, `multi-queue-max-queues`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BackendFeatures {
    /// `feature-rx-copy`
    pub rx_copy: bool,
    /// `feature-sg`
    pub sg: bool,
    /// `feature-gso-tcpv4`
    pub gso_tcpv4: bool,
    /// `feature-gso-tcpv6`
    pub gso_tcpv6: bool,
    /// `feature-ipv6-csum-offload`
    pub ipv6_csum_offload: bool,
    /// `feature-split-event-channels`
    pub split_event_channels: bool,
    /// `multi-queue-max-queues` (1 when absent)
    pub max_queues: u32,
}

/// Read the backend's `feature-*` keys.
pub fn read_backend_features(
    store: &dyn Store,
    be_path: &str,
) -> Result<BackendFeatures, NetfrontError> {
    let flag = |name: &str| xenbus::read_bool_feature(store, XBT_NIL, &path_join(be_path, name));
    Ok(BackendFeatures {
        rx_copy: flag("feature-rx-copy")?,
        sg: flag("feature-sg")?,
        gso_tcpv4: flag("feature-gso-tcpv4")?,
        gso_tcpv6: flag("feature-gso-tcpv6")?,
        ipv6_csum_offload: flag("feature-ipv6-csum-offload")?,
        split_event_channels: flag("feature-split-event-channels")?,
        max_queues: xenbus::read_unsigned(
            store,
            XBT_NIL,
            &path_join(be_path, "multi-queue-max-queues"),
            1,
        )?
        .max(1),
    })
}

/// The event channel key(s) of one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvtchnKeys {
    /// `event-channel`
    Single(Port),
    /// `event-channel-tx` and `event-channel-rx`
    Split {
        /// TX port.
        tx: Port,
        /// RX port.
        rx: Port,
    },
}

/// The ring references and ports of one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueKeys {
    /// `tx-ring-ref`
    pub tx_ring_ref: GrantRef,
    /// `rx-ring-ref`
    pub rx_ring_ref: GrantRef,
    /// `event-channel[-tx|-rx]`
    pub evtchn: EvtchnKeys,
}

/// What the frontend accepts on its RX path and asks of the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrontFeatures {
    /// `feature-sg`: the backend may send frames over several slots.
    pub sg: bool,
    /// `feature-gso-tcpv4`: the backend may send TCPv4 GSO frames.
    pub gso_tcpv4: bool,
    /// `feature-gso-tcpv6`
    pub gso_tcpv6: bool,
    /// `feature-ipv6-csum-offload`: IPv6 frames may arrive with a blank checksum.
    pub ipv6_csum_offload: bool,
    /// Written as `feature-no-csum-offload = 1` when false: every frame the backend
    /// delivers must have its checksum filled in.
    pub csum_offload: bool,
}

/// Keys this frontend may have written in an earlier session; removed before writing
/// the new ones so a reconnect with another layout leaves nothing stale.
const STALE_KEYS: [&str; 6] = [
    "tx-ring-ref",
    "rx-ring-ref",
    "event-channel",
    "event-channel-tx",
    "event-channel-rx",
    "multi-queue-num-queues",
];

fn rm_if_present(t: &Transaction<'_>, path: &str) -> Result<(), XenbusError> {
    match t.rm(path) {
        Err(XenbusError::Store(StoreError::NotFound)) => Ok(()),
        other => other,
    }
}

fn write_queue_keys(t: &Transaction<'_>, dir: &str, q: &QueueKeys) -> Result<(), XenbusError> {
    let w = |name: &str, v: u32| t.write_fmt(&path_join(dir, name), format_args!("{v}"));
    w("tx-ring-ref", q.tx_ring_ref)?;
    w("rx-ring-ref", q.rx_ring_ref)?;
    match q.evtchn {
        EvtchnKeys::Single(p) => w("event-channel", p),
        EvtchnKeys::Split { tx, rx } => {
            w("event-channel-tx", tx)?;
            w("event-channel-rx", rx)
        }
    }
}

/// Write every key of the connection in one transaction (`talk_to_netback`): the
/// queues' ring refs and ports (at the top for one queue, under `queue-<i>/` with
/// `multi-queue-num-queues` for more), `request-rx-copy`, `feature-rx-notify` and the
/// frontend's features. Retried on `EAGAIN`.
pub fn write_connect_keys(
    store: &dyn Store,
    fe_path: &str,
    queues: &[QueueKeys],
    features: &FrontFeatures,
) -> Result<(), NetfrontError> {
    Transaction::run(store, |t| -> Result<(), XenbusError> {
        for k in STALE_KEYS {
            rm_if_present(t, &path_join(fe_path, k))?;
        }
        for child in t.directory(fe_path)? {
            if child.starts_with("queue-") {
                rm_if_present(t, &path_join(fe_path, &child))?;
            }
        }
        match queues {
            [q] => write_queue_keys(t, fe_path, q)?,
            _ => {
                t.write_fmt(
                    &path_join(fe_path, "multi-queue-num-queues"),
                    format_args!("{}", queues.len()),
                )?;
                for (i, q) in queues.iter().enumerate() {
                    write_queue_keys(t, &path_join(fe_path, &format!("queue-{i}")), q)?;
                }
            }
        }
        let flag =
            |name: &str, on: bool| t.write(&path_join(fe_path, name), if on { b"1" } else { b"0" });
        flag("request-rx-copy", true)?;
        flag("feature-rx-notify", true)?;
        flag("feature-sg", features.sg)?;
        flag("feature-gso-tcpv4", features.gso_tcpv4)?;
        flag("feature-gso-tcpv6", features.gso_tcpv6)?;
        flag(
            "feature-ipv6-csum-offload",
            features.ipv6_csum_offload && features.csum_offload,
        )?;
        if features.csum_offload {
            rm_if_present(t, &path_join(fe_path, "feature-no-csum-offload"))?;
        } else {
            flag("feature-no-csum-offload", true)?;
        }
        Ok(())
    })?;
    Ok(())
}

/// `xenbus_switch_state` on the frontend.
pub fn switch_state(
    store: &dyn Store,
    fe_path: &str,
    state: XenbusState,
) -> Result<(), NetfrontError> {
    xenbus::xenbus_switch_state(store, fe_path, state)?;
    Ok(())
}

static NEXT_TOKEN: AtomicU64 = AtomicU64::new(0);

/// What a wait for the backend concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitVerdict {
    /// The awaited state.
    Done,
    /// Keep waiting.
    Continue,
    /// Give up: the backend went somewhere it cannot come back from.
    Abort,
}

/// Wait until `judge(backend state)` says [`WaitVerdict::Done`] (Ok) or
/// [`WaitVerdict::Abort`] (`BackendClosed`), or the deadline passes (`Timeout`).
/// Uses a watch on the backend's `state` node; re-reads at least every 20 ms so an
/// event consumed by another user of the connection only costs latency.
pub fn wait_backend(
    store: &dyn Store,
    be_path: &str,
    timeout: Duration,
    judge: impl Fn(XenbusState) -> WaitVerdict,
) -> Result<XenbusState, NetfrontError> {
    let state_path = path_join(be_path, "state");
    let token = format!(
        "netfront-wait/{}",
        NEXT_TOKEN.fetch_add(1, Ordering::Relaxed)
    );
    let watched = store.watch(&state_path, &token).is_ok();
    let mut deadline = Deadline::after(timeout);
    let result = loop {
        let state = match xenbus_read_state(store, be_path) {
            Ok(s) => s,
            Err(e) => break Err(e.into()),
        };
        match judge(state) {
            WaitVerdict::Done => break Ok(state),
            WaitVerdict::Abort => {
                break Err(NetfrontError::BackendClosed {
                    path: be_path.into(),
                    state,
                })
            }
            WaitVerdict::Continue => {}
        }
        if deadline.expired() {
            break Err(NetfrontError::Timeout {
                path: be_path.into(),
                last: state,
            });
        }
        let step = deadline.step(WAIT_STEP);
        if watched {
            store.next_watch_event(Some(step));
        } else {
            crate::clock::pause(step);
        }
    };
    if watched {
        let _ = store.unwatch(&state_path, &token);
    }
    result
}

/// The frontend's own state (`Unknown` if the node is missing).
pub fn frontend_state(store: &dyn Store, fe_path: &str) -> Result<XenbusState, NetfrontError> {
    Ok(xenbus_read_state(store, fe_path)?)
}

/// The backend's state (`Unknown` if gone).
pub fn backend_state(store: &dyn Store, be_path: &str) -> Result<XenbusState, NetfrontError> {
    Ok(xenbus_read_state(store, be_path)?)
}

/// Every `queue-<i>` child of a directory (for tests and diagnostics).
pub fn queue_dirs(store: &dyn Store, fe_path: &str) -> Result<Vec<String>, NetfrontError> {
    Ok(store
        .directory(XBT_NIL, fe_path)?
        .into_iter()
        .filter(|c| c.starts_with("queue-"))
        .collect())
}
