//! The "many arrays" scenario: one boot creates arrays of every level and metadata version with
//! several bitmap chunk sizes, writes a deterministic set of direct writes to each, records what
//! `mdadm -X` and `md-bitmap inspect` say about every member, and crashes the guest so that the
//! member images keep exactly the bits the kernel left on disk.
use std::fmt::Write as _;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use xtask::arrays::ArraySpec;

/// One array of the scenario and what the guest does to it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScenarioArray {
    /// How it is created.
    pub spec: ArraySpec,
    /// Index of its first member among the VM's data disks.
    pub first_disk: usize,
    /// Member index failed and removed before the writes (a degraded array), if any.
    pub fail_member: Option<usize>,
    /// Array writes as (first sector, sectors).
    pub writes: Vec<(u64, u64)>,
}

/// Size of every data disk in MiB.
pub const DISK_MIB: u64 = 48;

fn arr(level: u32, disks: usize, meta: &str, bchunk_kib: u64) -> ArraySpec {
    ArraySpec::new(level, disks)
        .metadata(meta)
        .bitmap_chunk_kib(bchunk_kib)
        .delay_secs(1)
}

/// The arrays, with writes drawn from a fixed seed.
pub fn arrays() -> Vec<ScenarioArray> {
    let specs: Vec<(ArraySpec, Option<usize>)> = vec![
        (arr(1, 2, "0.90", 64), None),
        (arr(10, 4, "1.0", 128).chunk_kib(64).layout("n2"), None),
        (arr(10, 4, "1.2", 64).chunk_kib(64).layout("f2"), None),
        (arr(10, 3, "1.1", 256).chunk_kib(32).layout("o2"), None),
        (
            arr(5, 3, "1.2", 64).chunk_kib(64).layout("left-symmetric"),
            None,
        ),
        (
            arr(5, 4, "1.1", 128)
                .chunk_kib(128)
                .layout("right-asymmetric"),
            None,
        ),
        (
            arr(6, 4, "1.2", 64).chunk_kib(64).layout("left-symmetric"),
            None,
        ),
        (
            arr(6, 5, "1.0", 512).chunk_kib(64).layout("ddf-N-continue"),
            None,
        ),
        (arr(4, 3, "1.2", 128).chunk_kib(64), None),
        (arr(1, 2, "1.2", 64).write_behind(&[1], 256), None),
        (arr(5, 3, "1.2", 64).chunk_kib(64), Some(2)),
        // Clean: no writes at all (its bits cleared before the workload).
        (arr(1, 2, "1.2", 1024), None),
    ];
    let clean = specs.len() - 1;
    let mut rng = StdRng::seed_from_u64(0x6d64_6269_746d_6170);
    let mut first = 0;
    let mut out = Vec::new();
    for (i, (mut spec, fail)) in specs.into_iter().enumerate() {
        spec.name = format!("md{i}");
        // Writes within the first 24 MiB of the array: every array here is at least that big.
        let limit = 24 * 2048u64;
        let mut writes = Vec::new();
        for _ in 0..24 {
            let len = [8u64, 8, 16, 64, 128, 256, 512][rng.random_range(0..7)];
            let start = rng.random_range(0..(limit - len));
            writes.push((start, len));
        }
        if i == clean {
            writes.clear();
        }
        let n = spec.disks;
        out.push(ScenarioArray {
            spec,
            first_disk: first,
            fail_member: fail,
            writes,
        });
        first += n;
    }
    out
}

/// Total data disks the scenario needs.
pub fn disks_needed(arrays: &[ScenarioArray]) -> usize {
    arrays.iter().map(|a| a.spec.disks).sum()
}

/// The guest script (the arrays themselves are created by the payload's array list).
pub fn script(arrays: &[ScenarioArray], disk_names: &[String]) -> String {
    let mut s = String::new();
    let members = |a: &ScenarioArray| -> Vec<String> {
        disk_names[a.first_disk..a.first_disk + a.spec.disks].to_vec()
    };
    for a in arrays {
        let name = &a.spec.name;
        // The daemon sleeps 1 s: let the bits loaded at assembly clear.
        writeln!(s, "mdb_wait_clean {name} 60 || {{ echo '{name} did not become clean'; cat /proc/mdstat; exit 10; }}").unwrap();
    }
    for a in arrays {
        let name = &a.spec.name;
        if let Some(m) = a.fail_member {
            let dev = &members(a)[m];
            writeln!(
                s,
                "mdadm /dev/{name} --fail {dev} --remove {dev} >/dev/null 2>&1 || exit 11"
            )
            .unwrap();
        }
        // From here on the daemon does not clear anything before the crash.
        writeln!(
            s,
            "echo 600 > /sys/block/{name}/md/bitmap/time_base || exit 12"
        )
        .unwrap();
    }
    for a in arrays {
        let name = &a.spec.name;
        for (sec, len) in &a.writes {
            writeln!(
                s,
                "dd if=/dev/urandom of=/dev/{name} bs={} seek={} count=1 oflag=direct,seek_bytes conv=notrunc 2>/dev/null || {{ echo 'write {sec}+{len} to {name} failed'; exit 13; }}",
                len * 512,
                sec * 512
            )
            .unwrap();
        }
    }
    s += "sync\nsleep 1\ncat /proc/mdstat\nmd-bitmap abi > /out/abi.json\n";
    for a in arrays {
        for (i, dev) in members(a).iter().enumerate() {
            if a.fail_member == Some(i) {
                continue;
            }
            let tag = format!("{}-{}", a.spec.name, i);
            writeln!(
                s,
                "mdadm -X {dev} > /out/mdadm-{tag}.txt 2>&1; echo $? > /out/mdadm-{tag}.rc"
            )
            .unwrap();
            writeln!(s, "md-bitmap inspect {dev} > /out/inspect-{tag}.txt 2>&1; echo $? > /out/inspect-{tag}.rc").unwrap();
            writeln!(
                s,
                "md-bitmap inspect --json {dev} > /out/inspect-{tag}.json 2>&1"
            )
            .unwrap();
        }
        let n = &a.spec.name;
        writeln!(
            s,
            "echo $(cat /sys/block/{n}/md/level) $(cat /sys/block/{n}/md/layout) $(cat /sys/block/{n}/md/raid_disks) $(cat /sys/block/{n}/md/chunk_size) $(cat /sys/block/{n}/md/component_size) > /out/geom-{n}"
        )
        .unwrap();
    }
    s += "mdb_crash\n";
    s
}
