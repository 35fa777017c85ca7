//! The iperf3 wire protocol's constants and framing, as iperf3 3.x speaks it
//! (`iperf_api.h`, `iperf_api.c`, `iperf_tcp.c`).
//!
//! The control connection carries three kinds of things, nothing else:
//! * the 37-byte cookie the client sends first (also the first bytes of every TCP
//!   data stream, which is how the server ties a stream to its test),
//! * single signed state bytes (`iperf_set_send_state`), and
//! * JSON documents framed by a 4-byte big-endian length (`JSON_write`/`JSON_read`).
//!
//! A `SERVER_ERROR` state is followed by two 4-byte big-endian integers: iperf3's
//! `i_errno` and the system `errno`.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// iperf3's default control (and TCP data) port, `PORT` in `iperf.h`.
pub const DEFAULT_PORT: u16 = 5201;

/// `COOKIE_SIZE`: 36 characters and a terminating NUL.
pub const COOKIE_SIZE: usize = 37;

/// The alphabet of `make_cookie` (`iperf_util.c`): RFC 4648 base32 letters, lower case.
const COOKIE_CHARS: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// `DEFAULT_TCP_BLKSIZE`: the default read/write size of a TCP stream (128 KiB).
pub const DEFAULT_TCP_BLKSIZE: usize = 128 * 1024;

/// `MAX_BLOCKSIZE`: largest `len` iperf3 accepts (1 MiB).
pub const MAX_BLOCKSIZE: usize = 1024 * 1024;

/// `MAX_STREAMS`: most parallel streams (`-P`).
pub const MAX_STREAMS: u32 = 128;

/// `MAX_TIME`: longest `-t`, seconds (one day).
pub const MAX_TIME: u64 = 86_400;

/// `MAX_PARAMS_JSON_STRING`: the most bytes of parameters JSON a server reads (8 KiB);
/// iperf3 3.12 itself had no cap, later versions reject longer frames.
pub const MAX_PARAMS_JSON: usize = 8 * 1024;

/// Our cap on a results JSON (iperf3 reads results of any length; a peer asking for a
/// gigabyte allocation is refused instead).
pub const MAX_RESULTS_JSON: usize = 1024 * 1024;

/// The control-channel states (`iperf_api.h`), one signed byte each on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i8)]
pub enum State {
    /// `TEST_START`: server, all streams are connected.
    TestStart = 1,
    /// `TEST_RUNNING`: server, data may flow.
    TestRunning = 2,
    /// `TEST_END`: client, the test's end condition was met.
    TestEnd = 4,
    /// `PARAM_EXCHANGE`: server, send the parameters JSON.
    ParamExchange = 9,
    /// `CREATE_STREAMS`: server, connect the data streams.
    CreateStreams = 10,
    /// `SERVER_TERMINATE`: server was interrupted.
    ServerTerminate = 11,
    /// `CLIENT_TERMINATE`: client was interrupted.
    ClientTerminate = 12,
    /// `EXCHANGE_RESULTS`: server, results JSON both ways (client first).
    ExchangeResults = 13,
    /// `DISPLAY_RESULTS`: server, print the summary.
    DisplayResults = 14,
    /// `IPERF_START`: defined by iperf3, never sent.
    IperfStart = 15,
    /// `IPERF_DONE`: client, it is finished.
    IperfDone = 16,
    /// `ACCESS_DENIED`: server busy, or a data stream with a wrong cookie.
    AccessDenied = -1,
    /// `SERVER_ERROR`: followed by `i_errno` and `errno`, 4 bytes each, big-endian.
    ServerError = -2,
}

impl State {
    /// The state a wire byte names, if any.
    pub fn from_byte(b: u8) -> Option<State> {
        Some(match b as i8 {
            1 => State::TestStart,
            2 => State::TestRunning,
            4 => State::TestEnd,
            9 => State::ParamExchange,
            10 => State::CreateStreams,
            11 => State::ServerTerminate,
            12 => State::ClientTerminate,
            13 => State::ExchangeResults,
            14 => State::DisplayResults,
            15 => State::IperfStart,
            16 => State::IperfDone,
            -1 => State::AccessDenied,
            -2 => State::ServerError,
            _ => return None,
        })
    }

    /// The wire byte.
    pub fn byte(self) -> u8 {
        self as i8 as u8
    }
}

/// iperf3's error numbers (`i_errno`, the `IE*` enum of `iperf_api.h`) that travel in
/// a `SERVER_ERROR` message or that this implementation reports.
pub mod ie {
    /// `IEDURATION`: test duration too long.
    pub const DURATION: i32 = 5;
    /// `IENUMSTREAMS`: too many parallel streams.
    pub const NUMSTREAMS: i32 = 6;
    /// `IEBLOCKSIZE`: block size out of range.
    pub const BLOCKSIZE: i32 = 7;
    /// `IEUNIMP`: "not implemented yet" — what a peer gets for options we do not do.
    pub const UNIMP: i32 = 13;
    /// `IEREVERSEBIDIR`: both reverse and bidirectional.
    pub const REVERSEBIDIR: i32 = 25;
    /// `IERECVCOOKIE`: unable to receive the cookie.
    pub const RECVCOOKIE: i32 = 106;
    /// `IECTRLCLOSE`: the control socket closed unexpectedly.
    pub const CTRLCLOSE: i32 = 109;
    /// `IEMESSAGE`: an unknown state byte.
    pub const MESSAGE: i32 = 110;
    /// `IERECVPARAMS`: unable to receive (or parse) the parameters.
    pub const RECVPARAMS: i32 = 114;
    /// `IERECVRESULTS`: unable to receive (or parse) the results.
    pub const RECVRESULTS: i32 = 117;
    /// `IECLIENTTERM`: the client has terminated.
    pub const CLIENTTERM: i32 = 119;
    /// `IESERVERTERM`: the server has terminated.
    pub const SERVERTERM: i32 = 120;
    /// `IEACCESSDENIED`: the server is busy running a test.
    pub const ACCESSDENIED: i32 = 121;
    /// `IEPROTOCOL`: protocol does not exist.
    pub const PROTOCOL: i32 = 131;
    /// `IENOMSG`: no message for too long.
    pub const NOMSG: i32 = 144;
    /// `IESTREAMCLOSE`: a data stream closed unexpectedly.
    pub const STREAMCLOSE: i32 = 207;
    /// `IESTREAMID`: results name a stream that does not exist.
    pub const STREAMID: i32 = 208;
}

/// The text iperf3's `iperf_strerror` gives the errors above (paraphrased where it
/// appends `perror` output).
pub fn strerror(i_errno: i32) -> &'static str {
    match i_errno {
        ie::DURATION => "test duration too long",
        ie::NUMSTREAMS => "number of parallel streams too large",
        ie::BLOCKSIZE => "block size invalid",
        ie::UNIMP => "an option you are trying to set is not implemented yet",
        ie::REVERSEBIDIR => "cannot be both reverse and bidirectional",
        ie::RECVCOOKIE => "unable to receive cookie at server",
        ie::CTRLCLOSE => "control socket has closed unexpectedly",
        ie::MESSAGE => "received an unknown control message",
        ie::RECVPARAMS => "unable to receive parameters from client",
        ie::RECVRESULTS => "unable to receive results",
        ie::CLIENTTERM => "the client has terminated",
        ie::SERVERTERM => "the server has terminated",
        ie::ACCESSDENIED => "the server is busy running a test. try again later",
        ie::PROTOCOL => "protocol does not exist",
        ie::NOMSG => "idle timeout for receiving data",
        ie::STREAMCLOSE => "stream has closed unexpectedly",
        ie::STREAMID => "stream has an invalid id",
        _ => "unknown iperf3 error",
    }
}

/// A test's cookie: 36 base32 characters and a NUL, as `make_cookie` builds it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Cookie(pub [u8; COOKIE_SIZE]);

impl Cookie {
    /// A fresh random cookie. Not a secret (iperf3 sends it in clear text): it only
    /// has to be unlikely to collide with another test's.
    pub fn generate() -> Cookie {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let mut out = [0u8; COOKIE_SIZE];
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        // Each RandomState has its own random keys: a seeded keyed hash per 12 chars.
        for (chunk_no, chunk) in out[..COOKIE_SIZE - 1].chunks_mut(12).enumerate() {
            let mut h = RandomState::new().build_hasher();
            h.write_u64(nanos);
            h.write_u64(seq);
            h.write_usize(chunk_no);
            h.write_u32(std::process::id());
            let mut bits = h.finish();
            for c in chunk.iter_mut() {
                *c = COOKIE_CHARS[(bits & 31) as usize];
                bits >>= 5;
            }
        }
        Cookie(out)
    }

    /// The cookie a peer sent, if it has the shape iperf3 gives cookies: 36 printable
    /// ASCII characters and a NUL. (iperf3 compares cookies without checking them; we
    /// refuse junk early so it can never be mistaken for a test.)
    pub fn parse(raw: &[u8]) -> Option<Cookie> {
        let raw: [u8; COOKIE_SIZE] = raw.try_into().ok()?;
        let (body, nul) = raw.split_at(COOKIE_SIZE - 1);
        if nul != [0] || !body.iter().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        Some(Cookie(raw))
    }

    /// The 36 characters, without the NUL.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0[..COOKIE_SIZE - 1]).unwrap_or("")
    }
}

impl std::fmt::Debug for Cookie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cookie({})", self.as_str())
    }
}

/// A JSON message as `JSON_write` frames it: 4-byte big-endian length, then the text
/// (no terminating NUL).
pub fn frame_json(v: &serde_json::Value) -> Vec<u8> {
    let text = v.to_string();
    let mut out = Vec::with_capacity(4 + text.len());
    out.extend_from_slice(&(text.len() as u32).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    out
}

/// A `SERVER_ERROR` message: the state byte, `i_errno` and `errno`.
pub fn server_error(i_errno: i32, errno: i32) -> [u8; 9] {
    let mut out = [0u8; 9];
    out[0] = State::ServerError.byte();
    out[1..5].copy_from_slice(&i_errno.to_be_bytes());
    out[5..9].copy_from_slice(&errno.to_be_bytes());
    out
}

/// The id iperf3's `iperf_add_stream` gives the `n`-th stream of a test (n from 0):
/// the first is 1, the next ones 3, 4, 5, … (the list walk starts counting at 2).
/// Both ends number streams this way, and results are matched by these ids.
pub fn stream_id(n: usize) -> u32 {
    if n == 0 {
        1
    } else {
        n as u32 + 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_as_signed_bytes() {
        for s in [
            State::TestStart,
            State::TestEnd,
            State::ParamExchange,
            State::AccessDenied,
            State::ServerError,
            State::IperfDone,
        ] {
            assert_eq!(State::from_byte(s.byte()), Some(s));
        }
        assert_eq!(State::AccessDenied.byte(), 0xff);
        assert_eq!(State::ServerError.byte(), 0xfe);
        assert_eq!(State::from_byte(3), None);
        assert_eq!(State::from_byte(0x7f), None);
    }

    #[test]
    fn cookies_have_iperf3_shape_and_differ() {
        let a = Cookie::generate();
        let b = Cookie::generate();
        assert_ne!(a, b);
        assert_eq!(a.0[36], 0);
        assert!(a.as_str().bytes().all(|c| COOKIE_CHARS.contains(&c)));
        assert_eq!(Cookie::parse(&a.0), Some(a));
        let mut bad = a.0;
        bad[36] = b'x';
        assert_eq!(Cookie::parse(&bad), None);
        bad = a.0;
        bad[3] = 0;
        assert_eq!(Cookie::parse(&bad), None);
        assert_eq!(Cookie::parse(&a.0[..36]), None);
    }

    #[test]
    fn stream_ids_follow_iperf_add_stream() {
        assert_eq!(
            (0..5).map(stream_id).collect::<Vec<_>>(),
            vec![1, 3, 4, 5, 6]
        );
    }

    #[test]
    fn framing() {
        let f = frame_json(&serde_json::json!({"a": 1}));
        assert_eq!(&f[..4], &7u32.to_be_bytes());
        assert_eq!(&f[4..], br#"{"a":1}"#);
        let e = server_error(ie::UNIMP, 0);
        assert_eq!(e, [0xfe, 0, 0, 0, 13, 0, 0, 0, 0]);
    }
}
