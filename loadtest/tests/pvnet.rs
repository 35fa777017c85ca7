//! The pvnet series end to end: the `loadtest` binary runs the default matrix with tiny
//! cells, and every pvnet cell in results.json must hold plausible, self-consistent,
//! verified numbers; cells pvnet cannot run must say why.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{assert_plausible_latency, cell};
use loadtest::cell::{Direction, DEFAULT_QUEUES, DEFAULT_SIZES};
use loadtest::latency::WaitMode;
use loadtest::peers::{CROSSBEAM, EVENTFD_PINGPONG, MEMCPY, RINGBUF, SPIN_PINGPONG};
use loadtest::pvnet::{PVNET, PVNET_EVTCHN, PVNET_POLL};
use loadtest::report::{RunReport, JSON_FILE, SVG_FILE, TABLE_FILE};
use loadtest::runner::{CellRecord, Status};
use loadtest::Kind;

fn out_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("loadtest-pvnet-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn run(args: &[&str], dir: &std::path::Path) -> RunReport {
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .args(["--out", dir.to_str().expect("utf-8 temp dir"), "--quiet"])
        .output()
        .expect("the loadtest binary runs");
    assert!(
        out.status.success(),
        "status {:?}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(dir.join(JSON_FILE)).expect("results.json written");
    serde_json::from_str(&text).expect("results.json parses")
}

/// A measured pvnet throughput cell: verified frames, consistent rates, both sides'
/// CPU, no errors, and drops only where a port may drop (the switch into a slower
/// guest).
fn assert_pvnet_cell(c: &CellRecord) {
    let what = format!("{} {}", c.series, c.label);
    assert_eq!(c.status, Status::Ok, "{what}: {:?}", c.reason);
    let r = c.result.as_ref().expect("ok cell has a result");
    assert!(r.frames > 0, "{what}: no frames");
    assert_eq!(r.bytes, r.frames * u64::from(c.frame_size), "{what}");
    assert!(
        r.elapsed_s > 0.0 && r.elapsed_s < 30.0,
        "{what}: {}",
        r.elapsed_s
    );
    assert!(r.gbps > 0.0 && r.gbps < 10_000.0, "{what}: {} Gbps", r.gbps);
    let mpps = r.frames as f64 / r.elapsed_s / 1e6;
    assert!((r.mpps - mpps).abs() <= 1e-6 * mpps.max(1.0), "{what}");
    assert_eq!(r.errors, 0, "{what}");
    if c.direction != Some(Direction::GuestToGuest) {
        assert_eq!(r.drops, 0, "{what}: only the switch path may drop");
    }
    assert!(r.latency.is_none());
    assert_eq!(c.gso, c.frame_size > 9018, "{what}");
    let sides: Vec<&str> = r.cpu.iter().map(|s| s.side.as_str()).collect();
    let expected: &[&str] = if c.direction == Some(Direction::GuestToGuest) {
        &["guest-tx", "guest-rx", "dom0"]
    } else {
        &["guest", "dom0"]
    };
    assert_eq!(sides, expected, "{what}");
    for s in &r.cpu {
        assert!(s.threads >= 1, "{what}");
        assert!(s.user_s >= 0.0 && s.system_s >= 0.0);
        assert!(
            s.percent <= 100.0 * f64::from(s.threads) * 1.5 + 5.0,
            "{what}: {s:?}"
        );
    }
    let guests = r.cpu.iter().filter(|s| s.side != "dom0");
    assert_eq!(
        guests.map(|s| s.threads).sum::<u32>(),
        u32::from(c.queues) * if sides.len() == 3 { 2 } else { 1 },
        "{what}: one guest thread per queue (per guest)"
    );
    let dom0 = r.cpu.iter().find(|s| s.side == "dom0").expect("dom0 side");
    // netback's control thread plus a TX and an RX thread per queue of every vif.
    let vifs = if sides.len() == 3 { 2 } else { 1 };
    assert_eq!(dom0.threads, 1 + 2 * u32::from(c.queues) * vifs, "{what}");
    assert!(
        dom0.user_s + dom0.system_s > 0.0,
        "{what}: netback used no CPU"
    );
    for reference in [MEMCPY, RINGBUF, CROSSBEAM] {
        assert!(
            c.ratios.contains_key(reference),
            "{what}: no /{reference} ratio"
        );
    }
}

#[test]
fn default_matrix_has_every_pvnet_cell_measured_and_verified() {
    let dir = out_dir("default");
    // Short windows, but long enough that a starved thread on a loaded machine still
    // gets a turn.
    let report = run(&["-d", "0.15"], &dir);
    let pvnet: Vec<&CellRecord> = report.cells.iter().filter(|c| c.series == PVNET).collect();
    assert_eq!(
        pvnet.len(),
        DEFAULT_SIZES.len() * Direction::ALL.len() * DEFAULT_QUEUES.len()
    );
    for size in DEFAULT_SIZES {
        for d in Direction::ALL {
            for q in DEFAULT_QUEUES {
                let c = pvnet
                    .iter()
                    .find(|c| c.frame_size == size && c.direction == Some(d) && c.queues == q)
                    .unwrap_or_else(|| panic!("no pvnet cell {size} B {d} {q}q"));
                assert_pvnet_cell(c);
            }
        }
    }
    assert!(report
        .cells
        .iter()
        .any(|c| c.label == "65535B GSO guest→dom0 1q"));

    for (series, mode, peer) in [
        (PVNET_EVTCHN, WaitMode::EventDriven, EVENTFD_PINGPONG),
        (PVNET_POLL, WaitMode::Polling, SPIN_PINGPONG),
    ] {
        let c = cell(&report, series, 64);
        assert_eq!(c.kind, Kind::Latency(mode));
        assert_plausible_latency(c);
        let keys: Vec<&str> = c.ratios.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            vec![peer],
            "{series} is compared with its same-mode peer"
        );
        let r = c.result.as_ref().expect("measured");
        assert!(r.cpu.iter().any(|s| s.side == "dom0" && s.threads == 3));
    }
    assert_eq!(report.failed(), 0);
    let table = std::fs::read_to_string(dir.join(TABLE_FILE)).expect("table.txt");
    assert!(table.contains("/memcpy"), "ratio columns: {table}");
    assert!(table.contains("pvnet-evtchn"));
    let svg = std::fs::read_to_string(dir.join(SVG_FILE)).expect("throughput.svg");
    assert!(
        svg.contains("pvnet guest→dom0 1q"),
        "pvnet series in the plot legend"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sizes_pvnet_cannot_carry_are_unsupported_with_the_reason() {
    let dir = out_dir("unsupported");
    let report = run(
        &[
            "--only",
            "pvnet",
            "--sizes",
            "32,70000",
            "--directions",
            "g2d",
            "--queues",
            "1",
            "-d",
            "0.01",
            "--no-plot",
        ],
        &dir,
    );
    // 2 throughput cells + 2 latency cells at the smallest size (32).
    assert_eq!(report.cells.len(), 4, "{:#?}", report.cells);
    for c in &report.cells {
        assert_eq!(c.status, Status::Unsupported, "{}", c.label);
        let reason = c.reason.as_deref().unwrap_or("");
        let needle = if c.frame_size == 32 {
            "ETH_ZLEN"
        } else {
            "XEN_NETIF_MAX_TX_SIZE"
        };
        assert!(reason.contains(needle), "{}: {reason}", c.label);
        assert!(c.result.is_none());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
