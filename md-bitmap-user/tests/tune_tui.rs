//! `md-bitmap tune TRACE --tui` on a real terminal: tmux on the host gives the binary a pty
//! (120×40, then 80×24 after a resize), `tmux capture-pane` reads the screen.
//!
//! Asserted: the chart (title, both curves' legend entries, the recommended marker's legend,
//! the x-axis labels of the smallest and largest size, the y-axis title) and the whole table
//! (every size's row, the recommendation and the mdadm commands) are on screen and no line of
//! the table is cut; the screen redraws after a resize; `q` quits with status 0 and leaves the
//! alternate screen. Without tmux the test says so and passes without checking.
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use md_bitmap::trace::{TraceEvent, TraceHeader, TraceWriter};

const SEC: u64 = 1_000_000_000;

fn tmux(args: &[&str]) -> std::process::Output {
    Command::new("tmux").args(args).output().expect("tmux runs")
}

fn tmux_available() -> bool {
    let ok = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED: tmux is not installed; `tune --tui` was not run on a terminal");
    }
    ok
}

/// A 64 MiB raid1 trace (64 KiB bitmap chunks in use): 2000 writes over 20 s, the md thread
/// waking into the daemon every 5 s.
fn write_trace(path: &Path) {
    let header = TraceHeader {
        array: "md0".into(),
        level: "raid1".into(),
        layout: 0,
        raid_disks: 2,
        chunk_size_bytes: 0,
        component_size_kib: 64 << 10,
        array_sectors: 128 << 10,
        bitmap_chunk_bytes: 64 << 10,
        bitmap_sync_sectors: 128 << 10,
        bitmap_space_sectors: 8,
        bitmap_location: "+8".into(),
        daemon_sleep_secs: 5.0,
        active_members: 2,
        sync_speed_max_kibs: Some(200_000),
        kernel_release: "6.12.0-test".into(),
        kernel_variant: "6.12".into(),
        accounting: "per-bio".into(),
        initial_dirty: vec![],
        initial_events: (1, 1),
        start_ns: 0,
        daemon_lastrun_jiffies: None,
        initial_array_state: None,
    };
    let mut events = Vec::new();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for i in 0..2000u64 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let t = SEC / 2 + i * 10_000_000;
        let sector = if i % 3 == 0 {
            (rng % ((128 << 10) - 64)) & !7
        } else {
            (i * 8) % (128 << 10)
        };
        events.push(TraceEvent::Write {
            t_ns: t,
            sector,
            sectors: 8,
            latency_ns: Some(500_000),
        });
    }
    for s in (0..=25u64).step_by(5) {
        events.push(TraceEvent::Daemon {
            t_ns: s * SEC + 1,
            jiffies: 1_000_000 + s * 250,
        });
    }
    events.sort_by_key(|e| e.t_ns());
    let f = std::fs::File::create(path).expect("trace file");
    let mut w = TraceWriter::new(std::io::BufWriter::new(f), &header).expect("header");
    for e in &events {
        w.push(e).expect("event");
    }
    w.finish().expect("trace written");
}

/// The pane's text once `pred` holds (at most 20 s), else the last capture.
fn capture_when(session: &str, pred: impl Fn(&str) -> bool) -> String {
    let t0 = Instant::now();
    loop {
        let out = tmux(&["capture-pane", "-p", "-t", session]);
        let s = String::from_utf8_lossy(&out.stdout).into_owned();
        if pred(&s) || t0.elapsed() > Duration::from_secs(20) {
            return s;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Kills the tmux session when the test ends, however it ends.
struct Session(String);

impl Drop for Session {
    fn drop(&mut self) {
        let _ = tmux(&["kill-session", "-t", &self.0]);
    }
}

fn check_screen(screen: &str, width: usize) {
    for want in [
        "chunk size trade-off (log10): page writes, crash resync bytes",
        "bitmap page writes",
        "expected crash resync",
        "recommended",
        "4K",
        "64M",
        "chunk size",
        "in use, < recommended (balanced)",
    ] {
        assert!(screen.contains(want), "{want:?} missing from:\n{screen}");
    }
    // Every candidate's row of the table (4K..64M) is on screen, in full (its last column).
    for size in [
        "4K", "8K", "16K", "32K", "64K", "128K", "256K", "512K", "1M", "2M", "4M", "8M", "16M",
        "32M", "64M",
    ] {
        let row = screen
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{size} ")))
            .unwrap_or_else(|| panic!("no table row for {size}:\n{screen}"));
        assert!(
            row.trim_end().ends_with("iB") || row.trim_end().ends_with('*') || row.ends_with('<'),
            "row {size} is cut at {width} columns: {row:?}"
        );
    }
}

#[test]
fn tune_tui_on_a_terminal() {
    if !tmux_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = dir.path().join("md0.trace");
    write_trace(&trace);
    let status = dir.path().join("status");
    let err = dir.path().join("stderr");
    let bin = env!("CARGO_BIN_EXE_md-bitmap");
    let session = Session(format!("mdb-tune-{}", std::process::id()));
    let cmd = format!(
        "{bin} tune {} --tui 2>{}; echo $? > {}; sleep 30",
        trace.display(),
        err.display(),
        status.display()
    );
    let out = tmux(&[
        "-u",
        "new-session",
        "-d",
        "-s",
        &session.0,
        "-x",
        "120",
        "-y",
        "40",
        "env",
        "TERM=xterm-256color",
        "LANG=C.UTF-8",
        "sh",
        "-c",
        &cmd,
    ]);
    assert!(out.status.success(), "tmux: {out:?}");
    let ready = |s: &str| s.contains("in use, < recommended");
    let screen = capture_when(&session.0, ready);
    println!("--- 120x40 ---\n{screen}");
    check_screen(&screen, 120);
    let alt = tmux(&["display", "-p", "-t", &session.0, "#{alternate_on}"]);
    assert_eq!(
        String::from_utf8_lossy(&alt.stdout).trim(),
        "1",
        "alternate screen"
    );

    // A smaller terminal: the table keeps its rows, the chart shrinks.
    let out = tmux(&["resize-window", "-t", &session.0, "-x", "80", "-y", "24"]);
    assert!(out.status.success(), "resize: {out:?}");
    // Redrawn at the new size: the chart's box closes at column 80 (until then tmux shows
    // the old frame cut at 80 columns).
    let screen = capture_when(&session.0, |s| {
        ready(s)
            && s.lines()
                .next()
                .is_some_and(|l| l.chars().count() == 80 && l.ends_with('┐'))
    });
    println!("--- 80x24 ---\n{screen}");
    assert!(
        screen.contains("chunk size trade-off (log10): page writes, crash resync bytes"),
        "{screen}"
    );
    assert!(screen.contains("in use, < recommended"), "{screen}");

    // The table does not fit: 4 rows down shows the last size.
    let row_64m = |s: &str| s.lines().any(|l| l.trim_start().starts_with("64M "));
    assert!(!row_64m(&screen), "{screen}");
    for _ in 0..4 {
        assert!(
            tmux(&["send-keys", "-t", &session.0, "Down"])
                .status
                .success()
        );
    }
    let screen = capture_when(&session.0, row_64m);
    println!("--- 80x24, scrolled ---\n{screen}");
    assert!(row_64m(&screen), "scrolled to the last row:\n{screen}");
    assert!(screen.contains("in use, < recommended"), "{screen}");

    let out = tmux(&["send-keys", "-t", &session.0, "q"]);
    assert!(out.status.success());
    let t0 = Instant::now();
    while !status.exists() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let code = std::fs::read_to_string(&status).expect("tune exited after q");
    assert_eq!(
        code.trim(),
        "0",
        "exit status; stderr: {}",
        std::fs::read_to_string(&err).unwrap_or_default()
    );
    let alt = tmux(&["display", "-p", "-t", &session.0, "#{alternate_on}"]);
    assert_eq!(
        String::from_utf8_lossy(&alt.stdout).trim(),
        "0",
        "left the alternate screen"
    );
}
