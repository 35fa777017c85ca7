//! What netback reads from a frontend's xenstore directory when it connects
//! (Linux's `connect()`, `connect_data_rings()` and `read_xenbus_vif_flags()`): the
//! number of queues, each queue's ring references and event channels, and the
//! frontend's features. All of it is guest-written, so every value is range-checked.

use hv::env::{GrantRef, Port as EvtchnPort, Store, StoreError, XBT_NIL};
use hv::xenbus::{path_join, read_bool_feature, read_u32, read_unsigned, XenbusError};

use crate::error::NetbackError;

/// Features the frontend advertised (`feature-*` keys in its directory).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrontFeatures {
    /// `feature-sg`: accepts multi-slot RX packets.
    pub sg: bool,
    /// `feature-gso-tcpv4`: accepts TCPv4 GSO super-frames.
    pub gso_tcpv4: bool,
    /// `feature-gso-tcpv6`: accepts TCPv6 GSO super-frames.
    pub gso_tcpv6: bool,
    /// `feature-no-csum-offload`: wants complete checksums on IPv4.
    pub no_csum_offload: bool,
    /// `feature-ipv6-csum-offload`: takes partial checksums on IPv6.
    pub ipv6_csum_offload: bool,
    /// `feature-rx-notify`: notifies when it posts RX buffers (mandatory).
    pub rx_notify: bool,
}

/// How a queue's events are delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvtchnKeys {
    /// `event-channel`: one port for both rings.
    Single(EvtchnPort),
    /// `event-channel-tx` and `event-channel-rx`.
    Split { tx: EvtchnPort, rx: EvtchnPort },
}

/// One queue's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueKeys {
    /// `tx-ring-ref`
    pub tx_ring_ref: GrantRef,
    /// `rx-ring-ref`
    pub rx_ring_ref: GrantRef,
    pub evtchn: EvtchnKeys,
}

/// Everything a connect needs from the frontend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontendConfig {
    pub queues: Vec<QueueKeys>,
    pub features: FrontFeatures,
}

fn bad(path: &str, what: impl Into<String>) -> NetbackError {
    NetbackError::Frontend {
        path: path.into(),
        what: what.into(),
    }
}

fn read_queue(store: &dyn Store, dir: &str) -> Result<QueueKeys, NetbackError> {
    let tx_ring_ref = read_u32(store, XBT_NIL, &path_join(dir, "tx-ring-ref"))?;
    let rx_ring_ref = read_u32(store, XBT_NIL, &path_join(dir, "rx-ring-ref"))?;
    let tx = read_u32(store, XBT_NIL, &path_join(dir, "event-channel-tx"));
    let rx = read_u32(store, XBT_NIL, &path_join(dir, "event-channel-rx"));
    let evtchn = match (tx, rx) {
        (Ok(tx), Ok(rx)) => EvtchnKeys::Split { tx, rx },
        // Like xenbus_gather failing: fall back to the single channel.
        _ => EvtchnKeys::Single(read_u32(store, XBT_NIL, &path_join(dir, "event-channel"))?),
    };
    Ok(QueueKeys {
        tx_ring_ref,
        rx_ring_ref,
        evtchn,
    })
}

/// Read a frontend's connect keys. `max_queues` is what we advertised in
/// `multi-queue-max-queues`.
pub fn read_frontend(
    store: &dyn Store,
    fe: &str,
    max_queues: u32,
) -> Result<FrontendConfig, NetbackError> {
    let nq_path = path_join(fe, "multi-queue-num-queues");
    let num_queues = read_unsigned(store, XBT_NIL, &nq_path, 1)?;
    if num_queues == 0 || num_queues > max_queues {
        return Err(bad(
            &nq_path,
            format!("guest requested {num_queues} queues, exceeding the maximum of {max_queues}"),
        ));
    }
    let rx_copy = path_join(fe, "request-rx-copy");
    match read_u32(store, XBT_NIL, &rx_copy) {
        Ok(1) => {}
        Ok(_) | Err(XenbusError::Store(StoreError::NotFound)) => {
            return Err(bad(
                &rx_copy,
                "copying receiver (request-rx-copy=1) is required",
            ))
        }
        Err(e) => return Err(e.into()),
    }
    let feat = |k: &str| read_bool_feature(store, XBT_NIL, &path_join(fe, k));
    let features = FrontFeatures {
        sg: feat("feature-sg")?,
        gso_tcpv4: feat("feature-gso-tcpv4")?,
        gso_tcpv6: feat("feature-gso-tcpv6")?,
        no_csum_offload: feat("feature-no-csum-offload")?,
        ipv6_csum_offload: feat("feature-ipv6-csum-offload")?,
        rx_notify: feat("feature-rx-notify")?,
    };
    if !features.rx_notify {
        return Err(bad(
            &path_join(fe, "feature-rx-notify"),
            "feature-rx-notify is mandatory",
        ));
    }
    let mut queues = Vec::with_capacity(num_queues as usize);
    if num_queues == 1 {
        queues.push(read_queue(store, fe)?);
    } else {
        for i in 0..num_queues {
            queues.push(read_queue(store, &path_join(fe, &format!("queue-{i}")))?);
        }
    }
    Ok(FrontendConfig { queues, features })
}
