#![cfg_attr(not(feature = "std"), no_std)]
extern crate alloc;

mod abi;
mod active;
mod copy;
mod freelist;
mod guest;
mod shared;

pub use abi::*;
pub use active::{ActiveEntryInfo, ActiveGrantTable, GNTPIN_DEVW_MASK, GNTPIN_HSTR_INC, GNTPIN_HSTR_MASK, GNTPIN_HSTW_INC, GNTPIN_HSTW_MASK};
pub use copy::{gnttab_copy, gnttab_map_grant_ref, gnttab_unmap_grant_ref, GrantCopier, GrantDomain, GrantMapping, GrantWorld};
pub use guest::{GrantError, GuestGrantTable};
pub use shared::{combo, combo_domid, combo_flags, SharedGrantTable, TableError};
