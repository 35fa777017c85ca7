# Runs in the domU after xen-netfront is loaded.
ip=$(xenlab_arg ip) || ip=10.99.0.2/24
xenlab_wait_netdev eth0 60 || { xenlab_domu_fail "no eth0 from xen-netfront"; return; }
ip link set eth0 up
ip addr add "$ip" dev eth0
xenlab_domu_mark "READY eth0 $ip $(cat /sys/class/net/eth0/address)"
if ping -c 3 -W 5 10.99.0.1; then
    xenlab_domu_mark PINGED
else
    xenlab_domu_fail "ping 10.99.0.1 from the domU"
fi
