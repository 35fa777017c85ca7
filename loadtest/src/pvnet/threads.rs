//! CPU time of Dom0's side: netback's threads, which loadtest does not run itself.
//!
//! The guest side is loadtest's own threads and is timed with
//! [`crate::cpu::CpuStopwatch`] from inside them. netback spawns its threads privately
//! (per queue `vif<domid>.<devid>-q<n>-tx` / `-rx`, plus `netback-xenbus`), so they are
//! found by name under `/proc/self/task` among the threads that appeared while the
//! cell's netback started and connected, and read from outside:
//!
//! * the total from the thread's CPU-time clock (`clock_gettime` on the clock id Linux
//!   builds from a thread id, `MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED)`), exact to
//!   the nanosecond;
//! * the user/system split from `/proc/self/task/<tid>/stat` (`utime`, `stime`), which
//!   ticks at `USER_HZ` only: the exact total is divided in the ratio of the ticks (all
//!   counted as user time while no tick has been seen).

use std::collections::BTreeSet;
use std::time::Duration;

use crate::cpu::CpuTime;

/// `CPUCLOCK_PERTHREAD_MASK` (include/linux/posix-timers.h).
const CPUCLOCK_PERTHREAD_MASK: libc::clockid_t = 4;
/// `CPUCLOCK_SCHED`: the scheduler's runtime of the task.
const CPUCLOCK_SCHED: libc::clockid_t = 2;

/// Thread ids of this process, with their names.
pub fn tasks() -> Vec<(i32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let tid: i32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        Some((tid, comm.trim_end().to_owned()))
    })
    .collect()
}

/// The ids of every thread of this process.
pub fn task_ids() -> BTreeSet<i32> {
    tasks().into_iter().map(|(t, _)| t).collect()
}

/// True for the name of a netback thread serving guest `domid`, or of netback's
/// control thread.
fn is_netback_thread(name: &str, domids: &[u16]) -> bool {
    name == "netback-xenbus"
        || domids
            .iter()
            .any(|d| name.starts_with(&format!("vif{d}.")) && name.contains("-q"))
}

/// netback's threads for `domids` that are not in `before` (threads that existed
/// before this cell's netback started belong to someone else).
pub fn netback_threads(before: &BTreeSet<i32>, domids: &[u16]) -> Vec<i32> {
    tasks()
        .into_iter()
        .filter(|(t, name)| !before.contains(t) && is_netback_thread(name, domids))
        .map(|(t, _)| t)
        .collect()
}

/// One thread's counters at one moment.
#[derive(Clone, Copy, Debug, Default)]
struct Reading {
    total: Duration,
    utime_ticks: u64,
    stime_ticks: u64,
}

fn read(tid: i32) -> Option<Reading> {
    let clock = (!(tid as libc::clockid_t) << 3) | CPUCLOCK_PERTHREAD_MASK | CPUCLOCK_SCHED;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer to a local; an
    // invalid clock id (a thread that exited) only makes it fail.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return None;
    }
    let total = Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0).min(999_999_999),
    );
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // The name (field 2) is in parentheses and may contain spaces: split after it.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime_ticks = fields.get(11)?.parse().ok()?;
    let stime_ticks = fields.get(12)?.parse().ok()?;
    Some(Reading {
        total,
        utime_ticks,
        stime_ticks,
    })
}

/// Readings of a set of threads taken when a window opened.
pub struct ThreadSet {
    start: Vec<(i32, Reading)>,
}

impl ThreadSet {
    /// Reads `tids` now.
    pub fn start(tids: &[i32]) -> Self {
        ThreadSet {
            start: tids.iter().filter_map(|&t| Some((t, read(t)?))).collect(),
        }
    }

    /// Threads being timed.
    pub fn len(&self) -> usize {
        self.start.len()
    }

    /// True if no thread could be read.
    pub fn is_empty(&self) -> bool {
        self.start.is_empty()
    }

    /// CPU time each thread used since [`ThreadSet::start`], summed. A thread that
    /// exited meanwhile counts nothing.
    pub fn elapsed(&self) -> CpuTime {
        let mut sum = CpuTime::default();
        for (tid, a) in &self.start {
            let Some(b) = read(*tid) else { continue };
            let total = b.total.saturating_sub(a.total);
            let u = b.utime_ticks.saturating_sub(a.utime_ticks);
            let s = b.stime_ticks.saturating_sub(a.stime_ticks);
            let user = if u + s == 0 {
                total
            } else {
                total.mul_f64(u as f64 / (u + s) as f64)
            };
            sum += CpuTime {
                user,
                system: total.saturating_sub(user),
            };
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    #[test]
    fn another_threads_cpu_time_is_read_by_tid() {
        let before = task_ids();
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let h = std::thread::Builder::new()
                .name("vif7.0-q0-tx".into())
                .spawn_scoped(s, || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                    }
                })
                .expect("spawn");
            let tids = loop {
                let t = netback_threads(&before, &[7]);
                if !t.is_empty() {
                    break t;
                }
                std::thread::yield_now();
            };
            assert_eq!(tids.len(), 1, "only the new vif7 thread");
            assert!(netback_threads(&before, &[8]).is_empty());
            let set = ThreadSet::start(&tids);
            assert_eq!(set.len(), 1);
            let t = Instant::now();
            while t.elapsed() < Duration::from_millis(60) {
                std::thread::sleep(Duration::from_millis(5));
            }
            let used = set.elapsed();
            stop.store(true, Ordering::Relaxed);
            h.join().expect("spinner");
            // Others share the machine: require a fraction of the wall time only.
            assert!(used.total() >= Duration::from_millis(5), "{used:?}");
            assert!(used.total() <= Duration::from_millis(200), "{used:?}");
        });
    }
}
