# xenlab-timeout: 720
# pvnet's netback in dom0 user space <-> Linux xen-netfront in a domU
# pvnet-netback-xen serves the vif xl creates (no-op hotplug script, no kernel
# xen-netback): rings mapped through gntdev, channels through evtchn, frames to a TAP
# on bridge xenbr0. The 2-vCPU domU's xen-netfront must negotiate SG, GSO, checksum
# offload and 2 queues; ping both ways; 50 MiB of TCP each way checked with SHA-256.
bytes=$((50 << 20))
mac=00:16:3e:00:00:12
name=pvnet-netback-domu
# The kernel's backend would claim the vif too: unload it if an earlier scenario
# loaded it (its vifs are gone with their domUs).
if lsmod | grep -q '^xen_netback'; then
    rmmod xen_netback || xenlab_fail "the kernel's xen-netback is loaded and cannot be unloaded"
fi
modprobe -a bridge tun || xenlab_fail "modprobe bridge tun"
xenlab_bridge xenbr0 10.99.0.1/24

stop=$XENLAB_RUN/pvnet-netback.stop log=$XENLAB_RUN/pvnet-netback.log
rm -f "$stop"
pvnet-netback-xen --bridge xenbr0 --max-queues 2 --busy-poll 0 --status-every 20 \
    --stop-file "$stop" >"$log" 2>&1 &
nbpid=$!
stop_netback() {
    touch "$stop"
    for _ in $(seq 50); do kill -0 "$nbpid" 2>/dev/null || break; sleep 0.2; done
    kill "$nbpid" 2>/dev/null
    echo "== pvnet-netback-xen output"
    cat "$log"
}
trap stop_netback EXIT
for _ in $(seq 50); do grep -q 'serving' "$log" && break; sleep 0.2; done
grep -q 'serving' "$log" || xenlab_fail "pvnet-netback-xen did not start: $(tail -3 "$log")"
xenlab_note "$(grep serving "$log")"

# The hotplug script is a no-op: pvnet's netback makes and bridges the TAP itself.
XENLAB_DOMU_VCPUS=2 XENLAB_DOMU_ARGS="xenlab.ip=10.99.0.2/24 xenlab.bytes=$bytes" \
    xenlab_domu_create "$name" \
    "vif = ['mac=$mac,script=$XENLAB_SCENARIO_DIR/files/pvnet-noop-hotplug']"
domid=$(xenlab_domid "$name") || xenlab_fail "no domid for $name"
back=/local/domain/0/backend/vif/$domid/0
front=/local/domain/$domid/device/vif/0

xenlab_domu_wait "$name" XENLAB-DOMU-READY 120 || xenlab_fail "domU never configured eth0"
xenlab_xs_wait "$back/state" 4 30 || xenlab_fail "backend state never reached 4"
xenlab_xs_dump "$back"
xenlab_xs_dump "$front"
xenlab_xs_expect "$front/state" 4
xenlab_xs_expect "$front/request-rx-copy" 1
# What Linux's netfront took of pvnet's offers.
for key in feature-sg feature-gso-tcpv4 feature-rx-notify; do
    xenlab_xs_expect "$front/$key" 1
done
[ "$(xenstore-read "$front/feature-no-csum-offload" 2>/dev/null || echo 0)" = 0 ] ||
    xenlab_fail "the frontend turned checksum offload off"
xenlab_xs_expect "$front/multi-queue-num-queues" 2
for q in 0 1; do
    for key in tx-ring-ref rx-ring-ref event-channel-tx event-channel-rx; do
        xenstore-read "$front/queue-$q/$key" >/dev/null || xenlab_fail "frontend wrote no queue-$q/$key"
    done
done
ready=$(xenlab_domu_line "$name" XENLAB-DOMU-READY)
xenlab_note "domU: $ready"
case $ready in *queues=rx-0,rx-1,tx-0,tx-1,*) ;; *) xenlab_fail "domU eth0 does not have 2 queues: $ready" ;; esac
ip -br link show master xenbr0
ip -br link show "vif$domid.0" >/dev/null 2>&1 || xenlab_fail "no TAP vif$domid.0"

ping -c 3 -W 5 10.99.0.2 || xenlab_fail "dom0 cannot ping the domU at 10.99.0.2"
xenlab_domu_wait "$name" XENLAB-DOMU-PINGED 30 || xenlab_fail "domU could not ping dom0"

# dom0 -> domU
head -c "$bytes" /dev/urandom >/tmp/pvnet-down
down_sum=$(sha256sum /tmp/pvnet-down | cut -d' ' -f1)
xenlab_domu_wait "$name" XENLAB-DOMU-RECEIVED-LISTENING 60 || xenlab_fail "domU not listening on 5001"
down_secs=$(xenlab_tcp_put 10.99.0.2 5001 /tmp/pvnet-down 300) || xenlab_fail "sending to the domU failed"
xenlab_domu_wait "$name" 'XENLAB-DOMU-RECEIVED bytes=' 60 || xenlab_fail "domU reported no receive"
got=$(xenlab_domu_line "$name" 'XENLAB-DOMU-RECEIVED bytes=')
xenlab_note "dom0 sent $bytes bytes sha256=$down_sum in ${down_secs}s; domU: ${got#XENLAB-DOMU-}"
[ "$(xenlab_field bytes "$got")" = "$bytes" ] || xenlab_fail "domU received $(xenlab_field bytes "$got") of $bytes bytes"
[ "$(xenlab_field sha256 "$got")" = "$down_sum" ] || xenlab_fail "dom0 -> domU: SHA-256 differs"
rm -f /tmp/pvnet-down

# domU -> dom0
xenlab_domu_wait "$name" XENLAB-DOMU-SENT-LISTENING 60 || xenlab_fail "domU not listening on 5002"
up_secs=$(xenlab_tcp_get 10.99.0.2 5002 /tmp/pvnet-up 300) || xenlab_fail "receiving from the domU failed"
up_sum=$(sha256sum /tmp/pvnet-up | cut -d' ' -f1)
up_bytes=$(stat -c %s /tmp/pvnet-up)
xenlab_domu_wait "$name" 'XENLAB-DOMU-SENT bytes=' 60 || xenlab_fail "domU reported no send"
sent=$(xenlab_domu_line "$name" 'XENLAB-DOMU-SENT bytes=')
xenlab_note "dom0 received $up_bytes bytes sha256=$up_sum in ${up_secs}s; domU: ${sent#XENLAB-DOMU-}"
[ "$up_bytes" = "$bytes" ] || xenlab_fail "dom0 received $up_bytes of $bytes bytes"
[ "$(xenlab_field sha256 "$sent")" = "$up_sum" ] || xenlab_fail "domU -> dom0: SHA-256 differs"
rm -f /tmp/pvnet-up

ip -s link show "vif$domid.0"
grep -q 'disabled=' "$log" && xenlab_fail "pvnet netback disabled the vif: $(grep -m1 'disabled=' "$log")"
xenlab_pass "pvnet netback <-> Linux netfront: 2 queues, SG/GSO/csum, ping both ways, $bytes bytes each way byte-exact" \
    "(TCG, not a performance figure: down $(xenlab_mbps "$bytes" "$down_secs") MB/s, up $(xenlab_mbps "$bytes" "$up_secs") MB/s)"
