//! `hv`: pvnet's hypervisor daemon (`hv serve`) and its xl-style tools.
//!
//! This build links no Dom0 backend: `hv serve` runs the hypervisor core (domains,
//! grants, event channels, xenstore) and guests connect, but vifs are only served by
//! a binary that also links netback and passes it to [`hv::daemon::cli::main`].

fn main() -> std::process::ExitCode {
    hv::daemon::cli::main(None)
}
