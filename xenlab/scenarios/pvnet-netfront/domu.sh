# Runs in the domU of the pvnet-netfront scenario: vif 0 stays with the kernel's
# xen-netfront (eth0), vif 1 is played by pvnet's netfront in user space.
ip=$(xenlab_arg ip) || ip=10.99.0.2/24
uip=$(xenlab_arg uip) || uip=10.99.0.3/24
bytes=$(xenlab_arg bytes) || bytes=67108864
xenlab_wait_netdev eth0 60 || { xenlab_domu_fail "no eth0 from xen-netfront"; return; }
ip link set eth0 up
ip addr add "$ip" dev eth0
# The kernel's xenbus binds a driver to a new device only with drivers_autoprobe on:
# turned off, the vif dom0 attaches next is registered but left to user space.
echo 0 >/sys/bus/xen/drivers_autoprobe || { xenlab_domu_fail "cannot turn off xen drivers_autoprobe"; return; }
xenlab_domu_mark "READY eth0 $ip autoprobe=$(cat /sys/bus/xen/drivers_autoprobe)"
f=/xenlab/files
"$f/ld-linux-x86-64.so.2" --library-path "$f" "$f/xen_guest" --devid 1 --ip "$uip" \
    --ping 10.99.0.1 --rx-port 5001 --tx-port 5002 --tx-bytes "$bytes" \
    --wait-frontend 180 --timeout 540 --exit-when-done
rc=$?
# The kernel saw the device but bound no driver to it.
if [ -e /sys/bus/xen/devices/vif-1 ]; then
    echo "vif-1 driver: $(readlink /sys/bus/xen/devices/vif-1/driver || echo none)"
fi
ls /sys/class/net
if [ $rc = 0 ]; then xenlab_domu_mark GUEST-OK; else xenlab_domu_fail "xen_guest exited with $rc"; fi
