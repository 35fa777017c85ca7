//! `loadtest iperf3 ...`: the iperf3-compatible client and server on the kernel's TCP,
//! with iperf3's option letters.

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::Parser;

use super::client::{Client, ClientConfig};
use super::net::StdNet;
use super::params::TestParams;
use super::proto::{DEFAULT_PORT, DEFAULT_TCP_BLKSIZE};
use super::report;
use super::server::{Server, ServerConfig};

/// iperf3-compatible client and server (TCP; see `loadtest iperf3 --help`).
#[derive(Debug, Parser)]
#[command(
    name = "loadtest iperf3",
    about = "iperf3-compatible TCP client and server: works against Debian's iperf3 both ways",
    disable_version_flag = true
)]
pub struct Iperf3Args {
    /// Run as server.
    #[arg(short = 's', long, conflicts_with = "client")]
    pub server: bool,
    /// Run as client, connecting to HOST.
    #[arg(short = 'c', long, value_name = "HOST")]
    pub client: Option<String>,
    /// Server port.
    #[arg(short = 'p', long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Server: handle one test, then exit.
    #[arg(short = '1', long = "one-off")]
    pub one_off: bool,
    /// Address the server listens on.
    #[arg(short = 'B', long, value_name = "ADDR")]
    pub bind: Option<IpAddr>,
    /// Seconds to transmit (default 10 unless -n or -k is given).
    #[arg(short = 't', long, value_name = "SECS")]
    pub time: Option<u64>,
    /// Bytes to transmit (K/M/G suffixes, powers of 1024), instead of -t.
    #[arg(short = 'n', long, value_name = "BYTES", value_parser = parse_size)]
    pub bytes: Option<u64>,
    /// Blocks to transmit, instead of -t.
    #[arg(short = 'k', long = "blockcount", value_name = "BLOCKS", value_parser = parse_size)]
    pub blocks: Option<u64>,
    /// Bytes per read/write (K/M suffixes).
    #[arg(short = 'l', long = "length", value_name = "BYTES", value_parser = parse_size)]
    pub length: Option<u64>,
    /// Parallel streams.
    #[arg(short = 'P', long, default_value_t = 1)]
    pub parallel: u32,
    /// Reverse: the server sends.
    #[arg(short = 'R', long)]
    pub reverse: bool,
    /// Seconds between interval reports (0 disables them).
    #[arg(short = 'i', long, default_value_t = 1.0)]
    pub interval: f64,
    /// JSON output, shaped like iperf3's.
    #[arg(short = 'J', long)]
    pub json: bool,
    /// Set TCP no-delay (accepted; our streams send whole blocks anyway).
    #[arg(short = 'N', long = "no-delay")]
    pub no_delay: bool,
    /// A title for the test.
    #[arg(short = 'T', long)]
    pub title: Option<String>,
    /// Server: seconds a running test may be idle before it is ended.
    #[arg(long, default_value_t = 30)]
    pub idle_timeout: u64,
}

/// `1K`, `2M`, `1G` (powers of 1024, as iperf3's `unit_atoi`) or a plain number.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1u64 << 10),
        Some('m' | 'M') => (&s[..s.len() - 1], 1 << 20),
        Some('g' | 'G') => (&s[..s.len() - 1], 1 << 30),
        Some('t' | 'T') => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    let v: f64 = num.parse().map_err(|_| format!("{s:?} is not a size"))?;
    if !v.is_finite() || v < 0.0 || v * mult as f64 > u64::MAX as f64 {
        return Err(format!("{s:?} is out of range"));
    }
    Ok((v * mult as f64) as u64)
}

impl Iperf3Args {
    /// The test parameters a client run asks for.
    pub fn params(&self) -> TestParams {
        let bounded = self.bytes.is_some() || self.blocks.is_some();
        TestParams {
            time: self.time.unwrap_or(if bounded { 0 } else { 10 }),
            bytes: self.bytes.unwrap_or(0),
            blocks: self.blocks.unwrap_or(0),
            parallel: self.parallel,
            reverse: self.reverse,
            len: self
                .length
                .map(|l| l as usize)
                .unwrap_or(DEFAULT_TCP_BLKSIZE),
            nodelay: self.no_delay,
            title: self.title.clone(),
            ..TestParams::default()
        }
    }

    fn interval(&self) -> Duration {
        if self.interval.is_finite() && self.interval > 0.0 {
            Duration::from_secs_f64(self.interval.min(60.0))
        } else {
            Duration::ZERO
        }
    }
}

/// Runs `loadtest iperf3 ARGS` (`args[0]` is `iperf3`); returns the exit status.
pub fn main(args: impl IntoIterator<Item = OsString>) -> i32 {
    let a = match Iperf3Args::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 1 } else { 0 };
        }
    };
    if a.server {
        serve(&a)
    } else if let Some(host) = a.client.clone() {
        client(&a, &host)
    } else {
        eprintln!("iperf3: parameter error - must either be a client (-c) or server (-s)");
        1
    }
}

fn serve(a: &Iperf3Args) -> i32 {
    let mut net = StdNet::bound_to(a.bind.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)));
    let cfg = ServerConfig {
        port: a.port,
        one_off: a.one_off,
        interval: a.interval(),
        idle_timeout: Duration::from_secs(a.idle_timeout.max(1)),
        ..ServerConfig::default()
    };
    let mut server = match Server::new(&mut net, cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("iperf3: error - unable to start listener for connections: {e}");
            return 1;
        }
    };
    if !a.json {
        println!("-----------------------------------------------------------");
        println!("Server listening on {}", a.port);
        println!("-----------------------------------------------------------");
    }
    let stop = AtomicBool::new(false);
    let json = a.json;
    let mut failed = false;
    server.run(&mut net, &stop, |r| match r {
        Ok(o) if json => println!("{:#}", o.json),
        Ok(o) => print!("{}", report::text(o)),
        Err(e) => {
            failed = true;
            if json {
                println!("{:#}", report::error_json(&e.message));
            } else {
                eprintln!("iperf3: error - {}", e.message);
            }
        }
    });
    server.close(&mut net);
    i32::from(a.one_off && failed)
}

fn client(a: &Iperf3Args, host: &str) -> i32 {
    let addr = match (host, a.port).to_socket_addrs().map(|mut it| it.next()) {
        Ok(Some(addr)) => addr,
        _ => {
            eprintln!("iperf3: error - unable to resolve {host}");
            return 1;
        }
    };
    let mut cfg = ClientConfig::new(addr, a.params());
    cfg.host = host.to_owned();
    cfg.interval = a.interval();
    let mut net = StdNet::new();
    let stop = AtomicBool::new(false);
    let result = Client::new(&mut net, cfg).and_then(|c| c.run(&mut net, &stop));
    match result {
        Ok(o) => {
            if a.json {
                println!("{:#}", o.json);
            } else {
                print!("{}", report::text(&o));
            }
            0
        }
        Err(e) => {
            if a.json {
                println!("{:#}", report::error_json(&e.message));
            } else {
                eprintln!("iperf3: {}", e.message);
            }
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Iperf3Args::command().debug_assert();
    }

    #[test]
    fn sizes_and_defaults() {
        assert_eq!(parse_size("1K"), Ok(1024));
        assert_eq!(parse_size("2M"), Ok(2 << 20));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("x").is_err());
        assert!(parse_size("-1").is_err());
        let a = Iperf3Args::try_parse_from(["iperf3", "-c", "h", "-n", "1M", "-P", "2", "-R"])
            .expect("valid");
        let p = a.params();
        assert_eq!(
            (p.time, p.bytes, p.parallel, p.reverse),
            (0, 1 << 20, 2, true)
        );
        let a = Iperf3Args::try_parse_from(["iperf3", "-c", "h"]).expect("valid");
        assert_eq!(a.params().time, 10);
        assert!(Iperf3Args::try_parse_from(["iperf3", "-s", "-c", "h"]).is_err());
    }
}
