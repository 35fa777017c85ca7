//! Queue I/O, batching, backpressure and epoll, without root: a `SOCK_SEQPACKET`
//! socketpair keeps message boundaries exactly like a TAP fd (one frame per read/write),
//! so `TapQueue` runs over one end and the test plays the kernel on the other.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use netback::tap::*;
use netback::virtio_net_hdr::*;

fn seqpacket_pair() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two descriptors into the 2-element array.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(r, 0, "socketpair: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just created and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn send(fd: &OwnedFd, msg: &[u8]) -> bool {
    // SAFETY: msg is valid for reads of its length.
    let n = unsafe {
        libc::send(
            fd.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            libc::MSG_DONTWAIT,
        )
    };
    n == msg.len() as isize
}

fn recv(fd: &OwnedFd) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 70000];
    // SAFETY: buf is valid for writes of its length.
    let n = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

fn hdr(gso_size: u16) -> VirtioNetHdr {
    VirtioNetHdr {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
        hdr_len: 54,
        gso_size,
        csum_start: 34,
        csum_offset: 16,
        num_buffers: 0,
    }
}

#[test]
fn write_frame_gathers_header_and_segments_into_one_message() {
    let (a, b) = seqpacket_pair();
    let q = TapQueue::from_fd(a, 3);
    assert_eq!(q.index(), 3);
    let segs: [&[u8]; 3] = [b"ethernet-hdr..", b"ip+tcp", b"payload!"];
    match q.write_frame(&hdr(1448), &segs).unwrap() {
        WriteOutcome::Written(n) => assert_eq!(n, 28),
        other => panic!("{other:?}"),
    }
    let msg = recv(&b).expect("one message");
    assert_eq!(&msg[..VNET_HDR_LEN], &hdr(1448).to_bytes());
    assert_eq!(&msg[VNET_HDR_LEN..], b"ethernet-hdr..ip+tcppayload!");
    assert!(recv(&b).is_none(), "exactly one message per frame");
    let s = q.stats();
    assert_eq!((s.tx_frames, s.tx_bytes), (1, 28));
    // Too many segments: rejected and counted, nothing sent.
    let many: Vec<&[u8]> = vec![b"x"; MAX_TX_SEGMENTS + 1];
    assert!(matches!(
        q.write_frame(&VirtioNetHdr::NONE, &many).unwrap(),
        WriteOutcome::Rejected(_)
    ));
    assert!(recv(&b).is_none());
    assert_eq!(q.stats().tx_errors, 1);
}

#[test]
fn read_frame_splits_header_and_frame() {
    let (a, b) = seqpacket_pair();
    let q = TapQueue::from_fd(a, 0);
    let mut h = VirtioNetHdr::NONE;
    let mut buf = [0u8; 100];
    assert_eq!(
        q.read_frame(&mut h, &mut buf).unwrap(),
        ReadOutcome::WouldBlock
    );
    let mut msg = hdr(9000).to_bytes().to_vec();
    msg.extend_from_slice(b"a frame");
    assert!(send(&b, &msg));
    assert_eq!(
        q.read_frame(&mut h, &mut buf).unwrap(),
        ReadOutcome::Frame(7)
    );
    assert_eq!(h, hdr(9000));
    assert_eq!(&buf[..7], b"a frame");
    // Vectored: the frame is scattered over the buffers in order.
    assert!(send(&b, &msg));
    let (mut p1, mut p2) = ([0u8; 3], [0u8; 10]);
    assert_eq!(
        q.read_frame_vectored(&mut h, &mut [&mut p1, &mut p2])
            .unwrap(),
        ReadOutcome::Frame(7)
    );
    assert_eq!((&p1, &p2[..4]), (b"a f", &b"rame"[..]));
    let s = q.stats();
    assert_eq!((s.rx_frames, s.rx_bytes), (2, 14));
    // A frame exactly as long as the buffer is whole; one byte longer is cut: discarded
    // and counted, never handed out as a short frame.
    let mut exact = [0u8; 7];
    assert!(send(&b, &msg));
    assert_eq!(
        q.read_frame(&mut h, &mut exact).unwrap(),
        ReadOutcome::Frame(7)
    );
    let mut short = [0u8; 6];
    assert!(send(&b, &msg));
    assert!(
        matches!(q.read_frame(&mut h, &mut short).unwrap(), ReadOutcome::Truncated(n) if n > 6)
    );
    // Less than a header.
    assert!(send(&b, &[1, 2, 3]));
    assert_eq!(
        q.read_frame(&mut h, &mut buf).unwrap(),
        ReadOutcome::Truncated(3)
    );
    let s = q.stats();
    assert_eq!((s.rx_frames, s.rx_truncated), (3, 2));
}

#[test]
fn read_batch_drains_until_eagain_and_respects_capacity() {
    let (a, b) = seqpacket_pair();
    let q = TapQueue::from_fd(a, 0);
    for i in 0..5u8 {
        let mut msg = hdr(u16::from(i)).to_bytes().to_vec();
        msg.extend(std::iter::repeat_n(i, 20 + usize::from(i)));
        assert!(send(&b, &msg));
    }
    let mut batch = RxBatch::new(3, 2048);
    assert_eq!(
        q.read_batch(&mut batch).unwrap(),
        3,
        "stops when the batch is full"
    );
    assert_eq!(batch.len(), 3);
    for (i, (h, f)) in batch.iter().enumerate() {
        assert_eq!(h.gso_size, i as u16);
        assert_eq!(f.len(), 20 + i);
        assert!(f.iter().all(|&x| x == i as u8));
    }
    assert_eq!(
        q.read_batch(&mut batch).unwrap(),
        2,
        "the rest, then EAGAIN"
    );
    assert_eq!(batch.get(0).unwrap().0.gso_size, 3);
    assert_eq!(batch.get(1).unwrap().1.len(), 24);
    assert!(batch.get(2).is_none());
    assert_eq!(q.read_batch(&mut batch).unwrap(), 0);
    assert!(batch.is_empty());
    assert_eq!(q.stats().rx_frames, 5);
}

/// A frame lent out of the batch (exchanged for a short buffer) is gone from the batch,
/// and the next read grows the slot back so a full-size frame still fits.
#[test]
fn lent_frames_leave_the_batch_and_the_slot_is_regrown() {
    let (a, b) = seqpacket_pair();
    let q = TapQueue::from_fd(a, 0);
    let mut msg = hdr(0).to_bytes().to_vec();
    msg.extend(std::iter::repeat_n(0xabu8, 1500));
    assert!(send(&b, &msg));
    let mut batch = RxBatch::new(1, 2048);
    assert_eq!(q.read_batch(&mut batch).unwrap(), 1);
    let mut taken = Vec::new();
    let len = batch
        .lend_frame(0, |buf, len| {
            std::mem::swap(buf, &mut taken);
            len
        })
        .unwrap();
    assert_eq!(len, 1500);
    assert!(taken[..len].iter().all(|&x| x == 0xab));
    assert!(
        batch.get(0).is_some_and(|(_, f)| f.is_empty()),
        "frame 0 is empty now"
    );
    assert!(batch.lend_frame(1, |_, _| ()).is_none(), "no frame 1");
    // The slot now holds an empty Vec: a 2000-byte frame must still be read whole.
    let mut msg = hdr(0).to_bytes().to_vec();
    msg.extend(std::iter::repeat_n(0xcdu8, 2000));
    assert!(send(&b, &msg));
    assert_eq!(q.read_batch(&mut batch).unwrap(), 1);
    let (_, f) = batch.get(0).unwrap();
    assert_eq!(f.len(), 2000);
    assert!(f.iter().all(|&x| x == 0xcd));
}

/// Fills the socket until the kernel pushes back, then checks both policies.
#[test]
fn write_batch_backpressure_stop_and_drop() {
    let (a, b) = seqpacket_pair();
    let q = TapQueue::from_fd(a, 0);
    let payload = vec![0x5au8; 1500];
    let segs: [&[u8]; 1] = [&payload];
    let frames: Vec<TxFrame<'_>> = (0..100_000)
        .map(|_| TxFrame {
            hdr: VirtioNetHdr::NONE,
            segs: &segs,
        })
        .collect();
    let r = q.write_batch(&frames, Backpressure::Stop).unwrap();
    assert!(r.blocked, "a unix socket buffer cannot hold 150 MB");
    assert!(r.sent > 0 && r.sent < frames.len());
    assert_eq!((r.dropped, r.rejected, r.consumed()), (0, 0, r.sent));
    let sent_first = r.sent;
    // Still full: Drop policy counts everything as dropped, sends nothing.
    let r = q.write_batch(&frames[..10], Backpressure::Drop).unwrap();
    assert_eq!(
        (r.sent, r.dropped, r.blocked, r.consumed()),
        (0, 10, true, 10)
    );
    let s = q.stats();
    assert_eq!((s.tx_frames, s.tx_dropped), (sent_first as u64, 10));
    // Drain a few messages: room opens for at least one more frame.
    let mut drained = 0;
    while drained < 4 {
        assert!(recv(&b).is_some());
        drained += 1;
    }
    let r = q.write_batch(&frames[..10], Backpressure::Drop).unwrap();
    assert!(r.sent >= 1 && r.sent + r.dropped == 10, "{r:?}");
    assert_eq!(q.stats().tx_dropped, 10 + r.dropped as u64);
    // Everything that was sent arrives intact.
    let mut got = 0;
    while let Some(m) = recv(&b) {
        assert_eq!(m.len(), VNET_HDR_LEN + 1500);
        got += 1;
    }
    assert_eq!(got + drained, sent_first + r.sent);
}

#[test]
fn epoll_reports_the_ready_queue_and_honours_the_timeout() {
    let (a0, b0) = seqpacket_pair();
    let (a1, b1) = seqpacket_pair();
    let queues = [TapQueue::from_fd(a0, 0), TapQueue::from_fd(a1, 1)];
    let ep = Epoll::new().unwrap();
    for q in &queues {
        ep.add(q, q.index() as u64, Interest::READABLE).unwrap();
    }
    let mut ev = Events::with_capacity(8);
    let t = Instant::now();
    assert_eq!(
        ep.wait(&mut ev, Some(Duration::from_millis(50))).unwrap(),
        0
    );
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(45) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    // A sub-millisecond timeout still returns (rounded up, not -1/forever).
    assert_eq!(
        ep.wait(&mut ev, Some(Duration::from_micros(10))).unwrap(),
        0
    );

    let mut msg = VirtioNetHdr::NONE.to_bytes().to_vec();
    msg.extend_from_slice(b"frame");
    assert!(send(&b1, &msg));
    assert_eq!(ep.wait(&mut ev, Some(Duration::from_secs(5))).unwrap(), 1);
    let e = ev.iter().next().unwrap();
    assert_eq!(
        (e.token, e.readable, e.writable, e.error),
        (1, true, false, false)
    );
    let mut batch = RxBatch::new(4, 64);
    assert_eq!(queues[1].read_batch(&mut batch).unwrap(), 1);
    assert_eq!(
        ep.wait(&mut ev, Some(Duration::from_millis(1))).unwrap(),
        0,
        "drained"
    );

    // Both ready; a peer hang-up shows as an error event.
    assert!(send(&b0, &msg));
    drop(b1);
    assert_eq!(ep.wait(&mut ev, Some(Duration::from_secs(5))).unwrap(), 2);
    let mut seen: Vec<(u64, bool)> = ev.iter().map(|e| (e.token, e.error)).collect();
    seen.sort();
    assert_eq!(seen, vec![(0, false), (1, true)]);
    // Removing a queue stops its events.
    ep.delete(&queues[1]).unwrap();
    ep.modify(&queues[0], 42, Interest::READABLE).unwrap();
    assert_eq!(ep.wait(&mut ev, Some(Duration::from_secs(5))).unwrap(), 1);
    assert_eq!(ev.iter().next().unwrap().token, 42);
    drop(b0);
}

// ---- io_uring batches (`TxRing`) ------------------------------------------------------

/// A ring for `q`, or `None` (and a note) where this machine has no usable io_uring:
/// the ring is an optimisation and netback falls back to `write_batch` there.
fn ring_for(q: &TapQueue) -> Option<TxRing> {
    match TxRing::new(q) {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("io_uring unavailable here ({e}): ring tests check the fallback only");
            None
        }
    }
}

/// Frames of distinct sizes and contents, each in two segments.
fn numbered_frames(n: usize) -> Vec<(VirtioNetHdr, Vec<u8>, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let h = hdr(i as u16);
            (h, vec![i as u8; 14], vec![!(i as u8); 50 + i % 40])
        })
        .collect()
}

#[test]
fn ring_writes_every_frame_in_order_across_ring_chunks() {
    let (a, b) = seqpacket_pair();
    let q = TapQueue::from_fd(a, 0);
    let Some(mut ring) = ring_for(&q) else {
        return;
    };
    let n = 2 * RING_ENTRIES + 7;
    let data = numbered_frames(n);
    let segs: Vec<[&[u8]; 2]> = data.iter().map(|(_, x, y)| [&x[..], &y[..]]).collect();
    let frames: Vec<TxFrame<'_>> = data
        .iter()
        .zip(&segs)
        .map(|((h, _, _), s)| TxFrame { hdr: *h, segs: s })
        .collect();
    let r = q.write_batch_ring(&mut ring, &frames).unwrap();
    assert_eq!((r.sent, r.dropped, r.rejected, r.blocked), (n, 0, 0, false));
    assert!(!ring.is_broken());
    for (i, (h, x, y)) in data.iter().enumerate() {
        let msg = recv(&b).unwrap_or_else(|| panic!("frame {i} missing"));
        assert_eq!(&msg[..VNET_HDR_LEN], &h.to_bytes(), "frame {i}: header");
        assert_eq!(&msg[VNET_HDR_LEN..VNET_HDR_LEN + 14], &x[..], "frame {i}");
        assert_eq!(&msg[VNET_HDR_LEN + 14..], &y[..], "frame {i}");
    }
    assert!(recv(&b).is_none(), "one message per frame, nothing more");
    let s = q.stats();
    let bytes: usize = data.iter().map(|(_, x, y)| x.len() + y.len()).sum();
    assert_eq!((s.tx_frames, s.tx_bytes), (n as u64, bytes as u64));
}

#[test]
fn ring_drops_and_counts_when_the_fd_pushes_back() {
    let (a, b) = seqpacket_pair();
    let q = TapQueue::from_fd(a, 0);
    let Some(mut ring) = ring_for(&q) else {
        return;
    };
    let payload = vec![0x5au8; 1500];
    let segs: [&[u8]; 1] = [&payload];
    let frames: Vec<TxFrame<'_>> = (0..20_000)
        .map(|_| TxFrame {
            hdr: VirtioNetHdr::NONE,
            segs: &segs,
        })
        .collect();
    let r = q.write_batch_ring(&mut ring, &frames).unwrap();
    assert!(r.blocked, "a unix socket buffer cannot hold 30 MB");
    assert!(r.sent > 0 && r.dropped > 0, "{r:?}");
    assert_eq!(r.consumed(), frames.len(), "every frame sent or dropped");
    assert!(
        !ring.is_broken(),
        "EAGAIN is backpressure, not a broken ring"
    );
    let s = q.stats();
    assert_eq!(
        (s.tx_frames, s.tx_dropped),
        (r.sent as u64, r.dropped as u64)
    );
    let mut got = 0;
    while let Some(m) = recv(&b) {
        assert_eq!(m.len(), VNET_HDR_LEN + 1500);
        got += 1;
    }
    assert_eq!(got, r.sent, "everything counted as sent arrived");
}

#[test]
fn ring_rejects_malformed_frames_and_keeps_going() {
    let (a, b) = seqpacket_pair();
    // A send buffer smaller than one big frame: the kernel answers EMSGSIZE for it.
    let small: libc::c_int = 4096;
    // SAFETY: setsockopt reads an int of the given size from a valid pointer.
    let rc = unsafe {
        libc::setsockopt(
            a.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&small as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    let q = TapQueue::from_fd(a, 0);
    let Some(mut ring) = ring_for(&q) else {
        return;
    };
    let big = vec![1u8; 60_000];
    let ok = vec![2u8; 60];
    let too_many: Vec<&[u8]> = vec![b"x"; MAX_TX_SEGMENTS + 1];
    let (s_big, s_ok): ([&[u8]; 1], [&[u8]; 1]) = ([&big], [&ok]);
    let f = |segs| TxFrame {
        hdr: VirtioNetHdr::NONE,
        segs,
    };
    let frames = [f(&s_ok), f(&s_big), f(&too_many), f(&s_ok)];
    let r = q.write_batch_ring(&mut ring, &frames).unwrap();
    assert_eq!((r.sent, r.rejected, r.dropped), (2, 2, 0), "{r:?}");
    assert!(!ring.is_broken());
    for _ in 0..2 {
        assert_eq!(recv(&b).expect("the good frames").len(), VNET_HDR_LEN + 60);
    }
    assert!(recv(&b).is_none());
    assert_eq!(q.stats().tx_errors, 2);
}

#[test]
fn a_ring_made_for_another_queue_falls_back_to_plain_writes() {
    let (a0, _b0) = seqpacket_pair();
    let (a1, b1) = seqpacket_pair();
    let q0 = TapQueue::from_fd(a0, 0);
    let q1 = TapQueue::from_fd(a1, 1);
    let Some(mut ring) = ring_for(&q0) else {
        return;
    };
    let payload = [7u8; 64];
    let segs: [&[u8]; 1] = [&payload];
    let frames = [TxFrame {
        hdr: VirtioNetHdr::NONE,
        segs: &segs,
    }; 3];
    let r = q1.write_batch_ring(&mut ring, &frames).unwrap();
    assert_eq!(r.sent, 3, "written the plain way");
    assert!(
        ring.is_broken(),
        "the caller is told to drop the mismatched ring"
    );
    assert!(ring
        .broken_reason()
        .is_some_and(|w| w.contains("made for fd")));
    for _ in 0..3 {
        assert_eq!(
            recv(&b1).expect("frame on queue 1").len(),
            VNET_HDR_LEN + 64
        );
    }
}
