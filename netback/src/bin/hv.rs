//! `hv`: pvnet's hypervisor daemon with Dom0's netback, and its xl-style tools.
//!
//! ```text
//! hv serve                          # guests reach each other through a learning switch
//! sudo hv serve --bridge br0        # every vif's TAP joins br0 (vif<domid>.<devid>)
//! hv list | hv network-list DOMID | hv xenstore-ls /local/domain
//! ```
//!
//! The command line is `hv`'s own ([`hv::daemon::cli`]); this binary adds netback as
//! Dom0's backend ([`netback::daemon_backend::NetbackFactory`]).

fn main() -> std::process::ExitCode {
    hv::daemon::cli::main(Some(&netback::daemon_backend::NetbackFactory::default()))
}
