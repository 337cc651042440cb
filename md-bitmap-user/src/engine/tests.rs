//! One test per kernel rule, named after the rule.

use super::*;

/// daemon_sleep used by these tests (arbitrary time unit).
const SLEEP: u64 = 100;
/// 4 KiB bitmap chunks = 8 sectors.
const CHUNK: u64 = 4096;
const CS: u64 = CHUNK / 512;

fn geo(chunks: u64) -> BitmapGeometry {
    BitmapGeometry::from_chunks(CHUNK, chunks).unwrap()
}

fn bitmap(kernel: KernelVariant, chunks: u64) -> Bitmap {
    Bitmap::new(geo(chunks), BitmapConfig::new(kernel, SLEEP), 0)
}

fn sec(chunk: u64) -> u64 {
    chunk * CS
}

/// A daemon pass one `daemon_sleep` after the previous one.
fn pass(bm: &mut Bitmap) -> DaemonOutcome {
    let now = bm.daemon_lastrun() + SLEEP;
    bm.daemon_work(now)
}

/// One complete write (start, unplug, end) on a healthy array.
fn write(bm: &mut Bitmap, chunk: u64) {
    assert_eq!(bm.start_write(sec(chunk), CS, false), StartOutcome::Started);
    bm.unplug();
    bm.end_write(sec(chunk), CS, true, false, false);
}

fn assert_consistent(bm: &Bitmap) {
    assert!(
        bm.check_consistency().is_empty(),
        "{:?}",
        bm.check_consistency()
    );
}

// ---- start-write --------------------------------------------------------------------------

#[test]
fn write_to_clean_chunk_sets_cached_bit_and_counter_3() {
    let mut bm = bitmap(KernelVariant::V6_14, 100);
    assert_eq!(bm.start_write(sec(7), CS, false), StartOutcome::Started);
    assert_eq!(bm.counter(7), Counter(3));
    assert!(bm.cached_bit(7));
    assert!(
        !bm.disk_bit(7),
        "the disk copy changes only when the page is written"
    );
    assert!(bm.file_page_attrs(0).dirty);
    let p = bm.counter_page(0);
    assert!(p.allocated);
    assert_eq!(p.count, 1);
    assert_consistent(&bm);
}

#[test]
fn write_to_clean_chunk_sets_disk_bit_and_counter_3() {
    let mut bm = bitmap(KernelVariant::V6_14, 100);
    bm.start_write(sec(7), CS, false);
    assert_eq!(bm.unplug(), 1);
    assert!(bm.disk_bit(7));
    assert_eq!(bm.counter(7), Counter(3));
    assert!(!bm.file_page_attrs(0).dirty);
    assert_eq!(bm.page_writes().unplug_dirty, 1);
    assert_eq!(bm.page_writes().unplug_batches, 1);
    assert_eq!(bm.unplug(), 0, "nothing left to write");
}

#[test]
fn concurrent_writes_leave_n_plus_2() {
    let mut bm = bitmap(KernelVariant::V6_14, 100);
    for _ in 0..5 {
        bm.start_write(sec(3), CS, false);
    }
    assert_eq!(bm.counter(3), Counter(7));
    assert_eq!(bm.counter(3).writes_in_flight(), 5);
    assert_eq!(bm.counter_page(0).count, 1, "counted once, on 0 -> 3");
}

#[test]
fn write_to_half_cleaned_chunk_restores_two_ticks_without_dirtying() {
    let mut bm = bitmap(KernelVariant::V6_14, 100);
    write(&mut bm, 3);
    pass(&mut bm); // 2 -> 1
    assert_eq!(bm.counter(3), Counter(1));
    bm.start_write(sec(3), CS, false);
    assert_eq!(bm.counter(3), Counter(3));
    assert!(
        !bm.file_page_attrs(0).dirty,
        "the bit is still set: no page write"
    );
    assert_eq!(bm.unplug(), 0);
}

#[test]
fn write_keeps_needed_flag_and_sets_no_bit() {
    let mut bm = bitmap(KernelVariant::V6_14, 100);
    bm.start_write(sec(3), CS, false);
    bm.unplug();
    bm.end_write(sec(3), CS, true, false, true); // degraded: NEEDED|2
    assert_eq!(bm.counter(3), Counter(NEEDED_MASK | 2));
    bm.start_write(sec(3), CS, false);
    assert_eq!(bm.counter(3), Counter(NEEDED_MASK | 3));
    assert!(!bm.file_page_attrs(0).dirty);
}

#[test]
fn multi_chunk_write_counts_each_chunk() {
    let mut bm = bitmap(KernelVariant::V6_14, 100);
    // Sectors 4..20 touch chunks 0, 1 and 2.
    bm.start_write(4, 16, false);
    assert_eq!(
        (bm.counter(0), bm.counter(1), bm.counter(2), bm.counter(3)),
        (Counter(3), Counter(3), Counter(3), Counter(0))
    );
    bm.end_write(4, 16, true, false, false);
    assert_eq!(bm.summary().in_flight_chunks, 0);
    assert_eq!(bm.summary().nonzero_chunks, 3);
}

#[test]
fn page_writes_count_one_per_file_page_not_per_chunk() {
    let mut bm = bitmap(KernelVariant::V6_14, 40_000); // 2 file pages
    bm.start_write(sec(1), CS, false);
    bm.start_write(sec(2), CS, false);
    bm.start_write(sec(35_000), CS, false);
    assert_eq!(bm.unplug(), 2);
    assert_eq!(bm.page_writes().unplug_dirty, 2);
    assert_eq!(bm.page_writes().unplug_batches, 1);
}

// ---- counter max --------------------------------------------------------------------------

fn fill_to_max(bm: &mut Bitmap, chunk: u64) {
    while bm.counter(chunk).count() < COUNTER_MAX {
        assert_eq!(bm.start_write(sec(chunk), CS, false), StartOutcome::Started);
    }
}

#[test]
fn counter_max_blocks_writer() {
    let mut bm = bitmap(KernelVariant::V6_14, 100);
    fill_to_max(&mut bm, 5);
    assert_eq!(bm.counter(5).writes_in_flight(), COUNTER_MAX - 2);
    let out = bm.start_write(sec(5), CS, false);
    let StartOutcome::Blocked { ticket, chunk } = out else {
        panic!("expected a blocked writer, got {out:?}");
    };
    assert_eq!(chunk, 5);
    assert_eq!(
        bm.counter(5).count(),
        COUNTER_MAX,
        "a blocked writer does not count"
    );
    assert_eq!(bm.blocked_writers()[0].ticket, ticket);
    assert_eq!(bm.summary().blocked_writers, 1);
    assert_eq!(bm.summary().blocked_chunks, 1);
}

#[test]
fn end_write_on_max_chunk_releases_blocked_writer() {
    let mut bm = bitmap(KernelVariant::V6_14, 100);
    fill_to_max(&mut bm, 5);
    let StartOutcome::Blocked { ticket, .. } = bm.start_write(sec(5), CS, false) else {
        panic!()
    };
    let out = bm.end_write(sec(5), CS, true, false, false);
    assert!(out.woke);
    assert_eq!(out.resumed, 1);
    assert_eq!(
        bm.counter(5).count(),
        COUNTER_MAX,
        "the woken writer took the slot"
    );
    assert!(bm.blocked_writers().is_empty());
    assert_eq!(bm.take_resumed(), vec![ticket]);
    assert!(bm.take_resumed().is_empty());
}

#[test]
fn blocked_writer_resumes_the_rest_of_its_range() {
    let mut bm = bitmap(KernelVariant::V6_14, 100);
    fill_to_max(&mut bm, 6);
    // Chunks 5, 6, 7: 5 is counted, 6 blocks, 7 waits.
    let out = bm.start_write(sec(5), 3 * CS, false);
    assert!(matches!(out, StartOutcome::Blocked { chunk: 6, .. }));
    assert_eq!(bm.counter(5), Counter(3));
    assert_eq!(bm.counter(7), Counter(0));
    // Two writers blocked; one end-write frees one slot: the first retries and wins, the
    // second blocks again.
    let second = bm.start_write(sec(6), CS, false);
    assert!(matches!(second, StartOutcome::Blocked { .. }));
    let out = bm.end_write(sec(6), CS, true, false, false);
    assert_eq!(out.resumed, 1);
    assert_eq!(bm.counter(7), Counter(3));
    assert_eq!(bm.blocked_writers().len(), 1);
}

// ---- end-write ----------------------------------------------------------------------------

#[test]
fn end_write_to_2_marks_counter_page_pending_and_clears_allclean() {
    let mut bm = bitmap(KernelVariant::V6_14, 5000);
    bm.start_write(sec(4000), CS, false);
    bm.unplug();
    pass(&mut bm);
    pass(&mut bm);
    assert_eq!(pass(&mut bm), DaemonOutcome::AllClean);
    assert!(bm.allclean());
    assert!(!bm.counter_page(1).pending);
    bm.end_write(sec(4000), CS, true, false, false);
    assert_eq!(bm.counter(4000), Counter(2));
    assert!(bm.counter_page(1).pending);
    assert!(!bm.allclean());
}

#[test]
fn end_write_on_needed_chunk_does_not_mark_page_pending() {
    let mut bm = bitmap(KernelVariant::V6_14, 100);
    bm.start_write(sec(1), CS, false);
    bm.start_write(sec(1), CS, false);
    pass(&mut bm); // clears the pending flags
    bm.end_write(sec(1), CS, true, false, true); // NEEDED|3: raw value > 2
    assert!(!bm.counter_page(0).pending);
}

#[test]
fn successful_write_advances_events_cleared_on_6_13() {
    let mut bm = bitmap(KernelVariant::V6_1, 100);
    bm.set_events(5);
    write(&mut bm, 1);
    assert_eq!(bm.events_cleared(), 5);
    assert!(bm.need_sync());
    assert_eq!(bm.counter(1), Counter(2));
}

#[test]
fn failed_write_sets_needed_on_6_13() {
    let mut bm = bitmap(KernelVariant::V6_1, 100);
    bm.set_events(5);
    bm.start_write(sec(1), CS, false);
    bm.end_write(sec(1), CS, false, false, false);
    assert_eq!(bm.counter(1), Counter(NEEDED_MASK | 2));
    assert_eq!(bm.events_cleared(), 0);
    assert!(!bm.need_sync());
}

#[test]
fn successful_write_while_degraded_sets_nothing_on_6_13() {
    let mut bm = bitmap(KernelVariant::V6_12, 100);
    bm.set_events(5);
    bm.start_write(sec(1), CS, false);
    bm.end_write(sec(1), CS, true, false, true);
    assert_eq!(
        bm.counter(1),
        Counter(2),
        "the ≤6.13 rule looks at success only"
    );
    assert_eq!(bm.events_cleared(), 0);
}

#[test]
fn degraded_write_sets_needed_on_6_14() {
    let mut bm = bitmap(KernelVariant::V6_14, 100);
    bm.set_events(5);
    bm.start_write(sec(1), CS, false);
    bm.end_write(sec(1), CS, true, false, true);
    assert_eq!(bm.counter(1), Counter(NEEDED_MASK | 2));
    assert_eq!(bm.events_cleared(), 0);
    assert!(!bm.need_sync());
}

#[test]
fn success_flag_is_ignored_on_6_14() {
    let mut bm = bitmap(KernelVariant::V6_14, 100);
    bm.set_events(5);
    bm.start_write(sec(1), CS, false);
    bm.end_write(sec(1), CS, false, false, false);
    assert_eq!(bm.counter(1), Counter(2));
    assert_eq!(bm.events_cleared(), 5);
    assert!(bm.need_sync());
}

#[test]
fn needed_survives_daemon_while_degraded() {
    let mut bm = bitmap(KernelVariant::V6_14, 100);
    bm.start_write(sec(9), CS, false);
    bm.unplug();
    bm.end_write(sec(9), CS, true, false, true);
    for _ in 0..10 {
        pass(&mut bm);
    }
    assert_eq!(bm.counter(9), Counter(NEEDED_MASK | 2));
    assert!(bm.cached_bit(9) && bm.disk_bit(9));
}

#[test]
fn end_write_on_unallocated_page_ends_the_call() {
    // Unbalanced on purpose: the kernel returns at the first missing counter page.
    let mut bm = bitmap(KernelVariant::V6_14, 3 * 2048);
    bm.start_write(sec(2047), CS, false);
    bm.start_write(sec(4096), CS, false);
    bm.end_write(sec(2047), 2050 * CS, true, false, false); // chunks 2047..=4096
    assert_eq!(bm.counter(2047), Counter(2));
    assert_eq!(
        bm.counter(4096),
        Counter(3),
        "never reached: page 1 is missing"
    );
    assert_eq!(bm.anomalies().end_write_unallocated, 1);
}

#[test]
fn end_write_underflow_wraps_like_kernel() {
    let mut bm = bitmap(KernelVariant::V6_14, 100);
    write(&mut bm, 1);
    pass(&mut bm); // 1
    bm.end_write(sec(1), CS, true, false, false); // unbalanced: 1 -> 0
    bm.end_write(sec(1), CS, true, false, false); // 0 -> 0xFFFF
    assert_eq!(bm.counter(1), Counter(0xFFFF));
    assert_eq!(bm.anomalies().end_write_underflow, 1);
}

#[test]
fn write_past_chunks_inside_last_counter_page_is_counted() {
    let mut bm = bitmap(KernelVariant::V6_14, 100);
    assert_eq!(bm.start_write(sec(500), CS, false), StartOutcome::Started);
    bm.unplug();
    assert!(bm.disk_bit(500));
    assert_eq!(bm.counter(500), Counter(3));
    assert!(bm.cached_bit(500), "a padding bit of page 0");
    assert_eq!(bm.anomalies().beyond_chunks, 1);
    bm.end_write(sec(500), CS, true, false, false);
    for _ in 0..5 {
        pass(&mut bm);
    }
    assert_eq!(
        bm.counter(500),
        Counter(2),
        "the daemon walks only 0..chunks"
    );
    assert_eq!(bm.summary().disk_dirty_chunks, 0, "padding is not a chunk");
}

#[test]
fn write_past_last_counter_page_is_ignored() {
    let mut bm = bitmap(KernelVariant::V6_14, 100);
    assert_eq!(bm.start_write(sec(2048), CS, false), StartOutcome::Started);
    assert_eq!(bm.counter(2048), Counter(0));
    assert_eq!(bm.summary().nonzero_chunks, 0);
    assert_eq!(bm.anomalies().beyond_last_page, 1);
}

// ---- write-behind -------------------------------------------------------------------------

#[test]
fn behind_flag_counts_write_behind_and_high_water_mark_on_6_13() {
    let mut bm = bitmap(KernelVariant::V6_1, 100);
    bm.start_write(sec(1), CS, true);
    bm.start_write(sec(2), CS, true);
    bm.end_write(sec(1), CS, true, true, false);
    assert_eq!(bm.behind_writes(), 1);
    assert_eq!(bm.behind_writes_used(), 2);
    bm.reset_behind_writes_used();
    assert_eq!(bm.behind_writes_used(), 0);
    bm.start_write(sec(3), CS, true);
    assert_eq!(bm.behind_writes_used(), 2);
}

#[test]
fn separate_behind_write_calls_on_6_14() {
    let mut bm = bitmap(KernelVariant::V6_14, 100);
    bm.start_behind_write();
    bm.start_write(sec(1), CS, false);
    bm.start_behind_write();
    bm.end_behind_write();
    assert_eq!((bm.behind_writes(), bm.behind_writes_used()), (1, 2));
    bm.end_behind_write();
    bm.end_behind_write();
    assert_eq!(bm.behind_writes(), -1, "atomic_t goes negative");
    assert_eq!(bm.anomalies().behind_underflow, 1);
}

// ---- daemon -------------------------------------------------------------------------------

#[test]
fn bit_leaves_disk_after_two_to_three_idle_sweeps() {
    let mut bm = bitmap(KernelVariant::V6_14, 100);
    write(&mut bm, 4);
    assert_eq!(bm.counter(4), Counter(2));

    let p1 = pass(&mut bm);
    assert_eq!(p1.pass().unwrap().ticked, 1);
    assert_eq!(bm.counter(4), Counter(1));
    assert!(bm.cached_bit(4) && bm.disk_bit(4));

    let p2 = pass(&mut bm);
    assert_eq!(p2.pass().unwrap().cleared, 1);
    assert_eq!(bm.counter(4), Counter(0));
    assert!(!bm.cached_bit(4), "cleared in the cache on the second pass");
    assert!(bm.disk_bit(4), "but not yet on disk");
    assert!(bm.file_page_attrs(0).pending);
    assert_eq!(bm.page_writes().daemon, 0);

    let p3 = pass(&mut bm);
    assert_eq!(p3.pass().unwrap().pages_written, 1);
    assert!(!bm.disk_bit(4), "written on the third pass");
    assert_eq!(bm.page_writes().daemon, 1);
    assert_eq!(pass(&mut bm), DaemonOutcome::AllClean);
}

#[test]
fn cleared_bit_rides_with_needwrite_page_after_two_sweeps() {
    let mut bm = bitmap(KernelVariant::V6_14, 100);
    write(&mut bm, 1);
    pass(&mut bm); // chunk 1: 2 -> 1
    write(&mut bm, 2);
    pass(&mut bm); // chunk 1: 1 -> 0, page PENDING; chunk 2: 2 -> 1
    assert!(bm.disk_bit(2));
    pass(&mut bm); // page NEEDWRITE first, chunk 2: 1 -> 0 (no PENDING), page written
    assert!(!bm.disk_bit(1));
    assert!(!bm.disk_bit(2), "two sweeps after chunk 2 went idle");
    assert!(!bm.file_page_attrs(0).pending);
}

#[test]
fn unplug_writes_pending_page_early_when_it_is_dirty() {
    let mut bm = bitmap(KernelVariant::V6_14, 100);
    write(&mut bm, 1);
    pass(&mut bm);
    pass(&mut bm); // chunk 1 cleared in cache, page PENDING
    bm.start_write(sec(2), CS, false); // page DIRTY too
    let before = bm.page_writes();
    assert_eq!(bm.unplug(), 1);
    assert!(
        !bm.disk_bit(1),
        "the cleared bit went out with the dirty page"
    );
    assert!(bm.disk_bit(2));
    assert!(!bm.file_page_attrs(0).pending);
    assert_eq!(bm.page_writes().unplug_dirty, before.unplug_dirty + 1);
    assert_eq!(bm.page_writes().daemon, 0);
}

#[test]
fn unplug_writes_needwrite_only_pages() {
    let mut bm = bitmap(KernelVariant::V6_14, 100);
    write(&mut bm, 1);
    bm.write_all();
    assert!(bm.file_page_attrs(0).needwrite);
    assert_eq!(bm.unplug(), 1);
    assert_eq!(bm.page_writes().unplug_needwrite, 1);
}

#[test]
fn daemon_waits_for_daemon_sleep() {
    let mut bm = bitmap(KernelVariant::V6_14, 100);
    write(&mut bm, 1);
    assert_eq!(bm.daemon_work(SLEEP - 1), DaemonOutcome::NotDue);
    assert_eq!(bm.counter(1), Counter(2));
    assert!(bm.daemon_work(SLEEP).ran());
    assert_eq!(bm.daemon_lastrun(), SLEEP);
    assert_eq!(bm.next_daemon_due(), 2 * SLEEP);
    assert_eq!(bm.daemon_work(2 * SLEEP - 1), DaemonOutcome::NotDue);
}

#[test]
fn daemon_time_check_survives_clock_wrap() {
    let start = u64::MAX - 10;
    let mut bm = Bitmap::new(
        geo(100),
        BitmapConfig::new(KernelVariant::V6_14, SLEEP),
        start,
    );
    write(&mut bm, 1);
    assert_eq!(
        bm.daemon_work(start.wrapping_add(50)),
        DaemonOutcome::NotDue
    );
    assert!(bm.daemon_work(start.wrapping_add(SLEEP)).ran());
    assert!(
        time_before(u64::MAX, 5),
        "time_before compares as signed difference"
    );
}

#[test]
fn allclean_pass_stops_the_daemon_timer() {
    let mut bm = bitmap(KernelVariant::V6_14, 100);
    bm.seed_from_disk(&[], 0, 0);
    assert_eq!(bm.daemon_timeout(), Some(SLEEP));
    assert!(pass(&mut bm).ran(), "allclean starts at 0 (kzalloc)");
    assert_eq!(pass(&mut bm), DaemonOutcome::AllClean);
    assert_eq!(bm.daemon_timeout(), None, "MAX_SCHEDULE_TIMEOUT");
    bm.start_write(sec(1), CS, false);
    assert_eq!(
        pass(&mut bm),
        DaemonOutcome::AllClean,
        "start-write leaves allclean set"
    );
    bm.end_write(sec(1), CS, true, false, false);
    assert!(pass(&mut bm).ran());
    assert_eq!(bm.daemon_timeout(), Some(SLEEP));
}

#[test]
fn daemon_visits_only_pending_counter_pages() {
    let mut bm = bitmap(KernelVariant::V6_14, 6 * 2048);
    bm.start_write(sec(10), CS, false);
    bm.start_write(sec(5 * 2048), CS, false);
    pass(&mut bm); // clears pending everywhere
    bm.end_write(sec(10), CS, true, false, false);
    let out = pass(&mut bm);
    assert_eq!(out.pass().unwrap().counter_pages_visited, 1);
    assert_eq!(bm.counter(5 * 2048), Counter(3));
}

#[test]
fn daemon_stops_writing_at_first_dirty_page() {
    let mut bm = bitmap(KernelVariant::V6_14, 40_000); // file pages 0 and 1
    write(&mut bm, 35_000);
    pass(&mut bm);
    pass(&mut bm); // chunk 35000 cleared in cache: page 1 PENDING
    bm.start_write(sec(5), CS, false); // page 0 DIRTY, not yet unplugged
    let out = pass(&mut bm);
    assert_eq!(out.pass().unwrap().pages_written, 0);
    assert!(bm.file_page_attrs(1).needwrite);
    assert!(bm.disk_bit(35_000), "held back behind the dirty page 0");
    assert_eq!(bm.unplug(), 2);
    assert!(!bm.disk_bit(35_000));
}

#[test]
fn need_sync_copies_events_cleared_to_superblock_page_0() {
    let mut bm = bitmap(KernelVariant::V6_14, 40_000);
    bm.set_events(9);
    write(&mut bm, 35_000); // page 1 only
    assert!(bm.need_sync());
    let out = pass(&mut bm);
    let p = out.pass().unwrap();
    assert!(p.synced_events_cleared);
    assert!(!bm.need_sync());
    assert_eq!(bm.sb().events_cleared, 9);
    assert_eq!(
        bm.disk_sb().events_cleared,
        9,
        "page 0 written in the same pass"
    );
    assert_eq!(p.pages_written, 1);
}

#[test]
fn need_sync_is_cleared_before_the_counter_walk() {
    // With internal metadata the walk never sees need_sync: a chunk at 1 is cleaned in the
    // same pass that handles need_sync.
    let mut bm = bitmap(KernelVariant::V6_14, 100);
    write(&mut bm, 1);
    pass(&mut bm);
    bm.set_events(3);
    write(&mut bm, 2); // need_sync
    bm.end_write(sec(1), 0, true, false, false); // zero-length: no-op
    assert!(bm.need_sync());
    let out = pass(&mut bm);
    assert_eq!(out.pass().unwrap().cleared, 1);
    assert_eq!(bm.counter(1), Counter(0));
}

#[test]
fn counter_page_is_freed_when_its_last_counter_cleans() {
    let g = BitmapGeometry::from_chunks(64 << 20, 8 * 2048).unwrap();
    let mut bm = Bitmap::new(g, BitmapConfig::new(KernelVariant::V6_14, SLEEP), 0);
    let cs = g.chunk_sectors();
    bm.start_write(3 * 2048 * cs, 8, false);
    bm.start_write((3 * 2048 + 1) * cs, 8, false);
    assert_eq!(bm.mdstat_line(), "bitmap: 1/8 pages [4KB], 65536KB chunk");
    bm.end_write(3 * 2048 * cs, 8, true, false, false);
    bm.end_write((3 * 2048 + 1) * cs, 8, true, false, false);
    pass(&mut bm);
    assert_eq!(bm.allocated_pages(), 1);
    let out = pass(&mut bm);
    assert_eq!(out.pass().unwrap().counter_pages_freed, 1);
    assert_eq!(bm.allocated_pages(), 0);
    assert_eq!(bm.mdstat_line(), "bitmap: 0/8 pages [0KB], 65536KB chunk");
}

#[test]
fn mdstat_line_prints_bytes_below_1k_chunks() {
    let g = BitmapGeometry::new(512, 1000).unwrap();
    let bm = Bitmap::new(g, BitmapConfig::new(KernelVariant::V6_14, SLEEP), 0);
    assert_eq!(bm.mdstat_line(), "bitmap: 0/1 pages [0KB], 512B chunk");
}

#[test]
fn flush_runs_three_daemon_passes() {
    let mut bm = bitmap(KernelVariant::V6_14, 100);
    write(&mut bm, 1);
    bm.flush(5);
    assert!(!bm.disk_bit(1));
    assert_eq!(bm.daemon_passes(), 3);
    assert_eq!(bm.page_writes().sb_update, 1);
}

#[test]
fn update_sb_writes_page_0_and_rolls_events_cleared_back() {
    let mut bm = bitmap(KernelVariant::V6_14, 100);
    bm.set_events(10);
    write(&mut bm, 1);
    bm.set_events(7);
    bm.update_sb();
    assert_eq!(bm.events_cleared(), 7);
    assert_eq!(
        bm.disk_sb(),
        SuperblockModel {
            events: 7,
            events_cleared: 7
        }
    );
    assert_eq!(bm.page_writes().sb_update, 1);
}

#[test]
fn update_sb_carries_page_0_bits_to_disk() {
    let mut bm = bitmap(KernelVariant::V6_14, 100);
    write(&mut bm, 1);
    pass(&mut bm);
    pass(&mut bm); // cleared in cache, PENDING
    bm.update_sb();
    assert!(!bm.disk_bit(1));
    assert!(bm.file_page_attrs(0).pending, "attributes untouched");
}

#[test]
fn write_all_marks_every_page_needwrite() {
    let mut bm = bitmap(KernelVariant::V6_14, 70_000); // 3 file pages
    pass(&mut bm);
    assert_eq!(pass(&mut bm), DaemonOutcome::AllClean);
    bm.write_all();
    assert!(!bm.allclean());
    let out = pass(&mut bm);
    assert_eq!(out.pass().unwrap().pages_written, 3);
}

#[test]
fn dirty_bits_sets_needed_and_dirties_file_page() {
    let mut bm = bitmap(KernelVariant::V6_14, 100);
    bm.dirty_bits(3, 5);
    for c in 3..=5 {
        assert_eq!(bm.counter(c), Counter(NEEDED_MASK | 2));
    }
    assert!(bm.file_page_attrs(0).dirty);
    bm.unplug();
    assert_eq!(bm.disk_dirty_ranges(), vec![3..6]);
}

// ---- resync -------------------------------------------------------------------------------

/// A bitmap loaded from disk with chunks `dirty` NEEDED (crash while active).
fn loaded(dirty: &[u64]) -> Bitmap {
    let mut bm = bitmap(KernelVariant::V6_14, 5000);
    let mut bits = vec![0u8; 5000 / 8 + 1];
    for &c in dirty {
        bits[(c / 8) as usize] |= 1 << (c % 8);
    }
    bm.load_from_disk(
        &bits,
        &LoadParams {
            start: 0,
            stale: false,
            events: 10,
            events_cleared: 10,
        },
    );
    bm
}

#[test]
fn load_sets_counter_2_and_needed_from_start() {
    let mut bm = bitmap(KernelVariant::V6_14, 100);
    let bits = [0b0000_0110u8, 0, 0b1000_0000]; // chunks 1, 2, 23
    bm.load_from_disk(
        &bits,
        &LoadParams {
            start: sec(2) + 1, // chunk 1 ends before it, chunk 2 after
            stale: false,
            events: 10,
            events_cleared: 8,
        },
    );
    assert_eq!(bm.counter(1), Counter(2));
    assert_eq!(bm.counter(2), Counter(NEEDED_MASK | 2));
    assert_eq!(bm.counter(23), Counter(NEEDED_MASK | 2));
    assert!(bm.cached_bit(23) && bm.disk_bit(23));
    assert_eq!(bm.events_cleared(), 8);
    assert_eq!(bm.daemon_timeout(), Some(SLEEP));
    assert_eq!(bm.page_writes().sb_update, 1);
    assert_eq!(bm.disk_sb().events, 10);
    assert!(bm.counter_page(0).pending);
}

#[test]
fn load_start_follows_md_bitmap_load() {
    assert_eq!(LoadParams::start_for(false, 3, 9, 1234), 1234);
    assert_eq!(LoadParams::start_for(true, 9, 9, 1234), 1234);
    assert_eq!(LoadParams::start_for(true, 3, 9, 1234), 0);
}

#[test]
fn stale_load_marks_every_chunk_and_writes_every_page() {
    let mut bm = bitmap(KernelVariant::V6_14, 40_000);
    bm.load_from_disk(
        &[],
        &LoadParams {
            start: 0,
            stale: true,
            events: 10,
            events_cleared: 2,
        },
    );
    let s = bm.summary();
    assert_eq!(s.needed_chunks, 40_000);
    assert_eq!(s.disk_dirty_chunks, 40_000);
    assert_eq!(bm.events_cleared(), 10);
    assert_eq!(bm.page_writes().load, 2);
    assert_eq!(*bm.disk_bitmap_bytes().last().unwrap(), 0xff);
}

#[test]
fn seed_sets_counter_2_without_needed_and_daemon_cleans_it() {
    let mut bm = bitmap(KernelVariant::V6_14, 100);
    bm.seed_from_disk(&[0b1001], 4, 4);
    assert_eq!(bm.counter(0), Counter(2));
    assert_eq!(bm.counter(3), Counter(2));
    assert_eq!(bm.summary().needed_chunks, 0);
    assert_eq!(bm.page_writes().total(), 0);
    for _ in 0..3 {
        pass(&mut bm);
    }
    assert!(bm.disk_dirty_ranges().is_empty());
}

#[test]
fn start_sync_turns_needed_into_resync_unless_degraded() {
    let mut bm = loaded(&[100]);
    let r = bm.start_sync(sec(100), true);
    assert!(r.sync);
    assert_eq!(
        bm.counter(100),
        Counter(NEEDED_MASK | 2),
        "degraded: bits kept"
    );
    let r = bm.start_sync(sec(100), false);
    assert!(r.sync);
    assert_eq!(bm.counter(100), Counter(RESYNC_MASK | 2));
    assert!(!bm.start_sync(sec(101), false).sync);
}

#[test]
fn start_sync_reports_running_resync() {
    let mut bm = loaded(&[100]);
    bm.start_sync(sec(100), false);
    assert!(bm.start_sync(sec(100), false).sync);
    assert_eq!(bm.counter(100), Counter(RESYNC_MASK | 2));
}

#[test]
fn start_sync_covers_at_least_a_page() {
    // 512-byte chunks: one chunk is 1 sector, a page is 8.
    let g = BitmapGeometry::new(512, 3 * 2048).unwrap();
    let mut bm = Bitmap::new(g, BitmapConfig::new(KernelVariant::V6_14, SLEEP), 0);
    bm.start_write(5, 1, false);
    bm.end_write(5, 1, false, false, true); // NEEDED on chunk 5
    let r = bm.start_sync(0, false);
    assert_eq!(r.blocks, 8);
    assert!(r.sync, "chunk 5 is inside the first page");
    assert_eq!(bm.counter(5), Counter(RESYNC_MASK | 2));
    // Counter page 1 is not allocated: its whole 2048-chunk span is reported.
    let r = bm.start_sync(2048 + 100, false);
    assert_eq!(r.blocks, 2048 - 100);
    assert!(!r.sync);
}

#[test]
fn end_sync_aborted_puts_needed_back() {
    let mut bm = loaded(&[100]);
    bm.start_sync(sec(100), false);
    assert_eq!(bm.end_sync(sec(100), true), CS);
    assert_eq!(bm.counter(100), Counter(NEEDED_MASK | 2));
}

#[test]
fn end_sync_op_always_aborts_on_6_12() {
    let mut bm = loaded(&[100]);
    bm.start_sync(sec(100), false);
    bm.end_sync_op(sec(100));
    assert_eq!(bm.counter(100), Counter(NEEDED_MASK | 2));
}

#[test]
fn end_sync_completed_lets_daemon_clean_chunk() {
    let mut bm = loaded(&[100]);
    bm.start_sync(sec(100), false);
    pass(&mut bm);
    assert!(!bm.counter_page(0).pending);
    bm.end_sync(sec(100), false);
    assert_eq!(bm.counter(100), Counter(2));
    assert!(bm.counter_page(0).pending);
    for _ in 0..3 {
        pass(&mut bm);
    }
    assert!(!bm.disk_bit(100));
}

#[test]
fn close_sync_clears_every_resync_flag() {
    let mut bm = loaded(&[1, 2000, 4999]);
    let mut s = 0;
    while s < bm.geometry().sync_size() {
        s += bm.start_sync(s, false).blocks;
    }
    assert_eq!(bm.summary().resync_chunks, 3);
    bm.close_sync();
    let sum = bm.summary();
    assert_eq!((sum.resync_chunks, sum.needed_chunks), (0, 0));
    assert_eq!(bm.counter(4999), Counter(2));
}

#[test]
fn cond_end_sync_runs_at_most_once_per_daemon_sleep() {
    let mut bm = loaded(&[1, 2]);
    bm.start_sync(sec(1), false);
    bm.start_sync(sec(2), false);
    assert!(
        !bm.cond_end_sync(0, false, 1000),
        "sector 0 only records the time"
    );
    assert_eq!(bm.last_end_sync(), 1000);
    assert!(!bm.cond_end_sync(sec(2), false, 1000 + SLEEP - 1));
    assert_eq!(bm.counter(1), Counter(RESYNC_MASK | 2));
    assert!(bm.cond_end_sync(sec(2), false, 1000 + SLEEP));
    assert_eq!(bm.counter(1), Counter(2));
    assert_eq!(bm.curr_resync_completed(), sec(2));
    assert!(bm.cond_end_sync(sec(3), true, 1000 + SLEEP), "force");
    assert_eq!(bm.counter(2), Counter(2));
}

#[test]
fn cond_end_sync_rounds_sector_down_to_a_chunk() {
    let mut bm = loaded(&[3]);
    bm.start_sync(sec(3), false);
    bm.cond_end_sync(sec(3) + CS - 1, true, 0);
    assert_eq!(
        bm.counter(3),
        Counter(RESYNC_MASK | 2),
        "chunk 3 is not finished"
    );
    bm.cond_end_sync(sec(4), true, 0);
    assert_eq!(bm.counter(3), Counter(2));
}

// ---- geometry and layout ------------------------------------------------------------------

#[test]
fn geometry_matches_kernel_sizing() {
    // 64 MiB chunks over 1 TiB of member: 16384 chunks.
    let g = BitmapGeometry::new(64 << 20, 2 << 30).unwrap();
    assert_eq!(g.chunkshift(), 17);
    assert_eq!(g.chunks(), 16384);
    assert_eq!(g.bytes(), 2048 + 256);
    assert_eq!(g.file_pages(), 1);
    assert_eq!(g.counter_pages(), 8);
    // Partial last chunk rounds up.
    let g = BitmapGeometry::new(4096, 8 * 1000 + 1).unwrap();
    assert_eq!(g.chunks(), 1001);
    assert_eq!(g.bytes(), 126 + 256);
    // 16 M chunks.
    let g = BitmapGeometry::from_chunks(4096, 16 << 20).unwrap();
    assert_eq!(g.bytes(), (2 << 20) + 256);
    assert_eq!(g.file_pages(), 513);
    assert_eq!(g.counter_pages(), 8192);
    // Refusals.
    assert!(BitmapGeometry::new(3000, 100).is_err());
    assert!(BitmapGeometry::new(256, 100).is_err());
    assert!(BitmapGeometry::new(1 << 32, 100).is_err());
}

#[test]
fn file_page_index_is_chunk_plus_2048_over_32768() {
    let g = geo(100_000);
    assert_eq!(g.file_page_of(0), 0);
    assert_eq!(g.file_page_of(30_719), 0);
    assert_eq!(g.file_page_of(30_720), 1);
    assert_eq!(g.bit_in_file_page(30_720), 0);
    assert_eq!(g.bit_in_file_page(0), 2048);
    assert_eq!(g.file_page_chunks(1), 30_720..63_488);
    assert_eq!(g.file_page_chunks(3), 96_256..100_000);
}

#[test]
fn disk_bytes_use_le_bit_order() {
    let mut bm = bitmap(KernelVariant::V6_14, 20);
    for c in [0, 9, 19] {
        bm.start_write(sec(c), CS, false);
    }
    assert_eq!(bm.disk_bitmap_bytes(), vec![0, 0, 0]);
    bm.unplug();
    assert_eq!(bm.disk_bitmap_bytes(), vec![0b1, 0b10, 0b1000]);
    assert_eq!(bm.cached_bitmap_bytes(), bm.disk_bitmap_bytes());
}

#[test]
fn dirty_ranges_are_half_open_chunk_ranges() {
    let mut bm = bitmap(KernelVariant::V6_14, 300);
    for c in [0, 1, 2, 63, 64, 65, 200, 299] {
        bm.start_write(sec(c), CS, false);
    }
    bm.unplug();
    assert_eq!(
        bm.disk_dirty_ranges(),
        vec![0..3, 63..66, 200..201, 299..300]
    );
    assert_eq!(
        bm.counter_ranges(|c| c.has_writes_in_flight()),
        bm.disk_dirty_ranges()
    );
}

#[test]
fn in_flight_counts_follow_counter_above_2() {
    let mut bm = bitmap(KernelVariant::V6_14, 100);
    bm.start_write(sec(1), CS, false);
    bm.start_write(sec(1), CS, false);
    bm.start_write(sec(2), CS, false);
    let s = bm.summary();
    assert_eq!((s.in_flight_chunks, s.in_flight_writes), (2, 3));
    bm.end_write(sec(1), CS, true, false, false);
    bm.end_write(sec(2), CS, true, false, false);
    let s = bm.summary();
    assert_eq!((s.in_flight_chunks, s.in_flight_writes), (1, 1));
    assert_eq!(s.nonzero_chunks, 2);
    assert_eq!(s.cached_dirty_chunks, 2);
    assert_eq!(s.disk_dirty_chunks, 0, "never unplugged");
}

#[test]
fn memory_per_chunk_is_at_most_4_bytes() {
    for chunks in [1u64 << 20, 16 << 20] {
        let bm = bitmap(KernelVariant::V6_14, chunks);
        let per_chunk = bm.heap_bytes() as f64 / chunks as f64;
        println!(
            "{chunks} chunks: {} heap bytes, {per_chunk:.3} bytes/chunk",
            bm.heap_bytes()
        );
        assert!(per_chunk <= 4.0, "{per_chunk}");
        assert!(std::mem::size_of::<Bitmap>() < 1024);
    }
}

#[test]
fn apply_dispatches_ops() {
    let mut bm = bitmap(KernelVariant::V6_14, 100);
    let r = bm.apply(
        Op::StartWrite {
            offset: 0,
            sectors: CS,
            behind: false,
        },
        0,
    );
    assert_eq!(r, OpOutcome::Start(StartOutcome::Started));
    assert_eq!(bm.apply(Op::Unplug, 0), OpOutcome::Unplugged(1));
    bm.apply(
        Op::EndWrite {
            offset: 0,
            sectors: CS,
            success: true,
            behind: false,
            degraded: false,
        },
        0,
    );
    assert!(matches!(
        bm.apply(Op::DaemonWork, SLEEP),
        OpOutcome::Daemon(DaemonOutcome::Ran(_))
    ));
    assert_eq!(bm.counter(0), Counter(1));
}

#[test]
fn kernel_variant_for_version() {
    assert_eq!(KernelVariant::for_version(6, 1, false), KernelVariant::V6_1);
    assert_eq!(
        KernelVariant::for_version(6, 6, true),
        KernelVariant::V6_6_BACKPORT
    );
    assert_eq!(
        KernelVariant::for_version(6, 12, false),
        KernelVariant::V6_12
    );
    assert_eq!(
        KernelVariant::for_version(6, 13, true),
        KernelVariant::V6_14
    );
    assert_eq!(
        KernelVariant::for_version(6, 18, false),
        KernelVariant::V6_14
    );
}

#[test]
fn counter_display_shows_flags() {
    assert_eq!(Counter(3).to_string(), "3");
    assert_eq!(Counter(NEEDED_MASK | 2).to_string(), "2+N");
    assert_eq!(Counter(NEEDED_MASK | RESYNC_MASK | 2).to_string(), "2+NR");
}

#[test]
fn set_counter_keeps_page_bookkeeping() {
    let mut bm = bitmap(KernelVariant::V6_14, 100);
    assert!(bm.set_counter(4, 2));
    assert_eq!(bm.allocated_pages(), 1);
    assert!(bm.counter_page(0).pending);
    assert!(bm.set_counter(4, 0));
    assert_eq!(bm.allocated_pages(), 0);
    assert!(!bm.set_counter(5000, 1));
    assert_consistent(&bm);
}

#[test]
fn apply_batch_equals_apply_one_by_one() {
    let ops: Vec<(u64, Op)> = (0..40u64)
        .flat_map(|i| {
            [
                (
                    i * 30,
                    Op::StartWrite {
                        offset: sec(i % 7),
                        sectors: CS,
                        behind: false,
                    },
                ),
                (i * 30, Op::Unplug),
                (
                    i * 30 + 10,
                    Op::EndWrite {
                        offset: sec(i % 7),
                        sectors: CS,
                        success: true,
                        behind: false,
                        degraded: i % 5 == 0,
                    },
                ),
                (i * 30 + 20, Op::DaemonWork),
            ]
        })
        .collect();
    let mut a = bitmap(KernelVariant::V6_14, 100);
    let mut b = a.clone();
    a.apply_batch(&ops);
    for &(now, op) in &ops {
        b.apply(op, now);
    }
    assert_eq!(a.summary(), b.summary());
    assert_eq!(a.counters(), b.counters());
    assert!(a.summary().needed_chunks > 0);
}

#[test]
fn clone_is_an_independent_snapshot() {
    let mut bm = bitmap(KernelVariant::V6_14, 100);
    write(&mut bm, 1);
    let snap = bm.clone();
    write(&mut bm, 2);
    assert_eq!(snap.counter(2), Counter(0));
    assert_eq!(bm.counter(2), Counter(2));
    assert_eq!(snap.summary().nonzero_chunks, 1);
}
