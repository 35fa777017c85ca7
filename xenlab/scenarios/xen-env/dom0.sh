# xenlab-timeout: 300
# hv::xen on real Xen: hv's xen_pair test runs its guest role in a PV domU
# (XenGuestEnv: gntalloc, evtchn, xenbus) and its backend role in dom0
# (XenBackendEnv: gntdev, evtchn, xenbus): grants, mapping, batched grant copy,
# event channels both ways, watches and a transaction, all through Linux's devices.
[ -x "$XENLAB_SCENARIO_DIR/files/xen_pair" ] || xenlab_fail "no xen_pair binary (prepare step)"
xenlab_domu_create xen-env-domu
domid=$(xenlab_domid xen-env-domu) || xenlab_fail "no domid"
xenlab_note "guest is domain $domid; running the backend role"
if XENLAB_ROLE=dom0 XENLAB_GUEST=$domid timeout 120 xen_pair --exact guest_and_backend_roles_agree \
    --nocapture --test-threads=1; then
    xenlab_note "backend role passed"
else
    xenlab_fail "backend role of xen_pair failed in dom0"
fi
xenlab_domu_wait xen-env-domu XENLAB-DOMU-PAIR-OK 60 || xenlab_fail "guest role did not pass in the domU"
xenlab_xs_dump "/local/domain/$domid/data"
xenlab_pass "XenGuestEnv in a domU <-> XenBackendEnv in dom0"
