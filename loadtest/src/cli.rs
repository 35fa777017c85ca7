//! The command line (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::cell::{Direction, DEFAULT_SIZES};
use crate::runner::Only;

const AFTER_HELP: &str = "\
Every cell is measured for --duration seconds (by default the run is sized to about
--budget seconds in total), one cell at a time. The limit (memcpy) and the peers
(ringbuf, crossbeam, spin-pingpong, eventfd-pingpong) run in the same process with the
same frame sizes, so pvnet's numbers are reported as ratios to them: those hold on a
noisy, shared machine where absolute numbers do not.

pvnet series: `pvnet` (netfront ⇄ netback on the embedded hypervisor, every size ×
direction × queue pairs), `pvnet-evtchn` and `pvnet-poll` (one-frame round trips
through netback's reflector, the guest sleeping on its event channel or polling).
The largest default size is 65535, not 65536: netif_tx_request.size is 16-bit.

Results go to results/<UTC timestamp>/ (or --out): results.json, table.txt and
throughput.svg. The exit status is 1 if any cell failed verification or stalled.

Examples:
  loadtest                                  the whole matrix, about one minute
  loadtest peers --sizes 64,1514 -d 0.5     only the limit and peers, two sizes
  loadtest --only pvnet --directions g2d --queues 1
  loadtest --json-only > run.json";

/// pvnet load tests: the netfront⇄netback data path against limits and peers measured
/// in the same run.
#[derive(Debug, Parser)]
#[command(
    name = "loadtest",
    version,
    about,
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to do (default: run).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of the default `run` command.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the matrix: limit, peers and pvnet (the default).
    Run(RunArgs),
    /// Run only the limit and the peers (same as `run --only peers`).
    Peers(RunArgs),
    /// List the registered series and the cells they would run, without running them.
    List(RunArgs),
    /// Host mode (root): the guest against the host kernel through a TAP on a bridge,
    /// in a throw-away network namespace; the guest a thread (`--guest embedded`) or a
    /// separate process of an hv daemon (`--guest daemon`), or both compared.
    Host(crate::host::HostArgs),
}

/// Options of `run`, `peers` and `list`.
#[derive(Clone, Debug, Args)]
pub struct RunArgs {
    /// Seconds per cell (default: --budget divided among the cells that run, between 0.2
    /// and 5).
    #[arg(short, long, value_name = "SECS")]
    pub duration: Option<f64>,

    /// Target length of the whole run in seconds, when --duration is not given.
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    pub budget: f64,

    /// Frame sizes in bytes (Ethernet header included; above 9018 = GSO super-frame).
    #[arg(long, value_name = "BYTES,...", value_delimiter = ',', default_values_t = DEFAULT_SIZES)]
    pub sizes: Vec<u32>,

    /// Directions for pvnet cells.
    #[arg(
        long,
        value_name = "DIR,...",
        value_delimiter = ',',
        value_enum,
        default_values_t = Direction::ALL
    )]
    pub directions: Vec<Direction>,

    /// Queue-pair counts for pvnet cells.
    #[arg(long, value_name = "N,...", value_delimiter = ',', default_values_t = [1u16, 2])]
    pub queues: Vec<u16>,

    /// Run only these series.
    #[arg(long, value_enum)]
    pub only: Option<Only>,

    /// Results folder (default: results/<UTC timestamp>).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Print only the JSON document on stdout (no table, no progress).
    #[arg(long)]
    pub json_only: bool,

    /// Do not write throughput.svg.
    #[arg(long)]
    pub no_plot: bool,

    /// No progress bar and no table: print only the results folder.
    #[arg(short, long)]
    pub quiet: bool,
}

impl Default for RunArgs {
    fn default() -> Self {
        RunArgs {
            duration: None,
            budget: 60.0,
            sizes: DEFAULT_SIZES.to_vec(),
            directions: Direction::ALL.to_vec(),
            queues: vec![1, 2],
            only: None,
            out: None,
            json_only: false,
            no_plot: false,
            quiet: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_and_lists_parse() {
        let c = Cli::try_parse_from(["loadtest"]).expect("no args is valid");
        assert!(c.command.is_none());
        assert_eq!(c.run.sizes, DEFAULT_SIZES.to_vec());
        assert_eq!(c.run.queues, vec![1, 2]);
        let c = Cli::try_parse_from([
            "loadtest",
            "peers",
            "--sizes",
            "64,1514",
            "-d",
            "0.5",
            "--directions",
            "g2d,bidir",
        ])
        .expect("valid");
        match c.command {
            Some(Command::Peers(a)) => {
                assert_eq!(a.sizes, vec![64, 1514]);
                assert_eq!(a.duration, Some(0.5));
                assert_eq!(
                    a.directions,
                    vec![Direction::GuestToDom0, Direction::Bidirectional]
                );
            }
            other => panic!("parsed {other:?}"),
        }
        let c = Cli::try_parse_from(["loadtest", "host"]).expect("valid");
        match c.command {
            Some(Command::Host(h)) => assert_eq!(h.guest, crate::host::GuestMode::Embedded),
            other => panic!("parsed {other:?}"),
        }
        let c = Cli::try_parse_from(["loadtest", "host", "--guest", "both", "-d", "0.5"])
            .expect("valid");
        match c.command {
            Some(Command::Host(h)) => {
                assert_eq!(h.guest, crate::host::GuestMode::Both);
                assert_eq!(h.duration, 0.5);
            }
            other => panic!("parsed {other:?}"),
        }
        assert!(Cli::try_parse_from(["loadtest", "host", "--guest", "vm"]).is_err());
        assert!(Cli::try_parse_from(["loadtest", "--sizes", "sixty"]).is_err());
        assert!(Cli::try_parse_from(["loadtest", "--only", "everything"]).is_err());
    }
}
