//! Packet capture in the classic libpcap file format, readable by tcpdump, tshark and
//! Wireshark.
//!
//! The file is the original (not pcapng) format: a 24-byte global header
//! (`struct pcap_file_header`: magic `0xa1b2c3d4`, version 2.4, snaplen, link type) then,
//! per packet, a 16-byte record header (`struct pcap_sf_pkthdr`: seconds, microseconds,
//! captured length, original length) and the captured bytes. Everything is written in
//! host byte order, which readers detect from the magic.
//!
//! Offloads: a frame whose TCP/UDP checksum is still blank (`NETTXF_csum_blank`,
//! `VIRTIO_NET_HDR_F_NEEDS_CSUM`) holds only the pseudo-header sum in its checksum
//! field, so a capture of it would show a "bad" checksum although the packet leaves
//! the host correct. By default [`PcapWriter::write_frame`] therefore records a copy
//! with the checksum completed, i.e. what the peer will finally see; GSO super-frames
//! are recorded whole (like `tcpdump` on a host with TSO), not as their segments.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::frame::Frame;
use crate::offload::fill_l4_checksum;

/// `TCPDUMP_MAGIC`: microsecond-resolution classic pcap, in the writer's byte order.
pub const TCPDUMP_MAGIC: u32 = 0xa1b2_c3d4;
/// `PCAP_VERSION_MAJOR`.
pub const PCAP_VERSION_MAJOR: u16 = 2;
/// `PCAP_VERSION_MINOR`.
pub const PCAP_VERSION_MINOR: u16 = 4;
/// `LINKTYPE_ETHERNET` (`DLT_EN10MB`): every record is an Ethernet II frame.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// The default snapshot length, tcpdump's `MAXIMUM_SNAPLEN` (262144): more than any
/// frame netback handles, so nothing is cut.
pub const MAXIMUM_SNAPLEN: u32 = 262_144;

/// Size of `struct pcap_file_header`.
const FILE_HEADER_LEN: usize = 24;
/// Size of a record header (`struct pcap_sf_pkthdr`).
const RECORD_HEADER_LEN: usize = 16;

/// Counters of a [`PcapWriter`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PcapStats {
    /// Records written.
    pub packets: u64,
    /// Bytes of packet data written (captured lengths).
    pub bytes: u64,
    /// Packets not written because the byte limit was reached.
    pub over_limit: u64,
    /// Records lost to write errors.
    pub errors: u64,
}

struct Inner {
    out: BufWriter<Box<dyn Write + Send>>,
    /// Room to complete a blank checksum on a copy, grown once to the largest frame.
    scratch: Vec<u8>,
}

/// A pcap file being written. Cheap to share (`Arc<PcapWriter>`): one lock per
/// record or batch.
pub struct PcapWriter {
    inner: Mutex<Inner>,
    snaplen: u32,
    /// Stop recording after this many bytes of packet data (`None`: no limit).
    limit: Option<u64>,
    complete_checksums: bool,
    packets: AtomicU64,
    bytes: AtomicU64,
    over_limit: AtomicU64,
    errors: AtomicU64,
}

impl std::fmt::Debug for PcapWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapWriter")
            .field("snaplen", &self.snaplen)
            .field("limit", &self.limit)
            .field("stats", &self.stats())
            .finish()
    }
}

/// How a [`PcapWriter`] records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcapOptions {
    /// Bytes kept of each packet (the file header's `snaplen`), 1..=262144.
    pub snaplen: u32,
    /// Stop recording after this many bytes of packet data (like `tcpdump -C` without
    /// rotation); later packets are only counted in [`PcapStats::over_limit`].
    pub limit_bytes: Option<u64>,
    /// Record checksum-blank frames with their checksum completed (see the module
    /// docs). Off: record the bytes exactly as they crossed netback.
    pub complete_checksums: bool,
}

impl Default for PcapOptions {
    fn default() -> Self {
        Self {
            snaplen: MAXIMUM_SNAPLEN,
            limit_bytes: None,
            complete_checksums: true,
        }
    }
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PcapWriter {
    /// Creates (truncates) `path` and writes the file header, default options.
    pub fn create(path: impl AsRef<Path>) -> io::Result<Self> {
        Self::create_with(path, PcapOptions::default())
    }

    /// Creates (truncates) `path` and writes the file header.
    pub fn create_with(path: impl AsRef<Path>, opts: PcapOptions) -> io::Result<Self> {
        Self::new(File::create(path)?, opts)
    }

    /// Writes the file header to `out` and returns a writer recording into it.
    pub fn new(out: impl Write + Send + 'static, opts: PcapOptions) -> io::Result<Self> {
        if opts.snaplen == 0 || opts.snaplen > MAXIMUM_SNAPLEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "pcap snaplen must be 1..=262144",
            ));
        }
        let mut out: BufWriter<Box<dyn Write + Send>> =
            BufWriter::with_capacity(1 << 20, Box::new(out));
        out.write_all(&file_header(opts.snaplen))?;
        Ok(Self {
            inner: Mutex::new(Inner {
                out,
                scratch: Vec::new(),
            }),
            snaplen: opts.snaplen,
            limit: opts.limit_bytes,
            complete_checksums: opts.complete_checksums,
            packets: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            over_limit: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        })
    }

    /// The snapshot length.
    pub fn snaplen(&self) -> u32 {
        self.snaplen
    }

    /// A copy of the counters.
    pub fn stats(&self) -> PcapStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PcapStats {
            packets: g(&self.packets),
            bytes: g(&self.bytes),
            over_limit: g(&self.over_limit),
            errors: g(&self.errors),
        }
    }

    /// Records raw bytes as one packet, stamped `ts`.
    pub fn write_packet(&self, ts: SystemTime, data: &[u8]) -> io::Result<()> {
        let mut inner = lock(&self.inner);
        self.record(&mut inner.out, ts, data)
    }

    /// Records a frame netback moved, completing a blank checksum on a copy first
    /// (unless disabled in [`PcapOptions`]). Errors are counted, not returned: a
    /// capture must never disturb the data path.
    pub fn write_frame(&self, frame: Frame<'_>) {
        self.write_frames(std::iter::once(frame));
    }

    /// Records several frames under one lock, all stamped with the current time.
    pub fn write_frames<'a>(&self, frames: impl IntoIterator<Item = Frame<'a>>) {
        let ts = SystemTime::now();
        let mut guard = lock(&self.inner);
        let inner = &mut *guard;
        for f in frames {
            let r = if self.complete_checksums && f.meta.csum_blank {
                inner.scratch.clear();
                inner.scratch.extend_from_slice(f.data);
                // A frame that does not parse as TCP/UDP is recorded as it is.
                let _ = fill_l4_checksum(&mut inner.scratch);
                self.record(&mut inner.out, ts, &inner.scratch)
            } else {
                self.record(&mut inner.out, ts, f.data)
            };
            if r.is_err() {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn record(
        &self,
        out: &mut BufWriter<Box<dyn Write + Send>>,
        ts: SystemTime,
        data: &[u8],
    ) -> io::Result<()> {
        let caplen = data.len().min(self.snaplen as usize);
        if let Some(limit) = self.limit {
            if self.bytes.load(Ordering::Relaxed) + caplen as u64 > limit {
                self.over_limit.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        }
        out.write_all(&record_header(ts, caplen, data.len()))?;
        out.write_all(&data[..caplen])?;
        self.packets.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(caplen as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Pushes buffered records to the file.
    pub fn flush(&self) -> io::Result<()> {
        lock(&self.inner).out.flush()
    }
}

impl Drop for PcapWriter {
    fn drop(&mut self) {
        if let Err(e) = lock(&self.inner).out.flush() {
            log::warn!("pcap: flushing the capture: {e}");
        }
    }
}

/// `struct pcap_file_header` in host byte order.
fn file_header(snaplen: u32) -> [u8; FILE_HEADER_LEN] {
    let mut h = [0u8; FILE_HEADER_LEN];
    h[0..4].copy_from_slice(&TCPDUMP_MAGIC.to_ne_bytes());
    h[4..6].copy_from_slice(&PCAP_VERSION_MAJOR.to_ne_bytes());
    h[6..8].copy_from_slice(&PCAP_VERSION_MINOR.to_ne_bytes());
    // thiszone (GMT offset) and sigfigs stay 0, as every modern writer does.
    h[16..20].copy_from_slice(&snaplen.to_ne_bytes());
    h[20..24].copy_from_slice(&LINKTYPE_ETHERNET.to_ne_bytes());
    h
}

/// `struct pcap_sf_pkthdr` in host byte order.
fn record_header(ts: SystemTime, caplen: usize, len: usize) -> [u8; RECORD_HEADER_LEN] {
    let d = ts.duration_since(UNIX_EPOCH).unwrap_or_default();
    // The classic format has 32-bit seconds (good until 2106 read as unsigned).
    let secs = d.as_secs() as u32;
    let mut h = [0u8; RECORD_HEADER_LEN];
    h[0..4].copy_from_slice(&secs.to_ne_bytes());
    h[4..8].copy_from_slice(&d.subsec_micros().to_ne_bytes());
    h[8..12].copy_from_slice(&(caplen as u32).to_ne_bytes());
    h[12..16].copy_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::OffloadMeta;
    use crate::offload::{verify_l4_checksum, write_pseudo_header_csum};
    use std::sync::Arc;
    use std::time::Duration;

    /// A `Write` that keeps everything in a shared buffer.
    #[derive(Clone, Default)]
    struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
    }

    /// An Ethernet + IPv4 + UDP frame with a complete checksum.
    fn udp_frame() -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 8 + 11];
        f[12] = 0x08;
        f[14] = 0x45;
        f[16..18].copy_from_slice(&(20u16 + 8 + 11).to_be_bytes());
        f[22] = 64;
        f[23] = 17;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        f[34..36].copy_from_slice(&1234u16.to_be_bytes());
        f[36..38].copy_from_slice(&5678u16.to_be_bytes());
        f[38..40].copy_from_slice(&(8u16 + 11).to_be_bytes());
        f[42..].copy_from_slice(b"hello pcap!");
        fill_l4_checksum(&mut f).unwrap();
        f
    }

    #[test]
    fn header_and_records_follow_the_classic_format() {
        let buf = Shared::default();
        let w = PcapWriter::new(buf.clone(), PcapOptions::default()).unwrap();
        let ts = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        w.write_packet(ts, &[1, 2, 3]).unwrap();
        w.flush().unwrap();
        let b = buf.0.lock().unwrap().clone();
        assert_eq!(b.len(), 24 + 16 + 3);
        assert_eq!(u32_at(&b, 0), 0xa1b2_c3d4);
        assert_eq!(u16::from_ne_bytes([b[4], b[5]]), 2);
        assert_eq!(u16::from_ne_bytes([b[6], b[7]]), 4);
        assert_eq!(u32_at(&b, 16), 262_144);
        assert_eq!(u32_at(&b, 20), 1, "LINKTYPE_ETHERNET");
        assert_eq!(u32_at(&b, 24), 1_700_000_000);
        assert_eq!(u32_at(&b, 28), 123_456, "microseconds");
        assert_eq!((u32_at(&b, 32), u32_at(&b, 36)), (3, 3));
        assert_eq!(&b[40..], &[1, 2, 3]);
        assert_eq!(w.stats().packets, 1);
    }

    #[test]
    fn snaplen_cuts_and_limit_stops() {
        let buf = Shared::default();
        let opts = PcapOptions {
            snaplen: 4,
            limit_bytes: Some(10),
            complete_checksums: true,
        };
        let w = PcapWriter::new(buf.clone(), opts).unwrap();
        for _ in 0..4 {
            w.write_packet(SystemTime::now(), &[7u8; 100]).unwrap();
        }
        w.flush().unwrap();
        let b = buf.0.lock().unwrap().clone();
        // Two records of 4 bytes fit the 10-byte limit, the third would not.
        assert_eq!(b.len(), 24 + 2 * (16 + 4));
        assert_eq!((u32_at(&b, 32), u32_at(&b, 36)), (4, 100));
        let s = w.stats();
        assert_eq!((s.packets, s.bytes, s.over_limit), (2, 8, 2));
        assert!(PcapWriter::new(Shared::default(), PcapOptions { snaplen: 0, ..opts }).is_err());
    }

    #[test]
    fn blank_checksums_are_recorded_complete_unless_asked_not_to() {
        let good = udp_frame();
        let mut blank = good.clone();
        write_pseudo_header_csum(&mut blank).unwrap();
        assert!(!verify_l4_checksum(&blank).unwrap());
        let meta = OffloadMeta {
            csum_blank: true,
            ..Default::default()
        };
        for complete in [true, false] {
            let buf = Shared::default();
            let opts = PcapOptions {
                complete_checksums: complete,
                ..Default::default()
            };
            let w = PcapWriter::new(buf.clone(), opts).unwrap();
            w.write_frame(Frame { data: &blank, meta });
            w.flush().unwrap();
            let b = buf.0.lock().unwrap().clone();
            let rec = &b[40..];
            assert_eq!(rec, if complete { &good[..] } else { &blank[..] });
        }
    }
}
