//! Wake-up latency of event channels: two threads ping-pong over two channels,
//! pinned to the same core or to different cores, with the receiver sleeping at
//! once (eventfd path), spinning only (no system call) or doing the default
//! spin-then-sleep.
//!
//! `cargo run --release -p event-channel --example wakeup_latency [iterations]`
//!
//! Prints one-way latency (half a round trip) median and p99 per configuration,
//! and how many eventfd writes each hop cost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use event_channel::{DomId, EventChannels, Port, Waiter, DEFAULT_SPIN};

const BACK: DomId = 0;
const FRONT: DomId = 1;
/// Long enough that a spinning waiter never reaches its sleep phase.
const SPIN_FOREVER: Duration = Duration::from_secs(3600);
/// A wake-up slower than this is reported as lost.
const LOST: Duration = Duration::from_secs(5);

fn cpus_allowed() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; all-zero is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live local of the size we pass.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return vec![0];
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `c` is below CPU_SETSIZE, the bound CPU_ISSET requires.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

fn pin(cpu: usize) {
    // SAFETY: as in `cpus_allowed`; `cpu` comes from the allowed set, below CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            eprintln!("warning: could not pin to cpu {cpu}");
        }
    }
}

struct Channels {
    hub: Arc<EventChannels>,
    /// FRONT's port that sends "ping" to BACK.
    ping_tx: Port,
    /// BACK's port that receives "ping".
    ping_rx: Port,
    /// BACK's port that sends "pong".
    pong_tx: Port,
    /// FRONT's port that receives "pong".
    pong_rx: Port,
}

fn setup() -> Result<Channels, event_channel::EvtchnError> {
    let hub = Arc::new(EventChannels::new());
    hub.add_domain(BACK, 16)?;
    hub.add_domain(FRONT, 16)?;
    let ping_tx = hub.alloc_unbound(FRONT, BACK)?;
    let ping_rx = hub.bind_interdomain(BACK, FRONT, ping_tx)?;
    let pong_rx = hub.alloc_unbound(FRONT, BACK)?;
    let pong_tx = hub.bind_interdomain(BACK, FRONT, pong_rx)?;
    // bind_interdomain conservatively marks the new port pending: start clean.
    hub.test_and_clear_pending(BACK, ping_rx)?;
    hub.test_and_clear_pending(BACK, pong_tx)?;
    Ok(Channels {
        hub,
        ping_tx,
        ping_rx,
        pong_tx,
        pong_rx,
    })
}

struct RunResult {
    one_way_ns: Vec<u64>,
    eventfd_writes: u64,
    sleeps: u64,
    lost: bool,
}

fn run(cpu_a: usize, cpu_b: usize, spin: Duration, iters: usize) -> RunResult {
    let ch = match setup() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("setup failed: {e}");
            std::process::exit(1);
        }
    };
    let warmup = (iters / 10).max(10);
    let mut back_waiter: Waiter = ch.hub.waiter(BACK, ch.ping_rx).expect("waiter");
    let mut front_waiter: Waiter = ch.hub.waiter(FRONT, ch.pong_rx).expect("waiter");
    back_waiter.set_spin(spin);
    front_waiter.set_spin(spin);

    let hub_b = ch.hub.clone();
    let pong_tx = ch.pong_tx;
    let total = warmup + iters;
    let echo = std::thread::spawn(move || {
        pin(cpu_b);
        for _ in 0..total {
            if !back_waiter.wait(Some(LOST)) {
                return (false, back_waiter.stats());
            }
            if hub_b.send(BACK, pong_tx).is_err() {
                return (false, back_waiter.stats());
            }
        }
        (true, back_waiter.stats())
    });

    pin(cpu_a);
    let mut samples = Vec::with_capacity(iters);
    let mut lost = false;
    for i in 0..total {
        let t0 = Instant::now();
        if ch.hub.send(FRONT, ch.ping_tx).is_err() || !front_waiter.wait(Some(LOST)) {
            lost = true;
            break;
        }
        let rtt = t0.elapsed();
        if i >= warmup {
            samples.push((rtt.as_nanos() / 2) as u64);
        }
    }
    let (ok, back_stats) = echo.join().unwrap_or((false, Default::default()));
    let front_stats = front_waiter.stats();
    samples.sort_unstable();
    RunResult {
        one_way_ns: samples,
        eventfd_writes: back_stats.eventfd_writes + front_stats.eventfd_writes,
        sleeps: back_stats.sleeps + front_stats.sleeps,
        lost: lost || !ok,
    }
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)] as f64 / 1000.0
}

fn main() {
    let iters: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let cpus = cpus_allowed();
    let first = cpus.first().copied().unwrap_or(0);
    let mut placements = vec![("same core", first, first)];
    if let Some(&second) = cpus.get(1) {
        placements.push(("cross core", first, second));
    } else {
        eprintln!("only one CPU available: skipping the cross-core runs");
    }
    let modes = [
        ("sleep (eventfd)", Duration::ZERO),
        ("spin only", SPIN_FOREVER),
        ("default spin-then-sleep", DEFAULT_SPIN),
    ];
    println!(
        "{:<11} {:<24} {:>8} {:>10} {:>10} {:>15} {:>11}",
        "placement", "receiver", "samples", "median µs", "p99 µs", "eventfd wr/hop", "sleeps/hop"
    );
    for (pname, a, b) in &placements {
        for (mname, spin) in &modes {
            // Two spinners on one core only progress when the scheduler preempts
            // one of them (milliseconds per hop): a few hundred hops show it.
            let n = if a == b && *spin == SPIN_FOREVER {
                (iters / 100).max(50)
            } else {
                iters
            };
            let r = run(*a, *b, *spin, n);
            let hops = 2 * (n + (n / 10).max(10));
            println!(
                "{:<11} {:<24} {:>8} {:>10.2} {:>10.2} {:>15.3} {:>11.3}{}",
                pname,
                mname,
                r.one_way_ns.len(),
                pct(&r.one_way_ns, 0.5),
                pct(&r.one_way_ns, 0.99),
                r.eventfd_writes as f64 / hops as f64,
                r.sleeps as f64 / hops as f64,
                if r.lost { "  LOST WAKE-UP" } else { "" }
            );
        }
    }
}
