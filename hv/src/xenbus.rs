//! xenbus helpers both split drivers use, named after Linux's xenbus API
//! (`drivers/xen/xenbus/xenbus_client.c`, `xenbus_xs.c`), written only against
//! [`Store`] so they work over the embedded store, the daemon and Linux's `/dev/xen`.
//!
//! `core` + `alloc` only; [`wait_for_state`] needs a clock and is `std`-only.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::abi::xenbus::XenbusState;
use crate::env::{Store, StoreError, TxId, XBT_NIL};

/// How many times [`Transaction::run`] retries a transaction that ended in `EAGAIN`
/// before giving up (Linux's drivers loop without bound; a bound keeps a livelocked
/// store from hanging a driver).
pub const XENBUS_TRANSACTION_RETRIES: u32 = 16;

/// The longest value quoted back in a [`XenbusError::Parse`]: a peer's node can hold
/// kilobytes of junk that no log needs.
const QUOTED_VALUE_MAX: usize = 64;

/// Errors of the xenbus helpers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XenbusError {
    /// The store refused the operation.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A node's value is not what the protocol says it holds.
    #[error("xenstore node {path} holds {value:?}, expected {expected}")]
    Parse {
        path: String,
        /// The value (lossy UTF-8, cut to 64 bytes).
        value: String,
        expected: &'static str,
    },
    /// The awaited state did not come in time.
    #[error("timed out waiting for {path}; last state seen: {}", last.name())]
    Timeout { path: String, last: XenbusState },
}

fn parse_error(path: &str, value: &[u8], expected: &'static str) -> XenbusError {
    let shown = &value[..value.len().min(QUOTED_VALUE_MAX)];
    XenbusError::Parse {
        path: path.into(),
        value: String::from_utf8_lossy(shown).into_owned(),
        expected,
    }
}

/// `dir/node`, as `xenbus_printf(t, dir, node, ...)` joins them.
pub fn path_join(dir: &str, node: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{node}")
    } else {
        format!("{dir}/{node}")
    }
}

/// `xenbus_read`: a node's value as UTF-8 text.
pub fn read_str(store: &dyn Store, tx: TxId, path: &str) -> Result<String, XenbusError> {
    let bytes = store.read(tx, path)?;
    String::from_utf8(bytes).map_err(|e| parse_error(path, e.as_bytes(), "UTF-8 text"))
}

/// Decimal digits, surrounding ASCII whitespace allowed (what `xenbus_scanf("%u")`
/// accepts from a well-behaved peer; signs, hex and trailing junk are refused).
fn parse_decimal(bytes: &[u8]) -> Option<u64> {
    let text = core::str::from_utf8(bytes)
        .ok()?
        .trim_matches(|c: char| c.is_ascii_whitespace());
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `xenbus_scanf(t, dir, node, "%u")`: a decimal `u32`.
pub fn read_u32(store: &dyn Store, tx: TxId, path: &str) -> Result<u32, XenbusError> {
    let bytes = store.read(tx, path)?;
    parse_decimal(&bytes)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| parse_error(path, &bytes, "a decimal u32"))
}

/// `xenbus_scanf(t, dir, node, "%llu")`: a decimal `u64`.
pub fn read_u64(store: &dyn Store, tx: TxId, path: &str) -> Result<u64, XenbusError> {
    let bytes = store.read(tx, path)?;
    parse_decimal(&bytes).ok_or_else(|| parse_error(path, &bytes, "a decimal u64"))
}

/// `xenbus_read_unsigned(dir, node, default)`: a decimal `u32`, `default` if the node is
/// missing. Unlike Linux, a malformed value is an error rather than the default.
pub fn read_unsigned(
    store: &dyn Store,
    tx: TxId,
    path: &str,
    default: u32,
) -> Result<u32, XenbusError> {
    match read_u32(store, tx, path) {
        Err(XenbusError::Store(StoreError::NotFound)) => Ok(default),
        other => other,
    }
}

/// A `feature-*` key: `"1"` (any non-zero number) is on, `"0"` is off, a missing node is
/// off (the peer predates the feature); anything else is a parse error.
pub fn read_bool_feature(store: &dyn Store, tx: TxId, path: &str) -> Result<bool, XenbusError> {
    match store.read(tx, path) {
        Ok(bytes) => parse_decimal(&bytes)
            .map(|v| v != 0)
            .ok_or_else(|| parse_error(path, &bytes, "a feature flag (0 or 1)")),
        Err(StoreError::NotFound) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// `xenbus_printf`: write formatted text to a node; see also [`xenbus_printf!`].
pub fn write_fmt(
    store: &dyn Store,
    tx: TxId,
    path: &str,
    args: fmt::Arguments<'_>,
) -> Result<(), XenbusError> {
    let text = alloc::fmt::format(args);
    store.write(tx, path, text.as_bytes())?;
    Ok(())
}

/// `xenbus_printf(t, path, fmt, ...)`: `xenbus_printf!(store, tx, path, "{}", ring_ref)`.
#[macro_export]
macro_rules! xenbus_printf {
    ($store:expr, $tx:expr, $path:expr, $($fmt:tt)+) => {
        $crate::xenbus::write_fmt($store, $tx, $path, ::core::format_args!($($fmt)+))
    };
}

/// `xenbus_read_driver_state`: the state in `<dev_path>/state`. A missing node reads as
/// `XenbusStateUnknown`, as in Linux (the peer is gone or not yet set up); a value that
/// names no state is a parse error.
pub fn xenbus_read_state(store: &dyn Store, dev_path: &str) -> Result<XenbusState, XenbusError> {
    read_state_in(store, XBT_NIL, &path_join(dev_path, "state"))
}

fn read_state_in(
    store: &dyn Store,
    tx: TxId,
    state_path: &str,
) -> Result<XenbusState, XenbusError> {
    match store.read(tx, state_path) {
        Ok(bytes) => XenbusState::parse(&bytes)
            .ok_or_else(|| parse_error(state_path, &bytes, "a xenbus state")),
        Err(StoreError::NotFound) => Ok(XenbusState::Unknown),
        Err(e) => Err(e.into()),
    }
}

/// `xenbus_switch_state`: write `state` (decimal) to `<dev_path>/state` in a
/// transaction, skipping the write if it is already the state. As in Linux it will not
/// resurrect a removed device: if `dev_path` itself is gone it fails with `ENOENT`
/// (Linux silently gives up; an error is easier to act on).
pub fn xenbus_switch_state(
    store: &dyn Store,
    dev_path: &str,
    state: XenbusState,
) -> Result<(), XenbusError> {
    let state_path = path_join(dev_path, "state");
    Transaction::run(store, |t| -> Result<(), XenbusError> {
        store.read(t.id(), dev_path)?;
        let current = read_state_in(store, t.id(), &state_path).ok();
        if current != Some(state) || !t.exists(&state_path)? {
            t.write_fmt(&state_path, format_args!("{}", state as u32))?;
        }
        Ok(())
    })
}

/// An open xenstore transaction (`xenbus_transaction_start` / `_end`), handed to the
/// closure of [`Transaction::run`].
pub struct Transaction<'a> {
    store: &'a dyn Store,
    id: TxId,
}

impl<'a> Transaction<'a> {
    /// Run `body` in a transaction and commit it, retrying the whole body when the
    /// commit reports a conflict (`EAGAIN`), up to [`XENBUS_TRANSACTION_RETRIES`] times
    /// — the `again:` loop around `xenbus_transaction_start/end` in Linux drivers.
    /// An error from `body` aborts the transaction and is returned as is.
    pub fn run<T, E, F>(store: &'a dyn Store, body: F) -> Result<T, E>
    where
        E: From<StoreError>,
        F: FnMut(&Transaction<'a>) -> Result<T, E>,
    {
        Self::run_with_retries(store, XENBUS_TRANSACTION_RETRIES, body)
    }

    /// [`Transaction::run`] with an explicit number of attempts (at least one).
    pub fn run_with_retries<T, E, F>(
        store: &'a dyn Store,
        attempts: u32,
        mut body: F,
    ) -> Result<T, E>
    where
        E: From<StoreError>,
        F: FnMut(&Transaction<'a>) -> Result<T, E>,
    {
        for _ in 0..attempts.max(1) {
            let t = Transaction {
                store,
                id: store.transaction_start()?,
            };
            let value = match body(&t) {
                Ok(value) => value,
                Err(e) => {
                    if let Err(abort) = store.transaction_end(t.id, false) {
                        log::debug!("xenbus: aborting transaction {} failed: {abort}", t.id);
                    }
                    return Err(e);
                }
            };
            match store.transaction_end(t.id, true) {
                Ok(()) => return Ok(value),
                Err(StoreError::Again) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Again.into())
    }

    /// The transaction id for direct [`Store`] calls.
    pub fn id(&self) -> TxId {
        self.id
    }

    /// The store this transaction runs on.
    pub fn store(&self) -> &'a dyn Store {
        self.store
    }

    /// Whether `path` exists (`xenbus_exists`).
    pub fn exists(&self, path: &str) -> Result<bool, XenbusError> {
        match self.store.read(self.id, path) {
            Ok(_) => Ok(true),
            Err(StoreError::NotFound) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// [`read_str`] in this transaction.
    pub fn read_str(&self, path: &str) -> Result<String, XenbusError> {
        read_str(self.store, self.id, path)
    }

    /// [`read_u32`] in this transaction.
    pub fn read_u32(&self, path: &str) -> Result<u32, XenbusError> {
        read_u32(self.store, self.id, path)
    }

    /// [`read_u64`] in this transaction.
    pub fn read_u64(&self, path: &str) -> Result<u64, XenbusError> {
        read_u64(self.store, self.id, path)
    }

    /// [`read_bool_feature`] in this transaction.
    pub fn read_bool_feature(&self, path: &str) -> Result<bool, XenbusError> {
        read_bool_feature(self.store, self.id, path)
    }

    /// `xenbus_write` in this transaction.
    pub fn write(&self, path: &str, value: &[u8]) -> Result<(), XenbusError> {
        Ok(self.store.write(self.id, path, value)?)
    }

    /// [`write_fmt`] in this transaction.
    pub fn write_fmt(&self, path: &str, args: fmt::Arguments<'_>) -> Result<(), XenbusError> {
        write_fmt(self.store, self.id, path, args)
    }

    /// `xenbus_mkdir` in this transaction.
    pub fn mkdir(&self, path: &str) -> Result<(), XenbusError> {
        Ok(self.store.mkdir(self.id, path)?)
    }

    /// `xenbus_rm` in this transaction.
    pub fn rm(&self, path: &str) -> Result<(), XenbusError> {
        Ok(self.store.rm(self.id, path)?)
    }

    /// `xenbus_directory` in this transaction.
    pub fn directory(&self, path: &str) -> Result<Vec<String>, XenbusError> {
        Ok(self.store.directory(self.id, path)?)
    }
}

#[cfg(feature = "std")]
mod wait {
    use super::*;
    use crate::env::WatchEvent;
    use core::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    static NEXT_TOKEN: AtomicU64 = AtomicU64::new(0);

    /// Wait until `<dev_path>/state` satisfies `pred`, using a watch on it (as Linux's
    /// `xenbus_watch_path` + state callback do). Returns the state that satisfied `pred`,
    /// or [`XenbusError::Timeout`] with the last state seen.
    ///
    /// The watch events of a connection share one queue: any other watch's events that
    /// arrive meanwhile are consumed and lost. Use it on a connection without other
    /// watches, or use [`wait_for_state_keeping`].
    pub fn wait_for_state(
        store: &dyn Store,
        dev_path: &str,
        pred: impl Fn(XenbusState) -> bool,
        timeout: Duration,
    ) -> Result<XenbusState, XenbusError> {
        let mut others = Vec::new();
        let result = wait_for_state_keeping(store, dev_path, pred, timeout, &mut others);
        if !others.is_empty() {
            log::warn!(
                "xenbus: wait_for_state on {dev_path} consumed {} events of other watches",
                others.len()
            );
        }
        result
    }

    /// [`wait_for_state`] that hands every event of other watches it consumed to
    /// `others`, in arrival order, for the caller to process.
    pub fn wait_for_state_keeping(
        store: &dyn Store,
        dev_path: &str,
        pred: impl Fn(XenbusState) -> bool,
        timeout: Duration,
        others: &mut Vec<WatchEvent>,
    ) -> Result<XenbusState, XenbusError> {
        let state_path = path_join(dev_path, "state");
        let token = format!(
            "xenbus-wait-state/{}",
            NEXT_TOKEN.fetch_add(1, Ordering::Relaxed)
        );
        store.watch(&state_path, &token)?;
        let deadline = Instant::now().checked_add(timeout);
        let result = loop {
            let state = match read_state_in(store, XBT_NIL, &state_path) {
                Ok(s) => s,
                Err(e) => break Err(e),
            };
            if pred(state) {
                break Ok(state);
            }
            let remaining = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::MAX,
            };
            if remaining.is_zero() {
                break Err(XenbusError::Timeout {
                    path: state_path.clone(),
                    last: state,
                });
            }
            if let Some(ev) = store.next_watch_event(Some(remaining)) {
                if ev.token != token {
                    others.push(ev);
                }
            }
        };
        if let Err(e) = store.unwatch(&state_path, &token) {
            log::debug!("xenbus: unwatch {state_path}: {e}");
        }
        // Take our leftover events out of the queue so the caller never sees them.
        while let Some(ev) = store.next_watch_event(None) {
            if ev.token != token {
                others.push(ev);
            }
        }
        result
    }
}

#[cfg(feature = "std")]
pub use wait::{wait_for_state, wait_for_state_keeping};

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::env::WatchEvent;
    use crate::store::{StoreConnection, XenStore};
    use std::time::{Duration, Instant};

    const DEV: &str = "/local/domain/1/device/vif/0";

    fn setup() -> (XenStore, StoreConnection) {
        let xs = XenStore::new();
        xs.introduce_domain(1).unwrap();
        let d0 = xs.connect(0);
        d0.mkdir(XBT_NIL, DEV).unwrap();
        (xs, d0)
    }

    #[test]
    fn state_round_trip_and_missing_is_unknown() {
        let (_xs, d0) = setup();
        assert_eq!(xenbus_read_state(&d0, DEV), Ok(XenbusState::Unknown));
        xenbus_switch_state(&d0, DEV, XenbusState::Connected).unwrap();
        assert_eq!(d0.read(XBT_NIL, &format!("{DEV}/state")).unwrap(), b"4");
        assert_eq!(xenbus_read_state(&d0, DEV), Ok(XenbusState::Connected));
        for state in XenbusState::ALL {
            xenbus_switch_state(&d0, DEV, state).unwrap();
            assert_eq!(xenbus_read_state(&d0, DEV), Ok(state));
        }
        d0.write(XBT_NIL, &format!("{DEV}/state"), b"99").unwrap();
        assert!(matches!(
            xenbus_read_state(&d0, DEV),
            Err(XenbusError::Parse {
                expected: "a xenbus state",
                ..
            })
        ));
    }

    #[test]
    fn switch_state_skips_same_state_and_never_resurrects_a_device() {
        let (_xs, d0) = setup();
        xenbus_switch_state(&d0, DEV, XenbusState::InitWait).unwrap();
        let w = _xs.connect(0);
        w.watch(&format!("{DEV}/state"), "t").unwrap();
        assert!(w.next_watch_event(None).is_some(), "initial event");
        xenbus_switch_state(&d0, DEV, XenbusState::InitWait).unwrap();
        assert_eq!(
            w.next_watch_event(None),
            None,
            "no write for the same state"
        );
        xenbus_switch_state(&d0, DEV, XenbusState::Unknown).unwrap();
        assert!(
            w.next_watch_event(None).is_some(),
            "a different state is written"
        );
        d0.rm(XBT_NIL, DEV).unwrap();
        assert_eq!(
            xenbus_switch_state(&d0, DEV, XenbusState::Closed),
            Err(XenbusError::Store(StoreError::NotFound))
        );
        assert_eq!(d0.read(XBT_NIL, DEV), Err(StoreError::NotFound));
    }

    #[test]
    fn typed_reads() {
        let (_xs, d0) = setup();
        let node = |name: &str| format!("{DEV}/{name}");
        for (name, value) in [
            ("dec", "42"),
            ("spaced", " 42\n"),
            ("neg", "-1"),
            ("hex", "0x10"),
            ("big", "4294967296"),
            ("empty", ""),
            ("f-on", "1"),
            ("f-off", "0"),
            ("f-junk", "yes"),
        ] {
            d0.write(XBT_NIL, &node(name), value.as_bytes()).unwrap();
        }
        d0.write(XBT_NIL, &node("binary"), &[0xff, 0xfe]).unwrap();
        assert_eq!(read_u32(&d0, XBT_NIL, &node("dec")), Ok(42));
        assert_eq!(read_u32(&d0, XBT_NIL, &node("spaced")), Ok(42));
        for bad in ["neg", "hex", "big", "empty", "binary"] {
            assert!(
                matches!(
                    read_u32(&d0, XBT_NIL, &node(bad)),
                    Err(XenbusError::Parse { .. })
                ),
                "{bad}"
            );
        }
        assert_eq!(read_u64(&d0, XBT_NIL, &node("big")), Ok(4_294_967_296));
        assert_eq!(
            read_u32(&d0, XBT_NIL, &node("missing")),
            Err(XenbusError::Store(StoreError::NotFound))
        );
        assert_eq!(read_unsigned(&d0, XBT_NIL, &node("missing"), 7), Ok(7));
        assert_eq!(read_unsigned(&d0, XBT_NIL, &node("dec"), 7), Ok(42));
        assert_eq!(read_bool_feature(&d0, XBT_NIL, &node("f-on")), Ok(true));
        assert_eq!(read_bool_feature(&d0, XBT_NIL, &node("f-off")), Ok(false));
        assert_eq!(
            read_bool_feature(&d0, XBT_NIL, &node("f-missing")),
            Ok(false)
        );
        assert!(matches!(
            read_bool_feature(&d0, XBT_NIL, &node("f-junk")),
            Err(XenbusError::Parse { .. })
        ));
        assert_eq!(read_str(&d0, XBT_NIL, &node("spaced")).unwrap(), " 42\n");
        assert!(matches!(
            read_str(&d0, XBT_NIL, &node("binary")),
            Err(XenbusError::Parse { .. })
        ));
    }

    #[test]
    fn parse_errors_quote_a_bounded_value() {
        let (_xs, d0) = setup();
        d0.write(XBT_NIL, "/tool/junk", &[b'z'; 1000]).unwrap();
        match read_u32(&d0, XBT_NIL, "/tool/junk") {
            Err(XenbusError::Parse { path, value, .. }) => {
                assert_eq!(path, "/tool/junk");
                assert_eq!(value.len(), QUOTED_VALUE_MAX);
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn printf_writes_formatted_text() {
        let (_xs, d0) = setup();
        let path = path_join(DEV, "tx-ring-ref");
        assert_eq!(path, format!("{DEV}/tx-ring-ref"));
        assert_eq!(path_join("/a/", "b"), "/a/b");
        crate::xenbus_printf!(&d0, XBT_NIL, &path, "{}", 8u32 + 1).unwrap();
        assert_eq!(d0.read(XBT_NIL, &path).unwrap(), b"9");
        write_fmt(&d0, XBT_NIL, &path, format_args!("{:02x}:{:02x}", 0, 22)).unwrap();
        assert_eq!(d0.read(XBT_NIL, &path).unwrap(), b"00:16");
    }

    #[test]
    fn transaction_retries_on_conflict_then_commits() {
        let (xs, d0) = setup();
        let other = xs.connect(0);
        d0.write(XBT_NIL, "/tool/n", b"0").unwrap();
        let mut attempts = 0;
        let r = Transaction::run(&d0, |t| -> Result<u32, XenbusError> {
            attempts += 1;
            let v = t.read_u32("/tool/n")?;
            if attempts == 1 {
                // Someone else changes the node under our feet: the commit must fail
                // and the body run again on fresh data.
                other.write(XBT_NIL, "/tool/n", b"10")?;
            }
            t.write_fmt("/tool/n", format_args!("{}", v + 1))?;
            Ok(v)
        });
        assert_eq!(r, Ok(10));
        assert_eq!(attempts, 2);
        assert_eq!(d0.read(XBT_NIL, "/tool/n").unwrap(), b"11");
    }

    #[test]
    fn transaction_retries_are_bounded() {
        let (xs, d0) = setup();
        let other = xs.connect(0);
        d0.write(XBT_NIL, "/tool/n", b"0").unwrap();
        let mut attempts = 0;
        let r = Transaction::run_with_retries(&d0, 5, |t| -> Result<(), XenbusError> {
            attempts += 1;
            t.read_u32("/tool/n")?;
            other.write(XBT_NIL, "/tool/n", attempts.to_string().as_bytes())?;
            t.write("/tool/mine", b"x")
        });
        assert_eq!(r, Err(XenbusError::Store(StoreError::Again)));
        assert_eq!(attempts, 5);
        assert_eq!(d0.read(XBT_NIL, "/tool/mine"), Err(StoreError::NotFound));
    }

    #[test]
    fn transaction_body_error_aborts() {
        let (_xs, d0) = setup();
        let r = Transaction::run(&d0, |t| -> Result<(), XenbusError> {
            t.write("/tool/partial", b"x")?;
            t.read_u32("/tool/missing")?;
            Ok(())
        });
        assert_eq!(r, Err(XenbusError::Store(StoreError::NotFound)));
        assert_eq!(d0.read(XBT_NIL, "/tool/partial"), Err(StoreError::NotFound));
        // No transaction was left open: a guest could open its full quota again.
        let g = _xs.connect(1);
        for _ in 0..10 {
            let _ = Transaction::run(&g, |t| -> Result<(), XenbusError> {
                t.read_u32("/local/domain/1/missing").map(|_| ())
            });
        }
        assert!(g.transaction_start().is_ok());
    }

    #[test]
    fn wait_for_state_wakes_on_change() {
        let (xs, d0) = setup();
        xenbus_switch_state(&d0, DEV, XenbusState::Initialising).unwrap();
        let peer = xs.connect(0);
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            xenbus_switch_state(&peer, DEV, XenbusState::InitWait).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            xenbus_switch_state(&peer, DEV, XenbusState::Connected).unwrap();
        });
        let start = Instant::now();
        let got = wait_for_state(
            &d0,
            DEV,
            |s| s == XenbusState::Connected,
            Duration::from_secs(10),
        );
        writer.join().unwrap();
        assert_eq!(got, Ok(XenbusState::Connected));
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(
            d0.next_watch_event(None),
            None,
            "its own events are cleaned up"
        );
    }

    #[test]
    fn wait_for_state_times_out_with_last_state() {
        let (_xs, d0) = setup();
        xenbus_switch_state(&d0, DEV, XenbusState::InitWait).unwrap();
        let start = Instant::now();
        let got = wait_for_state(
            &d0,
            DEV,
            |s| s >= XenbusState::Connected,
            Duration::from_millis(60),
        );
        assert!(start.elapsed() >= Duration::from_millis(60));
        assert_eq!(
            got,
            Err(XenbusError::Timeout {
                path: format!("{DEV}/state"),
                last: XenbusState::InitWait
            })
        );
    }

    #[test]
    fn wait_for_state_keeping_hands_back_other_events() {
        let (xs, d0) = setup();
        d0.watch("/tool/other", "mine").unwrap();
        let peer = xs.connect(0);
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            peer.write(XBT_NIL, "/tool/other", b"1").unwrap();
            std::thread::sleep(Duration::from_millis(30));
            xenbus_switch_state(&peer, DEV, XenbusState::Closed).unwrap();
        });
        let mut others = Vec::new();
        let got = wait_for_state_keeping(
            &d0,
            DEV,
            |s| s == XenbusState::Closed,
            Duration::from_secs(10),
            &mut others,
        );
        writer.join().unwrap();
        assert_eq!(got, Ok(XenbusState::Closed));
        let mine = |p: &str| WatchEvent {
            path: p.into(),
            token: "mine".into(),
        };
        assert_eq!(
            others,
            [mine("/tool/other"), mine("/tool/other")],
            "initial + change"
        );
    }
}
