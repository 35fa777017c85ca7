//! Xen's public ABI, byte for byte: `io/ring.h`, `io/netif.h`, `io/xenbus.h`.
//!
//! `core` only, so the ABI builds in `no_std` guests. The layouts are checked against
//! the C headers of `libxen-dev` in `hv/tests/abi_c_headers.rs`.

pub mod netif;
pub mod ring;
pub mod xenbus;
