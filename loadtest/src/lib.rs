//! pvnet's load-test framework.
//!
//! Every number loadtest prints is meant to be read as a ratio: the pvnet data path
//! (netfront ⇄ netback) is measured in the same run, with the same frame sizes and the
//! same report columns, as
//!
//! * a **limit** — [`peers::memcpy`]: one thread copying frames, the most a copy-based
//!   path can move on this machine, and
//! * **peers** — [`peers::ringbuf_peer`] (a lock-free SPSC byte ring, what a tuned
//!   user-space path does) and [`peers::crossbeam_peer`] (a channel of per-frame
//!   `Vec<u8>`, what a straightforward Rust program does),
//!
//! so the ratios hold on a noisy, shared machine where absolute numbers do not.
//!
//! The pieces:
//! * [`workload`]: the [`Workload`] trait every measured thing implements and the
//!   [`Registry`] the pvnet scenarios register into.
//! * [`cell`]: the matrix axes (frame size, direction, queue pairs) and [`CellConfig`].
//! * [`control`]: the stop signal and timer that bound every cell in time.
//! * [`measurement`] and [`cpu`]: what a run returns and how CPU time is taken per thread.
//! * [`latency`]: the ping-pong harness (hdrhistogram) for polling and event-driven modes.
//! * [`runner`] and [`ratio`]: planning and running the matrix, ratios to references.
//! * [`report`] and [`machine`]: table, JSON, SVG plot and the machine they ran on.
//! * [`cli`] and [`app`]: the command line.

pub mod app;
pub mod cell;
pub mod cli;
pub mod control;
pub mod cpu;
pub mod frame;
pub mod host;
pub mod iperf3;
pub mod latency;
pub mod machine;
pub mod measurement;
pub mod peers;
pub mod pvnet;
pub mod ratio;
pub mod report;
pub mod runner;
pub mod timestamp;
pub mod workload;

pub use cell::{CellConfig, Direction, MatrixSpec};
pub use control::Control;
pub use cpu::CpuTime;
pub use latency::{LatencySummary, WaitMode};
pub use measurement::{Measurement, SideCpu};
pub use workload::{Axes, Kind, Registry, Role, Unsupported, Workload, WorkloadError};
