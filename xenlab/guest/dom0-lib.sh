# shellcheck shell=bash
# Helpers for scenario scripts running in the lab's dom0 (sourced by dom0-init, and by
# each scenario's dom0.sh through it). A scenario ends with xenlab_pass or
# xenlab_fail REASON; returning without either counts as a failure.

XENLAB_RUN=/run/xenlab
XENLAB_CONSOLE_LOGS=/var/log/xen/console

# xenlab_pass [NOTE]: the scenario passed.
xenlab_pass() {
    echo "PASS ${*:-ok}" >"$XENLAB_RUN/verdict"
    exit 0
}

# xenlab_fail REASON: the scenario failed.
xenlab_fail() {
    echo "FAIL ${*:-failed}" >"$XENLAB_RUN/verdict"
    exit 1
}

# xenlab_note TEXT: a line in the scenario's output.
xenlab_note() { echo "-- $*"; }

# xenlab_domu_create NAME [CFG-LINE...]: start a PV domU running the scenario's domU
# initramfs (busybox, xen-netfront, the scenario's domu.sh). Extra xl.cfg lines (for
# example a vif=[...] line) are appended. Kernel arguments of the form xenlab.KEY=VALUE
# can be given with XENLAB_DOMU_ARGS; domu.sh reads them with xenlab_arg KEY.
# XENLAB_DOMU_MEMORY (MB, default 160) and XENLAB_DOMU_VCPUS (default 1) size it.
xenlab_domu_create() {
    local name=$1 cfg="$XENLAB_RUN/$1.cfg"
    shift
    {
        echo "name = \"$name\""
        echo 'type = "pv"'
        echo 'kernel = "/xenlab/vmlinuz"'
        echo "ramdisk = \"$XENLAB_SCENARIO_DIR/domu.cpio.gz\""
        echo "extra = \"console=hvc0 panic=-1 loglevel=4 ${XENLAB_DOMU_ARGS:-}\""
        echo "memory = ${XENLAB_DOMU_MEMORY:-160}"
        echo "vcpus = ${XENLAB_DOMU_VCPUS:-1}"
        echo 'on_crash = "preserve"'
        local line
        for line in "$@"; do echo "$line"; done
    } >"$cfg"
    echo "$name" >>"$XENLAB_RUN/domus"
    xenlab_note "xl create $name: $*"
    timeout 120 xl create "$cfg" || xenlab_fail "xl create $name failed"
}

# xenlab_bridge NAME CIDR: a fresh Linux bridge with dom0's address on it (an earlier
# scenario's bridge of that name, its ports and neighbour entries are removed first).
xenlab_bridge() {
    ip link del "$1" 2>/dev/null
    ip link add "$1" type bridge || xenlab_fail "cannot create bridge $1"
    ip addr add "$2" dev "$1" || xenlab_fail "cannot put $2 on $1"
    ip link set "$1" up
}

# xenlab_domid NAME: the domain id of a running domU.
xenlab_domid() { xl domid "$1"; }

# xenlab_domu_wait NAME MARKER SECONDS: wait until the domU's console log has a line
# containing MARKER. Fails the scenario early if the domU printed XENLAB-DOMU-FAIL.
xenlab_domu_wait() {
    local name=$1 marker=$2 limit=$3 log="$XENLAB_CONSOLE_LOGS/guest-$1.log" i
    for ((i = 0; i < limit * 2; i++)); do
        if [ -f "$log" ]; then
            grep -q -- "$marker" "$log" && return 0
            if grep -q 'XENLAB-DOMU-FAIL' "$log"; then
                xenlab_fail "domU $name: $(grep -m1 'XENLAB-DOMU-FAIL' "$log" | tr -d '\r')"
            fi
        fi
        sleep 0.5
    done
    return 1
}

# xenlab_xs_expect PATH VALUE: the xenstore node must hold VALUE.
xenlab_xs_expect() {
    local got
    got=$(xenstore-read "$1" 2>/dev/null) || xenlab_fail "xenstore $1 missing"
    [ "$got" = "$2" ] || xenlab_fail "xenstore $1 is '$got', expected '$2'"
}

# xenlab_xs_wait PATH VALUE SECONDS: wait until the node holds VALUE.
xenlab_xs_wait() {
    local i
    for ((i = 0; i < $3 * 2; i++)); do
        [ "$(xenstore-read "$1" 2>/dev/null)" = "$2" ] && return 0
        sleep 0.5
    done
    return 1
}

# xenlab_domu_line NAME MARKER: the last line of the domU's console log that contains
# MARKER (carriage returns removed); empty if there is none.
xenlab_domu_line() {
    grep -a -- "$2" "$XENLAB_CONSOLE_LOGS/guest-$1.log" 2>/dev/null | tail -1 | tr -d '\r'
}

# xenlab_field KEY LINE: the value of KEY=VALUE in LINE.
xenlab_field() { sed -n "s/.*[ ]$1=\([^ ]*\).*/\1/p" <<<" $2"; }

# xenlab_tcp_put ADDR PORT FILE [SECONDS]: send FILE to ADDR:PORT with busybox nc. nc
# half-closes after the file and exits when the peer closes, i.e. once the receiver
# has everything. Prints the elapsed seconds.
xenlab_tcp_put() {
    local t0 rc=0
    t0=$(date +%s.%N)
    timeout "${4:-300}" nc "$1" "$2" <"$3" >/dev/null || rc=$?
    awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f\n", b - a }'
    return $rc
}

# xenlab_tcp_get ADDR PORT FILE [SECONDS]: receive from ADDR:PORT into FILE until the
# peer closes. busybox nc exits as soon as the peer closes, and it shuts down its own
# sending side when its stdin ends, so stdin is held open (a FIFO nobody writes to):
# the sender must see no FIN before it has sent everything. Prints the elapsed seconds.
xenlab_tcp_get() {
    local hold="$XENLAB_RUN/hold.$BASHPID" t0 rc=0 sp
    rm -f "$hold"
    mkfifo "$hold"
    sleep 100000 >"$hold" &
    sp=$!
    t0=$(date +%s.%N)
    timeout "${4:-300}" nc "$1" "$2" <"$hold" >"$3" || rc=$?
    awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f\n", b - a }'
    kill "$sp" 2>/dev/null
    wait "$sp" 2>/dev/null
    rm -f "$hold"
    return $rc
}

# xenlab_mbps BYTES SECONDS: a transfer rate in MB/s.
xenlab_mbps() { awk -v b="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.2f", b / s / 1e6; else print "-" }'; }

# xenlab_xs_dump PATH: print a xenstore subtree with full paths and permissions.
xenlab_xs_dump() {
    echo "== xenstore-ls -fp $1"
    xenstore-ls -fp "$1" 2>&1
}

# Run one scenario in a subshell with a time bound; print its output between
# XENLAB-BEGIN/XENLAB-END and its verdict as XENLAB-RESULT.
xenlab_run_scenario() {
    local name=$1 limit=$2 dir="/xenlab/scenarios/$1" t0 rc=0 verdict d
    rm -f "$XENLAB_RUN/verdict" "$XENLAB_RUN/domus"
    t0=$(cut -d' ' -f1 /proc/uptime)
    echo "XENLAB-BEGIN $name"
    if [ ! -f "$dir/dom0.sh" ]; then
        echo "FAIL no scenario $name in this dom0" >"$XENLAB_RUN/verdict"
    else
        (
            cd "$dir" || exit 1
            export XENLAB_SCENARIO=$name XENLAB_SCENARIO_DIR=$dir PATH="$dir/files:$PATH"
            exec timeout -k 5 "$limit" bash -c '. /xenlab/dom0-lib.sh; . ./dom0.sh'
        ) || rc=$?
    fi
    if [ -f "$XENLAB_RUN/verdict" ]; then
        verdict=$(cat "$XENLAB_RUN/verdict")
    elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        verdict="FAIL timed out after ${limit}s"
    else
        verdict="FAIL dom0.sh ended without xenlab_pass/xenlab_fail (exit $rc)"
    fi
    # Every domU's console, then a clean slate for the next scenario.
    if [ -f "$XENLAB_RUN/domus" ]; then
        for d in $(sort -u "$XENLAB_RUN/domus"); do
            if [ -f "$XENLAB_CONSOLE_LOGS/guest-$d.log" ]; then
                tr -d '\r' <"$XENLAB_CONSOLE_LOGS/guest-$d.log" | sed "s/^/[domU $d] /"
            fi
            timeout 60 xl destroy "$d" >/dev/null 2>&1 || true
        done
    fi
    if [ "${verdict%% *}" != PASS ]; then
        echo "== dom0 dmesg (last 40 lines)"
        dmesg | tail -40
    fi
    echo "XENLAB-END $name"
    echo "XENLAB-RESULT $name $verdict (took $(awk -v a="$t0" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { printf "%.1f", b - a }')s)"
}
