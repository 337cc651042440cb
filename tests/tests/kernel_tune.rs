//! Real kernels: `md-bitmap record` + the tune replay against the kernel, one boot per kernel.
//!
//! A raid1 (2 members, 64 KiB bitmap chunks, daemon sleep 1 s) is recorded while it takes
//! random 4 KiB writes in two bursts (the first one cleaned by the daemon before the second).
//! Right after the second burst the on-disk bitmap of member 0 is read with O_DIRECT
//! (`md-bitmap inspect --json`; `mdadm -X` is printed beside it), while `md-bitmap events`
//! watches the members' own bios. On the host the trace is replayed under the chunk size in use
//! up to the instant of that read (its bio on the member, seen on the block layer).
//!
//! Which bio is "the read": both readers read member 0's bitmap area several times, and only
//! the last read holds the bits they report. `inspect` reads the bitmap superblock, then the
//! bit area (`examine_member`); `mdadm -X` (O_DIRECT, `bitmap_file_open()`) reads the bitmap
//! superblock (512 B) each time `guess_super()` and `bitmap_file_open()` load the 1.2
//! superblock (`load_super1()`; five such reads, over 30-70 ms under TCG), then 8 KiB from the
//! bitmap's start in `bitmap_fd_read()`, whose bits it counts. A daemon or superblock write
//! between the first of these reads and the last changes what mdadm counts, so the reads are
//! told apart by the reader's pid (the bio's submitting thread), and the last one must cover
//! the whole bit area.
//!
//! Asserted: the replay's on-disk dirty set equals the kernel's, bit for bit; the replay's count
//! of bitmap page writes is within 10 % of the writes the kernel queued to member 0's bitmap
//! area over the same window; `mdadm -X`, run [`MDADM_RUNS`] times after it while the daemon
//! clears the bits, counts each time as many dirty chunks as the replay at the instant of its
//! read; the trace holds the md thread's run ends, one per daemon call (each run of `raid1d()`
//! calls the daemon first; the replay's timer for other chunk sizes counts from them);
//! `md-bitmap tune` runs in the guest and recommends a size. On a failed check (or with
//! `MDB_TUNE_TIMELINE` set) the events around both reads are printed.
use std::time::Duration;

use md_bitmap::trace::read_trace_file;
use md_bitmap::tune::{DaemonMode, ReplayInput, ReplayOptions, replay};
use tests::*;
use xtask::kernels::Series;

/// How many times `mdadm -X` reads member 0 after `inspect`, half a second apart (the daemon,
/// every second, clears the second burst's bits meanwhile).
const MDADM_RUNS: usize = 4;

fn script(disks: &[String]) -> String {
    let (m0, m1) = (&disks[0], &disks[1]);
    let mut s = String::new();
    s += &ArraySpec::new(1, 2)
        .name("md0")
        .delay_secs(1)
        .bitmap_chunk_kib(64)
        .assume_clean(true)
        .create_script(&[m0.clone(), m1.clone()]);
    s += "mdb_wait_clean md0 60 || { echo 'md0 not clean'; exit 21; }\n";
    s += &format!(
        "mdb_result members $(cat /sys/block/$(basename {m0})/dev) $(cat /sys/block/$(basename {m1})/dev)\n"
    );
    s += "mdb_result geometry $(cat /sys/block/md0/md/bitmap/location) $(cat /sys/block/md0/md/dev-*/offset | head -1)\n";
    s += &start_events(
        "member",
        &format!("--array md0 --device {m0} --device {m1}"),
    );
    s += "md-bitmap record --array md0 -o /out/t.trace --ready-file /tmp/rr 2>/out/record.err &\nR=$!\n";
    s += "i=0; while [ ! -e /tmp/rr ] && [ $i -lt 600 ]; do kill -0 $R || { cat /out/record.err; exit 22; }; sleep 0.1; i=$((i+1)); done\n";
    // Burst 1: random single-block writes, then idle long enough for the daemon to clean them.
    s += "for j in $(seq 1 60); do /usr/local/bin/dd if=/dev/zero of=/dev/md0 bs=4096 count=1 seek=$((RANDOM % 15000)) oflag=direct 2>/dev/null || echo 'write failed'; done\n";
    s += "sleep 5\n";
    // Burst 2: three writers, then read the bitmap at once, while bits are still dirty.
    s += "W=\"\"\nfor w in 1 2 3; do ( for j in $(seq 1 15); do /usr/local/bin/dd if=/dev/zero of=/dev/md0 bs=4096 count=$((RANDOM % 4 + 1)) seek=$((RANDOM % 15000)) oflag=direct 2>/dev/null; done ) & W=\"$W $!\"; done\nwait $W\n";
    // Each reader's pid tells its bios on member 0 apart from the others'.
    s += &format!(
        "md-bitmap inspect --json {m0} > /out/inspect.ndjson & P=$!; wait $P || exit 23; mdb_result inspect_pid $P\n"
    );
    s += &format!(
        "for i in $(seq 1 {MDADM_RUNS}); do mdadm -X {m0} > /out/mdadm-x-$i.txt & P=$!; wait $P; mdb_result mdadm_${{i}}_pid $P; sleep 0.5; done\n"
    );
    s += "sleep 0.5\nkill -INT $R; wait $R; echo record exit $?; cat /out/record.err\n";
    s += &stop_events("member");
    s += "md-bitmap tune /out/t.trace --plot /out/t.svg > /out/tune.txt 2>&1; echo tune exit $?\n";
    s += "md-bitmap tune /out/t.trace --json --quiet > /out/tune.json || exit 24\n";
    s += "cat /out/tune.txt; cat /out/mdadm-x-1.txt | tail -3\n";
    s
}

fn dev_of(v: &serde_json::Value) -> String {
    format!("{}:{}", v["dev"]["major"], v["dev"]["minor"])
}

fn run(series: Series) {
    let dir = work_dir("tune", series);
    let vm = Vm::new(series, &dir, &[64, 64]).unwrap();
    let payload = Payload::script(script(&vm.disk_names())).timeout(Duration::from_secs(300));
    let r = vm.run(&payload).unwrap();
    r.expect_success().unwrap();
    let rel = r.release.clone();
    let members: Vec<String> = r
        .result("members")
        .expect("members")
        .split_whitespace()
        .map(String::from)
        .collect();
    let geo: Vec<&str> = r
        .result("geometry")
        .expect("geometry")
        .split_whitespace()
        .collect();
    // v1.2: superblock at sector 8, the bitmap `location` sectors after it, data at `offset`.
    let bitmap_start = 8 + geo[0].trim_start_matches('+').parse::<u64>().unwrap();
    let data_offset: u64 = geo[1].parse().unwrap();

    let trace = read_trace_file(&r.out_dir.join("t.trace")).unwrap();
    assert!(
        trace.loss.is_empty(),
        "{rel}: trace damaged: {}",
        trace.loss
    );
    let ins = ndjson(&r.out_file("inspect.ndjson").unwrap());
    let kernel_dirty: Vec<(u64, u64)> = ins[0]["dirty_ranges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_u64().unwrap(), p[1].as_u64().unwrap()))
        .collect();
    let chunk = ins[0]["chunk_size_bytes"].as_u64().unwrap();
    assert_eq!(chunk, trace.header.bitmap_chunk_bytes);

    // The member bios: the instant `inspect` read member 0's bitmap bits, and the kernel's own
    // writes to member 0's bitmap area before it.
    let evs = ndjson(&r.out_file("member.ndjson").unwrap());
    let in_bitmap = |v: &serde_json::Value| {
        let s = v["sector"].as_u64().unwrap();
        (bitmap_start..data_offset).contains(&s)
    };
    let on_m0 = |v: &serde_json::Value| v["event"] == "bio_queue" && dev_of(v) == members[0];
    // The bit area: after the 256-byte bitmap superblock, one bit per chunk.
    let chunks = trace.header.bitmap_sync_sectors.div_ceil(chunk / 512);
    let bits_end = (bitmap_start * 512 + 256 + chunks.div_ceil(8)).div_ceil(512);
    // The read that brought a reader the bits it reports: its last read of member 0's bitmap
    // area (see the module doc), which must hold the whole bit area. Also the time of its
    // first bitmap-area read.
    let bits_read = |who: &str| -> (u64, u64) {
        let pid: u64 = r
            .result(&format!("{who}_pid"))
            .unwrap_or_else(|| panic!("{rel}: {who}'s pid not reported"))
            .trim()
            .parse()
            .unwrap();
        let reads: Vec<&serde_json::Value> = evs
            .iter()
            .filter(|v| on_m0(v) && v["rwbs"] == "R" && in_bitmap(v))
            .filter(|v| v["tid"].as_u64() == Some(pid))
            .collect();
        let (Some(first), Some(v)) = (reads.first(), reads.last()) else {
            panic!("{rel}: {who}'s bitmap read not seen on {}", members[0]);
        };
        let (s, n) = (
            v["sector"].as_u64().unwrap(),
            v["sectors"].as_u64().unwrap(),
        );
        assert!(
            s <= bitmap_start && s + n >= bits_end,
            "{rel}: {who}'s last bitmap read (sector {s} +{n}) does not hold the bit area [{bitmap_start}, {bits_end})"
        );
        (
            first["ts_ns"].as_u64().unwrap(),
            v["ts_ns"].as_u64().unwrap(),
        )
    };
    let t_read = bits_read("inspect").1;
    assert!(
        t_read > trace.header.start_ns,
        "{rel}: inspect read before the trace started"
    );
    let kernel_page_writes = evs
        .iter()
        .filter(|v| on_m0(v) && v["rwbs"] == "W" && in_bitmap(v))
        .filter(|v| (trace.header.start_ns..t_read).contains(&v["ts_ns"].as_u64().unwrap()))
        .count() as u64;
    let data_writes = trace
        .events
        .iter()
        .filter(|e| matches!(e, md_bitmap::trace::TraceEvent::Write { .. }))
        .count();
    let daemon_wakes = trace
        .events
        .iter()
        .filter(|e| matches!(e, md_bitmap::trace::TraceEvent::Daemon { .. }))
        .count();
    let thread_sleeps = trace
        .events
        .iter()
        .filter(|e| matches!(e, md_bitmap::trace::TraceEvent::ThreadSleep { .. }))
        .count();

    let full = ReplayInput::new(&trace).unwrap();
    let input = full.clone().until(t_read);
    let opts = ReplayOptions {
        daemon: DaemonMode::Recorded,
        resync_bytes_per_sec: 200e6,
    };
    let res = replay(&input, chunk, &opts).unwrap();
    let modelled = replay(
        &input,
        chunk,
        &ReplayOptions {
            daemon: DaemonMode::Modelled,
            ..opts
        },
    )
    .unwrap();
    let kd: u64 = kernel_dirty.iter().map(|r| r.1 - r.0).sum();
    let rd: u64 = res.end_dirty.iter().map(|r| r.1 - r.0).sum();
    let ratio = res.page_writes_total as f64 / kernel_page_writes.max(1) as f64;
    eprintln!(
        "kernel {rel}: trace {data_writes} writes, {daemon_wakes} daemon wake-ups, {thread_sleeps} md thread run ends, {} blocks, hz {:?}; \
         dirty at the read: kernel {kd} chunks {kernel_dirty:?}, replay {rd} chunks; \
         bitmap page writes to member 0: kernel {kernel_page_writes}, replay {} (ratio {ratio:.3}; \
         bits set {}, daemon passes {}); modelled daemon: {} dirty, {} page writes",
        trace.blocks,
        input.hz,
        res.page_writes_total,
        res.bits_set,
        res.daemon_passes,
        modelled.end_dirty.iter().map(|r| r.1 - r.0).sum::<u64>(),
        modelled.page_writes_total,
    );
    // mdadm -X, run after inspect while the daemon clears bits: each run's dirty count equals
    // the replay's at the instant of its read.
    let kernel_bitmap_writes = |a: u64, b: u64| {
        evs.iter()
            .filter(|v| on_m0(v) && v["rwbs"] == "W" && in_bitmap(v))
            .filter(|v| (a..b).contains(&v["ts_ns"].as_u64().unwrap()))
            .count()
    };
    let mut mdadm_bad = None;
    for i in 1..=MDADM_RUNS {
        let (t_first, t_x) = bits_read(&format!("mdadm_{i}"));
        let at_x = replay(&full.clone().until(t_x), chunk, &opts).unwrap();
        let xd: u64 = at_x.end_dirty.iter().map(|r| r.1 - r.0).sum();
        let x = r.out_file(&format!("mdadm-x-{i}.txt")).unwrap();
        let line = x.lines().find(|l| l.contains("Bitmap :")).unwrap_or("");
        eprintln!(
            "kernel {rel}: mdadm -X #{i} {:.3} s after inspect (its bitmap reads span {:.1} ms, \
             kernel bitmap writes within them: {}): replay {xd} dirty; mdadm: {}",
            (t_x - t_read) as f64 / 1e9,
            (t_x - t_first) as f64 / 1e6,
            kernel_bitmap_writes(t_first, t_x),
            line.trim()
        );
        if mdadm_bad.is_none() && !line.contains(&format!(" {xd} dirty")) {
            mdadm_bad = Some((i, t_x, xd, x));
        }
    }
    if res.end_dirty != kernel_dirty
        || mdadm_bad.is_some()
        || std::env::var_os("MDB_TUNE_TIMELINE").is_some()
    {
        let t_x = mdadm_bad.as_ref().map_or(t_read, |b| b.1);
        let area = (bitmap_start, data_offset);
        let m0 = &members[0];
        eprintln!(
            "{}",
            timeline(&evs, &trace, &full, (t_read, t_x), m0, area, chunk, &opts)
        );
    }
    assert!(
        data_writes >= 100,
        "{rel}: only {data_writes} writes recorded"
    );
    // Every md thread run calls the daemon first and ends in a recorded run end.
    assert!(
        thread_sleeps > 0 && thread_sleeps.abs_diff(daemon_wakes) <= 2 + daemon_wakes / 50,
        "{rel}: {thread_sleeps} md thread run ends recorded for {daemon_wakes} daemon calls"
    );
    assert!(
        kd > 0,
        "{rel}: nothing dirty at the read: the test did not catch bits in flight"
    );
    assert_eq!(res.anomalies, 0, "{rel}: replay anomalies");
    assert_eq!(
        res.end_dirty, kernel_dirty,
        "{rel}: the replay's on-disk dirty set differs from the kernel's"
    );
    assert!(
        kernel_page_writes >= 20,
        "{rel}: too few bitmap writes seen"
    );
    assert!(
        (ratio - 1.0).abs() <= 0.10,
        "{rel}: page writes replay {} vs kernel {kernel_page_writes}",
        res.page_writes_total
    );
    if let Some((i, _, xd, x)) = mdadm_bad {
        panic!("{rel}: mdadm -X #{i} disagrees with the replay ({xd} dirty):\n{x}");
    }
    // tune in the guest: a recommendation, the mdadm commands or the in-use note, an SVG.
    let t: serde_json::Value = serde_json::from_str(&r.out_file("tune.json").unwrap()).unwrap();
    assert!(t["recommended_chunk_bytes"].as_u64().unwrap() >= 4096);
    assert!(t["results"].as_array().unwrap().len() >= 10);
    assert!(r.out_file("t.svg").unwrap().contains("<polyline"));
    cleanup(&dir);
}

/// The events around inspect's read and mdadm's, relative to inspect's read (ms): member 0's
/// bios, the kernel's daemon / superblock / unplug calls, the trace's daemon entries with their
/// jiffies, and the replay's dirty count at each member-0 bitmap-area read.
#[allow(clippy::too_many_arguments)]
fn timeline(
    evs: &[serde_json::Value],
    trace: &md_bitmap::trace::Trace,
    input: &ReplayInput,
    (t_read, t_x): (u64, u64),
    m0: &str,
    area: (u64, u64),
    chunk: u64,
    opts: &ReplayOptions,
) -> String {
    use md_bitmap::trace::TraceEvent;
    let (lo, hi) = (t_read.saturating_sub(5_000_000_000), t_x + 1_000_000_000);
    let ms = |t: u64| (t as f64 - t_read as f64) / 1e6;
    let mut lines: Vec<(u64, String)> = Vec::new();
    for v in evs {
        let t = v["ts_ns"].as_u64().unwrap_or(0);
        if !(lo..hi).contains(&t) {
            continue;
        }
        let kind = v["event"].as_str().unwrap_or("");
        let line = match kind {
            "bio_queue" | "bio_complete" if dev_of(v) == m0 => {
                let s = v["sector"].as_u64().unwrap_or(0);
                let n = v["sectors"].as_u64().unwrap_or(0);
                let mut l = format!("m0 {kind} {} sector {s} +{n} tid {}", v["rwbs"], v["tid"]);
                if (area.0..area.1).contains(&s) {
                    let at = replay(&input.clone().until(t), chunk, opts).unwrap();
                    let d: u64 = at.end_dirty.iter().map(|r| r.1 - r.0).sum();
                    l += &format!(" [bitmap area; replay dirty before it {d}]");
                }
                l
            }
            "daemon_work" | "daemon_done" | "update_sb" | "unplug" => {
                format!(
                    "kernel {kind} jiffies {} {} tid {}",
                    v["jiffies"], v["lastrun"], v["tid"]
                )
            }
            _ => continue,
        };
        lines.push((t, format!("{:>10.3} ms  {line}", ms(t))));
    }
    for e in &trace.events {
        let t = e.t_ns();
        if !(lo..hi).contains(&t) {
            continue;
        }
        let line = match e {
            TraceEvent::Daemon { jiffies, .. } => format!("trace Daemon jiffies {jiffies}"),
            TraceEvent::UpdateSb { .. } => "trace UpdateSb".into(),
            TraceEvent::Unplug { .. } => "trace Unplug".into(),
            TraceEvent::ThreadSleep { .. } => "trace md thread run end (asleep)".into(),
            TraceEvent::Write { .. } => continue,
        };
        lines.push((t, format!("{:>10.3} ms  {line}", ms(t))));
    }
    lines.sort_by_key(|l| l.0);
    let mut out = format!(
        "timeline (0 = inspect's read, the mdadm read compared at {:.3} ms; hz {:?}, daemon sleep {:?} jiffies, \
         replay jiffies at ns t = jiffies of the last recorded daemon entry before t + (t - its t) * hz / 1e9):\n",
        ms(t_x),
        input.hz,
        input.sleep_jiffies
    );
    for (_, l) in lines {
        out += &l;
        out.push('\n');
    }
    out
}

#[test]
fn tune_replay_matches_kernel_on_6_1() {
    run(Series::V6_1);
}

#[test]
fn tune_replay_matches_kernel_on_6_12() {
    run(Series::V6_12);
}
