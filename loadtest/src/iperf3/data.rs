//! The data streams of a test: moving blocks on every stream until the stack pushes
//! back, and counting them.

use std::io;

use super::net::Net;
use super::stats::Stats;

/// Writes or reads per stream per pass: enough to fill a fast pipe, few enough that
/// the control connection and the other streams are looked at often.
const OPS_PER_PASS: usize = 16;

/// One TCP data stream.
pub struct DataStream<C> {
    /// The connection (taken when closed).
    pub conn: Option<C>,
    /// The peer closed its side.
    pub eof: bool,
    /// Bytes still to send before data: the client's cookie.
    pub hello: Vec<u8>,
}

impl<C> DataStream<C> {
    /// A stream over `conn` that first sends `hello`.
    pub fn new(conn: C, hello: Vec<u8>) -> Self {
        DataStream {
            conn: Some(conn),
            eof: false,
            hello,
        }
    }
}

/// A block of test data (iperf3 sends whatever is in its buffer; ours is a fixed
/// pattern so a capture is recognisable).
pub fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Sends the pending hellos. True when every stream has sent its hello.
pub fn send_hellos<N: Net>(net: &mut N, streams: &mut [DataStream<N::Conn>]) -> io::Result<bool> {
    let mut all = true;
    for s in streams.iter_mut() {
        let Some(c) = s.conn.as_mut() else {
            continue;
        };
        while !s.hello.is_empty() {
            match net.send(c, &s.hello) {
                Ok(0) => break,
                Ok(n) => {
                    s.hello.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        all &= s.hello.is_empty();
    }
    Ok(all)
}

/// Sends blocks of `block` on every stream until the stack is full. `remaining`
/// bounds the total (a `-n` test), and is decremented. Returns the bytes sent.
pub fn pump_send<N: Net>(
    net: &mut N,
    streams: &mut [DataStream<N::Conn>],
    stats: &mut Stats,
    block: &[u8],
    remaining: &mut Option<u64>,
) -> io::Result<u64> {
    let mut total = 0u64;
    for (i, s) in streams.iter_mut().enumerate() {
        let Some(c) = s.conn.as_mut() else {
            continue;
        };
        for _ in 0..OPS_PER_PASS {
            let len = match remaining {
                Some(0) => return Ok(total),
                Some(r) => block.len().min(usize::try_from(*r).unwrap_or(usize::MAX)),
                None => block.len(),
            };
            match net.send(c, &block[..len]) {
                Ok(0) => break,
                Ok(n) => {
                    stats.add(i, n as u64);
                    total += n as u64;
                    if let Some(r) = remaining {
                        *r -= n as u64;
                    }
                    if n < len {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(total)
}

/// Reads what has arrived on every stream; counts it as test bytes, or as late bytes
/// when `late`. Returns the bytes read.
pub fn pump_recv<N: Net>(
    net: &mut N,
    streams: &mut [DataStream<N::Conn>],
    stats: &mut Stats,
    buf: &mut [u8],
    late: bool,
) -> io::Result<u64> {
    let mut total = 0u64;
    for (i, s) in streams.iter_mut().enumerate() {
        let Some(c) = s.conn.as_mut() else {
            continue;
        };
        if s.eof {
            continue;
        }
        for _ in 0..OPS_PER_PASS {
            match net.recv(c, buf) {
                Ok(0) => {
                    s.eof = true;
                    break;
                }
                Ok(n) => {
                    if late {
                        stats.add_late(i, n as u64);
                    } else {
                        stats.add(i, n as u64);
                    }
                    total += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(total)
}

/// Closes every stream.
pub fn close_all<N: Net>(net: &mut N, streams: &mut [DataStream<N::Conn>]) {
    for s in streams.iter_mut() {
        if let Some(c) = s.conn.take() {
            net.close(c);
        }
    }
}
