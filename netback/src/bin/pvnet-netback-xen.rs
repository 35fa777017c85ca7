//! `pvnet-netback-xen`: pvnet's netback as a dom0 daemon on a real Xen host.
//!
//! It serves every vif the toolstack creates under `/local/domain/<own>/backend/vif`
//! (what `xl create` makes for `vif=['mac=...,script=NOOP']`, with no kernel
//! `xen-netback` loaded): advertises the `feature-*` keys and `state = 2` (InitWait) at
//! once — `xl create` waits for that — maps each queue's rings through
//! `/dev/xen/gntdev`, binds the event channels through `/dev/xen/evtchn`, and bridges
//! the vif to a TAP `vif<domid>.<devid>` (optionally enslaved to a Linux bridge), the
//! way Xen's `vif-bridge` hotplug script wires the kernel's backend netdev.
//!
//! ```text
//! pvnet-netback-xen [--bridge BR] [--max-queues N] [--mtu N] [--busy-poll N]
//!                   [--status-every SECS] [--stop-file PATH] [--verbose]
//! ```
//!
//! A status line per vif is printed every `--status-every` seconds and at exit. It
//! stops (closing every vif as Linux's netback does on unload) when `--stop-file`
//! appears; SIGTERM ends it at once without the close handshake.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hv::xen::XenBackendEnv;
use netback::port::TapPort;
use netback::{Netback, NetbackConfig, TapPortConfig, VifInfo};

const USAGE: &str = "usage: pvnet-netback-xen [--bridge BR] [--max-queues N] [--mtu N] \
[--busy-poll N] [--status-every SECS] [--stop-file PATH] [--verbose]";

/// Command-line options.
struct Options {
    bridge: Option<String>,
    max_queues: u32,
    mtu: Option<u32>,
    busy_poll: Option<u32>,
    status_every: Duration,
    stop_file: Option<PathBuf>,
    verbose: bool,
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut o = Options {
        bridge: None,
        max_queues: 4,
        mtu: None,
        busy_poll: None,
        status_every: Duration::from_secs(5),
        stop_file: None,
        verbose: false,
    };
    let mut args = args.peekable();
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        let number = |name: &str, v: String| -> Result<u32, String> {
            v.parse::<u32>()
                .map_err(|_| format!("{name}: '{v}' is not a number"))
        };
        match a.as_str() {
            "--bridge" => o.bridge = Some(value("--bridge")?),
            "--max-queues" => o.max_queues = number(&a, value(&a)?)?,
            "--mtu" => o.mtu = Some(number(&a, value(&a)?)?),
            "--busy-poll" => o.busy_poll = Some(number(&a, value(&a)?)?),
            "--status-every" => {
                o.status_every = Duration::from_secs(u64::from(number(&a, value(&a)?)?).max(1))
            }
            "--stop-file" => o.stop_file = Some(PathBuf::from(value(&a)?)),
            "--verbose" | "-v" => o.verbose = true,
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument '{other}'\n{USAGE}")),
        }
    }
    Ok(o)
}

/// A `log` backend writing `LEVEL target: message` lines to stderr.
struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            let _ = writeln!(
                std::io::stderr().lock(),
                "{:<5} {}: {}",
                r.level(),
                r.target(),
                r.args()
            );
        }
    }

    fn flush(&self) {}
}

static LOGGER: StderrLogger = StderrLogger;

/// One status line for a vif (key=value, so scripts can grep it).
fn status_line(v: &VifInfo, tap: &TapPort) -> String {
    let f = &v.features;
    let c = &v.counters;
    let mut s = format!(
        "vif {} state={} frontend={} queues={} split-evtchn={} connects={} \
         fe-sg={} fe-gso-tcpv4={} fe-gso-tcpv6={} fe-csum={} fe-ipv6-csum={} fe-rx-notify={} \
         tx={}/{}B drop={} err={} rx={}/{}B drop={} err={}",
        v.id,
        v.state as u32,
        v.frontend_state as u32,
        v.num_queues,
        u8::from(v.split_event_channels),
        v.connects,
        u8::from(f.sg),
        u8::from(f.gso_tcpv4),
        u8::from(f.gso_tcpv6),
        u8::from(!f.no_csum_offload),
        u8::from(f.ipv6_csum_offload),
        u8::from(f.rx_notify),
        c.tx_packets,
        c.tx_bytes,
        c.tx_drops,
        c.tx_errors,
        c.rx_packets,
        c.rx_bytes,
        c.rx_drops,
        c.rx_errors,
    );
    if let Some(st) = tap.stats(v.id) {
        s.push_str(&format!(
            " tap={} tap-queues={} tap-offloads={:?} to-host={} to-host-drop={} \
             from-host={} to-guest={} to-guest-drop={} segmented={} tap-io-uring-queues={}",
            st.tap,
            st.queues,
            st.offloads,
            st.to_host_frames,
            st.to_host_dropped + st.to_host_rejected + st.to_host_bad_offload,
            st.from_host_frames,
            st.to_guest_frames,
            st.to_guest_dropped,
            st.to_guest_segmented,
            st.io_uring_queues,
        ));
        if let Some(why) = &st.io_uring_unavailable {
            s.push_str(&format!(" tap-io-uring-off=\"{why}\""));
        }
    } else if let Some(why) = tap.failure(v.id) {
        s.push_str(&format!(" tap-failed=\"{why}\""));
    }
    if let Some(d) = &v.disabled {
        s.push_str(&format!(" disabled=\"{d}\""));
    }
    s
}

fn print_status(nb: &Netback, tap: &TapPort) {
    let mut out = std::io::stdout().lock();
    for v in nb.vifs() {
        let _ = writeln!(out, "pvnet-netback: {}", status_line(&v, tap));
    }
    let _ = out.flush();
}

fn run(o: Options) -> Result<(), String> {
    let env = XenBackendEnv::open().map_err(|e| format!("opening /dev/xen: {e}"))?;
    let tap = Arc::new(TapPort::new(TapPortConfig {
        bridge: o.bridge.clone(),
        mtu: o.mtu,
        ..TapPortConfig::default()
    }));
    let mut cfg = NetbackConfig::new(tap.clone());
    cfg.max_queues = o.max_queues;
    if let Some(b) = o.busy_poll {
        cfg.busy_poll = b;
    }
    let domid = hv::env::BackendEnv::domid(&env);
    let nb = Netback::start(env, cfg).map_err(|e| format!("starting netback: {e}"))?;
    println!(
        "pvnet-netback: serving /local/domain/{domid}/backend/vif (max {} queue(s), bridge {})",
        o.max_queues,
        o.bridge.as_deref().unwrap_or("none")
    );
    let mut last = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        if o.stop_file.as_ref().is_some_and(|p| p.exists()) {
            break;
        }
        if last.elapsed() >= o.status_every {
            print_status(&nb, &tap);
            last = Instant::now();
        }
    }
    print_status(&nb, &tap);
    nb.shutdown();
    println!("pvnet-netback: stopped");
    Ok(())
}

fn main() -> ExitCode {
    let o = match parse_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(if o.verbose {
            log::LevelFilter::Debug
        } else {
            log::LevelFilter::Info
        });
    }
    match run(o) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pvnet-netback-xen: {e}");
            ExitCode::FAILURE
        }
    }
}
