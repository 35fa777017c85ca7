//! Ratios of subject (pvnet) cells to the references measured in the same run.
//!
//! Absolute numbers on a shared 2-core machine swing with whatever else runs; the ratio
//! of two numbers measured minutes apart on the same machine swings far less. So each
//! subject cell is divided by every reference of the same kind:
//!
//! * throughput cells: subject Gbps ÷ reference Gbps at the **same frame size**, for the
//!   limit (memcpy) and each throughput peer — 0.5 means half as fast;
//! * latency cells: subject p50 ÷ reference p50 for the latency peer with the **same
//!   wait mode** — 2.0 means twice as slow.

use crate::runner::{CellRecord, Status};
use crate::workload::Kind;

/// Fills `ratios` of every successful subject cell. Reference cells get none.
pub fn compute(cells: &mut [CellRecord]) {
    let refs: Vec<(String, Kind, u32, f64, Option<f64>)> = cells
        .iter()
        .filter(|c| c.role.is_reference() && c.status == Status::Ok)
        .filter_map(|c| {
            let r = c.result.as_ref()?;
            let p50 = r.latency.as_ref().map(|l| l.p50_us);
            Some((c.series.clone(), c.kind, c.frame_size, r.gbps, p50))
        })
        .collect();
    for c in cells.iter_mut() {
        c.ratios.clear();
        if c.role.is_reference() || c.status != Status::Ok {
            continue;
        }
        let Some(r) = c.result.as_ref() else { continue };
        for (name, kind, size, gbps, p50) in &refs {
            let ratio = match (c.kind, kind) {
                (Kind::Throughput, Kind::Throughput) if *size == c.frame_size && *gbps > 0.0 => {
                    Some(r.gbps / gbps)
                }
                (Kind::Latency(a), Kind::Latency(b)) if a == *b => {
                    match (r.latency.as_ref(), p50) {
                        (Some(l), Some(p)) if *p > 0.0 => Some(l.p50_us / p),
                        _ => None,
                    }
                }
                _ => None,
            };
            if let Some(x) = ratio.filter(|x| x.is_finite()) {
                c.ratios.insert(name.clone(), x);
            }
        }
    }
}

/// Names of the throughput reference series present, in first-appearance order: the
/// ratio columns of the throughput table.
pub fn throughput_references(cells: &[CellRecord]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in cells {
        if c.role.is_reference() && c.kind == Kind::Throughput && !out.contains(&c.series) {
            out.push(c.series.clone());
        }
    }
    out
}
