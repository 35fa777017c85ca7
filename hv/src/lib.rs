//! pvnet hypervisor core: the Xen public ABI, domains and their memory, the xenstore,
//! and the guest/backend environments the split drivers are written against.
#![cfg_attr(not(feature = "std"), no_std)]
extern crate alloc;

pub mod abi;
#[cfg(feature = "std")]
pub mod client;
#[cfg(feature = "std")]
pub mod daemon;
#[cfg(feature = "std")]
pub mod embedded;
pub mod env;
#[cfg(feature = "std")]
pub mod memory;
#[cfg(feature = "std")]
pub mod store;
pub mod toolstack;
#[cfg(feature = "std")]
pub mod wire;
#[cfg(all(feature = "std", target_os = "linux"))]
pub mod xen;
pub mod xenbus;
