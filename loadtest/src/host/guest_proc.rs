//! The guest process of `loadtest host --guest daemon`: `loadtest __host-guest`,
//! started by loadtest itself. It connects to the hv daemon loadtest runs, gets its
//! domain (memory, grant table, event channels) over the socket, connects netfront
//! through the xenbus handshake, and then runs the same sender
//! ([`crate::pvnet::guest::sender`]) and receiver ([`super::rx::receive`]) as the
//! embedded guest thread, on the commands of [`super::proto`].
//!
//! It must never outlive loadtest: it asks the kernel to SIGKILL it when its parent
//! dies (`PR_SET_PDEATHSIG`), exits when its stdin closes, and every wait it does is
//! bounded by the cell's window.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Parser;
use hv::client::{connect_with, GuestConfig, RemoteGuestEnv};
use hv::env::GuestEnv;
use netfront::{Netfront, NetfrontConfig};

use super::board::Board;
use super::proto::{self, Command, Done};
use crate::control::Control;
use crate::pvnet::guest::{self, Progress, Shared, TxPlan};
use crate::pvnet::testbed::TX_BATCH;
use crate::pvnet::wire;

/// How long the handshake may take (as in embedded mode).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// The guest's own window outlasts the parent's by this much: normally the parent's
/// `stop` ends it, this only bounds it if the parent never says so.
const TX_MARGIN: Duration = Duration::from_secs(1);
/// How long past its window a receiver waits for the parent's `stop`.
const RX_MARGIN: Duration = Duration::from_secs(15);
/// Guest RAM: per queue 2 ring pages and 2 × 256 buffer pages, plus slack.
const GUEST_FRAMES: u32 = 2048;

/// Arguments of the hidden `__host-guest` subcommand.
#[derive(Debug, Parser)]
#[command(name = "loadtest __host-guest")]
struct GuestArgs {
    /// The daemon's socket.
    #[arg(long)]
    socket: PathBuf,
    /// The shared counters file ([`super::board`]).
    #[arg(long)]
    board: PathBuf,
    /// loadtest's pid: the guest exits if it is no longer its parent.
    #[arg(long)]
    parent: u32,
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // A parent that stopped listening is gone: PDEATHSIG or EOF on stdin ends us.
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// Dies with the parent: SIGKILL when the thread that forked us (loadtest's main
/// thread) exits. Fails if the parent is already gone.
fn tie_to_parent(parent: u32) -> Result<(), String> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and changes only this
    // process's own death signal.
    let r = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    if r != 0 {
        return Err(format!(
            "prctl(PR_SET_PDEATHSIG): {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: getppid has no preconditions and cannot fail.
    let ppid = unsafe { libc::getppid() };
    if u32::try_from(ppid).ok() != Some(parent) {
        return Err(format!("parent {parent} is gone (now {ppid})"));
    }
    Ok(())
}

struct GuestProc {
    nf: Netfront<RemoteGuestEnv>,
    mac: [u8; 6],
    board: Board,
}

impl GuestProc {
    fn start(a: &GuestArgs) -> Result<(GuestProc, u16), String> {
        let board = Board::open(&a.board).map_err(|e| format!("{}: {e}", a.board.display()))?;
        let env = connect_with(
            &a.socket,
            &GuestConfig {
                name: format!("loadtest-host-{}", a.parent),
                memory_frames: GUEST_FRAMES,
                vifs: 1,
                ..GuestConfig::default()
            },
        )
        .map_err(|e| e.to_string())?;
        let domid = env.domid();
        let nf = Netfront::connect(
            env,
            NetfrontConfig {
                queues: 1,
                tx_batch: TX_BATCH,
                timeout: HANDSHAKE_TIMEOUT,
                ..NetfrontConfig::default()
            },
        )
        .map_err(|e| format!("netfront connect: {e}"))?;
        let mac = nf.mac();
        Ok((GuestProc { nf, mac, board }, domid))
    }

    fn tx(&mut self, len: u32, secs: f64) -> Result<Done, String> {
        let template = wire::template(&wire::FrameSpec {
            len: len as usize,
            // Nobody's MAC, as in embedded mode: the bridge drops the frames.
            dst: wire::DOM0_MAC,
            src: self.mac,
            flow: 0,
            spread_over: 1,
        })
        .ok_or_else(|| format!("no test frame of {len} bytes"))?;
        let q = self
            .nf
            .queues_mut()
            .first_mut()
            .ok_or("the guest has no queue")?;
        let board = &self.board;
        board.slots().stop.store(0, Ordering::Release);
        let ctl = Control::new(Duration::from_secs_f64(secs) + TX_MARGIN);
        let (shared, progress) = (Shared::default(), Progress::default());
        let plan = TxPlan {
            template: &template,
            flow: 0,
        };
        let r = ctl.run_timed(|ctl| {
            std::thread::scope(|s| {
                // Turns the parent's `stop` into the window's end.
                s.spawn(|| {
                    while !ctl.should_stop() {
                        if board.stopped() {
                            ctl.request_stop();
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                });
                ctl.begin();
                shared.start();
                say("go");
                guest::sender(q, &plan, ctl, &shared, &progress)
            })
        });
        let w = r.map_err(|e| e.to_string())?;
        Ok(Done {
            frames: w.sent,
            cpu: w.cpu,
        })
    }

    fn rx(&mut self, len: u32, secs: f64) -> Result<Done, String> {
        let q = self
            .nf
            .queues_mut()
            .first_mut()
            .ok_or("the guest has no queue")?;
        let slots = self.board.slots();
        slots.received.store(0, Ordering::Release);
        slots.stop.store(0, Ordering::Release);
        let give_up = Instant::now() + Duration::from_secs_f64(secs) + RX_MARGIN;
        say("go");
        let board = &self.board;
        let (frames, cpu) = super::rx::receive(
            q,
            len as usize,
            self.mac,
            &slots.received,
            || board.stopped(),
            Some(give_up),
        )
        .map_err(|e| e.to_string())?;
        Ok(Done { frames, cpu })
    }

    /// Serves commands until `quit` or EOF.
    fn serve(mut self) {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match Command::parse(&line) {
                Ok(Command::Tx { len, secs }) => match self.tx(len, secs) {
                    Ok(d) => say(&format!("tx-done {}", d.args())),
                    Err(e) => say(&format!("error {e}")),
                },
                Ok(Command::Rx { len, secs }) => match self.rx(len, secs) {
                    Ok(d) => say(&format!("rx-done {}", d.args())),
                    Err(e) => say(&format!("error {e}")),
                },
                Ok(Command::Quit) => break,
                Err(e) => say(&format!("error {e}")),
            }
        }
        // Closing → Closed, grants ended; the daemon tears the domain down when the
        // connection closes at exit.
        if let Err(e) = self.nf.close() {
            eprintln!("closing the vif: {e}");
        }
        say("bye");
    }
}

/// Runs the guest process; `args` are the arguments after `__host-guest`. Returns the
/// exit status.
pub fn main(args: impl Iterator<Item = std::ffi::OsString>) -> i32 {
    let a = match GuestArgs::try_parse_from(
        std::iter::once(std::ffi::OsString::from(proto::GUEST_SUBCOMMAND)).chain(args),
    ) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    if let Err(e) = tie_to_parent(a.parent) {
        eprintln!("loadtest guest: {e}");
        return 1;
    }
    match GuestProc::start(&a) {
        Ok((g, domid)) => {
            say(&format!("ready {}", proto::ready_args(domid, g.mac)));
            g.serve();
            0
        }
        Err(e) => {
            eprintln!("loadtest guest: {e}");
            say(&format!("error {e}"));
            1
        }
    }
}
