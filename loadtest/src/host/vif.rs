//! The guest's TAP as both guest modes see it: waiting for netback to create it, and
//! the counters guest→host cells are measured with.

use std::time::{Duration, Instant};

use netback::port::TapVifStats;
use netback::{TapPort, TapPortConfig, VifId};

use super::netns::{self, Netns};
use super::{check_interrupt, settle, GuestKind, HostCell, HostDirection, HostError, SETUP_WAIT};
use crate::cpu::CpuTime;
use crate::measurement::Measurement;

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

/// The TAP's counters when a guest→host window opened.
#[derive(Clone, Copy, Debug)]
pub struct ToHostStart {
    frames: u64,
    drops: u64,
}

impl ToHostStart {
    /// Read them now, as the window opens.
    pub fn now(port: &TapPort, vif: VifId) -> Self {
        let (frames, drops) = to_host_now(port, vif);
        Self { frames, drops }
    }

    /// The guest→host cell of a window that closed with the TAP at `at_end`: frames
    /// and drops counted at the TAP between the two readings. Lets netback finish the
    /// ring first, so its frames are not counted in the next cell.
    #[allow(clippy::too_many_arguments)]
    pub fn cell(
        self,
        port: &TapPort,
        vif: VifId,
        at_end: &TapVifStats,
        len: u32,
        elapsed: Duration,
        guest: GuestKind,
        guest_cpu: CpuTime,
        offered: u64,
    ) -> HostCell {
        let (f, d) = to_host(at_end);
        settle(|| {
            let (f, d) = to_host_now(port, vif);
            f + d
        });
        let mut m = Measurement::frames(f.saturating_sub(self.frames), len, elapsed);
        m.drops = d.saturating_sub(self.drops);
        m.add_cpu("guest", guest_cpu);
        HostCell {
            frame_size: len,
            direction: HostDirection::GuestToHost,
            guest,
            offered,
            measurement: m,
        }
    }
}
