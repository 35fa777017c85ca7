//! `loadtest host`: the pvnet data path against the host kernel (root).
//!
//! Host mode creates its own network namespace `pvnet-lt-<pid>` with a Linux bridge
//! ([`netns`]), runs a hypervisor with netback serving one guest through a
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
//! The guest runs in one of two ways (`--guest`):
//!
//! * **embedded** (default, [`embedded`]): hypervisor, netback and the guest's netfront
//!   in the loadtest process, the guest a thread;
//! * **daemon** ([`daemon`]): loadtest runs the hv daemon's server with netback and the
//!   TAP port (what `hv serve --bridge` runs), and the guest is a separate process —
//!   loadtest itself re-executed as `loadtest __host-guest` ([`guest_proc`]) — that
//!   connected to the daemon's socket. It runs the same sender and receiver and reports
//!   its counts back ([`proto`] on its stdio, [`board`] for mid-window counts);
//! * **both**: per frame size, an embedded session then a daemon session, and the
//!   ratio daemon/embedded per cell.
//!
//! Results are [`Measurement`]s, printed as a table or as JSON. Traffic never leaves
//! the namespace; every loop is bounded by the window or a timeout; the namespace (and
//! in daemon mode the guest process and the socket) is removed on every exit path,
//! Ctrl-C included ([`signal`]).

pub mod board;
pub mod child;
pub mod daemon;
pub mod embedded;
pub mod guest_proc;
pub mod inject;
pub mod netns;
pub mod proto;
pub mod rx;
pub mod signal;
pub mod vif;

use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::measurement::Measurement;
use crate::pvnet::wire;

use daemon::DaemonSession;
use embedded::EmbeddedSession;
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

/// How the guest runs (`--guest`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GuestMode {
    /// A thread of loadtest, on the embedded hypervisor.
    #[default]
    Embedded,
    /// A separate process served by the hv daemon (run inside loadtest).
    Daemon,
    /// Both, size by size, with the ratio daemon/embedded per cell.
    Both,
}

/// How the guest of one cell ran.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GuestKind {
    /// A thread of loadtest, on the embedded hypervisor.
    #[default]
    Embedded,
    /// A separate process served by the hv daemon.
    Daemon,
}

impl GuestKind {
    /// Label for the table.
    pub fn label(self) -> &'static str {
        match self {
            GuestKind::Embedded => "embedded",
            GuestKind::Daemon => "daemon",
        }
    }
}

/// Options of `loadtest host`.
#[derive(Clone, Debug, Args)]
pub struct HostArgs {
    /// Seconds per cell.
    #[arg(short, long, value_name = "SECS", default_value_t = 1.0)]
    pub duration: f64,
    /// Frame sizes in bytes, Ethernet header included (60..=1514).
    #[arg(long, value_name = "BYTES,...", value_delimiter = ',', default_values_t = [64u32, 1514])]
    pub sizes: Vec<u32>,
    /// How the guest runs: `embedded` (a thread on the in-process hypervisor),
    /// `daemon` (a separate process connected to an hv daemon that loadtest runs with
    /// netback and the TAP, as `hv serve --bridge` does), or `both` (each size in both
    /// modes, with the ratio daemon/embedded).
    #[arg(long, value_enum, value_name = "MODE", default_value_t = GuestMode::Embedded)]
    pub guest: GuestMode,
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
    /// The guest process (daemon mode) could not be started.
    #[error("the guest process failed to start: {0}")]
    GuestStart(String),
    /// The guest process (daemon mode) exited before it was told to.
    #[error("the guest process exited early ({status}); its stderr ends with:\n{stderr}")]
    GuestExited {
        /// Its exit status.
        status: String,
        /// The last lines of its stderr.
        stderr: String,
    },
    /// The guest process (daemon mode) did not answer in time.
    #[error("the guest process did not answer `{waiting_for}` within {secs:.1} s; its stderr ends with:\n{stderr}")]
    GuestTimeout {
        /// The reply waited for.
        waiting_for: String,
        /// The bound, seconds.
        secs: f64,
        /// The last lines of its stderr.
        stderr: String,
    },
    /// The guest process (daemon mode) reported a failure.
    #[error("the guest process reported: {0}")]
    Guest(String),
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
    /// How the guest ran (documents from before daemon mode: embedded).
    #[serde(default)]
    pub guest: GuestKind,
    /// Frames offered by the sender in the window (the guest's sends, or the frames
    /// the AF_PACKET socket took).
    pub offered: u64,
    /// What arrived: `frames` are the frames the TAP accepted (guest→host) or the
    /// guest received and verified (host→guest) within the window.
    pub measurement: Measurement,
}

/// Daemon against embedded for one size and direction (`--guest both`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostRatio {
    /// Frame size.
    pub frame_size: u32,
    /// Direction.
    pub direction: HostDirection,
    /// Frames per second, embedded guest.
    pub embedded_mpps: f64,
    /// Frames per second, daemon guest.
    pub daemon_mpps: f64,
    /// `daemon_mpps / embedded_mpps` (0 if embedded moved nothing).
    pub daemon_over_embedded: f64,
}

/// The result of `loadtest host`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostReport {
    /// The namespace the run used (gone by the time this is printed).
    pub namespace: String,
    /// The bridge in it.
    pub bridge: String,
    /// The guest's TAP (of the first session).
    pub tap: String,
    /// How the guest ran (`--guest`).
    #[serde(default)]
    pub guest: GuestMode,
    /// Window per cell, seconds.
    pub cell_duration_s: f64,
    /// The cells, size by size, guest→host before host→guest (with `both`, embedded
    /// before daemon).
    pub cells: Vec<HostCell>,
    /// With `--guest both`: daemon/embedded per size and direction.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ratios: Vec<HostRatio>,
}

/// What a session measures with: one guest behind one TAP, embedded or a process.
pub trait HostSession {
    /// The guest's TAP.
    fn tap(&self) -> &str;
    /// guest → host for `len`-byte frames.
    fn guest_to_host(&mut self, len: u32, window: Duration) -> Result<HostCell, HostError>;
    /// host → guest for `len`-byte frames.
    fn host_to_guest(&mut self, len: u32, window: Duration) -> Result<HostCell, HostError>;
    /// Orderly teardown (dropping instead tears down too, less politely).
    fn close(self: Box<Self>);
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

/// Starts a session of `kind` in `ns`.
fn start(kind: GuestKind, ns: &Netns) -> Result<Box<dyn HostSession>, HostError> {
    Ok(match kind {
        GuestKind::Embedded => Box::new(EmbeddedSession::start(ns)?),
        GuestKind::Daemon => Box::new(DaemonSession::start(ns)?),
    })
}

/// One session of `kind`: every size in `sizes`, both directions, appended to
/// `cells`; returns the session's TAP.
fn measure(
    kind: GuestKind,
    ns: &Netns,
    sizes: &[u32],
    window: Duration,
    cells: &mut Vec<HostCell>,
) -> Result<String, HostError> {
    let mut session = start(kind, ns)?;
    for &len in sizes {
        cells.push(session.guest_to_host(len, window)?);
        cells.push(session.host_to_guest(len, window)?);
    }
    let tap = session.tap().to_owned();
    session.close();
    Ok(tap)
}

/// daemon/embedded for every size and direction measured both ways.
pub fn ratios(cells: &[HostCell]) -> Vec<HostRatio> {
    let find = |kind, c: &HostCell| {
        cells
            .iter()
            .find(|o| o.guest == kind && o.frame_size == c.frame_size && o.direction == c.direction)
    };
    cells
        .iter()
        .filter(|c| c.guest == GuestKind::Embedded)
        .filter_map(|e| {
            let d = find(GuestKind::Daemon, e)?;
            let (em, dm) = (e.measurement.mpps(), d.measurement.mpps());
            Some(HostRatio {
                frame_size: e.frame_size,
                direction: e.direction,
                embedded_mpps: em,
                daemon_mpps: dm,
                daemon_over_embedded: if em > 0.0 { dm / em } else { 0.0 },
            })
        })
        .collect()
}

/// Runs host mode: builds the namespace and the guest(s), measures every size in both
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
    // Declared first, dropped last: every session is gone before the namespace is.
    let ns = Netns::create(&format!("pvnet-lt-{}", std::process::id()))?;
    let mut cells = Vec::with_capacity(sizes.len() * 4);
    let tap = match args.guest {
        GuestMode::Embedded => measure(GuestKind::Embedded, &ns, &sizes, window, &mut cells)?,
        GuestMode::Daemon => measure(GuestKind::Daemon, &ns, &sizes, window, &mut cells)?,
        GuestMode::Both => {
            // Size by size, so both modes of a cell run close together in time: on a
            // shared machine the load changes, and the ratio is what matters.
            let mut tap = String::new();
            for &len in &sizes {
                let t = measure(GuestKind::Embedded, &ns, &[len], window, &mut cells)?;
                measure(GuestKind::Daemon, &ns, &[len], window, &mut cells)?;
                if tap.is_empty() {
                    tap = t;
                }
            }
            tap
        }
    };
    Ok(HostReport {
        namespace: ns.name().to_owned(),
        bridge: netns::BRIDGE.to_owned(),
        tap,
        guest: args.guest,
        cell_duration_s: window.as_secs_f64(),
        ratios: ratios(&cells),
        cells,
    })
}

/// The report as a plain table.
pub fn render(r: &HostReport) -> String {
    let mut out = format!(
        "host mode: namespace {} (removed), bridge {}, TAP {}, guest {}, {:.2} s per cell\n\n",
        r.namespace,
        r.bridge,
        r.tap,
        match r.guest {
            GuestMode::Embedded => "embedded",
            GuestMode::Daemon => "daemon (separate process)",
            GuestMode::Both => "embedded and daemon",
        },
        r.cell_duration_s
    );
    out.push_str(&format!(
        "{:>6}  {:<11}  {:<8}  {:>12}  {:>12}  {:>9}  {:>9}  {:>10}\n",
        "size", "direction", "guest", "offered", "frames", "Mpps", "Gbps", "drops"
    ));
    for c in &r.cells {
        let m = &c.measurement;
        out.push_str(&format!(
            "{:>6}  {:<11}  {:<8}  {:>12}  {:>12}  {:>9.3}  {:>9.3}  {:>10}\n",
            c.frame_size,
            c.direction.label(),
            c.guest.label(),
            c.offered,
            m.frames,
            m.mpps(),
            m.gbps(),
            m.drops
        ));
    }
    if !r.ratios.is_empty() {
        out.push_str(&format!(
            "\n{:>6}  {:<11}  {:>13}  {:>11}  {:>15}\n",
            "size", "direction", "embedded Mpps", "daemon Mpps", "daemon/embedded"
        ));
        for x in &r.ratios {
            out.push_str(&format!(
                "{:>6}  {:<11}  {:>13.3}  {:>11.3}  {:>14.2}x\n",
                x.frame_size,
                x.direction.label(),
                x.embedded_mpps,
                x.daemon_mpps,
                x.daemon_over_embedded
            ));
        }
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
                // Whatever failed while stopping, Ctrl-C was the cause.
                _ if signal::interrupted() => 130,
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
            guest: GuestMode::Embedded,
            json: false,
        }
    }

    fn cell(len: u32, dir: HostDirection, guest: GuestKind, frames: u64) -> HostCell {
        HostCell {
            frame_size: len,
            direction: dir,
            guest,
            offered: 3_000_000,
            measurement: Measurement::frames(frames, len, Duration::from_secs(2)),
        }
    }

    fn report(guest: GuestMode, cells: Vec<HostCell>) -> HostReport {
        HostReport {
            namespace: "pvnet-lt-1".into(),
            bridge: netns::BRIDGE.into(),
            tap: "vif1.0".into(),
            guest,
            cell_duration_s: 1.0,
            ratios: ratios(&cells),
            cells,
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
        let r = report(
            GuestMode::Embedded,
            vec![cell(
                64,
                HostDirection::HostToGuest,
                GuestKind::Embedded,
                2_000_000,
            )],
        );
        assert!(r.ratios.is_empty(), "one mode: no ratios");
        let t = render(&r);
        assert!(t.contains("host→guest"), "{t}");
        assert!(t.contains("embedded"), "{t}");
        assert!(t.contains("1.000"), "1 Mpps: {t}");
        assert!(t.contains("0.512"), "0.512 Gbps: {t}");
        assert!(!t.contains("daemon/embedded"), "{t}");
    }

    #[test]
    fn both_modes_get_a_ratio_per_size_and_direction() {
        use GuestKind::{Daemon, Embedded};
        use HostDirection::{GuestToHost, HostToGuest};
        let r = report(
            GuestMode::Both,
            vec![
                cell(64, GuestToHost, Embedded, 2_000_000),
                cell(64, HostToGuest, Embedded, 400_000),
                cell(64, GuestToHost, Daemon, 1_000_000),
                cell(64, HostToGuest, Daemon, 600_000),
                // No embedded counterpart: no ratio.
                cell(1514, GuestToHost, Daemon, 10),
            ],
        );
        assert_eq!(r.ratios.len(), 2, "{:?}", r.ratios);
        let g2h = &r.ratios[0];
        assert_eq!((g2h.frame_size, g2h.direction), (64, GuestToHost));
        assert!((g2h.daemon_over_embedded - 0.5).abs() < 1e-9, "{g2h:?}");
        assert!((r.ratios[1].daemon_over_embedded - 1.5).abs() < 1e-9);
        let t = render(&r);
        assert!(t.contains("daemon/embedded"), "{t}");
        assert!(t.contains("0.50x") && t.contains("1.50x"), "{t}");
        // The document reads back, and an old one (no guest fields) still parses.
        let json = serde_json::to_string(&r).expect("json");
        let back: HostReport = serde_json::from_str(&json).expect("reads back");
        assert_eq!(back, r);
        let mut v: serde_json::Value = serde_json::from_str(&json).expect("value");
        v.as_object_mut().map(|o| o.remove("guest"));
        v["cells"][0].as_object_mut().map(|o| o.remove("guest"));
        let old: HostReport = serde_json::from_value(v).expect("old document");
        assert_eq!(old.guest, GuestMode::Embedded);
        assert_eq!(old.cells[0].guest, GuestKind::Embedded);
    }
}
