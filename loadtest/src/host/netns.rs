//! The throw-away network namespace host mode runs in: created with `ip netns add`,
//! holding one Linux bridge, and deleted with `ip netns del` when the guard drops
//! (on success, on error, and after Ctrl-C, which [`super::signal`] turns into an
//! orderly return).

use std::path::PathBuf;
use std::process::Command;

use super::HostError;

/// The bridge host mode creates inside its namespace; the guest's TAP is enslaved to
/// it, as Xen's `vif-bridge` script enslaves `vif<domid>.<devid>`.
pub const BRIDGE: &str = "ltbr0";

/// Runs `ip ARGS`; an error carries its stderr.
fn ip(args: &[&str]) -> Result<(), HostError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| HostError::Setup(format!("running ip {}: {e}", args.join(" "))))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(HostError::Setup(format!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// A named network namespace with [`BRIDGE`] up in it; deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `name` and sets up the bridge. If any step fails the namespace is
    /// deleted again before the error is returned.
    pub fn create(name: &str) -> Result<Netns, HostError> {
        ip(&["netns", "add", name])?;
        // From here on the guard owns the namespace, so `?` cleans up.
        let ns = Netns {
            name: name.to_owned(),
        };
        // Only the traffic host mode makes: no IPv6 autoconfiguration or MLD frames
        // reaching the guest. Best effort (the receiver ignores foreign frames anyway).
        for key in [
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ] {
            let _ = Command::new("ip")
                .args(["netns", "exec", name, "sysctl", "-qw", key])
                .output();
        }
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        // No STP and no forwarding delay: the TAP forwards as soon as it is enslaved.
        ip(&[
            "-n",
            name,
            "link",
            "add",
            BRIDGE,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ])?;
        ip(&["-n", name, "link", "set", BRIDGE, "up"])?;
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its bind-mount path (what `setns` opens).
    pub fn path(&self) -> PathBuf {
        netback::tap::netns_path(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            log::warn!("loadtest host: removing namespace {}: {e}", self.name);
        }
    }
}

/// True if `ip netns list` shows `name` (for tests and the leak check).
pub fn exists(name: &str) -> bool {
    Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name))
        })
        .unwrap_or(false)
}
