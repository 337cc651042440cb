//! Parity with the real `mdadm -X`: synthetic member images (valid checksums, mdadm's own
//! placements) are attached to read-only loop devices and mdadm's output is compared line by line
//! with `md-bitmap inspect`'s (through the reusable `inspect::mdadm_parity`). Also reads the same
//! members through the `O_DIRECT` block-device path.
//!
//! Needs root, `losetup` and `mdadm` (the dev host and CI have them); elsewhere the tests say so
//! and pass without checking.
#[path = "inspect_support.rs"]
mod support;

use std::process::Command;
use std::sync::Mutex;

use md_bitmap::inspect::mdadm_parity;
use md_bitmap::ondisk::{DeviceKind, MemberDevice, examine_member, read_member};
use support::{BitmapSpec, Meta, Spec, build, write_image};

/// Loop devices are a shared resource: attach them one test at a time.
static LOOP: Mutex<()> = Mutex::new(());

fn tools_available() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let mdadm = Command::new("mdadm").arg("--version").output().is_ok();
    let losetup = Command::new("losetup").arg("--version").output().is_ok();
    if !(root && mdadm && losetup) {
        eprintln!(
            "SKIPPED: needs root ({root}), mdadm ({mdadm}) and losetup ({losetup}) to compare with mdadm -X"
        );
    }
    root && mdadm && losetup
}

/// A small deterministic generator for dirty patterns.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn cases() -> Vec<(String, Spec)> {
    let mut rng = Lcg(42);
    let mut out = Vec::new();
    // (chunk size bytes, sync size sectors): exercises human_chunksize and every human_size branch.
    let geometries: [(u32, u64); 8] = [
        (65536, 16000),                   // 125 chunks, MiB
        (512, 3000),                      // 3000 chunks, below 5000 KiB: no human size
        (4096, 10_000 + 3),               // partial last byte
        (1 << 20, 3 * (1 << 21) + 777),   // GiB
        (1 << 26, 5 * (1 << 31) + 12345), // TiB
        (1 << 30, 1 << 35),               // 1 GB chunks
        (1 << 26, (1 << 32) - 1),         // just under 2 TiB
        (8192, 1),                        // one chunk
    ];
    for meta in [Meta::V090Le, Meta::V10, Meta::V11, Meta::V12] {
        for (gi, &(chunk, sync)) in geometries.iter().enumerate() {
            let mut b = BitmapSpec::classic(chunk, sync, Vec::new());
            let chunks = b.chunks();
            b.dirty = match gi % 4 {
                0 => Vec::new(),
                1 => (0..chunks).collect(),
                _ => (0..chunks)
                    .filter(|_| rng.next().is_multiple_of(7))
                    .collect(),
            };
            if chunks > 0 && gi == 2 {
                b.dirty.push(chunks - 1);
                b.dirty.sort_unstable();
                b.dirty.dedup();
                b.trailing_garbage = true;
            }
            b.events = rng.next() << 20;
            b.events_cleared = b.events / 2;
            b.state = [0, 2, 1, 0][gi % 4];
            b.write_behind = [0, 256, 0, 16383][gi % 4];
            b.daemon_sleep = [5, 1, 60, 5][gi % 4];
            let mut spec = Spec::new(meta, 8192, Some(b));
            spec.events = 99;
            out.push((format!("{meta:?}-g{gi}"), spec));
        }
    }
    // Version 3 (host-endian, written on a little-endian host).
    let mut b = BitmapSpec::classic(65536, 16000, vec![1, 2, 3, 100]);
    b.version = 3;
    out.push(("v3".into(), Spec::new(Meta::V090Le, 4096, Some(b))));
    // Clustered bitmaps (cluster-md needs 1.2): slots differ in events and bits.
    for nodes in [2u32, 4] {
        let mut b = BitmapSpec::classic(1 << 20, 1 << 21, vec![0, 5]);
        b.version = 5;
        b.nodes = nodes;
        b.cluster_name = format!("cluster{nodes}");
        b.slot_dirty = (0..nodes as u64).map(|i| (0..i * 3).collect()).collect();
        b.slot_events = (0..nodes as u64).map(|i| 500 + i).collect();
        let mut spec = Spec::new(Meta::V12, 8192, Some(b));
        spec.bitmap_offset = Some(8);
        out.push((format!("clustered-{nodes}"), spec));
    }
    out
}

#[test]
fn inspect_text_matches_mdadm_examine_bitmap() {
    if !tools_available() {
        return;
    }
    let _g = LOOP.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut compared = 0;
    for (name, spec) in cases() {
        let p = write_image(dir.path(), &format!("{name}.img"), &build(&spec));
        let r = mdadm_parity(&p).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(
            r.mdadm_status,
            Some(0),
            "{name}: mdadm failed: {}",
            r.mdadm_stderr
        );
        assert!(
            r.mdadm_stdout.contains("Bitmap :"),
            "{name}: {}",
            r.mdadm_stdout
        );
        compared += 1;
        if !r.matches() {
            failures.push(r.to_string());
        }
    }
    eprintln!("compared {compared} members with mdadm -X");
    assert!(compared >= 35);
    assert!(
        failures.is_empty(),
        "differences from mdadm -X:\n{}",
        failures.join("\n")
    );
}

#[test]
fn block_devices_are_read_with_o_direct_and_agree_with_the_image() {
    if !tools_available() {
        return;
    }
    let _g = LOOP.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    for (name, spec) in cases().into_iter().step_by(5) {
        let p = write_image(dir.path(), &format!("{name}.img"), &build(&spec));
        let o = Command::new("losetup")
            .args(["--find", "--show", "--read-only"])
            .arg(&p)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let dev = String::from_utf8_lossy(&o.stdout).trim().to_string();
        let result = (|| {
            let bd = MemberDevice::open(dev.as_ref())?;
            assert_eq!(bd.kind(), DeviceKind::BlockDevice);
            let from_dev = examine_member(&bd)?;
            let (file, from_file) = read_member(&p)?;
            assert_eq!(file.kind(), DeviceKind::RegularFile);
            Ok::<_, md_bitmap::ondisk::OndiskError>((from_dev, from_file))
        })();
        let _ = Command::new("losetup").arg("-d").arg(&dev).status();
        let (a, b) = result.unwrap_or_else(|e| panic!("{name} via {dev}: {e}"));
        assert_eq!(a, b, "{name}");
    }
}
