//! Chunk-size tuning speed: replay a synthetic 10 M-write trace under 12 chunk sizes (4 KiB …
//! 8 MiB) and print the throughput in writes × sizes per second.
//!
//! `cargo bench -p md-bitmap-user --bench tune` (`TUNE_BENCH_WRITES=N` for another trace
//! length, `TUNE_BENCH_SIZES=4096,8192` for some chunk sizes only, `TUNE_BENCH_PER_SIZE=1` to
//! also replay each size alone and print its wall and CPU time).
//! Beside it, the same run measures a floor ([`counter_floor`]): for every size, on the same
//! threads, plain `u16` increments and decrements of the chunks of every start- and end-write
//! call in the replay's order, and nothing else; the replay's share of that speed says how
//! much of its time is the model beyond the bare counters. Measured 2026-11-27 (AMD EPYC, 2
//! shared cores): replay 40.5-41.4 M writes x sizes/s, floor 113-125 M/s. An experiment with
//! the writes as a flat array of (sector, length) and each end 100 writes after its start (the
//! trace's 1 ms latency), without the replay's step list, reached 146-160 M/s for the same
//! counters; all 12 sizes in one pass over that array were slower (124-127 M/s: the small
//! sizes' counters evict each other).
//! The trace: a 64 GiB raid1, 10 µs between writes (100 s), 4–64 KiB writes, 70 % in
//! sequential streams and 30 % random, 1 ms latency, the md thread waking into the daemon
//! every 5 s.
#[path = "common/xorshift.rs"]
mod xorshift;
use std::time::Instant;
use xorshift::XorShift;

use md_bitmap::trace::{Trace, TraceEvent, TraceHeader, TraceLoss};
use md_bitmap::tune::{DaemonMode, ReplayInput, ReplayOptions, counter_floor, replay, replay_all};
use rayon::prelude::*;

fn header() -> TraceHeader {
    TraceHeader {
        array: "bench".into(),
        level: "raid1".into(),
        layout: 0,
        raid_disks: 2,
        chunk_size_bytes: 0,
        component_size_kib: 64 << 20,
        array_sectors: 128 << 20,
        bitmap_chunk_bytes: 64 << 20,
        bitmap_sync_sectors: 128 << 20,
        bitmap_space_sectors: 0,
        bitmap_location: "+8".into(),
        daemon_sleep_secs: 5.0,
        active_members: 2,
        sync_speed_max_kibs: None,
        kernel_release: "bench".into(),
        kernel_variant: "6.12".into(),
        accounting: "per-bio".into(),
        initial_dirty: vec![],
        initial_events: (1, 1),
        start_ns: 0,
        daemon_lastrun_jiffies: None,
        initial_array_state: None,
    }
}

fn synthetic(n: u64) -> Trace {
    let mut rng = XorShift::new();
    let mut next = || rng.next_u64();
    let sectors_total = 128u64 << 20;
    let mut streams = [0u64; 8];
    for s in &mut streams {
        *s = next() % sectors_total;
    }
    let mut events = Vec::with_capacity(n as usize + n as usize / 500_000 + 2);
    let mut t = 1_000u64;
    let mut next_daemon = 0u64;
    for _ in 0..n {
        t += 10_000;
        while next_daemon <= t {
            events.push(TraceEvent::Daemon {
                t_ns: next_daemon,
                jiffies: 1_000_000 + next_daemon / 4_000_000,
            });
            next_daemon += 5_000_000_000;
        }
        let r = next();
        let len = 8 << (r % 4); // 4, 8, 16, 32 KiB
        let sector = if r % 10 < 7 {
            let s = &mut streams[(r >> 8) as usize % streams.len()];
            let v = *s;
            *s = (*s + len) % (sectors_total - 64);
            v
        } else {
            (next() % (sectors_total - 64)) & !7
        };
        events.push(TraceEvent::Write {
            t_ns: t,
            sector,
            sectors: len,
            latency_ns: Some(1_000_000),
        });
    }
    Trace {
        header: header(),
        events,
        blocks: 0,
        loss: TraceLoss::default(),
    }
}

/// CPU time consumed by this process so far (every thread).
fn process_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes one timespec through the valid, exclusive pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID) failed");
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn main() {
    let n: u64 = std::env::var("TUNE_BENCH_WRITES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000_000);
    // `TUNE_BENCH_SIZES=4096,8192` replays only those sizes (to profile one of them).
    let sizes: Vec<u64> = match std::env::var("TUNE_BENCH_SIZES") {
        Ok(s) => s
            .split(',')
            .map(|x| x.trim().parse().expect("TUNE_BENCH_SIZES: sizes in bytes"))
            .collect(),
        Err(_) => (12..24).map(|s| 1u64 << s).collect(),
    };
    let t0 = Instant::now();
    let trace = synthetic(n);
    let input = ReplayInput::new(&trace).expect("valid trace");
    drop(trace);
    let prep = t0.elapsed().as_secs_f64();
    let opts = ReplayOptions {
        daemon: DaemonMode::Recorded,
        resync_bytes_per_sec: 200e6,
    };
    let (t1, cpu1) = (Instant::now(), process_cpu());
    let res = replay_all(&input, &sizes, &opts, None).expect("replay");
    let secs = t1.elapsed().as_secs_f64();
    let cpu = process_cpu() - cpu1;
    let rate = n as f64 * sizes.len() as f64 / secs;
    println!(
        "tune bench: {n} writes x {} chunk sizes on {} threads: replay {secs:.2} s = {:.1} M writes x sizes/s (trace mapping {prep:.2} s once)",
        sizes.len(),
        rayon::current_num_threads(),
        rate / 1e6
    );
    // On a shared machine the wall time includes waiting for a core: the CPU time says how
    // much of the two cores the replay actually got.
    println!(
        "  CPU time {cpu:.2} s ({:.2} cores busy on average): {:.1} M writes x sizes per CPU-second",
        cpu / secs,
        n as f64 * sizes.len() as f64 / cpu / 1e6
    );
    // The floor: best of three runs (wall time, as the replay's figure).
    let mut floor_secs = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let sum: u64 = sizes
            .par_iter()
            .map(|&c| counter_floor(&input, c).expect("floor"))
            .sum();
        std::hint::black_box(sum);
        floor_secs = floor_secs.min(t.elapsed().as_secs_f64());
    }
    let floor_rate = n as f64 * sizes.len() as f64 / floor_secs;
    println!(
        "  floor (plain u16 counters of the same calls, same threads): {floor_secs:.2} s = {:.1} M writes x sizes/s; replay/floor {:.2}",
        floor_rate / 1e6,
        rate / floor_rate
    );
    if std::env::var_os("TUNE_BENCH_PER_SIZE").is_some() {
        // Each size alone on one thread: where the time goes.
        for &c in &sizes {
            let (t, cpu) = (Instant::now(), process_cpu());
            let r = replay(&input, c, &opts).expect("replay");
            let (wall, cpu) = (t.elapsed().as_secs_f64(), process_cpu() - cpu);
            let fcpu = process_cpu();
            std::hint::black_box(counter_floor(&input, c).expect("floor"));
            println!(
                "  {:>9} B alone: {wall:.3} s, CPU {cpu:.3} s ({} bits set); floor CPU {:.3} s",
                c,
                r.bits_set,
                process_cpu() - fcpu
            );
        }
    }
    for r in &res {
        println!(
            "  {:>9} B: bits set {:>9}, page writes {:>9}, dirty avg {:>12.0} B, peak memory {:>10} B",
            r.chunk_bytes, r.bits_set, r.page_writes_total, r.dirty_mean_bytes, r.memory_peak_bytes
        );
    }
}
