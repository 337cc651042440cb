//! Parsing members built from the documented layouts: every metadata version, dirty patterns,
//! partial last bytes, lockless and clustered bitmaps, and every kind of bad input.
#[path = "inspect_support.rs"]
mod support;

use md_bitmap::inspect::{self, InspectArgs, human_chunksize, human_size, render_map, render_text};
use md_bitmap::ondisk::bitmap::{LocklessState, scan_bits, scan_lockless};
use md_bitmap::ondisk::{
    BitmapContent, ByteOrder, DeviceRole, MetadataVersion, OndiskError, examine_member, read_member,
};
use proptest::prelude::*;
use support::{BitmapSpec, Meta, Spec, build, write_image};

fn examine(spec: &Spec) -> Result<md_bitmap::ondisk::MemberBitmap, OndiskError> {
    examine_member(&build(spec))
}

fn ranges(m: &md_bitmap::ondisk::MemberBitmap) -> Vec<(u64, u64)> {
    m.dirty()
        .dirty_ranges
        .iter()
        .map(|r| (r.start, r.end))
        .collect()
}

#[test]
fn every_metadata_version_finds_the_same_bitmap() {
    let dirty = vec![0, 1, 2, 63, 64, 124];
    for (meta, version, order) in [
        (Meta::V090Le, MetadataVersion::V0_90, ByteOrder::Little),
        (Meta::V090Be, MetadataVersion::V0_90, ByteOrder::Big),
        (Meta::V10, MetadataVersion::V1_0, ByteOrder::Little),
        (Meta::V11, MetadataVersion::V1_1, ByteOrder::Little),
        (Meta::V12, MetadataVersion::V1_2, ByteOrder::Little),
    ] {
        let mut b = BitmapSpec::classic(65536, 16000, dirty.clone());
        b.events = 77;
        b.events_cleared = 70;
        let mut spec = Spec::new(meta, 4096 + 8, Some(b));
        spec.events = 0x1_0000_0005;
        let m = examine(&spec).unwrap_or_else(|e| panic!("{meta:?}: {e}"));
        let sb = &m.superblock;
        assert_eq!(sb.version, version, "{meta:?}");
        assert_eq!(sb.byte_order, order, "{meta:?}");
        assert_eq!(sb.offset_bytes, spec.sb_sector() * 512, "{meta:?}");
        assert_eq!(sb.array_uuid, spec.uuid, "{meta:?}");
        assert_eq!(sb.level, 1);
        assert_eq!(sb.level_name(), Some("raid1"));
        assert_eq!(sb.raid_disks, 2);
        assert_eq!(sb.events, 0x1_0000_0005, "{meta:?}: events hi/lo order");
        assert_eq!(sb.role, DeviceRole::Active(1), "{meta:?}");
        assert!(sb.checksum_valid, "{meta:?}");
        assert_eq!(m.bitmap_offset_bytes, spec.bitmap_byte(), "{meta:?}");
        assert_eq!(m.bitmap.version, 4);
        assert_eq!(m.bitmap.events, 77);
        assert_eq!(m.bitmap.events_cleared, 70);
        let d = m.dirty();
        assert_eq!(d.chunks, 125);
        assert_eq!(d.dirty_chunks, 6);
        assert_eq!(ranges(&m), vec![(0, 3), (63, 65), (124, 125)], "{meta:?}");
        assert!(m.warnings.is_empty(), "{meta:?}: {:?}", m.warnings);
    }
}

#[test]
fn uuid_is_printed_like_mdadm_for_each_metadata() {
    let b = BitmapSpec::classic(65536, 16000, vec![]);
    let v1 = examine(&Spec::new(Meta::V12, 4096, Some(b.clone()))).unwrap();
    assert_eq!(
        v1.superblock.uuid_string_for(&v1.bitmap.uuid),
        "10111213:14151617:18191a1b:1c1d1e1f"
    );
    // 0.90: four host-endian words (mdadm's swapuuid is 0 for 0.90).
    let v0 = examine(&Spec::new(Meta::V090Le, 4096, Some(b.clone()))).unwrap();
    assert_eq!(
        v0.superblock.uuid_string_for(&v0.bitmap.uuid),
        "13121110:17161514:1b1a1918:1f1e1d1c"
    );
    let be = examine(&Spec::new(Meta::V090Be, 4096, Some(b))).unwrap();
    assert_eq!(
        be.superblock.array_uuid_string(),
        "10111213:14151617:18191a1b:1c1d1e1f"
    );
}

#[test]
fn partial_last_byte_counts_only_its_low_bits() {
    // 125 chunks: the last byte holds 5 chunks; bits past them and bytes after are ignored.
    let mut b = BitmapSpec::classic(65536, 16000, vec![120, 124]);
    b.trailing_garbage = true;
    let m = examine(&Spec::new(Meta::V12, 4096, Some(b))).unwrap();
    assert_eq!(m.dirty().chunks, 125);
    assert_eq!(m.dirty().dirty_chunks, 2);
    assert_eq!(ranges(&m), vec![(120, 121), (124, 125)]);
}

#[test]
fn chunk_count_rounds_up_and_whole_bytes_work() {
    // 16 chunks exactly, all dirty.
    let b = BitmapSpec::classic(4096, 128, (0..16).collect());
    let m = examine(&Spec::new(Meta::V11, 4096, Some(b))).unwrap();
    assert_eq!(m.dirty().chunks, 16);
    assert_eq!(ranges(&m), vec![(0, 16)]);
    // One sector more needs a 17th chunk.
    let b = BitmapSpec::classic(4096, 129, vec![16]);
    let m = examine(&Spec::new(Meta::V11, 4096, Some(b))).unwrap();
    assert_eq!(m.dirty().chunks, 17);
    assert_eq!(ranges(&m), vec![(16, 17)]);
}

#[test]
fn empty_bitmap_has_no_chunks() {
    let b = BitmapSpec::classic(65536, 0, vec![]);
    let m = examine(&Spec::new(Meta::V12, 4096, Some(b))).unwrap();
    assert_eq!(m.dirty().chunks, 0);
    assert!(render_text("x", &m).contains("Bitmap : 0 bits (chunks), 0 dirty (0.0%)"));
}

#[test]
fn large_dirty_runs_merge_across_bytes_and_words() {
    let mut dirty: Vec<u64> = (5..200).collect();
    dirty.extend(1000..1003);
    dirty.push(4095);
    let b = BitmapSpec::classic(4096, 4096 * 8, dirty);
    let m = examine(&Spec::new(Meta::V12, 8192, Some(b))).unwrap();
    assert_eq!(m.dirty().chunks, 4096);
    assert_eq!(m.dirty().dirty_chunks, 195 + 3 + 1);
    assert_eq!(ranges(&m), vec![(5, 200), (1000, 1003), (4095, 4096)]);
}

#[test]
fn explicit_negative_and_positive_v1_offsets_are_followed() {
    let b = BitmapSpec::classic(65536, 16000, vec![3]);
    let mut spec = Spec::new(Meta::V12, 4096, Some(b.clone()));
    spec.bitmap_offset = Some(2); // 1 KiB after the superblock ("may not change" placement)
    let m = examine(&spec).unwrap();
    assert_eq!(m.bitmap_offset_bytes, (8 + 2) * 512);
    assert_eq!(ranges(&m), vec![(3, 4)]);
    let mut spec = Spec::new(Meta::V10, 4096, Some(b));
    spec.bitmap_offset = Some(-40);
    let m = examine(&spec).unwrap();
    assert_eq!(m.bitmap_offset_bytes, (spec.sb_sector() - 40) * 512);
    assert_eq!(ranges(&m), vec![(3, 4)]);
}

#[test]
fn newer_superblock_wins_when_090_and_1x_coexist() {
    // A 0.90 member later re-created as 1.2 (and vice versa): mdadm takes the later ctime.
    let b = BitmapSpec::classic(65536, 16000, vec![1]);
    let mut old = Spec::new(Meta::V090Le, 4096, Some(b.clone()));
    old.ctime = 1_000;
    let mut new = Spec::new(
        Meta::V12,
        4096,
        Some(BitmapSpec::classic(65536, 16000, vec![2])),
    );
    new.ctime = 2_000;
    let mut img = build(&old);
    let v12 = build(&new);
    img[4096..16384].copy_from_slice(&v12[4096..16384]);
    let m = examine_member(&img).unwrap();
    assert_eq!(m.superblock.version, MetadataVersion::V1_2);
    assert_eq!(ranges(&m), vec![(2, 3)]);
    // Equal times: 0.90 comes first in mdadm's list and wins.
    new.ctime = 1_000;
    let v12 = build(&new);
    img[4096..16384].copy_from_slice(&v12[4096..16384]);
    let m = examine_member(&img).unwrap();
    assert_eq!(m.superblock.version, MetadataVersion::V0_90);
    assert_eq!(ranges(&m), vec![(1, 2)]);
}

#[test]
fn bad_checksum_is_a_warning_not_an_error() {
    for meta in [Meta::V090Le, Meta::V12] {
        let mut spec = Spec::new(meta, 4096, Some(BitmapSpec::classic(65536, 16000, vec![9])));
        spec.bad_checksum = true;
        let m = examine(&spec).unwrap();
        assert!(!m.superblock.checksum_valid);
        assert!(
            m.warnings.iter().any(|w| w.contains("checksum")),
            "{meta:?}"
        );
        assert_eq!(ranges(&m), vec![(9, 10)]);
    }
}

#[test]
fn version_3_host_endian() {
    let mut b = BitmapSpec::classic(65536, 16000, vec![0, 9]);
    b.version = 3;
    // 0.90 from a little-endian host: exact, no caveat.
    let m = examine(&Spec::new(Meta::V090Le, 4096, Some(b.clone()))).unwrap();
    assert_eq!(ranges(&m), vec![(0, 1), (9, 10)]);
    assert!(m.warnings.is_empty());
    // 1.x does not say who wrote it: decoded as little-endian with a caveat.
    let m = examine(&Spec::new(Meta::V12, 4096, Some(b.clone()))).unwrap();
    assert_eq!(m.dirty().dirty_chunks, 2);
    assert!(m.warnings.iter().any(|w| w.contains("host-endian")));
    // 0.90 from a big-endian host: the bit order is unknowable, so a clear error.
    let e = examine(&Spec::new(Meta::V090Be, 4096, Some(b))).unwrap_err();
    assert!(matches!(e, OndiskError::Undecodable(_)), "{e}");
    assert!(e.to_string().contains("big-endian"));
}

#[test]
fn lockless_states_are_counted_per_state() {
    // 64 KiB chunks = 128 sectors; 1000 sectors -> 8 chunks.
    let states = vec![0, 1, 2, 3, 4, 1, 1, 0, 9, 9];
    let b = BitmapSpec::lockless(128, 1000, states);
    let m = examine(&Spec::new(Meta::V12, 4096, Some(b))).unwrap();
    assert_eq!(m.bitmap.chunk_size_bytes(), 65536);
    let BitmapContent::Lockless(l) = &m.content else {
        panic!("not lockless: {:?}", m.content)
    };
    assert_eq!(l.dirty.chunks, 8);
    assert_eq!(l.counts.unwritten, 2);
    assert_eq!(l.counts.clean, 3);
    assert_eq!(l.counts.dirty, 1);
    assert_eq!(l.counts.need_sync, 1);
    assert_eq!(l.counts.syncing, 1);
    assert_eq!(
        l.counts.invalid, 0,
        "bytes past the last chunk are not read"
    );
    assert_eq!(ranges(&m), vec![(2, 5)]);
    let text = render_text("m", &m);
    assert!(text.contains("       Chunksize : 64 KB\n"), "{text}");
    assert!(
        text.contains("    Chunk States : 2 unwritten, 3 clean, 1 dirty, 1 need sync, 1 syncing\n"),
        "{text}"
    );
    assert!(text.contains("Bitmap : 8 chunks (one state byte each), 3 need sync (37.5%)"));
}

#[test]
fn lockless_invalid_and_newer_states() {
    let s = scan_lockless(&[5, 6, 7, 200, 1], 5).unwrap();
    assert_eq!(s.counts.need_sync_unwritten, 1);
    assert_eq!(s.counts.syncing_unwritten, 1);
    assert_eq!(s.counts.clean_unwritten, 1);
    assert_eq!(s.counts.invalid, 1);
    assert_eq!(
        s.dirty.dirty_chunks, 3,
        "5, 6 and an invalid byte need a sync"
    );
    assert_eq!(LocklessState::from_byte(200), LocklessState::Invalid(200));
    assert!(scan_lockless(&[0; 3], 4).is_err());
}

#[test]
fn lockless_first_use_is_not_decoded() {
    let mut b = BitmapSpec::lockless(128, 1000, vec![]);
    b.state = 1 << 3;
    b.chunksize = 64 << 20; // mdadm writes its byte value; the kernel replaces it
    let m = examine(&Spec::new(Meta::V12, 4096, Some(b))).unwrap();
    assert_eq!(m.content, BitmapContent::LocklessUninitialized);
    assert!(m.geometry.is_none());
    assert!(render_text("m", &m).contains("not yet initialised"));
}

#[test]
fn clustered_bitmap_lists_every_slot() {
    let mut b = BitmapSpec::classic(65536, 16000, vec![1]);
    b.version = 5;
    b.nodes = 3;
    b.cluster_name = "clu".into();
    b.slot_dirty = vec![vec![1], vec![2, 3], vec![]];
    b.slot_events = vec![10, 11, 12];
    let mut spec = Spec::new(Meta::V12, 8192, Some(b));
    spec.bitmap_offset = Some(8);
    let m = examine(&spec).unwrap();
    assert_eq!(m.cluster_slots.len(), 3);
    let s1 = m.cluster_slots[1].result.as_ref().unwrap();
    assert_eq!(m.cluster_slots[1].offset_bytes, spec.bitmap_byte() + 4096);
    assert_eq!(s1.bitmap.events, 11);
    assert_eq!(s1.scan.dirty_chunks, 2);
    let text = render_text("m", &m);
    // No Events/State lines in the main block of a clustered bitmap.
    assert!(
        text.lines()
            .nth(4)
            .unwrap()
            .trim_start()
            .starts_with("Chunksize"),
        "{text}"
    );
    assert!(text.contains("   Cluster nodes : 3\n"));
    assert!(text.contains(&format!("    Cluster name : {:<64}\n", "clu")));
    assert!(text.contains("       Node Slot : 2\n          Events : 12\n"));
    assert_eq!(text.matches("Node Slot").count(), 3);
}

#[test]
fn clustered_slot_past_the_end_is_reported_like_mdadm() {
    let mut b = BitmapSpec::classic(65536, 16000, vec![]);
    b.version = 5;
    b.nodes = 2;
    // 1.2 superblock at 4 KiB, bitmap at 8 KiB: a 12 KiB image ends where slot 1 begins.
    let spec = Spec::new(Meta::V12, 24, Some(b));
    let m = examine(&spec).unwrap();
    assert!(m.cluster_slots[0].result.is_ok());
    assert!(m.cluster_slots[1].result.is_err());
    assert!(render_text("m", &m).contains("   Unable to read bitmap on node: 1\n"));
}

#[test]
fn stale_and_write_behind_are_shown() {
    let mut b = BitmapSpec::classic(1 << 26, 1 << 24, vec![]);
    b.state = 2;
    b.write_behind = 256;
    let m = examine(&Spec::new(Meta::V12, 4096, Some(b))).unwrap();
    let t = render_text("m", &m);
    assert!(t.contains("           State : Out of date\n"), "{t}");
    assert!(
        t.contains("      Write Mode : Allow write behind, max 256\n"),
        "{t}"
    );
    assert!(t.contains("       Chunksize : 64 MB\n"), "{t}");
    assert!(
        t.contains("       Sync Size : 8388608 (8.00 GiB 8.59 GB)\n"),
        "{t}"
    );
    assert_eq!(m.bitmap.state_flags(), vec!["stale".to_string()]);
}

/// The exact output of Debian's mdadm 4.2 `mdadm -X` on this image (captured on the dev host).
#[test]
fn text_matches_captured_mdadm_output() {
    let mut b = BitmapSpec::classic(65536, 16000, vec![0, 1, 2, 63, 64]);
    b.events = 100;
    b.events_cleared = 90;
    let m = examine(&Spec::new(Meta::V12, 20480, Some(b))).unwrap();
    let expected = "        Filename : /dev/loop0
           Magic : 6d746962
         Version : 4
            UUID : 10111213:14151617:18191a1b:1c1d1e1f
          Events : 100
  Events Cleared : 90
           State : OK
       Chunksize : 64 KB
          Daemon : 5s flush period
      Write Mode : Normal
       Sync Size : 8000 (7.81 MiB 8.19 MB)
          Bitmap : 125 bits (chunks), 5 dirty (4.0%)
";
    assert_eq!(render_text("/dev/loop0", &m), expected);
}

#[test]
fn human_sizes_follow_mdadm() {
    assert_eq!(human_size(4_000_000), "");
    assert_eq!(human_size(16000 * 512), " (7.81 MiB 8.19 MB)");
    assert_eq!(
        human_size((3 * (1 << 21) + 777) * 512),
        " (3.00 GiB 3.22 GB)"
    );
    assert_eq!(
        human_size((5 * (1i64 << 31) + 12345) * 512),
        " (5.00 TiB 5.50 TB)"
    );
    assert_eq!(human_size(-1), "");
    assert_eq!(human_chunksize(512), "512 B");
    assert_eq!(human_chunksize(65536), "64 KB");
    assert_eq!(human_chunksize(1 << 26), "64 MB");
    assert_eq!(human_chunksize(3 << 20), "3 MB");
    assert_eq!(human_chunksize(1 << 31), "2 GB");
    assert_eq!(human_chunksize(1 << 41), "2 TB");
}

fn err(spec: &Spec) -> OndiskError {
    examine(spec).expect_err("must fail")
}

#[test]
fn not_a_member() {
    let zeros = vec![0u8; 1 << 20];
    let e = examine_member(&zeros).unwrap_err();
    assert!(matches!(e, OndiskError::NotMember), "{e}");
    let e = examine_member(&vec![0u8; 4096]).unwrap_err();
    assert!(matches!(e, OndiskError::TooSmall { .. }), "{e}");
}

#[test]
fn member_without_bitmap() {
    for meta in [Meta::V090Le, Meta::V12, Meta::V10] {
        let e = err(&Spec::new(meta, 4096, None));
        assert!(matches!(e, OndiskError::NoBitmap { .. }), "{meta:?}: {e}");
        assert!(e.to_string().contains("has no internal bitmap"));
    }
    let mut spec = Spec::new(Meta::V12, 4096, None);
    spec.extra_features = 1024;
    assert!(err(&spec).to_string().contains("PPL"));
}

#[test]
fn wrong_bitmap_magic() {
    let mut b = BitmapSpec::classic(65536, 16000, vec![]);
    b.magic = 0xdead_beef;
    let e = err(&Spec::new(Meta::V12, 4096, Some(b)));
    assert!(
        matches!(
            e,
            OndiskError::BadBitmapMagic {
                offset: 8192,
                magic: 0xdead_beef
            }
        ),
        "{e}"
    );
}

#[test]
fn unknown_version_and_uuid_mismatch() {
    let mut b = BitmapSpec::classic(65536, 16000, vec![]);
    b.version = 7;
    assert!(matches!(
        err(&Spec::new(Meta::V12, 4096, Some(b))),
        OndiskError::UnknownBitmapVersion(7)
    ));
    let mut b = BitmapSpec::classic(65536, 16000, vec![]);
    b.uuid = Some([0xee; 16]);
    let e = err(&Spec::new(Meta::V12, 4096, Some(b)));
    assert!(matches!(e, OndiskError::UuidMismatch { .. }), "{e}");
    assert!(e.to_string().contains("eeeeeeee:"));
}

#[test]
fn impossible_geometry() {
    for (chunk, sync, what) in [
        (0u32, 16000u64, "zero"),
        (3000, 16000, "power of two"),
        (256, 16000, "minimum"),
        (65536, u64::MAX / 100, "overflows"),
        (512, 1 << 40, "sanity limit"),
    ] {
        let e = err(&Spec::new(
            Meta::V12,
            4096,
            Some(BitmapSpec::classic(chunk, sync, vec![])),
        ));
        assert!(matches!(e, OndiskError::Geometry(_)), "{chunk}/{sync}: {e}");
        assert!(e.to_string().contains(what), "{chunk}/{sync}: {e}");
    }
    let e = err(&Spec::new(
        Meta::V12,
        4096,
        Some(BitmapSpec::lockless(100, 1000, vec![])),
    ));
    assert!(
        e.to_string().contains("100 sectors is not a power of two"),
        "{e}"
    );
}

#[test]
fn bitmap_running_past_the_end_is_truncated() {
    // 2^24 chunks need 2 MiB of bits; the image is 2 MiB in all (the builder clips them).
    let mut spec = Spec::new(
        Meta::V12,
        4096,
        Some(BitmapSpec::classic(4096, 1 << 27, vec![])),
    );
    spec.size_sectors = 1000;
    let e = examine(&spec).unwrap_err();
    assert!(matches!(e, OndiskError::Truncated { .. }), "{e}");
    assert!(e.to_string().contains("bitmap bit area"), "{e}");
}

#[test]
fn truncated_image_file_and_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let img = build(&Spec::new(
        Meta::V12,
        4096,
        Some(BitmapSpec::classic(512, 64000, vec![5])),
    ));
    // 64000 chunks need 8000 bytes after 8 KiB + 256; cut the file inside them.
    let p = write_image(dir.path(), "cut.img", &img[..12800]);
    let e = read_member(&p).unwrap_err();
    assert!(matches!(e, OndiskError::Truncated { .. }), "{e}");
    assert!(e.to_string().contains("bitmap bit area"), "{e}");
    let e = read_member(&dir.path().join("missing.img")).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("cannot open") && msg.contains("No such file"),
        "{msg}"
    );
    assert!(!msg.contains('\n'));
    let e = read_member(dir.path()).unwrap_err();
    assert!(matches!(e, OndiskError::NotDeviceOrFile(_)), "{e}");
}

#[test]
fn run_reports_one_line_errors_and_succeeds_on_good_members() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_image(
        dir.path(),
        "good.img",
        &build(&Spec::new(
            Meta::V12,
            4096,
            Some(BitmapSpec::classic(65536, 16000, vec![1])),
        )),
    );
    let bad = write_image(dir.path(), "zero.img", &vec![0u8; 1 << 20]);
    let args = |members: Vec<std::path::PathBuf>, json: bool| InspectArgs {
        members,
        json,
        map: false,
        width: None,
    };
    inspect::run(&args(vec![good.clone()], false)).unwrap();
    inspect::run(&args(vec![good.clone()], true)).unwrap();
    let e = inspect::run(&args(vec![bad.clone()], false))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("zero.img") && e.contains("not an md member"),
        "{e}"
    );
    assert!(!e.contains('\n'));
    let e = inspect::run(&args(vec![good, bad.clone(), bad], false))
        .unwrap_err()
        .to_string();
    assert_eq!(e, "2 of 3 members could not be inspected");
}

#[test]
fn map_draws_groups_legend_and_scale() {
    let b = BitmapSpec::classic(65536, 16000, vec![0, 1, 2, 63, 64]);
    let m = examine(&Spec::new(Meta::V12, 4096, Some(b))).unwrap();
    // 125 chunks, 40 columns: label width 3, 34 cells per row, 1 chunk per cell, 4 rows.
    let map = render_map(&m, 40);
    let lines: Vec<&str> = map.lines().collect();
    assert_eq!(lines[0], format!("  0 |###{}|", ".".repeat(31)));
    assert_eq!(lines[1], format!(" 34 |{}##...|", ".".repeat(29)));
    assert_eq!(lines[2], format!(" 68 |{}|", ".".repeat(34)));
    assert!(lines[1].len() <= 40);
    assert_eq!(lines.len(), 6, "{map}");
    assert!(
        lines[4].contains("scale: 1 column = 1 chunk (64 KiB)"),
        "{map}"
    );
    assert!(lines[4].contains("5 of 125 chunks dirty"), "{map}");
    assert!(
        lines[5].contains("legend: '#' all dirty, '+' partly dirty, '.' clean"),
        "{map}"
    );
    // Chunks 63 and 64 land in row 1 at cells 29 and 30.
    let m = {
        let b = BitmapSpec::classic(65536, 16000, vec![63, 64]);
        examine(&Spec::new(Meta::V12, 4096, Some(b))).unwrap()
    };
    let map = render_map(&m, 40);
    let row1 = map.lines().nth(1).unwrap();
    assert_eq!(&row1[5 + 29..5 + 31], "##", "{map}");
    // A narrow map groups chunks: 10 columns minimum 8 cells, 16 rows max.
    let b = BitmapSpec::classic(4096, 4096 * 8, (0..10).collect());
    let m = examine(&Spec::new(Meta::V12, 8192, Some(b))).unwrap();
    let map = render_map(&m, 10);
    assert_eq!(map.lines().count(), 18, "16 rows, scale and legend:\n{map}");
    assert!(map.lines().next().unwrap().contains("+"), "{map}");
    assert!(map.contains("1 column = 32 chunks (128 KiB)"), "{map}");
}

fn naive(bits: &[u8], chunks: u64) -> (u64, Vec<(u64, u64)>) {
    let mut v: Vec<(u64, u64)> = Vec::new();
    let mut n = 0;
    for c in 0..chunks {
        if bits[(c / 8) as usize] & (1 << (c % 8)) != 0 {
            n += 1;
            match v.last_mut() {
                Some(l) if l.1 == c => l.1 = c + 1,
                _ => v.push((c, c + 1)),
            }
        }
    }
    (n, v)
}

proptest! {
    #[test]
    fn scan_bits_matches_a_naive_scan(bits in proptest::collection::vec(any::<u8>(), 0..300), cut in 0u64..8) {
        let chunks = (bits.len() as u64 * 8).saturating_sub(cut);
        let s = scan_bits(&bits, chunks).unwrap();
        let (n, v) = naive(&bits, chunks);
        prop_assert_eq!(s.dirty_chunks, n);
        prop_assert_eq!(s.dirty_ranges.iter().map(|r| (r.start, r.end)).collect::<Vec<_>>(), v);
    }

    #[test]
    fn sparse_patterns_survive_a_round_trip(dirty in proptest::collection::btree_set(0u64..2000, 0..60)) {
        let b = BitmapSpec::classic(4096, 2000 * 8, dirty.iter().copied().collect());
        let m = examine(&Spec::new(Meta::V12, 4096, Some(b))).unwrap();
        let got: Vec<u64> = m.dirty().dirty_ranges.iter().flat_map(|r| r.clone()).collect();
        prop_assert_eq!(got, dirty.into_iter().collect::<Vec<_>>());
    }

    #[test]
    fn garbage_never_panics(mut img in proptest::collection::vec(any::<u8>(), 0..20000), magic_at in 0usize..4) {
        // Plant superblock magics so that the deeper paths are reached too.
        if img.len() >= 8192 {
            let at = [0usize, 4096, img.len() / 512 * 512 - 8192, 0][magic_at];
            img[at..at + 4].copy_from_slice(&0xa92b_4efcu32.to_le_bytes());
            img[at + 4..at + 8].copy_from_slice(&1u32.to_le_bytes());
        }
        if let Ok(m) = examine_member(&img) {
            let _ = render_text("x", &m);
            let _ = render_map(&m, 60);
        }
    }
}

/// Found by the `superblock` fuzz target: a made-up `super_offset` near 2^64 sectors overflowed
/// the byte offset.
#[test]
fn v1_superblock_at_an_impossible_offset_is_rejected() {
    use md_bitmap::ondisk::superblock::parse_v1;
    let mut buf = vec![0u8; 4096];
    buf[0..4].copy_from_slice(&0xa92b_4efcu32.to_le_bytes());
    buf[4..8].copy_from_slice(&1u32.to_le_bytes());
    buf[144..152].copy_from_slice(&u64::MAX.to_le_bytes());
    let e = parse_v1(&buf, u64::MAX, MetadataVersion::V1_2).unwrap_err();
    assert!(matches!(e, OndiskError::NoSuperblockHere(_)), "{e}");
    // A wide map request is clamped rather than overflowing.
    let m = examine(&Spec::new(
        Meta::V12,
        4096,
        Some(BitmapSpec::classic(65536, 16000, vec![1])),
    ))
    .unwrap();
    assert!(render_map(&m, usize::MAX).lines().next().unwrap().len() < 4200);
}
