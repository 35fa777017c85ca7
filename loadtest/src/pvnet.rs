//! Where the pvnet scenarios plug in.
//!
//! netfront and netback's data path is not wired into loadtest yet, so [`register`]
//! adds one placeholder series, `pvnet`, that spans the full matrix and reports every
//! cell as unsupported with the reason. That keeps the matrix, the ratio columns and the
//! `--only pvnet` filter visible and tested. To add the real scenarios, implement
//! [`crate::Workload`] with [`Role::Subject`] (one workload per series, e.g. `pvnet`
//! polling and `pvnet-evtchn`), return [`Axes::Full`], say in `check` which cells are
//! unsupported and why, and register it here in place of [`Pending`]. Everything else —
//! planning, timing, ratios to the limit and peers, table, JSON, plot — follows.
//!
//! Note for the real workload: `netif_tx_request.size` is a `uint16_t`
//! (`XEN_NETIF_MAX_TX_SIZE` = 0xFFFF), so a 65536-byte GSO frame does not fit one TX
//! request; the workload must either split it or mark that cell unsupported.

use crate::cell::CellConfig;
use crate::control::Control;
use crate::measurement::Measurement;
use crate::workload::{Axes, Registry, Role, Unsupported, Workload, WorkloadError};

/// Series name of the pvnet data path.
pub const PVNET: &str = "pvnet";

/// Registers the pvnet workloads.
pub fn register(registry: &mut Registry) {
    // The registry is fresh here: a name clash is impossible.
    let _ = registry.register(Box::new(Pending));
}

/// Placeholder for the pvnet data path until netfront/netback land in loadtest.
pub struct Pending;

impl Workload for Pending {
    fn name(&self) -> &str {
        PVNET
    }

    fn describe(&self) -> &str {
        "pvnet netfront⇄netback data path (not wired into loadtest yet)"
    }

    fn role(&self) -> Role {
        Role::Subject
    }

    fn axes(&self) -> Axes {
        Axes::Full
    }

    fn check(&self, _cell: &CellConfig) -> Result<(), Unsupported> {
        Err(Unsupported::new(
            "netfront/netback data path not wired into loadtest yet",
        ))
    }

    fn run(&self, cell: &CellConfig, _ctl: &Control) -> Result<Measurement, WorkloadError> {
        Err(WorkloadError::Setup(format!(
            "{}: pvnet data path not wired into loadtest yet",
            cell.label()
        )))
    }
}
