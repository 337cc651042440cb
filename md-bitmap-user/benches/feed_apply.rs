//! The agent's per-event path on the host: ring-buffer records of a raid1 write stream, decoded
//! (`FeedEvent::decode`) and applied in batches (`Mirror::apply_batch`, what `Agent::poll` runs
//! after draining the ring), with the lag recorded per event.
//!
//! The stream is what the eBPF programs emit for `tests/tests/kernel_overhead.rs`'s workload on
//! 6.12 (4 KiB O_DIRECT writes, one at a time, sequential over a raid1 with 64 KiB bitmap
//! chunks): per write, the array bio's `block_bio_queue`, md's start-write and unplug, its
//! end-write and the bio's `block_bio_complete` (5 records). Batches of [`BATCH`] records, as
//! the agent drains them.
//!
//! Prints ns per record (best of [`RUNS`], thread CPU time). For instruction counts per record
//! run it under callgrind: `valgrind --tool=callgrind target/release/deps/feed_apply-*`.

use std::collections::VecDeque;
use std::hint::black_box;

use md_bitmap::engine::{BitmapGeometry, KernelVariant};
use md_bitmap::feed::FeedEvent;
use md_bitmap::feed::record::DevNum;
use md_bitmap::feed::symbols::{BitmapAbi, WriteArgs};
use md_bitmap::mirror::{Mirror, MirrorArray};
use md_bitmap::sysfs::{ArrayInfo, BitmapInfo};
use md_bitmap_common::{Record, RecordKind, kernel_dev};

/// Writes per run.
const WRITES: u64 = 200_000;
/// Records per applied batch.
const BATCH: usize = 1000;
/// Timed runs (the best is printed).
const RUNS: usize = 5;
const MDDEV: u64 = 0xffff_8880_0123_4000;

fn info() -> ArrayInfo {
    ArrayInfo {
        name: "md0".into(),
        dev: DevNum { major: 9, minor: 0 },
        level: "raid1".into(),
        layout: 0,
        chunk_size_bytes: 0,
        raid_disks: 2,
        component_size_kib: 64 << 10,
        array_sectors: 128 << 10,
        metadata_version: "1.2".into(),
        array_state: "active".into(),
        degraded: 0,
        sync_action: "idle".into(),
        sync_completed: None,
        sync_speed_kibs: None,
        sync_speed_min_kibs: None,
        sync_speed_max_kibs: None,
        resync_start_sectors: None,
        safe_mode_delay_secs: None,
        uuid: None,
        bitmap: Some(BitmapInfo {
            location: "+8".into(),
            chunk_size_bytes: 65536,
            time_base_secs: 60.0,
            metadata: "internal".into(),
            backlog: 0,
            can_clear: Some(true),
            space_sectors: 0,
            max_backlog_used: 0,
        }),
        members: vec![],
    }
}

fn abi() -> BitmapAbi {
    BitmapAbi {
        start_write: "md_bitmap_startwrite".into(),
        end_write: "md_bitmap_endwrite".into(),
        start_sync: None,
        end_sync: None,
        close_sync: None,
        cond_end_sync: None,
        daemon_work: None,
        unplug: Some("md_bitmap_unplug".into()),
        update_sb: None,
        write_args: WriteArgs::SuccessBehind,
        first_arg_is_mddev: true,
    }
}

fn mirror() -> Mirror {
    let mut a = MirrorArray::new(info());
    a.mddev = Some(MDDEV);
    let geo = BitmapGeometry::new(65536, 128 << 10).unwrap();
    a.seed(KernelVariant::V6_12, geo, &[], 1, 1, None);
    let mut m = Mirror::default();
    m.insert(a);
    m
}

/// The records of `WRITES` sequential 4 KiB writes (wrapping over the array).
fn records() -> Vec<Record> {
    let dev = kernel_dev(9, 0);
    let mut out = Vec::with_capacity(WRITES as usize * 5);
    let mut ts = 1_000_000_000u64;
    let mut rec = |kind: RecordKind, dev: u32, args: [u64; 5], ts: u64| {
        out.push(Record {
            kind: kind as u32,
            cpu: 0,
            ts_ns: ts,
            dev,
            tid: 1234,
            jiffies: ts / 4_000_000,
            args,
        })
    };
    for i in 0..WRITES {
        let sector = (i * 8) % (128 << 10);
        let bio = 0xffff_8880_0200_0000 + (i % 64) * 0x100;
        let opf = 1 | (1 << 11);
        rec(RecordKind::BioQueue, dev, [sector, 8, opf, 0, bio], ts);
        rec(
            RecordKind::StartWrite,
            0,
            [MDDEV, sector, 8, 0, 0],
            ts + 500,
        );
        rec(RecordKind::Unplug, 0, [MDDEV, 0, 0, 0, 0], ts + 1000);
        rec(RecordKind::EndWrite, 1, [MDDEV, sector, 8, 1, 0], ts + 8000);
        rec(
            RecordKind::BioComplete,
            dev,
            [sector, 8, opf, 0, bio],
            ts + 8500,
        );
        ts += 20_000;
    }
    out
}

fn thread_cpu_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// One run: decode and apply every record in batches, as the agent does; returns the lag
/// histogram's count, so that nothing is optimised away.
fn run(recs: &[Record], abi: &BitmapAbi) -> u64 {
    let mut m = mirror();
    let mut backlog = VecDeque::with_capacity(BATCH);
    let mut now = 0;
    for batch in recs.chunks(BATCH) {
        for r in batch {
            if let Some(ev) = FeedEvent::decode(r, abi) {
                backlog.push_back(ev);
            }
        }
        now = batch.last().unwrap().ts_ns + 1_000_000;
        m.apply_batch(&mut backlog, None, || now);
    }
    let a = &m.arrays["md0"];
    assert_eq!(
        a.health.events,
        3 * WRITES,
        "every start-write, unplug and end-write applied"
    );
    assert!(a.oldest_pending_write_ns().is_none() && a.oldest_pending_bio_ns().is_none());
    black_box(now) + a.lag_quantile_us(0.5).unwrap_or(0)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs one quick pass.
    let quick = !std::env::args().any(|a| a == "--bench");
    let recs = records();
    let abi = abi();
    let runs = if quick { 1 } else { RUNS };
    let mut best = u64::MAX;
    for _ in 0..runs {
        let t0 = thread_cpu_ns();
        black_box(run(black_box(&recs), &abi));
        best = best.min(thread_cpu_ns() - t0);
    }
    println!(
        "feed_apply: {} records ({WRITES} raid1 writes, 5 records each) in batches of {BATCH}: {:.1} ns per record (best of {runs}, thread CPU time)",
        recs.len(),
        best as f64 / recs.len() as f64
    );
}
