# Runs in the domU (Linux xen-netfront) of the pvnet-netback scenario.
ip=$(xenlab_arg ip) || ip=10.99.0.2/24
bytes=$(xenlab_arg bytes) || bytes=67108864
xenlab_wait_netdev eth0 60 || { xenlab_domu_fail "no eth0 from xen-netfront"; return; }
ip link set eth0 up
ip addr add "$ip" dev eth0
# What xen-netfront negotiated, as the domU sees it (busybox has no ethtool).
xenlab_domu_mark "READY eth0 $ip $(cat /sys/class/net/eth0/address) queues=$(ls /sys/class/net/eth0/queues | tr '\n' ',') mtu=$(cat /sys/class/net/eth0/mtu)"
dmesg | grep -i 'xen_netfront\|netfront' | tail -5
if ping -c 3 -W 5 10.99.0.1; then
    xenlab_domu_mark PINGED
else
    xenlab_domu_fail "ping 10.99.0.1 from the domU"
    return
fi
xenlab_tcp_recv_server 5001 RECEIVED || return
xenlab_tcp_send_server 5002 "$bytes" SENT || return
cat /proc/net/dev | grep eth0
