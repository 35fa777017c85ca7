# shellcheck shell=bash
# Shared by xenlab/run and xenlab/lib/build.sh: paths, logging, timed steps.

XENLAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
XENLAB_REPO=$(cd "$XENLAB_DIR/.." && pwd)
# Everything built lands under target/ (gitignored), keyed by package versions.
XENLAB_CACHE=${XENLAB_CACHE:-$XENLAB_REPO/target/xenlab-cache}
# The distribution the lab is built from; the host runs the same one, so a binary built
# on the host runs in dom0 unchanged.
XENLAB_SUITE=${XENLAB_SUITE:-bookworm}
XENLAB_MIRROR=${XENLAB_MIRROR:-http://deb.debian.org/debian}
# The recipe, read by run and build.sh.
# shellcheck disable=SC2034
{
# Host packages the lab needs (Debian names).
HOST_PACKAGES=(qemu-system-x86 busybox-static cpio debootstrap kmod libxen-dev)
# dom0 userland on top of minbase: the Xen toolstack, xenstore clients, networking.
DOM0_INCLUDE=xen-utils-4.17,xenstore-utils,iproute2,bridge-utils,busybox,kmod,procps
# Bump when cmd_rootfs changes in a way that must rebuild the cached rootfs.
ROOTFS_RECIPE=1
# Modules dom0 may load (closure computed with modprobe --show-depends).
DOM0_MODULES=(xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs xen-netback bridge tun veth)
# The order `xenlab/run` without arguments runs the scenarios in (others follow by
# name): kernel-only first, then pvnet's netback (which needs the kernel's xen-netback
# unloaded), then the scenarios that load it.
XENLAB_ORDER=(baseline pvnet-netback pvnet-netfront xen-env)
# Modules the domU loads, in this order.
DOMU_MODULES=(xen-netfront xen-evtchn xen-gntalloc xen-gntdev)
}
# CPU niceness of every heavy step: the machine's two cores are shared.
XENLAB_NICE=${XENLAB_NICE:-10}

xenlab_log() { printf '[xenlab %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
xenlab_die() {
    xenlab_log "ERROR: $*"
    exit 1
}

# Seconds since the epoch with a fraction, for timings.
xenlab_now() { date +%s.%N; }
# Elapsed seconds (one decimal) since a xenlab_now value.
xenlab_since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# xenlab_step NAME SECONDS CMD...: run CMD with a hard time bound; die with a clear
# message on failure or timeout. The duration is appended to $XENLAB_TIMINGS.
xenlab_step() {
    local name=$1 limit=$2
    shift 2
    local t0 rc=0
    t0=$(xenlab_now)
    xenlab_log "step $name (limit ${limit}s)"
    timeout --kill-after=10 "$limit" "$@" || rc=$?
    local took
    took=$(xenlab_since "$t0")
    if [ -n "${XENLAB_TIMINGS:-}" ]; then
        printf '%-28s %8ss\n' "$name" "$took" >>"$XENLAB_TIMINGS"
    fi
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        xenlab_die "step $name timed out after ${limit}s"
    elif [ "$rc" != 0 ]; then
        xenlab_die "step $name failed (exit $rc) after ${took}s"
    fi
}

# Short content hash of files and strings, used in cache keys so that a change to a
# build script or a guest init rebuilds what depends on it.
xenlab_hash() {
    local arg
    for arg in "$@"; do
        if [ -f "$arg" ]; then cat "$arg"; else printf '%s\n' "$arg"; fi
    done | sha256sum | cut -c1-12
}
