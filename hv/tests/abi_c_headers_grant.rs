//! The `grant-table` crate's ABI against Xen's `xen/grant_table.h` (libxen-dev):
//! `grant_entry_v1`, `struct gnttab_copy` (x86_64: `xen_pfn_t` is 64-bit), and every
//! `GTF_*`, `GNTST_*`, `GNTCOPY_*`, `GNTMAP_*` constant the drivers use.
//!
//! Same method as `abi_c_headers.rs`: the C program prints `name value` lines, the
//! Rust table must match them all. Kept in its own test binary so the netif/ring
//! checks build even while the grant-table crate's API is changing.

#[path = "abi_c_headers/harness.rs"]
mod harness;

use grant_table::*;
use harness::{run_c, Expected, C_PRELUDE};
use std::mem::{align_of, offset_of, size_of, size_of_val};

const C_BODY: &str = r#"
int main(void) {
    SZ(struct grant_entry_v1); AL(struct grant_entry_v1);
    OFF(struct grant_entry_v1, flags); OFF(struct grant_entry_v1, domid);
    OFF(struct grant_entry_v1, frame);
    SZ(struct gnttab_copy); AL(struct gnttab_copy);
    OFF(struct gnttab_copy, source); OFF(struct gnttab_copy, source.u);
    OFF(struct gnttab_copy, source.u.ref); OFF(struct gnttab_copy, source.u.gmfn);
    OFF(struct gnttab_copy, source.domid); OFF(struct gnttab_copy, source.offset);
    OFF(struct gnttab_copy, dest); OFF(struct gnttab_copy, dest.u);
    OFF(struct gnttab_copy, dest.domid); OFF(struct gnttab_copy, dest.offset);
    OFF(struct gnttab_copy, len); OFF(struct gnttab_copy, flags);
    OFF(struct gnttab_copy, status);
    { struct gnttab_copy c; P("sizeof.gnttab_copy.source", sizeof c.source);
      P("sizeof.gnttab_copy.source.u", sizeof c.source.u); }

    P("GNTTAB_NR_RESERVED_ENTRIES", GNTTAB_NR_RESERVED_ENTRIES);
    P("GTF_invalid", GTF_invalid); P("GTF_permit_access", GTF_permit_access);
    P("GTF_accept_transfer", GTF_accept_transfer); P("GTF_type_mask", GTF_type_mask);
    P("GTF_readonly", GTF_readonly); P("GTF_reading", GTF_reading);
    P("GTF_writing", GTF_writing); P("GTF_sub_page", GTF_sub_page);
    P("GNTST_okay", GNTST_okay); P("GNTST_general_error", GNTST_general_error);
    P("GNTST_bad_domain", GNTST_bad_domain); P("GNTST_bad_gntref", GNTST_bad_gntref);
    P("GNTST_bad_handle", GNTST_bad_handle); P("GNTST_bad_virt_addr", GNTST_bad_virt_addr);
    P("GNTST_bad_dev_addr", GNTST_bad_dev_addr);
    P("GNTST_no_device_space", GNTST_no_device_space);
    P("GNTST_permission_denied", GNTST_permission_denied);
    P("GNTST_bad_page", GNTST_bad_page); P("GNTST_bad_copy_arg", GNTST_bad_copy_arg);
    P("GNTST_address_too_big", GNTST_address_too_big); P("GNTST_eagain", GNTST_eagain);
    P("GNTST_no_space", GNTST_no_space);
    P("GNTCOPY_source_gref", GNTCOPY_source_gref); P("GNTCOPY_dest_gref", GNTCOPY_dest_gref);
    P("GNTMAP_host_map", GNTMAP_host_map); P("GNTMAP_readonly", GNTMAP_readonly);
    return 0;
}
"#;

#[test]
fn grant_table_matches_libxen_dev_headers() {
    let c = run_c("grant_table", &format!("{C_PRELUDE}{C_BODY}"));
    let mut e = Expected::default();

    e.add("sizeof.struct grant_entry_v1", size_of::<GrantEntryV1>());
    e.add("alignof.struct grant_entry_v1", align_of::<GrantEntryV1>());
    e.add(
        "offsetof.struct grant_entry_v1.flags",
        offset_of!(GrantEntryV1, flags),
    );
    e.add(
        "offsetof.struct grant_entry_v1.domid",
        offset_of!(GrantEntryV1, domid),
    );
    e.add(
        "offsetof.struct grant_entry_v1.frame",
        offset_of!(GrantEntryV1, frame),
    );

    e.add("sizeof.struct gnttab_copy", size_of::<GnttabCopy>());
    e.add("alignof.struct gnttab_copy", align_of::<GnttabCopy>());
    macro_rules! copy_off {
        ($($c:literal => ($($f:tt)+)),+ $(,)?) => {
            $( e.add(concat!("offsetof.struct gnttab_copy.", $c), field_offset!(GnttabCopy, $($f)+)); )+
        };
    }
    copy_off!(
        "source" => (source),
        "source.u" => (source.u),
        // `ref` and `gmfn` share the union's first bytes.
        "source.u.ref" => (source.u),
        "source.u.gmfn" => (source.u),
        "source.domid" => (source.domid),
        "source.offset" => (source.offset),
        "dest" => (dest),
        "dest.u" => (dest.u),
        "dest.domid" => (dest.domid),
        "dest.offset" => (dest.offset),
        "len" => (len),
        "flags" => (flags),
        "status" => (status),
    );
    let copy = GnttabCopy::default();
    e.add("sizeof.gnttab_copy.source", size_of_val(&copy.source));
    e.add("sizeof.gnttab_copy.source.u", size_of_val(&copy.source.u));

    macro_rules! k {
        ($($c:literal => $v:expr),+ $(,)?) => { $( e.add($c, $v); )+ };
    }
    k!(
        "GNTTAB_NR_RESERVED_ENTRIES" => GNTTAB_NR_RESERVED_ENTRIES,
        "GTF_invalid" => GTF_INVALID,
        "GTF_permit_access" => GTF_PERMIT_ACCESS,
        "GTF_accept_transfer" => GTF_ACCEPT_TRANSFER,
        "GTF_type_mask" => GTF_TYPE_MASK,
        "GTF_readonly" => GTF_READONLY,
        "GTF_reading" => GTF_READING,
        "GTF_writing" => GTF_WRITING,
        "GTF_sub_page" => GTF_SUB_PAGE,
        "GNTST_okay" => GNTST_OKAY,
        "GNTST_general_error" => GNTST_GENERAL_ERROR,
        "GNTST_bad_domain" => GNTST_BAD_DOMAIN,
        "GNTST_bad_gntref" => GNTST_BAD_GNTREF,
        "GNTST_bad_handle" => GNTST_BAD_HANDLE,
        "GNTST_bad_virt_addr" => GNTST_BAD_VIRT_ADDR,
        "GNTST_bad_dev_addr" => GNTST_BAD_DEV_ADDR,
        "GNTST_no_device_space" => GNTST_NO_DEVICE_SPACE,
        "GNTST_permission_denied" => GNTST_PERMISSION_DENIED,
        "GNTST_bad_page" => GNTST_BAD_PAGE,
        "GNTST_bad_copy_arg" => GNTST_BAD_COPY_ARG,
        "GNTST_address_too_big" => GNTST_ADDRESS_TOO_BIG,
        "GNTST_eagain" => GNTST_EAGAIN,
        "GNTST_no_space" => GNTST_NO_SPACE,
        "GNTCOPY_source_gref" => GNTCOPY_SOURCE_GREF,
        "GNTCOPY_dest_gref" => GNTCOPY_DEST_GREF,
        "GNTMAP_host_map" => GNTMAP_HOST_MAP,
        "GNTMAP_readonly" => GNTMAP_READONLY,
    );
    e.compare(&c);
}
