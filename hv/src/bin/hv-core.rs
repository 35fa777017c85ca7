//! `hv-core`: pvnet's hypervisor daemon and xl-style tools *without* a Dom0 backend.
//!
//! `hv-core serve` runs the hypervisor core (domains, grants, event channels,
//! xenstore) and guests connect, but nothing serves their vifs: they stay in
//! Initialising. The `hv` binary people run is netback's (`cargo run -p netback --bin
//! hv`), which passes netback to the same [`hv::daemon::cli::main`]. This one exists
//! for the hypervisor's own tests and for tools that need no network.

fn main() -> std::process::ExitCode {
    hv::daemon::cli::main(None)
}
