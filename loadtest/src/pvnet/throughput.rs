//! The pvnet throughput cells: one workload over frame size × direction × queue pairs.
//!
//! | direction    | guests | netback port                       | guest threads (per queue) |
//! |--------------|--------|------------------------------------|---------------------------|
//! | guest→dom0   | 1      | [`LoadPort`] verifying sink        | sender                    |
//! | dom0→guest   | 1      | [`LoadPort`] sequenced source      | receiver                  |
//! | guest⇄dom0   | 1      | [`LoadPort`] sink and source       | one thread sending and receiving |
//! | guest⇄guest  | 2      | netback's learning [`Switch`]      | sender in A, receiver in B |
//!
//! netback adds a TX and an RX thread per queue of every vif. With 2 queue pairs that is
//! twice the threads on the same cores: on a 2-core machine the queues time-share the
//! cores instead of scaling, and the CPU columns show it.
//!
//! A cell runs until its window closes, then the senders stop and the cell waits until
//! every frame sent was either received and verified or is accounted for by a drop
//! counter (netback's `tx_drops` / `rx_drops`, the switch's filtered frames, netfront's
//! RX drops and errors). Anything else — a frame seen twice, out of order, torn, or
//! frames unaccounted for — fails the cell. The rates count verified frames over the
//! window plus that drain.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hv::embedded::EmbeddedChannel;
use netback::{Port, Switch};
use netfront::Queue;

use super::guest::{self, Progress, Shared, TxPlan, WorkerResult};
use super::port::LoadPort;
use super::testbed::{sum, Testbed};
use super::threads::ThreadSet;
use super::wire::{self, FrameSpec};
use crate::cell::{CellConfig, Direction};
use crate::control::Control;
use crate::cpu::CpuTime;
use crate::measurement::Measurement;
use crate::peers::join;
use crate::workload::{Axes, Role, Unsupported, Workload, WorkloadError};

/// How often the cell looks at the counts while waiting.
const POLL: Duration = Duration::from_millis(1);

/// See the module documentation.
pub struct PvnetThroughput;

/// Why a cell cannot run, if it cannot (shared with the latency workloads).
pub fn frame_support(frame_size: u32) -> Result<(), Unsupported> {
    let n = frame_size as usize;
    if n < wire::MIN_PVNET_FRAME {
        return Err(Unsupported::new(format!(
            "{n} B is below ETH_ZLEN ({}): a pvnet test frame carries Ethernet, IPv4 and \
             UDP headers and two 8-byte stamps",
            wire::MIN_PVNET_FRAME
        )));
    }
    if n > wire::MAX_PVNET_FRAME {
        return Err(Unsupported::new(format!(
            "{n} B exceeds XEN_NETIF_MAX_TX_SIZE ({}): netif_tx_request.size is 16-bit, so \
             one netif packet carries at most 65535 bytes (run 65535 for the largest GSO frame)",
            wire::MAX_PVNET_FRAME
        )));
    }
    Ok(())
}

impl Workload for PvnetThroughput {
    fn name(&self) -> &str {
        super::PVNET
    }

    fn describe(&self) -> &str {
        "netfront ⇄ netback on the embedded hypervisor, real xenbus handshake; guest threads \
         build frames in granted pages and verify them in place, netback grant-copies; \
         frames > 9018 B are TCPv4 GSO (MSS 1448); event channels with netback's spin-then-sleep"
    }

    fn role(&self) -> Role {
        Role::Subject
    }

    fn axes(&self) -> Axes {
        Axes::Full
    }

    fn check(&self, cell: &CellConfig) -> Result<(), Unsupported> {
        frame_support(cell.frame_size)?;
        if cell.direction.is_none() {
            return Err(Unsupported::new("a pvnet cell needs a direction"));
        }
        if cell.queues == 0 || usize::from(cell.queues) > wire::MAX_FLOWS {
            return Err(Unsupported::new(format!(
                "{} queue pairs: pvnet cells run 1..={}",
                cell.queues,
                wire::MAX_FLOWS
            )));
        }
        Ok(())
    }

    fn setup_cost(&self) -> Duration {
        super::SETUP_COST
    }

    fn run(&self, cell: &CellConfig, ctl: &Control) -> Result<Measurement, WorkloadError> {
        self.check(cell)
            .map_err(|u| WorkloadError::Setup(u.to_string()))?;
        match cell.direction {
            Some(Direction::GuestToGuest) => guest_to_guest(cell, ctl),
            Some(d) => with_dom0(cell, d, ctl),
            None => Err(WorkloadError::Setup("no direction".into())),
        }
    }
}

/// Frames that crossed one way, as the cell accounts for them.
#[derive(Default, Clone, Copy, Debug)]
struct Flow {
    sent: u64,
    received: u64,
    lost: u64,
}

impl Flow {
    fn settled(&self) -> bool {
        self.received + self.lost >= self.sent
    }
}

/// Waits until every flow is settled (or the cell failed, or the drain is overdue).
fn drain(
    ctl: &Control,
    shared: &Shared,
    mut flows: impl FnMut() -> Result<Vec<Flow>, WorkloadError>,
) -> Result<Vec<Flow>, WorkloadError> {
    loop {
        let f = flows()?;
        if shared.failed.load(Ordering::Acquire) || f.iter().all(Flow::settled) {
            return Ok(f);
        }
        if ctl.overdue() {
            let missing: u64 = f
                .iter()
                .map(|x| x.sent.saturating_sub(x.received + x.lost))
                .sum();
            log::warn!("loadtest: pvnet drain stalled, {missing} frame(s) unaccounted for: {f:?}");
            return Err(WorkloadError::Stalled {
                side: "pvnet receiver (frames neither delivered nor counted as dropped)",
                grace_s: ctl.duration().as_secs_f64(),
            });
        }
        std::thread::sleep(POLL);
    }
}

/// Every frame sent must be received or counted lost, exactly.
fn reconcile(flows: &[Flow]) -> Result<(), WorkloadError> {
    for f in flows {
        if f.received + f.lost != f.sent {
            return Err(WorkloadError::Count {
                sent: f.sent,
                received: f.received + f.lost,
            });
        }
    }
    Ok(())
}

/// What a guest queue's thread does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Work {
    Send,
    Receive,
    Both,
}

/// One guest queue's thread.
struct Job<'a> {
    q: &'a mut Queue<EmbeddedChannel>,
    work: Work,
    /// The frame it sends (empty for a receiver).
    template: &'a [u8],
    /// Its flow id (the sending queue's index).
    flow: u16,
    /// Flows its receiver may see.
    flows: usize,
    /// CPU side it is reported under.
    side: &'static str,
}

/// What the workers of a cell did.
struct Run {
    /// Frames sent before the window opened (netback's generator starts filling the
    /// guest's RX ring as soon as the vif connects): received, verified and accounted
    /// like the rest, but not counted in the rates.
    early: u64,
    flows: Result<Vec<Flow>, WorkloadError>,
    elapsed: Duration,
    dom0_cpu: CpuTime,
    dom0_threads: usize,
    workers: Vec<(&'static str, WorkerResult)>,
}

/// Runs one thread per job, opens the window when all are ready, waits for the window
/// and the drain; `account(progress)` says where each direction stands (frames sent,
/// received, counted lost), or that Dom0's side failed.
fn run_jobs(
    ctl: &Control,
    jobs: Vec<Job<'_>>,
    dom0_threads: &[i32],
    before_window: impl FnOnce() -> u64,
    account: impl Fn(&[Progress]) -> Result<Vec<Flow>, WorkloadError>,
) -> Result<Run, WorkloadError> {
    let progress: Vec<Progress> = jobs.iter().map(|_| Progress::default()).collect();
    let shared = Shared::default();
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        let mut sends = Vec::new();
        let mut spawn_error = None;
        for (job, p) in jobs.into_iter().zip(&progress) {
            let shared = &shared;
            sends.push(job.work != Work::Receive);
            let side = job.side;
            let name = format!("{side}-q{}", job.q.index());
            let h = std::thread::Builder::new()
                .name(name)
                .spawn_scoped(s, move || {
                    let plan = TxPlan {
                        template: job.template,
                        flow: job.flow,
                    };
                    let len = job.template.len();
                    shared.wait_start();
                    if shared.failed.load(Ordering::Acquire) {
                        return Err(WorkloadError::Setup(
                            "another guest thread failed to start".into(),
                        ));
                    }
                    match job.work {
                        Work::Send => guest::sender(job.q, &plan, ctl, shared, p),
                        Work::Both => guest::both(job.q, &plan, job.flows, ctl, shared, p),
                        Work::Receive => guest::receiver(job.q, len, job.flows, ctl, shared, p),
                    }
                });
            match h {
                Ok(h) => handles.push((side, h)),
                Err(e) => {
                    shared.fail(ctl);
                    spawn_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = spawn_error {
            // shared.fail() released the threads that did start.
            return Err(WorkloadError::Io(e));
        }
        let start = ctl.begin();
        let early = before_window();
        shared.start();
        let dom0 = ThreadSet::start(dom0_threads);
        wait_senders(ctl, &shared, &progress, &sends);
        let flows = drain(ctl, &shared, || account(&progress));
        let elapsed = start.elapsed();
        let dom0_cpu = dom0.elapsed();
        shared.done.store(true, Ordering::Release);
        let mut workers = Vec::new();
        let mut first_err = None;
        for (side, h) in handles {
            match join(h, "pvnet guest queue").and_then(|r| r) {
                Ok(r) => workers.push((side, r)),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        Ok(Run {
            early,
            flows,
            elapsed,
            dom0_cpu,
            dom0_threads: dom0.len(),
            workers,
        })
    })
}

/// Waits for the window to close, then for every sender to publish its final count.
fn wait_senders(ctl: &Control, shared: &Shared, progress: &[Progress], senders: &[bool]) {
    while !ctl.should_stop() {
        std::thread::sleep(POLL);
    }
    loop {
        let all = progress
            .iter()
            .zip(senders)
            .all(|(p, &s)| !s || p.sent_final.load(Ordering::Acquire));
        if all || shared.failed.load(Ordering::Acquire) || ctl.overdue() {
            return;
        }
        std::thread::sleep(POLL);
    }
}

/// The unstamped frames of `nq` flows from `src` to `dst`.
fn templates(
    len: usize,
    nq: u16,
    src: [u8; 6],
    dst: [u8; 6],
) -> Result<Vec<Vec<u8>>, WorkloadError> {
    (0..nq)
        .map(|q| {
            wire::template(&FrameSpec {
                len,
                dst,
                src,
                flow: q,
                spread_over: nq,
            })
            .ok_or_else(|| WorkloadError::Setup(format!("no {len}-byte test frame")))
        })
        .collect()
}

/// The measurement of a finished run: verified frames over the window and drain, drops
/// from the counters, CPU per side.
fn measurement(cell: &CellConfig, run: Run, errors: u64) -> Result<Measurement, WorkloadError> {
    let flows = run.flows?;
    reconcile(&flows)?;
    let delivered: u64 = flows.iter().map(|f| f.received).sum();
    let in_window = delivered.saturating_sub(run.early);
    let mut m = Measurement::frames(in_window, cell.frame_size, run.elapsed);
    m.drops = flows.iter().map(|f| f.lost).sum();
    m.errors = errors;
    for (side, r) in &run.workers {
        m.add_cpu(side, r.cpu);
    }
    if run.dom0_threads > 0 {
        m.add_cpu("dom0", run.dom0_cpu);
        if let Some(s) = m.sides.iter_mut().find(|s| s.side == "dom0") {
            s.threads = u32::try_from(run.dom0_threads).unwrap_or(u32::MAX);
        }
    }
    Ok(m)
}

/// The Dom0 sink's first verification failure, as the cell's error.
fn sink_fault(port: &LoadPort) -> Result<(), WorkloadError> {
    match port.sink_fault() {
        None => Ok(()),
        Some(f) => Err(WorkloadError::Verify {
            expected: f.expected,
            detail: format!("Dom0 sink: {}", f.fault),
        }),
    }
}

/// guest→dom0, dom0→guest and guest⇄dom0: one guest and a [`LoadPort`].
fn with_dom0(
    cell: &CellConfig,
    dir: Direction,
    ctl: &Control,
) -> Result<Measurement, WorkloadError> {
    let len = cell.frame_size as usize;
    let nq = cell.queues;
    let tx = matches!(dir, Direction::GuestToDom0 | Direction::Bidirectional);
    let rx = matches!(dir, Direction::Dom0ToGuest | Direction::Bidirectional);
    let mac = wire::guest_mac(0);
    let port = Arc::new(
        LoadPort::new(len, nq, rx, mac)
            .ok_or_else(|| WorkloadError::Setup(format!("no {len}-byte test frame")))?,
    );
    let mut tb = Testbed::new(port.clone() as Arc<dyn Port>, 1, nq)?;
    let templates = templates(len, nq, mac, wire::DOM0_MAC)?;
    let guest = &mut tb.guests[0];
    let (domid, counters) = (guest.domid, guest.counters());
    let work = match (tx, rx) {
        (true, true) => Work::Both,
        (true, false) => Work::Send,
        _ => Work::Receive,
    };
    let jobs = guest
        .nf
        .queues_mut()
        .iter_mut()
        .zip(&templates)
        .enumerate()
        .map(|(i, (q, t))| Job {
            q,
            work,
            template: t,
            flow: i as u16,
            flows: usize::from(nq),
            side: "guest",
        })
        .collect();
    let dom0 = &tb.dom0;
    let generated = std::sync::OnceLock::new();
    let run = run_jobs(
        ctl,
        jobs,
        &dom0.threads,
        || port.generated(),
        |progress| {
            sink_fault(&port)?;
            let be = dom0.counters(domid);
            let fe = sum(&counters);
            let mut out = Vec::new();
            if tx {
                out.push(Flow {
                    sent: progress
                        .iter()
                        .map(|p| p.sent.load(Ordering::Acquire))
                        .sum(),
                    received: port.sunk(),
                    lost: be.tx_drops,
                });
            }
            if rx {
                // Called only after the senders stopped: the window is closed.
                let gen = generated.get_or_init(|| port.stop_generating().iter().sum::<u64>());
                out.push(Flow {
                    sent: *gen,
                    received: progress
                        .iter()
                        .map(|p| p.received.load(Ordering::Acquire))
                        .sum(),
                    lost: be.rx_drops + fe.rx_dropped + fe.rx_errors,
                });
            }
            Ok(out)
        },
    )?;
    sink_fault(&port)?;
    if let Some(why) = tb.dom0.disabled(domid) {
        return Err(WorkloadError::Setup(format!(
            "netback disabled the vif: {why}"
        )));
    }
    let be = tb.dom0.counters(domid);
    let fe = sum(&counters);
    let errors = be.tx_errors + be.rx_errors + fe.tx_errors + fe.rx_errors;
    tb.close();
    measurement(cell, run, errors)
}

/// guest⇄guest: guest A sends to guest B's MAC through netback's learning switch.
fn guest_to_guest(cell: &CellConfig, ctl: &Control) -> Result<Measurement, WorkloadError> {
    let len = cell.frame_size as usize;
    let nq = cell.queues;
    let switch = Switch::new();
    let mut tb = Testbed::new(switch.clone() as Arc<dyn Port>, 2, nq)?;
    let (a, b) = tb.guests.split_at_mut(1);
    let (a, b) = (&mut a[0], &mut b[0]);
    let templates = templates(len, nq, a.mac, b.mac)?;
    let (a_dom, b_dom) = (a.domid, b.domid);
    let (a_counters, b_counters) = (a.counters(), b.counters());
    let filtered_before = switch.stats().filtered;
    let mut jobs: Vec<Job<'_>> =
        a.nf.queues_mut()
            .iter_mut()
            .zip(&templates)
            .enumerate()
            .map(|(i, (q, t))| Job {
                q,
                work: Work::Send,
                template: t,
                flow: i as u16,
                flows: usize::from(nq),
                side: "guest-tx",
            })
            .collect();
    jobs.extend(b.nf.queues_mut().iter_mut().map(|q| Job {
        q,
        work: Work::Receive,
        template: &templates[0],
        flow: 0,
        flows: usize::from(nq),
        side: "guest-rx",
    }));
    let dom0 = &tb.dom0;
    let run = run_jobs(
        ctl,
        jobs,
        &dom0.threads,
        || 0,
        |progress| {
            let (be_a, be_b) = (dom0.counters(a_dom), dom0.counters(b_dom));
            let fe_b = sum(&b_counters);
            let (tx, rx) = progress.split_at(usize::from(nq));
            Ok(vec![Flow {
                sent: tx.iter().map(|p| p.sent.load(Ordering::Acquire)).sum(),
                received: rx.iter().map(|p| p.received.load(Ordering::Acquire)).sum(),
                lost: be_a.tx_drops
                    + be_b.rx_drops
                    + fe_b.rx_dropped
                    + fe_b.rx_errors
                    + (switch.stats().filtered - filtered_before),
            }])
        },
    )?;
    for d in [a_dom, b_dom] {
        if let Some(why) = tb.dom0.disabled(d) {
            return Err(WorkloadError::Setup(format!(
                "netback disabled domain {d}'s vif: {why}"
            )));
        }
    }
    let (be_a, be_b) = (tb.dom0.counters(a_dom), tb.dom0.counters(b_dom));
    let (fe_a, fe_b) = (sum(&a_counters), sum(&b_counters));
    let errors = be_a.tx_errors + be_b.rx_errors + fe_a.tx_errors + fe_b.rx_errors;
    tb.close();
    measurement(cell, run, errors)
}
