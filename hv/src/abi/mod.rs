//! Xen's public ABI, byte for byte: `io/ring.h`, `io/netif.h`, `io/xenbus.h`.

pub mod xenbus;
