//! TUI frame time on a 16 M-chunk array (target: a frame in at most 10 ms).
//!
//! A 16 Mi-chunk bitmap (64 KiB chunks: a 1 TiB member) is driven through the engine: random
//! 4 KiB writes set bits (unplugged, so they are on disk), some stay in flight, a band is marked
//! NEEDED. Its snapshot ranges are taken as the mirror takes them; then whole screens are rendered
//! into a ratatui `TestBackend` terminal at several sizes and zoom levels, and ms/frame printed.
//! The sampling step (snapshot ranges + view update, done once per `--interval`, not per frame)
//! is timed separately.
//!
//! Run: `AYA_BUILD_SKIP=1 cargo bench -p md-bitmap-user --bench tui`.
use std::hint::black_box;
use std::time::Instant;

use md_bitmap::engine::{Bitmap, BitmapConfig, BitmapGeometry, Counter, KernelVariant};
use md_bitmap::mirror::snapshot::{
    ArraySnapshot, BitmapGeometrySnapshot, Counts, FeedHealth, ranges,
};
use md_bitmap::tui::ui::{App, SourceInfo};
use md_bitmap::tui::view::ArrayView;
use ratatui::Terminal;
use ratatui::backend::TestBackend;

const CHUNK_BYTES: u64 = 64 << 10;
const CHUNKS: u64 = 16 << 20;
const TARGET_MS: f64 = 10.0;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn snapshot_of(bm: &Bitmap) -> ArraySnapshot {
    let s = bm.summary();
    ArraySnapshot {
        name: "md0".into(),
        dev: "9:0".into(),
        level: "raid1".into(),
        layout: 0,
        raid_disks: 2,
        chunk_size_bytes: 0,
        metadata_version: "1.2".into(),
        array_state: "active".into(),
        degraded: 0,
        sync_action: "idle".into(),
        members: vec![],
        bitmap: Some(BitmapGeometrySnapshot {
            chunk_size_bytes: CHUNK_BYTES,
            chunks: CHUNKS,
            sync_size_sectors: CHUNKS * CHUNK_BYTES / 512,
            time_base_secs: 5.0,
            location: "+8".into(),
            metadata: "internal".into(),
            backlog: 0,
        }),
        counts: Counts {
            in_flight_chunks: s.in_flight_chunks,
            in_flight_writes: s.in_flight_writes,
            dirty_on_disk_chunks: s.disk_dirty_chunks,
            dirty_cached_chunks: s.cached_dirty_chunks,
            needed_chunks: s.needed_chunks,
            resync_chunks: s.resync_chunks,
            blocked_writers: s.blocked_writers,
            allocated_counter_pages: s.allocated_pages,
            counter_pages: s.counter_pages,
        },
        dirty_ranges: ranges(&bm.disk_dirty_ranges()),
        in_flight_ranges: ranges(&bm.counter_ranges(|c: Counter| c.count() > 2)),
        needed_ranges: ranges(&bm.counter_ranges(|c: Counter| c.needed())),
        oldest_pending_write_age_secs: Some(0.2),
        oldest_inflight_bio_age_secs: Some(0.2),
        feed: FeedHealth::default(),
        alerts: vec![],
        prediction: None,
    }
}

fn main() {
    let geo = BitmapGeometry::new(CHUNK_BYTES, CHUNKS * CHUNK_BYTES / 512).unwrap();
    let mut bm = Bitmap::new(geo, BitmapConfig::new(KernelVariant::V6_12, 1250), 0);
    let mut rng = Rng(7);
    let cs = CHUNK_BYTES / 512;
    // 200 000 random 4 KiB writes; the last 2 000 stay in flight.
    let writes: Vec<u64> = (0..200_000).map(|_| rng.next() % CHUNKS).collect();
    for (i, c) in writes.iter().enumerate() {
        bm.start_write(c * cs, 8, false);
        if i % 64 == 0 {
            bm.unplug();
        }
    }
    bm.unplug();
    for c in &writes[..writes.len() - 2000] {
        bm.end_write(c * cs, 8, true, false, false);
    }
    // A NEEDED band, as after a failed write.
    for c in 5_000_000..5_004_096u64 {
        bm.start_write(c * cs, 8, false);
        bm.end_write(c * cs, 8, false, false, false);
    }
    bm.unplug();

    let t = Instant::now();
    let snap = snapshot_of(&bm);
    let snap_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let prev = ArrayView::update(None, snap.clone(), 0.5);
    let view = ArrayView::update(Some(prev), snap, 0.5);
    let view_ms = t.elapsed().as_secs_f64() * 1e3 / 2.0;
    println!(
        "tui bench: {} chunks, {} dirty ranges, {} in-flight ranges, {} NEEDED ranges",
        CHUNKS,
        view.snap.dirty_ranges.len(),
        view.snap.in_flight_ranges.len(),
        view.snap.needed_ranges.len()
    );
    println!(
        "sample (once per --interval, not per frame): snapshot ranges {snap_ms:.1} ms, view update {view_ms:.1} ms"
    );

    let mut worst: f64 = 0.0;
    for (cols, rows) in [(120u16, 40u16), (200, 60), (320, 100)] {
        for zoom in [None, Some(4096u64), Some(1)] {
            let mut app = App::new(SourceInfo::Live, ".".into());
            app.set_views(vec![view.clone()]);
            app.zoom = zoom;
            let mut term = Terminal::new(TestBackend::new(cols, rows)).unwrap();
            // Middle of the array for the zoomed views.
            term.draw(|f| app.draw(f)).unwrap();
            if zoom.is_some() {
                app.offset = CHUNKS / 2;
                app.clamp_offset();
            }
            let n = 200;
            let t = Instant::now();
            for _ in 0..n {
                term.draw(|f| app.draw(f)).unwrap();
                black_box(term.backend().buffer());
            }
            let ms = t.elapsed().as_secs_f64() * 1e3 / n as f64;
            worst = worst.max(ms);
            println!(
                "frame {cols}x{rows} zoom {:>14}: {ms:.3} ms/frame ({} chunks per cell)",
                match zoom {
                    None => "fit".to_string(),
                    Some(z) => format!("{z} chunks/cell"),
                },
                app.per_cell()
            );
        }
    }
    println!(
        "worst frame {worst:.3} ms (target <= {TARGET_MS} ms): {}",
        if worst <= TARGET_MS { "within" } else { "OVER" }
    );
}
