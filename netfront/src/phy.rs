//! `smoltcp::phy::Device` for a [`Queue`].
//!
//! Zero copy where smoltcp's token API allows: a frame that fits one page is built by
//! smoltcp straight in a granted TX page, and a received single-page frame is handed
//! to smoltcp in its granted RX page. Multi-page frames go through a staging buffer
//! allocated once per queue.
//!
//! Capabilities are what the queue really does:
//! - Ethernet, MTU from [`crate::NetfrontConfig::mtu`] (1514 by default, larger only
//!   with `feature-sg`).
//! - TCP/UDP checksums of received frames are the driver's (smoltcp is told not to
//!   verify them): frames the backend flags `NETRXF_csum_blank` or
//!   `NETRXF_data_validated` are taken as they are, as Linux netfront does; every other
//!   TCP/UDP frame is verified once by the driver's vectorised sum and dropped if
//!   wrong (`rx_csum_bad`). Before, a blank checksum was filled in and then verified
//!   again by smoltcp: two passes over every received byte, a third of the guest's
//!   time in a kernel → guest TCP stream.
//! - With checksum offload, smoltcp leaves TCP/UDP checksums of outgoing frames to
//!   the device too (`Checksum::None`): the driver writes the pseudo-header sum and
//!   sets `NETTXF_csum_blank`, or completes the checksum itself where the backend
//!   cannot (IPv6 without `feature-ipv6-csum-offload`). Without it smoltcp computes
//!   them (`Checksum::Tx`). IPv4 header and ICMP checksums stay with smoltcp.
//! - `max_burst_size`: the receive buffers posted. smoltcp uses it only to cap the TCP
//!   window it advertises, i.e. how much a peer may send in one burst, and a burst
//!   lands in these buffers (using the free TX slots would advertise a zero window
//!   whenever our own transmit ring is momentarily full).

use hv::env::EventChannel;
use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use crate::meta::TxMeta;
use crate::queue::Queue;
use crate::rx::RxQueue;
use crate::tx::{CsumMode, TxQueue};

/// Receive token: the next frame of the queue, consumed when the token is.
pub struct NetfrontRxToken<'a, C> {
    rx: &'a mut RxQueue<C>,
}

/// Transmit token: room for one frame on the TX ring.
pub struct NetfrontTxToken<'a, C> {
    tx: &'a mut TxQueue<C>,
}

impl<C: EventChannel> phy::Device for Queue<C> {
    type RxToken<'a>
        = NetfrontRxToken<'a, C>
    where
        Self: 'a;
    type TxToken<'a>
        = NetfrontTxToken<'a, C>
    where
        Self: 'a;

    fn receive(&mut self, _ts: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        self.rx.peek_verified()?;
        Some((
            NetfrontRxToken { rx: &mut self.rx },
            NetfrontTxToken { tx: &mut self.tx },
        ))
    }

    fn transmit(&mut self, _ts: Instant) -> Option<Self::TxToken<'_>> {
        let mtu = self.mtu();
        if self.tx.free_frames(mtu, false) == 0 {
            self.tx.flush();
            self.tx.reclaim();
            if self.tx.free_frames(mtu, false) == 0 {
                return None;
            }
        }
        Some(NetfrontTxToken { tx: &mut self.tx })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.mtu();
        caps.max_burst_size = Some(self.rx_posted().max(1));
        let mut cs = ChecksumCapabilities::default();
        // RX: the driver verifies (`peek_verified`). TX: the device completes them
        // with checksum offload, smoltcp without.
        let tx = if self.tx.caps().csum_ipv4 {
            Checksum::None
        } else {
            Checksum::Tx
        };
        cs.tcp = tx;
        cs.udp = tx;
        caps.checksum = cs;
        caps
    }
}

impl<C: EventChannel> phy::RxToken for NetfrontRxToken<'_, C> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        // receive() peeked a frame before making the token, so this always runs f.
        let mut f = Some(f);
        let r = self
            .rx
            .recv_contiguous(false, |bytes, _meta| f.take().map(|f| f(bytes)));
        match (r.flatten(), f) {
            (Some(r), _) => r,
            (None, Some(f)) => f(&[]),
            (None, None) => unreachable!("the closure either ran or is still here"),
        }
    }
}

impl<C: EventChannel> phy::TxToken for NetfrontTxToken<'_, C> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let tx = self.tx;
        let (r, res) = tx.send_contiguous(len, &TxMeta::default(), CsumMode::Auto, f);
        match res {
            // Publish at once: smoltcp has no end-of-burst hook, and a push only
            // notifies when the backend asked.
            Ok(()) => tx.flush(),
            Err(e) => {
                log::debug!("netfront: smoltcp frame of {len} bytes dropped: {e}");
                tx.count_tx_dropped();
            }
        }
        r
    }
}
