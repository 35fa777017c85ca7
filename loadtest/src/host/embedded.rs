//! `--guest embedded` (the default): the hypervisor, netback and the guest's netfront
//! all in the loadtest process, the guest a thread — the same testbed as the `pvnet`
//! series, with netback's port a TAP instead of an in-process sink.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use netback::{Port, TapPort, VifId};

use super::netns::{self, Netns};
use super::{check_interrupt, inject, rx, settle, signal, vif};
use super::{GuestKind, HostCell, HostDirection, HostError, HostSession, TICK};
use crate::control::Control;
use crate::measurement::Measurement;
use crate::pvnet::guest::{self, Progress, Shared, TxPlan};
use crate::pvnet::testbed::Testbed;
use crate::pvnet::wire;

/// One embedded guest behind a TAP. Field order is drop order: the guest and netback
/// go first (removing the TAP), then the port.
pub struct EmbeddedSession {
    testbed: Option<Testbed>,
    port: Arc<TapPort>,
    vif: VifId,
    tap: String,
    netns: std::path::PathBuf,
}

impl EmbeddedSession {
    /// Starts netback with a TAP in `ns` and connects one guest.
    pub fn start(ns: &Netns) -> Result<EmbeddedSession, HostError> {
        let port = Arc::new(vif::tap_port(ns));
        let dyn_port: Arc<dyn Port> = port.clone();
        let testbed = Testbed::new(dyn_port, 1, 1).map_err(|e| HostError::Setup(e.to_string()))?;
        let domid = testbed
            .guests
            .first()
            .map(|g| g.domid)
            .ok_or_else(|| HostError::Setup("no guest".into()))?;
        let vif = VifId { domid, devid: 0 };
        let mut s = EmbeddedSession {
            testbed: Some(testbed),
            port,
            vif,
            tap: String::new(),
            netns: ns.path(),
        };
        s.tap = vif::wait_tap(&s.port, vif)?;
        Ok(s)
    }
}

impl HostSession for EmbeddedSession {
    fn tap(&self) -> &str {
        &self.tap
    }

    fn guest_to_host(&mut self, len: u32, window: Duration) -> Result<HostCell, HostError> {
        let template = wire::template(&wire::FrameSpec {
            len: len as usize,
            // Nobody's MAC: the bridge has no port to forward it to and drops it.
            dst: wire::DOM0_MAC,
            src: wire::guest_mac(0),
            flow: 0,
            spread_over: 1,
        })
        .ok_or_else(|| HostError::Invalid(format!("no test frame of {len} bytes")))?;
        let start = vif::ToHostStart::now(&self.port, self.vif);
        let ctl = Control::new(window);
        let (shared, progress) = (Shared::default(), Progress::default());
        let port = self.port.clone();
        let vif_id = self.vif;
        let tb = self.testbed.as_mut().ok_or(HostError::Interrupted)?;
        let q = tb
            .guests
            .first_mut()
            .and_then(|g| g.nf.queues_mut().first_mut())
            .ok_or_else(|| HostError::Setup("the guest has no queue".into()))?;
        let plan = TxPlan {
            template: &template,
            flow: 0,
        };
        let (result, elapsed, at_end) = ctl.run_timed(|ctl| {
            std::thread::scope(|s| {
                let t0 = ctl.begin();
                shared.start();
                let worker = s.spawn(|| guest::sender(q, &plan, ctl, &shared, &progress));
                while !ctl.should_stop() {
                    if signal::interrupted() {
                        ctl.request_stop();
                    }
                    std::thread::sleep(TICK);
                }
                let elapsed = t0.elapsed();
                let at_end = port.stats(vif_id).unwrap_or_default();
                let r = worker
                    .join()
                    .map_err(|_| HostError::Cell("the guest sender panicked".into()));
                (r, elapsed, at_end)
            })
        });
        check_interrupt()?;
        let worker = result?.map_err(|e| HostError::Cell(e.to_string()))?;
        Ok(start.cell(
            &self.port,
            self.vif,
            &at_end,
            len,
            elapsed,
            GuestKind::Embedded,
            worker.cpu,
            worker.sent,
        ))
    }

    fn host_to_guest(&mut self, len: u32, window: Duration) -> Result<HostCell, HostError> {
        let ctl = Control::new(window);
        let received = AtomicU64::new(0);
        let done = AtomicBool::new(false);
        let path = self.netns.clone();
        let tb = self.testbed.as_mut().ok_or(HostError::Interrupted)?;
        let guest_ref = tb
            .guests
            .first_mut()
            .ok_or_else(|| HostError::Setup("no guest".into()))?;
        let mac = guest_ref.mac;
        let q = guest_ref
            .nf
            .queues_mut()
            .first_mut()
            .ok_or_else(|| HostError::Setup("the guest has no queue".into()))?;
        let (sent, rx, elapsed, at_end) = ctl.run_timed(|ctl| {
            std::thread::scope(|s| {
                let rx = s.spawn(|| {
                    rx::receive(
                        q,
                        len as usize,
                        mac,
                        &received,
                        || done.load(Ordering::Acquire),
                        None,
                    )
                });
                let t0 = ctl.begin();
                let tx = s.spawn(|| inject::run(&path, netns::BRIDGE, len as usize, mac, ctl));
                while !ctl.should_stop() {
                    if signal::interrupted() {
                        ctl.request_stop();
                    }
                    std::thread::sleep(TICK);
                }
                let elapsed = t0.elapsed();
                let at_end = received.load(Ordering::Acquire);
                let sent = tx
                    .join()
                    .unwrap_or_else(|_| Err(HostError::Cell("the injector panicked".into())));
                // Frames still in the TAP or netback arrive now; they count as
                // delivered (not dropped) but outside the window.
                settle(|| received.load(Ordering::Acquire));
                done.store(true, Ordering::Release);
                let rx = rx
                    .join()
                    .unwrap_or_else(|_| Err(HostError::Cell("the guest receiver panicked".into())));
                (sent, rx, elapsed, at_end)
            })
        });
        check_interrupt()?;
        let sent = sent?;
        let (total, cpu) = rx?;
        let mut m = Measurement::frames(at_end, len, elapsed);
        m.drops = sent.saturating_sub(total);
        m.add_cpu("guest", cpu);
        Ok(HostCell {
            frame_size: len,
            direction: HostDirection::HostToGuest,
            guest: GuestKind::Embedded,
            offered: sent,
            measurement: m,
        })
    }

    /// Orderly teardown: the guest closes its vif, netback stops (the TAP goes).
    fn close(mut self: Box<Self>) {
        if let Some(tb) = self.testbed.take() {
            tb.close();
        }
    }
}
