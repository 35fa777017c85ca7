//! `hv::xen::xs_wire`: the xenstore wire codec, byte for byte, with no Xen needed.

use hv::env::{Perm, PermKind, StoreError, WatchEvent};
use hv::xen::xs_wire::*;
use proptest::prelude::*;

fn perm(domid: u16, kind: PermKind) -> Perm {
    Perm { domid, kind }
}

/// Header fields in host order (x86: little endian), then the payload.
fn raw(ty: u32, req_id: u32, tx_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for w in [ty, req_id, tx_id, payload.len() as u32] {
        v.extend_from_slice(&w.to_ne_bytes());
    }
    v.extend_from_slice(payload);
    v
}

#[test]
fn requests_encode_exactly_as_xs_wire_specifies() {
    let cases: Vec<(XsRequest, u32, &[u8])> = vec![
        (
            XsRequest::Read {
                path: "/a/b".into(),
            },
            2,
            b"/a/b\0",
        ),
        (
            XsRequest::Write {
                path: "/a".into(),
                value: b"x\0y".to_vec(),
            },
            11,
            b"/a\0x\0y",
        ),
        (XsRequest::Mkdir { path: "/m".into() }, 12, b"/m\0"),
        (XsRequest::Rm { path: "/r".into() }, 13, b"/r\0"),
        (XsRequest::Directory { path: "/".into() }, 1, b"/\0"),
        (XsRequest::GetPerms { path: "/p".into() }, 3, b"/p\0"),
        (
            XsRequest::SetPerms {
                path: "/p".into(),
                perms: vec![
                    perm(1, PermKind::None),
                    perm(0, PermKind::Read),
                    perm(65535, PermKind::Both),
                ],
            },
            14,
            b"/p\0n1\0r0\0b65535\0",
        ),
        (
            XsRequest::Watch {
                path: "/w".into(),
                token: "tok".into(),
            },
            4,
            b"/w\0tok\0",
        ),
        (
            XsRequest::Unwatch {
                path: "/w".into(),
                token: "tok".into(),
            },
            5,
            b"/w\0tok\0",
        ),
        (XsRequest::TransactionStart, 6, b"\0"),
        (XsRequest::TransactionEnd { commit: true }, 7, b"T\0"),
        (XsRequest::TransactionEnd { commit: false }, 7, b"F\0"),
    ];
    for (req, ty, payload) in cases {
        assert_eq!(req.xs_type() as u32, ty, "{req:?}");
        let bytes = req.to_msg(0x1234_5678, 9).unwrap().encode().unwrap();
        assert_eq!(bytes, raw(ty, 0x1234_5678, 9, payload), "{req:?}");
        // And the daemon side parses it back to the same request.
        let mut d = Decoder::new();
        d.push(&bytes);
        let msg = d.next_msg().unwrap().unwrap();
        assert_eq!((msg.req_id, msg.tx_id), (0x1234_5678, 9));
        assert_eq!(XsRequest::from_msg(&msg).unwrap(), req);
        assert_eq!(d.pending(), 0);
    }
}

#[test]
fn header_is_sixteen_bytes_in_field_order() {
    let h = XsdSockmsg {
        ty: 1,
        req_id: 2,
        tx_id: 3,
        len: 4,
    };
    let b = h.to_bytes();
    assert_eq!(b.len(), XSD_SOCKMSG_SIZE);
    assert_eq!(&b[0..4], &1u32.to_ne_bytes());
    assert_eq!(&b[12..16], &4u32.to_ne_bytes());
    assert_eq!(XsdSockmsg::from_bytes(&b), h);
}

#[test]
fn type_values_round_trip_and_unknown_is_none() {
    for v in 0..=22u32 {
        match XsType::from_u32(v) {
            Some(t) => assert_eq!(t as u32, v),
            // 20 was XS_RESTRICT, removed from the protocol.
            None => assert_eq!(v, 20),
        }
    }
    assert_eq!(XsType::from_u32(0xffff), None, "XS_INVALID");
    assert_eq!(XsType::WatchEvent as u32, 15);
    assert_eq!(XsType::Error as u32, 16);
}

#[test]
fn arguments_with_nul_or_oversize_payloads_are_refused() {
    let nul = XsRequest::Read {
        path: "/a\0b".into(),
    };
    assert_eq!(nul.payload(), Err(WireError::EmbeddedNul));
    assert_eq!(
        StoreError::from(WireError::EmbeddedNul),
        StoreError::Invalid
    );
    let big = XsRequest::Write {
        path: "/a".into(),
        value: vec![b'v'; XENSTORE_PAYLOAD_MAX],
    };
    assert_eq!(
        big.payload(),
        Err(WireError::PayloadTooLong(XENSTORE_PAYLOAD_MAX + 3))
    );
    // Exactly at the limit is fine.
    let max = XsRequest::Write {
        path: "/a".into(),
        value: vec![b'v'; XENSTORE_PAYLOAD_MAX - 3],
    };
    assert_eq!(max.payload().unwrap().len(), XENSTORE_PAYLOAD_MAX);
}

#[test]
fn decoder_waits_for_whole_messages_and_splits_joined_ones() {
    let a = raw(2, 1, 0, b"value");
    let b = raw(15, 0, 0, b"/p\0tok\0");
    let mut stream = a.clone();
    stream.extend_from_slice(&b);
    let mut d = Decoder::new();
    d.push(&stream[..10]);
    assert_eq!(d.next_msg().unwrap(), None, "half a header");
    d.push(&stream[10..20]);
    assert_eq!(d.next_msg().unwrap(), None, "header but not the payload");
    d.push(&stream[20..]);
    let m1 = d.next_msg().unwrap().unwrap();
    assert_eq!(
        (m1.ty, m1.req_id, m1.payload.as_slice()),
        (2, 1, &b"value"[..])
    );
    let m2 = d.next_msg().unwrap().unwrap();
    assert_eq!(
        parse_watch_event(&m2.payload).unwrap(),
        WatchEvent {
            path: "/p".into(),
            token: "tok".into()
        }
    );
    assert_eq!(d.next_msg().unwrap(), None);
}

#[test]
fn decoder_rejects_a_header_announcing_too_much() {
    let mut d = Decoder::new();
    let mut h = raw(2, 1, 0, b"");
    h[12..16].copy_from_slice(&(XENSTORE_PAYLOAD_MAX as u32 + 1).to_ne_bytes());
    d.push(&h);
    assert_eq!(
        d.next_msg(),
        Err(WireError::PayloadTooLong(XENSTORE_PAYLOAD_MAX + 1))
    );
}

#[test]
fn error_strings_map_to_store_errors_and_back() {
    let cases = [
        ("ENOENT", StoreError::NotFound),
        ("EACCES", StoreError::PermissionDenied),
        ("EAGAIN", StoreError::Again),
        ("EINVAL", StoreError::Invalid),
        ("EEXIST", StoreError::Exists),
        ("E2BIG", StoreError::TooBig),
    ];
    for (name, err) in cases {
        let mut payload = name.as_bytes().to_vec();
        payload.push(0);
        assert_eq!(error_from_payload(&payload), err, "{name}");
        assert_eq!(error_name(&err), name);
    }
    assert_eq!(error_from_payload(b"EPERM\0"), StoreError::PermissionDenied);
    assert_eq!(error_from_payload(b"ENOSPC\0"), StoreError::TooBig);
    match error_from_payload(b"EBUSY\0") {
        StoreError::Io(s) => assert!(s.contains("EBUSY"), "{s}"),
        other => panic!("EBUSY mapped to {other:?}"),
    }
    // Every name in xsd_errors is understood (none falls through as garbage).
    assert_eq!(XSD_ERRORS.len(), 16);
    for (_, name) in XSD_ERRORS {
        let e = error_from_payload(format!("{name}\0").as_bytes());
        if let StoreError::Io(s) = e {
            assert!(s.contains(name));
        }
    }
}

#[test]
fn reply_parsers() {
    assert_eq!(
        parse_directory(b"zeta\0alpha\0mid\0"),
        vec!["alpha", "mid", "zeta"]
    );
    assert_eq!(parse_directory(b""), Vec::<String>::new());
    assert_eq!(
        parse_perms(b"n0\0r5\0w7\0b9\0").unwrap(),
        vec![
            perm(0, PermKind::None),
            perm(5, PermKind::Read),
            perm(7, PermKind::Write),
            perm(9, PermKind::Both)
        ]
    );
    assert!(parse_perms(b"x0\0").is_err(), "unknown letter");
    assert!(parse_perms(b"r70000\0").is_err(), "domid out of range");
    assert!(parse_perms(b"").is_err(), "no owner");
    assert_eq!(parse_tx_id(b"42\0"), Ok(42));
    assert!(parse_tx_id(b"4x\0").is_err());
    assert!(parse_watch_event(b"/only-path\0").is_err());
    let ev = WatchEvent {
        path: "/a".into(),
        token: "t".into(),
    };
    assert_eq!(
        parse_watch_event(&watch_event_payload(&ev).unwrap()).unwrap(),
        ev
    );
}

#[test]
fn malformed_requests_are_errors_not_panics() {
    let bad = |ty: u32, payload: &[u8]| XsMsg {
        ty,
        req_id: 1,
        tx_id: 0,
        payload: payload.to_vec(),
    };
    assert!(
        XsRequest::from_msg(&bad(11, b"no-nul")).is_err(),
        "write without path end"
    );
    assert!(
        XsRequest::from_msg(&bad(4, b"/only\0")).is_err(),
        "watch without token"
    );
    assert!(
        XsRequest::from_msg(&bad(7, b"X\0")).is_err(),
        "transaction end not T/F"
    );
    assert!(
        XsRequest::from_msg(&bad(14, b"/p\0q1\0")).is_err(),
        "bad perm"
    );
    assert_eq!(
        XsRequest::from_msg(&bad(99, b"")),
        Err(WireError::UnknownType(99))
    );
}

proptest! {
    /// However the stream is cut into reads, the decoder yields the same messages.
    #[test]
    fn decoder_is_independent_of_read_boundaries(
        msgs in prop::collection::vec(
            (0u32..23, any::<u32>(), any::<u32>(), prop::collection::vec(any::<u8>(), 0..300)),
            1..8),
        cuts in prop::collection::vec(1usize..64, 1..40),
    ) {
        let mut stream = Vec::new();
        for (ty, req, tx, p) in &msgs {
            stream.extend_from_slice(&raw(*ty, *req, *tx, p));
        }
        let mut d = Decoder::new();
        let mut out = Vec::new();
        let mut pos = 0;
        let mut cut = cuts.iter().cycle();
        while pos < stream.len() {
            let n = (*cut.next().unwrap()).min(stream.len() - pos);
            d.push(&stream[pos..pos + n]);
            pos += n;
            while let Some(m) = d.next_msg().unwrap() {
                out.push((m.ty, m.req_id, m.tx_id, m.payload));
            }
        }
        prop_assert_eq!(out, msgs);
        prop_assert_eq!(d.pending(), 0);
    }

    /// Hostile payloads never panic the request parser or the reply parsers.
    #[test]
    fn parsers_never_panic(ty in 0u32..30, payload in prop::collection::vec(any::<u8>(), 0..200)) {
        let msg = XsMsg { ty, req_id: 1, tx_id: 0, payload: payload.clone() };
        let _ = XsRequest::from_msg(&msg);
        let _ = parse_perms(&payload);
        let _ = parse_tx_id(&payload);
        let _ = parse_watch_event(&payload);
        let _ = parse_directory(&payload);
        let _ = error_from_payload(&payload);
    }

    /// Any request that encodes decodes back to itself.
    #[test]
    fn write_round_trips(path in "/[a-z0-9/_-]{0,40}", value in prop::collection::vec(any::<u8>(), 0..500)) {
        let req = XsRequest::Write { path, value };
        let msg = req.to_msg(7, 3).unwrap();
        let mut d = Decoder::new();
        d.push(&msg.encode().unwrap());
        let back = d.next_msg().unwrap().unwrap();
        prop_assert_eq!(XsRequest::from_msg(&back).unwrap(), req);
    }
}
