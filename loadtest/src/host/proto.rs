//! The line protocol between `loadtest host --guest daemon` and its guest process
//! (`loadtest __host-guest`), on the guest's stdin (commands) and stdout (replies):
//!
//! ```text
//! guest:  ready <domid> <mac>          netfront connected through the daemon
//! parent: tx <len> <secs>              send <len>-byte frames for about <secs>
//! guest:  go                           window open (board `stop` cleared)
//! guest:  tx-done <sent> <user_ns> <sys_ns>        after the parent raised `stop`
//! parent: rx <len> <secs>              receive and verify <len>-byte frames
//! guest:  go                           receiver running (board counters cleared)
//! guest:  rx-done <verified> <user_ns> <sys_ns>    after the parent raised `stop`
//! parent: quit                         close the vif and exit
//! guest:  bye
//! guest:  error <message>              instead of any reply
//! ```
//!
//! Counts that must be read mid-window travel over the shared [`super::board`].

use std::time::Duration;

use crate::cpu::CpuTime;

/// The subcommand that runs the guest process (hidden from `--help`).
pub const GUEST_SUBCOMMAND: &str = "__host-guest";

/// A command from the parent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Command {
    /// Send frames of `len` bytes; the parent closes the window after `secs`.
    Tx { len: u32, secs: f64 },
    /// Receive frames of `len` bytes; the cell lasts about `secs`.
    Rx { len: u32, secs: f64 },
    /// Close the vif and exit.
    Quit,
}

fn parse_secs(s: Option<&str>) -> Result<f64, String> {
    let v: f64 = s
        .ok_or("missing seconds")?
        .parse()
        .map_err(|e| format!("seconds: {e}"))?;
    if v.is_finite() && v > 0.0 && v <= crate::app::MAX_SECONDS {
        Ok(v)
    } else {
        Err(format!("seconds out of range: {v}"))
    }
}

fn parse_len(s: Option<&str>) -> Result<u32, String> {
    let v: u32 = s
        .ok_or("missing length")?
        .parse()
        .map_err(|e| format!("length: {e}"))?;
    if (super::MIN_HOST_FRAME..=super::MAX_HOST_FRAME).contains(&v) {
        Ok(v)
    } else {
        Err(format!("length out of range: {v}"))
    }
}

impl Command {
    /// Parses one line.
    pub fn parse(line: &str) -> Result<Command, String> {
        let mut w = line.split_whitespace();
        let c = match w.next() {
            Some("tx") => Command::Tx {
                len: parse_len(w.next())?,
                secs: parse_secs(w.next())?,
            },
            Some("rx") => Command::Rx {
                len: parse_len(w.next())?,
                secs: parse_secs(w.next())?,
            },
            Some("quit") => Command::Quit,
            other => return Err(format!("unknown command {other:?}")),
        };
        match w.next() {
            None => Ok(c),
            Some(extra) => Err(format!("unexpected {extra:?} after the command")),
        }
    }

    /// The line that sends it (without the newline).
    pub fn line(&self) -> String {
        match self {
            Command::Tx { len, secs } => format!("tx {len} {secs}"),
            Command::Rx { len, secs } => format!("rx {len} {secs}"),
            Command::Quit => "quit".into(),
        }
    }
}

/// The end of a `tx` or `rx` command: frames sent (or verified) and the worker
/// thread's CPU time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Done {
    /// Frames sent (`tx`) or received and verified (`rx`).
    pub frames: u64,
    /// The guest worker thread's CPU time.
    pub cpu: CpuTime,
}

impl Done {
    /// The reply's arguments (after `tx-done` / `rx-done`).
    pub fn args(&self) -> String {
        format!(
            "{} {} {}",
            self.frames,
            self.cpu.user.as_nanos(),
            self.cpu.system.as_nanos()
        )
    }

    /// Parses the reply's arguments.
    pub fn parse(s: &str) -> Result<Done, String> {
        let n: Vec<u64> = s
            .split_whitespace()
            .map(|v| v.parse::<u64>().map_err(|e| format!("{v:?}: {e}")))
            .collect::<Result<_, _>>()?;
        match n[..] {
            [frames, user, system] => Ok(Done {
                frames,
                cpu: CpuTime {
                    user: Duration::from_nanos(user),
                    system: Duration::from_nanos(system),
                },
            }),
            _ => Err(format!("expected 3 numbers, got {s:?}")),
        }
    }
}

/// The `ready` reply's arguments.
pub fn ready_args(domid: u16, mac: [u8; 6]) -> String {
    let m: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    format!("{domid} {}", m.join(":"))
}

/// Parses the `ready` reply's arguments: the guest's domid and MAC.
pub fn parse_ready(s: &str) -> Result<(u16, [u8; 6]), String> {
    let mut w = s.split_whitespace();
    let domid: u16 = w
        .next()
        .ok_or("missing domid")?
        .parse()
        .map_err(|e| format!("domid: {e}"))?;
    let mac_s = w.next().ok_or("missing MAC")?;
    let bytes: Vec<u8> = mac_s
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).map_err(|e| format!("MAC {mac_s:?}: {e}")))
        .collect::<Result<_, _>>()?;
    let mac: [u8; 6] = bytes
        .try_into()
        .map_err(|_| format!("MAC {mac_s:?}: not 6 bytes"))?;
    Ok((domid, mac))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_and_bad_ones_are_refused() {
        for c in [
            Command::Tx { len: 64, secs: 0.3 },
            Command::Rx {
                len: 1514,
                secs: 2.0,
            },
            Command::Quit,
        ] {
            assert_eq!(Command::parse(&c.line()), Ok(c));
        }
        for bad in [
            "",
            "tx",
            "tx 64",
            "tx 59 1",
            "tx 1515 1",
            "tx 64 -1",
            "tx 64 NaN",
            "rx 64 1 extra",
            "fly",
        ] {
            assert!(Command::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn replies_round_trip_and_bad_ones_are_refused() {
        let d = Done {
            frames: 123,
            cpu: CpuTime {
                user: Duration::from_nanos(5),
                system: Duration::from_micros(7),
            },
        };
        assert_eq!(Done::parse(&d.args()), Ok(d));
        assert!(Done::parse("1 2").is_err());
        assert!(Done::parse("1 2 x").is_err());
        assert!(Done::parse("-1 2 3").is_err());
        let mac = [0x00, 0x16, 0x3e, 0x00, 0x01, 0xff];
        assert_eq!(parse_ready(&ready_args(1, mac)), Ok((1, mac)));
        assert!(parse_ready("1 00:16:3e").is_err());
        assert!(parse_ready("1 00:16:3e:00:01:zz").is_err());
        assert!(parse_ready("70000 00:16:3e:00:01:00").is_err());
        assert!(parse_ready("").is_err());
    }
}
