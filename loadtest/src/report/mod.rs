//! Reports of a run: the terminal table ([`table`]), the JSON document (this module)
//! and the throughput plot ([`svg`]), written together into one results folder.

pub mod svg;
pub mod table;

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cell::MatrixSpec;
use crate::machine::MachineInfo;
use crate::runner::{CellRecord, Status};

/// File names inside a results folder.
pub const JSON_FILE: &str = "results.json";
/// See [`JSON_FILE`].
pub const SVG_FILE: &str = "throughput.svg";
/// See [`JSON_FILE`].
pub const TABLE_FILE: &str = "table.txt";

/// Everything a run produced: the JSON document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// Format version of this document.
    pub schema: u32,
    /// When the run started, RFC 3339 UTC.
    pub started_utc: String,
    /// When the run ended, RFC 3339 UTC.
    pub finished_utc: String,
    /// The machine and build.
    pub machine: MachineInfo,
    /// The requested axes.
    pub matrix: MatrixSpec,
    /// Window of each cell, seconds.
    pub cell_duration_s: f64,
    /// Every cell, in run order.
    pub cells: Vec<CellRecord>,
}

impl RunReport {
    /// Current [`RunReport::schema`].
    pub const SCHEMA: u32 = 1;

    /// Number of cells that failed.
    pub fn failed(&self) -> usize {
        self.cells
            .iter()
            .filter(|c| c.status == Status::Failed)
            .count()
    }

    /// The JSON document.
    pub fn to_json(&self) -> String {
        // Serialising plain data with finite floats cannot fail; fall back to an
        // error object rather than panicking if it ever does.
        serde_json::to_string_pretty(self)
            .unwrap_or_else(|e| format!("{{\"error\": \"serialising report: {e}\"}}"))
    }
}

/// What [`write_results`] wrote.
#[derive(Debug)]
pub struct Written {
    /// The folder.
    pub dir: PathBuf,
    /// Files in it.
    pub files: Vec<PathBuf>,
}

/// Writes results.json, table.txt and (unless `plot` is false) throughput.svg into `dir`,
/// creating it.
pub fn write_results(dir: &Path, report: &RunReport, plot: bool) -> io::Result<Written> {
    std::fs::create_dir_all(dir)?;
    let mut files = Vec::new();
    let mut put = |name: &str, text: String| -> io::Result<()> {
        let p = dir.join(name);
        std::fs::write(&p, text)?;
        files.push(p);
        Ok(())
    };
    put(JSON_FILE, report.to_json() + "\n")?;
    put(TABLE_FILE, table::render(report))?;
    if plot {
        put(SVG_FILE, svg::render(report))?;
    }
    Ok(Written {
        dir: dir.to_path_buf(),
        files,
    })
}

/// `results/<UTC timestamp>` under the current directory, with a `-N` suffix if a run in
/// the same second already took the name.
pub fn default_dir(stamp: &str) -> PathBuf {
    let base = Path::new("results").join(stamp);
    if !base.exists() {
        return base;
    }
    (1..)
        .map(|n| Path::new("results").join(format!("{stamp}-{n}")))
        .find(|p| !p.exists())
        .unwrap_or(base)
}
