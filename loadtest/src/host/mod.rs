//! `loadtest host`: the pvnet data path against the host kernel (root).
//!
//! Host mode creates its own network namespace `pvnet-lt-<pid>` with a Linux bridge
//! ([`netns`]), runs the embedded hypervisor with netback serving one guest through a
//! [`netback::TapPort`] whose TAP lives in that namespace, enslaved to the bridge, and
//! connects the guest's netfront through the real xenbus handshake. Then, per frame
//! size:
//!
//! * **guest→host**: the guest sends stamped frames as fast as its TX ring takes them
//!   (the same sender as the `pvnet` series); netback writes them to the TAP and the
//!   kernel bridge drops them (their destination is nobody's). Counted: the frames the
//!   TAP accepted, from the TAP port's counters.
//! * **host→guest**: an `AF_PACKET` socket on the bridge sends stamped frames to the
//!   guest's MAC ([`inject`]); the bridge forwards them to the TAP, netback reads them
//!   and the guest receives them. Counted: the frames the guest received and verified.
//!
//! Results are [`Measurement`]s, printed as a table or as JSON. Traffic never leaves
//! the namespace; every loop is bounded by the window or a timeout; the namespace is
//! removed on every exit path, Ctrl-C included ([`signal`]).

pub mod inject;
pub mod netns;
pub mod signal;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use netback::{Port, TapPort, TapPortConfig, VifId};
use serde::{Deserialize, Serialize};

use crate::control::Control;
use crate::cpu::CpuStopwatch;
use crate::measurement::Measurement;
use crate::pvnet::guest::{self, Progress, Shared, TxPlan};
use crate::pvnet::testbed::Testbed;
use crate::pvnet::wire;

use netns::Netns;

/// The message host mode exits with when it lacks the privileges it needs.
pub const NEEDS_ROOT: &str =
    "host mode needs root (CAP_NET_ADMIN) to create a TAP and a network namespace";
/// Smallest frame host mode sends (an Ethernet header and the test stamps).
pub const MIN_HOST_FRAME: u32 = wire::MIN_PVNET_FRAME as u32;
/// Largest: the TAP's default MTU (1500) plus the Ethernet header. Larger frames would
/// need GSO, which an `AF_PACKET` sender does not produce.
pub const MAX_HOST_FRAME: u32 = 1514;
/// Longest accepted window, seconds.
pub const MAX_SECONDS: f64 = crate::app::MAX_SECONDS;
/// Bound of every wait outside a window (TAP creation, draining).
const SETUP_WAIT: Duration = Duration::from_secs(5);
/// A count unchanged this long is considered drained.
const SETTLED: Duration = Duration::from_millis(50);
/// Poll interval of the main thread during a window.
const TICK: Duration = Duration::from_millis(2);

/// Options of `loadtest host`.
#[derive(Clone, Debug, Args)]
pub struct HostArgs {
    /// Seconds per cell.
    #[arg(short, long, value_name = "SECS", default_value_t = 1.0)]
    pub duration: f64,
    /// Frame sizes in bytes, Ethernet header included (60..=1514).
    #[arg(long, value_name = "BYTES,...", value_delimiter = ',', default_values_t = [64u32, 1514])]
    pub sizes: Vec<u32>,
    /// Print the JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Errors of host mode.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// Not root.
    #[error("{NEEDS_ROOT}")]
    NotRoot,
    /// An option is out of range.
    #[error("invalid option: {0}")]
    Invalid(String),
    /// Building the namespace, the TAP, netback or the guest failed.
    #[error("setup: {0}")]
    Setup(String),
    /// A measurement failed (a worker error, a stall).
    #[error("{0}")]
    Cell(String),
    /// SIGINT or SIGTERM arrived.
    #[error("interrupted")]
    Interrupted,
}

/// Which way a host-mode cell moves frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostDirection {
    /// netfront → netback → TAP → kernel.
    GuestToHost,
    /// kernel (AF_PACKET on the bridge) → TAP → netback → netfront.
    HostToGuest,
}

impl HostDirection {
    /// Short label for the table.
    pub fn label(self) -> &'static str {
        match self {
            HostDirection::GuestToHost => "guest→host",
            HostDirection::HostToGuest => "host→guest",
        }
    }
}

/// One measured cell.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostCell {
    /// Frame size, Ethernet header included.
    pub frame_size: u32,
    /// Direction.
    pub direction: HostDirection,
    /// Frames offered by the sender in the window (the guest's sends, or the frames
    /// the AF_PACKET socket took).
    pub offered: u64,
    /// What arrived: `frames` are the frames the TAP accepted (guest→host) or the
    /// guest received and verified (host→guest) within the window.
    pub measurement: Measurement,
}

/// The result of `loadtest host`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostReport {
    /// The namespace the run used (gone by the time this is printed).
    pub namespace: String,
    /// The bridge in it.
    pub bridge: String,
    /// The guest's TAP.
    pub tap: String,
    /// Window per cell, seconds.
    pub cell_duration_s: f64,
    /// The cells, size by size, guest→host before host→guest.
    pub cells: Vec<HostCell>,
}

/// Checks option ranges clap cannot express.
pub fn validate(a: &HostArgs) -> Result<(), HostError> {
    if !(a.duration.is_finite() && a.duration > 0.0 && a.duration <= MAX_SECONDS) {
        return Err(HostError::Invalid(format!(
            "--duration {}: must be > 0 and ≤ {MAX_SECONDS} seconds",
            a.duration
        )));
    }
    if a.sizes.is_empty() {
        return Err(HostError::Invalid("--sizes: give at least one size".into()));
    }
    if let Some(s) = a
        .sizes
        .iter()
        .find(|&&s| !(MIN_HOST_FRAME..=MAX_HOST_FRAME).contains(&s))
    {
        return Err(HostError::Invalid(format!(
            "--sizes {s}: host-mode frames must be {MIN_HOST_FRAME}..={MAX_HOST_FRAME} bytes"
        )));
    }
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn check_interrupt() -> Result<(), HostError> {
    if signal::interrupted() {
        Err(HostError::Interrupted)
    } else {
        Ok(())
    }
}

/// Polls `value` until it stays the same for [`SETTLED`] (at most [`SETUP_WAIT`]).
fn settle(mut value: impl FnMut() -> u64) -> u64 {
    let deadline = Instant::now() + SETUP_WAIT;
    let mut last = value();
    let mut since = Instant::now();
    while Instant::now() < deadline && !signal::interrupted() {
        std::thread::sleep(Duration::from_millis(5));
        let v = value();
        if v != last {
            last = v;
            since = Instant::now();
        } else if since.elapsed() >= SETTLED {
            break;
        }
    }
    last
}

/// Everything one run owns. Field order is drop order: the guest and netback go
/// first (removing the TAP), then the port, then the namespace.
struct Session {
    testbed: Option<Testbed>,
    port: Arc<TapPort>,
    vif: VifId,
    ns: Netns,
}

impl Session {
    fn start() -> Result<Session, HostError> {
        let ns = Netns::create(&format!("pvnet-lt-{}", std::process::id()))?;
        let port = Arc::new(TapPort::new(TapPortConfig {
            bridge: Some(netns::BRIDGE.into()),
            netns: Some(ns.path()),
            ..TapPortConfig::default()
        }));
        let dyn_port: Arc<dyn Port> = port.clone();
        let testbed = Testbed::new(dyn_port, 1, 1).map_err(|e| HostError::Setup(e.to_string()))?;
        let domid = testbed
            .guests
            .first()
            .map(|g| g.domid)
            .ok_or_else(|| HostError::Setup("no guest".into()))?;
        let vif = VifId { domid, devid: 0 };
        let s = Session {
            testbed: Some(testbed),
            port,
            vif,
            ns,
        };
        let deadline = Instant::now() + SETUP_WAIT;
        while s.port.tap_name(vif).is_none() {
            check_interrupt()?;
            if Instant::now() >= deadline {
                return Err(HostError::Setup(format!(
                    "{vif} has no TAP: {}",
                    s.port.failure(vif).unwrap_or_else(|| "timed out".into())
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(s)
    }

    fn tap_counts(&self) -> (u64, u64) {
        self.port
            .stats(self.vif)
            .map(|s| {
                (
                    s.to_host_frames,
                    s.to_host_dropped + s.to_host_rejected + s.to_host_bad_offload,
                )
            })
            .unwrap_or_default()
    }

    /// guest → host for `len`-byte frames.
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
        let (frames0, drops0) = self.tap_counts();
        let ctl = Control::new(window);
        let (shared, progress) = (Shared::default(), Progress::default());
        let port = self.port.clone();
        let vif = self.vif;
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
                let at_end = port.stats(vif).unwrap_or_default();
                let r = worker
                    .join()
                    .map_err(|_| HostError::Cell("the guest sender panicked".into()));
                (r, elapsed, at_end)
            })
        });
        check_interrupt()?;
        let worker = result?.map_err(|e| HostError::Cell(e.to_string()))?;
        let frames = at_end.to_host_frames.saturating_sub(frames0);
        let drops = (at_end.to_host_dropped + at_end.to_host_rejected + at_end.to_host_bad_offload)
            .saturating_sub(drops0);
        // Let netback finish the ring before the next cell, so its frames are not
        // counted there.
        settle(|| {
            let (f, d) = self.tap_counts();
            f + d
        });
        let mut m = Measurement::frames(frames, len, elapsed);
        m.drops = drops;
        m.add_cpu("guest", worker.cpu);
        Ok(HostCell {
            frame_size: len,
            direction: HostDirection::GuestToHost,
            offered: worker.sent,
            measurement: m,
        })
    }

    /// host → guest for `len`-byte frames.
    fn host_to_guest(&mut self, len: u32, window: Duration) -> Result<HostCell, HostError> {
        let ctl = Control::new(window);
        let received = AtomicU64::new(0);
        let done = AtomicBool::new(false);
        let path = self.ns.path();
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
                let rx = s.spawn(|| receive(q, len as usize, mac, &received, &done));
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
            offered: sent,
            measurement: m,
        })
    }

    /// Orderly teardown: the guest closes its vif, netback stops (the TAP goes), then
    /// the namespace is deleted.
    fn close(mut self) {
        if let Some(tb) = self.testbed.take() {
            tb.close();
        }
    }
}

/// The guest's receive loop for host→guest cells: verifies frames of `len` bytes to
/// `mac` (stamp order per flow); anything else the kernel sends (none is expected, the
/// namespace has no addresses) is skipped, not counted. Returns the frames verified
/// and the thread's CPU time once `done` is raised.
fn receive<C: hv::env::EventChannel>(
    q: &mut netfront::Queue<C>,
    len: usize,
    mac: [u8; 6],
    received: &AtomicU64,
    done: &AtomicBool,
) -> Result<(u64, crate::cpu::CpuTime), HostError> {
    let cpu = CpuStopwatch::start();
    let mut check = wire::FlowCheck::new(len, 1);
    loop {
        let mut n = 0;
        while n < 256 {
            let r = q.recv_with(|f, meta| {
                let ours = f.len() == len
                    && f.segments().next().and_then(|s| s.get(..6)) == Some(&mac[..]);
                if !ours {
                    return Ok(false);
                }
                check
                    .check_segments(f.len(), f.segments(), meta.gso.is_some())
                    .map(|()| true)
            });
            match r {
                None => break,
                Some(Ok(true)) => n += 1,
                Some(Ok(false)) => {}
                Some(Err(e)) => {
                    return Err(HostError::Cell(format!(
                        "host→guest frame failed verification (expected seq {}): {}",
                        e.expected, e.fault
                    )))
                }
            }
        }
        if n > 0 {
            received.store(check.frames, Ordering::Release);
            continue;
        }
        if done.load(Ordering::Acquire) {
            return Ok((check.frames, cpu.stop()));
        }
        q.wait_rx(Some(guest::IDLE_WAIT));
    }
}

/// Runs host mode: builds the namespace and the guest, measures every size in both
/// directions, tears everything down.
pub fn run(args: &HostArgs) -> Result<HostReport, HostError> {
    validate(args)?;
    if !is_root() {
        return Err(HostError::NotRoot);
    }
    signal::install();
    let mut sizes = args.sizes.clone();
    sizes.sort_unstable();
    sizes.dedup();
    let window = Duration::from_secs_f64(args.duration);
    let mut session = Session::start()?;
    let mut report = HostReport {
        namespace: session.ns.name().to_owned(),
        bridge: netns::BRIDGE.to_owned(),
        tap: session.port.tap_name(session.vif).unwrap_or_default(),
        cell_duration_s: window.as_secs_f64(),
        cells: Vec::with_capacity(sizes.len() * 2),
    };
    for &len in &sizes {
        report.cells.push(session.guest_to_host(len, window)?);
        report.cells.push(session.host_to_guest(len, window)?);
    }
    session.close();
    Ok(report)
}

/// The report as a plain table.
pub fn render(r: &HostReport) -> String {
    let mut out = format!(
        "host mode: namespace {} (removed), bridge {}, TAP {}, {:.2} s per cell\n\n",
        r.namespace, r.bridge, r.tap, r.cell_duration_s
    );
    out.push_str(&format!(
        "{:>6}  {:<11}  {:>12}  {:>12}  {:>9}  {:>9}  {:>10}\n",
        "size", "direction", "offered", "frames", "Mpps", "Gbps", "drops"
    ));
    for c in &r.cells {
        let m = &c.measurement;
        out.push_str(&format!(
            "{:>6}  {:<11}  {:>12}  {:>12}  {:>9.3}  {:>9.3}  {:>10}\n",
            c.frame_size,
            c.direction.label(),
            c.offered,
            m.frames,
            m.mpps(),
            m.gbps(),
            m.drops
        ));
    }
    out
}

/// `loadtest host`: runs and prints; returns the exit status (2 for usage and
/// privilege errors, 1 for a failed run, 130 after Ctrl-C).
pub fn main(args: &HostArgs) -> i32 {
    match run(args) {
        Ok(r) => {
            if args.json {
                match serde_json::to_string_pretty(&r) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("loadtest host: {e}");
                        return 1;
                    }
                }
            } else {
                print!("{}", render(&r));
            }
            0
        }
        Err(e) => {
            eprintln!("loadtest host: {e}");
            match e {
                HostError::NotRoot | HostError::Invalid(_) => 2,
                HostError::Interrupted => 130,
                _ => 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(duration: f64, sizes: &[u32]) -> HostArgs {
        HostArgs {
            duration,
            sizes: sizes.to_vec(),
            json: false,
        }
    }

    #[test]
    fn options_are_range_checked() {
        assert!(validate(&args(0.3, &[64, 1514])).is_ok());
        assert!(validate(&args(0.0, &[64])).is_err());
        assert!(validate(&args(f64::NAN, &[64])).is_err());
        assert!(validate(&args(1.0, &[])).is_err());
        assert!(validate(&args(1.0, &[59])).is_err());
        assert!(validate(&args(1.0, &[1515])).is_err());
    }

    #[test]
    fn table_shows_rates_per_cell() {
        let r = HostReport {
            namespace: "pvnet-lt-1".into(),
            bridge: netns::BRIDGE.into(),
            tap: "vif1.0".into(),
            cell_duration_s: 1.0,
            cells: vec![HostCell {
                frame_size: 64,
                direction: HostDirection::HostToGuest,
                offered: 3_000_000,
                measurement: Measurement::frames(2_000_000, 64, Duration::from_secs(2)),
            }],
        };
        let t = render(&r);
        assert!(t.contains("host→guest"), "{t}");
        assert!(t.contains("1.000"), "1 Mpps: {t}");
        assert!(t.contains("0.512"), "0.512 Gbps: {t}");
    }
}
