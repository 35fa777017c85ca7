# xenlab-timeout: 600
# pvnet's netfront in a domU's user space <-> Linux xen-netback in dom0
# dom0 attaches a second vif with xl network-attach (kernel netback, bridge xenbr0);
# the domU has turned off xenbus driver autoprobe, so its kernel xen-netfront leaves
# that vif alone, and netfront's xen_guest example (gntalloc, evtchn, xenbus; smoltcp
# on top) plays the frontend: ping both ways, 50 MiB of TCP each way checked with
# SHA-256, then a clean close the kernel netback follows.
bytes=$((50 << 20))
name=pvnet-netfront-domu
modprobe -a xen-netback bridge || xenlab_fail "modprobe xen-netback bridge"
xenlab_bridge xenbr0 10.99.0.1/24

XENLAB_DOMU_ARGS="xenlab.ip=10.99.0.2/24 xenlab.uip=10.99.0.3/24 xenlab.bytes=$bytes" \
    xenlab_domu_create "$name" "vif = ['mac=00:16:3e:00:00:22,bridge=xenbr0']"
domid=$(xenlab_domid "$name") || xenlab_fail "no domid for $name"
xenlab_domu_wait "$name" XENLAB-DOMU-READY 120 || xenlab_fail "domU never configured eth0"
xenlab_note "domU: $(xenlab_domu_line "$name" XENLAB-DOMU-READY)"

# The second vif: the toolstack writes both directories, the kernel netback probes
# the backend (InitWait) and vif-bridge puts vif<domid>.1 on xenbr0; the frontend
# is left for the domU's user space.
timeout 120 xl network-attach "$name" mac=00:16:3e:00:00:23,bridge=xenbr0 ||
    xenlab_fail "xl network-attach failed"
back=/local/domain/0/backend/vif/$domid/1
front=/local/domain/$domid/device/vif/1
xenlab_domu_wait "$name" 'pvnet-guest: listening' 180 || xenlab_fail "user-space netfront did not connect"
xenlab_xs_wait "$back/state" 4 30 || xenlab_fail "backend state never reached 4"
xenlab_xs_dump "$back"
xenlab_xs_dump "$front"
xenlab_xs_expect "$front/state" 4
xenlab_xs_expect "$front/request-rx-copy" 1
xenlab_xs_expect "$front/feature-rx-notify" 1
xenlab_xs_expect "$front/feature-sg" 1
xenlab_xs_expect "$front/feature-gso-tcpv4" 1
for key in tx-ring-ref rx-ring-ref; do
    xenstore-read "$front/$key" >/dev/null || xenlab_fail "frontend wrote no $key"
done
xenstore-read "$front/event-channel" >/dev/null 2>&1 ||
    { xenstore-read "$front/event-channel-tx" >/dev/null && xenstore-read "$front/event-channel-rx" >/dev/null; } ||
    xenlab_fail "frontend wrote no event channel"
ip -br link show master xenbr0
ip -br link show "vif$domid.1" >/dev/null 2>&1 || xenlab_fail "no vif$domid.1 from the kernel netback"

ping -c 3 -W 5 10.99.0.3 || xenlab_fail "dom0 cannot ping the user-space netfront at 10.99.0.3"
xenlab_domu_wait "$name" 'pvnet-guest: ping 10.99.0.1' 60 || xenlab_fail "user-space netfront did not ping dom0"
pinged=$(xenlab_domu_line "$name" 'pvnet-guest: ping 10.99.0.1')
case $pinged in *" ok:"*) ;; *) xenlab_fail "user-space ping: $pinged" ;; esac

# dom0 -> domU user space
head -c "$bytes" /dev/urandom >/tmp/pvnet-down
down_sum=$(sha256sum /tmp/pvnet-down | cut -d' ' -f1)
down_secs=$(xenlab_tcp_put 10.99.0.3 5001 /tmp/pvnet-down 300) || xenlab_fail "sending to the user-space netfront failed"
xenlab_domu_wait "$name" 'pvnet-guest: received' 60 || xenlab_fail "user-space netfront reported no receive"
got=$(xenlab_domu_line "$name" 'pvnet-guest: received')
xenlab_note "dom0 sent $bytes bytes sha256=$down_sum in ${down_secs}s; domU: ${got#*pvnet-guest: }"
[ "$(xenlab_field bytes "$got")" = "$bytes" ] || xenlab_fail "received $(xenlab_field bytes "$got") of $bytes bytes"
[ "$(xenlab_field sha256 "$got")" = "$down_sum" ] || xenlab_fail "dom0 -> domU: SHA-256 differs"
rm -f /tmp/pvnet-down

# domU user space -> dom0
up_secs=$(xenlab_tcp_get 10.99.0.3 5002 /tmp/pvnet-up 300) || xenlab_fail "receiving from the user-space netfront failed"
up_sum=$(sha256sum /tmp/pvnet-up | cut -d' ' -f1)
up_bytes=$(stat -c %s /tmp/pvnet-up)
xenlab_domu_wait "$name" 'pvnet-guest: sent' 60 || xenlab_fail "user-space netfront reported no send"
sent=$(xenlab_domu_line "$name" 'pvnet-guest: sent')
xenlab_note "dom0 received $up_bytes bytes sha256=$up_sum in ${up_secs}s; domU: ${sent#*pvnet-guest: }"
[ "$up_bytes" = "$bytes" ] || xenlab_fail "dom0 received $up_bytes of $bytes bytes"
[ "$(xenlab_field sha256 "$sent")" = "$up_sum" ] || xenlab_fail "domU -> dom0: SHA-256 differs"
rm -f /tmp/pvnet-up

# The program closes its vif (Closing -> Closed); the kernel netback follows.
xenlab_domu_wait "$name" XENLAB-DOMU-GUEST-OK 60 || xenlab_fail "xen_guest did not finish cleanly"
xenlab_xs_wait "$front/state" 6 10 || xenlab_fail "frontend not Closed after close"
xenlab_xs_wait "$back/state" 6 10 || xenlab_fail "kernel netback did not follow to Closed"
ip -s link show "vif$domid.1"
xenlab_pass "pvnet netfront (domU user space) <-> Linux netback: ping both ways, $bytes bytes each way byte-exact, closed" \
    "(TCG, not a performance figure: down $(xenlab_mbps "$bytes" "$down_secs") MB/s, up $(xenlab_mbps "$bytes" "$up_secs") MB/s)"
