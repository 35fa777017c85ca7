//! What the binary does: validate the options, plan, run, report.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cell::MatrixSpec;
use crate::cli::{Cli, Command, RunArgs};
use crate::frame::{MAX_FRAME, MIN_FRAME};
use crate::machine::MachineInfo;
use crate::report::{self, RunReport, Written};
use crate::runner::{self, Only, Plan};
use crate::timestamp;
use crate::workload::Registry;

/// Most queue pairs a cell may ask for (Linux netback's default
/// `xenvif_max_queues` is the number of CPUs; 16 is far above this machine).
pub const MAX_QUEUES: u16 = 16;
/// Longest accepted cell or budget, seconds.
pub const MAX_SECONDS: f64 = 3600.0;

/// Errors that stop a run before or after measuring.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// An option is out of range.
    #[error("invalid option: {0}")]
    Invalid(String),
    /// Writing the results failed.
    #[error("writing results to {dir}: {source}")]
    Write {
        /// The results folder.
        dir: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Checks option ranges clap cannot express.
pub fn validate(a: &RunArgs) -> Result<(), AppError> {
    let secs_ok = |v: f64| v.is_finite() && v > 0.0 && v <= MAX_SECONDS;
    if let Some(d) = a.duration {
        if !secs_ok(d) {
            return Err(AppError::Invalid(format!(
                "--duration {d}: must be > 0 and ≤ {MAX_SECONDS} seconds"
            )));
        }
    }
    if !secs_ok(a.budget) {
        return Err(AppError::Invalid(format!(
            "--budget {}: must be > 0 and ≤ {MAX_SECONDS} seconds",
            a.budget
        )));
    }
    if a.sizes.is_empty() {
        return Err(AppError::Invalid("--sizes: give at least one size".into()));
    }
    if let Some(s) = a
        .sizes
        .iter()
        .find(|&&s| !(MIN_FRAME..=MAX_FRAME).contains(&s))
    {
        return Err(AppError::Invalid(format!(
            "--sizes {s}: frames must be {MIN_FRAME}..={MAX_FRAME} bytes"
        )));
    }
    if let Some(q) = a.queues.iter().find(|&&q| q == 0 || q > MAX_QUEUES) {
        return Err(AppError::Invalid(format!(
            "--queues {q}: must be 1..={MAX_QUEUES}"
        )));
    }
    if a.queues.is_empty() || a.directions.is_empty() {
        return Err(AppError::Invalid(
            "--queues and --directions need at least one value".into(),
        ));
    }
    Ok(())
}

/// The plan `args` describe over `registry`, with every cell's window set.
pub fn plan(registry: &Registry, args: &RunArgs) -> (Plan, MatrixSpec, Duration) {
    let mut sizes = args.sizes.clone();
    sizes.sort_unstable();
    sizes.dedup();
    let matrix = MatrixSpec {
        sizes,
        directions: dedup(&args.directions),
        queues: dedup(&args.queues),
    };
    let mut plan = Plan::new(registry, &matrix, args.only);
    let d = match args.duration {
        Some(s) => Duration::from_secs_f64(s),
        None => plan.auto_duration(Duration::from_secs_f64(args.budget)),
    };
    plan.set_duration(d);
    (plan, matrix, d)
}

fn dedup<T: PartialEq + Copy>(v: &[T]) -> Vec<T> {
    let mut out = Vec::new();
    for x in v {
        if !out.contains(x) {
            out.push(*x);
        }
    }
    out
}

/// Runs the matrix `args` describe and writes the results folder; `on_cell(i, total,
/// label)` is called before each cell. Prints nothing.
pub fn run_matrix(
    registry: &Registry,
    args: &RunArgs,
    on_cell: impl FnMut(usize, usize, &str),
) -> Result<(RunReport, Written), AppError> {
    validate(args)?;
    let (plan, matrix, d) = plan(registry, args);
    let machine = MachineInfo::collect();
    let started = SystemTime::now();
    let cells = runner::run(registry, &plan, on_cell);
    let report = RunReport {
        schema: RunReport::SCHEMA,
        started_utc: timestamp::rfc3339(started),
        finished_utc: timestamp::rfc3339(SystemTime::now()),
        machine,
        matrix,
        cell_duration_s: d.as_secs_f64(),
        cells,
    };
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| report::default_dir(&timestamp::compact(started)));
    let written = report::write_results(&dir, &report, !args.no_plot)
        .map_err(|source| AppError::Write { dir, source })?;
    Ok((report, written))
}

fn progress_bar(args: &RunArgs, total: usize) -> ProgressBar {
    if args.quiet || args.json_only || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
    {
        pb.set_style(style);
    }
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// Lists the series and the cells they would run.
fn list(registry: &Registry, args: &RunArgs) -> String {
    let (plan, _, d) = plan(registry, args);
    let mut out = format!(
        "{} cells, {} runnable, {:.2} s each (~{:.0} s in total)\n\n",
        plan.cells.len(),
        plan.runnable(),
        d.as_secs_f64(),
        d.as_secs_f64() * plan.runnable() as f64
    );
    for (i, w) in registry.iter().enumerate() {
        let cells: Vec<_> = plan.cells.iter().filter(|c| c.workload == i).collect();
        if cells.is_empty() {
            continue;
        }
        out.push_str(&format!(
            "{} ({:?}): {}\n",
            w.name(),
            w.role(),
            w.describe()
        ));
        for c in cells {
            match &c.support {
                Ok(()) => out.push_str(&format!("  {}\n", c.config.label())),
                Err(u) => out.push_str(&format!("  {}  [unsupported: {u}]\n", c.config.label())),
            }
        }
    }
    out
}

/// Runs the parsed command line; returns the process exit status.
pub fn execute(cli: Cli, registry: &Registry) -> i32 {
    let (args, listing) = match cli.command {
        None => (cli.run, false),
        Some(Command::Run(a)) => (a, false),
        Some(Command::Peers(a)) => (
            RunArgs {
                only: Some(Only::Peers),
                ..a
            },
            false,
        ),
        Some(Command::List(a)) => (a, true),
        Some(Command::Host(h)) => return crate::host::main(&h),
    };
    if let Err(e) = validate(&args) {
        eprintln!("loadtest: {e}");
        return 2;
    }
    if listing {
        print!("{}", list(registry, &args));
        return 0;
    }
    let total = plan(registry, &args).0.cells.len();
    let pb = progress_bar(&args, total);
    let result = run_matrix(registry, &args, |i, _, label| {
        pb.set_position(i as u64);
        pb.set_message(label.to_owned());
    });
    pb.finish_and_clear();
    let (report, written) = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadtest: {e}");
            return 2;
        }
    };
    if args.json_only {
        println!("{}", report.to_json());
        eprintln!("results: {}", written.dir.display());
    } else if args.quiet {
        println!("{}", written.dir.display());
    } else {
        print!("{}", report::table::render(&report));
        println!("\nresults: {}", written.dir.display());
    }
    let failed = report.failed();
    if failed > 0 {
        eprintln!("loadtest: {failed} cell(s) failed");
        return 1;
    }
    0
}
