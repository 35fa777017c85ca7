//! iperf3 compatibility: a server and a client that speak iperf3's protocol well
//! enough that Debian's `iperf3` works against them unchanged, in both roles.
//!
//! Scope: TCP data streams, `-t` / `-n` / `-k` / `-P` / `-R` / `-l` / `-i`, and JSON
//! output shaped like iperf3's `-J` (`start` / `intervals` / `end`, with `sum_sent`
//! and `sum_received`). Anything else a client asks for (UDP, SCTP, `--bidir`, `-b`,
//! `-O`, socket options, authentication) is refused with iperf3's own `SERVER_ERROR`
//! and error number, so the real client prints its own error and exits.
//!
//! The protocol engine ([`server::Server`], [`client::Client`]) is a poll-driven state
//! machine over the [`net::Net`] abstraction, so the same code runs on the kernel's TCP
//! ([`net::StdNet`]) and on smoltcp inside a pvnet guest ([`smol::SmolNet`]).
//!
//! Modules, one job each:
//! * [`proto`]: states, error numbers, cookie, framing — iperf3's wire constants.
//! * [`ctrl`]: the buffered, bounded control connection.
//! * [`params`]: the parameters JSON and what we support.
//! * [`stats`]: byte counts, intervals and the results JSON.
//! * [`data`]: moving blocks on the data streams.
//! * [`server`], [`client`]: the two roles.
//! * [`report`]: the outcome, the `-J` document and a text summary.
//! * [`net`], [`smol`]: the stacks.
//! * [`cli`]: `loadtest iperf3 ...`.

pub mod cli;
pub mod client;
pub mod ctrl;
pub mod data;
pub mod net;
pub mod params;
pub mod proto;
pub mod report;
pub mod server;
pub mod smol;
pub mod stats;

pub use client::{Client, ClientConfig};
pub use net::{Net, StdNet};
pub use params::TestParams;
pub use report::{Outcome, StreamOutcome};
pub use server::{Server, ServerConfig, TestError};
