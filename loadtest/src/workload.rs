//! The [`Workload`] trait every measured data path implements, and the [`Registry`]
//! the run is planned from.
//!
//! Adding the pvnet scenarios means implementing [`Workload`] with
//! [`Role::Subject`] and registering it (see [`crate::pvnet`]); the planner, the
//! ratios to the limit and peers, and every report then pick it up unchanged.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::cell::CellConfig;
use crate::control::Control;
use crate::latency::WaitMode;
use crate::measurement::Measurement;

/// What a series is for in the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// An upper bound measured on this machine (e.g. plain memcpy).
    Limit,
    /// Another implementation of the same job, for comparison.
    Peer,
    /// What is being measured: the pvnet data path.
    Subject,
}

impl Role {
    /// Limits and peers are the references subject cells are divided by.
    pub fn is_reference(self) -> bool {
        matches!(self, Role::Limit | Role::Peer)
    }
}

/// The kind of number a workload produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "mode")]
pub enum Kind {
    /// Frames per second and bits per second, as fast as the path goes.
    Throughput,
    /// Round trips of one frame at a time, in the given waiting mode.
    Latency(WaitMode),
}

/// Which matrix axes a workload's cells vary over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Axes {
    /// Every frame size × direction × queue-pair count.
    Full,
    /// Every frame size; no direction, one queue (limits and peers).
    SizesOnly,
    /// Only the smallest frame size; no direction, one queue (latency peers).
    SmallestSize,
}

/// Why a cell cannot be measured (shown in the report instead of numbers).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unsupported(pub String);

impl Unsupported {
    /// An unsupported-cell reason.
    pub fn new(reason: impl Into<String>) -> Self {
        Unsupported(reason.into())
    }
}

/// A measurement that failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// The receiver saw a frame that is not the one sent (lost, duplicated, reordered
    /// or corrupted data).
    #[error("frame {expected} failed verification: {detail}")]
    Verify {
        /// Sequence number the receiver expected.
        expected: u64,
        /// What was wrong.
        detail: String,
    },
    /// Sender and receiver disagree on how many frames crossed.
    #[error("sent {sent} frames but {received} were received")]
    Count {
        /// Frames the sender pushed.
        sent: u64,
        /// Frames the receiver verified.
        received: u64,
    },
    /// A side stopped making progress long after the window closed.
    #[error("{side} stalled: no progress {grace_s:.1}s after the window closed")]
    Stalled {
        /// Which side was waiting.
        side: &'static str,
        /// How long past the window it waited.
        grace_s: f64,
    },
    /// A worker thread panicked.
    #[error("worker thread '{0}' panicked")]
    WorkerPanicked(&'static str),
    /// Setting the cell up failed (allocation, rings, event channels, …).
    #[error("setup failed: {0}")]
    Setup(String),
    /// An OS call failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// One measurable data path.
pub trait Workload: Send + Sync {
    /// The series name used in tables, the plot legend and ratio columns (unique).
    fn name(&self) -> &str;

    /// One line saying what is measured and how.
    fn describe(&self) -> &str;

    /// What the series is for.
    fn role(&self) -> Role;

    /// Throughput or latency.
    fn kind(&self) -> Kind {
        Kind::Throughput
    }

    /// Which matrix axes the workload's cells vary over.
    fn axes(&self) -> Axes {
        Axes::Full
    }

    /// Whether `cell` can be measured; the reason is shown when it cannot.
    fn check(&self, cell: &CellConfig) -> Result<(), Unsupported> {
        let _ = cell;
        Ok(())
    }

    /// Time one cell spends outside its measurement window (set-up, drain, teardown),
    /// so the automatic per-cell window can leave room for it within the budget.
    fn setup_cost(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// Measures one cell. Call [`Control::begin`] when set-up is done and the window
    /// opens; stop once [`Control::should_stop`] turns true; verify what was received.
    fn run(&self, cell: &CellConfig, ctl: &Control) -> Result<Measurement, WorkloadError>;
}

/// The workloads of a run, in registration (= report) order.
#[derive(Default)]
pub struct Registry {
    workloads: Vec<Box<dyn Workload>>,
}

/// Registering two workloads with the same name would make the report ambiguous.
#[derive(Debug, thiserror::Error)]
#[error("a workload named '{0}' is already registered")]
pub struct DuplicateWorkload(pub String);

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// The limit, the peers and the latency peers, plus whatever pvnet registers.
    pub fn standard() -> Self {
        let mut r = Registry::new();
        for w in crate::peers::all() {
            r.workloads.push(w);
        }
        crate::pvnet::register(&mut r);
        r
    }

    /// Adds a workload.
    pub fn register(&mut self, w: Box<dyn Workload>) -> Result<(), DuplicateWorkload> {
        if self.get(w.name()).is_some() {
            return Err(DuplicateWorkload(w.name().to_owned()));
        }
        self.workloads.push(w);
        Ok(())
    }

    /// The workload named `name`.
    pub fn get(&self, name: &str) -> Option<&dyn Workload> {
        self.workloads
            .iter()
            .find(|w| w.name() == name)
            .map(|w| w.as_ref())
    }

    /// All workloads in order.
    pub fn iter(&self) -> impl Iterator<Item = &dyn Workload> {
        self.workloads.iter().map(|w| w.as_ref())
    }

    /// The workload at `index` (as stored in a [`crate::runner::Plan`]).
    pub fn at(&self, index: usize) -> Option<&dyn Workload> {
        self.workloads.get(index).map(|w| w.as_ref())
    }

    /// Number of workloads.
    pub fn len(&self) -> usize {
        self.workloads.len()
    }

    /// True if nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.workloads.is_empty()
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|w| w.name()))
            .finish()
    }
}
