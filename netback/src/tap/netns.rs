//! Running code inside a named network namespace.
//!
//! `setns(CLONE_NEWNET)` changes the namespace of the calling thread only, so the work is
//! done on a short-lived helper thread: fds and sockets it opens stay bound to that
//! namespace after the thread ends, and the caller's threads are never moved.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::{sys, TapError};

/// The file `ip netns add NAME` creates for a namespace (`/run/netns/NAME`).
pub fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// Runs `f` on a helper thread that has entered the network namespace at `path`, and
/// returns its result. A panic in `f` is resumed on the caller.
pub fn run_in_netns<T, F>(path: &Path, f: F) -> Result<T, TapError>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let err = |source| TapError::Netns {
        path: path.display().to_string(),
        source,
    };
    let ns = File::open(path).map_err(err)?;
    std::thread::scope(|s| {
        let worker = s.spawn(move || -> Result<T, std::io::Error> {
            sys::setns_net(&ns)?;
            Ok(f())
        });
        match worker.join() {
            Ok(r) => r.map_err(err),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}
