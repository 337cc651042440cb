# Shell helpers for md-bitmap's test payloads (sourced by /init before /payload/run.sh).
# Set by the host in /payload/env: MDB_DISKS (the data disks, space separated), MDB_OUT (the output
# disk or empty).

# Waits until every data disk's node exists. On virtio-scsi, first links /dev/mdbdiskN to the
# disk at SCSI target N (sd names follow probe order, not target order).
mdb_wait_disks() {
    if [ "$MDB_BUS" = scsi ]; then
        want=$(echo $MDB_DISKS | wc -w)
        i=0
        while [ $(ls -d /sys/class/scsi_disk/* 2>/dev/null | wc -l) -lt $want ] && [ $i -lt 300 ]; do
            sleep 0.1; i=$((i + 1))
        done
        for sd in /sys/block/sd*; do
            t=$(ls $sd/device/scsi_device 2>/dev/null | cut -d: -f3)
            [ -n "$t" ] && ln -sf /dev/$(basename $sd) /dev/mdbdisk$t
        done
    fi
    for d in $MDB_DISKS $MDB_OUT; do
        i=0
        while [ ! -b "$d" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    done
}

# Writes /out as a tar archive onto the output disk (the host unpacks it after the run).
mdb_save_out() {
    [ -n "$MDB_OUT" ] || return 0
    tar -cf /tmp/out.tar -C /out . && dd if=/tmp/out.tar of="$MDB_OUT" bs=1M conv=fsync 2>/dev/null
    sync
}

# Crashes the guest as a power cut would: no md flush, no unmount. Saves /out first.
mdb_crash() {
    mdb_save_out
    echo "@@MDB CRASHING"
    # Let the serial console drain the marker before the reset.
    sleep 1
    echo b > /proc/sysrq-trigger
    sleep 10
}

# Prints a line the host test collects: mdb_result KEY VALUE...
mdb_result() {
    echo "@@MDB RESULT $*"
}

# Waits until md has no resync/recovery running on array $1 (e.g. md0).
mdb_wait_sync() {
    while grep -qE 'resync|recover' /sys/block/$1/md/sync_action 2>/dev/null &&
        ! grep -q idle /sys/block/$1/md/sync_action; do
        sleep 0.2
    done
}

# Waits until the array's bitmap has no dirty bits on disk (per member, via mdadm -X), at most $2 s.
mdb_wait_clean() {
    t=0
    while [ $t -lt $(( ${2:-30} * 5 )) ]; do
        dirty=0
        for m in $(ls /sys/block/$1/md | sed -n 's/^dev-//p'); do
            n=$(mdadm -X /dev/$m 2>/dev/null | sed -n -e 's/.*Bitmap.* \([0-9]*\) dirty.*/\1/p')
            [ "${n:-0}" != 0 ] && dirty=1
        done
        [ $dirty = 0 ] && return 0
        sleep 0.2
        t=$((t + 1))
    done
    return 1
}
