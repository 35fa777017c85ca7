//! The pvnet latency cells: one frame at a time, guest → netback → [`Reflector`] →
//! netback → guest, timed by the [`crate::latency`] harness like the latency peers.
//!
//! A round trip is: the guest builds the stamped frame in a granted TX page and pushes
//! it (notifying netback if it asked), netback's TX thread grant-copies it out and hands
//! it to the reflector, which queues it back with the MACs swapped, netback's RX thread
//! grant-copies it into a posted RX buffer and notifies the guest if it asked, and the
//! guest verifies the stamp.
//!
//! The two series differ in how the **guest** waits for the answer:
//! * `pvnet-evtchn` ([`WaitMode::EventDriven`]): `Queue::wait_rx` — re-arm the RX
//!   ring's `rsp_event`, then wait on the event channel (the embedded channel spins
//!   for its default window, 5 µs, then sleeps on its eventfd);
//! * `pvnet-poll` ([`WaitMode::Polling`]): busy-poll the RX ring's producer index, never
//!   asking for a notification.
//!
//! netback's threads wait the same way in both (spin-then-sleep on the event channel,
//! spin-then-park for frames from the port): netback has no busy-polling mode, so
//! `pvnet-poll` polls on the guest side only, which the comparison with the
//! spin-pingpong peer (both sides polling) must be read with.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hv::embedded::EmbeddedChannel;
use netback::{Port, Reflector};
use netfront::{Queue, TxError, TxMeta};

use super::testbed::Testbed;
use super::threads::ThreadSet;
use super::throughput::frame_support;
use super::wire::{self, FlowCheck, FrameSpec};
use crate::cell::CellConfig;
use crate::control::Control;
use crate::latency::{ping_pong, PingPong, WaitMode, FIRST_TIMED_SEQ};
use crate::measurement::Measurement;
use crate::workload::{Axes, Kind, Role, Unsupported, Workload, WorkloadError};

/// A round trip not answered within this long fails the cell (a lost frame would
/// otherwise hang it: the reflector never drops on an idle vif, so this is a fault).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// Polls of the RX ring between two yields of the core (the spin-pingpong peer's
/// `SPINS_BEFORE_YIELD`).
const SPINS_BEFORE_YIELD: u32 = 1 << 10;
/// Event-channel wait slice (the timeout is checked between slices).
const WAIT_SLICE: Duration = Duration::from_millis(10);

/// See the module documentation.
pub struct PvnetLatency {
    mode: WaitMode,
}

impl PvnetLatency {
    /// The series for `mode`.
    pub fn new(mode: WaitMode) -> Self {
        PvnetLatency { mode }
    }
}

impl Workload for PvnetLatency {
    fn name(&self) -> &str {
        match self.mode {
            WaitMode::EventDriven => super::PVNET_EVTCHN,
            WaitMode::Polling => super::PVNET_POLL,
        }
    }

    fn describe(&self) -> &str {
        match self.mode {
            WaitMode::EventDriven => {
                "pvnet round trip guest → netback reflector → guest, the guest sleeping on its \
                 RX event channel (default 5 µs spin, then eventfd)"
            }
            WaitMode::Polling => {
                "pvnet round trip guest → netback reflector → guest, the guest busy-polling its \
                 RX ring (netback keeps its own spin-then-sleep: it has no polling mode)"
            }
        }
    }

    fn role(&self) -> Role {
        Role::Subject
    }

    fn kind(&self) -> Kind {
        Kind::Latency(self.mode)
    }

    fn axes(&self) -> Axes {
        Axes::SmallestSize
    }

    fn check(&self, cell: &CellConfig) -> Result<(), Unsupported> {
        frame_support(cell.frame_size)
    }

    fn setup_cost(&self) -> Duration {
        super::SETUP_COST
    }

    fn run(&self, cell: &CellConfig, ctl: &Control) -> Result<Measurement, WorkloadError> {
        self.check(cell)
            .map_err(|u| WorkloadError::Setup(u.to_string()))?;
        let len = cell.frame_size as usize;
        let reflector = Reflector::new();
        let mut tb = Testbed::new(reflector.clone() as Arc<dyn Port>, 1, 1)?;
        let guest = &mut tb.guests[0];
        let template = wire::template(&FrameSpec {
            len,
            dst: wire::DOM0_MAC,
            src: guest.mac,
            flow: 0,
            spread_over: 1,
        })
        .ok_or_else(|| WorkloadError::Setup(format!("no {len}-byte test frame")))?;
        let dom0_threads = tb.dom0.threads.clone();
        let Some(q) = tb.guests[0].nf.queue(0) else {
            return Err(WorkloadError::Setup("the vif has no queue".into()));
        };
        let mut client = Client {
            q,
            template: &template,
            mode: self.mode,
            check: FlowCheck::new(len, 1),
            dom0_threads: &dom0_threads,
            dom0: None,
        };
        let run = ping_pong(&mut client, ctl)?;
        let dom0_cpu = client.dom0.as_ref().map(|d| (d.elapsed(), d.len()));
        drop(client);
        tb.close();
        let mut m = Measurement {
            frames: run.round_trips,
            elapsed: run.elapsed,
            latency: run.recorder.summary(),
            ..Measurement::default()
        };
        m.add_cpu("guest", run.client_cpu);
        if let Some((cpu, n)) = dom0_cpu.filter(|(_, n)| *n > 0) {
            m.add_cpu("dom0", cpu);
            if let Some(s) = m.sides.iter_mut().find(|s| s.side == "dom0") {
                s.threads = u32::try_from(n).unwrap_or(u32::MAX);
            }
        }
        Ok(m)
    }
}

/// The guest's half of the ping-pong.
struct Client<'a> {
    q: &'a mut Queue<EmbeddedChannel>,
    template: &'a [u8],
    mode: WaitMode,
    check: FlowCheck,
    dom0_threads: &'a [i32],
    /// Dom0's thread clocks, read when the first timed round trip starts.
    dom0: Option<ThreadSet>,
}

impl PingPong for Client<'_> {
    fn round_trip(&mut self, seq: u64) -> Result<u64, WorkloadError> {
        if seq == FIRST_TIMED_SEQ {
            self.dom0 = Some(ThreadSet::start(self.dom0_threads));
        }
        let len = self.template.len();
        let template = self.template;
        loop {
            match self.q.send_with(len, TxMeta::default(), |off, seg| {
                wire::fill_segment(template, 0, seq, off, seg)
            }) {
                Ok(()) => break,
                // Every TX slot still awaits its response: collect them and retry.
                Err(TxError::Busy) => {
                    self.q.wait_tx(Some(WAIT_SLICE));
                }
                Err(e) => {
                    return Err(WorkloadError::Setup(format!(
                        "netfront refused a test frame: {e}"
                    )))
                }
            }
        }
        self.q.flush();
        // The answer must be exactly this frame: a later stamp means it was lost, an
        // earlier one is a duplicate.
        self.check.expect(0, seq);
        let skipped = self.check.skipped;
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            let check = &mut self.check;
            let got = self.q.recv_with(|f, meta| {
                check.check_segments(f.len(), f.segments(), meta.gso.is_some())?;
                Ok::<_, wire::Failure>(())
            });
            match got {
                Some(Ok(())) => {
                    return if self.check.skipped == skipped {
                        Ok(seq)
                    } else {
                        Err(WorkloadError::Verify {
                            expected: seq,
                            detail: "a later frame came back: this one was lost".into(),
                        })
                    };
                }
                Some(Err(e)) => {
                    return Err(WorkloadError::Verify {
                        expected: e.expected,
                        detail: e.fault.to_string(),
                    })
                }
                None => {}
            }
            match self.mode {
                WaitMode::Polling => {
                    // As the spin-pingpong peer does: spin, but yield the core now and
                    // then, so netback's threads are not starved on a 2-core machine.
                    spins = spins.wrapping_add(1);
                    if spins & (SPINS_BEFORE_YIELD - 1) != 0 {
                        std::hint::spin_loop();
                        continue;
                    }
                    std::thread::yield_now();
                }
                WaitMode::EventDriven => {
                    self.q.wait_rx(Some(WAIT_SLICE));
                }
            }
            if start.elapsed() > ANSWER_TIMEOUT {
                return Err(WorkloadError::Stalled {
                    side: "pvnet reflector round trip",
                    grace_s: ANSWER_TIMEOUT.as_secs_f64(),
                });
            }
        }
    }
}
