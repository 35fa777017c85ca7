//! `hv::xen::PortDemux`: the demultiplexer behind every channel of one
//! `/dev/xen/evtchn` descriptor, driven here through a socket that speaks the device's
//! protocol (the test side writes pending ports as u32s and reads back the unmasks).

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use hv::xen::PortDemux;

const LONG: Duration = Duration::from_secs(10);

fn pair() -> (Arc<PortDemux>, UnixStream) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let demux = PortDemux::new(OwnedFd::from(ours)).unwrap();
    theirs
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    (Arc::new(demux), theirs)
}

fn raise(dev: &mut UnixStream, ports: &[u32]) {
    let bytes: Vec<u8> = ports.iter().flat_map(|p| p.to_ne_bytes()).collect();
    dev.write_all(&bytes).unwrap();
}

fn unmasked(dev: &mut UnixStream, n: usize) -> Vec<u32> {
    let mut buf = vec![0u8; n * 4];
    dev.read_exact(&mut buf).unwrap();
    buf.chunks(4)
        .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn delivers_to_the_right_port_and_unmasks_every_port_read() {
    let (d, mut dev) = pair();
    d.register(5);
    d.register(7);
    assert!(!d.try_consume(5), "nothing pending yet");
    raise(&mut dev, &[7, 9]);
    assert!(d.wait(7, Some(LONG)));
    // Both ports are written back, including 9 which nobody registered.
    let mut back = unmasked(&mut dev, 2);
    back.sort();
    assert_eq!(back, vec![7, 9]);
    assert!(!d.try_consume(5), "7's event is not 5's");
    assert!(!d.try_consume(9), "unregistered ports are never pending");
    assert!(!d.try_consume(7), "consumed once");
    // Two raises before a consume coalesce into one pending event (as Xen's pending bit).
    raise(&mut dev, &[5]);
    raise(&mut dev, &[5]);
    thread::sleep(Duration::from_millis(50));
    assert!(d.try_consume(5));
    assert!(!d.try_consume(5));
    assert_eq!(unmasked(&mut dev, 2), vec![5, 5]);
}

#[test]
fn wait_times_out_without_an_event() {
    let (d, _dev) = pair();
    d.register(3);
    let t0 = Instant::now();
    assert!(!d.wait(3, Some(Duration::from_millis(150))));
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(150), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[test]
fn unregister_drops_a_pending_event() {
    let (d, mut dev) = pair();
    d.register(4);
    d.register(6);
    raise(&mut dev, &[4]);
    thread::sleep(Duration::from_millis(50));
    // Consuming 6 reads the descriptor: 4 is now pending inside the demux.
    assert!(!d.try_consume(6));
    d.unregister(4);
    d.register(4);
    assert!(!d.try_consume(4));
}

#[test]
fn a_consumer_that_drains_for_others_wakes_the_polling_reader() {
    let (d, mut dev) = pair();
    d.register(5);
    d.register(7);
    let d2 = d.clone();
    let waiter = thread::spawn(move || {
        let t0 = Instant::now();
        (d2.wait(5, Some(LONG)), t0.elapsed())
    });
    // Let the waiter become the reader blocked in poll().
    thread::sleep(Duration::from_millis(100));
    raise(&mut dev, &[7, 5]);
    // This drain reads 5 as well; the reader must be kicked out of poll() to see it.
    let t0 = Instant::now();
    while !d.try_consume(7) {
        assert!(t0.elapsed() < LONG, "7 never arrived");
    }
    let (got, took) = waiter.join().unwrap();
    assert!(got);
    assert!(
        took < Duration::from_secs(3),
        "reader slept through its event: {took:?}"
    );
}

#[test]
fn many_waiters_ping_pong_without_lost_wakeups() {
    let (d, mut dev) = pair();
    const PORTS: [u32; 3] = [11, 12, 13];
    const ROUNDS: usize = 200;
    for p in PORTS {
        d.register(p);
    }
    let (ack_tx, ack_rx) = mpsc::channel::<u32>();
    let waiters: Vec<_> = PORTS
        .iter()
        .map(|&p| {
            let d = d.clone();
            let ack = ack_tx.clone();
            thread::spawn(move || {
                for _ in 0..ROUNDS {
                    assert!(d.wait(p, Some(LONG)), "port {p} lost a wakeup");
                    ack.send(p).unwrap();
                }
            })
        })
        .collect();
    drop(ack_tx);
    // Collect the unmasks while the test runs: the real device never refuses an unmask
    // write, but this socket stand-in would once its send buffer filled up with
    // hundreds of tiny unread messages.
    let mut unmask_side = dev.try_clone().unwrap();
    unmask_side.set_read_timeout(Some(LONG)).unwrap();
    let unmasks = thread::spawn(move || unmasked(&mut unmask_side, PORTS.len() * ROUNDS).len());
    // Raise every port, then raise each again only after its waiter consumed it, so no
    // two events of a port coalesce and each must be delivered.
    raise(&mut dev, &PORTS);
    let mut raised = [1usize; PORTS.len()];
    for _ in 0..PORTS.len() * ROUNDS {
        let p = ack_rx.recv_timeout(LONG).expect("a waiter stalled");
        let i = PORTS.iter().position(|&q| q == p).unwrap();
        if raised[i] < ROUNDS {
            raise(&mut dev, &[p]);
            raised[i] += 1;
        }
    }
    for w in waiters {
        w.join().unwrap();
    }
    assert_eq!(unmasks.join().unwrap(), PORTS.len() * ROUNDS);
}
