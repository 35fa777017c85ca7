# Guest role of hv's xen_pair test on /dev/xen/{gntalloc,evtchn,xenbus}.
f=/xenlab/files
if XENLAB_ROLE=domu "$f/ld-linux-x86-64.so.2" --library-path "$f" "$f/xen_pair" \
    --exact guest_and_backend_roles_agree --nocapture --test-threads=1; then
    xenlab_domu_mark PAIR-OK
else
    xenlab_domu_fail "xen_pair guest role failed"
fi
