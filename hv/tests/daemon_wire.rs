//! The socket protocol under hostile input: the decoder never panics and round-trips
//! every request; a live daemon answers every malformed message with an error and
//! keeps serving, leaking nothing.

mod daemon_common;

use std::os::fd::AsFd;
use std::time::Duration;

use daemon_common::*;
use hv::env::{Perm, PermKind};
use hv::wire::socket::SeqPacket;
use hv::wire::{self, CreateDomain, Message, Request};
use proptest::prelude::*;

/// Entry point of the guest processes (unused here, kept for the shared helpers).
#[test]
fn zz_guest_process_entry() {
    guest_process_entry();
}

fn path_strategy() -> impl Strategy<Value = String> {
    "/[a-z0-9/_-]{0,40}"
}

fn request_strategy() -> impl Strategy<Value = Request> {
    let perm = (any::<u16>(), 0u8..4).prop_map(|(domid, k)| Perm {
        domid,
        kind: [
            PermKind::None,
            PermKind::Read,
            PermKind::Write,
            PermKind::Both,
        ][k as usize],
    });
    prop_oneof![
        path_strategy().prop_map(|path| Request::Read { path }),
        (
            path_strategy(),
            proptest::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(path, value)| Request::Write { path, value }),
        path_strategy().prop_map(|path| Request::Directory { path }),
        (path_strategy(), proptest::collection::vec(perm, 1..5))
            .prop_map(|(path, perms)| Request::SetPerms { path, perms }),
        (path_strategy(), "[a-z]{1,8}").prop_map(|(path, token)| Request::Watch { path, token }),
        any::<bool>().prop_map(|commit| Request::TransactionEnd { commit }),
        any::<u16>().prop_map(|domid| Request::GetDomainPath { domid }),
        (
            "[a-z0-9_-]{1,64}",
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            0u32..=16
        )
            .prop_map(|(name, memory_frames, grant_frames, max_ports, vifs)| {
                Request::CreateDomain(CreateDomain {
                    name,
                    memory_frames,
                    grant_frames,
                    max_ports,
                    vifs,
                })
            }),
        (any::<u16>(), any::<u32>()).prop_map(|(remote, remote_port)| {
            Request::EvtchnBindInterdomain {
                remote,
                remote_port,
            }
        }),
        any::<u32>().prop_map(|port| Request::EvtchnClose { port }),
        (any::<u16>(), any::<u32>())
            .prop_map(|(domid, devid)| Request::NetworkDetach { domid, devid }),
        Just(Request::ListDomains),
        Just(Request::TransactionStart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decoder_never_panics_on_arbitrary_packets(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(m) = Message::decode(&bytes) {
            prop_assert_eq!(m.encode(), bytes);
            let _ = Request::decode(m.ty, &m.payload);
        }
    }

    #[test]
    fn request_decoder_never_panics(ty in prop_oneof![0u32..24, wire::HV_OP_BASE..wire::HV_OP_BASE + 0x30, any::<u32>()],
                                    payload in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = Request::decode(ty, &payload);
    }

    #[test]
    fn requests_round_trip(req in request_strategy(), req_id in any::<u32>(), tx in any::<u32>()) {
        let (ty, payload) = req.encode();
        let packet = Message { ty, req_id, tx_id: tx, payload }.encode();
        let m = Message::decode(&packet).expect("decode own packet");
        prop_assert_eq!(m.req_id, req_id);
        prop_assert_eq!(m.tx_id, tx);
        prop_assert_eq!(Request::decode(m.ty, &m.payload), Ok(req));
    }
}

/// The daemon tests count this process's descriptors: run them one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Send raw bytes and return the reply message.
fn exchange(sock: &SeqPacket, bytes: &[u8]) -> Message {
    sock.send(bytes, &[]).expect("send");
    let rx = sock
        .recv(true)
        .expect("recv")
        .expect("daemon answered instead of closing");
    assert!(rx.fds.is_empty(), "an error reply carries no descriptors");
    Message::decode(&rx.data).expect("well-formed reply")
}

fn is_error(m: &Message) -> bool {
    m.ty == wire::XS_ERROR || m.ty == wire::HV_ERROR
}

#[test]
fn malformed_messages_get_error_replies_and_the_daemon_keeps_serving() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let server = start_server("malformed");
    let fds_before = fd_count();
    let sock = SeqPacket::connect(server.socket_path()).expect("connect");
    let mut cases: Vec<Vec<u8>> = vec![
        vec![],
        vec![1, 2, 3],
        // Header says 100 payload bytes, packet holds 3.
        {
            let mut v = Message::new(wire::XS_READ, 5, b"/a\0".to_vec()).encode();
            v[12] = 100;
            v
        },
        Message::new(0xdead_beef, 6, vec![]).encode(),
        Message::new(wire::XS_READ, 7, b"/no-nul".to_vec()).encode(),
        Message::new(wire::XS_SET_PERMS, 8, b"/a\0q1\0".to_vec()).encode(),
        Message::new(wire::HV_CREATE_DOMAIN, 9, vec![1, 0, 0]).encode(),
        Message::new(wire::HV_EVTCHN_CLOSE, 10, vec![0; 9]).encode(),
        Message::new(wire::XS_READ, 11, vec![b'a'; 5000]).encode(),
        // Oversized: more than the daemon's packet limit.
        vec![0u8; wire::PACKET_MAX + 100],
    ];
    // Random junk too.
    let mut seed = 0x1234_5678u64;
    for _ in 0..200 {
        let len = (seed % 64) as usize;
        let mut v = Vec::with_capacity(len);
        for _ in 0..len {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            v.push((seed >> 33) as u8);
        }
        cases.push(v);
    }
    for (i, bytes) in cases.iter().enumerate() {
        let reply = exchange(&sock, bytes);
        assert!(
            is_error(&reply),
            "case {i}: malformed message got {reply:?}"
        );
    }
    // Before creating a domain or attaching, requests are refused, not served.
    let (ty, p) = Request::Read { path: "/".into() }.encode();
    assert!(is_error(&exchange(&sock, &Message::new(ty, 1, p).encode())));
    let (ty, p) = Request::ListDomains.encode();
    assert!(is_error(&exchange(&sock, &Message::new(ty, 2, p).encode())));
    // Descriptors sent to the daemon are dropped, with an error reply.
    let e = event_channel::EventFd::new().expect("eventfd");
    let (ty, p) = Request::AttachToolstack.encode();
    sock.send(&Message::new(ty, 3, p.clone()).encode(), &[e.as_fd()])
        .expect("send with fd");
    let rx = sock.recv(true).expect("recv").expect("reply");
    assert!(is_error(&Message::decode(&rx.data).expect("reply")));
    drop(e);
    // The same connection still works for a well-formed request.
    let reply = exchange(&sock, &Message::new(ty, 4, p).encode());
    assert_eq!(reply.ty, wire::HV_ATTACH_TOOLSTACK, "attach after junk");
    let (ty, p) = Request::Read {
        path: "/local".into(),
    }
    .encode();
    let reply = exchange(&sock, &Message::new(ty, 5, p).encode());
    assert!(reply.ty == wire::XS_READ || reply.ty == wire::XS_ERROR);
    assert_eq!(reply.req_id, 5);
    assert!(server.stats().malformed >= cases.len() as u64);
    drop(sock);
    assert!(
        server
            .wait_stats(Duration::from_secs(5), |s| s.connections == 0)
            .connections
            == 0
    );
    assert!(
        // `<=`: the proptests of this binary run in parallel and may briefly hold a
        // file of their own when `fds_before` is taken; a leak only ever adds.
        eventually(Duration::from_secs(5), || fd_count() <= fds_before),
        "daemon leaked descriptors"
    );
}

#[test]
fn guest_connection_refuses_toolstack_commands_and_foreign_ports() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let server = start_server("guest-refusals");
    let env = hv::client::connect_with(
        server.socket_path(),
        &hv::client::GuestConfig {
            name: "g".into(),
            memory_frames: 16,
            grant_frames: 1,
            max_ports: 7,
            vifs: 0,
        },
    )
    .expect("guest");
    let _ = env;
    // A raw second connection that is a guest too.
    let sock = SeqPacket::connect(server.socket_path()).expect("connect");
    let (ty, p) = Request::CreateDomain(CreateDomain {
        name: "raw".into(),
        memory_frames: 16,
        grant_frames: 1,
        max_ports: 7,
        vifs: 0,
    })
    .encode();
    sock.send(&Message::new(ty, 1, p).encode(), &[])
        .expect("send");
    let rx = sock.recv(true).expect("recv").expect("reply");
    assert_eq!(
        rx.fds.len(),
        3,
        "own RAM, grant table and event-channel page"
    );
    for (i, req) in [
        Request::ListDomains,
        Request::DestroyDomain { domid: 0 },
        Request::AttachToolstack,
        // A port it does not hold.
        Request::EvtchnClose { port: 3 },
        // Beyond what it asked for.
        Request::CreateDomain(CreateDomain {
            name: "again".into(),
            memory_frames: 1,
            grant_frames: 1,
            max_ports: 1,
            vifs: 0,
        }),
    ]
    .into_iter()
    .enumerate()
    {
        let (ty, p) = req.encode();
        let reply = exchange(&sock, &Message::new(ty, 10 + i as u32, p).encode());
        assert_eq!(reply.ty, wire::HV_ERROR, "{req:?} must be refused");
        let (errno, _) = wire::parse_hv_error(&reply.payload);
        assert!(
            ["EPERM", "EISCONN", "EINVAL"].contains(&errno.as_str()),
            "{req:?}: {errno}"
        );
    }
    // Limits: a domain larger than the daemon allows is refused.
    let big = SeqPacket::connect(server.socket_path()).expect("connect");
    let (ty, p) = Request::CreateDomain(CreateDomain {
        name: "big".into(),
        memory_frames: u32::MAX,
        grant_frames: 1,
        max_ports: 7,
        vifs: 0,
    })
    .encode();
    let reply = exchange(&big, &Message::new(ty, 1, p).encode());
    assert_eq!(reply.ty, wire::HV_ERROR);
}
