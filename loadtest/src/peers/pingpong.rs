//! The latency peers: the [`crate::latency`] harness over a spinning flag (polling) and
//! over a pair of eventfds (event-driven). pvnet's round trips are compared with the
//! peer of the same [`WaitMode`].
//!
//! They carry a sequence number, not frame bytes, so their cells report no bytes; they
//! are measured once, at the smallest frame size of the run.

use super::join;
use crate::cell::CellConfig;
use crate::control::Control;
use crate::latency::eventfd::EventfdLink;
use crate::latency::spin::SpinLink;
use crate::latency::{ping_pong, PingPongRun, WaitMode};
use crate::measurement::Measurement;
use crate::workload::{Axes, Kind, Role, Workload, WorkloadError};

/// Polling latency peer; see the module documentation.
pub struct SpinPingPong;

/// Event-driven latency peer; see the module documentation.
pub struct EventfdPingPong;

impl Workload for SpinPingPong {
    fn name(&self) -> &str {
        super::SPIN_PINGPONG
    }

    fn describe(&self) -> &str {
        "polling latency peer: two threads spin on cache-line-padded atomics"
    }

    fn role(&self) -> Role {
        Role::Peer
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
            let echo = s.spawn(|| link.echo());
            let run = ping_pong(&mut link.client(), ctl);
            let echo_cpu = join(echo, "spin echo")?;
            Ok(latency_measurement(run?, echo_cpu))
        })
    }
}

impl Workload for EventfdPingPong {
    fn name(&self) -> &str {
        super::EVENTFD_PINGPONG
    }

    fn describe(&self) -> &str {
        "event-driven latency peer: two threads block in read() on a pair of eventfds"
    }

    fn role(&self) -> Role {
        Role::Peer
    }

    fn kind(&self) -> Kind {
        Kind::Latency(WaitMode::EventDriven)
    }

    fn axes(&self) -> Axes {
        Axes::SmallestSize
    }

    fn run(&self, _cell: &CellConfig, ctl: &Control) -> Result<Measurement, WorkloadError> {
        let link = EventfdLink::new()?;
        std::thread::scope(|s| {
            let echo = s.spawn(|| link.echo());
            let run = ping_pong(&mut link.client(), ctl);
            let echo_cpu = join(echo, "eventfd echo")?;
            let run = run?;
            Ok(latency_measurement(run, echo_cpu?))
        })
    }
}

/// A latency cell's measurement; both sides' CPU times cover the window only.
fn latency_measurement(run: PingPongRun, echo: crate::cpu::CpuTime) -> Measurement {
    let mut m = Measurement {
        frames: run.round_trips,
        elapsed: run.elapsed,
        latency: run.recorder.summary(),
        ..Measurement::default()
    };
    m.add_cpu("client", run.client_cpu);
    m.add_cpu("echo", echo);
    m
}
