//! A non-blocking, buffered iperf3 control connection: bytes in, bytes out, and the
//! three message kinds decoded from the input (state bytes, framed JSON, raw bytes).
//!
//! Every read is bounded: the input buffer never holds more than the largest message
//! the current step accepts, so a peer that floods the control connection or announces
//! a gigabyte JSON is refused, not buffered.

use std::io;

use super::net::Net;
use super::proto::State;

/// What decoding the input gave.
#[derive(Debug, PartialEq)]
pub enum Msg<T> {
    /// Not all of it has arrived yet.
    Pending,
    /// A complete message.
    Ready(T),
}

/// Why the control connection is unusable.
#[derive(Debug, thiserror::Error)]
pub enum CtrlError {
    /// The peer closed it.
    #[error("control connection closed by the peer")]
    Closed,
    /// A socket error.
    #[error("control connection: {0}")]
    Io(#[from] io::Error),
    /// A JSON length prefix above the limit.
    #[error("JSON message of {len} bytes is over the {max}-byte limit")]
    TooLong {
        /// Announced length.
        len: u64,
        /// The limit for this message.
        max: usize,
    },
    /// Bytes that are not JSON (or not a JSON object).
    #[error("malformed JSON message: {0}")]
    BadJson(String),
    /// A state byte iperf3 does not define.
    #[error("unknown state byte {0}")]
    BadState(i8),
}

/// One control connection.
pub struct Ctrl<C> {
    conn: Option<C>,
    input: Vec<u8>,
    output: Vec<u8>,
    /// The peer closed its side.
    eof: bool,
}

impl<C> Ctrl<C> {
    /// Wraps a connection.
    pub fn new(conn: C) -> Self {
        Ctrl {
            conn: Some(conn),
            input: Vec::new(),
            output: Vec::new(),
            eof: false,
        }
    }

    /// The connection.
    pub fn conn(&self) -> Option<&C> {
        self.conn.as_ref()
    }

    /// Queues bytes to send.
    pub fn queue(&mut self, bytes: &[u8]) {
        self.output.extend_from_slice(bytes);
    }

    /// Queues a state byte.
    pub fn queue_state(&mut self, s: State) {
        self.output.push(s.byte());
    }

    /// Whether everything queued has been handed to the stack.
    pub fn flushed(&self) -> bool {
        self.output.is_empty()
    }

    /// Whether the peer closed its side (and everything it sent was read).
    pub fn peer_closed(&self) -> bool {
        self.eof && self.input.is_empty()
    }

    /// Sends what the stack takes. True if anything moved.
    pub fn flush<N: Net<Conn = C>>(&mut self, net: &mut N) -> Result<bool, CtrlError> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(CtrlError::Closed);
        };
        let mut moved = false;
        while !self.output.is_empty() {
            match net.send(conn, &self.output) {
                Ok(0) => break,
                Ok(n) => {
                    self.output.drain(..n);
                    moved = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(moved)
    }

    /// Reads until `want` bytes are buffered (never more). True if anything arrived.
    fn fill<N: Net<Conn = C>>(&mut self, net: &mut N, want: usize) -> Result<bool, CtrlError> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(CtrlError::Closed);
        };
        let mut moved = false;
        while self.input.len() < want && !self.eof {
            let have = self.input.len();
            self.input.resize(want, 0);
            match net.recv(conn, &mut self.input[have..]) {
                Ok(0) => {
                    self.input.truncate(have);
                    self.eof = true;
                }
                Ok(n) => {
                    self.input.truncate(have + n);
                    moved = true;
                }
                Err(e) => {
                    self.input.truncate(have);
                    if e.kind() == io::ErrorKind::WouldBlock {
                        break;
                    }
                    return Err(e.into());
                }
            }
        }
        Ok(moved)
    }

    /// Reads and drops up to `max` bytes that have arrived.
    pub fn discard_input<N: Net<Conn = C>>(
        &mut self,
        net: &mut N,
        max: usize,
    ) -> Result<(), CtrlError> {
        self.input.clear();
        self.fill(net, max)?;
        self.input.clear();
        Ok(())
    }

    /// Takes exactly `n` raw bytes once they are all here.
    pub fn take_bytes<N: Net<Conn = C>>(
        &mut self,
        net: &mut N,
        n: usize,
    ) -> Result<Msg<Vec<u8>>, CtrlError> {
        self.fill(net, n)?;
        if self.input.len() >= n {
            return Ok(Msg::Ready(self.input.drain(..n).collect()));
        }
        if self.eof {
            return Err(CtrlError::Closed);
        }
        Ok(Msg::Pending)
    }

    /// Takes one state byte.
    pub fn take_state<N: Net<Conn = C>>(&mut self, net: &mut N) -> Result<Msg<State>, CtrlError> {
        match self.take_bytes(net, 1)? {
            Msg::Pending => Ok(Msg::Pending),
            Msg::Ready(b) => {
                let b = b[0];
                State::from_byte(b)
                    .map(Msg::Ready)
                    .ok_or(CtrlError::BadState(b as i8))
            }
        }
    }

    /// Takes one length-framed JSON object of at most `max` bytes.
    pub fn take_json<N: Net<Conn = C>>(
        &mut self,
        net: &mut N,
        max: usize,
    ) -> Result<Msg<serde_json::Map<String, serde_json::Value>>, CtrlError> {
        self.fill(net, 4)?;
        if self.input.len() < 4 {
            return if self.eof {
                Err(CtrlError::Closed)
            } else {
                Ok(Msg::Pending)
            };
        }
        let len = u32::from_be_bytes([self.input[0], self.input[1], self.input[2], self.input[3]]);
        let len = len as usize;
        if len > max {
            return Err(CtrlError::TooLong {
                len: len as u64,
                max,
            });
        }
        self.fill(net, 4 + len)?;
        if self.input.len() < 4 + len {
            return if self.eof {
                Err(CtrlError::Closed)
            } else {
                Ok(Msg::Pending)
            };
        }
        let body: Vec<u8> = self.input.drain(..4 + len).skip(4).collect();
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(serde_json::Value::Object(m)) => Ok(Msg::Ready(m)),
            Ok(other) => Err(CtrlError::BadJson(format!(
                "expected an object, got {}",
                kind_of(&other)
            ))),
            Err(e) => Err(CtrlError::BadJson(e.to_string())),
        }
    }

    /// Takes the connection out (a data stream whose cookie was read through this
    /// wrapper). Bytes already buffered beyond the cookie are not expected: a client
    /// sends data only after `TEST_RUNNING`.
    pub fn take_conn(&mut self) -> Option<C> {
        self.conn.take()
    }

    /// Closes the connection (what was queued and flushed is still delivered).
    pub fn close<N: Net<Conn = C>>(&mut self, net: &mut N) {
        if let Some(c) = self.conn.take() {
            net.close(c);
        }
    }
}

fn kind_of(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
