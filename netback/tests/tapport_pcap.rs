//! The pcap writer against tshark (no root needed): files it writes are read back
//! frame for frame, the checksum check used on the TAP captures does flag a bad
//! checksum (so its silence there means something), and checksum-blank frames are
//! recorded complete by default but flagged when recorded as they crossed.

mod tapport_common;

use netback::offload::{fill_ipv4_header_checksum, fill_l4_checksum, write_pseudo_header_csum};
use netback::pcap::{PcapOptions, PcapWriter};
use netback::{Frame, OffloadMeta};
use tapport_common::*;

/// Ethernet + IPv4 + TCP with `payload` bytes, every checksum correct.
fn tcp_frame(payload: usize, seq: u32) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 20 + payload];
    f[..6].copy_from_slice(&guest_mac(1));
    f[6..12].copy_from_slice(&guest_mac(0));
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
    f[20] = 0x40;
    f[22] = 64;
    f[23] = 6;
    f[26..30].copy_from_slice(&guest_ip(0));
    f[30..34].copy_from_slice(&guest_ip(1));
    f[34..36].copy_from_slice(&40000u16.to_be_bytes());
    f[36..38].copy_from_slice(&5001u16.to_be_bytes());
    f[38..42].copy_from_slice(&seq.to_be_bytes());
    f[46] = 5 << 4;
    f[47] = 0x18;
    f[48..50].copy_from_slice(&65535u16.to_be_bytes());
    for (i, b) in f[54..].iter_mut().enumerate() {
        *b = (i * 7) as u8;
    }
    fill_ipv4_header_checksum(&mut f).unwrap();
    fill_l4_checksum(&mut f).unwrap();
    f
}

fn write(path: &TempPath, opts: PcapOptions, frames: &[(Vec<u8>, OffloadMeta)]) {
    let w = PcapWriter::create_with(&path.0, opts).expect("create");
    w.write_frames(frames.iter().map(|(d, m)| Frame { data: d, meta: *m }));
    w.flush().expect("flush");
}

#[test]
fn tshark_reads_every_frame_and_flags_only_bad_checksums() {
    let good: Vec<(Vec<u8>, OffloadMeta)> = (0..10)
        .map(|i| {
            (
                tcp_frame(100 + i * 10, i as u32 * 1000),
                OffloadMeta::default(),
            )
        })
        .collect();
    let p = TempPath::new("good.pcap");
    write(&p, PcapOptions::default(), &good);
    let r = tshark_check(&p.0);
    assert_eq!(r.frames, 10);
    assert!(r.flagged.is_empty(), "{r:?}");
    assert_eq!(tshark_count(&p.0, "tcp.checksum.status == \"Good\""), 10);

    // Corrupt one TCP checksum and one IPv4 header checksum: both flagged.
    let mut bad = good.clone();
    bad[3].0[50] ^= 0xff;
    bad[6].0[24] ^= 0xff;
    let p = TempPath::new("bad.pcap");
    write(&p, PcapOptions::default(), &bad);
    let r = tshark_check(&p.0);
    assert_eq!(r.frames, 10);
    assert_eq!(r.flagged.len(), 2, "{r:?}");
    assert!(
        r.flagged[0].starts_with("4\t") && r.flagged[1].starts_with("7\t"),
        "{r:?}"
    );
}

#[test]
fn blank_checksums_are_completed_in_the_capture_unless_disabled() {
    // As a guest with checksum offload sends them: pseudo-header sum only.
    let blank_meta = OffloadMeta {
        csum_blank: true,
        data_validated: false,
        gso: None,
    };
    let frames: Vec<(Vec<u8>, OffloadMeta)> = (0..5)
        .map(|i| {
            let mut f = tcp_frame(500 + i, i as u32);
            write_pseudo_header_csum(&mut f).unwrap();
            (f, blank_meta)
        })
        .collect();
    let p = TempPath::new("completed.pcap");
    write(&p, PcapOptions::default(), &frames);
    let r = tshark_check(&p.0);
    assert_eq!((r.frames, r.flagged.len()), (5, 0), "{r:?}");

    let p = TempPath::new("raw.pcap");
    let raw = PcapOptions {
        complete_checksums: false,
        ..PcapOptions::default()
    };
    write(&p, raw, &frames);
    let r = tshark_check(&p.0);
    assert_eq!(
        (r.frames, r.flagged.len()),
        (5, 5),
        "recorded blank, flagged: {r:?}"
    );
}

#[test]
fn a_64k_frame_is_one_record_and_snaplen_is_honoured() {
    let big = tcp_frame(65535 - 40, 1);
    let p = TempPath::new("big.pcap");
    write(
        &p,
        PcapOptions::default(),
        &[(big.clone(), OffloadMeta::default())],
    );
    assert_eq!(
        tshark_count(
            &p.0,
            &format!(
                "frame.len == {} && frame.cap_len == {}",
                big.len(),
                big.len()
            )
        ),
        1
    );
    assert!(tshark_check(&p.0).flagged.is_empty());

    let p = TempPath::new("snap.pcap");
    let opts = PcapOptions {
        snaplen: 128,
        ..PcapOptions::default()
    };
    write(&p, opts, &[(big.clone(), OffloadMeta::default())]);
    assert_eq!(
        tshark_count(
            &p.0,
            &format!("frame.len == {} && frame.cap_len == 128", big.len())
        ),
        1
    );
}
