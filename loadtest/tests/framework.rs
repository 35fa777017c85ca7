//! The framework as pvnet will use it: register subject workloads next to the standard
//! references, run, and get ratios, unsupported cells and failures reported.

mod common;

use std::collections::BTreeSet;

use common::{assert_plausible_throughput, cell};
use loadtest::cli::RunArgs;
use loadtest::frame::FramePool;
use loadtest::latency::spin::SpinLink;
use loadtest::latency::{ping_pong, WaitMode};
use loadtest::peers::{CROSSBEAM, MEMCPY, RINGBUF, SPIN_PINGPONG};
use loadtest::runner::{Only, Plan, Status};
use loadtest::{
    app, Axes, CellConfig, Control, Direction, Kind, MatrixSpec, Measurement, Registry, Role,
    Unsupported, Workload, WorkloadError,
};

/// Stands in for a pvnet series: copies frames on one thread, reports two sides and a
/// drop count, and cannot do bidirectional cells.
struct FakeSubject;

impl Workload for FakeSubject {
    fn name(&self) -> &str {
        "fake-pvnet"
    }
    fn describe(&self) -> &str {
        "test subject"
    }
    fn role(&self) -> Role {
        Role::Subject
    }
    fn check(&self, cell: &CellConfig) -> Result<(), Unsupported> {
        match cell.direction {
            Some(Direction::Bidirectional) => Err(Unsupported::new("fake: no bidirectional")),
            _ => Ok(()),
        }
    }
    fn run(&self, cell: &CellConfig, ctl: &Control) -> Result<Measurement, WorkloadError> {
        let mut src = FramePool::for_size(cell.frame_size);
        let mut dst = FramePool::for_size(cell.frame_size);
        let start = ctl.begin();
        let mut n = 0u64;
        while !ctl.should_stop() {
            dst.frame_mut(n).copy_from_slice(src.stamped(n));
            n += 1;
        }
        let mut m = Measurement::frames(n, cell.frame_size, start.elapsed());
        m.drops = 7;
        m.add_cpu("guest", Default::default());
        m.add_cpu("dom0", Default::default());
        Ok(m)
    }
}

/// A polling latency subject built on the same harness and transport as the peer.
struct FakeLatency;

impl Workload for FakeLatency {
    fn name(&self) -> &str {
        "fake-pvnet-latency"
    }
    fn describe(&self) -> &str {
        "test latency subject"
    }
    fn role(&self) -> Role {
        Role::Subject
    }
    fn kind(&self) -> Kind {
        Kind::Latency(WaitMode::Polling)
    }
    fn axes(&self) -> Axes {
        Axes::SmallestSize
    }
    fn run(&self, _cell: &CellConfig, ctl: &Control) -> Result<Measurement, WorkloadError> {
        let link = SpinLink::new();
        std::thread::scope(|s| {
            s.spawn(|| link.echo());
            let run = ping_pong(&mut link.client(), ctl)?;
            Ok(Measurement {
                frames: run.round_trips,
                elapsed: run.elapsed,
                latency: run.recorder.summary(),
                ..Measurement::default()
            })
        })
    }
}

/// Always fails verification.
struct Broken;

impl Workload for Broken {
    fn name(&self) -> &str {
        "broken"
    }
    fn describe(&self) -> &str {
        "fails"
    }
    fn role(&self) -> Role {
        Role::Subject
    }
    fn axes(&self) -> Axes {
        Axes::SmallestSize
    }
    fn run(&self, _cell: &CellConfig, ctl: &Control) -> Result<Measurement, WorkloadError> {
        ctl.begin();
        Err(WorkloadError::Verify {
            expected: 3,
            detail: "test corruption".into(),
        })
    }
}

fn args(name: &str) -> RunArgs {
    let out = std::env::temp_dir().join(format!("loadtest-fw-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    RunArgs {
        duration: Some(0.03),
        sizes: vec![1514, 64],
        directions: vec![Direction::GuestToDom0, Direction::Bidirectional],
        queues: vec![1],
        out: Some(out),
        no_plot: true,
        ..RunArgs::default()
    }
}

#[test]
fn subject_cells_get_ratios_to_every_reference_of_the_same_size() {
    let mut reg = Registry::standard();
    reg.register(Box::new(FakeSubject)).expect("new name");
    reg.register(Box::new(FakeLatency)).expect("new name");
    let a = args("ratios");
    let (report, written) = app::run_matrix(&reg, &a, |_, _, _| {}).expect("run completes");
    assert_eq!(report.failed(), 0, "{:#?}", report.cells);

    let subject: Vec<_> = report
        .cells
        .iter()
        .filter(|c| c.series == "fake-pvnet")
        .collect();
    // 2 sizes × 2 directions × 1 queue count, bidirectional ones unsupported.
    assert_eq!(subject.len(), 4);
    for c in &subject {
        if c.direction == Some(Direction::Bidirectional) {
            assert_eq!(c.status, Status::Unsupported);
            assert_eq!(c.reason.as_deref(), Some("fake: no bidirectional"));
            assert!(c.ratios.is_empty());
            continue;
        }
        assert_plausible_throughput_with_drops(c);
        let keys: BTreeSet<&str> = c.ratios.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            BTreeSet::from([MEMCPY, RINGBUF, CROSSBEAM]),
            "{}",
            c.label
        );
        for (name, ratio) in &c.ratios {
            let reference = cell(&report, name, c.frame_size);
            let expected = c.result.as_ref().map(|r| r.gbps).unwrap_or(0.0)
                / reference
                    .result
                    .as_ref()
                    .map(|r| r.gbps)
                    .unwrap_or(f64::NAN);
            assert!(
                (ratio - expected).abs() < 1e-12,
                "{name}: {ratio} vs {expected}"
            );
        }
    }

    let lat = report
        .cells
        .iter()
        .find(|c| c.series == "fake-pvnet-latency")
        .expect("latency subject ran");
    assert_eq!(lat.status, Status::Ok, "{:?}", lat.reason);
    let keys: Vec<&str> = lat.ratios.keys().map(String::as_str).collect();
    assert_eq!(keys, vec![SPIN_PINGPONG], "only the same-mode latency peer");

    // The written JSON is the report, and the table shows ratio values for the subject.
    let json = std::fs::read_to_string(written.dir.join("results.json")).expect("written");
    assert_eq!(
        serde_json::from_str::<loadtest::report::RunReport>(&json).ok(),
        Some(report.clone())
    );
    let table = loadtest::report::table::render(&report);
    let row = table
        .lines()
        .find(|l| l.starts_with("fake-pvnet ") && l.contains("guest→dom0"))
        .expect("subject row in table");
    assert!(row.contains("guest 0 / dom0 0"), "{row}");
    assert!(table.contains("fake-pvnet 64B guest⇄dom0 1q: unsupported: fake: no bidirectional"));
    let _ = std::fs::remove_dir_all(&written.dir);
}

fn assert_plausible_throughput_with_drops(c: &loadtest::runner::CellRecord) {
    let mut c = c.clone();
    let r = c.result.as_mut().expect("ok");
    assert_eq!(r.drops, 7, "drops are carried into the report");
    r.drops = 0;
    assert_plausible_throughput(&c);
}

#[test]
fn a_failing_cell_is_reported_not_fatal() {
    let mut reg = Registry::new();
    reg.register(Box::new(Broken)).expect("new name");
    let (report, written) = app::run_matrix(&reg, &args("broken"), |_, _, _| {}).expect("runs");
    assert_eq!(report.failed(), 1);
    let c = &report.cells[0];
    assert_eq!(c.status, Status::Failed);
    assert!(c
        .reason
        .as_deref()
        .is_some_and(|r| r.contains("test corruption")));
    assert!(c.result.is_none());
    let _ = std::fs::remove_dir_all(&written.dir);
}

#[test]
fn duplicate_names_are_refused() {
    let mut reg = Registry::standard();
    assert!(reg.register(Box::new(FakeSubject)).is_ok());
    assert!(reg.register(Box::new(FakeSubject)).is_err());
}

#[test]
fn plan_expands_each_workload_over_its_axes() {
    let mut reg = Registry::standard();
    reg.register(Box::new(FakeSubject)).expect("new name");
    let m = MatrixSpec {
        sizes: vec![64, 1514, 9014],
        directions: Direction::ALL.to_vec(),
        queues: vec![1, 2],
    };
    let plan = Plan::new(&reg, &m, None);
    let count = |name: &str| {
        plan.cells
            .iter()
            .filter(|c| reg.at(c.workload).map(|w| w.name()) == Some(name))
            .count()
    };
    assert_eq!(count(MEMCPY), 3);
    assert_eq!(count(SPIN_PINGPONG), 1);
    assert_eq!(count("fake-pvnet"), 3 * 4 * 2);
    assert_eq!(count("pvnet"), 3 * 4 * 2);
    assert_eq!(count("pvnet-evtchn"), 1);
    assert_eq!(count("pvnet-poll"), 1);
    // Only the fake's bidirectional cells are unsupported.
    assert_eq!(plan.runnable(), plan.cells.len() - 6);

    let peers = Plan::new(&reg, &m, Some(Only::Peers));
    assert!(peers.cells.iter().all(|c| reg
        .at(c.workload)
        .is_some_and(|w| w.role() != Role::Subject)));
    let budget = std::time::Duration::from_secs(60);
    let d = plan.auto_duration(budget);
    assert!(d >= loadtest::runner::MIN_AUTO_CELL && d <= loadtest::runner::MAX_AUTO_CELL);
    // The windows and the pvnet cells' set-up fill the budget together.
    let setup = plan.setup_cost();
    assert_eq!(setup, loadtest::pvnet::SETUP_COST * (24 + 2));
    assert!(d * plan.runnable() as u32 + setup <= budget + std::time::Duration::from_millis(1));
}
