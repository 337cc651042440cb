//! The live mirror's user-space cost per kernel event: a raid1 mirror fed the events md and the
//! block layer produce for 4 KiB writes (bio queued on the md device, start-write, unplug,
//! end-write, bio completed), 32 in flight, as the agent applies them (`Mirror::apply`, then
//! the lag of each). Prints ns per event and events per second on one core.
//!
//! `cargo bench -p md-bitmap-user --bench mirror` (`MIRROR_BENCH_WRITES=N`).
#[path = "common/xorshift.rs"]
mod xorshift;
use std::time::Instant;
use xorshift::XorShift;

use md_bitmap::engine::{BitmapGeometry, KernelVariant};
use md_bitmap::feed::record::{DevNum, EventKind, FeedEvent};
use md_bitmap::mirror::{Mirror, MirrorArray};
use md_bitmap::sysfs::{ArrayInfo, BitmapInfo};

const OWNER: u64 = 0xffff_8880_1234_5000;
const MD0: DevNum = DevNum { major: 9, minor: 0 };

fn info() -> ArrayInfo {
    ArrayInfo {
        name: "md0".into(),
        dev: MD0,
        level: "raid1".into(),
        raid_disks: 2,
        component_size_kib: 64 << 20,
        array_sectors: 128 << 20,
        metadata_version: "1.2".into(),
        array_state: "active".into(),
        sync_action: "idle".into(),
        bitmap: Some(BitmapInfo {
            location: "+8".into(),
            chunk_size_bytes: 64 << 10,
            time_base_secs: 5.0,
            metadata: "internal".into(),
            can_clear: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The events of `n` 4 KiB writes, `qd` in flight, 10 µs apart.
fn events(n: u64, qd: u64) -> Vec<FeedEvent> {
    let mut rng = XorShift::new();
    let mut next = || rng.next_u64();
    let sectors_total = 128u64 << 20;
    let offs: Vec<u64> = (0..n)
        .map(|_| (next() % (sectors_total - 8)) & !7)
        .collect();
    let ev = |ts_ns: u64, kind: EventKind| FeedEvent {
        ts_ns,
        jiffies: 1_000_000 + ts_ns / 4_000_000,
        cpu: 0,
        tid: 100,
        kind,
    };
    let bio = |i: u64| 0xffff_8881_0000_0000 + i * 256;
    let mut out = Vec::with_capacity(n as usize * 5);
    for i in 0..n + qd {
        let t = 1_000_000_000 + i * 10_000;
        if i < n {
            let off = offs[i as usize];
            out.push(ev(
                t,
                EventKind::BioQueue {
                    dev: MD0,
                    sector: off,
                    sectors: 8,
                    rwbs: "W".into(),
                    bio: bio(i),
                },
            ));
            out.push(ev(
                t + 1,
                EventKind::StartWrite {
                    owner: OWNER,
                    offset: off,
                    sectors: 8,
                    behind: None,
                },
            ));
            out.push(ev(t + 2, EventKind::Unplug { owner: OWNER }));
        }
        if i >= qd {
            let j = i - qd;
            let off = offs[j as usize];
            out.push(ev(
                t + 3,
                EventKind::EndWrite {
                    owner: OWNER,
                    offset: off,
                    sectors: 8,
                    success: None,
                    behind: None,
                    degraded: Some(false),
                },
            ));
            out.push(ev(
                t + 4,
                EventKind::BioComplete {
                    dev: MD0,
                    sector: off,
                    sectors: 8,
                    rwbs: "W".into(),
                    error: 0,
                    bio: bio(j),
                },
            ));
        }
    }
    out
}

fn main() {
    let n: u64 = std::env::var("MIRROR_BENCH_WRITES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let evs = events(n, 32);
    let mut best = f64::MAX;
    for _ in 0..3 {
        let mut a = MirrorArray::new(info());
        a.mddev = Some(OWNER);
        a.bitmap_addr = Some(OWNER);
        let geo = BitmapGeometry::new(64 << 10, 128 << 20).expect("geometry");
        a.seed(KernelVariant::V6_12, geo, &[], 5, 5, None);
        let mut m = Mirror::default();
        m.insert(a);
        let t = Instant::now();
        let mut routed = 0u64;
        for e in &evs {
            routed += u64::from(m.apply(e).is_some());
        }
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(routed, evs.len() as u64, "every event reaches md0");
        best = best.min(secs);
    }
    println!(
        "mirror bench: {} events of {n} raid1 4 KiB writes: {:.0} ns per event, {:.2} M events/s (best of 3)",
        evs.len(),
        best * 1e9 / evs.len() as f64,
        evs.len() as f64 / best / 1e6
    );
}
