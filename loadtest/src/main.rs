//! `loadtest`: see `loadtest --help`, or the library documentation.

use clap::Parser;

fn main() {
    // `loadtest iperf3 ...` takes iperf3's own options (-s, -c HOST, -t, -P, -R, -J ...).
    if std::env::args_os().nth(1).is_some_and(|a| a == "iperf3") {
        std::process::exit(loadtest::iperf3::cli::main(std::env::args_os().skip(1)));
    }
    // `loadtest __host-guest ...`: the guest process `loadtest host --guest daemon`
    // starts (hidden: not for users).
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == loadtest::host::proto::GUEST_SUBCOMMAND)
    {
        std::process::exit(loadtest::host::guest_proc::main(
            std::env::args_os().skip(2),
        ));
    }
    let cli = loadtest::cli::Cli::parse();
    let registry = loadtest::Registry::standard();
    std::process::exit(loadtest::app::execute(cli, &registry));
}
