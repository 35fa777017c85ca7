//! Planning the matrix from the registry and running it, one cell at a time.
//!
//! Cells run one after another (never two at once: on a 2-core machine they would
//! measure each other), each bounded by its own [`Control`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cell::{CellConfig, Direction, MatrixSpec};
use crate::control::Control;
use crate::latency::LatencySummary;
use crate::measurement::Measurement;
use crate::workload::{Axes, Kind, Registry, Role, Unsupported, WorkloadError};

/// Which series to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Only {
    /// The limit and the peers (everything that is not pvnet).
    Peers,
    /// Only the pvnet series.
    Pvnet,
}

impl Only {
    fn admits(self, role: Role) -> bool {
        match self {
            Only::Peers => role.is_reference(),
            Only::Pvnet => role == Role::Subject,
        }
    }
}

/// Shortest per-cell window the automatic duration picks: below this, thread start-up
/// and frequency ramp-up dominate.
pub const MIN_AUTO_CELL: Duration = Duration::from_millis(200);
/// Longest per-cell window the automatic duration picks.
pub const MAX_AUTO_CELL: Duration = Duration::from_secs(5);

/// One cell of the plan.
#[derive(Debug)]
pub struct PlannedCell {
    /// Index of the workload in the registry.
    pub workload: usize,
    /// Time the cell spends outside its window ([`crate::Workload::setup_cost`]).
    pub setup_cost: Duration,
    /// What to measure.
    pub config: CellConfig,
    /// `Err` if the workload cannot measure this cell.
    pub support: Result<(), Unsupported>,
}

/// Every cell of a run, in order.
#[derive(Debug, Default)]
pub struct Plan {
    /// The cells.
    pub cells: Vec<PlannedCell>,
}

impl Plan {
    /// Expands every registered workload (admitted by `only`) over the axes it varies on.
    pub fn new(registry: &Registry, matrix: &MatrixSpec, only: Option<Only>) -> Plan {
        let mut cells = Vec::new();
        let mut sizes = matrix.sizes.clone();
        sizes.dedup();
        let smallest = sizes.iter().copied().min();
        for (index, w) in registry.iter().enumerate() {
            if only.is_some_and(|o| !o.admits(w.role())) {
                continue;
            }
            let shapes: Vec<(u32, Option<Direction>, u16)> = match w.axes() {
                Axes::Full => sizes
                    .iter()
                    .flat_map(|&s| {
                        matrix
                            .directions
                            .iter()
                            .flat_map(move |&d| matrix.queues.iter().map(move |&q| (s, Some(d), q)))
                    })
                    .collect(),
                Axes::SizesOnly => sizes.iter().map(|&s| (s, None, 1)).collect(),
                Axes::SmallestSize => smallest.map(|s| (s, None, 1)).into_iter().collect(),
            };
            for (frame_size, direction, queues) in shapes {
                let config = CellConfig {
                    frame_size,
                    direction,
                    queues,
                    duration: Duration::ZERO,
                };
                let support = w.check(&config);
                cells.push(PlannedCell {
                    workload: index,
                    setup_cost: w.setup_cost(),
                    config,
                    support,
                });
            }
        }
        Plan { cells }
    }

    /// Cells that will actually run.
    pub fn runnable(&self) -> usize {
        self.cells.iter().filter(|c| c.support.is_ok()).count()
    }

    /// Sets every cell's window.
    pub fn set_duration(&mut self, d: Duration) {
        for c in &mut self.cells {
            c.config.duration = d;
        }
    }

    /// Set-up time of the runnable cells, summed.
    pub fn setup_cost(&self) -> Duration {
        self.cells
            .iter()
            .filter(|c| c.support.is_ok())
            .map(|c| c.setup_cost)
            .sum()
    }

    /// The window that makes the runnable cells fill `budget`, set-up included,
    /// within [`MIN_AUTO_CELL`]..=[`MAX_AUTO_CELL`].
    pub fn auto_duration(&self, budget: Duration) -> Duration {
        let n = u32::try_from(self.runnable().max(1)).unwrap_or(u32::MAX);
        (budget.saturating_sub(self.setup_cost()) / n).clamp(MIN_AUTO_CELL, MAX_AUTO_CELL)
    }
}

/// Outcome of a cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Measured and verified.
    Ok,
    /// The workload cannot measure this cell (see `reason`).
    Unsupported,
    /// The measurement failed (see `reason`).
    Failed,
}

/// CPU use of one side, as reported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CpuRecord {
    /// Side name.
    pub side: String,
    /// Threads summed.
    pub threads: u32,
    /// User seconds.
    pub user_s: f64,
    /// System seconds.
    pub system_s: f64,
    /// Percent of one core over the window.
    pub percent: f64,
}

/// A measurement with its derived rates, as reported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultRecord {
    /// Frames received and verified.
    pub frames: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Window length, seconds.
    pub elapsed_s: f64,
    /// Frames dropped.
    pub drops: u64,
    /// Frames answered with an error.
    pub errors: u64,
    /// Millions of frames per second.
    pub mpps: f64,
    /// Gigabits of frame bytes per second.
    pub gbps: f64,
    /// CPU per side.
    pub cpu: Vec<CpuRecord>,
    /// Round-trip latency, for latency cells.
    pub latency: Option<LatencySummary>,
}

impl From<&Measurement> for ResultRecord {
    fn from(m: &Measurement) -> Self {
        let pct = m.cpu_percent();
        ResultRecord {
            frames: m.frames,
            bytes: m.bytes,
            elapsed_s: m.elapsed.as_secs_f64(),
            drops: m.drops,
            errors: m.errors,
            mpps: m.mpps(),
            gbps: m.gbps(),
            cpu: m
                .sides
                .iter()
                .zip(pct)
                .map(|(s, (_, percent))| CpuRecord {
                    side: s.side.clone(),
                    threads: s.threads,
                    user_s: s.cpu.user.as_secs_f64(),
                    system_s: s.cpu.system.as_secs_f64(),
                    percent,
                })
                .collect(),
            latency: m.latency.clone(),
        }
    }
}

/// One cell of the report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellRecord {
    /// Series (workload) name.
    pub series: String,
    /// Limit, peer or subject.
    pub role: Role,
    /// Throughput or latency (with its wait mode).
    #[serde(flatten)]
    pub kind: Kind,
    /// Human label of the cell.
    pub label: String,
    /// Frame size in bytes.
    pub frame_size: u32,
    /// True for GSO super-frames.
    pub gso: bool,
    /// Direction, for series that have one.
    pub direction: Option<Direction>,
    /// Queue pairs.
    pub queues: u16,
    /// Planned window, seconds.
    pub duration_s: f64,
    /// Outcome.
    pub status: Status,
    /// Why unsupported or failed.
    pub reason: Option<String>,
    /// Numbers, when `status` is ok.
    pub result: Option<ResultRecord>,
    /// For subject cells: ratio to each reference series (see [`crate::ratio`]).
    pub ratios: BTreeMap<String, f64>,
}

impl CellRecord {
    /// The plotted series name: the workload, plus direction and queues if it has them.
    pub fn series_label(&self) -> String {
        match self.direction {
            Some(d) => format!("{} {} {}q", self.series, d.label(), self.queues),
            None => self.series.clone(),
        }
    }
}

/// Runs every cell of `plan`; `on_cell(index, total, label)` is called before each.
/// Ratios are filled in at the end.
pub fn run(
    registry: &Registry,
    plan: &Plan,
    mut on_cell: impl FnMut(usize, usize, &str),
) -> Vec<CellRecord> {
    let total = plan.cells.len();
    let mut records = Vec::with_capacity(total);
    for (i, cell) in plan.cells.iter().enumerate() {
        let Some(w) = registry.at(cell.workload) else {
            continue;
        };
        let label = format!("{} {}", w.name(), cell.config.label());
        on_cell(i, total, &label);
        let (status, reason, result) = match &cell.support {
            Err(u) => (Status::Unsupported, Some(u.0.clone()), None),
            Ok(()) => {
                let ctl = Control::new(cell.config.duration);
                match ctl.run_timed(|c| w.run(&cell.config, c)) {
                    Ok(m) => (Status::Ok, None, Some(ResultRecord::from(&m))),
                    Err(e) => (Status::Failed, Some(error_text(&e)), None),
                }
            }
        };
        records.push(CellRecord {
            series: w.name().to_owned(),
            role: w.role(),
            kind: w.kind(),
            label: cell.config.label(),
            frame_size: cell.config.frame_size,
            gso: cell.config.gso(),
            direction: cell.config.direction,
            queues: cell.config.queues,
            duration_s: cell.config.duration.as_secs_f64(),
            status,
            reason,
            result,
            ratios: BTreeMap::new(),
        });
    }
    crate::ratio::compute(&mut records);
    records
}

fn error_text(e: &WorkloadError) -> String {
    e.to_string()
}
