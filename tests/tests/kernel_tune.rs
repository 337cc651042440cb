//! Real kernels: `md-bitmap record` + the tune replay against the kernel, one boot per kernel.
//!
//! A raid1 (2 members, 64 KiB bitmap chunks, daemon sleep 1 s) is recorded while it takes
//! random 4 KiB writes in two bursts (the first one cleaned by the daemon before the second).
//! Right after the second burst the on-disk bitmap of member 0 is read with O_DIRECT
//! (`md-bitmap inspect --json`; `mdadm -X` is printed beside it), while `md-bitmap events`
//! watches the members' own bios. On the host the trace is replayed under the chunk size in use
//! up to the instant of that read (its bio on the member, seen on the block layer).
//!
//! Asserted: the replay's on-disk dirty set equals the kernel's, bit for bit; the replay's count
//! of bitmap page writes is within 10 % of the writes the kernel queued to member 0's bitmap
//! area over the same window; `mdadm -X`, run a moment later (its read found after a marker
//! read of sector 1), counts as many dirty chunks as the replay at that instant; `md-bitmap
//! tune` runs in the guest and recommends a size.
use std::time::Duration;

use md_bitmap::trace::read_trace_file;
use md_bitmap::tune::{DaemonMode, ReplayInput, ReplayOptions, replay};
use tests::*;
use xtask::kernels::Series;

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
    s += &format!("md-bitmap inspect --json {m0} > /out/inspect.ndjson || exit 23\n");
    // A marker read of sector 1 (nothing else reads it), then mdadm -X: its bitmap read is the
    // first one after the marker.
    s += &format!(
        "/usr/local/bin/dd if={m0} of=/dev/null bs=512 count=1 skip=1 iflag=direct 2>/dev/null; blockdev --flushbufs {m0}; mdadm -X {m0} > /out/mdadm-x.txt\n"
    );
    s += "sleep 0.5\nkill -INT $R; wait $R; echo record exit $?; cat /out/record.err\n";
    s += &stop_events("member");
    s += "md-bitmap tune /out/t.trace --plot /out/t.svg > /out/tune.txt 2>&1; echo tune exit $?\n";
    s += "md-bitmap tune /out/t.trace --json --quiet > /out/tune.json || exit 24\n";
    s += "cat /out/tune.txt; cat /out/mdadm-x.txt | tail -3\n";
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

    // The member bios: the instant `inspect` read member 0's bitmap, and the kernel's own writes
    // to member 0's bitmap area before it.
    let evs = ndjson(&r.out_file("member.ndjson").unwrap());
    let in_bitmap = |v: &serde_json::Value| {
        let s = v["sector"].as_u64().unwrap();
        (bitmap_start..data_offset).contains(&s)
    };
    let on_m0 = |v: &serde_json::Value| v["event"] == "bio_queue" && dev_of(v) == members[0];
    let t_read = evs
        .iter()
        .filter(|v| on_m0(v) && v["rwbs"] == "R" && in_bitmap(v))
        .map(|v| v["ts_ns"].as_u64().unwrap())
        .find(|&t| t > trace.header.start_ns)
        .unwrap_or_else(|| panic!("{rel}: inspect's bitmap read not seen on {}", members[0]));
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

    let input = ReplayInput::new(&trace).unwrap().until(t_read);
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
        "kernel {rel}: trace {data_writes} writes, {daemon_wakes} daemon wake-ups, {} blocks, hz {:?}; \
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
    assert!(
        data_writes >= 100,
        "{rel}: only {data_writes} writes recorded"
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
    // mdadm -X, a little later: its dirty count equals the replay's at the instant it read.
    let t_marker = evs
        .iter()
        .filter(|v| on_m0(v) && v["rwbs"] == "R" && v["sector"] == 1)
        .map(|v| v["ts_ns"].as_u64().unwrap())
        .find(|&t| t > t_read)
        .unwrap_or_else(|| panic!("{rel}: marker read not seen"));
    let t_x = evs
        .iter()
        .filter(|v| on_m0(v) && v["rwbs"] == "R" && in_bitmap(v))
        .map(|v| v["ts_ns"].as_u64().unwrap())
        .find(|&t| t > t_marker)
        .unwrap_or_else(|| panic!("{rel}: mdadm -X's bitmap read not seen"));
    let at_x = replay(&ReplayInput::new(&trace).unwrap().until(t_x), chunk, &opts).unwrap();
    let xd: u64 = at_x.end_dirty.iter().map(|r| r.1 - r.0).sum();
    let x = r.out_file("mdadm-x.txt").unwrap();
    eprintln!(
        "kernel {rel}: mdadm -X {:.3} s after inspect: replay {xd} dirty; mdadm: {}",
        (t_x - t_read) as f64 / 1e9,
        x.lines().last().unwrap_or("").trim()
    );
    assert!(
        x.contains(&format!("{xd} dirty")),
        "{rel}: mdadm -X disagrees with the replay ({xd} dirty):\n{x}"
    );
    // tune in the guest: a recommendation, the mdadm commands or the in-use note, an SVG.
    let t: serde_json::Value = serde_json::from_str(&r.out_file("tune.json").unwrap()).unwrap();
    assert!(t["recommended_chunk_bytes"].as_u64().unwrap() >= 4096);
    assert!(t["results"].as_array().unwrap().len() >= 10);
    assert!(r.out_file("t.svg").unwrap().contains("<polyline"));
    cleanup(&dir);
}

#[test]
fn tune_replay_matches_kernel_on_6_1() {
    run(Series::V6_1);
}

#[test]
fn tune_replay_matches_kernel_on_6_12() {
    run(Series::V6_12);
}
