# xenlab-timeout: 900
# TEMPORARY control: kernel netback <-> kernel netfront, 2 vCPUs, same transfers
bytes=$((64 << 20))
name=zz-control-domu
modprobe -a xen-netback bridge || xenlab_fail "modprobe"
ip link add xenbr0 type bridge
ip addr add 10.99.0.1/24 dev xenbr0
ip link set xenbr0 up
XENLAB_DOMU_VCPUS=2 XENLAB_DOMU_ARGS="xenlab.ip=10.99.0.2/24 xenlab.bytes=$bytes" \
    xenlab_domu_create "$name" "vif = ['mac=00:16:3e:00:00:12,bridge=xenbr0']"
domid=$(xenlab_domid "$name") || xenlab_fail "no domid for $name"
xenlab_domu_wait "$name" XENLAB-DOMU-READY 120 || xenlab_fail "domU never configured eth0"
xenlab_note "domU: $(xenlab_domu_line "$name" XENLAB-DOMU-READY)"
ping -c 3 -W 5 10.99.0.2 || xenlab_fail "ping"
xenlab_domu_wait "$name" XENLAB-DOMU-PINGED 30 || xenlab_fail "domU could not ping dom0"
head -c "$bytes" /dev/urandom >/tmp/pvnet-down
down_sum=$(sha256sum /tmp/pvnet-down | cut -d' ' -f1)
xenlab_domu_wait "$name" XENLAB-DOMU-RECEIVED-LISTENING 60 || xenlab_fail "domU not listening on 5001"
down_secs=$(xenlab_tcp_put 10.99.0.2 5001 /tmp/pvnet-down 400) || xenlab_fail "sending to the domU failed"
xenlab_domu_wait "$name" 'XENLAB-DOMU-RECEIVED bytes=' 60 || xenlab_fail "domU reported no receive"
got=$(xenlab_domu_line "$name" 'XENLAB-DOMU-RECEIVED bytes=')
[ "$(xenlab_field sha256 "$got")" = "$down_sum" ] || xenlab_fail "dom0 -> domU: SHA-256 differs"
xenlab_domu_wait "$name" XENLAB-DOMU-SENT-LISTENING 60 || xenlab_fail "domU not listening on 5002"
up_secs=$(xenlab_tcp_get 10.99.0.2 5002 /tmp/pvnet-up 400) || xenlab_fail "receiving from the domU failed"
up_sum=$(sha256sum /tmp/pvnet-up | cut -d' ' -f1)
xenlab_domu_wait "$name" 'XENLAB-DOMU-SENT bytes=' 60 || xenlab_fail "domU reported no send"
sent=$(xenlab_domu_line "$name" 'XENLAB-DOMU-SENT bytes=')
[ "$(xenlab_field sha256 "$sent")" = "$up_sum" ] || xenlab_fail "domU -> dom0: SHA-256 differs"
xenlab_pass "control ok: down $(xenlab_mbps "$bytes" "$down_secs") MB/s, up $(xenlab_mbps "$bytes" "$up_secs") MB/s"
