//! The plain-text table printed to the terminal and saved as table.txt.

use std::fmt::Write as _;

use crate::ratio::throughput_references;
use crate::report::RunReport;
use crate::runner::{CellRecord, Status};
use crate::workload::Kind;

/// Column headers of the throughput table, before the ratio columns (one per reference
/// series, headed `/name`).
pub const THROUGHPUT_COLUMNS: [&str; 9] = [
    "series",
    "size",
    "direction",
    "q",
    "Mpps",
    "Gbps",
    "CPU% per side",
    "drops",
    "errors",
];

/// Column headers of the latency table.
pub const LATENCY_COLUMNS: [&str; 11] = [
    "series",
    "mode",
    "size",
    "round trips",
    "p50 µs",
    "p90 µs",
    "p99 µs",
    "p99.9 µs",
    "max µs",
    "CPU% per side",
    "p50 ratio",
];

/// Renders the report header, the throughput table and the latency table.
pub fn render(report: &RunReport) -> String {
    let mut out = String::new();
    let m = &report.machine;
    let _ = writeln!(
        out,
        "loadtest {} — {} ({} logical CPUs, {} usable), {:.1} GiB, load {:.2} {:.2} {:.2}",
        m.loadtest_version,
        m.cpu_model,
        m.logical_cpus,
        m.available_cpus,
        m.memory_bytes as f64 / (1u64 << 30) as f64,
        m.loadavg[0],
        m.loadavg[1],
        m.loadavg[2],
    );
    let _ = writeln!(
        out,
        "{} | {} ({}) | commit {} | started {} | {:.2} s per cell",
        m.kernel,
        m.rustc,
        m.build_profile,
        m.git_commit.as_deref().unwrap_or("unknown"),
        report.started_utc,
        report.cell_duration_s,
    );
    out.push('\n');
    out.push_str(&throughput_table(&report.cells));
    let lat = latency_table(&report.cells);
    if !lat.is_empty() {
        out.push('\n');
        out.push_str(&lat);
    }
    out
}

fn cpu_text(c: &CellRecord) -> String {
    c.result
        .as_ref()
        .map(|r| {
            r.cpu
                .iter()
                .map(|s| format!("{} {:.0}", s.side, s.percent))
                .collect::<Vec<_>>()
                .join(" / ")
        })
        .unwrap_or_default()
}

fn throughput_table(cells: &[CellRecord]) -> String {
    let refs = throughput_references(cells);
    let mut header: Vec<String> = THROUGHPUT_COLUMNS.iter().map(|s| s.to_string()).collect();
    header.extend(refs.iter().map(|r| format!("/{r}")));
    let mut rows: Vec<Row> = Vec::new();
    let tput: Vec<&CellRecord> = cells
        .iter()
        .filter(|c| c.kind == Kind::Throughput)
        .collect();
    let mut i = 0;
    while i < tput.len() {
        let c = tput[i];
        if c.status != Status::Ok {
            // Collapse a run of cells of one series that are out for the same reason.
            let mut j = i + 1;
            while j < tput.len()
                && tput[j].series == c.series
                && tput[j].status == c.status
                && tput[j].reason == c.reason
            {
                j += 1;
            }
            let what = if c.status == Status::Unsupported {
                "unsupported"
            } else {
                "FAILED"
            };
            let scope = if j - i == 1 {
                format!("{} {}", c.series, c.label)
            } else {
                format!("{} ({} cells)", c.series, j - i)
            };
            rows.push(Row::Note(format!(
                "{scope}: {what}: {}",
                c.reason.as_deref().unwrap_or("")
            )));
            i = j;
            continue;
        }
        let r = c.result.as_ref();
        let mut cols = vec![
            c.series.clone(),
            size_text(c),
            c.direction
                .map(|d| d.label().to_owned())
                .unwrap_or_else(|| "-".into()),
            if c.direction.is_some() {
                c.queues.to_string()
            } else {
                "-".into()
            },
            r.map(|r| format!("{:.3}", r.mpps)).unwrap_or_default(),
            r.map(|r| format!("{:.2}", r.gbps)).unwrap_or_default(),
            cpu_text(c),
            r.map(|r| r.drops.to_string()).unwrap_or_default(),
            r.map(|r| r.errors.to_string()).unwrap_or_default(),
        ];
        cols.extend(refs.iter().map(|name| {
            c.ratios
                .get(name)
                .map(|x| format!("{x:.2}"))
                .unwrap_or_default()
        }));
        rows.push(Row::Cells(cols));
        i += 1;
    }
    layout("Throughput", &header, &rows)
}

fn size_text(c: &CellRecord) -> String {
    if c.gso {
        format!("{} GSO", c.frame_size)
    } else {
        c.frame_size.to_string()
    }
}

fn latency_table(cells: &[CellRecord]) -> String {
    let lat: Vec<&CellRecord> = cells
        .iter()
        .filter(|c| matches!(c.kind, Kind::Latency(_)))
        .collect();
    if lat.is_empty() {
        return String::new();
    }
    let header: Vec<String> = LATENCY_COLUMNS.iter().map(|s| s.to_string()).collect();
    let rows = lat
        .iter()
        .map(|c| {
            let mode = match c.kind {
                Kind::Latency(m) => m.label(),
                Kind::Throughput => "",
            };
            let l = c.result.as_ref().and_then(|r| r.latency.as_ref());
            match (c.status, l) {
                (Status::Ok, Some(l)) => Row::Cells(vec![
                    c.series.clone(),
                    mode.to_owned(),
                    size_text(c),
                    l.samples.to_string(),
                    format!("{:.2}", l.p50_us),
                    format!("{:.2}", l.p90_us),
                    format!("{:.2}", l.p99_us),
                    format!("{:.2}", l.p999_us),
                    format!("{:.1}", l.max_us),
                    cpu_text(c),
                    c.ratios
                        .iter()
                        .map(|(k, v)| format!("{v:.2} vs {k}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                ]),
                _ => Row::Note(format!(
                    "{} {}: {:?}: {}",
                    c.series,
                    c.label,
                    c.status,
                    c.reason.as_deref().unwrap_or("no samples")
                )),
            }
        })
        .collect::<Vec<_>>();
    layout("Latency (round trip)", &header, &rows)
}

enum Row {
    Cells(Vec<String>),
    Note(String),
}

fn width(s: &str) -> usize {
    s.chars().count()
}

/// Left-aligns text columns and right-aligns numeric ones.
fn layout(title: &str, header: &[String], rows: &[Row]) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| width(h)).collect();
    for r in rows {
        if let Row::Cells(c) = r {
            for (i, s) in c.iter().enumerate() {
                if let Some(wi) = w.get_mut(i) {
                    *wi = (*wi).max(width(s));
                }
            }
        }
    }
    let numeric = |i: usize| {
        rows.iter().all(|r| match r {
            Row::Cells(c) => c
                .get(i)
                .into_iter()
                .all(|s| s.is_empty() || s.chars().all(|ch| ch.is_ascii_digit() || ch == '.')),
            Row::Note(_) => true,
        })
    };
    let right: Vec<bool> = (0..w.len()).map(|i| i > 0 && numeric(i)).collect();
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = w.get(i).copied().unwrap_or(0).saturating_sub(width(c));
            if i > 0 {
                s.push_str("  ");
            }
            if right.get(i).copied().unwrap_or(false) {
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            } else {
                s.push_str(c);
                s.push_str(&" ".repeat(pad));
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = format!("{title}\n");
    out.push_str(&line(header));
    let total: usize = w.iter().sum::<usize>() + 2 * w.len().saturating_sub(1);
    out.push_str(&"-".repeat(total));
    out.push('\n');
    for r in rows {
        match r {
            Row::Cells(c) => out.push_str(&line(c)),
            Row::Note(n) => {
                out.push_str(n);
                out.push('\n');
            }
        }
    }
    out
}
