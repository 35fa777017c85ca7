#!/usr/bin/env bash
# Build steps of the Xen-in-QEMU lab, one subcommand each so xenlab/run can bound every
# step with `timeout`. Each step writes into OUT.tmp and renames it to OUT at the end,
# so an interrupted step never leaves a half-built artifact in the cache.
#
#   build.sh host-deps
#   build.sh kernel   PKG OUT        linux-image-* unpacked, modules depmod'ed
#   build.sh xen      VERSION OUT    xen-hypervisor-4.17-amd64=VERSION, uncompressed
#   build.sh rootfs   OUT            debootstrap minbase dom0 userland, trimmed
#   build.sh dom0-extra KERNEL OUT   cpio: dom0 /init, lab helpers, Xen modules, domU kernel
#   build.sh domu-base  KERNEL OUT   cpio: busybox domU userland with xen-netfront
#   build.sh cpio DIR OUT [FILTER]   pack DIR as a newc cpio (FILTER default: gzip -1)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"


debs_dir() {
    mkdir -p "$XENLAB_CACHE/debs"
    # apt's sandbox user cannot write under /work; download as root without it.
    chmod 755 "$XENLAB_CACHE/debs"
    echo "$XENLAB_CACHE/debs"
}

# apt-get download PKGSPEC into the deb cache; prints the .deb path.
fetch_deb() {
    local spec=$1 dir name ver
    dir=$(debs_dir)
    name=${spec%%=*}
    if [[ $spec == *=* ]]; then ver=${spec#*=}; else ver=$(apt-cache policy "$name" | awk '/Candidate:/ { print $2 }'); fi
    [ -n "$ver" ] && [ "$ver" != "(none)" ] || xenlab_die "no candidate for $name: run apt-get update"
    local file="$dir/${name}_${ver//:/%3a}_amd64.deb"
    if [ ! -s "$file" ]; then
        (cd "$dir" && apt-get -q -o APT::Sandbox::User=root download "$name=$ver" >&2)
    fi
    [ -s "$file" ] || xenlab_die "apt-get download $name=$ver produced no $file"
    echo "$file"
}

cmd_host_deps() {
    local missing=() p
    for p in "${HOST_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ -x /bin/busybox ] && file_is_static /bin/busybox || missing+=(busybox-static)
    if [ ${#missing[@]} -gt 0 ]; then
        xenlab_log "installing host packages: ${missing[*]}"
        apt-get -q install -y --no-install-recommends "${missing[@]}" >&2 ||
            { apt-get -q update >&2 && apt-get -q install -y --no-install-recommends "${missing[@]}" >&2; }
    fi
}

file_is_static() { ! LC_ALL=C ldd "$1" >/dev/null 2>&1; }

cmd_kernel() {
    local pkg=$1 out=$2 deb
    deb=$(fetch_deb "$pkg")
    rm -rf "$out.tmp"
    mkdir -p "$out.tmp"
    dpkg-deb -x "$deb" "$out.tmp"
    local kver
    kver=$(basename "$(ls -d "$out.tmp"/lib/modules/*)")
    depmod -b "$out.tmp" "$kver"
    echo "$kver" >"$out.tmp/KVER"
    rm -rf "$out"
    mv "$out.tmp" "$out"
}

cmd_xen() {
    local ver=$1 out=$2 deb
    deb=$(fetch_deb "xen-hypervisor-4.17-amd64=$ver")
    rm -rf "$out.tmp"
    mkdir -p "$out.tmp/pkg"
    dpkg-deb -x "$deb" "$out.tmp/pkg"
    # QEMU's -kernel loads a multiboot image only when it is not compressed.
    zcat "$out.tmp"/pkg/boot/xen-4.17-amd64.gz >"$out.tmp/xen"
    rm -rf "$out.tmp/pkg"
    rm -rf "$out"
    mv "$out.tmp" "$out"
}

cmd_rootfs() {
    local out=$1
    rm -rf "$out.tmp"
    nice -n "$XENLAB_NICE" debootstrap --variant=minbase --include="$DOM0_INCLUDE" \
        "$XENLAB_SUITE" "$out.tmp" "$XENLAB_MIRROR" >"$out.debootstrap.log" 2>&1 ||
        { tail -20 "$out.debootstrap.log" >&2; xenlab_die "debootstrap failed (log: $out.debootstrap.log)"; }
    # Nothing in the lab reads docs, locales or package lists: drop them (~half the size).
    rm -rf "$out.tmp"/usr/share/{doc,man,info,locale,lintian,linda} \
        "$out.tmp"/var/cache/apt/* "$out.tmp"/var/lib/apt/lists/* "$out.tmp"/var/cache/debconf/*-old \
        "$out.tmp"/var/log/*.log "$out.tmp"/usr/share/zoneinfo
    rm -rf "$out"
    mv "$out.tmp" "$out"
}

# Copy the dependency closure of the named modules from a kernel tree into DEST (same
# layout) and print their insmod order, one relative path a line.
copy_modules() {
    local kdir=$1 dest=$2
    shift 2
    local kver m line rel
    kver=$(cat "$kdir/KVER")
    for m in "$@"; do
        modprobe -d "$kdir" -S "$kver" --show-depends "$m" ||
            xenlab_die "module $m not in $kdir"
    done | while read -r line; do
        case $line in
        insmod\ *)
            line=${line#insmod }
            line=${line%% *}
            rel=${line#"$kdir"/}
            mkdir -p "$dest/$(dirname "$rel")"
            cp -n "$line" "$dest/$rel"
            echo "$rel"
            ;;
        esac
    done | awk '!seen[$0]++'
}

cmd_dom0_extra() {
    local kdir=$1 out=$2 stage kver
    kver=$(cat "$kdir/KVER")
    stage="$out.stage"
    rm -rf "$stage"
    # The rootfs is merged-/usr (/lib is a symlink to usr/lib). A directory entry named
    # "lib" in a later archive would replace that symlink and break the dynamic loader,
    # so modules go to usr/lib/modules.
    mkdir -p "$stage/xenlab" "$stage/usr/lib/modules/$kver"
    copy_modules "$kdir" "$stage/usr" "${DOM0_MODULES[@]}" >/dev/null
    cp "$kdir/lib/modules/$kver"/modules.{order,builtin,builtin.modinfo} "$stage/usr/lib/modules/$kver/"
    depmod -b "$stage/usr" "$kver"
    # minbase has no ping; Debian's busybox (in the rootfs) has one, but no applet links.
    mkdir -p "$stage/xenlab/bin"
    for applet in ping arping nc; do ln -s /bin/busybox "$stage/xenlab/bin/$applet"; done
    install -m 755 "$XENLAB_DIR/guest/dom0-init" "$stage/init"
    install -m 644 "$XENLAB_DIR/guest/dom0-lib.sh" "$stage/xenlab/dom0-lib.sh"
    # The domU boots the same kernel.
    cp "$kdir/boot/vmlinuz-$kver" "$stage/xenlab/vmlinuz"
    pack_dir "$stage" "$out"
    rm -rf "$stage"
}

cmd_domu_base() {
    local kdir=$1 out=$2 stage applet
    stage="$out.stage"
    rm -rf "$stage"
    mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,run,etc}
    cp /bin/busybox "$stage/bin/busybox"
    for applet in $(/bin/busybox --list-full); do
        [ -e "$stage/$applet" ] || ln -s /bin/busybox "$stage/$applet"
    done
    copy_modules "$kdir" "$stage" "${DOMU_MODULES[@]}" >"$stage/etc/xenlab-modules"
    install -m 755 "$XENLAB_DIR/guest/domu-init" "$stage/init"
    install -m 644 "$XENLAB_DIR/guest/domu-lib.sh" "$stage/etc/xenlab-lib.sh"
    # Uncompressed: each run appends its scenario and compresses the whole once, since
    # libxc's ramdisk loader inflates only a single gzip stream.
    pack_dir "$stage" "$out" cat
    rm -rf "$stage"
}

# Pack a directory as a newc cpio, gzip -1 (fast to make; the kernel unpacks several
# concatenated archives in order, later files overriding earlier ones).
pack_dir() {
    local dir=$1 out=$2 filter=${3:-gzip -1}
    # shellcheck disable=SC2086 # the filter is a command with arguments
    (cd "$dir" && find . -mindepth 1 | LC_ALL=C sort | nice -n "$XENLAB_NICE" cpio -o -H newc --quiet |
        nice -n "$XENLAB_NICE" $filter) >"$out.tmp"
    mv "$out.tmp" "$out"
}

cmd_cpio() { pack_dir "$@"; }

sub=${1:-}
shift || true
case $sub in
host-deps) cmd_host_deps "$@" ;;
kernel) cmd_kernel "$@" ;;
xen) cmd_xen "$@" ;;
rootfs) cmd_rootfs "$@" ;;
dom0-extra) cmd_dom0_extra "$@" ;;
domu-base) cmd_domu_base "$@" ;;
cpio) cmd_cpio "$@" ;;
*) xenlab_die "unknown build step '$sub'" ;;
esac
