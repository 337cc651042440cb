use super::*;
use crate::engine::{Bitmap, BitmapConfig, BitmapGeometry, KernelVariant};
use crate::trace::{Trace, TraceEvent, TraceHeader, TraceLoss};

const SEC: u64 = 1_000_000_000;
const HZ: u64 = 250;

fn header(chunk: u64) -> TraceHeader {
    TraceHeader {
        array: "md0".into(),
        level: "raid1".into(),
        layout: 0,
        raid_disks: 2,
        chunk_size_bytes: 0,
        component_size_kib: 64 << 10, // 64 MiB
        array_sectors: 128 << 10,
        bitmap_chunk_bytes: chunk,
        bitmap_sync_sectors: 128 << 10,
        bitmap_space_sectors: 8,
        bitmap_location: "+8".into(),
        daemon_sleep_secs: 5.0,
        active_members: 2,
        sync_speed_max_kibs: Some(1024),
        kernel_release: "test".into(),
        kernel_variant: "6.12".into(),
        accounting: "per-bio".into(),
        initial_dirty: vec![],
        initial_events: (1, 1),
        start_ns: 0,
        daemon_lastrun_jiffies: None,
        initial_array_state: None,
    }
}

/// The md thread waking into the daemon every 5 s (as jiffies at 250 Hz) from `from` to `to`.
fn daemon_events(from: u64, to: u64) -> Vec<TraceEvent> {
    (from..=to)
        .step_by(5)
        .map(|s| TraceEvent::Daemon {
            t_ns: s * SEC + 1,
            jiffies: 1_000_000 + s * HZ,
        })
        .collect()
}

fn trace(chunk: u64, mut events: Vec<TraceEvent>) -> Trace {
    events.sort_by_key(|e| e.t_ns());
    Trace {
        header: header(chunk),
        events,
        blocks: 1,
        loss: TraceLoss::default(),
    }
}

fn write(t_ns: u64, sector: u64, sectors: u64) -> TraceEvent {
    TraceEvent::Write {
        t_ns,
        sector,
        sectors,
        latency_ns: Some(1_000_000),
    }
}

fn opts() -> ReplayOptions {
    ReplayOptions {
        daemon: DaemonMode::Recorded,
        resync_bytes_per_sec: 1024.0 * 1024.0,
    }
}

#[test]
fn sizes_parse_and_print() {
    assert_eq!(parse_size("64K"), Ok(64 << 10));
    assert_eq!(parse_size("1m"), Ok(1 << 20));
    assert_eq!(parse_size("4096"), Ok(4096));
    assert!(parse_size("x").is_err());
    assert!(parse_size("0").is_err());
    assert_eq!(human(64 << 20), "64M");
    assert_eq!(human(4096), "4K");
    assert_eq!(
        mdadm_commands("md0", 128 << 20),
        [
            "mdadm --grow /dev/md0 --bitmap=none",
            "mdadm --grow /dev/md0 --bitmap=internal --bitmap-chunk=128M"
        ]
    );
}

#[test]
fn candidates_respect_the_bitmap_space() {
    // 64 MiB array, 4 KiB of bitmap space (8 sectors): 4 KiB chunks need 2 KiB of bits + sb.
    let c = default_candidates(128 << 10, 8, 64 << 10);
    assert_eq!(c.first(), Some(&4096));
    assert_eq!(c.last(), Some(&(64 << 20)));
    assert_eq!(c.len(), 15);
    // 1 sector of space: 256 bytes sb + 256 bytes of bits = 2048 chunks at most → 32 KiB.
    assert!(!fits(16 << 10, 128 << 10, 1));
    assert!(fits(32 << 10, 128 << 10, 1));
    assert_eq!(
        default_candidates(128 << 10, 1, 0).first(),
        Some(&(32 << 10))
    );
    // The size in use is added when it is not a default candidate (below 4 KiB).
    assert!(default_candidates(128 << 10, 0, 2048).contains(&2048));
}

#[test]
fn replay_sets_and_clears_bits_as_the_kernel_does() {
    // Writes to chunks 0 and 5 (64 KiB chunks = 128 sectors) at t=1 s; daemon wake-ups every
    // 5 s until 30 s: both bits are set once, cleared 2-3 passes later.
    let mut ev = vec![write(SEC, 0, 8), write(SEC + 10, 5 * 128, 8)];
    ev.extend(daemon_events(0, 30));
    let input = ReplayInput::new(&trace(64 << 10, ev)).unwrap();
    assert!(input.has_daemon_events());
    assert_eq!(input.hz, Some(250));
    let r = replay(&input, 64 << 10, &opts()).unwrap();
    assert!(r.in_use);
    assert_eq!(r.bits_set, 2);
    assert_eq!(r.sync_waits, 2);
    assert!(r.end_dirty.is_empty(), "{:?}", r.end_dirty);
    assert_eq!(r.dirty_max_bytes, 2 * (64 << 10));
    assert_eq!(r.anomalies, 0);
    // Two unplug writes of page 0 (one per write), then the daemon's writes of the cleared bits.
    assert!(r.page_writes >= 3, "{r:?}");
    // With 1 MiB chunks both writes fall in chunk 0: one bit.
    let r1 = replay(&input, 1 << 20, &opts()).unwrap();
    assert_eq!(r1.bits_set, 1);
    assert_eq!(r1.dirty_max_bytes, 1 << 20);
}

#[test]
fn end_of_trace_dirty_set_matches_a_hand_driven_engine() {
    // Writes at 1 s and 22 s; the trace ends at 25 s with the second chunk still dirty.
    let mut ev = vec![write(SEC, 0, 8), write(22 * SEC, 300, 8)];
    ev.extend(daemon_events(0, 25));
    let input = ReplayInput::new(&trace(64 << 10, ev)).unwrap();
    let r = replay(&input, 64 << 10, &opts()).unwrap();

    let geo = BitmapGeometry::new(64 << 10, 128 << 10).unwrap();
    let mut bm = Bitmap::new(
        geo,
        BitmapConfig::new(KernelVariant::V6_12, 5 * HZ),
        1_000_000,
    );
    bm.set_events(1);
    bm.start_write(0, 8, false);
    bm.unplug();
    bm.end_write(0, 8, true, false, false);
    for s in (5..=20).step_by(5) {
        bm.daemon_work(1_000_000 + s * HZ);
    }
    bm.start_write(300, 8, false);
    bm.unplug();
    bm.end_write(300, 8, true, false, false);
    bm.daemon_work(1_000_000 + 25 * HZ);
    let want: Vec<(u64, u64)> = bm
        .disk_dirty_ranges()
        .into_iter()
        .map(|r| (r.start, r.end))
        .collect();
    assert_eq!(want, vec![(2, 3)]);
    assert_eq!(r.end_dirty, want);
    assert_eq!(r.page_writes_total, bm.page_writes().total());
}

#[test]
fn smaller_chunks_trade_page_writes_for_resync() {
    // A sequential stream of 4 KiB writes over 8 MiB, daemon every 5 s, 60 s of trace.
    let mut ev: Vec<TraceEvent> = (0..2048u64)
        .map(|i| write(SEC + i * 10_000_000, i * 8, 8))
        .collect();
    ev.extend(daemon_events(0, 60));
    let input = ReplayInput::new(&trace(64 << 10, ev)).unwrap();
    let sizes = [4096, 64 << 10, 1 << 20, 16 << 20];
    let res = replay_all(&input, &sizes, &opts(), None).unwrap();
    for w in res.windows(2) {
        assert!(w[0].bits_set > w[1].bits_set, "{:?}", w);
        assert!(w[0].page_writes_total >= w[1].page_writes_total);
    }
    // The largest chunk has the biggest dirty footprint at its worst.
    assert!(res[3].dirty_max_bytes > res[0].dirty_max_bytes);
    assert_eq!(res[0].bits_set, 2048);
    assert_eq!(res[1].bits_set, 128);
    let i = recommend(&res, Objective::MinOverhead).unwrap();
    assert_eq!(res[i].chunk_bytes, 16 << 20);
    let i = recommend(&res, Objective::MinResync).unwrap();
    assert_eq!(res[i].chunk_bytes, 4096);
    let b = recommend(&res, Objective::Balanced).unwrap();
    assert!(b < res.len());
    // Memory grows as chunks shrink.
    assert!(res[0].memory_static_bytes >= res[3].memory_static_bytes);
}

#[test]
fn modelled_daemon_cleans_without_recorded_wakeups() {
    let ev = vec![write(SEC, 0, 8), write(40 * SEC, 1 << 10, 8)];
    let input = ReplayInput::new(&trace(64 << 10, ev)).unwrap();
    assert!(!input.has_daemon_events());
    let o = ReplayOptions {
        daemon: DaemonMode::Modelled,
        ..opts()
    };
    let r = replay(&input, 64 << 10, &o).unwrap();
    // The first chunk was cleaned by timer wake-ups; the second is still dirty at the end.
    assert_eq!(r.end_dirty, vec![(8, 9)]);
    assert!(r.daemon_passes >= 3);
}

#[test]
fn svg_and_table_render() {
    let mut ev: Vec<TraceEvent> = (0..64u64)
        .map(|i| write(SEC + i * SEC / 10, i * 64, 8))
        .collect();
    ev.extend(daemon_events(0, 20));
    let input = ReplayInput::new(&trace(64 << 10, ev)).unwrap();
    let res = replay_all(&input, &[4096, 64 << 10, 1 << 20], &opts(), None).unwrap();
    let rep = TuneReport {
        array: "md0".into(),
        kernel_release: "t".into(),
        writes: input.writes,
        writes_without_latency: 0,
        span_secs: 20.0,
        trace_loss: TraceLoss::default(),
        daemon: DaemonMode::Recorded,
        resync_bytes_per_sec: 1e6,
        objective: Objective::Balanced,
        recommended_chunk_bytes: 1 << 20,
        commands: mdadm_commands("md0", 1 << 20),
        results: res,
    };
    let svg = svg::tradeoff_svg(&rep);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<polyline").count(), 2);
    let t = render_table(&rep);
    assert!(t.contains("--bitmap-chunk=1M"), "{t}");
    assert!(t.contains(" *"), "{t}");
}

/// A pseudo-random trace over the 64 MiB test array: `n` writes 200 µs apart, 0.5–96 KiB
/// (some crossing chunks), sequential streams and random ones, some without a recorded
/// latency; recorded unplugs after most writes if `unplugs`, superblock updates at clean <->
/// dirty transitions, the md thread waking into the daemon every 5 s.
fn random_trace(seed: u64, n: u64, unplugs: bool) -> Trace {
    random_trace_over(seed, n, unplugs, 128 << 10)
}

/// [`random_trace`] over a raid1 of `total` sectors.
fn random_trace_over(seed: u64, n: u64, unplugs: bool, total: u64) -> Trace {
    let mut rng = seed | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut streams = [0u64; 4];
    for s in &mut streams {
        *s = next() % total;
    }
    let mut events = Vec::new();
    let mut t = SEC / 2;
    for i in 0..n {
        // Bursts with idle gaps, so chunks go clean and the daemon clears bits.
        t += if i % 5000 == 4999 { 12 * SEC } else { 200_000 };
        let r = next();
        let len = 1 + r % 192;
        let sector = if r % 10 < 6 {
            let s = &mut streams[(r >> 8) as usize % streams.len()];
            let v = *s;
            *s = (*s + len) % (total - 200);
            v
        } else {
            next() % (total - 200)
        };
        events.push(TraceEvent::Write {
            t_ns: t,
            sector,
            sectors: len,
            latency_ns: (r % 7 != 0).then_some(100_000 + (r >> 20) % 3_000_000),
        });
        if unplugs && r % 4 != 0 {
            events.push(TraceEvent::Unplug { t_ns: t + 1 });
        }
        if i % 5000 == 0 || i % 5000 == 4999 {
            events.push(TraceEvent::UpdateSb { t_ns: t + 2 });
        }
    }
    events.extend(daemon_events(0, t / SEC + 6));
    let mut tr = trace(64 << 10, events);
    tr.header.initial_dirty = vec![(3, 9), (100, 101)];
    tr.header.component_size_kib = total / 2;
    tr.header.array_sectors = total;
    tr.header.bitmap_sync_sectors = total;
    tr
}

/// Replays `input` under chunk sizes `1 << shift` for each `shift`, with recorded and modelled
/// daemon wake-ups, asserting that the fast replay equals the reference replay; returns the
/// fast replay's results.
fn fast_equals_reference(
    input: &ReplayInput,
    shifts: std::ops::RangeInclusive<u32>,
    unplugs: bool,
) -> Vec<SizeResult> {
    let mut out = Vec::new();
    for daemon in [DaemonMode::Recorded, DaemonMode::Modelled] {
        let o = ReplayOptions {
            daemon,
            resync_bytes_per_sec: 3e6,
        };
        for shift in shifts.clone() {
            let c = 1u64 << shift;
            let fast = replay(input, c, &o).unwrap();
            let reference = super::reference::replay_reference(input, c, &o).unwrap();
            assert_eq!(fast, reference, "chunk {c}, {daemon:?}, unplugs {unplugs}");
            out.push(fast);
        }
    }
    out
}

/// The fast replay gives exactly the figures of the reference (pre-optimisation) replay,
/// for every chunk size, with recorded and modelled daemon wake-ups, with and without
/// recorded unplugs, and cut short with `until`.
#[test]
fn fast_replay_equals_reference() {
    // Sizes whose replay set bits and ran the daemon (so the comparison is not vacuous).
    let mut nonzero = 0;
    for (seed, unplugs) in [(7u64, false), (0x5eed, true)] {
        let tr = random_trace(seed, 20_000, unplugs);
        let full = ReplayInput::new(&tr).unwrap();
        let cut = full.clone().until(full.span_ns.0 + 9 * SEC);
        for input in [&full, &cut] {
            for fast in fast_equals_reference(input, 12..=26, unplugs) {
                nonzero += u64::from(fast.bits_set > 0 && fast.daemon_passes > 0);
            }
        }
    }
    assert!(nonzero >= 60, "the traces exercise the replay ({nonzero})");
}

/// The same over a 1 GiB array, whose small-chunk bitmaps span several file pages (up to 9 at
/// 4 KiB): a step's start-writes may dirty one page or two, and the single-page unplug of the
/// fast replay (whose claim that no other page is DIRTY debug builds check) must write what
/// the kernel's full unplug writes.
#[test]
fn fast_replay_equals_reference_over_many_file_pages() {
    let mut multi_page = 0;
    for (seed, unplugs) in [(11u64, false), (0xfeed, true)] {
        let tr = random_trace_over(seed, 20_000, unplugs, 2 << 20);
        let input = ReplayInput::new(&tr).unwrap();
        for fast in fast_equals_reference(&input, 12..=17, unplugs) {
            let geo = BitmapGeometry::new(fast.chunk_bytes, input.sync_sectors).unwrap();
            multi_page += u64::from(geo.file_pages() > 1 && fast.page_writes > 0);
        }
    }
    assert!(
        multi_page >= 8,
        "bitmaps of several file pages were written ({multi_page})"
    );
}

/// The merge in `sort_steps` gives exactly the stable sort by time it replaces, for traces in
/// order and out of order, with ties between every kind of step.
#[test]
fn sort_steps_is_the_stable_sort() {
    use super::replay::{Step, sort_steps};
    let mut rng = 0x1234_5678_9abc_def1u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for round in 0..40u32 {
        let mut steps = Vec::new();
        let mut t = 0u64;
        for k in 0..2000u32 {
            let r = next();
            if round % 2 == 1 && r % 13 == 0 {
                t = t.saturating_sub(r % 50); // out of order
            } else {
                t += r % 3;
            }
            match r % 5 {
                0 | 1 => {
                    steps.push((t, Step::Start { a: k, b: k + 1 }));
                    steps.push((t + (r >> 8) % 40, Step::End { a: k, b: k + 1 }));
                }
                2 => steps.push((t, Step::Unplug)),
                3 => steps.push((t, Step::UpdateSb)),
                _ => steps.push((
                    t,
                    Step::Daemon {
                        jiffies: u64::from(k),
                    },
                )),
            }
        }
        let mut expected = steps.clone();
        expected.sort_by_key(|s| s.0);
        assert_eq!(sort_steps(steps), expected, "round {round}");
    }
}

/// Enough writes in flight on the same chunk to take its counter to `COUNTER_MAX`: later
/// writers block in the kernel with the next chunk of their range uncounted (they cross a
/// chunk boundary at 4 KiB), so the replay does not split calls into single chunks, and still
/// gives the reference's figures.
#[test]
fn replay_at_counter_max_equals_reference() {
    // COUNTER_MAX - 2 writes on chunk 0 take it to COUNTER_MAX; the next ones cross into
    // chunk 1 (at 4 KiB), which stays clean while they sleep.
    let full = u64::from(crate::engine::COUNTER_MAX) - 2;
    let events: Vec<TraceEvent> = (0..full + 40)
        .map(|i| TraceEvent::Write {
            t_ns: SEC + i * 10_000,
            sector: if i < full { 0 } else { 4 },
            sectors: 8,
            latency_ns: Some(2 * SEC),
        })
        .chain(daemon_events(0, 15))
        .collect();
    let input = ReplayInput::new(&trace(64 << 10, events)).unwrap();
    assert!(input.max_calls_in_flight + 2 >= u64::from(crate::engine::COUNTER_MAX));
    for daemon in [DaemonMode::Recorded, DaemonMode::Modelled] {
        let o = ReplayOptions {
            daemon,
            resync_bytes_per_sec: 3e6,
        };
        for c in [4096u64, 8192, 1 << 20] {
            let fast = replay(&input, c, &o).unwrap();
            let reference = super::reference::replay_reference(&input, c, &o).unwrap();
            assert_eq!(fast, reference, "chunk {c}, {daemon:?}");
            assert!(fast.bits_set > 0);
        }
    }
}

/// The md thread's timer counts from the end of its run (`md_thread()` sleeps
/// `thread->timeout` after `thread->run()` returns), not from the daemon call that starts the
/// run; while the thread is in a run no timer fires. For the chunk size in use no wake-up is
/// added to the recorded ones.
#[test]
fn thread_timer_counts_from_the_end_of_its_run() {
    // A write at 1 s; the thread calls the daemon at 2 s (a pass: 2 -> 1, timeout armed), then
    // stays in that run until 9 s; its next recorded call is at 20 s.
    let daemon = |s: u64| TraceEvent::Daemon {
        t_ns: s * SEC,
        jiffies: 1_000_000 + s * HZ,
    };
    let mut base = vec![write(SEC, 0, 8), daemon(2), daemon(20)];
    // The replay fires a timer before the next step: unplugs (nothing to write) as probes.
    base.extend(
        [6.9, 7.15, 8.4, 13.9, 14.15, 19.8].map(|s: f64| TraceEvent::Unplug {
            t_ns: (s * SEC as f64) as u64,
        }),
    );
    let mut with_sleep = base.clone();
    with_sleep.push(TraceEvent::ThreadSleep { t_ns: 9 * SEC });
    with_sleep.push(TraceEvent::ThreadSleep {
        t_ns: 20 * SEC + 1000,
    });
    let in_use = 64 << 10;
    let input = ReplayInput::new(&trace(in_use, with_sleep)).unwrap();
    assert!(input.has_thread_sleep);
    let old = ReplayInput::new(&trace(in_use, base)).unwrap();
    assert!(!old.has_thread_sleep);
    let passes = |i: &ReplayInput, chunk: u64, until_s: f64| {
        let i = i.clone().until((until_s * SEC as f64) as u64);
        let fast = replay(&i, chunk, &opts()).unwrap();
        let reference = super::reference::replay_reference(&i, chunk, &opts()).unwrap();
        assert_eq!(fast, reference, "chunk {chunk}, until {until_s} s");
        fast.daemon_passes
    };
    // Another chunk size: the timer (5 s + the replay's 100 ms slack) from 9 s, not from 2 s.
    assert_eq!(
        passes(&input, 4096, 8.5),
        1,
        "no timer while the thread runs"
    );
    assert_eq!(passes(&input, 4096, 14.0), 1);
    assert_eq!(passes(&input, 4096, 14.2), 2, "timer at 9 s + 5.1 s");
    // Without run ends (version 1 traces) the timer counts from the daemon call.
    assert_eq!(passes(&old, 4096, 7.0), 1);
    assert_eq!(passes(&old, 4096, 7.2), 2, "timer at 2 s + 5.1 s");
    // The chunk size in use: only the recorded wake-ups (2 s, and 20 s when due again).
    assert_eq!(passes(&input, in_use, 19.9), 1);
    assert_eq!(passes(&old, in_use, 19.9), 1);
    assert_eq!(passes(&input, in_use, 21.0), 2);
}

/// The benchmark's floor counts each call's chunks up at its start and down at its end: zero
/// once every write completed, the chunks of the writes still in flight when cut short.
#[test]
fn counter_floor_counts_calls_in_flight() {
    let events = vec![
        write(SEC, 0, 8),            // chunk 0 (64 KiB chunks: 128 sectors)
        write(SEC + 10, 120, 16),    // chunks 0 and 1
        write(3 * SEC, 1000, 8),     // chunk 7
        write(3 * SEC + 5, 1024, 8), // chunk 8
    ];
    let input = ReplayInput::new(&trace(64 << 10, events)).unwrap();
    assert_eq!(counter_floor(&input, 64 << 10).unwrap(), 0);
    // Cut while the last two writes are in flight (latency 1 ms): a chunk each.
    let cut = input.clone().until(3 * SEC + 500_000);
    assert_eq!(counter_floor(&cut, 64 << 10).unwrap(), 2);
    // Cut while the first two are: chunk 0 twice and chunk 1 under 64 KiB chunks; chunk 0,
    // then chunks 15 and 16 under 4 KiB chunks (8 sectors).
    let cut = input.clone().until(SEC + 500_000);
    assert_eq!(counter_floor(&cut, 64 << 10).unwrap(), 3);
    assert_eq!(counter_floor(&cut, 4 << 10).unwrap(), 3);
    assert!(counter_floor(&cut, 3000).is_err());
}
