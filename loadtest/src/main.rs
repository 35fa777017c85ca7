//! `loadtest`: see `loadtest --help`, or the library documentation.

use clap::Parser;

fn main() {
    let cli = loadtest::cli::Cli::parse();
    let registry = loadtest::Registry::standard();
    std::process::exit(loadtest::app::execute(cli, &registry));
}
