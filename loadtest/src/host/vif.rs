//! The guest's TAP as both guest modes see it: waiting for netback to create it, and
//! the counters guest→host cells are measured with.

use std::time::{Duration, Instant};

use netback::port::TapVifStats;
use netback::{TapPort, TapPortConfig, VifId};

use super::netns::{self, Netns};
use super::{check_interrupt, HostError, SETUP_WAIT};

/// The TAP port of a session: every vif's TAP in `ns`, enslaved to its bridge (what
/// `hv serve --bridge` does, in host mode's own namespace).
pub fn tap_port(ns: &Netns) -> TapPort {
    TapPort::new(TapPortConfig {
        bridge: Some(netns::BRIDGE.into()),
        netns: Some(ns.path()),
        ..TapPortConfig::default()
    })
}

/// Waits (at most 5 s) until `vif` has its TAP; returns its name.
pub fn wait_tap(port: &TapPort, vif: VifId) -> Result<String, HostError> {
    let deadline = Instant::now() + SETUP_WAIT;
    loop {
        if let Some(name) = port.tap_name(vif) {
            return Ok(name);
        }
        check_interrupt()?;
        if Instant::now() >= deadline {
            return Err(HostError::Setup(format!(
                "{vif} has no TAP: {}",
                port.failure(vif).unwrap_or_else(|| "timed out".into())
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Frames the TAP accepted from the guest, and the ones it dropped, rejected or
/// refused for bad offloads.
pub fn to_host(s: &TapVifStats) -> (u64, u64) {
    (
        s.to_host_frames,
        s.to_host_dropped + s.to_host_rejected + s.to_host_bad_offload,
    )
}

/// [`to_host`] of `vif` now.
pub fn to_host_now(port: &TapPort, vif: VifId) -> (u64, u64) {
    port.stats(vif).map(|s| to_host(&s)).unwrap_or_default()
}
