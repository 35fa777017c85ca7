//! The counters the loadtest process and its guest process share in daemon mode: one
//! page of a file in the run's private directory, mapped `MAP_SHARED` by both.
//!
//! Commands and results travel as lines on the guest's stdin/stdout ([`super::child`]);
//! what must be read *during* a window without disturbing it — how many frames the
//! guest verified so far (host→guest is measured at the instant the window closes,
//! exactly as in embedded mode) and the parent's "window closed" / "drained" flag — is
//! read and written here with plain atomics, as the embedded mode does with atomics in
//! one address space.
//!
//! Every slot is an `AtomicU64`: any bit pattern the other process writes is a valid
//! value, so a confused or hostile peer can give wrong numbers but not undefined
//! behaviour.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

/// What the board holds.
#[repr(C)]
pub struct Slots {
    /// Frames the guest received and verified in the current host→guest cell
    /// (guest → parent).
    pub received: AtomicU64,
    /// Raised by the parent (nonzero): for guest→host "the window closed, stop
    /// sending"; for host→guest "everything arrived, stop receiving". The guest
    /// clears it before it answers `go`.
    pub stop: AtomicU64,
}

/// Bytes mapped: one page, more than [`Slots`] needs.
const BOARD_LEN: usize = 4096;
const _: () = assert!(std::mem::size_of::<Slots>() <= BOARD_LEN);

/// A mapping of the board file.
pub struct Board {
    base: NonNull<Slots>,
}

// SAFETY: the mapping is only accessed through atomics, so sharing it between threads
// is as safe as sharing the atomics themselves.
unsafe impl Send for Board {}
// SAFETY: see above.
unsafe impl Sync for Board {}

impl Board {
    /// Creates (or truncates) the board file at `path`, zeroed, and maps it.
    pub fn create(path: &Path) -> io::Result<Board> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        f.set_len(BOARD_LEN as u64)?;
        Board::map(&f)
    }

    /// Maps the existing board file at `path` (the guest's side).
    pub fn open(path: &Path) -> io::Result<Board> {
        let f = OpenOptions::new().read(true).write(true).open(path)?;
        if f.metadata()?.len() < BOARD_LEN as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is shorter than {BOARD_LEN} bytes", path.display()),
            ));
        }
        Board::map(&f)
    }

    fn map(f: &std::fs::File) -> io::Result<Board> {
        // SAFETY: a fresh shared mapping of a file we hold open and that is at least
        // BOARD_LEN bytes long (set or checked by the callers); the kernel picks the
        // address. The mapping outlives the descriptor, which may close after this.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                BOARD_LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast::<Slots>()).ok_or_else(|| io::Error::other("mmap"))?;
        Ok(Board { base })
    }

    /// The shared slots.
    pub fn slots(&self) -> &Slots {
        // SAFETY: the mapping is page aligned, BOARD_LEN ≥ size_of::<Slots>() and lives
        // as long as `self`; Slots holds only atomics, valid for any bytes.
        unsafe { self.base.as_ref() }
    }

    /// True once the parent raised `stop`.
    pub fn stopped(&self) -> bool {
        self.slots().stop.load(Ordering::Acquire) != 0
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the region `map` created; no reference into it
        // outlives `self` (`slots` borrows `self`).
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), BOARD_LEN);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_mappings_of_one_file_see_each_others_writes() {
        let dir = std::env::temp_dir().join(format!("lt-board-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("board");
        let a = Board::create(&path).expect("create");
        let b = Board::open(&path).expect("open");
        assert_eq!(b.slots().received.load(Ordering::Acquire), 0);
        a.slots().received.store(42, Ordering::Release);
        assert_eq!(b.slots().received.load(Ordering::Acquire), 42);
        assert!(!a.stopped());
        b.slots().stop.store(1, Ordering::Release);
        assert!(a.stopped());
        drop((a, b));
        std::fs::write(&path, b"short").expect("truncate");
        assert!(Board::open(&path).is_err(), "a short file is refused");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
