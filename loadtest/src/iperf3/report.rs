//! What a finished test reports: [`Outcome`] for programs, and the iperf3-shaped
//! `-J` document (`start` / `intervals` / `end`, the keys iperf3's JSON output uses)
//! and a short text summary for people.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::params::{TestParams, IMPLEMENTATION};
use super::stats::Stats;

/// Which end of a test this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The end that connected (`-c`).
    Client,
    /// The end that listened (`-s`).
    Server,
}

/// One stream's bytes as both ends counted them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamOutcome {
    /// iperf3 stream id.
    pub id: u32,
    /// Bytes the sending end sent.
    pub sent: u64,
    /// Bytes the receiving end received.
    pub received: u64,
}

/// A finished test.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Which end we were.
    pub side: Side,
    /// The parameters the test ran with.
    pub params: TestParams,
    /// The test's cookie.
    pub cookie: String,
    /// Whether this end sent the data.
    pub we_sent: bool,
    /// Per stream, in id order.
    pub streams: Vec<StreamOutcome>,
    /// Seconds from `TEST_START` to `TEST_END` at this end.
    pub duration: f64,
    /// All bytes the sender sent (ours if we sent, the peer's report otherwise).
    pub bytes_sent: u64,
    /// All bytes the receiver received.
    pub bytes_received: u64,
    /// Bytes this end moved itself (sent or received).
    pub bytes_local: u64,
    /// The iperf3-shaped JSON document (`-J`).
    pub json: Value,
}

/// Facts about the connection the report names.
#[derive(Clone, Debug, Default)]
pub struct Endpoint {
    /// Client: the host and port it connected to.
    pub connecting_to: Option<(String, u16)>,
    /// Server: the control connection's peer.
    pub accepted_from: Option<SocketAddr>,
}

fn system_info() -> String {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!(
        "{} {} {} {}",
        std::env::consts::OS,
        host.trim(),
        release.trim(),
        std::env::consts::ARCH
    )
}

fn sum_obj(start: f64, end: f64, bytes: u64, sender: bool) -> Value {
    let secs = end - start;
    let bps = if secs > 0.0 {
        bytes as f64 * 8.0 / secs
    } else {
        0.0
    };
    json!({
        "start": start, "end": end, "seconds": secs,
        "bytes": bytes, "bits_per_second": bps, "sender": sender,
    })
}

/// Builds the outcome and the `-J` document of a test that ran to the end.
pub fn finish(
    side: Side,
    params: &TestParams,
    cookie: &str,
    stats: &Stats,
    ep: &Endpoint,
) -> Outcome {
    let we_sent = stats.sending;
    let streams: Vec<StreamOutcome> = stats
        .streams
        .iter()
        .map(|s| {
            let ours = s.bytes + s.late_bytes;
            let theirs = s.peer_bytes.unwrap_or(0);
            let (sent, received) = if we_sent {
                (ours, theirs)
            } else {
                (theirs, ours)
            };
            StreamOutcome {
                id: s.id,
                sent,
                received,
            }
        })
        .collect();
    let bytes_sent = streams.iter().map(|s| s.sent).sum();
    let bytes_received = streams.iter().map(|s| s.received).sum();
    let dur = stats.duration;

    let now = SystemTime::now();
    let mut start = json!({
        "connected": stats.streams.iter().map(|s| json!({
            "socket": s.id,
            "local_host": s.local.map(|a| a.ip().to_string()).unwrap_or_default(),
            "local_port": s.local.map(|a| a.port()).unwrap_or(0),
            "remote_host": s.remote.map(|a| a.ip().to_string()).unwrap_or_default(),
            "remote_port": s.remote.map(|a| a.port()).unwrap_or(0),
        })).collect::<Vec<_>>(),
        "version": IMPLEMENTATION,
        "system_info": system_info(),
        "timestamp": {
            "time": crate::timestamp::rfc3339(now),
            "timesecs": now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        },
        "cookie": cookie,
        "tcp_mss_default": 0,
        "target_bitrate": 0,
        "sock_bufsize": 0,
        "sndbuf_actual": 0,
        "rcvbuf_actual": 0,
        "test_start": {
            "protocol": "TCP",
            "num_streams": params.parallel,
            "blksize": params.len,
            "omit": params.omit,
            "duration": params.time,
            "bytes": params.bytes,
            "blocks": params.blocks,
            "reverse": u8::from(params.reverse),
            "tos": 0,
            "target_bitrate": 0,
        },
    });
    if let Some((host, port)) = &ep.connecting_to {
        start["connecting_to"] = json!({"host": host, "port": port});
    }
    if let Some(a) = ep.accepted_from {
        start["accepted_connection"] = json!({"host": a.ip().to_string(), "port": a.port()});
    }
    if let Some(t) = &params.title {
        start["title"] = json!(t);
    }

    let n_intervals = stats
        .streams
        .iter()
        .map(|s| s.intervals.len())
        .min()
        .unwrap_or(0);
    let intervals: Vec<Value> = (0..n_intervals)
        .map(|k| {
            let per: Vec<Value> = stats
                .streams
                .iter()
                .map(|s| {
                    let iv = s.intervals[k];
                    let mut o = sum_obj(iv.start, iv.end, iv.bytes, we_sent);
                    o["socket"] = json!(s.id);
                    o["omitted"] = json!(false);
                    o
                })
                .collect();
            let first = stats.streams[0].intervals[k];
            let bytes = stats.streams.iter().map(|s| s.intervals[k].bytes).sum();
            let mut sum = sum_obj(first.start, first.end, bytes, we_sent);
            sum["omitted"] = json!(false);
            json!({"streams": per, "sum": sum})
        })
        .collect();

    let end_streams: Vec<Value> = streams
        .iter()
        .map(|s| {
            let mut snd = sum_obj(0.0, dur, s.sent, we_sent);
            snd["socket"] = json!(s.id);
            let mut rcv = sum_obj(0.0, dur, s.received, we_sent);
            rcv["socket"] = json!(s.id);
            json!({"sender": snd, "receiver": rcv})
        })
        .collect();
    let (local, remote) = (stats.cpu, stats.peer_cpu);
    let end = json!({
        "streams": end_streams,
        "sum_sent": sum_obj(0.0, dur, bytes_sent, we_sent),
        "sum_received": sum_obj(0.0, dur, bytes_received, we_sent),
        "cpu_utilization_percent": {
            "host_total": local[0], "host_user": local[1], "host_system": local[2],
            "remote_total": remote[0], "remote_user": remote[1], "remote_system": remote[2],
        },
    });
    Outcome {
        side,
        params: params.clone(),
        cookie: cookie.to_owned(),
        we_sent,
        streams,
        duration: dur,
        bytes_sent,
        bytes_received,
        bytes_local: stats.total(),
        json: json!({"start": start, "intervals": intervals, "end": end}),
    }
}

/// The document iperf3 prints with `-J` when a test fails.
pub fn error_json(message: &str) -> Value {
    json!({"start": {}, "intervals": [], "end": {}, "error": message})
}

fn rate(bytes: u64, secs: f64) -> String {
    if secs <= 0.0 {
        return "0 bits/sec".into();
    }
    let bps = bytes as f64 * 8.0 / secs;
    if bps >= 1e9 {
        format!("{:.2} Gbits/sec", bps / 1e9)
    } else if bps >= 1e6 {
        format!("{:.2} Mbits/sec", bps / 1e6)
    } else {
        format!("{:.2} Kbits/sec", bps / 1e3)
    }
}

fn size(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GBytes", b / (1024.0 * 1024.0 * 1024.0))
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.2} MBytes", b / (1024.0 * 1024.0))
    } else {
        format!("{:.2} KBytes", b / 1024.0)
    }
}

/// iperf3-like text: one line per interval (sum), then sender and receiver totals.
pub fn text(o: &Outcome) -> String {
    let mut out = String::new();
    if let Some(ivs) = o.json["intervals"].as_array() {
        for iv in ivs {
            let s = &iv["sum"];
            let (a, b) = (
                s["start"].as_f64().unwrap_or(0.0),
                s["end"].as_f64().unwrap_or(0.0),
            );
            let bytes = s["bytes"].as_u64().unwrap_or(0);
            out.push_str(&format!(
                "[SUM] {a:6.2}-{b:6.2} sec  {}  {}\n",
                size(bytes),
                rate(bytes, b - a)
            ));
        }
    }
    out.push_str("- - - - - - - - - - - - - - - - - - - - - - - - -\n");
    let d = o.duration;
    out.push_str(&format!(
        "[SUM] {:6.2}-{d:6.2} sec  {}  {}  sender\n",
        0.0,
        size(o.bytes_sent),
        rate(o.bytes_sent, d)
    ));
    out.push_str(&format!(
        "[SUM] {:6.2}-{d:6.2} sec  {}  {}  receiver\n",
        0.0,
        size(o.bytes_received),
        rate(o.bytes_received, d)
    ));
    out
}
