//! Real kernels: `md-bitmap predict` against what md really does, on file-backed disks, two
//! boots per kernel (6.1 and 6.12).
//!
//! Boot 1 (arrays made with --assume-clean, bitmap chunk 64 KiB, time_base 2 s):
//! - re-add: md2 (raid1 ×2) and md3 (raid5 ×3) lose slot 1 (fail, remove) right after
//!   creation, while mdadm's initial all-set bits are still on disk but not NEEDED; take 8
//!   writes that start and end inside bitmap chunks; `predict --json` (NEEDED read from md's
//!   counters through BPF); the sync is frozen, the member re-added, the stats read, the sync
//!   let go;
//! - member replaced: md2 loses the same member again and a blank disk is added in its place:
//!   `predict --device BLANK` must say full recovery (no md superblock); frozen, added, stats,
//!   let go;
//! - events out of range: md2, whole again, takes writes (end-writes on a non-degraded array
//!   move the bitmap's events_cleared to the array's events), the blank disk is failed and
//!   removed, and the old member, whose superblock events are now below events_cleared, is
//!   offered back: `predict --device OLD` must say full recovery and why; `mdadm --re-add` must
//!   be refused by the kernel (super_1_validate gives the device no role, add_new_disk returns
//!   -EINVAL); `mdadm --add` follows (mdadm 4.2 adds it as a new member; should an mdadm
//!   refuse, the superblock is zeroed and the device added); frozen, stats, let go;
//! - no bitmap: md4 (raid1 ×2, 8 MiB per member) has its bitmap removed (`--grow
//!   --bitmap=none`) and takes writes up to the kill: `predict` must say full resync;
//! - stale bitmap: md5 (raid1 ×2, 4 MiB per member) takes one write after the writers stop,
//!   so it is active (unclean) at the kill;
//! - raid10: md6 (near=2 over 3 members, 64 KiB chunks, time_base 30 s) takes 8 writes after
//!   the writers stop, all completed before `predict` reads its bitmap and the kill (see
//!   `check_raid10`);
//! - degraded raid10: md7 (near=2 over 3 members, created with slot 2 missing, 4 MiB per
//!   member, time_base 30 s) takes 8 writes of 4 chunks each after md6's, completed before
//!   `predict` and the kill (see `check_raid10_degraded`);
//! - crash mid-workload: md0 (raid1 ×2) and md1 (raid5 ×3) sit on dm-delay devices, are clean,
//!   then set to time_base 30 s (no daemon pass can clear a bit before the kill) and
//!   safe_mode_delay 60 s (active, i.e. unclean, at the kill). `md-bitmap watch` runs
//!   throughout. Four writers per array write random direct writes over 1-4 whole bitmap
//!   chunks, starting and ending inside chunks (raid1: chunk = array offset / 64 KiB; raid5 ×3
//!   with 64 KiB chunks: one bitmap chunk = one 128 KiB row of data, whether md starts the
//!   bitmap write per stripe, 6.1, or per bio rounded to whole stripes, 6.12), each logged
//!   before it is issued, first into chunks from [0, 96) until each array had 16 writes; then
//!   the writers move to chunks from [128, 228) and every member gets a 5 s write delay, so
//!   that writes stay in flight for seconds; 3 s later `predict --json`; 3 s later the
//!   writers are stopped (SIGSTOP: no new write starts; the ones issued stay in flight in
//!   dm-delay) and their logs saved; the last `watch` snapshot after the stop is kept; the
//!   guest is killed (sysrq b) about 2 s later, with writes still in flight.
//!
//! Between the boots the host lowers the bitmap superblock `events` of md5's members (the
//! test's own disk images) to one below the md superblock's, as a bitmap md failed to update
//! would be: `md_bitmap_read_sb` marks it `BITMAP_STALE`, `md_bitmap_init_from_disk` sets every
//! bit, and since md5 is not clean (`recovery_cp = 0`, so `md_bitmap_load`'s start is 0) every
//! chunk is NEEDED: a full resync. md must log the bitmap out of date and resync all of each
//! member. md writes the all-set bitmap back at assembly, even read-only, so `predict` on the
//! read-only md5 must cover every chunk; its stale-bitmap rule is checked on the bitmap as md
//! loaded it (inspected before assembly) and must say full, stale bitmap.
//!
//! Boot 2 (same disk files, no dm-delay): every member's bitmap is read with O_DIRECT before
//! anything is assembled (what md_bitmap_init_from_disk will load); md0, md1, md4, md5, md6, md7
//! are assembled read-only-auto (`start_ro`), each member's `/sys/block/*/stat` is read, the arrays
//! are switched to read-write so md resyncs, and the stats are read again once md logs `resync
//! done`. Then md6 goes through a re-add (see `check_raid10`).
//!
//! Asserted per sync and member: sectors read and written (stat deltas) equal the prediction at
//! chunk granularity (within half a bitmap chunk: the only other I/O is md's superblock and
//! bitmap writes, a few KiB); the sync's duration (md's own start and done lines in the kernel
//! log) within ±25 % of the predicted duration with the members otherwise idle (they are, in
//! every sync measured). For the crash mid-workload the bound is that of the writes in flight:
//! - P = the chunks `predict` gave; W = the chunks of every write each writer logged from the
//!   one it had issued when `predict` started (it may have been in flight while predict read
//!   the bitmap) to its stop: every write whose bit may have reached the disk after predict's
//!   read. A bit predict saw stays on disk (no daemon pass can clear it), and a bit that
//!   reaches disk comes from a write md started. md writes a bitmap page to each member
//!   separately, so a bit predict read from one member may still be in flight to another at
//!   the kill (seen on 6.12: a chunk on vdc, not on vdd and vde); that chunk is in W. So on
//!   every member P \ W ⊆ on-disk set ⊆ P ∪ W; md loads the bitmap of one member and resyncs
//!   exactly its set, so the bytes resynced per member lie in [|P \ W|, |P ∪ W|] chunks and
//!   equal one member's on-disk set exactly (raid5 parity writes: at most that, only where
//!   parity mismatches); the duration lies in [0.75 × T(|P \ W|), 1.25 × T(|P ∪ W|)], T
//!   being the prediction's own rate model;
//! - the same from the live mirror's last snapshot after the writers stopped: with D its
//!   dirty (on-disk) chunks and F its chunks with writes in flight, D \ F ⊆ on-disk set ⊆
//!   D ∪ F (a chunk with no write in flight had its bit written before its data).
//!
//! Speed limits are set in the guest (sync_speed_min 100, sync_speed_max 640 KiB/s; 320 for
//! md0 and md1, 4096 for the full recoveries, 1024 for the no-bitmap resync) so that each sync
//! takes several seconds and is throttled by md, not by the emulated disks.
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tests::*;
use xtask::kernels::Series;

const DISK_MIB: u64 = 40;
/// Per-member size of md4, the array whose bitmap is removed, in KiB.
const NO_BITMAP_KIB: u64 = 8192;
/// (array, level, members' disk indices, per-member size in KiB or 0 for the whole disk).
const ARRAYS: &[(&str, u32, &[usize], u64)] = &[
    ("md0", 1, &[0, 1], 0),
    ("md1", 5, &[2, 3, 4], 0),
    ("md2", 1, &[5, 6], 0),
    ("md3", 5, &[7, 8, 9], 0),
    ("md4", 1, &[11, 12], NO_BITMAP_KIB),
    ("md5", 1, &[13, 14], STALE_KIB),
    ("md6", 10, &[15, 16, 17], 0),
];
/// Per-member size of md5, the array whose bitmap is made stale between the boots, in KiB.
const STALE_KIB: u64 = 4096;
/// The blank disk that replaces md2's slot-1 member.
const BLANK: usize = 10;
const DISKS: usize = 20;
/// md7: raid10 near=2 over 3 members created with slot 2 missing, on these two disks, 4 MiB
/// each (an array of 96 bitmap chunks).
const MD7_DISKS: [usize; 2] = [18, 19];
const MD7_KIB: u64 = 4096;
/// Disks 0..DELAYED (md0's and md1's members) sit behind dm-delay devices d0, d1, ...
const DELAYED: usize = 5;
const WRITES: u32 = 8;
const SPEED_MAX: u64 = 640;
const FULL_SPEED_MAX: u64 = 4096;
const NO_BITMAP_SPEED_MAX: u64 = 1024;
const CRASH_SPEED_MAX: u64 = 320;
/// md6's re-add recovery (on 6.1 md paces the member's span up to the last recovered range,
/// about 9.4 MiB here: about 4 s).
const RAID10_READD_SPEED_MAX: u64 = 2048;
/// dm-delay's write delay on md0's and md1's members in the last phase of the workload, ms.
const WRITE_DELAY_MS: u64 = 5000;
/// Writes each of md0 and md1 takes before the writers move on and the write delay starts.
const FAST_WRITES: u32 = 16;
/// Writers per array in the crash workload.
const WRITERS: usize = 4;
/// Each writer picks bitmap chunks in [base, base + SPAN): base 0, then SLOW_BASE.
const SPAN: u64 = 96;
const SLOW_BASE: u64 = 128;
const CHUNK: u64 = 65536;

fn dev(i: usize) -> String {
    format!("vd{}", (b'a' + i as u8) as char)
}

fn members(name: &str) -> Vec<String> {
    ARRAYS
        .iter()
        .find(|a| a.0 == name)
        .unwrap()
        .2
        .iter()
        .map(|&i| dev(i))
        .collect()
}

/// 4 KiB blocks of array data per bitmap chunk: raid1 64 KiB; raid5 ×3 with 64 KiB chunks, a
/// row of two data chunks, which maps to 64 KiB of each member (one bitmap chunk).
fn blocks_per_chunk(name: &str) -> u64 {
    match name {
        "md1" => 32,
        _ => 16,
    }
}

/// sync_speed_max of each array, KiB/s (the crash resyncs cover a few MiB: throttled harder
/// so that they last several seconds).
fn speed_max(name: &str) -> u64 {
    match name {
        "md0" | "md1" | "md6" => CRASH_SPEED_MAX,
        "md4" | "md5" => NO_BITMAP_SPEED_MAX,
        _ => SPEED_MAX,
    }
}

/// Shell helpers common to both boots.
fn helpers() -> String {
    format!(
        "stats() {{ : > /out/stat-$1; for d in $2; do echo \"$d $(cat /sys/block/$d/stat)\" >> /out/stat-$1; done; }}\n\
         mark() {{ echo \"$1 $(cut -d' ' -f1 /proc/uptime)\" >> /out/times; }}\n\
         limits() {{ echo 100 > /sys/block/$1/md/sync_speed_min; echo $2 > /sys/block/$1/md/sync_speed_max; }}\n\
         # waits until md logged '$1: $2 done' $3 times, $2 an extended regex (at most 120 s)\n\
         wait_done() {{ i=0; while [ $(dmesg | grep -cE \"md: $1: ($2) done\") -lt $3 ]; do \
           dmesg | grep -qE \"md: $1: ($2) interrupted\" && {{ echo \"$1 $2 interrupted\"; exit 60; }}; \
           sleep 0.2; i=$((i+1)); [ $i -lt 600 ] || {{ echo \"$1 $2 never done\"; dmesg | grep md | tail -20; exit 61; }}; done; }}\n\
         # $1 array, $2 bytes per write, $3 bytes between writes: {WRITES} writes from 4 KiB past\n\
         # each stride (so that they start and end inside bitmap chunks), all completed on return\n\
         writes() {{ k=0; while [ $k -lt {WRITES} ]; do /usr/local/bin/dd if=/dev/urandom of=/dev/$1 bs=$2 count=1 \
           seek=$((k * $3 + 4096)) oflag=direct,seek_bytes conv=notrunc 2>/dev/null || exit 30; k=$((k+1)); done; }}\n\
         # $1 array, $2 writer number, $3 4 KiB blocks per bitmap chunk: random direct writes over\n\
         # k = 1-4 bitmap chunks [c, c + k), c in [base, base + {SPAN}) (base read from /tmp/base-$1\n\
         # before each write): from block r of chunk c (r < $3 - 3) for (k - 1) chunks and 1-4\n\
         # blocks, so they end inside chunk c + k - 1; logged as 'c k block blocks' before issued\n\
         writer() {{ RANDOM=$(($2 * 7919 + 17)); while :; do read base < /tmp/base-$1; c=$((base + RANDOM % {SPAN})); \
           k=$((RANDOM % 4 + 1)); b=$((c * $3 + RANDOM % ($3 - 3))); n=$(((k - 1) * $3 + RANDOM % 4 + 1)); \
           echo \"$c $k $b $n\" >> /tmp/wl-$1-$2; \
           /usr/local/bin/dd if=/dev/urandom of=/dev/$1 bs=4096 count=$n seek=$b oflag=direct conv=notrunc 2>/dev/null; done; }}\n\
         setbase() {{ echo $2 > /tmp/base.new && mv /tmp/base.new /tmp/base-$1; }}\n"
    )
}

/// `dmsetup` table of dm-delay device `i` over its disk, with `write_ms` of write delay.
fn delay_table(i: usize, write_ms: u64) -> String {
    let d = dev(i);
    if write_ms == 0 {
        format!("\"0 $(blockdev --getsz /dev/{d}) delay /dev/{d} 0 0\"")
    } else {
        format!("\"0 $(blockdev --getsz /dev/{d}) delay /dev/{d} 0 0 /dev/{d} 0 {write_ms}\"")
    }
}

fn boot1() -> String {
    let mut s = helpers();
    for i in 0..DELAYED {
        s += &format!(
            "dmsetup create --noudevsync d{i} --table {} || exit 20\n",
            delay_table(i, 0)
        );
    }
    s += "dmsetup mknodes\n";
    for (name, level, disks, size) in ARRAYS {
        let mut a = ArraySpec::new(*level, disks.len())
            .name(name)
            .bitmap_chunk_kib(64)
            .delay_secs(2);
        if *level == 5 {
            a = a.chunk_kib(64).layout("left-symmetric");
        }
        if *level == 10 {
            a = a.chunk_kib(64).layout("n2");
        }
        if *size > 0 {
            a = a.size_kib(*size);
        }
        let m: Vec<String> = disks
            .iter()
            .map(|&i| {
                if i < DELAYED {
                    format!("/dev/mapper/d{i}")
                } else {
                    format!("/dev/{}", dev(i))
                }
            })
            .collect();
        s += &a.create_script(&m);
    }
    let md7: Vec<String> = MD7_DISKS
        .iter()
        .map(|&i| format!("/dev/{}", dev(i)))
        .chain(["missing".to_string()])
        .collect();
    s += &ArraySpec::new(10, 3)
        .name("md7")
        .bitmap_chunk_kib(64)
        .delay_secs(2)
        .chunk_kib(64)
        .layout("n2")
        .size_kib(MD7_KIB)
        .assume_clean(true)
        .create_script(&md7);
    s += &format!("echo 60 > /sys/block/md7/md/safe_mode_delay; limits md7 {CRASH_SPEED_MAX}\n");
    s += "for d in /sys/block/dm-*; do echo \"$(basename $d) $(cat $d/dm/name)\"; done > /out/dm-map\n";
    s += "mark start\n";
    for (name, ..) in ARRAYS {
        // Stay "active" (dirty superblock) for a minute after the last write, so the kill
        // finds the arrays unclean, as a crash mid-workload would.
        let max = speed_max(name);
        s += &format!("echo 60 > /sys/block/{name}/md/safe_mode_delay; limits {name} {max}\n");
    }
    let (r1, r5) = (members("md2"), members("md3"));
    let all_readd = format!("{} {}", r1.join(" "), r5.join(" "));
    let blank = dev(BLANK);
    // Re-add: fail, remove, write while degraded, predict, re-add.
    s += &format!(
        "mdadm /dev/md2 --fail /dev/{a} >/dev/null && mdadm /dev/md2 --remove /dev/{a} >/dev/null || exit 40\n\
         mdadm /dev/md3 --fail /dev/{b} >/dev/null && mdadm /dev/md3 --remove /dev/{b} >/dev/null || exit 41\n\
         writes md2 786432 3145728 & P1=$!; writes md3 1572864 4718592 & P2=$!; wait $P1 || exit 42; wait $P2 || exit 42\n\
         mark writes-degraded\n\
         md-bitmap predict --json --array md2 --array md3 > /out/pred-readd.json || exit 43\n\
         mark predict-readd\n\
         echo frozen > /sys/block/md2/md/sync_action; echo frozen > /sys/block/md3/md/sync_action\n\
         mdadm /dev/md2 --re-add /dev/{a} >/dev/null || exit 44\n\
         mdadm /dev/md3 --re-add /dev/{b} >/dev/null || exit 44\n\
         stats readd-before \"{all_readd}\"\n\
         echo idle > /sys/block/md2/md/sync_action; echo idle > /sys/block/md3/md/sync_action\n\
         wait_done md2 'recovery|recover' 1; wait_done md3 'recovery|recover' 1\n\
         mark recovered\n\
         stats readd-after \"{all_readd}\"\n",
        a = r1[1],
        b = r5[1],
    );
    // Member replaced: a blank disk added in place of the failed one.
    s += &format!(
        "mdadm /dev/md2 --fail /dev/{a} >/dev/null && mdadm /dev/md2 --remove /dev/{a} >/dev/null || exit 45\n\
         limits md2 {FULL_SPEED_MAX}\n\
         md-bitmap predict --json --no-kernel --array md2 --device /dev/{blank} > /out/pred-full-md2.json || exit 46\n\
         mark predict-full\n\
         echo frozen > /sys/block/md2/md/sync_action\n\
         mdadm /dev/md2 --add /dev/{blank} >/dev/null || exit 47\n\
         stats full-before \"{m0} {blank}\"\n\
         echo idle > /sys/block/md2/md/sync_action\n\
         wait_done md2 'recovery|recover' 2\n\
         mark full-recovered\n\
         stats full-after \"{m0} {blank}\"\n",
        a = r1[1],
        m0 = r1[0],
    );
    // Events out of range: writes on the whole array move events_cleared past the old
    // member's events; the replacement leaves; the old member is offered back.
    s += &format!(
        "writes md2 786432 3145728 || exit 63\n\
         sleep 1\n\
         mdadm /dev/md2 --fail /dev/{blank} >/dev/null && mdadm /dev/md2 --remove /dev/{blank} >/dev/null || exit 64\n\
         EG=$(mdadm -E /dev/{a} | sed -n 's/^ *Events : *//p')\n\
         EC=$(md-bitmap inspect --json /dev/{m0} | sed -n 's/.*\"events_cleared\":\\([0-9]*\\).*/\\1/p')\n\
         echo \"$EG $EC\" > /out/events-old\n\
         md-bitmap predict --json --no-kernel --array md2 --device /dev/{a} > /out/pred-old-md2.json || exit 65\n\
         mark predict-old\n\
         echo frozen > /sys/block/md2/md/sync_action\n\
         mdadm /dev/md2 --re-add /dev/{a} > /out/readd-old.txt 2>&1; echo $? > /out/readd-old.rc\n\
         mdadm /dev/md2 --add /dev/{a} > /out/add-old.txt 2>&1; echo $? > /out/add-old.rc\n\
         if [ \"$(cat /out/add-old.rc)\" != 0 ]; then mdadm --zero-superblock /dev/{a} && mdadm /dev/md2 --add /dev/{a} >/dev/null || exit 66; fi\n\
         stats old-before \"{m0} {a}\"\n\
         echo idle > /sys/block/md2/md/sync_action\n\
         wait_done md2 'recovery|recover' 3\n\
         mark old-recovered\n\
         stats old-after \"{m0} {a}\"\n",
        a = r1[1],
        m0 = r1[0],
    );
    // No bitmap.
    s += "mdadm --grow /dev/md4 --bitmap=none || exit 67\n\
          cat /sys/block/md4/md/bitmap/location > /out/md4-bitmap 2>&1\n";
    // Crash mid-workload.
    s += "mdb_wait_clean md0 60 && mdb_wait_clean md1 60 && mdb_wait_clean md6 60 && mdb_wait_clean md7 60 || { echo 'md0/md1/md6/md7 not clean'; exit 49; }\n\
          echo 30 > /sys/block/md0/md/bitmap/time_base; echo 30 > /sys/block/md1/md/bitmap/time_base\n\
          echo 30 > /sys/block/md6/md/bitmap/time_base; echo 30 > /sys/block/md7/md/bitmap/time_base\n\
          md-bitmap watch --ndjson --array md0 --array md1 --interval 0.5 --ready-file /tmp/wr > /out/watch.ndjson 2>/out/watch.err &\n\
          WA=$!\n\
          i=0; while [ ! -e /tmp/wr ] && [ $i -lt 900 ]; do kill -0 $WA || { cat /out/watch.err; exit 68; }; sleep 0.1; i=$((i+1)); done\n\
          [ -e /tmp/wr ] || { echo 'watch not ready'; exit 69; }\n\
          setbase md0 0; setbase md1 0; setbase md4 0\n\
          W=\"\"\n";
    for w in 0..WRITERS {
        for name in ["md0", "md1"] {
            s += &format!(
                "writer {name} {w} {} & W=\"$W $!\"\n",
                blocks_per_chunk(name)
            );
        }
    }
    // The fast phase lasts until each array has FAST_WRITES writes (at least 2 s, at most 60 s):
    // the writers' pace under emulation varies with the host's load, the dirty set should not.
    s += &format!(
        "writer md4 0 16 & W=\"$W $!\"\n\
         mark workload\n\
         sleep 2; i=0\n\
         while [ $(cat /tmp/wl-md0-* | wc -l) -lt {FAST_WRITES} ] || [ $(cat /tmp/wl-md1-* | wc -l) -lt {FAST_WRITES} ]; do \
           sleep 0.2; i=$((i+1)); [ $i -lt 275 ] || {{ echo 'writers too slow'; exit 57; }}; done\n"
    );
    s += &format!("setbase md0 {SLOW_BASE}; setbase md1 {SLOW_BASE}\n");
    for i in 0..DELAYED {
        s += &format!(
            "dmsetup suspend --noudevsync d{i} && dmsetup reload d{i} --table {} && dmsetup resume --noudevsync d{i} || exit 23\n",
            delay_table(i, WRITE_DELAY_MS)
        );
    }
    s += "mark delay-on\n\
          sleep 3\n\
          for f in /tmp/wl-*; do echo \"${f#/tmp/} $(wc -l < $f)\"; done > /out/counts-p0\n\
          mark predict-crash\n\
          md-bitmap predict --json --array md0 --array md1 --array md4 > /out/pred-crash.json || exit 51\n\
          mark predicted-crash\n\
          sleep 3\n\
          kill -STOP $W\n\
          mark stopped\n\
          writes md6 98304 4194304 || exit 73\n\
          md-bitmap predict --json --no-kernel --measure-mib 0 --sample-secs 0 --array md6 > /out/pred-md6.json || exit 74\n\
          mark predicted-md6\n\
          writes md7 196608 786432 || exit 75\n\
          md-bitmap predict --json --no-kernel --measure-mib 0 --sample-secs 0 --array md7 > /out/pred-md7.json || exit 76\n\
          /usr/local/bin/dd if=/dev/urandom of=/dev/md5 bs=65536 count=1 seek=65536 oflag=direct,seek_bytes conv=notrunc 2>/dev/null || exit 70\n\
          cat /sys/block/md5/md/array_state > /out/md5-state-before-crash\n\
          wc -l < /out/watch.ndjson > /out/watch-lines-at-stop\n\
          cp /tmp/wl-* /out/\n\
          sleep 1.5\n\
          cat /sys/block/md0/md/array_state /sys/block/md1/md/array_state /sys/block/md4/md/array_state /sys/block/md6/md/array_state > /out/state-before-crash\n\
          dmesg > /out/dmesg1\n\
          mark kill\n\
          mdb_crash\n";
    s
}

/// The arrays boot 2 assembles and resyncs.
const RESYNCED: [&str; 5] = ["md0", "md1", "md4", "md5", "md6"];

fn boot2() -> String {
    let mut s = helpers() + "mark start\n";
    let mut all = Vec::new();
    s += "echo 1 > /sys/module/md_mod/parameters/start_ro || exit 52\n";
    // The bitmaps as md will load them, before anything is assembled.
    for name in ["md0", "md1", "md5", "md6"] {
        for d in members(name) {
            s += &format!("md-bitmap inspect --json /dev/{d} > /out/ondisk-{d}.json || exit 56\n");
        }
    }
    for name in RESYNCED {
        let m = members(name);
        let devs: Vec<String> = m.iter().map(|d| format!("/dev/{d}")).collect();
        let max = speed_max(name);
        s += &format!(
            "mdadm --assemble /dev/{name} {} >/dev/null 2>&1 || exit 53\n\
             limits {name} {max}\n\
             cat /sys/block/{name}/md/array_state >> /out/state-assembled\n",
            devs.join(" ")
        );
        all.extend(m);
    }
    let md7: Vec<String> = MD7_DISKS.iter().map(|&i| dev(i)).collect();
    s += &format!(
        "mdadm --assemble /dev/md7 /dev/{} /dev/{} >/dev/null 2>&1 || exit 53\n\
         limits md7 {CRASH_SPEED_MAX}\n",
        md7[0], md7[1]
    );
    all.extend(md7);
    let all = all.join(" ");
    // md5's bitmap was made stale on the host: what md left on disk and what predict says
    // while the array is read-only.
    let m5 = members("md5");
    s += &format!(
        "cat /sys/block/md5/md/resync_start > /out/md5-resync-start\n\
         md-bitmap inspect --json /dev/{a} > /out/assembled-{a}.json || exit 71\n\
         md-bitmap predict --json --no-kernel --measure-mib 0 --sample-secs 0 --array md5 > /out/pred-stale.json || exit 72\n",
        a = m5[0]
    );
    s += &format!(
        "stats crash-before \"{all}\"\n\
         mdadm --readwrite /dev/md0 || exit 54\n\
         mdadm --readwrite /dev/md1 || exit 54\n\
         mdadm --readwrite /dev/md4 || exit 54\n\
         mdadm --readwrite /dev/md5 || exit 54\n\
         mdadm --readwrite /dev/md6 || exit 54\n\
         mdadm --readwrite /dev/md7 || exit 54\n\
         mark readwrite\n\
         sleep 3; mark predict-running\n\
         md-bitmap predict --json --no-kernel --measure-mib 0 --sample-secs 0 --array md0 > /out/pred-running.json || exit 55\n\
         wait_done md0 resync 1; wait_done md1 resync 1; wait_done md4 resync 1; wait_done md5 resync 1; wait_done md6 resync 1; wait_done md7 resync 1\n\
         mark resynced\n\
         stats crash-after \"{all}\"\n"
    );
    // raid10 re-add (see check_raid10): md6 loses slot 1, takes writes, is predicted, gets
    // the member back and recovers it.
    let m6 = members("md6");
    s += &format!(
        "mdadm /dev/md6 --fail /dev/{b} >/dev/null && mdadm /dev/md6 --remove /dev/{b} >/dev/null || exit 80\n\
         limits md6 {RAID10_READD_SPEED_MAX}\n\
         writes md6 98304 2097152 || exit 81\n\
         md-bitmap predict --json --array md6 > /out/pred-readd-md6.json || exit 82\n\
         echo frozen > /sys/block/md6/md/sync_action\n\
         mdadm /dev/md6 --re-add /dev/{b} >/dev/null || exit 83\n\
         stats readd6-before \"{all}\"\n\
         echo idle > /sys/block/md6/md/sync_action\n\
         wait_done md6 'recovery|recover' 1\n\
         stats readd6-after \"{all}\"\n\
         dmesg > /out/dmesg2\n",
        b = m6[1],
        all = m6.join(" "),
    );
    s
}

/// `name -> (sectors read, sectors written)` from a stats file.
fn stats(text: &str) -> BTreeMap<String, (u64, u64)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((
                f.first()?.to_string(),
                (f.get(3)?.parse().ok()?, f.get(7)?.parse().ok()?),
            ))
        })
        .collect()
}

/// Durations of md's syncs of `array` of kind `desc`, in order: from `md: DESC of RAID array
/// ARRAY` to `md: ARRAY: DESC done.` (kernel log timestamps). 6.12 names a recovery `recover`
/// (md_sync_action_name), 6.1 `recovery`.
fn sync_durations(dmesg: &str, array: &str, desc: &str) -> Vec<f64> {
    let desc = if desc == "recovery" && !dmesg.contains("recovery of RAID array") {
        "recover"
    } else {
        desc
    };
    let ts = |l: &str| -> Option<f64> {
        let (a, _) = l.strip_prefix('[')?.split_once(']')?;
        a.trim().parse().ok()
    };
    let start = format!("md: {desc} of RAID array {array}");
    let done = format!("md: {array}: {desc} done");
    let mut out = Vec::new();
    let mut began = None;
    for l in dmesg.lines() {
        if l.ends_with(&start) {
            began = ts(l);
        } else if l.contains(&done)
            && let (Some(b), Some(e)) = (began.take(), ts(l))
        {
            out.push(e - b);
        }
    }
    out
}

struct Check<'a> {
    kernel: &'a str,
    /// The device re-added where the prediction says "(removed member)".
    removed: Option<&'a str>,
    what: &'a str,
    failures: &'a mut Vec<String>,
}

impl Check<'_> {
    /// One sync: prediction `cost` against stat deltas and the measured duration.
    fn sync(
        &mut self,
        cost: &serde_json::Value,
        chunk: u64,
        before: &BTreeMap<String, (u64, u64)>,
        after: &BTreeMap<String, (u64, u64)>,
        measured_secs: Option<f64>,
    ) {
        let mut line = self.io(cost, chunk, before, after);
        // Every sync measured here runs with the members otherwise idle.
        let expected = cost["duration"]["idle_secs"].as_f64().unwrap_or(0.0);
        match measured_secs {
            Some(m) => {
                let err = (m - expected) / expected;
                line += &format!(
                    " | duration {m:.2}s, predicted {expected:.2}s ({:+.0}%)",
                    err * 100.0
                );
                if err.abs() > 0.25 {
                    self.failures.push(format!(
                        "{} {}: duration {m:.2}s vs predicted {expected:.2}s",
                        self.kernel, self.what
                    ));
                }
            }
            None => self.failures.push(format!(
                "{} {}: no sync start/done lines in the kernel log",
                self.kernel, self.what
            )),
        }
        eprintln!("{line}");
    }

    /// A raid10 sync whose duration `predict` gives only before 6.11 (md paces it differently
    /// from 6.11 on): with a duration, [`sync`](Self::sync); without one, the reason must say
    /// so, the I/O is checked alone and the measured duration logged.
    fn raid10_sync(
        &mut self,
        cost: &serde_json::Value,
        chunk: u64,
        before: &BTreeMap<String, (u64, u64)>,
        after: &BTreeMap<String, (u64, u64)>,
        measured_secs: Option<f64>,
    ) {
        if !cost["duration"].is_null() {
            return self.sync(cost, chunk, before, after, measured_secs);
        }
        assert!(
            cost["reason"].as_str().unwrap().contains("from 6.11"),
            "{}: {cost}",
            self.what
        );
        let line = self.io(cost, chunk, before, after);
        eprintln!("{line} | duration {measured_secs:?} s (not predicted)");
    }

    /// A sync's I/O only: prediction `cost` against stat deltas, per member within half a
    /// chunk; returns the log line.
    fn io(
        &mut self,
        cost: &serde_json::Value,
        chunk: u64,
        before: &BTreeMap<String, (u64, u64)>,
        after: &BTreeMap<String, (u64, u64)>,
    ) -> String {
        let tol = chunk / 2;
        let mut line = format!(
            "{} {}: {} {} B/member",
            self.kernel, self.what, cost["kind"], cost["sync_bytes_per_member"]
        );
        for m in cost["members"].as_array().unwrap() {
            let name = match m["name"].as_str().unwrap() {
                md_bitmap::predict::REMOVED_MEMBER => self.removed.unwrap(),
                n => n.trim_start_matches("/dev/"),
            };
            let (b, a) = (before[name], after[name]);
            let (r, w) = ((a.0 - b.0) * 512, (a.1 - b.1) * 512);
            let (pr, pw) = (
                m["read_bytes"].as_u64().unwrap(),
                m["write_bytes"].as_u64().unwrap(),
            );
            line += &format!(" | {name} read {r} (pred {pr}) write {w} (pred {pw})");
            if r.abs_diff(pr) > tol || w.abs_diff(pw) > tol {
                self.failures.push(format!(
                    "{} {}: {name}: measured read {r} write {w}, predicted read {pr} write {pw} (chunk {chunk})",
                    self.kernel, self.what
                ));
            }
        }
        line
    }
}

/// The prediction for `array` in an NDJSON file of predictions.
fn prediction(r: &RunResult, file: &str, array: &str) -> serde_json::Value {
    ndjson(&r.out_file(file).unwrap())
        .into_iter()
        .find(|p| p["array"] == array)
        .unwrap_or_else(|| panic!("{file}: no prediction for {array}"))
}

/// Chunk numbers of `[start, end)` ranges.
fn set_of(ranges: &serde_json::Value) -> BTreeSet<u64> {
    ranges
        .as_array()
        .map(|a| {
            a.iter()
                .flat_map(|r| r[0].as_u64().unwrap()..r[1].as_u64().unwrap())
                .collect()
        })
        .unwrap_or_default()
}

/// Short text for a chunk set.
fn show(s: &BTreeSet<u64>) -> String {
    let v: Vec<String> = s.iter().take(24).map(|c| c.to_string()).collect();
    format!(
        "{} chunks [{}{}]",
        s.len(),
        v.join(","),
        if s.len() > 24 { ",…" } else { "" }
    )
}

/// The window of `array`'s crash workload: the chunks of each writer's logged writes from the
/// one it had issued when `predict` started on, and (writes in that window, writes in all).
fn window(r: &RunResult, array: &str) -> (BTreeSet<u64>, usize, usize) {
    let counts: BTreeMap<String, usize> = r
        .out_file("counts-p0")
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (f, n) = l.split_once(' ')?;
            Some((f.to_string(), n.trim().parse().ok()?))
        })
        .collect();
    let (mut set, mut n, mut total) = (BTreeSet::new(), 0, 0);
    for w in 0..WRITERS {
        let f = format!("wl-{array}-{w}");
        let log = r.out_file(&f).unwrap();
        // Each line: first chunk, chunks, first 4 KiB block, blocks.
        let writes: Vec<(u64, u64, u64, u64)> = log
            .lines()
            .filter_map(|l| {
                let v: Vec<u64> = l
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect();
                (v.len() == 4).then(|| (v[0], v[1], v[2], v[3]))
            })
            .collect();
        let per = blocks_per_chunk(array);
        for &(c, k, b, n) in &writes {
            // The write covers exactly chunks [c, c + k) of the bitmap.
            assert_eq!((b / per, (b + n - 1) / per), (c, c + k - 1), "{f}: {b}+{n}");
        }
        let from = counts.get(&f).copied().unwrap_or(0).saturating_sub(1);
        total += writes.len();
        n += writes.len().saturating_sub(from);
        set.extend(writes.iter().skip(from).flat_map(|w| w.0..w.0 + w.1));
    }
    (set, n, total)
}

/// The live mirror's last snapshot of `array` taken after the writers stopped: (dirty on disk,
/// in flight, crash-now prediction's chunks).
fn last_watch(r: &RunResult, array: &str) -> Option<(BTreeSet<u64>, BTreeSet<u64>, BTreeSet<u64>)> {
    let at_stop: usize = r
        .out_file("watch-lines-at-stop")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let text = r.out_file("watch.ndjson").ok()?;
    // The line being written when the writers stopped was computed before: skip it too.
    text.lines()
        .skip(at_stop + 1)
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "snapshot")
        .filter_map(|v| {
            let a = v["arrays"]
                .as_array()?
                .iter()
                .find(|a| a["name"] == array)?;
            Some((
                set_of(&a["dirty_ranges"]),
                set_of(&a["in_flight_ranges"]),
                set_of(&a["prediction"]["crash_now"]["chunk_ranges"]),
            ))
        })
        .last()
}

/// The crash resync of `name` against the prediction taken mid-workload (see the module doc).
#[allow(clippy::too_many_arguments)]
fn check_crash(
    kernel: &str,
    name: &str,
    level: &str,
    r1: &RunResult,
    r2: &RunResult,
    dmesg2: &str,
    dm_map: &BTreeMap<String, String>,
    failures: &mut Vec<String>,
) {
    let p = prediction(r1, "pred-crash.json", name);
    assert_eq!(p["level"], level);
    assert_eq!(p["bitmap_chunk_bytes"], CHUNK, "{name}");
    let c = &p["crash_now"];
    assert_eq!(c["kind"], "bitmap", "{name}: {c}");
    let pred = set_of(&c["chunk_ranges"]);
    let (win, win_writes, writes) = window(r1, name);
    let upper: BTreeSet<u64> = pred.union(&win).copied().collect();
    let fail =
        |failures: &mut Vec<String>, m: String| failures.push(format!("{kernel} {name}: {m}"));
    // What md loads after the crash, per member.
    let ondisk: Vec<(String, BTreeSet<u64>)> = members(name)
        .into_iter()
        .map(|d| {
            let rec = &ndjson(&r2.out_file(&format!("ondisk-{d}.json")).unwrap())[0];
            assert_eq!(rec["chunk_size_bytes"], CHUNK);
            (d, set_of(&rec["dirty_ranges"]))
        })
        .collect();
    let mut holds_pred = Vec::new();
    for (d, set) in &ondisk {
        if pred.is_subset(set) {
            holds_pred.push(d.as_str());
        }
        let lost: BTreeSet<u64> = pred
            .difference(set)
            .filter(|c| !win.contains(c))
            .copied()
            .collect();
        let extra: BTreeSet<u64> = set.difference(&pred).copied().collect();
        let unexplained: BTreeSet<u64> = extra.difference(&win).copied().collect();
        if !lost.is_empty() {
            fail(
                failures,
                format!(
                    "{d}: predicted chunks with no write after the prediction, not on disk after the crash: {}",
                    show(&lost)
                ),
            );
        }
        if !unexplained.is_empty() {
            fail(
                failures,
                format!(
                    "{d}: chunks on disk after the crash neither predicted nor written after the prediction: {}",
                    show(&unexplained)
                ),
            );
        }
    }
    let first = &ondisk[0].1;
    let extra: BTreeSet<u64> = first.difference(&pred).copied().collect();
    let same = ondisk.iter().all(|(_, s)| s == first);
    // The live mirror's view at its last snapshot after the stop.
    let mut line = format!(
        "{kernel} {name} {level} crash mid-workload: predicted {} | writes {writes}, {win_writes} issued from the prediction to the stop over {} | on disk after the crash on {}: {} chunks ({} beyond the prediction; members {}; the whole prediction on {holds_pred:?}) ",
        show(&pred),
        show(&win),
        ondisk[0].0,
        first.len(),
        extra.len(),
        if same { "agree" } else { "differ" }
    );
    match last_watch(r1, name) {
        Some((dirty, flight, wpred)) => {
            let base: BTreeSet<u64> = dirty.union(&wpred).copied().collect();
            let settled: BTreeSet<u64> = base.difference(&flight).copied().collect();
            let upper_w: BTreeSet<u64> = base.union(&flight).copied().collect();
            line += &format!(
                "| mirror after the stop: dirty {}, in flight {}, crash-now prediction {} chunks",
                dirty.len(),
                show(&flight),
                wpred.len()
            );
            for (d, set) in &ondisk {
                let missing: BTreeSet<u64> = settled.difference(set).copied().collect();
                let beyond: BTreeSet<u64> = set.difference(&upper_w).copied().collect();
                if !missing.is_empty() || !beyond.is_empty() {
                    fail(
                        failures,
                        format!(
                            "{d}: against the mirror's last snapshot: dirty and settled but not on disk {}; on disk but neither dirty nor in flight {}",
                            show(&missing),
                            show(&beyond)
                        ),
                    );
                }
            }
        }
        None => fail(
            failures,
            "no watch snapshot after the writers stopped".into(),
        ),
    }
    // Bytes per member.
    let (b, a) = (
        stats(&r2.out_file("stat-crash-before").unwrap()),
        stats(&r2.out_file("stat-crash-after").unwrap()),
    );
    let tol = CHUNK / 2;
    let settled = pred.difference(&win).count() as u64;
    let (lo, hi) = (settled * CHUNK, upper.len() as u64 * CHUNK);
    let sets: Vec<u64> = ondisk.iter().map(|(_, s)| s.len() as u64 * CHUNK).collect();
    let exact = |x: u64| sets.iter().any(|s| x.abs_diff(*s) <= tol);
    let mut measured_bytes = 0;
    for m in c["members"].as_array().unwrap() {
        let dm = m["name"].as_str().unwrap().trim_start_matches("/dev/");
        let disk = dm_map
            .get(dm)
            .unwrap_or_else(|| panic!("{name}: member {dm} not in the dm map {dm_map:?}"));
        let (bb, aa) = (b[disk.as_str()], a[disk.as_str()]);
        let (r, w) = ((aa.0 - bb.0) * 512, (aa.1 - bb.1) * 512);
        let (pr, pw, pwmax) = (
            m["read_bytes"].as_u64().unwrap(),
            m["write_bytes"].as_u64().unwrap(),
            m["write_bytes_max"].as_u64().unwrap(),
        );
        line += &format!(" | {disk} read {r} write {w} (pred read {pr} write {pw}, max {pwmax})");
        let in_bounds = |x: u64| x + tol >= lo && x <= hi + tol && exact(x);
        if pr > 0 {
            measured_bytes = measured_bytes.max(r);
            if !in_bounds(r) {
                fail(
                    failures,
                    format!(
                        "{disk}: read {r} outside [{lo}, {hi}] or not the on-disk set's {sets:?}"
                    ),
                );
            }
        } else if r > tol {
            fail(failures, format!("{disk}: read {r}, predicted none"));
        }
        if pw > 0 {
            if !in_bounds(w) {
                fail(
                    failures,
                    format!(
                        "{disk}: wrote {w} outside [{lo}, {hi}] or not the on-disk set's {sets:?}"
                    ),
                );
            }
        } else if w > pwmax.max(*sets.iter().max().unwrap()) + tol || (pwmax == 0 && w > tol) {
            fail(
                failures,
                format!("{disk}: wrote {w}, predicted {pw} (at most {pwmax})"),
            );
        }
    }
    // Duration: the prediction's own model on [|P|, |P ∪ W|].
    let dur = &c["duration"];
    let (idle, rate) = (
        dur["idle_secs"].as_f64().unwrap(),
        dur["rate_kibs"].as_f64().unwrap(),
    );
    let model = |bytes: u64| {
        if dur["limited_by"] == "speed_max" {
            md_bitmap::predict::throttled_secs(bytes, rate)
        } else {
            bytes as f64 / 1024.0 / rate
        }
    };
    match sync_durations(dmesg2, name, "resync").first().copied() {
        Some(d) => {
            let (tlo, thi, tact) = (model(lo), model(hi), model(measured_bytes));
            line += &format!(
                " | duration {d:.2}s, predicted {idle:.2}s ({:+.0}%), model on the bytes resynced {tact:.2}s ({:+.0}%), bound [{:.2}, {:.2}]",
                (d - idle) / idle * 100.0,
                (d - tact) / tact * 100.0,
                0.75 * tlo,
                1.25 * thi
            );
            if d < 0.75 * tlo || d > 1.25 * thi {
                fail(
                    failures,
                    format!(
                        "duration {d:.2}s outside [{:.2}, {:.2}]",
                        0.75 * tlo,
                        1.25 * thi
                    ),
                );
            }
        }
        None => fail(
            failures,
            "no resync start/done lines in the kernel log".into(),
        ),
    }
    eprintln!("{line}");
}

fn run(series: Series) {
    let dir = work_dir("predict", series);
    let vm = Vm::new(series, &dir, &[DISK_MIB; DISKS]).unwrap();
    let names = vm.disk_names();
    assert_eq!(names[0], "/dev/vda", "the script names virtio disks");
    let first = Payload::script(boot1()).timeout(Duration::from_secs(600));
    let r1 = vm.run(&first).unwrap();
    assert_eq!(
        r1.outcome,
        Outcome::Crashed,
        "{}: boot 1 did not reach its crash:\n{}",
        r1.release,
        xtask::vm::tail(&r1.console, 60)
    );
    let lowered = make_stale(&dir);
    let second = Payload::script(boot2()).timeout(Duration::from_secs(300));
    let r2 = vm.run(&second).unwrap();
    r2.expect_success().unwrap();
    let kernel = r1.release.clone();
    eprintln!(
        "{kernel}: guest uptime marks, boot 1: {}; boot 2: {}",
        r1.out_file("times").unwrap_or_default().replace('\n', ", "),
        r2.out_file("times").unwrap_or_default().replace('\n', ", ")
    );
    eprintln!(
        "kernel {kernel}: boot 1 {:.1}s (boot {:.1}s), boot 2 {:.1}s",
        r1.total_secs, r1.boot_secs, r2.total_secs
    );
    assert_eq!(
        r1.out_file("state-before-crash")
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["active", "active", "active", "active"],
        "the arrays are unclean when killed"
    );
    assert!(
        r2.out_file("state-assembled")
            .unwrap()
            .lines()
            .all(|l| l == "read-auto"),
        "assembled read-only-auto, so no sync before the baseline"
    );
    // dm-N -> the disk under it (d<i> sits on disk i).
    let dm_map: BTreeMap<String, String> = r1
        .out_file("dm-map")
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (dm, d) = l.split_once(' ')?;
            let i: usize = d.trim().strip_prefix('d')?.parse().ok()?;
            Some((dm.to_string(), dev(i)))
        })
        .collect();
    let dmesg1 = r1.out_file("dmesg1").unwrap();
    let dmesg2 = r2.out_file("dmesg2").unwrap();
    let mut failures = Vec::new();

    // Re-add recovery, raid1 and raid5.
    let (b, a) = (
        stats(&r1.out_file("stat-readd-before").unwrap()),
        stats(&r1.out_file("stat-readd-after").unwrap()),
    );
    for (name, level) in [("md2", "raid1"), ("md3", "raid5")] {
        let p = prediction(&r1, "pred-readd.json", name);
        assert_eq!(p["level"], level);
        let re = &p["re_add"].as_array().unwrap()[0];
        assert_eq!(re["kind"], "bitmap", "{name}: {re}");
        assert_eq!(re["slot"], 1);
        assert!(
            p["assumptions"].as_array().unwrap().iter().any(|a| a
                .as_str()
                .unwrap()
                .contains("md's in-memory counters (bitmap->counts")),
            "{name}: NEEDED read from the kernel: {}",
            p["assumptions"]
        );
        assert!(re["chunks"].as_u64().unwrap() > 0);
        let chunk = p["bitmap_chunk_bytes"].as_u64().unwrap();
        let d = sync_durations(&dmesg1, name, "recovery").first().copied();
        Check {
            kernel: &kernel,
            what: &format!("{name} {level} re-add recovery ({} chunks)", re["chunks"]),
            removed: Some(&members(name)[1]),
            failures: &mut failures,
        }
        .sync(re, chunk, &b, &a, d);
    }

    // Full recovery onto a blank disk that replaces the member.
    let p = prediction(&r1, "pred-full-md2.json", "md2");
    let re = &p["re_add"].as_array().unwrap()[0];
    assert_eq!(re["kind"], "full", "{re}");
    assert!(
        re["reason"].as_str().unwrap().contains("no md superblock"),
        "{re}"
    );
    assert_eq!(re["sync_bytes_per_member"], p["component_bytes"]);
    let d = sync_durations(&dmesg1, "md2", "recovery").get(1).copied();
    Check {
        kernel: &kernel,
        what: "md2 raid1 full recovery (member replaced by a blank disk)",
        removed: None,
        failures: &mut failures,
    }
    .sync(
        re,
        p["bitmap_chunk_bytes"].as_u64().unwrap(),
        &stats(&r1.out_file("stat-full-before").unwrap()),
        &stats(&r1.out_file("stat-full-after").unwrap()),
        d,
    );

    // Full recovery of an old member: events out of range.
    let ev: Vec<u64> = r1
        .out_file("events-old")
        .unwrap()
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    assert_eq!(ev.len(), 2, "events of the old member and events_cleared");
    assert!(
        ev[0] < ev[1],
        "the old member's events {} are below the bitmap's events_cleared {}",
        ev[0],
        ev[1]
    );
    let p = prediction(&r1, "pred-old-md2.json", "md2");
    let re = &p["re_add"].as_array().unwrap()[0];
    assert_eq!(re["kind"], "full", "{re}");
    assert!(
        re["reason"]
            .as_str()
            .unwrap()
            .contains("events out of range"),
        "{re}"
    );
    let readd_rc = r1.out_file("readd-old.rc").unwrap();
    let add_rc = r1.out_file("add-old.rc").unwrap();
    eprintln!(
        "{kernel} md2 old member: events {} < events_cleared {}; mdadm --re-add exit {}: {}; mdadm --add exit {}: {}",
        ev[0],
        ev[1],
        readd_rc.trim(),
        r1.out_file("readd-old.txt").unwrap_or_default().trim(),
        add_rc.trim(),
        r1.out_file("add-old.txt").unwrap_or_default().trim()
    );
    assert_ne!(readd_rc.trim(), "0", "the kernel refused the bitmap re-add");
    let d = sync_durations(&dmesg1, "md2", "recovery").get(2).copied();
    Check {
        kernel: &kernel,
        what: "md2 raid1 full recovery (old member: events out of range)",
        removed: None,
        failures: &mut failures,
    }
    .sync(
        re,
        p["bitmap_chunk_bytes"].as_u64().unwrap(),
        &stats(&r1.out_file("stat-old-before").unwrap()),
        &stats(&r1.out_file("stat-old-after").unwrap()),
        d,
    );

    // Crash mid-workload, raid1 and raid5.
    for (name, level) in [("md0", "raid1"), ("md1", "raid5")] {
        check_crash(
            &kernel,
            name,
            level,
            &r1,
            &r2,
            &dmesg2,
            &dm_map,
            &mut failures,
        );
    }

    // Crash without a bitmap: a full resync.
    assert_eq!(r1.out_file("md4-bitmap").unwrap().trim(), "none");
    let p = prediction(&r1, "pred-crash.json", "md4");
    let c = &p["crash_now"];
    assert_eq!(c["kind"], "full", "{c}");
    assert!(c["reason"].as_str().unwrap().contains("no bitmap"), "{c}");
    assert_eq!(c["sync_bytes_per_member"], NO_BITMAP_KIB * 1024);
    let what = "md4 raid1 crash resync without a bitmap (full)";
    crash_resync(&kernel, "md4", what, c, &r2, &dmesg2, &mut failures, false);

    check_stale(&kernel, &r1, &r2, &dmesg2, &lowered, &mut failures);
    check_raid10(&kernel, &r1, &r2, &dmesg2, &mut failures);
    check_raid10_degraded(&kernel, &r1, &r2, &dmesg2, &mut failures);

    // The running resync (taken 3 s into md0's): what is left by the bitmap, and the ETA from
    // md's sync_speed, against when md logged it done. Reported, not asserted: md's sync_speed
    // divides by whole seconds without the + 1 its throttle uses, so early on it runs high.
    let p = prediction(&r2, "pred-running.json", "md0");
    let run = &p["running"];
    assert!(
        !run.is_null(),
        "{kernel}: md0's resync was over before the running prediction 3 s in"
    );
    let left = run["remaining_bytes"].as_u64().unwrap();
    assert!(run["uses_bitmap"].as_bool().unwrap(), "{run}");
    assert!(
        left <= run["remaining_bytes_naive"].as_u64().unwrap(),
        "{run}"
    );
    let times = r2.out_file("times").unwrap();
    let at = |k: &str| {
        times
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k} ")))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    let done_at = dmesg2
        .lines()
        .find(|l| l.contains("md: md0: resync done"))
        .and_then(|l| {
            l.strip_prefix('[')?
                .split_once(']')?
                .0
                .trim()
                .parse::<f64>()
                .ok()
        });
    eprintln!(
        "{kernel} md0 running resync: {left} B left by the bitmap vs {} B by sync_completed; ETA {:?} s (sync_completed alone {:?} s) at sync_speed {:?} KiB/s; md logged done {:?} s after the prediction started",
        run["remaining_bytes_naive"],
        run["eta_secs"].as_f64(),
        run["eta_naive_secs"].as_f64(),
        run["sync_speed_kibs"].as_u64(),
        done_at.zip(at("predict-running")).map(|(d, p)| d - p)
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    cleanup(&dir);
}

#[test]
fn predictions_match_real_resyncs_and_recoveries_on_6_1() {
    run(Series::V6_1);
}

#[test]
fn predictions_match_real_resyncs_and_recoveries_on_6_12() {
    run(Series::V6_12);
}

/// Between the boots, on the host: lowers the bitmap superblock `events` (u64 LE at byte 24 of
/// bitmap_super_t, after magic, version and uuid) on md5's members' disk images, the test's own scratch files, to one below
/// the md superblock's events, so that `md_bitmap_read_sb` finds the bitmap out of date.
/// Returns (disk, bitmap events before, after, md superblock events) per member.
fn make_stale(dir: &std::path::Path) -> Vec<(String, u64, u64, u64)> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut out = Vec::new();
    for &i in ARRAYS.iter().find(|a| a.0 == "md5").unwrap().2 {
        let path = dir.join(format!("disk{i}.img"));
        let (_, mb) = md_bitmap::ondisk::read_member(&path).unwrap();
        let off = md_bitmap::ondisk::member::bitmap_offset_bytes(&mb.superblock).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut head = [0u8; 32];
        f.seek(SeekFrom::Start(off)).unwrap();
        f.read_exact(&mut head).unwrap();
        assert_eq!(
            u32::from_le_bytes(head[0..4].try_into().unwrap()),
            0x6d74_6962,
            "{}: bitmap magic at {off}",
            path.display()
        );
        let before = u64::from_le_bytes(head[24..32].try_into().unwrap());
        let sb = mb.superblock.events;
        assert!(sb > 0, "md superblock events");
        let lowered = sb - 1;
        f.seek(SeekFrom::Start(off + 24)).unwrap();
        f.write_all(&lowered.to_le_bytes()).unwrap();
        f.sync_all().unwrap();
        let (_, again) = md_bitmap::ondisk::read_member(&path).unwrap();
        assert_eq!(again.bitmap.events, lowered);
        out.push((dev(i), before, lowered, sb));
    }
    out
}

/// md6 (raid10 near=2 over 3 members, 64 KiB RAID and bitmap chunks), crash: 8 writes of
/// 96 KiB, 4 KiB past each 4 MiB of the array, complete before `predict` and the kill, so the crash
/// leaves exactly bitmap chunks 64k and 64k + 1 (k < 8) set (time_base 30 s: no daemon pass
/// clears them first). md's raid10 resync reads every copy of each (`raid10_sync_request`) and
/// rewrites none (the copies agree): per member, the prediction's reads and no writes, within
/// half a chunk; and the duration of 1 MiB of array address space at speed_max.
/// Re-add, after the crash resync in boot 2: slot 1 fails and is removed, 8 writes of 96 KiB
/// 4 KiB past each 2 MiB, `predict` (NEEDED from md's counters), re-add, recovery: the
/// member's copies of the NEEDED chunks written, the other copies read, within half a chunk.
/// Its duration is predicted before 6.11 only: there md paces the member's whole span up to the
/// last recovered range (6.1: 4.1 s at 2048 KiB/s); from 6.11 each skipped range goes through
/// md's end-of-sync path (6.12: 1.3-1.5 s for 0.7 MiB), which is only logged.
fn check_raid10(
    kernel: &str,
    r1: &RunResult,
    r2: &RunResult,
    dmesg2: &str,
    failures: &mut Vec<String>,
) {
    let p = prediction(r1, "pred-md6.json", "md6");
    assert_eq!(p["level"], "raid10");
    assert_eq!(p["bitmap_chunk_bytes"], CHUNK);
    let c = &p["crash_now"];
    assert_eq!(c["kind"], "bitmap", "{c}");
    let want: BTreeSet<u64> = (0..WRITES as u64)
        .flat_map(|k| [64 * k, 64 * k + 1])
        .collect();
    let pred = set_of(&c["chunk_ranges"]);
    if pred != want {
        failures.push(format!(
            "{kernel} md6: predicted chunks {} (want {})",
            show(&pred),
            show(&want)
        ));
    }
    for d in members("md6") {
        let rec = &ndjson(&r2.out_file(&format!("ondisk-{d}.json")).unwrap())[0];
        let on = set_of(&rec["dirty_ranges"]);
        if on != pred {
            failures.push(format!(
                "{kernel} md6: {d} has {} on disk after the crash, predicted {}",
                show(&on),
                show(&pred)
            ));
        }
    }
    let what = "md6 raid10 crash resync";
    crash_resync(kernel, "md6", what, c, r2, dmesg2, failures, false);

    // The re-add in boot 2: the member's copies of the NEEDED chunks, read from the first
    // in-sync copy.
    let p = prediction(r2, "pred-readd-md6.json", "md6");
    let re = &p["re_add"].as_array().unwrap()[0];
    assert_eq!(re["kind"], "bitmap", "md6: {re}");
    assert_eq!(re["slot"], 1);
    let d = sync_durations(dmesg2, "md6", "recovery").first().copied();
    Check {
        kernel,
        what: &format!("md6 raid10 re-add recovery ({} chunks)", re["chunks"]),
        removed: Some(&members("md6")[1]),
        failures,
    }
    .raid10_sync(
        re,
        CHUNK,
        &stats(&r2.out_file("stat-readd6-before").unwrap()),
        &stats(&r2.out_file("stat-readd6-after").unwrap()),
        d,
    );
}

/// md7 (raid10 near=2 over 3 members, slot 2 missing since its creation, 64 KiB RAID and
/// bitmap chunks), crash: 8 writes of 192 KiB, 4 KiB past each 768 KiB, leave bitmap chunks
/// 12k..12k + 4 set. Of these, 12k and 12k + 3 keep both copies and are read on both members;
/// 12k + 1 and 12k + 2 have one copy left and are given up. Before 6.11 md counts the two
/// given up with the read of 12k + 3 toward its pace (2 MiB at speed_max): the prediction gives
/// that duration. From 6.11 each given-up range ends md's resync pass (6.12: 1 MiB took 3.2 s
/// at 320 KiB/s), and the prediction gives no duration. The reads must match on both.
fn check_raid10_degraded(
    kernel: &str,
    r1: &RunResult,
    r2: &RunResult,
    dmesg2: &str,
    failures: &mut Vec<String>,
) {
    let p = prediction(r1, "pred-md7.json", "md7");
    let c = &p["crash_now"];
    assert_eq!(c["kind"], "bitmap", "{c}");
    let want: BTreeSet<u64> = (0..WRITES as u64)
        .flat_map(|k| 12 * k..12 * k + 4)
        .collect();
    let pred = set_of(&c["chunk_ranges"]);
    if pred != want {
        failures.push(format!(
            "{kernel} md7: predicted chunks {} (want {})",
            show(&pred),
            show(&want)
        ));
    }
    assert_eq!(
        c["sync_bytes_per_member"].as_u64(),
        Some(2 * WRITES as u64 * CHUNK),
        "md7: {c}"
    );
    let what = "md7 degraded raid10 crash resync";
    crash_resync(kernel, "md7", what, c, r2, dmesg2, failures, true);
}

/// Check one of boot 2's crash resyncs of `array` (the stat deltas around them all and md's
/// log of this one) against the prediction `cost`; with `raid10_pace`, a duration `predict`
/// gives only before 6.11 ([`Check::raid10_sync`]).
#[allow(clippy::too_many_arguments)]
fn crash_resync(
    kernel: &str,
    array: &str,
    what: &str,
    cost: &serde_json::Value,
    r2: &RunResult,
    dmesg2: &str,
    failures: &mut Vec<String>,
    raid10_pace: bool,
) {
    let d = sync_durations(dmesg2, array, "resync").first().copied();
    let mut check = Check {
        kernel,
        what,
        removed: None,
        failures,
    };
    let sync = if raid10_pace {
        Check::raid10_sync
    } else {
        Check::sync
    };
    sync(
        &mut check,
        cost,
        CHUNK,
        &stats(&r2.out_file("stat-crash-before").unwrap()),
        &stats(&r2.out_file("stat-crash-after").unwrap()),
        d,
    );
}

/// md5: crashed while active, its bitmap made stale on the host. md must log the bitmap out of
/// date and resync every member in full; `predict`, run while md5 is read-only, must say so.
fn check_stale(
    kernel: &str,
    r1: &RunResult,
    r2: &RunResult,
    dmesg2: &str,
    lowered: &[(String, u64, u64, u64)],
    failures: &mut Vec<String>,
) {
    assert_eq!(
        r1.out_file("md5-state-before-crash").unwrap().trim(),
        "active",
        "md5 unclean when killed"
    );
    let m5 = members("md5");
    let before = serde_json::from_str::<serde_json::Value>(
        r2.out_file(&format!("ondisk-{}.json", m5[0]))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let after = serde_json::from_str::<serde_json::Value>(
        r2.out_file(&format!("assembled-{}.json", m5[0]))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let resync_start = r2.out_file("md5-resync-start").unwrap();
    let out_of_date: Vec<&str> = dmesg2
        .lines()
        .filter(|l| l.contains("md5: bitmap file is out of date"))
        .collect();
    eprintln!(
        "{kernel} md5 stale bitmap: lowered on the host {lowered:?} (disk, bitmap events before, after, md events); \
         before assembly {}: bitmap events {} sb events {} dirty {}/{} chunks state {}; \
         assembled read-only: resync_start {}, bitmap events {} dirty {}/{}; kernel: {:?}",
        m5[0],
        before["events"],
        before["superblock"]["events"],
        before["dirty_chunks"],
        before["chunks"],
        before["state"],
        resync_start.trim(),
        after["events"],
        after["dirty_chunks"],
        after["chunks"],
        out_of_date
    );
    assert!(
        before["events"].as_u64().unwrap() < before["superblock"]["events"].as_u64().unwrap(),
        "the bitmap as md loads it is older than the array"
    );
    // With a current bitmap md would resync only the chunks set on disk: fewer than all.
    assert!(
        before["dirty_chunks"].as_u64().unwrap() < before["chunks"].as_u64().unwrap(),
        "md5: every chunk already dirty on disk, the stale bitmap would prove nothing"
    );
    assert_eq!(resync_start.trim(), "0", "md5's superblock says dirty");
    if out_of_date.is_empty() {
        failures.push(format!(
            "{kernel} md5: md did not log the bitmap out of date (md_bitmap_read_sb, md_bitmap_init_from_disk): {out_of_date:?}"
        ));
    }
    // md_bitmap_init_from_disk writes the all-set bitmap back at assembly, read-only or not
    // (seen on 6.1 and 6.12: events raised to the array's, every chunk set), so `predict` on
    // the assembled array reads a current bitmap with every chunk dirty: a bitmap resync of
    // the whole member. The stale rule itself is checked on the bitmap as md loaded it (read
    // before assembly), with md5's sysfs state at the time of the CLI run.
    let chunks = before["chunks"].as_u64().unwrap();
    let p = prediction(r2, "pred-stale.json", "md5");
    let cli = &p["crash_now"];
    eprintln!(
        "{kernel} md5 predict on the assembled read-only array: {} {} chunks {} B/member: {}",
        cli["kind"], cli["chunks"], cli["sync_bytes_per_member"], cli["reason"]
    );
    assert_eq!(
        after["dirty_chunks"].as_u64(),
        Some(chunks),
        "md wrote every bit of the stale bitmap back"
    );
    assert!(
        (cli["kind"] == "bitmap" && cli["chunks"].as_u64() == Some(chunks))
            || cli["kind"] == "full",
        "{cli}"
    );
    assert_eq!(cli["sync_bytes_per_member"], STALE_KIB * 1024);
    let ranges = |v: &serde_json::Value| -> Vec<std::ops::Range<u64>> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r[0].as_u64().unwrap()..r[1].as_u64().unwrap())
            .collect()
    };
    let inp = md_bitmap::predict::Inputs {
        name: "md5".into(),
        level: "raid1".into(),
        raid_disks: 2,
        dev_sectors: STALE_KIB * 2,
        // md5's line of the states read right after assembly (RESYNCED order).
        array_state: r2
            .out_file("state-assembled")
            .unwrap()
            .lines()
            .nth(3)
            .unwrap()
            .into(),
        resync_start: resync_start.trim().parse().ok(),
        members: m5
            .iter()
            .enumerate()
            .map(|(i, n)| md_bitmap::predict::MemberInput {
                name: n.clone(),
                slot: Some(i as u32),
                in_sync: true,
                ..Default::default()
            })
            .collect(),
        bitmap: Some(md_bitmap::predict::BitmapInput {
            chunk_bytes: before["chunk_size_bytes"].as_u64().unwrap(),
            sync_size_sectors: before["sync_size_sectors"].as_u64().unwrap(),
            dirty_on_disk: ranges(&before["dirty_ranges"]),
            needed: None,
            events: before["events"].as_u64().unwrap(),
            events_cleared: before["events_cleared"].as_u64().unwrap(),
        }),
        sb_events: before["superblock"]["events"].as_u64(),
        sync_action: "idle".into(),
        speed_min_kibs: 100,
        speed_max_kibs: NO_BITMAP_SPEED_MAX,
        ..Default::default()
    };
    let c = serde_json::to_value(md_bitmap::predict::predict(&inp).crash_now).unwrap();
    assert_eq!(c["kind"], "full", "{c}");
    assert!(
        c["reason"].as_str().unwrap().contains("stale bitmap"),
        "{c}"
    );
    assert_eq!(c["sync_bytes_per_member"], STALE_KIB * 1024);
    let what = "md5 raid1 crash resync with a stale bitmap (full)";
    crash_resync(kernel, "md5", what, &c, r2, dmesg2, failures, false);
}
