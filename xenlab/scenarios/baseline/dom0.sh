# xenlab-timeout: 300
# Baseline: Linux's own drivers on both ends. dom0's kernel xen-netback serves a vif on
# bridge xenbr0; the domU's kernel xen-netfront takes 10.99.0.2 and dom0 pings it.
modprobe -a xen-netback bridge || xenlab_fail "modprobe xen-netback bridge"
xenlab_bridge xenbr0 10.99.0.1/24

XENLAB_DOMU_ARGS="xenlab.ip=10.99.0.2/24" \
    xenlab_domu_create baseline-domu "vif = ['mac=00:16:3e:00:00:02,bridge=xenbr0']"
domid=$(xenlab_domid baseline-domu) || xenlab_fail "no domid for baseline-domu"
back=/local/domain/0/backend/vif/$domid/0
front=/local/domain/$domid/device/vif/0

xenlab_domu_wait baseline-domu XENLAB-DOMU-READY 120 || xenlab_fail "domU never configured eth0"
# XenbusStateConnected (4) on both ends, with the keys netfront must have written.
xenlab_xs_wait "$back/state" 4 30 || xenlab_fail "backend state never reached 4"
xenlab_xs_dump "$back"
xenlab_xs_dump "$front"
xenlab_xs_expect "$front/state" 4
xenlab_xs_expect "$front/request-rx-copy" 1
for key in tx-ring-ref rx-ring-ref; do
    xenstore-read "$front/$key" >/dev/null || xenlab_fail "frontend wrote no $key"
done
# One channel, or split TX/RX channels when the backend offers
# feature-split-event-channels (Linux's netback does).
xenstore-read "$front/event-channel" >/dev/null 2>&1 ||
    { xenstore-read "$front/event-channel-tx" >/dev/null && xenstore-read "$front/event-channel-rx" >/dev/null; } ||
    xenlab_fail "frontend wrote no event channel"

ip -br link show master xenbr0
ping -c 3 -W 5 10.99.0.2 || xenlab_fail "dom0 cannot ping the domU at 10.99.0.2"
xenlab_domu_wait baseline-domu XENLAB-DOMU-PINGED 30 || xenlab_fail "domU could not ping dom0"
xenlab_pass "kernel netback <-> kernel netfront: ping both ways"
