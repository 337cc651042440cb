//! Real kernel (6.12): `md-bitmap tui` on a pty (tmux) inside the guest, on a RAID1 whose members
//! are dm-delay devices, with a write workload. Screens are captured with `tmux capture-pane`:
//! idle (all clean), while writes are held in flight by a 2 s write delay on one member, after
//! they completed (dirty on disk), and after the bitmap daemon (time_base 2 s) cleared the bits;
//! then a member failed and removed, writes while degraded (NEEDED), and a throttled recovery after
//! the member's re-add (RESYNC cells and the sync checkpoint), until all is clean again.
//! Then the keys `s` (snapshot written), `?` (help) and `q` (quit, terminal restored), and a
//! second TUI stopped with SIGTERM (terminal restored).
//!
//! Asserted: the heatmap's cells of the written chunks go clean → in flight → dirty → clean, the
//! rest stay clean; the side panel says the feed is live; the hottest cells carry the top of the
//! intensity scale; the snapshot file is valid JSON naming md0; after `q` and after SIGTERM the
//! TUI exited 0 and left the alternate screen.
use std::time::Duration;

use tests::*;
use xtask::kernels::Series;

/// Written chunks (64 KiB bitmap chunks; one 4 KiB write at the start of each).
const FIRST: u64 = 100;
const COUNT: u64 = 10;
/// Chunks written while md0 is degraded, then recovered when the member is re-added.
const DEGRADED: std::ops::Range<u64> = 200..208;

fn script() -> String {
    let mut s = String::new();
    s += "mount -t devpts devpts /dev/pts 2>/dev/null\nexport LANG=C.UTF-8 TERM=xterm-256color\n";
    s += "i=0; for d in $MDB_DISKS; do sz=$(blockdev --getsz $d); dmsetup create --noudevsync d$i --table \"0 $sz delay $d 0 0\" || exit 20; i=$((i+1)); done; dmsetup mknodes\n";
    s += &ArraySpec::new(1, 2)
        .name("md0")
        .delay_secs(2)
        .bitmap_chunk_kib(64)
        .create_script(&["/dev/mapper/d0".into(), "/dev/mapper/d1".into()]);
    // Keep md from marking the array clean between writes (its superblock write would sit behind
    // the write delay and hold the writes before the bitmap sees them): one warm-up write, then
    // wait for its bit to clear. The default comes back once the writes are done (bits were
    // seen not to leave the disk while the array stayed active).
    s += "echo 600 > /sys/block/md0/md/safe_mode_delay\ndd if=/dev/zero of=/dev/md0 bs=4096 count=1 seek=14400 oflag=direct 2>/dev/null\n";
    s += "mdb_wait_clean md0 60 || { echo 'md0 not clean'; exit 21; }\n";
    s += r#"
# Captures the screen as soon as it matches both patterns (at most ~20 s).
cap_when() {
    i=0
    while [ $i -lt 100 ]; do
        tmux capture-pane -p -t t > /tmp/probe.txt
        grep -q "$2" /tmp/probe.txt && grep -q "$3" /tmp/probe.txt && { cap t $1; return 0; }
        sleep 0.2; i=$((i+1))
    done
    cap t $1; echo "screen $1 never matched $2 / $3"
}
cap() { tmux capture-pane -p -t $1 > /out/screen-$2.txt; tmux capture-pane -p -e -t $1 > /out/screen-$2.ansi; }
wait_live() {
    i=0
    while [ $i -lt 300 ]; do
        tmux capture-pane -p -t $1 > /tmp/probe.txt 2>/dev/null
        grep -q 'live (eBPF)' /tmp/probe.txt && grep -q '1 cell = ' /tmp/probe.txt && return 0
        sleep 0.2; i=$((i+1))
    done
    cat /tmp/probe.txt; return 1
}
tmux -u new-session -d -s t -x 120 -y 40 "md-bitmap tui --interval 0.25 --snapshot-dir /out 2>/out/tui.err; echo TUI-EXIT \$?; sleep 60" || exit 30
wait_live t || { echo 'TUI not live'; cat /out/tui.err; exit 31; }
sleep 1
cap t 0-idle
sz=$(blockdev --getsz /dev/vdb); dmsetup suspend --noudevsync d1 && dmsetup reload d1 --table "0 $sz delay /dev/vdb 0 0 /dev/vdb 0 2000" && dmsetup resume --noudevsync d1 || exit 32
W=""
"#;
    for c in FIRST..FIRST + COUNT {
        s += &format!(
            "dd if=/dev/urandom of=/dev/md0 bs=4096 count=1 seek={} oflag=direct 2>/dev/null &\nW=\"$W $!\"\n",
            c * 16
        );
    }
    s += &r#"
cap_when 1-inflight 'in flight [1-9]' 'in flight [1-9]'
wait $W
cap_when 2-dirty 'dirty [1-9]' 'in flight 0 '
dmsetup suspend --noudevsync d1 && dmsetup reload d1 --table "0 $sz delay /dev/vdb 0 0" && dmsetup resume --noudevsync d1 || exit 33
echo 0.2 > /sys/block/md0/md/safe_mode_delay
mdb_wait_clean md0 30 || echo 'md0 bits did not clear'
sleep 1.5
cap t 3-clean
# A real recovery: d1 failed and removed, chunks written while degraded (NEEDED), then d1
# re-added with the sync throttled so that its RESYNC chunks and checkpoint stay on screen.
mdadm /dev/md0 --fail /dev/mapper/d1 >/dev/null 2>&1; mdadm /dev/md0 --remove /dev/mapper/d1 >/dev/null 2>&1 || exit 36
for c in $(seq DFIRST DLAST); do dd if=/dev/urandom of=/dev/md0 bs=4096 count=1 seek=$((c*16)) oflag=direct 2>/dev/null; done
cap_when 3a-degraded 'NEEDED/RESYNC *[1-9]' '1 missing'
# Recovery writes to d1 take 400 ms each (and the sync is throttled) so that it lasts seconds.
dmsetup suspend --noudevsync d1 && dmsetup reload d1 --table "0 $sz delay /dev/vdb 0 0 /dev/vdb 0 400" && dmsetup resume --noudevsync d1 || exit 38
echo 1 > /sys/block/md0/md/sync_speed_min; echo 32 > /sys/block/md0/md/sync_speed_max
mdadm /dev/md0 --re-add /dev/mapper/d1 >/dev/null 2>&1 || exit 37
i=0
while [ $i -lt 80 ]; do
    sleep 0.4
    [ "$(cat /sys/block/md0/md/sync_action)" = idle ] && [ $i -gt 2 ] && break
    cap t sync-$i; i=$((i+1))
done
echo $i > /out/sync-frames
echo system > /sys/block/md0/md/sync_speed_min; echo system > /sys/block/md0/md/sync_speed_max
dmsetup suspend --noudevsync d1 && dmsetup reload d1 --table "0 $sz delay /dev/vdb 0 0" && dmsetup resume --noudevsync d1 || exit 39
mdb_wait_clean md0 30 || echo 'md0 bits did not clear after the recovery'
sleep 1.5
cap t 3b-recovered
tmux send-keys -t t s; sleep 1
cap t 4-saved
tmux send-keys -t t '?'; sleep 1
cap t 5-help
tmux send-keys -t t x; sleep 0.5
tmux send-keys -t t q; sleep 2
cap t 6-quit
tmux display -p -t t '#{alternate_on}' > /out/alt-after-q
tmux -u new-session -d -s u -x 100 -y 30 "md-bitmap tui 2>/out/tui2.err; echo TUI-EXIT \$?; sleep 60" || exit 34
wait_live u || { echo 'second TUI not live'; cat /out/tui2.err; exit 35; }
kill -TERM $(pidof md-bitmap)
sleep 2
cap u 7-term
tmux display -p -t u '#{alternate_on}' > /out/alt-after-term
tmux kill-server
ls /out
"#
    .replace("DFIRST", &DEGRADED.start.to_string())
    .replace("DLAST", &(DEGRADED.end - 1).to_string());
    s
}

/// The heatmap's glyphs in chunk order (one cell per chunk at this size: asserted).
fn heat_cells(screen: &str) -> String {
    let mut lines = screen.lines().skip_while(|l| !l.contains(" · 1 cell = "));
    let title = lines.next().expect("heatmap title");
    assert!(title.contains("1 cell = 1 chunk "), "{title}");
    let mut cells = String::new();
    for l in lines {
        if l.starts_with('└') {
            break;
        }
        let heat = l.split("││").next().unwrap().trim_start_matches('│');
        // Gutter: right-aligned first chunk of the row, a space, then the cells.
        let body: String = heat
            .trim_start()
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .chars()
            .skip(1)
            .collect();
        cells.push_str(body.trim_end_matches(['│', ' ']));
    }
    cells
}

fn glyphs(cells: &str, r: std::ops::Range<u64>) -> String {
    cells
        .chars()
        .skip(r.start as usize)
        .take((r.end - r.start) as usize)
        .collect()
}

#[test]
fn tui_shows_writes_land_and_bits_clear_on_6_12() {
    let series = Series::V6_12;
    let dir = work_dir("kernel_tui", series);
    let vm = Vm::new(series, &dir, &[64, 64]).unwrap();
    let payload = Payload::script(script()).timeout(Duration::from_secs(300));
    let r = vm.run(&payload).unwrap();
    eprintln!(
        "{}: booted in {:.1}s, ran {:.1}s",
        r.release, r.boot_secs, r.total_secs
    );
    r.expect_success().unwrap();
    let screen = |n: &str| r.out_file(&format!("screen-{n}.txt")).unwrap();
    for n in ["0-idle", "1-inflight", "2-dirty", "3-clean"] {
        eprintln!("--- {n} ---\n{}", screen(n));
    }
    let written = FIRST..FIRST + COUNT;
    let idle = heat_cells(&screen("0-idle"));
    assert!(idle.len() >= 1000, "{} cells", idle.len());
    assert!(idle.chars().all(|c| c == '·'), "idle: {idle}");
    assert!(screen("0-idle").contains("live (eBPF)"));

    // Only written chunks change; while held, some are in flight; once done, some are dirty on
    // disk and none in flight (md may set their bits in more than one batch).
    let only_written = |cells: &str, what: &str| {
        for (i, c) in cells.chars().enumerate() {
            if !written.contains(&(i as u64)) {
                assert_eq!(c, '·', "{what}: chunk {i} is {c:?}");
            }
        }
    };
    let inflight = heat_cells(&screen("1-inflight"));
    let w = glyphs(&inflight, written.clone());
    eprintln!("written chunks while held: {w:?}");
    assert!(w.contains('*'), "no in-flight cell among {w:?}");
    assert!(w.chars().all(|c| "*o·".contains(c)), "{w:?}");
    only_written(&inflight, "in flight");
    // The written chunks are the hottest: the top of the cividis scale (255,234,70) is drawn.
    let ansi = r.out_file("screen-1-inflight.ansi").unwrap();
    assert!(ansi.contains("48;2;255;234;70"), "no top-intensity cell");

    let dirty = heat_cells(&screen("2-dirty"));
    let w = glyphs(&dirty, written.clone());
    eprintln!("written chunks after the writes: {w:?}");
    assert!(w.contains('o') && !w.contains('*'), "{w:?}");
    only_written(&dirty, "dirty");

    let clean = heat_cells(&screen("3-clean"));
    assert!(clean.chars().all(|c| c == '·'), "after the daemon: {clean}");

    // Degraded writes: NEEDED cells exactly on the written chunks.
    let deg = heat_cells(&screen("3a-degraded"));
    eprintln!("--- 3a-degraded ---\n{}", screen("3a-degraded"));
    let w = glyphs(&deg, DEGRADED);
    assert_eq!(w, "!".repeat(DEGRADED.count()), "degraded writes: {w:?}");
    for (i, c) in deg.chars().enumerate() {
        if !DEGRADED.contains(&(i as u64)) {
            assert_eq!(c, '·', "degraded: chunk {i} is {c:?}");
        }
    }
    // ... and the side panel predicts the re-add's recovery from exactly those NEEDED chunks.
    let want = format!("re-add slot 1   {} chunks", DEGRADED.count());
    assert!(screen("3a-degraded").contains(&want), "no {want:?}");
    // The recovery: RESYNC cells are only ever the NEEDED chunks, and at least one frame shows
    // them; the sync checkpoint (`>`) is drawn while the recovery runs.
    let frames: usize = r.out_file("sync-frames").unwrap().trim().parse().unwrap();
    let (mut resync_seen, mut syncing_seen, mut ahead_seen) = (0, 0, 0);
    for f in 0..frames {
        let text = screen(&format!("sync-{f}"));
        let cells = heat_cells(&text);
        for (i, c) in cells.chars().enumerate() {
            if c == 'R' {
                assert!(
                    DEGRADED.contains(&(i as u64)),
                    "frame {f}: chunk {i} RESYNC"
                );
                resync_seen += 1;
            }
        }
        if cells.contains('>') {
            syncing_seen += 1;
        }
        // While RESYNC chunks lie ahead of the checkpoint, the running recovery has bytes left
        // (the bitmap's NEEDED and RESYNC chunks past `sync_completed`).
        if let (Some(p), Some(last_r)) = (cells.find('>'), cells.rfind('R'))
            && last_r > p
        {
            let left = text
                .lines()
                .find_map(|l| l.split("││").nth(1).filter(|d| d.starts_with("recover ")))
                .map(|d| d.trim_end_matches(['│', ' ']).to_string());
            eprintln!("frame {f}: RESYNC ahead of the checkpoint, panel {left:?}");
            assert!(
                left.as_deref()
                    .is_some_and(|l| l.ends_with(" left") && !l.contains(" 0 B")),
                "frame {f}: {left:?}"
            );
            ahead_seen += 1;
        }
        if f == frames / 2 {
            eprintln!("--- sync-{f} ---\n{text}");
        }
    }
    eprintln!(
        "recovery: {frames} frames, {resync_seen} RESYNC cells, {syncing_seen} frames with a checkpoint, {ahead_seen} with RESYNC ahead of it"
    );
    assert!(resync_seen > 0, "no RESYNC cell during the recovery");
    assert!(
        syncing_seen > 0,
        "no sync checkpoint drawn during the recovery"
    );
    assert!(
        ahead_seen > 0,
        "no frame with RESYNC chunks ahead of the checkpoint"
    );
    let rec = heat_cells(&screen("3b-recovered"));
    assert!(rec.chars().all(|c| c == '·'), "after the recovery: {rec}");

    assert!(screen("4-saved").contains("snapshot written to /out/md-bitmap-snapshot-"));
    let snap_file = std::fs::read_dir(&r.out_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("md-bitmap-snapshot-")
        })
        .expect("snapshot file");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(snap_file.path()).unwrap()).unwrap();
    assert_eq!(v["arrays"][0]["name"], "md0");
    assert_eq!(v["source"], "live");

    assert!(screen("5-help").contains("zoom in / out"));
    assert!(
        screen("6-quit").contains("TUI-EXIT 0"),
        "{}",
        screen("6-quit")
    );
    assert_eq!(r.out_file("alt-after-q").unwrap().trim(), "0");
    assert!(
        screen("7-term").contains("TUI-EXIT 0"),
        "{}",
        screen("7-term")
    );
    assert_eq!(r.out_file("alt-after-term").unwrap().trim(), "0");
    cleanup(&dir);
}
