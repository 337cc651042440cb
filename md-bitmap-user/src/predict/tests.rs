// Vectors of one chunk range are the data here, not a mistaken `vec![0..n]`.
#![allow(clippy::single_range_in_vec_init)]

use super::*;

fn member(name: &str, slot: u32) -> MemberInput {
    MemberInput {
        name: name.into(),
        slot: Some(slot),
        in_sync: true,
        ..Default::default()
    }
}

/// (name, read bytes, write bytes) of each member in a cost.
fn name_read_write(c: &Cost) -> Vec<(&str, u64, u64)> {
    c.members
        .iter()
        .map(|m| (m.name.as_str(), m.read_bytes, m.write_bytes))
        .collect()
}

/// A 64 MiB-per-member array with a 64 KiB bitmap chunk and `dirty` chunks set on disk.
fn array(level: &str, n: u32, dirty: Vec<Range<u64>>) -> Inputs {
    Inputs {
        name: "md0".into(),
        level: level.into(),
        raid_disks: n,
        dev_sectors: 64 * 2048,
        array_state: "active".into(),
        members: (0..n)
            .map(|i| member(&format!("vd{}", (b'a' + i as u8) as char), i))
            .collect(),
        bitmap: Some(BitmapInput {
            chunk_bytes: 65536,
            sync_size_sectors: 64 * 2048,
            dirty_on_disk: dirty,
            needed: None,
            events: 20,
            events_cleared: 18,
        }),
        sb_events: Some(20),
        sync_action: "idle".into(),
        speed_min_kibs: 1000,
        speed_max_kibs: 2048,
        ..Default::default()
    }
}

#[test]
fn raid1_crash_reads_the_first_mirror_and_writes_the_others() {
    let p = predict(&array("raid1", 3, vec![0..4, 10..12]));
    let c = &p.crash_now;
    assert_eq!(c.kind, CostKind::Bitmap);
    assert_eq!(c.chunks, 6);
    assert_eq!(c.sync_bytes_per_member, 6 * 65536);
    let io: Vec<(u64, u64)> = c
        .members
        .iter()
        .map(|m| (m.read_bytes, m.write_bytes))
        .collect();
    assert_eq!(io, vec![(6 * 65536, 0), (0, 6 * 65536), (0, 6 * 65536)]);
    assert_eq!(c.chunk_ranges, vec![[0, 4], [10, 12]]);
}

#[test]
fn raid1_read_disk_skips_write_mostly_and_faulty() {
    let mut a = array("raid1", 3, vec![0..1]);
    a.members[0].write_mostly = true;
    a.members[1].faulty = true;
    let c = predict(&a).crash_now;
    let reader: Vec<&str> = c
        .members
        .iter()
        .filter(|m| m.read_bytes > 0)
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(reader, vec!["vdc"]);
    assert_eq!(c.members.len(), 2, "the faulty member takes no part");
}

#[test]
fn raid5_crash_reads_every_member_and_bounds_parity_writes() {
    let c = predict(&array("raid5", 4, vec![3..5])).crash_now;
    assert_eq!(c.members.len(), 4);
    for m in &c.members {
        assert_eq!(
            (m.read_bytes, m.write_bytes, m.write_bytes_max),
            (131072, 0, 131072)
        );
    }
}

#[test]
fn last_chunk_is_clamped_to_the_component() {
    let mut a = array("raid1", 2, vec![]);
    a.dev_sectors = 64 * 2048 - 8; // 4 KiB short of the last chunk's end
    let last = a.dev_sectors * 512 / 65536;
    a.bitmap.as_mut().unwrap().dirty_on_disk = vec![last..last + 1];
    assert_eq!(predict(&a).crash_now.sync_bytes_per_member, 65536 - 4096);
}

#[test]
fn clean_array_costs_nothing_after_a_crash() {
    let mut a = array("raid1", 2, vec![0..8]);
    a.array_state = "clean".into();
    let c = predict(&a).crash_now;
    assert_eq!(c.kind, CostKind::None);
    assert!(c.reason.contains("clean"), "{}", c.reason);
}

#[test]
fn no_bitmap_or_stale_bitmap_means_full_resync() {
    let mut a = array("raid5", 3, vec![0..1]);
    a.bitmap = None;
    let c = predict(&a).crash_now;
    assert_eq!(
        (c.kind, c.sync_bytes_per_member),
        (CostKind::Full, 64 << 20)
    );
    let mut a = array("raid1", 2, vec![0..1]);
    a.sb_events = Some(25);
    let c = predict(&a).crash_now;
    assert_eq!(c.kind, CostKind::Full);
    assert!(c.reason.contains("stale"), "{}", c.reason);
}

#[test]
fn stale_bitmap_resyncs_in_full_only_when_the_array_is_not_clean() {
    // Assembled read-only after a crash: the superblock still says dirty.
    let mut a = array("raid1", 2, vec![0..1]);
    a.array_state = "read-auto".into();
    a.resync_start = Some(0);
    a.sb_events = Some(25);
    let c = predict(&a).crash_now;
    assert_eq!(
        (c.kind, c.sync_bytes_per_member),
        (CostKind::Full, 64 << 20)
    );
    assert!(c.reason.contains("stale bitmap"), "{}", c.reason);
    // Read-only after an unclean stop, bitmap current: the bitmap's chunks.
    a.sb_events = Some(20);
    assert_eq!(predict(&a).crash_now.kind, CostKind::Bitmap);
    // Clean (resync_start none): md_bitmap_load's start is MaxSector, no bit NEEDED.
    a.sb_events = Some(25);
    a.resync_start = None;
    assert_eq!(predict(&a).crash_now.kind, CostKind::None);
    a.array_state = "clean".into();
    assert_eq!(predict(&a).crash_now.kind, CostKind::None);
}

#[test]
fn dirty_degraded_raid5_is_refused_and_single_mirror_needs_nothing() {
    let mut a = array("raid5", 3, vec![0..1]);
    a.members.pop();
    assert_eq!(predict(&a).crash_now.kind, CostKind::Refused);
    let mut a = array("raid1", 2, vec![0..1]);
    a.members[1].faulty = true;
    assert_eq!(predict(&a).crash_now.kind, CostKind::None);
}

#[test]
fn re_add_recovers_needed_chunks_onto_the_missing_member() {
    let mut a = array("raid5", 3, vec![0..2, 7..8]);
    a.members.remove(1);
    let p = predict(&a);
    assert_eq!(p.re_add.len(), 1);
    let r = &p.re_add[0];
    assert_eq!((r.kind, r.slot, r.chunks), (CostKind::Bitmap, Some(1), 3));
    let reads: u64 = r.members.iter().map(|m| m.read_bytes).sum();
    let writes: u64 = r.members.iter().map(|m| m.write_bytes).sum();
    assert_eq!((reads, writes), (2 * 3 * 65536, 3 * 65536));
    // The kernel's NEEDED counters, when known, win over the on-disk bits.
    a.bitmap.as_mut().unwrap().needed = Some(vec![7..8]);
    assert_eq!(predict(&a).re_add[0].chunks, 1);
}

#[test]
fn raid1_re_add_of_a_faulty_member_writes_only_it() {
    let mut a = array("raid1", 3, vec![0..2]);
    a.members[2].faulty = true;
    a.members[2].in_sync = false;
    let r = &predict(&a).re_add[0];
    assert_eq!(r.member.as_deref(), Some("vdc"));
    let io = name_read_write(r);
    assert_eq!(
        io,
        vec![("vda", 131072, 0), ("vdb", 0, 0), ("vdc", 0, 131072)]
    );
}

#[test]
fn throttled_duration_follows_md_do_sync() {
    // 16 MiB at 2048 KiB/s: 8 s at the cap, md ends about a second earlier.
    assert!((throttled_secs(16 << 20, 2048.0) - 7.25).abs() < 1e-9);
    assert!((throttled_secs(17 << 20, 2048.0) - 7.75).abs() < 1e-9);
    // Under a second at the cap: never throttled.
    assert!(throttled_secs(1 << 20, 2048.0) <= 0.5);
    // Long syncs run at about cap × (1 + 1/28.5).
    let t = throttled_secs(1000 * 2048 * 1024, 2048.0);
    assert!(t > 960.0 && t < 1000.0, "{t}");
}

#[test]
fn slow_members_bound_the_duration() {
    let mut a = array("raid1", 2, vec![0..256]); // 16 MiB
    a.members[1].read_kibs = Some(1024.0);
    let d = predict(&a).crash_now.duration.unwrap();
    assert!((d.idle_secs - 16.0).abs() < 1e-9);
    assert!(d.limited_by.contains("vdb"), "{}", d.limited_by);
    a.members[1].read_kibs = Some(1e6);
    let d = predict(&a).crash_now.duration.unwrap();
    assert_eq!(d.limited_by, "speed_max");
    assert!((d.busy_secs_max - 16384.0 / 1000.0).abs() < 1e-9);
    a.busy = Some(true);
    let d = predict(&a).crash_now.duration.unwrap();
    assert_eq!(d.expected_secs, d.busy_secs_max);
}

#[test]
fn running_resync_eta_counts_only_dirty_chunks_ahead() {
    let mut a = array("raid1", 2, vec![0..2, 100..104]);
    a.sync_action = "resync".into();
    a.sync_completed = Some((128 + 64, 64 * 2048)); // inside chunk 1
    a.sync_speed_kibs = Some(1024);
    let r = predict(&a).running.unwrap();
    assert!(r.uses_bitmap);
    assert_eq!(r.remaining_bytes, 32768 + 4 * 65536);
    assert!((r.eta_secs.unwrap() - r.remaining_bytes as f64 / 1024.0 / 1024.0).abs() < 1e-9);
    assert!(r.eta_naive_secs.unwrap() > r.eta_secs.unwrap());
    a.sync_action = "check".into();
    let r = predict(&a).running.unwrap();
    assert_eq!(r.remaining_bytes, r.remaining_bytes_naive);
}

fn committed_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/schema/predict.schema.json")
}

/// The committed schema is the one generated from the types (regenerate with
/// `MDB_UPDATE_SCHEMA=1 cargo test -p md-bitmap-user --lib predict`).
#[test]
fn committed_schema_matches_the_types() {
    let want = serde_json::to_string_pretty(&json_schema()).unwrap() + "\n";
    if std::env::var("MDB_UPDATE_SCHEMA").is_ok_and(|v| v == "1") {
        std::fs::write(committed_path(), &want).unwrap();
    }
    let have = std::fs::read_to_string(committed_path()).unwrap_or_default();
    assert_eq!(have, want, "docs/schema/predict.schema.json is stale");
}

#[test]
fn a_prediction_validates_against_the_schema() {
    let p = predict(&array("raid5", 3, vec![0..1]));
    let v = jsonschema::validator_for(&json_schema()).unwrap();
    let j = serde_json::to_value(&p).unwrap();
    assert!(v.is_valid(&j), "{j}");
    let mut bad = j.clone();
    bad["crash_now"]["kind"] = "sometimes".into();
    assert!(!v.is_valid(&bad));
}

#[test]
fn bit_ranges_merge_runs() {
    let r = gather::bit_ranges(&[0b1000_0110, 0b0000_0001], 16);
    assert_eq!(r, vec![1..3, 7..9]);
}

#[test]
fn a_wiped_or_too_old_device_is_recovered_in_full() {
    let mut a = array("raid1", 2, vec![0..2]);
    a.members.pop();
    let with = |sb| {
        let mut a = a.clone();
        a.candidate = Some(CandidateInput {
            name: "/dev/vdb".into(),
            superblock: sb,
        });
        predict(&a).re_add.remove(0)
    };
    let wiped = with(None);
    assert_eq!(
        (wiped.kind, wiped.sync_bytes_per_member),
        (CostKind::Full, 64 << 20)
    );
    assert!(
        wiped.reason.contains("no md superblock"),
        "{}",
        wiped.reason
    );
    let old = with(Some((true, 10, Some(1))));
    assert_eq!(old.kind, CostKind::Full);
    assert!(old.reason.contains("events out of range"), "{}", old.reason);
    // What the admin meets (seen on 6.1 and 6.12 in kernel_predict.rs): --re-add refused.
    assert!(
        old.reason.contains("--re-add is refused") && old.reason.contains("--zero-superblock"),
        "{}",
        old.reason
    );
    // super_1_validate: `ev1 < events_cleared` refuses; equal events are accepted.
    assert_eq!(with(Some((true, 17, Some(1)))).kind, CostKind::Full);
    assert_eq!(with(Some((true, 18, Some(1)))).kind, CostKind::Bitmap);
    let other = with(Some((false, 30, Some(1))));
    assert_eq!(other.kind, CostKind::Full);
    let ok = with(Some((true, 19, Some(1))));
    assert_eq!((ok.kind, ok.chunks), (CostKind::Bitmap, 2));
    assert_eq!(ok.member.as_deref(), Some("/dev/vdb"));
}

#[test]
fn text_names_each_scenario_its_members_and_assumptions() {
    let mut a = array("raid5", 3, vec![0..2]);
    a.members.remove(1);
    a.array_state = "clean".into();
    a.members[0].read_kibs = Some(50_000.0);
    let t = gather::render_text(&predict(&a));
    eprintln!("{t}");
    assert!(
        t.starts_with("md0 raid5: component 64 MiB, bitmap chunk 64 KiB\n"),
        "{t}"
    );
    assert!(t.contains("crash now: None — array_state is clean"), "{t}");
    assert!(t.contains("re-add slot 1: Bitmap"), "{t}");
    assert!(t.contains("(removed member)"), "{t}");
    assert!(t.contains("128 KiB per member (2 bitmap chunks)"), "{t}");
    assert!(
        t.contains("duration ≈ 62 ms idle (2048 KiB/s, limited by speed_max), ≤ 128 ms if busy"),
        "{t}"
    );
    assert!(t.contains("  assumptions:\n    - crash now:"), "{t}");
}

/// raid10 near=2 over 3 members, 64 KiB RAID chunks, 64 KiB bitmap chunks over the array's
/// address space (96 MiB: 3 members of 64 MiB, two copies).
fn raid10_n2x3(dirty: Vec<Range<u64>>) -> Inputs {
    let mut inp = array("raid10", 3, dirty);
    inp.layout = 0x102; // near=2, far=1
    inp.chunk_size_bytes = 65536;
    if let Some(b) = inp.bitmap.as_mut() {
        b.sync_size_sectors = 96 * 2048;
    }
    inp
}

#[test]
fn raid10_crash_reads_every_copy_and_rewrites_none() {
    // Array chunks 0, 1, 2 lie on members (0, 1), (2, 0), (1, 2): each member holds two
    // copies, one of them a first copy (read only) and one a second (rewritten if different).
    let p = predict(&raid10_n2x3(vec![0..3]));
    let c = &p.crash_now;
    assert_eq!(c.kind, CostKind::Bitmap, "{}", c.reason);
    assert_eq!(c.chunks, 3);
    assert_eq!(c.sync_bytes_per_member, 3 * 65536);
    let io: Vec<(u64, u64, u64)> = c
        .members
        .iter()
        .map(|m| (m.read_bytes, m.write_bytes, m.write_bytes_max))
        .collect();
    assert_eq!(io, vec![(2 * 65536, 0, 65536); 3]);
    assert_eq!(c.total_read_bytes, 6 * 65536);
    // md counts a raid10 resync in array sectors: the duration is that of 192 KiB at
    // speed_max, not of each member's 128 KiB.
    let d = c.duration.as_ref().unwrap();
    assert_eq!(d.idle_secs, throttled_secs(3 * 65536, 2048.0));
}

#[test]
fn raid10_chunks_past_the_first_row_map_to_later_rows() {
    // Near=2 over 3 members places the copies of array chunk k at positions 2k and 2k + 1 of
    // the members taken row by row: chunk 4 on member 2 (row 2) and member 0 (row 3); the
    // array's last chunk, 1535, on members 1 and 2 (row 1023). Each is read twice and
    // rewritten at most once.
    let p = predict(&raid10_n2x3(vec![4..5, 1535..1536]));
    let c = &p.crash_now;
    assert_eq!(c.sync_bytes_per_member, 2 * 65536);
    assert_eq!(c.total_read_bytes, 4 * 65536);
    let reads: Vec<u64> = c.members.iter().map(|m| m.read_bytes).collect();
    assert_eq!(reads, vec![65536, 65536, 2 * 65536]);
    assert_eq!(
        c.members.iter().map(|m| m.write_bytes_max).sum::<u64>(),
        2 * 65536
    );
}

#[test]
fn raid10_without_a_bitmap_resyncs_the_whole_array() {
    let mut inp = raid10_n2x3(vec![]);
    inp.bitmap = None;
    let c = predict(&inp).crash_now;
    assert_eq!(c.kind, CostKind::Full, "{}", c.reason);
    assert_eq!(c.sync_bytes_per_member, 96 << 20);
    assert!(c.members.iter().all(|m| m.read_bytes == 64 << 20));
}

/// md6's geometry with slot 2 (vdc) gone, on kernel `k`: of array chunks 0, 1, 2 (copies on
/// members (0, 1), (2, 0), (1, 2)) only chunk 0, and every third after it, keeps two copies.
fn raid10_n2x3_without_slot_2(dirty: Vec<Range<u64>>, k: (u32, u32)) -> Inputs {
    let mut inp = raid10_n2x3(dirty);
    inp.members.remove(2);
    inp.kernel = Some(k);
    inp
}

fn reads(c: &Cost) -> Vec<(String, u64, u64)> {
    c.members
        .iter()
        .map(|m| (m.name.clone(), m.read_bytes, m.write_bytes_max))
        .collect()
}

#[test]
fn raid10_degraded_crash_compares_only_ranges_with_two_copies_left() {
    // Chunks 0-8 dirty: 0, 3 and 6 are read on vda and vdb; the others have one copy left.
    for k in [(6, 1), (6, 12)] {
        let c = predict(&raid10_n2x3_without_slot_2(vec![0..9], k)).crash_now;
        assert_eq!(c.kind, CostKind::Bitmap, "{}", c.reason);
        assert_eq!(c.chunks, 9);
        assert_eq!(c.sync_bytes_per_member, 3 * 65536);
        assert_eq!(
            reads(&c),
            vec![
                ("vda".into(), 3 * 65536, 0),
                ("vdb".into(), 3 * 65536, 3 * 65536)
            ],
            "{k:?}"
        );
        assert!(c.reason.contains("bits stay set"), "{}", c.reason);
    }
}

#[test]
fn raid10_degraded_crash_pace_counts_given_up_ranges_before_6_11_only() {
    // Before 6.11 the given-up chunks 1-2 and 4-5 are returned with the reads of 3 and 6
    // and counted (7 chunks); 7-8, given up before the end, are not. From 6.11: 3 chunks.
    let d = |k| {
        let c = predict(&raid10_n2x3_without_slot_2(vec![0..9], k)).crash_now;
        c.duration.map(|d| d.idle_secs)
    };
    assert_eq!(d((6, 1)), Some(throttled_secs(7 * 65536, 2048.0)));
    // From 6.11 each given-up range ends md's resync pass: not predicted.
    assert_eq!(d((6, 12)), None);
    let c = predict(&raid10_n2x3_without_slot_2(vec![0..1, 3..4], (6, 12))).crash_now;
    let secs = c.duration.map(|d| d.idle_secs);
    assert_eq!(
        secs,
        Some(throttled_secs(2 * 65536, 2048.0)),
        "{}",
        c.reason
    );
}

#[test]
fn raid10_degraded_crash_ends_early_before_6_11_after_raid_disks_give_ups() {
    // 512 KiB RAID chunks: array chunk 0 (bitmap chunks 0-7) keeps both copies; chunk 1
    // (bitmap chunks 8-15) has one, and its first three 64 KiB requests are given up in one
    // call: before 6.11 the resync ends there; from 6.11 it goes on to chunk 3 (48-55).
    let mut inp = raid10_n2x3_without_slot_2(vec![0..64], (6, 1));
    inp.chunk_size_bytes = 512 << 10;
    let c = predict(&inp).crash_now;
    assert_eq!(reads(&c)[0].1, 8 * 65536, "{}", c.reason);
    assert!(
        c.reason.contains("ends at array sector 1408"),
        "{}",
        c.reason
    );
    inp.kernel = Some((6, 12));
    let c = predict(&inp).crash_now;
    assert_eq!(reads(&c)[0].1, 24 * 65536, "{}", c.reason);
    assert!(!c.reason.contains("ends at"), "{}", c.reason);
}

#[test]
fn raid10_degraded_crash_needs_the_kernel_release() {
    let mut inp = raid10_n2x3_without_slot_2(vec![0..3], (6, 1));
    inp.kernel = None;
    let c = predict(&inp).crash_now;
    assert_eq!(c.kind, CostKind::Unmodelled, "{}", c.reason);
    assert_eq!(parse_release("6.12.117+deb12-cloud-amd64"), Some((6, 12)));
    assert_eq!(parse_release("6.1.0-56-cloud-amd64\n"), Some((6, 1)));
    assert_eq!(parse_release("garbage"), None);
}

#[test]
fn raid10_re_add_writes_the_members_copies_from_the_first_in_sync_copy() {
    // Member 1 (vdb) left: chunk 0's copies are on members 0 and 1 (row 0), chunk 1's on 2
    // and 0, chunk 2's on 1 and 2 (row 1). Recovery writes vdb's copies of chunks 0 and 2,
    // read from vda and vdc.
    let mut inp = raid10_n2x3(vec![0..3]);
    inp.members.remove(1);
    let p = predict(&inp);
    assert_eq!(p.re_add.len(), 1);
    let c = &p.re_add[0];
    assert_eq!(c.kind, CostKind::Bitmap, "{}", c.reason);
    assert_eq!(c.slot, Some(1));
    let io = name_read_write(c);
    assert_eq!(
        io,
        vec![
            ("vda", 65536, 0),
            ("vdc", 65536, 0),
            (REMOVED_MEMBER, 0, 2 * 65536)
        ]
    );
    assert_eq!(c.sync_bytes_per_member, 2 * 65536);
    assert!(c.duration.is_none());
    assert!(c.reason.contains("not predicted"), "{}", c.reason);
    // Chunk 100 (copies at positions 200 and 201: members 2 and 0, rows 66 and 67) has no
    // copy on member 1: nothing to recover.
    let mut inp = raid10_n2x3(vec![100..101]);
    inp.members.remove(1);
    let c = &predict(&inp).re_add[0];
    assert_eq!(c.total_write_bytes, 0);
}

#[test]
fn raid10_re_add_paces_the_members_span_before_6_11_only() {
    // vdb's copies of chunks 0 and 2 lie at its rows 0 and 1; chunk 301's second copy
    // (position 603: member 0, row 201) is not vdb's, chunk 300's (position 601: member 1,
    // row 200) is: vdb's span up to it is 201 rows of 64 KiB, all paced before 6.11.
    let mut inp = raid10_n2x3(vec![0..3, 300..302]);
    inp.members.remove(1);
    inp.kernel = Some((6, 1));
    let c = &predict(&inp).re_add[0];
    assert_eq!(c.sync_bytes_per_member, 3 * 65536, "{}", c.reason);
    let d = c.duration.as_ref().expect("paced before 6.11");
    assert_eq!(d.idle_secs, throttled_secs(201 * 65536, 2048.0));
    assert!(c.reason.contains("member's span"), "{}", c.reason);
    inp.kernel = Some((6, 12));
    let c = &predict(&inp).re_add[0];
    assert!(c.duration.is_none());
    assert!(c.reason.contains("from 6.11"), "{}", c.reason);
}
