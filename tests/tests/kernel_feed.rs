//! Real kernels: the embedded eBPF object loads, kprobes attach to the bitmap start/end-write
//! functions (names chosen at run time from /proc/kallsyms: they differ between 6.1 and 6.12),
//! tracepoints attach to block/block_bio_queue, and `dd` writes of known offsets to /dev/md0 show
//! up with the right sectors and lengths.
use std::time::Duration;

use serde_json::Value;
use tests::*;
use xtask::kernels::Series;

/// (first sector, sectors) of each write, at 4 KiB-unaligned offsets too. Lengths are multiples of
/// 4 KiB: GNU dd falls back to buffered I/O (a page read-modify-write) for smaller direct writes.
const WRITES: &[(u64, u64)] = &[
    (0, 8),
    (16, 16),
    (1001, 8),
    (4096, 128),
    (65537, 64),
    (200_003, 8),
    (300_032, 256),
];

fn run(series: Series) {
    let dir = work_dir("feed", series);
    let vm = Vm::new(series, &dir, &[256, 256]).unwrap();
    let mut script = String::new();
    script += &start_events("ev", "--array md0");
    for (s, n) in WRITES {
        script += &format!(
            "dd if=/dev/urandom of=/dev/md0 bs={} seek={} count=1 oflag=direct,seek_bytes conv=notrunc 2>/dev/null || exit 3\n",
            n * 512,
            s * 512
        );
    }
    script += "sleep 1\n";
    script += &stop_events("ev");
    // The live snapshot and stream, for the schema check below.
    script += "md-bitmap snapshot --json > /out/snap.json 2>/out/snap.err || { cat /out/snap.err; exit 4; }\n";
    script += "md-bitmap watch --ndjson --interval 0.5 --count 3 > /out/watch.ndjson 2>/out/watch.err || { cat /out/watch.err; exit 5; }\n";
    let payload = Payload::script(script)
        // A daemon sleep of 30 s keeps the written chunks dirty on disk for a minute, however
        // long the one-shot snapshot takes to start on a loaded host (it seeds from md's counters).
        .array(ArraySpec::new(1, 2).delay_secs(30))
        .timeout(Duration::from_secs(240));
    let r = vm.run(&payload).unwrap();
    r.expect_success().unwrap();
    eprintln!(
        "kernel {}: boot {:.1}s, whole run {:.1}s",
        r.release, r.boot_secs, r.total_secs
    );
    let events = ndjson(&r.out_file("ev.ndjson").unwrap());
    let kind = |e: &Value| e["event"].as_str().unwrap_or("").to_string();
    for (s, n) in WRITES {
        let bio = events.iter().position(|e| {
            kind(e) == "bio_queue"
                && e["dev"]["major"] == 9
                && e["dev"]["minor"] == 0
                && e["sector"] == *s
                && e["sectors"] == *n
                && e["rwbs"].as_str().unwrap_or("").contains('W')
        });
        let bio = bio.unwrap_or_else(|| panic!("{}: no bio_queue for write ({s}, {n})", r.release));
        let start = events[bio..]
            .iter()
            .position(|e| kind(e) == "start_write" && e["offset"] == *s && e["sectors"] == *n)
            .map(|i| i + bio)
            .unwrap_or_else(|| panic!("{}: no start_write after the bio ({s}, {n})", r.release));
        events[start..]
            .iter()
            .find(|e| kind(e) == "end_write" && e["offset"] == *s && e["sectors"] == *n)
            .unwrap_or_else(|| panic!("{}: no end_write after start ({s}, {n})", r.release));
    }
    // Each write is accounted exactly once by the bitmap on raid1.
    let starts = events.iter().filter(|e| kind(e) == "start_write").count();
    assert_eq!(starts, WRITES.len(), "{}: start_write count", r.release);
    // Real snapshot output validates against the committed JSON Schema.
    let schema = md_bitmap::mirror::snapshot::json_schema();
    let v = jsonschema::validator_for(&schema).unwrap();
    let mut docs = vec![serde_json::from_str::<Value>(&r.out_file("snap.json").unwrap()).unwrap()];
    docs.extend(ndjson(&r.out_file("watch.ndjson").unwrap()));
    assert_eq!(
        docs.len(),
        4,
        "{}: one snapshot and three streamed",
        r.release
    );
    for d in &docs {
        let errs: Vec<String> = v.iter_errors(d).map(|e| e.to_string()).collect();
        assert!(
            errs.is_empty(),
            "{}: snapshot violates the schema: {errs:?}",
            r.release
        );
        assert_eq!(d["source"], "live", "{}: {d}", r.release);
        assert_eq!(d["arrays"][0]["name"], "md0");
    }
    // The writes above dirtied chunks; the daemon (time_base 30 s) clears them 60-90 s after the
    // last write, after the one-shot snapshot was taken.
    let md0 = &docs[0]["arrays"][0];
    assert!(
        md0["counts"]["dirty_on_disk_chunks"].as_u64().unwrap() > 0,
        "{}: {md0}",
        r.release
    );
    let err = r.out_file("ev.err").unwrap();
    assert!(
        err.contains("dropped 0"),
        "{}: events dropped: {err}",
        r.release
    );
    cleanup(&dir);
}

#[test]
fn dd_writes_reach_the_feed_on_6_1() {
    run(Series::V6_1);
}

#[test]
fn dd_writes_reach_the_feed_on_6_12() {
    run(Series::V6_12);
}
