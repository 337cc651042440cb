#!/bin/sh
# md-bitmap test guest: PID 1. Mounts the usual file systems, loads the md/dm/block modules, runs
# /payload/run.sh, saves /out to the output disk as a tar archive and powers off.
/bin/busybox --install -s /bin
export PATH=/usr/local/bin:/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
echo 1 > /proc/sys/kernel/sysrq
echo "@@MDB BOOTED $(uname -r) $(cut -d' ' -f1 /proc/uptime)"
for m in $(cat /payload/modules 2>/dev/null || echo virtio_pci virtio_blk virtio_scsi sd_mod md_mod raid1 raid10 raid456 dm_mod dm_delay dm_flakey brd loop); do
    modprobe "$m" 2>/dev/null
done
. /payload/env
. /lib/mdb.sh
mdb_wait_disks
cd /payload
/bin/sh /payload/run.sh
rc=$?
echo "@@MDB EXIT $rc"
mdb_save_out
sync
poweroff -f
