//! A guest process skeleton: connect to a running `hv serve`, become a domain, run a
//! closure with its [`RemoteGuestEnv`] — the place to start netfront
//! (`Netfront::new(env, ...)`) exactly as in the embedded mode — and exit (which
//! destroys the domain).
//!
//! ```text
//! hv serve --socket /tmp/hv.sock &
//! cargo run -p hv --example guest -- --socket /tmp/hv.sock --vifs 1 --seconds 5
//! ```

use std::error::Error;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hv::client::{connect_with, default_socket_path, GuestConfig, RemoteGuestEnv};
use hv::env::{GuestEnv, XBT_NIL};

/// Connect as a guest configured by `cfg` and run `body` with the environment.
fn run_guest<T>(
    socket: &PathBuf,
    cfg: &GuestConfig,
    body: impl FnOnce(&RemoteGuestEnv) -> Result<T, Box<dyn Error>>,
) -> Result<T, Box<dyn Error>> {
    let env = connect_with(socket, cfg)?;
    body(&env)
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut socket = default_socket_path();
    let mut cfg = GuestConfig::default();
    let mut seconds = 5u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--socket" => socket = PathBuf::from(value()?),
            "--vifs" => cfg.vifs = value()?.parse()?,
            "--name" => cfg.name = value()?,
            "--seconds" => seconds = value()?.parse()?,
            other => return Err(format!("unknown argument {other}; see the doc comment").into()),
        }
    }
    run_guest(&socket, &cfg, |env| {
        let me = env.domid();
        println!(
            "domain {me} ({}) on {}",
            cfg.name,
            env.socket_path().display()
        );
        // Replace from here with the workload, e.g. netfront on `env`.
        let store = env.store();
        let vifs = store
            .directory(XBT_NIL, &format!("/local/domain/{me}/device/vif"))
            .unwrap_or_default();
        for v in &vifs {
            let mac = store.read(XBT_NIL, &format!("/local/domain/{me}/device/vif/{v}/mac"))?;
            println!("vif {v}: mac {}", String::from_utf8_lossy(&mac));
        }
        let end = Instant::now() + Duration::from_secs(seconds);
        while Instant::now() < end && env.is_connected() {
            std::thread::sleep(Duration::from_millis(100));
        }
        println!(
            "{}",
            if env.is_connected() {
                "done"
            } else {
                "the daemon went away"
            }
        );
        Ok(())
    })
}
