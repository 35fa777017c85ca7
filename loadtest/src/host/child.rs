//! The parent's handle on the guest process of daemon mode: its stdin for commands,
//! its stdout as lines with a bounded wait for each, the tail of its stderr for error
//! messages, and a guard that kills and reaps it on every exit path.
//!
//! The guest runs in its own process group, so a Ctrl-C on the terminal reaches only
//! loadtest, which then stops it in order (or kills it); and it asks the kernel to
//! SIGKILL it if loadtest dies ([`super::guest_proc`]), so it never outlives a
//! `kill -9` of its parent either.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{signal, HostError};

/// Lines of the guest's stderr kept for error messages.
const STDERR_LINES: usize = 20;
/// Longest line read from the guest (a longer one is cut, not buffered without end).
const MAX_LINE: u64 = 4096;
/// Longest single wait before [`GuestChild::expect`] looks at the Ctrl-C flag again.
const SLICE: Duration = Duration::from_millis(50);

/// A running guest process. Dropping it kills and reaps it.
pub struct GuestChild {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    readers: Vec<JoinHandle<()>>,
}

/// Reads lines (each cut at [`MAX_LINE`] bytes, the rest skipped in bounded chunks)
/// until EOF or an error.
fn read_lines(r: impl Read, mut each: impl FnMut(String)) {
    let mut r = BufReader::new(r);
    let mut chunk = |buf: &mut Vec<u8>| (&mut r).take(MAX_LINE).read_until(b'\n', buf);
    loop {
        let mut buf = Vec::new();
        match chunk(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let mut rest = Vec::new();
                let mut complete = buf.last() == Some(&b'\n');
                while !complete {
                    rest.clear();
                    match chunk(&mut rest) {
                        Ok(0) | Err(_) => complete = true,
                        Ok(_) => complete = rest.last() == Some(&b'\n'),
                    }
                }
                each(String::from_utf8_lossy(&buf).trim_end().to_owned());
            }
        }
    }
}

impl GuestChild {
    /// Starts `cmd` with piped stdio in its own process group.
    pub fn spawn(mut cmd: Command) -> Result<GuestChild, HostError> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| HostError::GuestStart(format!("{cmd:?}: {e}")))?;
        let (stdin, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let mut g = GuestChild {
            child,
            stdin,
            lines: channel().1,
            stderr: Arc::new(Mutex::new(VecDeque::new())),
            readers: Vec::new(),
        };
        let (Some(stdout), Some(stderr)) = (stdout, stderr) else {
            return Err(HostError::GuestStart("its stdio was not piped".into()));
        };
        let (tx, rx) = channel();
        g.lines = rx;
        let out = std::thread::Builder::new()
            .name("lt-guest-out".into())
            .spawn(move || {
                read_lines(stdout, |l| {
                    // Nobody listens any more: keep draining so the guest never blocks.
                    let _ = tx.send(l);
                })
            })
            .map_err(|e| HostError::GuestStart(format!("reader thread: {e}")))?;
        g.readers.push(out);
        let tail = g.stderr.clone();
        let err = std::thread::Builder::new()
            .name("lt-guest-err".into())
            .spawn(move || {
                read_lines(stderr, |l| {
                    let mut t = tail.lock().unwrap_or_else(PoisonError::into_inner);
                    if t.len() == STDERR_LINES {
                        t.pop_front();
                    }
                    t.push_back(l);
                })
            })
            .map_err(|e| HostError::GuestStart(format!("reader thread: {e}")))?;
        g.readers.push(err);
        Ok(g)
    }

    /// The guest's pid.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The last lines the guest wrote to stderr.
    fn stderr_tail(&self) -> String {
        let t = self.stderr.lock().unwrap_or_else(PoisonError::into_inner);
        t.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// The error for a guest whose stdout ended: its exit status (waited for briefly:
    /// the pipe closes a moment before the process is gone) and stderr.
    fn exited(&mut self) -> HostError {
        let deadline = Instant::now() + Duration::from_secs(2);
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break s.to_string(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Ok(None) => break "closed its stdout, still running".to_owned(),
                Err(e) => break format!("unknown status ({e})"),
            }
        };
        // The stderr reader may still be collecting the last lines.
        std::thread::sleep(Duration::from_millis(20));
        HostError::GuestExited {
            status,
            stderr: self.stderr_tail(),
        }
    }

    /// Sends one command line.
    pub fn send(&mut self, line: &str) -> Result<(), HostError> {
        let r = match self.stdin.as_mut() {
            Some(s) => s
                .write_all(format!("{line}\n").as_bytes())
                .and_then(|()| s.flush()),
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        };
        r.map_err(|_| self.exited())
    }

    /// Classifies one line: `error ...` is the guest reporting a failure.
    fn check(&self, line: String) -> Result<String, HostError> {
        match line.strip_prefix("error ") {
            Some(msg) => Err(HostError::Guest(msg.to_owned())),
            None => Ok(line),
        }
    }

    /// Waits at most `timeout` for a line starting with `word` and returns the rest of
    /// it. Other lines are skipped; an `error` line, the guest exiting, or the
    /// timeout fail.
    pub fn expect(&mut self, word: &str, timeout: Duration) -> Result<String, HostError> {
        let deadline = Instant::now() + timeout;
        loop {
            if signal::interrupted() {
                return Err(HostError::Interrupted);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            // In slices, so Ctrl-C is noticed while the guest takes its time.
            match self.lines.recv_timeout(left.min(SLICE)) {
                Ok(l) => {
                    let l = self.check(l)?;
                    let mut parts = l.splitn(2, ' ');
                    if parts.next() == Some(word) {
                        return Ok(parts.next().unwrap_or("").to_owned());
                    }
                    log::debug!("loadtest host: guest said {l:?}");
                }
                Err(RecvTimeoutError::Timeout) if left > SLICE => {}
                Err(RecvTimeoutError::Timeout) => {
                    return Err(HostError::GuestTimeout {
                        waiting_for: word.to_owned(),
                        secs: timeout.as_secs_f64(),
                        stderr: self.stderr_tail(),
                    })
                }
                Err(RecvTimeoutError::Disconnected) => return Err(self.exited()),
            }
        }
    }

    /// Fails if the guest reported an error or exited since the last look (without
    /// waiting); other lines are skipped.
    pub fn poll(&mut self) -> Result<(), HostError> {
        loop {
            match self.lines.try_recv() {
                Ok(l) => {
                    self.check(l)?;
                }
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Disconnected) => return Err(self.exited()),
            }
        }
    }

    /// Orderly end: `quit` (the guest closes its vif, then exits), waiting at most
    /// `timeout`; killed if it does not go.
    pub fn quit(mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        if self.send("quit").is_ok() {
            // Closing the pipe too: a guest stuck reading sees EOF.
            self.stdin = None;
            while Instant::now() < deadline {
                match self.child.try_wait() {
                    Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                    _ => break,
                }
            }
        }
        // Drop kills it if it is still there, and reaps it.
    }
}

impl Drop for GuestChild {
    fn drop(&mut self) {
        self.stdin = None;
        if let Ok(None) = self.child.try_wait() {
            // The whole process group (the guest leads its own): nothing it started
            // may keep running, or keep its pipes open.
            if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
                // SAFETY: kill(2) on the process group of our own child, which is not
                // reaped yet, so the group id is still ours.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
            let _ = self.child.kill();
        }
        // Reaps it: after SIGKILL this returns at once.
        let _ = self.child.wait();
        // The readers reach EOF now that the pipes' writers are gone; they are not
        // joined, so nothing here can wait on a descriptor someone else still holds.
        self.readers.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn sh(script: &str) -> GuestChild {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        GuestChild::spawn(c).expect("sh starts")
    }

    #[test]
    fn overlong_lines_are_cut_not_buffered() {
        let mut input = vec![b'x'; 3 * MAX_LINE as usize + 7];
        input.extend_from_slice(b"\nok\nlast");
        let mut got = Vec::new();
        read_lines(&input[..], |l| got.push(l));
        assert_eq!(
            got.len(),
            3,
            "{:?}",
            got.iter().map(String::len).collect::<Vec<_>>()
        );
        assert_eq!(got[0].len(), MAX_LINE as usize);
        assert_eq!(got[1], "ok");
        assert_eq!(got[2], "last");
    }

    #[test]
    fn lines_are_awaited_with_a_bound_and_errors_are_typed() {
        let mut g = sh("read x; echo noise; echo got $x; echo 'error it broke'; sleep 5");
        g.send("hello").expect("stdin");
        assert_eq!(
            g.expect("got", Duration::from_secs(5)).expect("got"),
            "hello"
        );
        match g.expect("never", Duration::from_secs(5)) {
            Err(HostError::Guest(m)) => assert_eq!(m, "it broke"),
            other => panic!("{other:?}"),
        }
        let t = Instant::now();
        match g.expect("never", Duration::from_millis(100)) {
            Err(HostError::GuestTimeout { .. }) => {}
            other => panic!("{other:?}"),
        }
        assert!(t.elapsed() < Duration::from_secs(2));
        let pid = g.id();
        drop(g);
        // Killed and reaped: the pid is gone (not a zombie).
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn an_early_exit_carries_the_status_and_stderr() {
        let mut g = sh("echo 'cannot connect: no socket' >&2; exit 3");
        match g.expect("ready", Duration::from_secs(5)) {
            Err(HostError::GuestExited { status, stderr }) => {
                assert!(status.contains('3'), "{status}");
                assert!(stderr.contains("no socket"), "{stderr}");
            }
            other => panic!("{other:?}"),
        }
    }
}
