//! Linux TAP devices for netback, on raw `/dev/net/tun` ioctls.
//!
//! Each guest vif is bridged to a TAP named like Xen's hotplug scripts name the backend
//! interface, `vif<domid>.<devid>` ([`vif_name`]). The TAP is opened with
//! `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR` (+ `IFF_MULTI_QUEUE`, one fd per queue), uses the
//! 12-byte [`VirtioNetHdr`](crate::virtio_net_hdr::VirtioNetHdr) so checksum-partial and
//! 64 KiB GSO frames cross in one read/write, and all fds are non-blocking. The offloads
//! enabled with `TUNSETOFFLOAD` ([`Offloads`]) say what the *reader* (netback) accepts from
//! the kernel: with `CSUM`, frames may arrive checksum-partial; with `TSO4`/`TSO6`, as TCP
//! super-frames. Frames netback writes may always carry a partial checksum or GSO.
//!
//! The device is not persistent: it disappears when its last fd closes. [`Tap`]'s `Drop`
//! first detaches it from its bridge (if any), then closes the queues.
//!
//! Namespaces: ioctls reach the network namespace of the thread that opened the fds and
//! the control socket. [`TapBuilder::create_in_netns`] builds the TAP from a helper
//! thread inside a named namespace; the returned [`Tap`] can be used from any thread.

mod epoll;
mod error;
mod netns;
mod queue;
mod sys;
mod uring;

pub use epoll::{Epoll, Event, Events, Interest};
pub use error::TapError;
pub use netns::{netns_path, run_in_netns};
pub use queue::{
    Backpressure, QueueStats, ReadOutcome, RxBatch, TapQueue, TxBatchResult, TxFrame, WriteOutcome,
    MAX_FRAME_LEN, MAX_TX_SEGMENTS,
};
pub use uring::{TxRing, RING_ENTRIES};

use std::ffi::CStr;
use std::fmt;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::str::FromStr;

use crate::virtio_net_hdr::VNET_HDR_LEN;

/// `MAX_TAP_QUEUES` (drivers/net/tun.c): the most queues one TAP can have.
pub const MAX_TAP_QUEUES: usize = 256;

const TUN_PATH: &CStr = c"/dev/net/tun";

/// The set of offloads passed to `TUNSETOFFLOAD` (`TUN_F_*` in linux/if_tun.h).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Offloads(u32);

impl Offloads {
    /// No offloads: the kernel hands over only complete, checksummed, MTU-sized frames.
    pub const NONE: Self = Self(0);
    /// `TUN_F_CSUM`: frames may arrive with a partial checksum (`NEEDS_CSUM`).
    pub const CSUM: Self = Self(libc::TUN_F_CSUM);
    /// `TUN_F_TSO4`: TCPv4 super-frames may arrive (needs `CSUM`).
    pub const TSO4: Self = Self(libc::TUN_F_TSO4);
    /// `TUN_F_TSO6`: TCPv6 super-frames may arrive (needs `CSUM`).
    pub const TSO6: Self = Self(libc::TUN_F_TSO6);
    /// `TUN_F_TSO_ECN`: TSO super-frames may have CWR set (needs a TSO bit).
    pub const TSO_ECN: Self = Self(libc::TUN_F_TSO_ECN);
    const ALL: u32 = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN;

    /// The raw `TUN_F_*` bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// From raw bits; `None` if a bit outside CSUM/TSO4/TSO6/TSO_ECN is set.
    pub const fn from_bits(bits: u32) -> Option<Self> {
        if bits & !Self::ALL == 0 {
            Some(Self(bits))
        } else {
            None
        }
    }

    /// True if every bit of `other` is set in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// True if no bit is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// True if the combination is one the kernel honours: the TSO bits are silently
    /// ignored by Linux without `CSUM`, so we reject that rather than pretend.
    pub const fn is_valid(self) -> bool {
        let tso = self.0 & (libc::TUN_F_TSO4 | libc::TUN_F_TSO6);
        let needs_csum = self.0 & !libc::TUN_F_CSUM != 0;
        let ecn_ok = self.0 & libc::TUN_F_TSO_ECN == 0 || tso != 0;
        (!needs_csum || self.0 & libc::TUN_F_CSUM != 0) && ecn_ok
    }
}

impl std::ops::BitOr for Offloads {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for Offloads {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

impl fmt::Debug for Offloads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (Self::CSUM, "CSUM"),
            (Self::TSO4, "TSO4"),
            (Self::TSO6, "TSO6"),
            (Self::TSO_ECN, "TSO_ECN"),
        ];
        let mut first = true;
        for (flag, name) in names {
            if self.contains(flag) {
                if !first {
                    f.write_str(" | ")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("NONE")?;
        }
        Ok(())
    }
}

/// An Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// `fe:ff:ff:ff:ff:ff`: the address Xen's hotplug scripts (`vif-bridge` via
    /// `xen-network-common.sh`) give the backend side of every vif. It is the highest
    /// locally administered unicast address, so a Linux bridge, which takes the lowest
    /// port MAC as its own, never adopts it. This is the TAP's (host side) address; the
    /// guest's own MAC (xenstore `mac`) belongs to the frontend and is never set here.
    pub const XEN_BACKEND: Self = Self([0xfe, 0xff, 0xff, 0xff, 0xff, 0xff]);

    /// True if the multicast (group) bit is clear.
    pub const fn is_unicast(&self) -> bool {
        self.0[0] & 1 == 0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// Error parsing a MAC address string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?}: expected six hex bytes like 00:16:3e:12:34:56")]
pub struct MacParseError(pub String);

impl FromStr for MacAddr {
    type Err = MacParseError;
    /// Parses `aa:bb:cc:dd:ee:ff` (the form of the xenstore `mac` key).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError(s.to_owned());
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let p = parts.next().ok_or_else(err)?;
            if p.is_empty() || p.len() > 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(Self(out))
    }
}

/// The backend interface name Xen's hotplug uses for device `devid` of domain `domid`:
/// `vif<domid>.<devid>` (as Linux xen-netback names its netdev). Fails if the result
/// would not fit in an interface name (15 bytes).
pub fn vif_name(domid: u16, devid: u32) -> Result<String, TapError> {
    let name = format!("vif{domid}.{devid}");
    validate_ifname(&name)?;
    Ok(name)
}

/// Checks an interface name the way Linux's `dev_valid_name` does (1..=15 bytes, not
/// "." or "..", no '/', ':' or whitespace). A `%d` pattern is allowed: the kernel
/// picks the number.
pub fn validate_ifname(name: &str) -> Result<(), TapError> {
    let bad = name.is_empty()
        || name.len() > sys::IFNAME_MAX
        || name == "."
        || name == ".."
        || name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace());
    if bad {
        Err(TapError::InvalidName {
            name: name.to_owned(),
        })
    } else {
        Ok(())
    }
}

/// How to build a [`Tap`].
#[derive(Debug, Clone)]
pub struct TapBuilder {
    name: String,
    queues: usize,
    offloads: Offloads,
    mac: MacAddr,
    mtu: Option<u32>,
    up: bool,
    bridge: Option<String>,
}

impl TapBuilder {
    /// A single-queue TAP named `name`, no offloads, MAC [`MacAddr::XEN_BACKEND`],
    /// default MTU, brought up, not bridged.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            queues: 1,
            offloads: Offloads::NONE,
            mac: MacAddr::XEN_BACKEND,
            mtu: None,
            up: true,
            bridge: None,
        }
    }

    /// A builder for vif `devid` of domain `domid`, named `vif<domid>.<devid>`.
    pub fn for_vif(domid: u16, devid: u32) -> Result<Self, TapError> {
        Ok(Self::new(vif_name(domid, devid)?))
    }

    /// Number of queues (one fd each; > 1 uses `IFF_MULTI_QUEUE`).
    pub fn queues(mut self, n: usize) -> Self {
        self.queues = n;
        self
    }

    /// Offloads the reader accepts (`TUNSETOFFLOAD`).
    pub fn offloads(mut self, o: Offloads) -> Self {
        self.offloads = o;
        self
    }

    /// The TAP's own (host side) MAC address.
    pub fn mac(mut self, mac: MacAddr) -> Self {
        self.mac = mac;
        self
    }

    /// The MTU (`SIOCSIFMTU`); `None` keeps the kernel default (1500).
    pub fn mtu(mut self, mtu: Option<u32>) -> Self {
        self.mtu = mtu;
        self
    }

    /// Whether to bring the link up (default true).
    pub fn up(mut self, up: bool) -> Self {
        self.up = up;
        self
    }

    /// Enslave the TAP to this existing Linux bridge (`SIOCBRADDIF`).
    pub fn bridge(mut self, bridge: Option<String>) -> Self {
        self.bridge = bridge;
        self
    }

    /// Creates the TAP in the calling thread's network namespace. On failure nothing is
    /// left behind.
    pub fn create(self) -> Result<Tap, TapError> {
        validate_ifname(&self.name)?;
        if let Some(b) = &self.bridge {
            validate_ifname(b)?;
        }
        if self.queues == 0 || self.queues > MAX_TAP_QUEUES {
            return Err(TapError::BadQueueCount {
                requested: self.queues,
                max: MAX_TAP_QUEUES,
            });
        }
        if !self.offloads.is_valid() {
            return Err(TapError::InvalidOffloads(self.offloads));
        }
        if !self.mac.is_unicast() {
            return Err(TapError::InvalidMac(self.mac));
        }

        let ctl =
            sys::control_socket().map_err(|e| TapError::os("opening a control socket", "-", e))?;
        let first = open_tun(&self.name)?;
        check_features(&first, &self.name, self.queues > 1)?;

        let mut flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
        if self.queues > 1 {
            flags |= libc::IFF_MULTI_QUEUE;
        }
        // IFF_TUN_EXCL: never attach to somebody else's (persistent) device of this name.
        let name = set_iff(&first, &ctl, &self.name, flags | libc::IFF_TUN_EXCL)?;

        // From here on, `tap`'s Drop removes the device if a later step fails.
        let mut tap = Tap {
            name,
            ifindex: 0,
            queues: vec![TapQueue::from_fd(first, 0)],
            ctl,
            bridge: None,
            offloads: Offloads::NONE,
            mac: self.mac,
        };
        let hdr_len = VNET_HDR_LEN as libc::c_int;
        sys::ioctl_set_int(&tap.queues[0], libc::TUNSETVNETHDRSZ, hdr_len)
            .map_err(|e| TapError::os("TUNSETVNETHDRSZ", &tap.name, e))?;
        // Little-endian vnet headers (virtio 1.0). Kernels without TUNSETVNETLE are
        // little-endian already on little-endian hosts, so only fail elsewhere.
        if let Err(e) = sys::ioctl_set_int(&tap.queues[0], libc::TUNSETVNETLE, 1) {
            if cfg!(target_endian = "big") || e.raw_os_error() != Some(libc::EINVAL) {
                return Err(TapError::os("TUNSETVNETLE", &tap.name, e));
            }
        }
        tap.set_offloads(self.offloads)?;
        for index in 1..self.queues {
            let fd = open_tun(&tap.name)?;
            set_iff(&fd, &tap.ctl, &tap.name, flags)?;
            tap.queues.push(TapQueue::from_fd(fd, index));
        }
        tap.ifindex = tap.ifindex_of(&tap.name.clone())?;
        tap.set_mac(self.mac)?;
        if let Some(mtu) = self.mtu {
            tap.set_mtu(mtu)?;
        }
        if self.up {
            tap.set_up(true)?;
        }
        if let Some(bridge) = self.bridge {
            tap.attach_bridge(&bridge)?;
        }
        Ok(tap)
    }

    /// Creates the TAP inside the network namespace at `netns` (e.g.
    /// [`netns_path`]`("pvnet-test-1")`), from a short-lived helper thread.
    pub fn create_in_netns(self, netns: &Path) -> Result<Tap, TapError> {
        run_in_netns(netns, move || self.create())?
    }
}

fn open_tun(name: &str) -> Result<OwnedFd, TapError> {
    sys::open_rw_nonblock(TUN_PATH).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ENXIO) => TapError::TunMissing,
        _ => TapError::os("opening /dev/net/tun", name, e),
    })
}

fn check_features(fd: &OwnedFd, name: &str, multi_queue: bool) -> Result<(), TapError> {
    let features = sys::ioctl_get_uint(fd, libc::TUNGETFEATURES)
        .map_err(|e| TapError::os("TUNGETFEATURES", name, e))? as libc::c_int;
    let needed = [
        (libc::IFF_TAP, "IFF_TAP"),
        (libc::IFF_NO_PI, "IFF_NO_PI"),
        (libc::IFF_VNET_HDR, "IFF_VNET_HDR"),
    ];
    // IFF_TUN_EXCL is honoured by TUNSETIFF but never listed by TUNGETFEATURES.
    for (flag, feature) in needed {
        if features & flag == 0 {
            return Err(TapError::FeatureMissing { feature });
        }
    }
    if multi_queue && features & libc::IFF_MULTI_QUEUE == 0 {
        return Err(TapError::FeatureMissing {
            feature: "IFF_MULTI_QUEUE",
        });
    }
    Ok(())
}

/// `TUNSETIFF`; returns the name the kernel gave the device.
fn set_iff(
    fd: &OwnedFd,
    ctl: &OwnedFd,
    name: &str,
    flags: libc::c_int,
) -> Result<String, TapError> {
    let mut ifr = sys::ifreq_named(name);
    ifr.ifr_ifru.ifru_flags = flags as libc::c_short;
    match sys::ioctl_ifreq(fd, libc::TUNSETIFF, &mut ifr) {
        Ok(()) => Ok(sys::ifreq_name(&ifr)),
        Err(e) => {
            let exists = {
                let mut probe = sys::ifreq_named(name);
                sys::ioctl_ifreq(ctl, sys::req::SIOCGIFINDEX, &mut probe).is_ok()
            };
            match e.raw_os_error() {
                // EBUSY: IFF_TUN_EXCL hit an existing TAP; EINVAL/EEXIST: a device of
                // another type (or TAP with other flags) has the name.
                Some(libc::EBUSY) | Some(libc::EEXIST) | Some(libc::EINVAL) if exists => {
                    Err(TapError::NameInUse {
                        name: name.to_owned(),
                    })
                }
                _ => Err(TapError::os("TUNSETIFF (creating the TAP)", name, e)),
            }
        }
    }
}

/// A TAP device with one fd per queue. Dropping it detaches it from its bridge and
/// closes the fds, which removes the (non-persistent) device.
#[derive(Debug)]
pub struct Tap {
    name: String,
    ifindex: i32,
    // Field order matters for Drop: queues close after Drop::drop ran the bridge detach.
    queues: Vec<TapQueue>,
    ctl: OwnedFd,
    bridge: Option<String>,
    offloads: Offloads,
    mac: MacAddr,
}

impl Tap {
    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interface index.
    pub fn ifindex(&self) -> i32 {
        self.ifindex
    }

    /// The queues (index = queue number).
    pub fn queues(&self) -> &[TapQueue] {
        &self.queues
    }

    /// Queue `i`, if it exists.
    pub fn queue(&self, i: usize) -> Option<&TapQueue> {
        self.queues.get(i)
    }

    /// The bridge the TAP is enslaved to.
    pub fn bridge(&self) -> Option<&str> {
        self.bridge.as_deref()
    }

    /// The offloads currently enabled.
    pub fn offloads(&self) -> Offloads {
        self.offloads
    }

    /// The TAP's MAC address.
    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    /// Changes the offloads the reader accepts (e.g. when a guest reconnects with
    /// different `feature-*` keys).
    pub fn set_offloads(&mut self, offloads: Offloads) -> Result<(), TapError> {
        if !offloads.is_valid() {
            return Err(TapError::InvalidOffloads(offloads));
        }
        let q = self.queues.first().ok_or(TapError::BadQueueCount {
            requested: 0,
            max: MAX_TAP_QUEUES,
        })?;
        sys::ioctl_value(q, libc::TUNSETOFFLOAD, libc::c_ulong::from(offloads.bits())).map_err(
            |e| match e.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => {
                    TapError::os("TUNSETOFFLOAD", &self.name, e)
                }
                _ => TapError::OffloadRejected {
                    offloads,
                    dev: self.name.clone(),
                    source: e,
                },
            },
        )?;
        self.offloads = offloads;
        Ok(())
    }

    /// Sets the TAP's MAC address (`SIOCSIFHWADDR`).
    pub fn set_mac(&mut self, mac: MacAddr) -> Result<(), TapError> {
        if !mac.is_unicast() {
            return Err(TapError::InvalidMac(mac));
        }
        let mut ifr = sys::ifreq_named(&self.name);
        let mut sa = libc::sockaddr {
            sa_family: libc::ARPHRD_ETHER,
            sa_data: [0; 14],
        };
        for (d, s) in sa.sa_data.iter_mut().zip(mac.0) {
            *d = s as libc::c_char;
        }
        ifr.ifr_ifru.ifru_hwaddr = sa;
        sys::ioctl_ifreq(&self.ctl, sys::req::SIOCSIFHWADDR, &mut ifr)
            .map_err(|e| TapError::os("SIOCSIFHWADDR (setting the MAC)", &self.name, e))?;
        self.mac = mac;
        Ok(())
    }

    /// Sets the MTU (`SIOCSIFMTU`).
    pub fn set_mtu(&self, mtu: u32) -> Result<(), TapError> {
        let mut ifr = sys::ifreq_named(&self.name);
        ifr.ifr_ifru.ifru_mtu = libc::c_int::try_from(mtu).unwrap_or(libc::c_int::MAX);
        sys::ioctl_ifreq(&self.ctl, sys::req::SIOCSIFMTU, &mut ifr).map_err(|e| {
            match e.raw_os_error() {
                Some(libc::EINVAL) => TapError::InvalidMtu {
                    mtu,
                    dev: self.name.clone(),
                    source: e,
                },
                _ => TapError::os("SIOCSIFMTU (setting the MTU)", &self.name, e),
            }
        })
    }

    /// Brings the link up or down (`SIOCGIFFLAGS` + `SIOCSIFFLAGS`).
    pub fn set_up(&self, up: bool) -> Result<(), TapError> {
        let mut ifr = sys::ifreq_named(&self.name);
        sys::ioctl_ifreq(&self.ctl, sys::req::SIOCGIFFLAGS, &mut ifr)
            .map_err(|e| TapError::os("SIOCGIFFLAGS", &self.name, e))?;
        let mut flags = sys::ifreq_flags(&ifr);
        if up {
            flags |= libc::IFF_UP as libc::c_short;
        } else {
            flags &= !(libc::IFF_UP as libc::c_short);
        }
        ifr.ifr_ifru.ifru_flags = flags;
        sys::ioctl_ifreq(&self.ctl, sys::req::SIOCSIFFLAGS, &mut ifr)
            .map_err(|e| TapError::os("SIOCSIFFLAGS (bringing the link up/down)", &self.name, e))
    }

    /// Enslaves the TAP to an existing Linux bridge (`SIOCBRADDIF`), detaching it from a
    /// previous bridge first.
    pub fn attach_bridge(&mut self, bridge: &str) -> Result<(), TapError> {
        validate_ifname(bridge)?;
        self.detach_bridge()?;
        let mut probe = sys::ifreq_named(bridge);
        if let Err(e) = sys::ioctl_ifreq(&self.ctl, sys::req::SIOCGIFINDEX, &mut probe) {
            return Err(match e.raw_os_error() {
                Some(libc::ENODEV) => TapError::BridgeNotFound {
                    bridge: bridge.to_owned(),
                },
                _ => TapError::os("SIOCGIFINDEX (looking up the bridge)", bridge, e),
            });
        }
        let mut ifr = sys::ifreq_named(bridge);
        ifr.ifr_ifru.ifru_ifindex = self.ifindex;
        sys::ioctl_ifreq(&self.ctl, sys::req::SIOCBRADDIF, &mut ifr).map_err(|e| {
            match e.raw_os_error() {
                Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) | Some(libc::ENOTTY) => {
                    TapError::NotABridge {
                        bridge: bridge.to_owned(),
                        dev: self.name.clone(),
                        source: e,
                    }
                }
                Some(libc::ENODEV) => TapError::BridgeNotFound {
                    bridge: bridge.to_owned(),
                },
                _ => TapError::os("SIOCBRADDIF (adding the TAP to the bridge)", &self.name, e),
            }
        })?;
        self.bridge = Some(bridge.to_owned());
        Ok(())
    }

    /// Removes the TAP from its bridge (`SIOCBRDELIF`); a no-op if not bridged.
    pub fn detach_bridge(&mut self) -> Result<(), TapError> {
        let Some(bridge) = self.bridge.take() else {
            return Ok(());
        };
        let mut ifr = sys::ifreq_named(&bridge);
        ifr.ifr_ifru.ifru_ifindex = self.ifindex;
        match sys::ioctl_ifreq(&self.ctl, sys::req::SIOCBRDELIF, &mut ifr) {
            Ok(()) => Ok(()),
            // The bridge went away or already dropped us: nothing left to undo.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENODEV) | Some(libc::EINVAL)) => Ok(()),
            Err(e) => Err(TapError::os(
                "SIOCBRDELIF (removing the TAP from the bridge)",
                &self.name,
                e,
            )),
        }
    }

    fn ifindex_of(&self, name: &str) -> Result<i32, TapError> {
        let mut ifr = sys::ifreq_named(name);
        sys::ioctl_ifreq(&self.ctl, sys::req::SIOCGIFINDEX, &mut ifr)
            .map_err(|e| TapError::os("SIOCGIFINDEX", name, e))?;
        Ok(sys::ifreq_ifindex(&ifr))
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        if let Err(e) = self.detach_bridge() {
            log::warn!("tap {}: {e}", self.name);
        }
        // The queue fds close when the fields drop; the last close unregisters the
        // device. The kernel finishes that once the device's last references go (routes,
        // neighbours), so the name can stay visible for a few milliseconds after drop.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vif_names_follow_xen_hotplug() {
        assert_eq!(vif_name(1, 0).unwrap(), "vif1.0");
        assert_eq!(vif_name(65535, 999_999).unwrap(), "vif65535.999999");
        assert!(matches!(
            vif_name(65535, 1_000_000),
            Err(TapError::InvalidName { .. })
        ));
    }

    #[test]
    fn interface_name_rules() {
        for ok in ["tap0", "vif3.1", "a", "tap%d", "123456789012345"] {
            assert!(validate_ifname(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "1234567890123456",
            "a\0",
        ] {
            assert!(validate_ifname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn offload_sets() {
        let all = Offloads::CSUM | Offloads::TSO4 | Offloads::TSO6 | Offloads::TSO_ECN;
        assert_eq!(all.bits(), 0x0f);
        assert!(all.is_valid());
        assert!(Offloads::NONE.is_valid() && Offloads::CSUM.is_valid());
        assert!(!Offloads::TSO4.is_valid());
        assert!(!(Offloads::CSUM | Offloads::TSO_ECN).is_valid());
        assert!((Offloads::CSUM | Offloads::TSO6).contains(Offloads::TSO6));
        assert_eq!(Offloads::from_bits(0x10), None);
        assert_eq!(
            Offloads::from_bits(3),
            Some(Offloads::CSUM | Offloads::TSO4)
        );
        assert_eq!(
            format!("{:?}", Offloads::CSUM | Offloads::TSO6),
            "CSUM | TSO6"
        );
        assert_eq!(format!("{:?}", Offloads::NONE), "NONE");
    }

    #[test]
    fn mac_parse_and_print() {
        let m: MacAddr = "00:16:3E:0a:0B:ff".parse().unwrap();
        assert_eq!(m.0, [0x00, 0x16, 0x3e, 0x0a, 0x0b, 0xff]);
        assert_eq!(m.to_string(), "00:16:3e:0a:0b:ff");
        assert_eq!(MacAddr::XEN_BACKEND.to_string(), "fe:ff:ff:ff:ff:ff");
        assert!(MacAddr::XEN_BACKEND.is_unicast());
        assert!(!MacAddr([1, 0, 0, 0, 0, 0]).is_unicast());
        for bad in [
            "",
            "00:16:3e:0a:0b",
            "00:16:3e:0a:0b:ff:00",
            "0g:16:3e:0a:0b:ff",
            "000:1:2:3:4:5",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn builder_rejects_bad_config_before_touching_the_kernel() {
        assert!(matches!(
            TapBuilder::new("t").queues(0).create(),
            Err(TapError::BadQueueCount { requested: 0, .. })
        ));
        assert!(matches!(
            TapBuilder::new("t").queues(MAX_TAP_QUEUES + 1).create(),
            Err(TapError::BadQueueCount { .. })
        ));
        assert!(matches!(
            TapBuilder::new("t").offloads(Offloads::TSO4).create(),
            Err(TapError::InvalidOffloads(_))
        ));
        assert!(matches!(
            TapBuilder::new("t")
                .mac(MacAddr([1, 2, 3, 4, 5, 6]))
                .create(),
            Err(TapError::InvalidMac(_))
        ));
        assert!(matches!(
            TapBuilder::new("bad name").create(),
            Err(TapError::InvalidName { .. })
        ));
    }

    #[test]
    fn error_messages_tell_what_to_do() {
        let e = TapError::os(
            "TUNSETIFF",
            "vif1.0",
            std::io::Error::from_raw_os_error(libc::EPERM),
        );
        assert!(e.to_string().contains("CAP_NET_ADMIN: run as root"), "{e}");
        let e = TapError::BridgeNotFound {
            bridge: "xenbr0".into(),
        };
        assert!(
            e.to_string().contains("ip link add xenbr0 type bridge"),
            "{e}"
        );
    }
}
