//! The `hv` command line: `hv serve` runs the daemon; the other commands are the
//! toolstack's (`xl list`, `xl destroy`, `xl network-list`, `xl network-detach`) and
//! the xenstore tools (`xenstore-ls`, `-read`, `-write`), talking to the daemon over
//! its socket.
//!
//! The logic lives in the library so that a binary which links Dom0's backend
//! (netback, which depends on `hv` and so cannot be linked *by* `hv`) can run the
//! very same CLI: `hv::daemon::cli::main(Some(&factory))`.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::json;

use crate::abi::xenbus::XenbusState;
use crate::client::{default_socket_path, ClientError, Toolstack};
use crate::embedded::{HvError, Hypervisor};
use crate::env::{DomId, Store, StoreError, XBT_NIL};
use crate::memory::PAGE_SIZE;

use super::{BackendFactory, BackendOptions, DaemonError, Server, ServerConfig};

/// pvnet's hypervisor daemon and its xl-style tools.
#[derive(Debug, Parser)]
#[command(name = "hv", version, about = "pvnet's hypervisor daemon (`hv serve`) and its xl-style tools", long_about = None)]
pub struct Cli {
    /// The daemon's unix socket [default: $HV_SOCKET, /run/pvnet/hv.sock as root,
    /// else $XDG_RUNTIME_DIR/pvnet/hv.sock]
    #[arg(long, global = true)]
    pub socket: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: the hypervisor core and Dom0's netback, serving guests on the socket.
    Serve {
        /// Linux bridge the vifs' TAP devices join (needs root / CAP_NET_ADMIN).
        #[arg(long)]
        bridge: Option<String>,
        /// Name prefix of the vifs' TAP devices (needs root / CAP_NET_ADMIN).
        #[arg(long)]
        tap_prefix: Option<String>,
        /// Write guest → host frames to the TAPs with one writev each instead of
        /// batching them through io_uring (the default; it falls back by itself where
        /// io_uring is unavailable).
        #[arg(long)]
        no_io_uring: bool,
        /// Read each TAP queue in a thread of its own that hands frames to netback,
        /// instead of in netback's RX thread of the vif queue (the default, one
        /// wake-up fewer per frame; a guest that falls behind then costs drops in the
        /// kernel's TAP queue rather than in netback).
        #[arg(long)]
        tap_reader_threads: bool,
    },
    /// List domains (`xl list`).
    List,
    /// List a domain's vifs with state and counters (`xl network-list`).
    NetworkList {
        /// The domain.
        domid: DomId,
    },
    /// Remove a vif from a domain (`xl network-detach`).
    NetworkDetach {
        /// The domain.
        domid: DomId,
        /// The vif's device id (`hv network-list` shows them).
        devid: u32,
    },
    /// Destroy a domain: its process is disconnected and everything it held released.
    Destroy {
        /// The domain.
        domid: DomId,
    },
    /// Print a xenstore subtree (`xenstore-ls`).
    XenstoreLs {
        /// Subtree root.
        #[arg(default_value = "/")]
        path: String,
    },
    /// Print a xenstore node's value (`xenstore-read`).
    XenstoreRead {
        /// The node.
        path: String,
    },
    /// Write a xenstore node (`xenstore-write`).
    XenstoreWrite {
        /// The node.
        path: String,
        /// Its new value.
        value: String,
    },
}

/// Errors of the CLI, each saying what to do.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    #[error(transparent)]
    Hv(#[from] HvError),
    #[error("{path}: {source}")]
    Store { path: String, source: StoreError },
    #[error("{0}")]
    Setup(String),
    #[error("writing output failed: {0}")]
    Output(#[from] io::Error),
}

/// Parse the process's arguments and run; the binary's `main`. Log records go to
/// stderr (level from `HV_LOG`: error, warn, info, debug, trace; default info for
/// `serve`, warn otherwise).
pub fn main(backend: Option<&dyn BackendFactory>) -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Serve { .. } => log::LevelFilter::Info,
        _ => log::LevelFilter::Warn,
    };
    StderrLog::install(default_level);
    let mut out = io::stdout().lock();
    match run(cli, backend, &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = out.flush();
            eprintln!("hv: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Run one parsed command line, writing its output to `out`.
pub fn run(
    cli: Cli,
    backend: Option<&dyn BackendFactory>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let socket = cli.socket.clone().unwrap_or_else(default_socket_path);
    let store_err = |path: &str| {
        let path = path.to_string();
        move |source| CliError::Store { path, source }
    };
    match cli.command {
        Command::Serve {
            bridge,
            tap_prefix,
            no_io_uring,
            tap_reader_threads,
        } => serve(
            socket,
            BackendOptions {
                bridge,
                tap_prefix,
                no_io_uring,
                tap_reader_threads,
            },
            backend,
            out,
        ),
        Command::List => {
            let list = Toolstack::connect(&socket)?.list()?;
            if cli.json {
                let v: Vec<_> = list
                    .iter()
                    .map(|d| {
                        json!({"name": d.name, "domid": d.domid, "memory_kib": d.memory_frames * (PAGE_SIZE as u64 / 1024),
                               "vifs": d.vifs, "pid": d.pid})
                    })
                    .collect();
                writeln!(out, "{}", serde_json::Value::Array(v))?;
            } else {
                writeln!(
                    out,
                    "{:<32} {:>5} {:>8} {:>5} {:>8}",
                    "Name", "ID", "Mem", "VIFs", "PID"
                )?;
                for d in &list {
                    let mib = d.memory_frames * PAGE_SIZE as u64 / (1024 * 1024);
                    let pid = d.pid.map_or("-".to_string(), |p| p.to_string());
                    writeln!(
                        out,
                        "{:<32} {:>5} {:>8} {:>5} {:>8}",
                        d.name, d.domid, mib, d.vifs, pid
                    )?;
                }
            }
            Ok(())
        }
        Command::NetworkList { domid } => {
            let vifs = Toolstack::connect(&socket)?.network_list(domid)?;
            let state = |s: u32| XenbusState::from_u32(s).map_or("?", XenbusState::name);
            if cli.json {
                let v: Vec<_> = vifs
                    .iter()
                    .map(|v| {
                        json!({"devid": v.devid, "mac": v.mac, "backend_state": state(v.backend_state),
                               "frontend_state": state(v.frontend_state),
                               "host_if": (!v.host_if.is_empty()).then_some(&v.host_if),
                               "counters": v.has_counters.then(|| json!({"tx_packets": v.tx_packets, "tx_bytes": v.tx_bytes,
                                   "rx_packets": v.rx_packets, "rx_bytes": v.rx_bytes, "drops": v.drops})),
                               "disabled": (!v.disabled.is_empty()).then_some(&v.disabled)})
                    })
                    .collect();
                writeln!(out, "{}", serde_json::Value::Array(v))?;
            } else {
                writeln!(
                    out,
                    "{:<4} {:<18} {:<13} {:<13} {:<12} {:>10} {:>12} {:>10} {:>12} {:>8}",
                    "Idx",
                    "MAC",
                    "BE-state",
                    "FE-state",
                    "Host-if",
                    "TX-pkts",
                    "TX-bytes",
                    "RX-pkts",
                    "RX-bytes",
                    "Drops"
                )?;
                for v in &vifs {
                    let n = |x: u64| {
                        if v.has_counters {
                            x.to_string()
                        } else {
                            "-".into()
                        }
                    };
                    let host = if v.host_if.is_empty() {
                        "-"
                    } else {
                        &v.host_if
                    };
                    writeln!(
                        out,
                        "{:<4} {:<18} {:<13} {:<13} {:<12} {:>10} {:>12} {:>10} {:>12} {:>8}",
                        v.devid,
                        v.mac,
                        state(v.backend_state),
                        state(v.frontend_state),
                        host,
                        n(v.tx_packets),
                        n(v.tx_bytes),
                        n(v.rx_packets),
                        n(v.rx_bytes),
                        n(v.drops)
                    )?;
                    if !v.disabled.is_empty() {
                        writeln!(out, "     disabled: {}", v.disabled)?;
                    }
                }
            }
            Ok(())
        }
        Command::NetworkDetach { domid, devid } => {
            Ok(Toolstack::connect(&socket)?.network_detach(domid, devid)?)
        }
        Command::Destroy { domid } => Ok(Toolstack::connect(&socket)?.destroy(domid)?),
        Command::XenstoreRead { path } => {
            let ts = Toolstack::connect(&socket)?;
            let v = ts.store().read(XBT_NIL, &path).map_err(store_err(&path))?;
            out.write_all(&v)?;
            writeln!(out)?;
            Ok(())
        }
        Command::XenstoreWrite { path, value } => {
            let ts = Toolstack::connect(&socket)?;
            ts.store()
                .write(XBT_NIL, &path, value.as_bytes())
                .map_err(store_err(&path))
        }
        Command::XenstoreLs { path } => {
            let ts = Toolstack::connect(&socket)?;
            let mut nodes = Vec::new();
            walk(ts.store(), &path, 0, &mut nodes).map_err(store_err(&path))?;
            if cli.json {
                let v: Vec<_> = nodes
                    .iter()
                    .map(|(p, _, val)| json!({"path": p, "value": escape(val)}))
                    .collect();
                writeln!(out, "{}", serde_json::Value::Array(v))?;
            } else {
                for (p, depth, val) in &nodes {
                    let name = p.rsplit('/').next().unwrap_or(p);
                    writeln!(
                        out,
                        "{:indent$}{name} = \"{}\"",
                        "",
                        escape(val),
                        indent = *depth
                    )?;
                }
            }
            Ok(())
        }
    }
}

/// Children of `path`, depth first, as `(path, depth, value)`; like `xenstore-ls` the
/// root itself is not printed.
fn walk(
    store: &dyn Store,
    path: &str,
    depth: usize,
    out: &mut Vec<(String, usize, Vec<u8>)>,
) -> Result<(), StoreError> {
    for child in store.directory(XBT_NIL, path)? {
        let p = if path.ends_with('/') {
            format!("{path}{child}")
        } else {
            format!("{path}/{child}")
        };
        // A node may vanish between the listing and the read.
        let value = match store.read(XBT_NIL, &p) {
            Ok(v) => v,
            Err(StoreError::NotFound) => continue,
            Err(e) => return Err(e),
        };
        out.push((p.clone(), depth, value));
        match walk(store, &p, depth + 1, out) {
            Ok(()) | Err(StoreError::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `xenstore-ls`'s escaping: printable ASCII as is, the rest as `\xNN`.
fn escape(v: &[u8]) -> String {
    let mut s = String::new();
    for &b in v {
        match b {
            b'"' | b'\\' => {
                s.push('\\');
                s.push(b as char);
            }
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s
}

/// Whether this process may create TAP devices (`CAP_NET_ADMIN` in its effective set).
fn has_net_admin() -> bool {
    const CAP_NET_ADMIN: u32 = 12;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_NET_ADMIN) != 0)
}

fn serve(
    socket: PathBuf,
    opts: BackendOptions,
    backend: Option<&dyn BackendFactory>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let wants_tap = opts.bridge.is_some() || opts.tap_prefix.is_some();
    if let Some(br) = &opts.bridge {
        if !std::path::Path::new(&format!("/sys/class/net/{br}/bridge")).exists() {
            return Err(CliError::Setup(format!(
                "bridge {br} does not exist: create it with `ip link add {br} type bridge && ip link set {br} up`, or omit --bridge"
            )));
        }
    }
    if wants_tap && !has_net_admin() {
        return Err(CliError::Setup(
            "TAP devices need CAP_NET_ADMIN: run `sudo hv serve ...`, or omit --bridge and --tap-prefix".into(),
        ));
    }
    if wants_tap && backend.is_none() {
        return Err(CliError::Setup(
            "this binary (hv-core) has no Dom0 backend linked, so --bridge/--tap-prefix cannot be honoured: run the `hv` binary of the netback package (`cargo run -p netback --bin hv -- serve ...`)".into(),
        ));
    }
    // Block SIGTERM and SIGINT before any thread starts, so every thread inherits the
    // mask and the signals are only ever read from the signalfd below.
    let signals = SignalFd::termination()?;
    let hv = Hypervisor::new()?;
    let started = match backend {
        Some(f) => Some(
            f.start(hv.backend_env()?, &opts)
                .map_err(DaemonError::Backend)?,
        ),
        None => {
            log::warn!("hv: no Dom0 backend linked: vifs will stay in Initialising");
            None
        }
    };
    let server = Server::start(hv, ServerConfig::new(&socket))?;
    if let Some(b) = started {
        server.set_backend(b);
    }
    writeln!(
        out,
        "hv: serving {} (pid {})",
        socket.display(),
        std::process::id()
    )?;
    out.flush()?;
    let sig = signals.wait();
    writeln!(
        out,
        "hv: signal {sig}: closing every vif and disconnecting guests"
    )?;
    out.flush()?;
    server.shutdown();
    writeln!(out, "hv: stopped")?;
    Ok(())
}

/// The binaries' logger: `hv: LEVEL target: message` lines on stderr.
struct StderrLog;

static STDERR_LOG: StderrLog = StderrLog;

impl StderrLog {
    /// Install it (once per process; a second call is ignored), at the level
    /// `$HV_LOG` names or `default`.
    fn install(default: log::LevelFilter) {
        let level = std::env::var("HV_LOG")
            .ok()
            .and_then(|v| v.parse::<log::LevelFilter>().ok())
            .unwrap_or(default);
        if log::set_logger(&STDERR_LOG).is_ok() {
            log::set_max_level(level);
        }
    }
}

impl log::Log for StderrLog {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            eprintln!("hv: {} {}: {}", r.level(), r.target(), r.args());
        }
    }

    fn flush(&self) {}
}

/// SIGTERM and SIGINT, blocked and read from a signalfd.
struct SignalFd {
    fd: std::os::fd::OwnedFd,
}

impl SignalFd {
    fn termination() -> Result<Self, CliError> {
        use std::os::fd::FromRawFd;
        // SAFETY: sigset_t is plain old data, initialised by sigemptyset before use;
        // pthread_sigmask and signalfd only read it; the new fd is owned below.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                return Err(CliError::Setup("blocking SIGTERM failed".into()));
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC);
            if fd < 0 {
                return Err(CliError::Setup(format!(
                    "signalfd failed: {}",
                    io::Error::last_os_error()
                )));
            }
            Ok(Self {
                fd: std::os::fd::OwnedFd::from_raw_fd(fd),
            })
        }
    }

    /// Block until SIGTERM or SIGINT; its number.
    fn wait(&self) -> u32 {
        use std::os::fd::AsRawFd;
        loop {
            // SAFETY: signalfd_siginfo is plain old data; read writes at most its size.
            let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            // SAFETY: reads at most size_of(info) bytes into the live `info`.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    (&mut info as *mut libc::signalfd_siginfo).cast(),
                    std::mem::size_of::<libc::signalfd_siginfo>(),
                )
            };
            if n == std::mem::size_of::<libc::signalfd_siginfo>() as isize {
                return info.ssi_signo;
            }
            if n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                // Cannot read signals: stop as if told to.
                return libc::SIGTERM as u32;
            }
        }
    }
}
