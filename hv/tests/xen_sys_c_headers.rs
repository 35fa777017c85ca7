//! `hv::xen::sys` and `hv::xen::xs_wire` against the C headers they mirror
//! (libxen-dev: xen/sys/gntdev.h, xen/sys/gntalloc.h, xen/sys/evtchn.h,
//! xen/io/xs_wire.h): sizes, alignments, field offsets, ioctl numbers, message type
//! values and the `xsd_errors` table. A compiled C program prints them; every line must
//! match the Rust table.

#[path = "abi_c_headers/harness.rs"]
mod harness;

use harness::{run_c, Expected};
use hv::xen::sys::*;
use hv::xen::xs_wire::{XsType, XENSTORE_PAYLOAD_MAX, XSD_ERRORS, XSD_SOCKMSG_SIZE};
use std::mem::{align_of, offset_of, size_of};

const C_SOURCE: &str = r#"
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <xen/xen.h>
#include <xen/sys/gntdev.h>
#include <xen/sys/gntalloc.h>
#include <xen/sys/evtchn.h>
#include <xen/io/xs_wire.h>

#define P(name, expr) printf("%s %lld\n", (name), (long long)(expr))
#define SZ(T) P("sizeof." #T, sizeof(struct T)); P("alignof." #T, _Alignof(struct T))
#define OFF(T, f) P("offsetof." #T "." #f, offsetof(struct T, f))

int main(void) {
    SZ(ioctl_gntdev_grant_ref);
    OFF(ioctl_gntdev_grant_ref, domid);
    OFF(ioctl_gntdev_grant_ref, ref);
    SZ(ioctl_gntdev_map_grant_ref);
    OFF(ioctl_gntdev_map_grant_ref, count);
    OFF(ioctl_gntdev_map_grant_ref, index);
    OFF(ioctl_gntdev_map_grant_ref, refs);
    SZ(ioctl_gntdev_unmap_grant_ref);
    OFF(ioctl_gntdev_unmap_grant_ref, index);
    OFF(ioctl_gntdev_unmap_grant_ref, count);
    SZ(ioctl_gntdev_grant_copy_segment);
    OFF(ioctl_gntdev_grant_copy_segment, source);
    OFF(ioctl_gntdev_grant_copy_segment, source.foreign.ref);
    OFF(ioctl_gntdev_grant_copy_segment, source.foreign.offset);
    OFF(ioctl_gntdev_grant_copy_segment, source.foreign.domid);
    OFF(ioctl_gntdev_grant_copy_segment, dest);
    OFF(ioctl_gntdev_grant_copy_segment, dest.virt);
    OFF(ioctl_gntdev_grant_copy_segment, len);
    OFF(ioctl_gntdev_grant_copy_segment, flags);
    OFF(ioctl_gntdev_grant_copy_segment, status);
    SZ(ioctl_gntdev_grant_copy);
    OFF(ioctl_gntdev_grant_copy, count);
    OFF(ioctl_gntdev_grant_copy, segments);
    P("IOCTL_GNTDEV_MAP_GRANT_REF", IOCTL_GNTDEV_MAP_GRANT_REF);
    P("IOCTL_GNTDEV_UNMAP_GRANT_REF", IOCTL_GNTDEV_UNMAP_GRANT_REF);
    P("IOCTL_GNTDEV_GRANT_COPY", IOCTL_GNTDEV_GRANT_COPY);

    SZ(ioctl_gntalloc_alloc_gref);
    OFF(ioctl_gntalloc_alloc_gref, domid);
    OFF(ioctl_gntalloc_alloc_gref, flags);
    OFF(ioctl_gntalloc_alloc_gref, count);
    OFF(ioctl_gntalloc_alloc_gref, index);
    OFF(ioctl_gntalloc_alloc_gref, gref_ids);
    SZ(ioctl_gntalloc_dealloc_gref);
    OFF(ioctl_gntalloc_dealloc_gref, index);
    OFF(ioctl_gntalloc_dealloc_gref, count);
    P("GNTALLOC_FLAG_WRITABLE", GNTALLOC_FLAG_WRITABLE);
    P("IOCTL_GNTALLOC_ALLOC_GREF", IOCTL_GNTALLOC_ALLOC_GREF);
    P("IOCTL_GNTALLOC_DEALLOC_GREF", IOCTL_GNTALLOC_DEALLOC_GREF);

    SZ(ioctl_evtchn_bind_interdomain);
    OFF(ioctl_evtchn_bind_interdomain, remote_domain);
    OFF(ioctl_evtchn_bind_interdomain, remote_port);
    SZ(ioctl_evtchn_bind_unbound_port);
    SZ(ioctl_evtchn_unbind);
    SZ(ioctl_evtchn_notify);
    P("IOCTL_EVTCHN_BIND_INTERDOMAIN", IOCTL_EVTCHN_BIND_INTERDOMAIN);
    P("IOCTL_EVTCHN_BIND_UNBOUND_PORT", IOCTL_EVTCHN_BIND_UNBOUND_PORT);
    P("IOCTL_EVTCHN_UNBIND", IOCTL_EVTCHN_UNBIND);
    P("IOCTL_EVTCHN_NOTIFY", IOCTL_EVTCHN_NOTIFY);

    SZ(xsd_sockmsg);
    OFF(xsd_sockmsg, type);
    OFF(xsd_sockmsg, req_id);
    OFF(xsd_sockmsg, tx_id);
    OFF(xsd_sockmsg, len);
    P("XENSTORE_PAYLOAD_MAX", XENSTORE_PAYLOAD_MAX);
    P("XS_CONTROL", XS_CONTROL); P("XS_DIRECTORY", XS_DIRECTORY); P("XS_READ", XS_READ);
    P("XS_GET_PERMS", XS_GET_PERMS); P("XS_WATCH", XS_WATCH); P("XS_UNWATCH", XS_UNWATCH);
    P("XS_TRANSACTION_START", XS_TRANSACTION_START); P("XS_TRANSACTION_END", XS_TRANSACTION_END);
    P("XS_INTRODUCE", XS_INTRODUCE); P("XS_RELEASE", XS_RELEASE);
    P("XS_GET_DOMAIN_PATH", XS_GET_DOMAIN_PATH); P("XS_WRITE", XS_WRITE); P("XS_MKDIR", XS_MKDIR);
    P("XS_RM", XS_RM); P("XS_SET_PERMS", XS_SET_PERMS); P("XS_WATCH_EVENT", XS_WATCH_EVENT);
    P("XS_ERROR", XS_ERROR); P("XS_IS_DOMAIN_INTRODUCED", XS_IS_DOMAIN_INTRODUCED);
    P("XS_RESUME", XS_RESUME); P("XS_SET_TARGET", XS_SET_TARGET);
    P("XS_RESET_WATCHES", XS_RESET_WATCHES); P("XS_DIRECTORY_PART", XS_DIRECTORY_PART);
    P("xsd_errors.count", sizeof(xsd_errors) / sizeof(xsd_errors[0]));
    for (size_t i = 0; i < sizeof(xsd_errors) / sizeof(xsd_errors[0]); i++) {
        char name[64];
        snprintf(name, sizeof(name), "xsd_errors.%zu.%s", i, xsd_errors[i].errstring);
        P(name, xsd_errors[i].errnum);
    }
    return 0;
}
"#;

fn size_align<T>(e: &mut Expected, c_name: &str) {
    e.add(format!("sizeof.{c_name}"), size_of::<T>());
    e.add(format!("alignof.{c_name}"), align_of::<T>());
}

#[test]
fn ioctl_structs_numbers_and_xs_wire_match_the_c_headers() {
    let c = run_c("xen_sys", C_SOURCE);
    let mut e = Expected::default();

    size_align::<IoctlGntdevGrantRef>(&mut e, "ioctl_gntdev_grant_ref");
    e.add(
        "offsetof.ioctl_gntdev_grant_ref.domid",
        offset_of!(IoctlGntdevGrantRef, domid),
    );
    e.add(
        "offsetof.ioctl_gntdev_grant_ref.ref",
        offset_of!(IoctlGntdevGrantRef, gref),
    );
    size_align::<IoctlGntdevMapGrantRef>(&mut e, "ioctl_gntdev_map_grant_ref");
    e.add(
        "offsetof.ioctl_gntdev_map_grant_ref.count",
        offset_of!(IoctlGntdevMapGrantRef, count),
    );
    e.add(
        "offsetof.ioctl_gntdev_map_grant_ref.index",
        offset_of!(IoctlGntdevMapGrantRef, index),
    );
    e.add(
        "offsetof.ioctl_gntdev_map_grant_ref.refs",
        offset_of!(IoctlGntdevMapGrantRef, refs),
    );
    size_align::<IoctlGntdevUnmapGrantRef>(&mut e, "ioctl_gntdev_unmap_grant_ref");
    e.add(
        "offsetof.ioctl_gntdev_unmap_grant_ref.index",
        offset_of!(IoctlGntdevUnmapGrantRef, index),
    );
    e.add(
        "offsetof.ioctl_gntdev_unmap_grant_ref.count",
        offset_of!(IoctlGntdevUnmapGrantRef, count),
    );
    size_align::<IoctlGntdevGrantCopySegment>(&mut e, "ioctl_gntdev_grant_copy_segment");
    let seg = "offsetof.ioctl_gntdev_grant_copy_segment";
    let src = offset_of!(IoctlGntdevGrantCopySegment, source);
    let dst = offset_of!(IoctlGntdevGrantCopySegment, dest);
    e.add(format!("{seg}.source"), src);
    e.add(
        format!("{seg}.source.foreign.ref"),
        src + offset_of!(GntdevCopyForeign, gref),
    );
    e.add(
        format!("{seg}.source.foreign.offset"),
        src + offset_of!(GntdevCopyForeign, offset),
    );
    e.add(
        format!("{seg}.source.foreign.domid"),
        src + offset_of!(GntdevCopyForeign, domid),
    );
    e.add(format!("{seg}.dest"), dst);
    e.add(
        format!("{seg}.dest.virt"),
        dst + offset_of!(GntdevCopyPtr, virt),
    );
    e.add(
        format!("{seg}.len"),
        offset_of!(IoctlGntdevGrantCopySegment, len),
    );
    e.add(
        format!("{seg}.flags"),
        offset_of!(IoctlGntdevGrantCopySegment, flags),
    );
    e.add(
        format!("{seg}.status"),
        offset_of!(IoctlGntdevGrantCopySegment, status),
    );
    size_align::<IoctlGntdevGrantCopy>(&mut e, "ioctl_gntdev_grant_copy");
    e.add(
        "offsetof.ioctl_gntdev_grant_copy.count",
        offset_of!(IoctlGntdevGrantCopy, count),
    );
    e.add(
        "offsetof.ioctl_gntdev_grant_copy.segments",
        offset_of!(IoctlGntdevGrantCopy, segments),
    );
    e.add("IOCTL_GNTDEV_MAP_GRANT_REF", IOCTL_GNTDEV_MAP_GRANT_REF);
    e.add("IOCTL_GNTDEV_UNMAP_GRANT_REF", IOCTL_GNTDEV_UNMAP_GRANT_REF);
    e.add("IOCTL_GNTDEV_GRANT_COPY", IOCTL_GNTDEV_GRANT_COPY);

    size_align::<IoctlGntallocAllocGref>(&mut e, "ioctl_gntalloc_alloc_gref");
    let a = "offsetof.ioctl_gntalloc_alloc_gref";
    e.add(
        format!("{a}.domid"),
        offset_of!(IoctlGntallocAllocGref, domid),
    );
    e.add(
        format!("{a}.flags"),
        offset_of!(IoctlGntallocAllocGref, flags),
    );
    e.add(
        format!("{a}.count"),
        offset_of!(IoctlGntallocAllocGref, count),
    );
    e.add(
        format!("{a}.index"),
        offset_of!(IoctlGntallocAllocGref, index),
    );
    e.add(
        format!("{a}.gref_ids"),
        offset_of!(IoctlGntallocAllocGref, gref_ids),
    );
    size_align::<IoctlGntallocDeallocGref>(&mut e, "ioctl_gntalloc_dealloc_gref");
    e.add(
        "offsetof.ioctl_gntalloc_dealloc_gref.index",
        offset_of!(IoctlGntallocDeallocGref, index),
    );
    e.add(
        "offsetof.ioctl_gntalloc_dealloc_gref.count",
        offset_of!(IoctlGntallocDeallocGref, count),
    );
    e.add("GNTALLOC_FLAG_WRITABLE", GNTALLOC_FLAG_WRITABLE);
    e.add("IOCTL_GNTALLOC_ALLOC_GREF", IOCTL_GNTALLOC_ALLOC_GREF);
    e.add("IOCTL_GNTALLOC_DEALLOC_GREF", IOCTL_GNTALLOC_DEALLOC_GREF);

    size_align::<IoctlEvtchnBindInterdomain>(&mut e, "ioctl_evtchn_bind_interdomain");
    e.add(
        "offsetof.ioctl_evtchn_bind_interdomain.remote_domain",
        offset_of!(IoctlEvtchnBindInterdomain, remote_domain),
    );
    e.add(
        "offsetof.ioctl_evtchn_bind_interdomain.remote_port",
        offset_of!(IoctlEvtchnBindInterdomain, remote_port),
    );
    size_align::<IoctlEvtchnBindUnboundPort>(&mut e, "ioctl_evtchn_bind_unbound_port");
    size_align::<IoctlEvtchnUnbind>(&mut e, "ioctl_evtchn_unbind");
    size_align::<IoctlEvtchnNotify>(&mut e, "ioctl_evtchn_notify");
    e.add(
        "IOCTL_EVTCHN_BIND_INTERDOMAIN",
        IOCTL_EVTCHN_BIND_INTERDOMAIN,
    );
    e.add(
        "IOCTL_EVTCHN_BIND_UNBOUND_PORT",
        IOCTL_EVTCHN_BIND_UNBOUND_PORT,
    );
    e.add("IOCTL_EVTCHN_UNBIND", IOCTL_EVTCHN_UNBIND);
    e.add("IOCTL_EVTCHN_NOTIFY", IOCTL_EVTCHN_NOTIFY);

    // xs_wire.h: the header is four u32s in this order.
    e.add("sizeof.xsd_sockmsg", XSD_SOCKMSG_SIZE);
    e.add("alignof.xsd_sockmsg", 4);
    for (i, f) in ["type", "req_id", "tx_id", "len"].iter().enumerate() {
        e.add(format!("offsetof.xsd_sockmsg.{f}"), i * 4);
    }
    e.add("XENSTORE_PAYLOAD_MAX", XENSTORE_PAYLOAD_MAX);
    let types = [
        ("XS_CONTROL", XsType::Control),
        ("XS_DIRECTORY", XsType::Directory),
        ("XS_READ", XsType::Read),
        ("XS_GET_PERMS", XsType::GetPerms),
        ("XS_WATCH", XsType::Watch),
        ("XS_UNWATCH", XsType::Unwatch),
        ("XS_TRANSACTION_START", XsType::TransactionStart),
        ("XS_TRANSACTION_END", XsType::TransactionEnd),
        ("XS_INTRODUCE", XsType::Introduce),
        ("XS_RELEASE", XsType::Release),
        ("XS_GET_DOMAIN_PATH", XsType::GetDomainPath),
        ("XS_WRITE", XsType::Write),
        ("XS_MKDIR", XsType::Mkdir),
        ("XS_RM", XsType::Rm),
        ("XS_SET_PERMS", XsType::SetPerms),
        ("XS_WATCH_EVENT", XsType::WatchEvent),
        ("XS_ERROR", XsType::Error),
        ("XS_IS_DOMAIN_INTRODUCED", XsType::IsDomainIntroduced),
        ("XS_RESUME", XsType::Resume),
        ("XS_SET_TARGET", XsType::SetTarget),
        ("XS_RESET_WATCHES", XsType::ResetWatches),
        ("XS_DIRECTORY_PART", XsType::DirectoryPart),
    ];
    for (name, t) in types {
        e.add(name, t as u32);
    }
    e.add("xsd_errors.count", XSD_ERRORS.len());
    for (i, (errno, name)) in XSD_ERRORS.iter().enumerate() {
        e.add(format!("xsd_errors.{i}.{name}"), errno);
    }

    assert!(
        e.len() > 90,
        "the table must cover the headers ({} rows)",
        e.len()
    );
    e.compare(&c);
}

#[test]
fn ioc_none_encodes_size_type_and_number() {
    // _IOC(_IOC_NONE, 'G', 8, 16): size in bits 16..29, type in 8..15, nr in 0..7.
    assert_eq!(ioc_none(b'G', 8, 16), (16 << 16) | (0x47 << 8) | 8);
    assert_eq!(ioc_none(b'E', 0, 0), 0x4500);
}
