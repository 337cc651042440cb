//! Widgets rendered into buffers, with symbols and colours asserted, and whole-screen snapshots
//! (committed under `src/tui/snapshots/`; regenerate with `MDB_UPDATE_SNAPSHOTS=1`).
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::style::Color;

use super::ui::{Action, App, SourceInfo, buffer_text};
use super::view::{ArrayView, CellState, Intensity, intensity_color};
use super::*;
use crate::mirror::snapshot::{ArraySnapshot, BitmapGeometrySnapshot, Counts, FeedHealth};

fn snap(name: &str, chunks: u64) -> ArraySnapshot {
    ArraySnapshot {
        name: name.into(),
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
            chunk_size_bytes: 1 << 20,
            chunks,
            sync_size_sectors: chunks * 2048,
            time_base_secs: 5.0,
            location: "+8".into(),
            metadata: "internal".into(),
            backlog: 0,
        }),
        counts: Counts::default(),
        dirty_ranges: vec![],
        in_flight_ranges: vec![],
        needed_ranges: vec![],
        oldest_pending_write_age_secs: None,
        oldest_inflight_bio_age_secs: None,
        feed: FeedHealth::default(),
        alerts: vec![],
        prediction: None,
    }
}

/// md0: 512 chunks; dirty 10..20, in flight 15..16, NEEDED 100..104, RESYNC 200..201.
fn fixture() -> ArrayView {
    let mut s = snap("md0", 512);
    s.dirty_ranges = vec![[10, 20], [100, 104], [200, 201]];
    s.in_flight_ranges = vec![[15, 16]];
    s.needed_ranges = vec![[100, 104]];
    s.counts.dirty_on_disk_chunks = 15;
    s.counts.in_flight_chunks = 1;
    s.counts.in_flight_writes = 1;
    s.counts.needed_chunks = 4;
    s.counts.resync_chunks = 1;
    let mut v = ArrayView::update(None, s, 0.5);
    v.resync_ranges = vec![[200, 201]];
    v.rebuild_buckets();
    v
}

fn app_with(views: Vec<ArrayView>) -> App {
    let mut app = App::new(SourceInfo::Live, std::env::temp_dir());
    app.set_views(views);
    app
}

fn key(c: KeyCode) -> KeyEvent {
    KeyEvent::new(c, KeyModifiers::NONE)
}

#[test]
fn cells_take_the_most_urgent_state_of_their_chunks() {
    let v = fixture();
    // One cell per chunk.
    let c = v.cell_states(0, 1, 512);
    assert_eq!(c[9], Some(CellState::Clean));
    assert_eq!(c[10], Some(CellState::Dirty));
    assert_eq!(c[15], Some(CellState::InFlight));
    assert_eq!(c[100], Some(CellState::Needed));
    assert_eq!(c[200], Some(CellState::Resync));
    assert_eq!(c[511], Some(CellState::Clean));
    // Eight chunks per cell: cell 1 (8..16) holds dirty and in-flight chunks.
    let c = v.cell_states(0, 8, 70);
    assert_eq!(c[0], Some(CellState::Clean));
    assert_eq!(c[1], Some(CellState::InFlight));
    assert_eq!(c[2], Some(CellState::Dirty));
    assert_eq!(c[12], Some(CellState::Needed));
    assert_eq!(c[25], Some(CellState::Resync));
    // Cells past the last chunk are empty.
    assert_eq!(c[64], None);
    // A window starting mid-array sees only its own chunks.
    let c = v.cell_states(96, 4, 4);
    assert_eq!(
        c,
        vec![
            Some(CellState::Clean),
            Some(CellState::Needed),
            Some(CellState::Clean),
            Some(CellState::Clean)
        ]
    );
}

#[test]
fn the_sync_checkpoint_marks_its_chunk() {
    let mut v = fixture();
    v.sync_completed = Some((300 * 2048 + 5, 512 * 2048));
    assert_eq!(v.syncing_chunks(), Some(300..301));
    assert_eq!(v.cell_states(300, 1, 1), vec![Some(CellState::Syncing)]);
    v.sync_completed = Some((512 * 2048, 512 * 2048));
    assert_eq!(v.syncing_chunks(), None);
}

#[test]
fn intensity_follows_new_dirty_chunks_and_decays() {
    let mut i = Intensity::new(1000);
    i.sample(&[[0, 10]], &[], 0.5);
    assert_eq!(i.level(0..10), 8);
    assert_eq!(i.level(500..510), 0);
    // Already dirty: no new writes; in-flight chunks count.
    i.sample(&[[0, 10]], &[[500, 501]], 0.5);
    assert!(i.level(500..501) > 0);
    let before = i.density(0..10);
    i.sample(&[[0, 10]], &[], Intensity::HALF_LIFE_SECS);
    let after = i.density(0..10);
    assert!((after - before / 2.0).abs() < 1e-6, "{before} -> {after}");
}

#[test]
fn heatmap_cells_carry_state_glyphs_and_colours() {
    let mut app = app_with(vec![fixture()]);
    app.zoom = Some(1);
    let buf = render_to_buffer(&mut app, 100, 30);
    // Find the heatmap rows by their gutter labels: the row starting at chunk 0.
    let text = buffer_text(&buf);
    let (y, line) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.starts_with("│  0 "))
        .expect("heatmap row 0");
    let x0 = line.chars().position(|c| c == '·').unwrap() as u16;
    let cell = |chunk: u16| &buf[(x0 + chunk, y as u16)];
    assert_eq!(cell(0).symbol(), "·");
    assert_eq!(cell(0).fg, CellState::Clean.color());
    assert_eq!(cell(0).bg, Color::Reset);
    assert_eq!(cell(10).symbol(), "o");
    assert_eq!(cell(15).symbol(), "*");
    // Chunks 10..20 are the newest dirty ones (and 15 is in flight): they are the hottest.
    let hot = cell(15);
    assert_eq!(hot.bg, intensity_color(8).unwrap());
    assert_eq!(
        hot.fg,
        Color::Black,
        "glyphs turn black on light backgrounds"
    );
    assert_eq!(cell(10).bg, intensity_color(4).unwrap());
    assert_eq!(cell(10).fg, CellState::Dirty.color());
}

#[test]
fn legend_shows_every_state_and_the_scale() {
    let mut app = app_with(vec![fixture()]);
    let buf = render_to_buffer(&mut app, 120, 30);
    let text = buffer_text(&buf);
    for st in CellState::ALL {
        let (y, line) = text
            .lines()
            .enumerate()
            .find(|(_, l)| l.contains(&format!("{} {}", st.glyph(), st.label())))
            .unwrap_or_else(|| panic!("legend lacks {st:?}"));
        let x = line
            .chars()
            .collect::<Vec<_>>()
            .windows(2)
            .position(|w| w[0] == st.glyph() && w[1] == ' ')
            .unwrap();
        assert_eq!(buf[(x as u16, y as u16)].fg, st.color(), "{st:?}");
    }
    let (y, line) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains("recent writes"))
        .unwrap();
    let x = line.find("none ").unwrap() + 5;
    for l in 1..=8u16 {
        let c = &buf[(x as u16 + l - 1, y as u16)];
        assert_eq!(c.bg, intensity_color(l as u8).unwrap());
    }
}

#[test]
fn zoom_and_pan_reach_every_chunk() {
    let mut app = app_with(vec![fixture()]);
    let _ = render_to_buffer(&mut app, 100, 30);
    let (w, h) = app.grid;
    assert!(w as u64 * h as u64 >= 512, "fits at this size");
    assert_eq!(app.per_cell(), 1);
    // A big array: fit, then zoom in to one chunk per cell and pan to the end.
    let mut big = snap("md1", 1 << 20);
    big.dirty_ranges = vec![[(1 << 20) - 1, 1 << 20]];
    app.set_views(vec![fixture(), ArrayView::update(None, big, 1.0)]);
    assert_eq!(app.key(key(KeyCode::Tab)), Action::None);
    assert_eq!(app.current().unwrap().snap.name, "md1");
    let _ = render_to_buffer(&mut app, 100, 30);
    let fit = app.per_cell();
    assert!(fit > 1);
    while app.per_cell() > 1 {
        app.key(key(KeyCode::Char('+')));
    }
    assert_eq!(app.zoom, Some(1));
    app.key(key(KeyCode::Char('G')));
    let buf = render_to_buffer(&mut app, 100, 30);
    let text = buffer_text(&buf);
    assert!(text.contains("1 cell = 1 chunk (1 MiB)"), "{text}");
    let buf = render_to_buffer(&mut app, 160, 30);
    let text = buffer_text(&buf);
    assert!(text.contains(&format!("of {}", 1u64 << 20)));
    // The last chunk is visible as dirty.
    let (_, line) = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.starts_with("│") && l.contains('·'))
        .last()
        .unwrap();
    let heat = line.split("││").next().unwrap();
    assert!(
        heat.trim_end_matches('│').trim_end().ends_with('o'),
        "{line}"
    );
    app.key(key(KeyCode::Char('g')));
    assert_eq!(app.offset, 0);
    app.key(key(KeyCode::Char('j')));
    assert_eq!(app.offset, app.grid.0 as u64);
    while app.zoom.is_some() {
        app.key(key(KeyCode::Char('-')));
    }
    assert_eq!(app.per_cell(), app.fit_zoom());
}

#[test]
fn keys_quit_pause_help_and_snapshot() {
    let mut app = app_with(vec![fixture()]);
    app.key(key(KeyCode::Char('p')));
    assert!(app.paused);
    app.key(key(KeyCode::Char('p')));
    assert!(!app.paused);
    app.key(key(KeyCode::Char('?')));
    assert!(app.help);
    app.key(key(KeyCode::Char('x')));
    assert!(!app.help, "any key closes the help");
    assert_eq!(app.key(key(KeyCode::Char('s'))), Action::WriteSnapshot);
    assert_eq!(app.key(key(KeyCode::Char('q'))), Action::Quit);
    assert_eq!(
        app.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
        Action::Quit
    );
}

#[test]
fn snapshots_are_written_as_schema_valid_json() {
    let dir = tempfile::tempdir().unwrap();
    let s = Snapshot {
        schema_version: SCHEMA_VERSION,
        kind: "snapshot".into(),
        time_unix_ms: 42,
        source: "live".into(),
        fallback_reason: None,
        arrays: vec![fixture().snap],
    };
    let p = write_snapshot(dir.path(), &s).unwrap();
    assert!(p.ends_with("md-bitmap-snapshot-42.json"));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    let schema = crate::mirror::snapshot::json_schema();
    assert!(jsonschema::validator_for(&schema).unwrap().is_valid(&v));
    let err = write_snapshot(&dir.path().join("missing"), &s).unwrap_err();
    assert!(format!("{err:#}").contains("not found"));
}

#[test]
fn bad_sizes_are_clear_errors() {
    assert!(parse_size("80x24").is_ok());
    assert!(parse_size("80").unwrap_err().contains("COLSxROWS"));
    assert!(parse_size("axb").unwrap_err().contains("column"));
    assert!(parse_size("5x5").unwrap_err().contains("out of range"));
}

#[test]
fn side_panel_marks_prediction_and_alerts_as_not_available_until_they_exist() {
    let mut app = app_with(vec![fixture()]);
    let text = buffer_text(&render_to_buffer(&mut app, 120, 50));
    assert!(text.contains("predicted resync"));
    assert!(text.contains("alerts"));
    assert!(text.contains("not available"));
    let v = serde_json::json!({"chunks": 12, "seconds": 3.5});
    let lines = ui::json_lines(Some(&v), "x");
    assert_eq!(lines[0].to_string(), "  chunks: 12");
    assert_eq!(lines[1].to_string(), "  seconds: 3.50");
    let a = serde_json::json!([{"severity": "warn", "message": "drift on md0"}]);
    assert_eq!(
        ui::json_lines(Some(&a), "x")[0].to_string(),
        "  • drift on md0"
    );
}

fn check_screen(name: &str, got: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/tui/snapshots")
        .join(format!("{name}.txt"));
    if std::env::var("MDB_UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        want,
        got,
        "screen {name} differs from {} (MDB_UPDATE_SNAPSHOTS=1 regenerates)",
        path.display()
    );
}

#[test]
fn whole_screen_snapshots() {
    let mut second = snap("md1", 4096);
    second.level = "raid5".into();
    second.raid_disks = 4;
    second.chunk_size_bytes = 512 << 10;
    let mut app = app_with(vec![fixture(), ArrayView::update(None, second, 1.0)]);
    check_screen(
        "overview_100x30",
        &buffer_text(&render_to_buffer(&mut app, 100, 30)),
    );
    app.zoom = Some(1);
    check_screen(
        "zoom1_120x40",
        &buffer_text(&render_to_buffer(&mut app, 120, 40)),
    );
    app.key(key(KeyCode::Char('?')));
    check_screen(
        "help_100x30",
        &buffer_text(&render_to_buffer(&mut app, 100, 30)),
    );
    // Narrow terminals drop the side panel rather than overflow.
    let mut app = app_with(vec![]);
    app.source = SourceInfo::OnDisk("live feed unavailable: no BPF".into());
    check_screen(
        "no_arrays_60x20",
        &buffer_text(&render_to_buffer(&mut app, 60, 20)),
    );
}

#[test]
fn bucket_and_range_paths_agree() {
    let mut s = snap("md0", 1 << 20);
    s.dirty_ranges = vec![[5, 6], [1000, 1040], [500_000, 500_001], [700_000, 700_100]];
    s.in_flight_ranges = vec![[1020, 1021]];
    s.needed_ranges = vec![[700_000, 700_100]];
    let v = ArrayView::update(None, s, 1.0);
    assert_eq!(v.bucket, 16);
    for (first, per) in [(0u64, 16u64), (0, 64), (4096, 48), (0, 4096)] {
        let n = ((1u64 << 20) / per) as usize + 3;
        assert_eq!(
            v.cell_states(first, per, n),
            v.sweep(first, per, n),
            "{per}"
        );
    }
    let c = v.cell_states(0, 4096, 256);
    assert_eq!(c[0], Some(CellState::InFlight));
    assert_eq!(c[122], Some(CellState::Dirty));
    assert_eq!(c[170], Some(CellState::Needed));
    assert_eq!(c[1], Some(CellState::Clean));
}

#[test]
#[allow(clippy::single_range_in_vec_init)] // one dirty range is the data
fn side_panel_shows_the_prediction() {
    let mut a = fixture();
    a.snap.prediction = Some(crate::predict::predict(&crate::predict::Inputs {
        name: "md0".into(),
        level: "raid1".into(),
        raid_disks: 2,
        dev_sectors: 512 * 2048,
        array_state: "active".into(),
        members: ["vda", "vdb"]
            .iter()
            .zip(0u32..)
            .map(|(n, slot)| crate::predict::MemberInput {
                name: (*n).into(),
                slot: Some(slot),
                in_sync: true,
                ..Default::default()
            })
            .collect(),
        bitmap: Some(crate::predict::BitmapInput {
            chunk_bytes: 1 << 20,
            sync_size_sectors: 512 * 2048,
            dirty_on_disk: vec![10..25],
            needed: None,
            events: 20,
            events_cleared: 18,
        }),
        sb_events: Some(20),
        sync_action: "idle".into(),
        speed_min_kibs: 1000,
        speed_max_kibs: 200_000,
        ..Default::default()
    }));
    let mut app = app_with(vec![a]);
    let text = buffer_text(&render_to_buffer(&mut app, 120, 50));
    assert!(text.contains("crash now       15 chunks, 15"), "{text}");
    assert!(!text.contains("not available\n"));
}
