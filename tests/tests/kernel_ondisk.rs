//! Real kernels: arrays of levels 1, 4, 5, 6 and 10 with metadata 0.90, 1.0, 1.1 and 1.2 and several
//! bitmap chunk sizes (clean, dirty, degraded, write-behind), written at many offsets, then
//! crashed. Checks, per member:
//! - `md-bitmap inspect` prints the same lines as `mdadm -X` (both run in the guest on the device);
//! - the on-disk dirty set the kernel left (read from the member image on the host after the
//!   crash) equals the engine's mapping prediction for the writes, bit for bit, with the
//!   accounting form (per stripe on 6.1, per bio on 6.12.y) chosen from the running kernel's ABI.
use std::collections::BTreeSet;
use std::time::Duration;

use md_bitmap::engine::mapping::{
    Accounting, ArrayGeometry, ArrayMap, CallOptions, chunks_touched,
};
use md_bitmap::ondisk::read_member;
use tests::scenario::{self, DISK_MIB, ScenarioArray};
use tests::*;
use xtask::kernels::Series;

fn predicted(
    a: &ScenarioArray,
    geom: &str,
    accounting: Accounting,
    chunkshift: u32,
) -> BTreeSet<u64> {
    let f: Vec<&str> = geom.split_whitespace().collect();
    let g = ArrayGeometry::from_sysfs(
        f[0],
        f[1].parse().unwrap(),
        f[2].parse().unwrap(),
        f[3].parse().unwrap(),
        f[4].parse().unwrap(),
    )
    .unwrap();
    let map = ArrayMap::new(g).unwrap();
    let mut opts = CallOptions::new(accounting);
    opts.raid1_write_behind = a.spec.write_behind.is_some();
    let mut out = BTreeSet::new();
    for (s, n) in &a.writes {
        out.extend(chunks_touched(map.write_calls(*s, *n, &opts), chunkshift));
    }
    out
}

fn run(series: Series) {
    let arrays = scenario::arrays();
    let n = scenario::disks_needed(&arrays);
    let dir = work_dir("ondisk", series);
    let vm = Vm::new(series, &dir, &vec![DISK_MIB; n]).unwrap();
    let mut payload = Payload::script(scenario::script(&arrays, &vm.disk_names()))
        .timeout(Duration::from_secs(600));
    for a in &arrays {
        payload = payload.array(a.spec.clone());
    }
    let r = vm.run(&payload).unwrap();
    assert_eq!(
        r.outcome,
        Outcome::Crashed,
        "{}: scenario did not reach its crash:\n{}",
        r.release,
        xtask::vm::tail(&r.console, 80)
    );
    eprintln!(
        "kernel {}: {} arrays on {} disks, boot {:.1}s, run {:.1}s",
        r.release,
        arrays.len(),
        n,
        r.boot_secs,
        r.total_secs
    );
    let abi: serde_json::Value = serde_json::from_str(&r.out_file("abi.json").unwrap()).unwrap();
    let accounting = if abi["write_args"] == "plain" {
        Accounting::PerBio
    } else {
        Accounting::PerStripe
    };
    let mut compared = 0;
    let mut bits_checked = 0;
    let mut failures = Vec::new();
    for a in &arrays {
        let geom = r.out_file(&format!("geom-{}", a.spec.name)).unwrap();
        for i in 0..a.spec.disks {
            if a.fail_member == Some(i) {
                continue;
            }
            let tag = format!("{}-{}", a.spec.name, i);
            let mdadm = r.out_file(&format!("mdadm-{tag}.txt")).unwrap();
            assert_eq!(
                r.out_file(&format!("mdadm-{tag}.rc")).unwrap().trim(),
                "0",
                "{tag}: mdadm -X failed: {mdadm}"
            );
            let ours = r.out_file(&format!("inspect-{tag}.txt")).unwrap();
            if ours != mdadm {
                failures.push(format!(
                    "{tag}: inspect differs from mdadm -X:\n--- mdadm\n{mdadm}--- inspect\n{ours}"
                ));
            }
            compared += 1;
            // The crash froze the disks: read the member image as the kernel left it.
            let (_, m) = read_member(&vm.disks[a.first_disk + i]).unwrap();
            let g = m.geometry.expect("classic bitmap has a geometry");
            let chunkshift = g.chunk_size_bytes.trailing_zeros() - 9;
            let on_disk: BTreeSet<u64> = m
                .dirty()
                .dirty_ranges
                .iter()
                .flat_map(|r| r.clone())
                .collect();
            let want = predicted(a, &geom, accounting, chunkshift);
            bits_checked += g.chunks;
            if on_disk != want {
                let extra: Vec<_> = on_disk.difference(&want).collect();
                let missing: Vec<_> = want.difference(&on_disk).collect();
                failures.push(format!(
                    "{tag} ({geom}, {:?}): on disk but not predicted {extra:?}; predicted but not on disk {missing:?}",
                    accounting
                ));
            }
        }
    }
    eprintln!(
        "kernel {}: {compared} members, {bits_checked} bits compared with the mapping ({accounting:?}); {} failures",
        r.release,
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{}:\n{}",
        r.release,
        failures.join("\n")
    );
    cleanup(&dir);
}

#[test]
fn ondisk_matches_kernel_and_mdadm_on_6_1() {
    run(Series::V6_1);
}

#[test]
fn ondisk_matches_kernel_and_mdadm_on_6_12() {
    run(Series::V6_12);
}
