//! End-to-end: the `loadtest` binary with tiny cells, checking every file it writes.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{assert_plausible_latency, assert_plausible_throughput, cell, check_xml};
use loadtest::peers::{CROSSBEAM, EVENTFD_PINGPONG, MEMCPY, RINGBUF, SPIN_PINGPONG};
use loadtest::report::table::THROUGHPUT_COLUMNS;
use loadtest::report::{RunReport, JSON_FILE, SVG_FILE, TABLE_FILE};

fn out_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("loadtest-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn loadtest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .output()
        .expect("the loadtest binary runs")
}

fn read_report(dir: &Path) -> RunReport {
    let text = std::fs::read_to_string(dir.join(JSON_FILE)).expect("results.json written");
    serde_json::from_str(&text).expect("results.json parses as a RunReport")
}

#[test]
fn peers_run_writes_plausible_json_table_and_svg() {
    let dir = out_dir("peers");
    let d = dir.to_str().expect("utf-8 temp dir");
    let out = loadtest(&[
        "peers", "-d", "0.05", "--sizes", "64,1514", "--out", d, "--quiet",
    ]);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        d,
        "--quiet prints the folder"
    );

    let report = read_report(&dir);
    assert_eq!(report.schema, RunReport::SCHEMA);
    assert!(report.machine.logical_cpus >= 1 && report.machine.memory_bytes > 0);
    assert!(report.machine.rustc.starts_with("rustc"));
    assert!((report.cell_duration_s - 0.05).abs() < 1e-9);
    // 3 throughput series × 2 sizes + 2 latency peers at the smallest size, no pvnet.
    assert_eq!(report.cells.len(), 8, "{:#?}", report.cells);
    for size in [64, 1514] {
        for series in [MEMCPY, RINGBUF, CROSSBEAM] {
            assert_plausible_throughput(cell(&report, series, size));
        }
    }
    for series in [SPIN_PINGPONG, EVENTFD_PINGPONG] {
        assert_plausible_latency(cell(&report, series, 64));
    }
    assert!(
        report.cells.iter().all(|c| c.ratios.is_empty()),
        "references get no ratios"
    );

    let svg = std::fs::read_to_string(dir.join(SVG_FILE)).expect("throughput.svg written");
    let elements = check_xml(&svg).unwrap_or_else(|e| panic!("SVG not well-formed: {e}"));
    assert_eq!(elements.first().map(String::as_str), Some("svg"));
    assert_eq!(
        elements.iter().filter(|e| *e == "polyline").count(),
        3,
        "one line per series"
    );
    for name in [
        "memcpy (limit)",
        "ringbuf (peer)",
        "crossbeam (peer)",
        "1514",
        "Gbit/s",
    ] {
        assert!(svg.contains(name), "SVG lacks {name:?}");
    }

    let table = std::fs::read_to_string(dir.join(TABLE_FILE)).expect("table.txt written");
    for col in THROUGHPUT_COLUMNS {
        assert!(table.contains(col), "table lacks column {col:?}");
    }
    for col in ["/memcpy", "/ringbuf", "/crossbeam", "p50 µs", "p99.9 µs"] {
        assert!(table.contains(col), "table lacks column {col:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn json_only_prints_the_document() {
    let dir = out_dir("json");
    let d = dir.to_str().expect("utf-8 temp dir");
    let out = loadtest(&[
        "run",
        "--only",
        "peers",
        "-d",
        "0.02",
        "--sizes",
        "256",
        "--out",
        d,
        "--json-only",
    ]);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: RunReport =
        serde_json::from_slice(&out.stdout).expect("stdout is exactly the JSON report");
    assert_eq!(report, read_report(&dir));
    assert_plausible_throughput(cell(&report, MEMCPY, 256));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_options_are_refused_with_status_2() {
    for args in [
        &["--sizes", "8"][..],
        &["--duration", "0"],
        &["--duration", "NaN"],
        &["--queues", "0"],
    ] {
        let out = loadtest(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
}

#[test]
fn list_shows_series_and_cells_without_running() {
    let out = loadtest(&["list", "--sizes", "32,64", "--queues", "1"]);
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    for name in [
        MEMCPY,
        RINGBUF,
        CROSSBEAM,
        SPIN_PINGPONG,
        EVENTFD_PINGPONG,
        "pvnet",
        "pvnet-evtchn",
        "pvnet-poll",
    ] {
        assert!(s.contains(name), "list lacks {name}: {s}");
    }
    assert!(s.contains("\n  64B guest→dom0 1q\n"), "{s}");
    assert!(
        s.contains("32B guest→dom0 1q  [unsupported: 32 B is below ETH_ZLEN"),
        "{s}"
    );
}

#[test]
fn xml_checker_rejects_broken_documents() {
    assert!(check_xml(r#"<?xml version="1.0"?><svg a="1"><g><line/></g></svg>"#).is_ok());
    assert!(check_xml("<svg><g></svg>").is_err());
    assert!(check_xml("<svg a=1></svg>").is_err());
    assert!(check_xml("<svg>a & b</svg>").is_err());
    assert!(check_xml("<svg></svg><svg></svg>").is_err());
    assert!(check_xml("<svg>").is_err());
}
