# Helpers for a scenario's domu.sh (busybox sh in the domU).

# xenlab_arg KEY: value of xenlab.KEY=VALUE on the kernel command line.
xenlab_arg() {
    local w
    for w in $(cat /proc/cmdline); do
        case $w in "xenlab.$1="*) echo "${w#*=}" && return 0 ;; esac
    done
    return 1
}

# xenlab_wait_netdev IFNAME SECONDS: wait for a network device to appear.
xenlab_wait_netdev() {
    local i=0
    while [ $i -lt $(($2 * 2)) ]; do
        [ -e "/sys/class/net/$1" ] && return 0
        sleep 0.5
        i=$((i + 1))
    done
    return 1
}

# Markers dom0 waits for (xenlab_domu_wait) in this domU's console log.
xenlab_domu_mark() { echo "XENLAB-DOMU-$*"; }
xenlab_domu_fail() { echo "XENLAB-DOMU-FAIL $*"; }
