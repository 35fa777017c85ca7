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

# xenlab_wait_listen PORT SECONDS: wait until a TCP socket listens on PORT.
xenlab_wait_listen() {
    local i=0
    while [ $i -lt $(($2 * 2)) ]; do
        netstat -ltn 2>/dev/null | grep -q ":$1 " && return 0
        sleep 0.5
        i=$((i + 1))
    done
    return 1
}

# xenlab_tcp_recv_server PORT MARK: accept one TCP connection on PORT (busybox nc) and
# read it to EOF, hashing as it arrives. Marks "MARK-LISTENING PORT" once listening,
# then "MARK bytes=N sha256=HEX". nc's stdin is held open (a FIFO nobody writes to):
# nc half-closes when its stdin ends, and the sender must not see a FIN before it has
# sent everything.
xenlab_tcp_recv_server() {
    local d=/tmp/tcp-$1 sp wp pp
    mkdir -p $d
    mkfifo $d/hold $d/count
    sleep 100000 >$d/hold &
    sp=$!
    wc -c <$d/count >$d/bytes &
    wp=$!
    nc -l -p "$1" <$d/hold | tee $d/count | sha256sum >$d/sum &
    pp=$!
    if ! xenlab_wait_listen "$1" 60; then
        kill $sp
        xenlab_domu_fail "nothing listens on TCP port $1"
        return 1
    fi
    xenlab_domu_mark "$2-LISTENING $1"
    wait $pp
    wait $wp
    kill $sp
    xenlab_domu_mark "$2 bytes=$(cat $d/bytes) sha256=$(cut -d' ' -f1 $d/sum)"
}

# xenlab_tcp_send_server PORT BYTES MARK: accept one TCP connection on PORT and send
# BYTES bytes of /dev/urandom, hashing what is sent. Marks "MARK-LISTENING PORT" once
# listening, then "MARK bytes=N sha256=HEX".
xenlab_tcp_send_server() {
    local d=/tmp/tcp-$1 hp wp pp
    mkdir -p $d
    mkfifo $d/tee $d/count
    sha256sum <$d/tee >$d/sum &
    hp=$!
    wc -c <$d/count >$d/bytes &
    wp=$!
    head -c "$2" /dev/urandom | tee $d/tee $d/count | nc -l -p "$1" >/dev/null &
    pp=$!
    if ! xenlab_wait_listen "$1" 60; then
        xenlab_domu_fail "nothing listens on TCP port $1"
        return 1
    fi
    xenlab_domu_mark "$3-LISTENING $1"
    wait $pp
    wait $hp
    wait $wp
    xenlab_domu_mark "$3 bytes=$(cat $d/bytes) sha256=$(cut -d' ' -f1 $d/sum)"
}
