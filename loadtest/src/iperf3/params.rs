//! The test parameters the client sends after `PARAM_EXCHANGE` (`send_parameters` /
//! `get_parameters` in `iperf_api.c`): a flat JSON object whose keys are iperf3's.
//!
//! The server takes what it understands and refuses, with iperf3's own error numbers,
//! what it cannot honour, so the real client prints a real iperf3 error instead of
//! running a test that is not what its user asked for.

use serde_json::{json, Map, Value};

use super::proto::{ie, DEFAULT_TCP_BLKSIZE, MAX_BLOCKSIZE, MAX_STREAMS, MAX_TIME};

/// The transport of the data streams (`tcp`/`udp`/`sctp` keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `Ptcp`: the only one implemented here.
    Tcp,
    /// `Pudp` (`-u`).
    Udp,
    /// `Psctp` (`--sctp`).
    Sctp,
}

/// What one test is.
#[derive(Clone, Debug, PartialEq)]
pub struct TestParams {
    /// Data stream transport.
    pub protocol: Protocol,
    /// `time`: seconds (`-t`); 0 when the test is bounded by bytes or blocks only.
    pub time: u64,
    /// `num`: bytes to send (`-n`), 0 = unbounded.
    pub bytes: u64,
    /// `blockcount`: blocks to send (`-k`), 0 = unbounded.
    pub blocks: u64,
    /// `parallel`: number of streams (`-P`).
    pub parallel: u32,
    /// `reverse`: the server sends (`-R`).
    pub reverse: bool,
    /// `bidirectional` (`--bidir`).
    pub bidirectional: bool,
    /// `len`: bytes per read/write (`-l`).
    pub len: usize,
    /// `omit`: seconds not counted at the start (`-O`).
    pub omit: u64,
    /// `bandwidth`: target bits/s (`-b`), 0 = unlimited.
    pub bandwidth: u64,
    /// `window`: socket buffer size (`-w`), 0 = default.
    pub window: u64,
    /// `MSS` (`-M`), 0 = default.
    pub mss: u64,
    /// `TOS` (`-S`), 0 = default.
    pub tos: u64,
    /// `fqrate` (`--fq-rate`), 0 = off.
    pub fqrate: u64,
    /// `flowlabel` (`-L`), 0 = off.
    pub flowlabel: u64,
    /// `congestion` (`-C`).
    pub congestion: Option<String>,
    /// `nodelay` (`-N`).
    pub nodelay: bool,
    /// `get_server_output` (`--get-server-output`).
    pub get_server_output: bool,
    /// `title` (`-T`).
    pub title: Option<String>,
    /// `extra_data` (`--extra-data`).
    pub extra_data: Option<String>,
    /// `authtoken`: present when the client authenticates (`--username`).
    pub authtoken: bool,
    /// `dont_fragment` (`--dont-fragment`).
    pub dont_fragment: bool,
    /// `client_version`.
    pub client_version: Option<String>,
}

impl Default for TestParams {
    fn default() -> Self {
        TestParams {
            protocol: Protocol::Tcp,
            time: 10,
            bytes: 0,
            blocks: 0,
            parallel: 1,
            reverse: false,
            bidirectional: false,
            len: DEFAULT_TCP_BLKSIZE,
            omit: 0,
            bandwidth: 0,
            window: 0,
            mss: 0,
            tos: 0,
            fqrate: 0,
            flowlabel: 0,
            congestion: None,
            nodelay: false,
            get_server_output: false,
            title: None,
            extra_data: None,
            authtoken: false,
            dont_fragment: false,
            client_version: None,
        }
    }
}

/// A parameters object the server will not run, and the iperf3 error to answer with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason} (iperf3 error {i_errno})")]
pub struct Refusal {
    /// iperf3's `i_errno` for the `SERVER_ERROR` message.
    pub i_errno: i32,
    /// What was wrong, for our log.
    pub reason: String,
}

fn refuse(i_errno: i32, reason: impl Into<String>) -> Refusal {
    Refusal {
        i_errno,
        reason: reason.into(),
    }
}

/// A non-negative integer key (cJSON numbers are doubles; iperf3 reads `valueint`).
fn uint(m: &Map<String, Value>, key: &str) -> Result<Option<u64>, Refusal> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) => Ok(Some(n)),
            None => match v.as_f64() {
                Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 1.8e19 => Ok(Some(f as u64)),
                _ => Err(refuse(
                    ie::RECVPARAMS,
                    format!("parameter {key:?} is not a non-negative integer: {v}"),
                )),
            },
        },
    }
}

fn string(m: &Map<String, Value>, key: &str) -> Option<String> {
    m.get(key).and_then(Value::as_str).map(str::to_owned)
}

impl TestParams {
    /// Reads a parameters object as `get_parameters` does (a key's presence turns a
    /// flag on), then checks ranges the way iperf3's option parser does.
    pub fn from_json(m: &Map<String, Value>) -> Result<TestParams, Refusal> {
        let mut p = TestParams {
            time: 0,
            ..TestParams::default()
        };
        // Later keys win, as in get_parameters.
        if m.contains_key("tcp") {
            p.protocol = Protocol::Tcp;
        }
        if m.contains_key("udp") {
            p.protocol = Protocol::Udp;
        }
        if m.contains_key("sctp") {
            p.protocol = Protocol::Sctp;
        }
        if !(m.contains_key("tcp") || m.contains_key("udp") || m.contains_key("sctp")) {
            return Err(refuse(ie::RECVPARAMS, "no protocol (tcp/udp/sctp) given"));
        }
        p.omit = uint(m, "omit")?.unwrap_or(0);
        p.time = uint(m, "time")?.unwrap_or(0);
        p.bytes = uint(m, "num")?.unwrap_or(0);
        p.blocks = uint(m, "blockcount")?.unwrap_or(0);
        p.mss = uint(m, "MSS")?.unwrap_or(0);
        p.nodelay = m.contains_key("nodelay");
        let parallel = uint(m, "parallel")?.unwrap_or(1);
        p.reverse = m.contains_key("reverse");
        p.bidirectional = m.contains_key("bidirectional");
        p.window = uint(m, "window")?.unwrap_or(0);
        let len = uint(m, "len")?.unwrap_or(DEFAULT_TCP_BLKSIZE as u64);
        p.bandwidth = uint(m, "bandwidth")?.unwrap_or(0);
        p.fqrate = uint(m, "fqrate")?.unwrap_or(0);
        p.tos = uint(m, "TOS")?.unwrap_or(0);
        p.flowlabel = uint(m, "flowlabel")?.unwrap_or(0);
        p.title = string(m, "title");
        p.extra_data = string(m, "extra_data");
        p.congestion = string(m, "congestion");
        p.get_server_output = m.contains_key("get_server_output");
        p.authtoken = m.contains_key("authtoken");
        p.dont_fragment = m.contains_key("dont_fragment");
        p.client_version = string(m, "client_version");

        if p.time > MAX_TIME {
            return Err(refuse(
                ie::DURATION,
                format!("time {} s is over {MAX_TIME}", p.time),
            ));
        }
        if parallel == 0 || parallel > u64::from(MAX_STREAMS) {
            return Err(refuse(
                ie::NUMSTREAMS,
                format!("parallel {parallel}: must be 1..={MAX_STREAMS}"),
            ));
        }
        p.parallel = parallel as u32;
        if len == 0 || len > MAX_BLOCKSIZE as u64 {
            return Err(refuse(
                ie::BLOCKSIZE,
                format!("len {len}: must be 1..={MAX_BLOCKSIZE}"),
            ));
        }
        p.len = len as usize;
        if p.reverse && p.bidirectional {
            return Err(refuse(ie::REVERSEBIDIR, "both reverse and bidirectional"));
        }
        Ok(p)
    }

    /// The first option this implementation cannot honour, if any.
    pub fn unsupported(&self) -> Option<Refusal> {
        let no = |what: &str| Some(refuse(ie::UNIMP, format!("{what} is not supported")));
        match self.protocol {
            Protocol::Tcp => {}
            Protocol::Udp => return no("UDP (-u)"),
            Protocol::Sctp => return no("SCTP (--sctp)"),
        }
        if self.bidirectional {
            return no("bidirectional mode (--bidir)");
        }
        if self.omit != 0 {
            return no("omitting the first seconds (-O)");
        }
        if self.bandwidth != 0 || self.fqrate != 0 {
            return no("a target bitrate (-b/--fq-rate)");
        }
        if self.window != 0 || self.mss != 0 || self.tos != 0 || self.flowlabel != 0 {
            return no("socket options (-w/-M/-S/-L)");
        }
        if self.congestion.is_some() {
            return no("a congestion control algorithm (-C)");
        }
        if self.authtoken {
            return no("authentication (--username)");
        }
        if self.dont_fragment {
            return no("--dont-fragment");
        }
        None
    }

    /// The object `send_parameters` would send for these parameters.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        let key = match self.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        };
        m.insert(key.into(), Value::Bool(true));
        m.insert("omit".into(), json!(self.omit));
        m.insert("time".into(), json!(self.time));
        let mut put = |k: &str, v: u64| {
            if v != 0 {
                m.insert(k.into(), json!(v));
            }
        };
        put("num", self.bytes);
        put("blockcount", self.blocks);
        put("MSS", self.mss);
        put("window", self.window);
        put("bandwidth", self.bandwidth);
        put("fqrate", self.fqrate);
        put("TOS", self.tos);
        put("flowlabel", self.flowlabel);
        m.insert("parallel".into(), json!(self.parallel));
        m.insert("len".into(), json!(self.len));
        if self.nodelay {
            m.insert("nodelay".into(), Value::Bool(true));
        }
        if self.reverse {
            m.insert("reverse".into(), Value::Bool(true));
        }
        if self.bidirectional {
            m.insert("bidirectional".into(), Value::Bool(true));
        }
        if let Some(t) = &self.title {
            m.insert("title".into(), json!(t));
        }
        if let Some(t) = &self.extra_data {
            m.insert("extra_data".into(), json!(t));
        }
        if let Some(t) = &self.congestion {
            m.insert("congestion".into(), json!(t));
        }
        if self.get_server_output {
            m.insert("get_server_output".into(), json!(1));
        }
        m.insert(
            "client_version".into(),
            json!(self
                .client_version
                .clone()
                .unwrap_or_else(|| IMPLEMENTATION.to_owned())),
        );
        Value::Object(m)
    }
}

/// What we call ourselves where iperf3 puts its version.
pub const IMPLEMENTATION: &str = concat!("pvnet-loadtest ", env!("CARGO_PKG_VERSION"));

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("test literal is an object"),
        }
    }

    #[test]
    fn reads_what_iperf3_3_12_sends() {
        // The parameters of `iperf3 -c HOST -t 5 -P 2 -R`, as 3.12 sends them.
        let m = obj(json!({"tcp":true,"omit":0,"time":5,"num":0,"blockcount":0,
            "parallel":2,"reverse":true,"len":131072,"pacing_timer":1000,
            "client_version":"3.12"}));
        let p = TestParams::from_json(&m).expect("valid");
        assert_eq!(p.protocol, Protocol::Tcp);
        assert_eq!((p.time, p.parallel, p.reverse, p.len), (5, 2, true, 131072));
        assert_eq!(p.unsupported(), None);
        assert_eq!(p.client_version.as_deref(), Some("3.12"));
    }

    #[test]
    fn refuses_with_iperf3_errors() {
        let udp = TestParams::from_json(&obj(json!({"udp":true,"time":1}))).expect("parses");
        assert_eq!(udp.unsupported().map(|r| r.i_errno), Some(ie::UNIMP));
        let e = TestParams::from_json(&obj(json!({"tcp":true,"parallel":0}))).unwrap_err();
        assert_eq!(e.i_errno, ie::NUMSTREAMS);
        let e = TestParams::from_json(&obj(json!({"tcp":true,"len":2_000_000}))).unwrap_err();
        assert_eq!(e.i_errno, ie::BLOCKSIZE);
        let e = TestParams::from_json(&obj(json!({"tcp":true,"time":-1}))).unwrap_err();
        assert_eq!(e.i_errno, ie::RECVPARAMS);
        let e = TestParams::from_json(&obj(json!({"tcp":true,"time":"x"}))).unwrap_err();
        assert_eq!(e.i_errno, ie::RECVPARAMS);
        let e = TestParams::from_json(&obj(json!({"time":1}))).unwrap_err();
        assert_eq!(e.i_errno, ie::RECVPARAMS);
    }

    #[test]
    fn round_trips() {
        let p = TestParams {
            time: 3,
            bytes: 1 << 20,
            parallel: 4,
            reverse: true,
            len: 1000,
            title: Some("t".into()),
            ..TestParams::default()
        };
        let back = match p.to_json() {
            Value::Object(m) => TestParams::from_json(&m).expect("valid"),
            _ => unreachable!("to_json makes an object"),
        };
        assert_eq!(
            back,
            TestParams {
                client_version: Some(IMPLEMENTATION.into()),
                ..p
            }
        );
    }
}
