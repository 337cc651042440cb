//! The agent: wires the live feed, sysfs, the on-disk bitmap and the kernel's counters to the
//! [`Mirror`]. All I/O of the live mirror happens here; the mirror and the engine stay pure.
//!
//! Start-up: load and attach the eBPF programs, find the arrays in sysfs, and seed each array's
//! engine from the on-disk bitmap plus, where md_mod's BTF and kallsyms allow, the kernel's own
//! counters (read through BPF), discarding ring-buffer events older than the seed. Then
//! [`Agent::poll`] applies events as they come and [`Agent::maintain`] follows arrays that appear
//! or stop, members that change, bitmaps added or removed, reconciles with the on-disk bitmap
//! (drift) and re-seeds after ring-buffer drops.
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::engine::{BitmapGeometry, KernelVariant};
use crate::feed::ebpf::Feed;
use crate::feed::kstate::KernelStateReader;
use crate::feed::record::DevNum;
use crate::feed::record::EventKind;
use crate::feed::{BitmapAbi, FeedEvent, KernelSymbols};
use crate::mirror::snapshot::{SCHEMA_VERSION, Snapshot};
use crate::mirror::{Mirror, MirrorArray, variant_for};
use crate::ondisk::read_member;
use crate::sysfs::{ArrayInfo, Sysfs};

/// CLOCK_MONOTONIC in nanoseconds (the clock of `bpf_ktime_get_ns`).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Wall clock in Unix milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The on-disk bitmap of an array, read from its first in-sync member.
pub struct DiskBitmap {
    /// Bit area bytes (chunk i in byte i/8, bit i%8).
    pub bits: Vec<u8>,
    /// Bitmap geometry.
    pub geometry: BitmapGeometry,
    /// `events` of the bitmap superblock.
    pub events: u64,
    /// `events_cleared`.
    pub events_cleared: u64,
    /// The member it was read from (`dm-1`, `vdb`).
    pub member: String,
}

/// Reads the on-disk bitmap of `info` from its first in-sync member (with O_DIRECT).
pub fn read_disk_bitmap(info: &ArrayInfo) -> Result<DiskBitmap> {
    let m = info
        .members
        .iter()
        .find(|m| m.in_sync() && !m.faulty())
        .with_context(|| {
            format!(
                "{} has no in-sync member to read the bitmap from",
                info.name
            )
        })?;
    let path = Path::new("/dev").join(&m.name);
    let (_, mb) = read_member(&path)?;
    let g = mb
        .geometry
        .with_context(|| format!("{}: no classic bitmap on {}", info.name, path.display()))?;
    let geometry = BitmapGeometry::new(g.chunk_size_bytes, mb.bitmap.sync_size_sectors)
        .map_err(|e| anyhow::anyhow!("{}: bitmap geometry: {e:?}", info.name))?;
    let mut bits = vec![0u8; g.chunks.div_ceil(8) as usize];
    for r in mb.dirty().dirty_ranges {
        for c in r {
            bits[(c / 8) as usize] |= 1 << (c % 8);
        }
    }
    Ok(DiskBitmap {
        bits,
        geometry,
        events: mb.bitmap.events,
        events_cleared: mb.bitmap.events_cleared,
        member: m.name.clone(),
    })
}

/// How long without bitmap events makes a quiescent point (bitmap page writes are issued
/// asynchronously by the daemon; they have landed well before this).
pub const QUIESCENT_NS: u64 = 500_000_000;

/// The live agent.
pub struct Agent {
    feed: Feed,
    abi: BitmapAbi,
    variant: KernelVariant,
    kstate: Option<KernelStateReader>,
    kstate_error: Option<String>,
    sysfs: Sysfs,
    filter: Vec<String>,
    /// The mirror.
    pub mirror: Mirror,
    last_drops: u64,
    /// Drift at the previous reconciliation, per array (re-seed when it persists).
    prev_drift: std::collections::HashMap<String, u64>,
    /// Arrays whose reconciliation this period found the disk read disturbed (see
    /// [`RECONCILE_GUARD_NS`]), retried every [`RECONCILE_RETRY`] until the next period.
    reconcile_pending: std::collections::BTreeSet<String>,
    last_reconcile_try: Instant,
    last_maintain: Instant,
    last_rescan: Instant,
    /// Decoded events drained but not yet applied (see [`Agent::verify`]).
    backlog: std::collections::VecDeque<FeedEvent>,
    event_log: Option<Box<dyn std::io::Write + Send>>,
}

/// One comparison of an array's mirror with the kernel's own state ([`Agent::verify`]).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct VerifyRecord {
    /// Always `"verify"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// CLOCK_MONOTONIC ns of the kernel read.
    pub ts_ns: u64,
    /// Array.
    pub array: String,
    /// Chunks compared.
    pub chunks: u64,
    /// Chunks whose full 16-bit counter differs between mirror and kernel.
    pub counter_mismatches: u64,
    /// Chunks with writes in flight (COUNTER > 2) in the kernel.
    pub kernel_in_flight_chunks: u64,
    /// Chunks with writes in flight in the mirror.
    pub mirror_in_flight_chunks: u64,
    /// Chunks in flight in one but not the other, among those with no write event in the
    /// [`SEED_GUARD_NS`](crate::mirror::SEED_GUARD_NS) before the kernel read.
    pub in_flight_mismatches: u64,
    /// Chunks in flight in one but not the other that had a write event within
    /// [`SEED_GUARD_NS`](crate::mirror::SEED_GUARD_NS) before the kernel read: the probe
    /// stamps a call at its entry and md changes the counter later (after `counts.lock`, and a
    /// counter page allocation that drops it), so the read may or may not include the call.
    #[serde(default)]
    pub torn_in_flight: u64,
    /// Ring-buffer drops so far (all arrays).
    pub drops: u64,
    /// Program runs the kernel skipped so far (all arrays).
    pub missed: u64,
    /// First few mismatching chunks as (chunk, mirror, kernel).
    pub examples: Vec<(u64, u16, u16)>,
    /// Chunks dirty on disk in the mirror.
    pub mirror_disk_dirty: u64,
    /// Chunks dirty in the real on-disk bitmap (read with O_DIRECT after the kernel read).
    pub disk_dirty: Option<u64>,
    /// Chunks whose on-disk bit differs between mirror and disk.
    pub disk_mismatches: Option<u64>,
    /// A quiescent point: no write pending in the mirror or the kernel, no bio in flight, and no
    /// bitmap event (start/end write, daemon, unplug) in the last [`QUIESCENT_NS`], so bitmap
    /// page writes the kernel issued have landed.
    pub quiescent: bool,
    /// Bitmap-wide fields that differ between mirror and kernel, as `field=mirror/kernel`
    /// (`allclean`, `need_sync`, `events`, `events_cleared`, `daemon_lastrun`); reported, not
    /// a failure by itself (the kernel may be inside a daemon pass at the read).
    #[serde(default)]
    pub state_diffs: Vec<String>,
    /// End-writes the mirror repaired so far for this array (see
    /// [`FeedHealth::repaired_end_writes`](crate::mirror::snapshot::FeedHealth)).
    #[serde(default)]
    pub repaired_end_writes: u64,
    /// Daemon passes applied at the daemon's return so far (see
    /// [`FeedHealth::late_daemon_passes`](crate::mirror::snapshot::FeedHealth)).
    #[serde(default)]
    pub late_daemon_passes: u64,
}

/// The bitmap-wide fields of the mirror that differ from the kernel's (see
/// [`VerifyRecord::state_diffs`]).
fn state_diffs(bm: &crate::engine::Bitmap, k: &crate::feed::kstate::KernelBitmap) -> Vec<String> {
    let mut v = Vec::new();
    let mut cmp = |name: &str, m: u64, kv: u64| {
        if m != kv {
            v.push(format!("{name}={m}/{kv}"));
        }
    };
    cmp("allclean", bm.allclean() as u64, k.allclean as u64);
    cmp("need_sync", bm.need_sync() as u64, k.need_sync as u64);
    cmp("events", bm.events(), k.events);
    cmp("events_cleared", bm.events_cleared(), k.events_cleared);
    cmp(
        "daemon_lastrun",
        bm.daemon_lastrun(),
        k.daemon_lastrun_jiffies,
    );
    v
}

/// How often [`Agent::maintain`] re-reads sysfs between reconciliations: member failures,
/// `degraded` and sync progress show up within this.
pub const RESCAN_EVERY: Duration = Duration::from_secs(1);

/// How long [`Agent::wait`] lets events gather after the first one wakes it: the mirror's lag
/// against the agent's wake-ups. Measured under TCG on one vCPU (tests/kernel_overhead.rs):
/// 1 ms gave a lag p50 of 1-1.5 ms and 0.25-0.32 of the IOPS without the agent; 10 ms a p50
/// of 9 ms and 0.46.
pub const BATCH: Duration = Duration::from_millis(10);

/// Time between the kernel reads that complete a seed (see [`MirrorArray::settle_seed`]).
pub const SEED_GUARD: Duration = Duration::from_nanos(crate::mirror::SEED_GUARD_NS);

/// A reconciliation compares the mirror with a disk read only when the array had no bitmap
/// call (kprobe stamp, CLOCK_MONOTONIC) within this before the read, nor during it. A bitmap
/// call's effects on the disk come after its stamp: md_bitmap_unplug() writes the pages a
/// start-write dirtied and waits for them; md_bitmap_daemon_work() issues its page writes
/// without waiting (`write_page(..., 0)`), so they land after it returns; md_bitmap_update_sb()
/// writes page 0 synchronously. A read within that window can show a page the mirror has
/// already written but the disk not yet, and the ring buffer may still hold a call made just
/// before the read (6.1 under TCG: a start-write and its unplug, or a daemon pass, applied
/// after the read showed 1-4 chunks of drift at single reconciliations).
pub const RECONCILE_GUARD_NS: u64 = 250_000_000;

/// How soon a disturbed reconciliation is tried again.
pub const RECONCILE_RETRY: Duration = Duration::from_millis(100);

/// Kernel reads per [`Agent::settle_seeds`] call.
pub const SETTLE_ROUNDS: u32 = 10;

impl Agent {
    /// Starts the agent on every array (or those named in `filter`).
    pub fn start(filter: &[String]) -> Result<Self> {
        let syms = KernelSymbols::load()?;
        let abi = BitmapAbi::resolve(&syms)?;
        let variant = variant_for(&abi);
        let mut feed = Feed::load()?;
        feed.attach_mirror(&abi)?;
        eprintln!(
            "md-bitmap: block tracepoints via {}{}",
            feed.attached.block_path,
            feed.attached
                .btf_fallback
                .as_deref()
                .map(|e| format!(" (BTF tracepoints: {e})"))
                .unwrap_or_default()
        );
        let (kstate, kstate_error) =
            match KernelStateReader::new(&syms).and_then(|r| feed.load_peek().map(|_| r)) {
                Ok(r) => (Some(r), None),
                Err(e) => (None, Some(format!("{e:#}"))),
            };
        if let Some(r) = &kstate {
            // The mirror needs only the daemon calls that ran a pass: the others leave md's
            // bitmap as it was (md_bitmap_daemon_work() returns at its time test), and on 6.1
            // raid1d makes one after every write.
            let mut layout = r.layout().for_ebpf(abi.first_arg_is_mddev);
            layout.daemon_passes_only = 1;
            feed.set_md_layout(layout)?;
        }
        let mut agent = Agent {
            feed,
            abi,
            variant,
            kstate,
            kstate_error,
            sysfs: Sysfs::default(),
            filter: filter.to_vec(),
            mirror: Mirror::default(),
            last_drops: 0,
            prev_drift: Default::default(),
            reconcile_pending: Default::default(),
            last_reconcile_try: Instant::now(),
            last_maintain: Instant::now(),
            last_rescan: Instant::now(),
            backlog: Default::default(),
            event_log: None,
        };
        agent.rescan()?;
        Ok(agent)
    }

    /// The resolved kernel ABI.
    pub fn abi(&self) -> &BitmapAbi {
        &self.abi
    }

    /// Why the kernel-counter reader is unavailable, if it is.
    pub fn kstate_error(&self) -> Option<&str> {
        self.kstate_error.as_deref()
    }

    fn wanted(&self, name: &str) -> bool {
        self.filter.is_empty()
            || self
                .filter
                .iter()
                .any(|f| f == name || f.trim_start_matches("/dev/") == name)
    }

    fn seed(&mut self, a: &mut MirrorArray) -> Result<()> {
        if a.info.bitmap.is_none() {
            a.bitmap = None;
            return Ok(());
        }
        // The counters first, then the disk: a bit the disk still shows for a counter already
        // 0 is then one md has yet to write (page PENDING), not one the mirror would keep.
        let kernel = match &self.kstate {
            Some(r) => {
                let mddev = r.find_mddev(&mut self.feed, a.info.dev)?;
                a.mddev = Some(mddev);
                let k = r.read(&mut self.feed, mddev)?;
                a.bitmap_addr = Some(r.bitmap_addr(&mut self.feed, mddev)?);
                Some(k)
            }
            None => None,
        };
        let disk = read_disk_bitmap(&a.info)?;
        a.seed(
            self.variant,
            disk.geometry,
            &disk.bits,
            kernel.as_ref().map(|k| k.events).unwrap_or(disk.events),
            disk.events_cleared,
            kernel.as_ref(),
        );
        a.last_reconcile_ns = Some(monotonic_ns());
        Ok(())
    }

    /// Finds arrays that appeared, stopped, or changed (members, bitmap added or removed).
    pub fn rescan(&mut self) -> Result<()> {
        let present = self.sysfs.arrays()?;
        let names: Vec<String> = self.mirror.arrays.keys().cloned().collect();
        for n in names {
            if !present.iter().any(|a| a.name == n)
                && let Some(a) = self.mirror.remove(&n)
            {
                let _ = self.feed.unwatch_dev(a.info.dev);
            }
        }
        for r in present {
            if !self.wanted(&r.name) {
                continue;
            }
            let Ok(info) = self.sysfs.array_info(&r) else {
                continue;
            };
            if info.level.is_empty() || info.array_state == "inactive" {
                // Stopped (or being assembled): the device node can outlive the array.
                if let Some(a) = self.mirror.remove(&r.name) {
                    tracing::info!("{}: array stopped; mirror dropped", r.name);
                    let _ = self.feed.unwatch_dev(a.info.dev);
                }
                continue;
            }
            let old = self.mirror.arrays.get(&r.name).map(|o| {
                (
                    o.info.bitmap.as_ref().map(|b| b.chunk_size_bytes),
                    o.mddev,
                    o.bitmap_addr,
                )
            });
            let reseed = match old {
                None => Some("new array"),
                Some((chunk, ..)) if chunk != info.bitmap.as_ref().map(|b| b.chunk_size_bytes) => {
                    Some("bitmap added, removed or resized")
                }
                // Stopped and reassembled, or bitmap removed and re-added, between two rescans:
                // the kernel's `struct mddev` or `struct bitmap` is a new one.
                Some((_, mddev, bitmap)) => self
                    .kernel_objects_moved(info.dev, mddev, bitmap)
                    .then_some("array or bitmap re-created in the kernel"),
            };
            if let Some(why) = reseed {
                tracing::info!("{}: seeding the mirror ({why})", r.name);
                self.feed.watch_dev(info.dev)?;
                let mut a = MirrorArray::new(info);
                if let Err(e) = self.seed(&mut a) {
                    eprintln!("md-bitmap: {}: cannot seed the mirror: {e:#}", a.info.name);
                }
                self.mirror.insert(a);
            } else if let Some(a) = self.mirror.arrays.get_mut(&r.name) {
                a.set_info(info);
            }
        }
        self.settle_seeds()
    }

    /// Reads `mddev->degraded` of every mirrored array from the kernel (see
    /// [`MirrorArray::degraded`]); an array whose read fails keeps its last value.
    fn read_kernel_degraded(&mut self) {
        let Some(r) = self.kstate.as_ref() else {
            return;
        };
        for a in self.mirror.arrays.values_mut() {
            if let Some(mddev) = a.mddev
                && a.bitmap.is_some()
                && let Ok(d) = r.read_degraded(&mut self.feed, mddev)
            {
                a.set_kernel_degraded(d > 0);
            }
        }
    }

    /// Applies every event stamped up to `ts_ns`; later ones wait in the backlog.
    fn apply_until(&mut self, ts_ns: u64) -> Result<()> {
        self.drain_to_backlog()?;
        let mut later = std::collections::VecDeque::new();
        while let Some(ev) = self.backlog.pop_front() {
            if ev.ts_ns <= ts_ns {
                self.apply(&ev);
            } else {
                later.push_back(ev);
            }
        }
        self.backlog = later;
        Ok(())
    }

    /// Completes the kernel seeds of arrays seeded since the last call
    /// ([`MirrorArray::settle_seed`]): re-reads their counters [`SEED_GUARD`] apart until
    /// every chunk was read at a quiet instant (at most [`SETTLE_ROUNDS`] reads per call; what
    /// is left waits for the next call).
    fn settle_seeds(&mut self) -> Result<()> {
        let names: Vec<String> = self
            .mirror
            .arrays
            .iter()
            .filter(|(_, a)| a.seed_unsettled())
            .map(|(n, _)| n.clone())
            .collect();
        for n in names {
            for round in 1..=SETTLE_ROUNDS {
                std::thread::sleep(SEED_GUARD);
                let (Some(r), Some(mddev)) = (
                    self.kstate.as_ref(),
                    self.mirror.arrays.get(&n).and_then(|a| a.mddev),
                ) else {
                    break;
                };
                let k = match r.read(&mut self.feed, mddev) {
                    Ok(k) => k,
                    Err(e) => {
                        tracing::debug!("{n}: settling the seed: {e:#}");
                        break;
                    }
                };
                self.apply_until(k.read_ts_ns)?;
                let Some(a) = self.mirror.arrays.get_mut(&n) else {
                    break;
                };
                a.settle(k.read_ts_ns);
                match a.settle_seed(&k) {
                    Some((fixed, left)) => {
                        tracing::info!(
                            "{n}: seed settle read {round}: {fixed} counters corrected, {left} chunks left"
                        );
                        if left == 0 {
                            break;
                        }
                    }
                    None => break,
                }
            }
        }
        Ok(())
    }

    /// Whether the kernel's `struct mddev` of `dev`, or its `struct bitmap`, is no longer the
    /// one the mirror was seeded with (false when unknown).
    fn kernel_objects_moved(
        &mut self,
        dev: DevNum,
        mddev: Option<u64>,
        bitmap: Option<u64>,
    ) -> bool {
        let (Some(r), Some(old)) = (self.kstate.as_ref(), mddev) else {
            return false;
        };
        match r.find_mddev(&mut self.feed, dev) {
            Ok(m) if m != old => true,
            Ok(m) => {
                bitmap.is_some_and(|b| r.bitmap_addr(&mut self.feed, m).is_ok_and(|now| now != b))
            }
            Err(_) => false,
        }
    }

    /// Copies every applied event to `w` as NDJSON (for debugging the mirror).
    pub fn log_events_to(&mut self, w: Box<dyn std::io::Write + Send>) {
        self.event_log = Some(w);
    }

    fn apply(&mut self, ev: &FeedEvent) {
        if let Some(w) = self.event_log.as_mut() {
            let _ = serde_json::to_writer(&mut *w, ev);
            let _ = w.write_all(b"\n");
        }
        self.mirror.apply_at(ev, monotonic_ns());
    }

    fn drain_to_backlog(&mut self) -> Result<usize> {
        let mut batch = Vec::new();
        self.feed.drain(|r| batch.push(*r))?;
        for r in &batch {
            if let Some(ev) = FeedEvent::decode(r, &self.abi) {
                self.backlog.push_back(ev);
            }
        }
        Ok(batch.len())
    }

    /// Sleeps until kernel events are waiting or `timeout` passes (instead of a fixed sleep, so
    /// events are applied soon after the kernel emits them), then [`BATCH`] more, so that a burst
    /// of events costs one wake-up rather than one per event.
    pub fn wait(&mut self, timeout: Duration) -> Result<()> {
        let t0 = Instant::now();
        self.feed.wait(timeout)?;
        let left = timeout.saturating_sub(t0.elapsed());
        std::thread::sleep(left.min(BATCH));
        Ok(())
    }

    /// Applies every event waiting in the ring buffer; returns how many. The lag of each event
    /// is taken when the whole batch is applied (one clock read per batch, not per event; under
    /// emulation the guest's clock may not be readable without a system call).
    pub fn poll(&mut self) -> Result<usize> {
        let now = monotonic_ns();
        let n = self.drain_to_backlog()?;
        if !self.backlog.is_empty() {
            self.read_kernel_degraded();
        }
        let mut applied: Vec<(Option<std::sync::Arc<str>>, u64)> =
            Vec::with_capacity(self.backlog.len());
        while let Some(ev) = self.backlog.pop_front() {
            if let Some(w) = self.event_log.as_mut() {
                let _ = serde_json::to_writer(&mut *w, &ev);
                let _ = w.write_all(b"\n");
            }
            applied.push((self.mirror.apply(&ev), ev.ts_ns));
        }
        let done = monotonic_ns();
        let mut last: Option<(&str, &mut MirrorArray)> = None;
        for (name, ts) in &applied {
            let Some(name) = name.as_deref() else {
                continue;
            };
            if last.as_ref().is_none_or(|(l, _)| *l != name) {
                last = self.mirror.arrays.get_mut(name).map(|a| (name, a));
            }
            if let Some((_, a)) = last.as_mut() {
                a.record_lag(*ts, done);
            }
        }
        // Every event stamped before `now` is applied: due raid4/5/6 repairs need not wait for
        // the array's next event.
        for a in self.mirror.arrays.values_mut() {
            a.settle(now);
        }
        Ok(n)
    }

    /// Compares every mirrored array with the kernel's own counters (read from kernel memory,
    /// see [`crate::feed::kstate`]) at one instant: events stamped up to the kernel read are
    /// applied first, later ones wait. Then compares the mirrored on-disk bits with the real
    /// on-disk bitmap.
    pub fn verify(&mut self) -> Result<Vec<VerifyRecord>> {
        self.settle_seeds()?;
        let names: Vec<String> = self.mirror.arrays.keys().cloned().collect();
        let mut out = Vec::new();
        for n in names {
            let Some(mddev) = self.mirror.arrays.get(&n).and_then(|a| a.mddev) else {
                continue;
            };
            if self.mirror.arrays[&n].bitmap.is_none() {
                continue;
            }
            let r = self
                .kstate
                .as_ref()
                .context("kernel counters are not readable on this kernel")?;
            let k = r.read(&mut self.feed, mddev)?;
            self.drain_to_backlog()?;
            let mut later = std::collections::VecDeque::new();
            while let Some(ev) = self.backlog.pop_front() {
                if ev.ts_ns <= k.read_ts_ns {
                    self.apply(&ev);
                } else {
                    later.push_back(ev);
                }
            }
            self.backlog = later;
            if let Some(a) = self.mirror.arrays.get_mut(&n) {
                a.settle(k.read_ts_ns);
            }
            let fc = self.feed.counters()?;
            let a = &self.mirror.arrays[&n];
            let bm = a.bitmap.as_ref().unwrap();
            let mine = bm.counters();
            let count = |raw: u16| raw & crate::engine::COUNTER_MAX;
            let torn = a.writes_between(
                k.read_ts_ns.saturating_sub(crate::mirror::SEED_GUARD_NS),
                k.read_ts_ns,
            );
            let is_torn = |c: u64| torn.iter().any(|(f, l)| *f <= c && c <= *l);
            let (mut cm, mut kin, mut min, mut im, mut ti) = (0, 0, 0, 0, 0);
            let mut examples = Vec::new();
            for (c, kv) in k.counters.iter().enumerate() {
                let mv = mine.get(c).copied().unwrap_or(0);
                if mv != *kv {
                    cm += 1;
                    if examples.len() < 8 {
                        examples.push((c as u64, mv, *kv));
                    }
                }
                let (ki, mi) = (count(*kv) > 2, count(mv) > 2);
                kin += ki as u64;
                min += mi as u64;
                if ki != mi {
                    if is_torn(c as u64) {
                        ti += 1;
                    } else {
                        im += 1;
                    }
                }
            }
            let quiescent = kin == 0
                && a.oldest_pending_write_ns().is_none()
                && a.oldest_pending_bio_ns().is_none()
                && k.read_ts_ns.saturating_sub(a.last_bitmap_event_ns) > QUIESCENT_NS;
            let (disk_dirty, disk_mismatches) = match read_disk_bitmap(&a.info) {
                Ok(d) => (
                    Some(d.bits.iter().map(|b| b.count_ones() as u64).sum()),
                    Some(a.drift_against(&d.bits)),
                ),
                Err(_) => (None, None),
            };
            let disk_read_ns = monotonic_ns();
            let mirror_disk_dirty = bm.summary().disk_dirty_chunks;
            let diffs = state_diffs(bm, &k);
            let (repaired_end_writes, late_daemon_passes) =
                (a.health.repaired_end_writes, a.health.late_daemon_passes);
            // The disk is read after the kernel: a bitmap call of this array in between (a
            // daemon pass, an unplug) may have written a page the mirror has not applied yet,
            // so such a check is not a quiescent point.
            self.drain_to_backlog()?;
            let disturbed = self.backlog.iter().any(|ev| {
                ev.ts_ns <= disk_read_ns
                    && !matches!(
                        ev.kind,
                        EventKind::BioQueue { .. }
                            | EventKind::BioComplete { .. }
                            | EventKind::BioRemap { .. }
                    )
                    && self.mirror.route(ev).as_deref() == Some(n.as_str())
            });
            out.push(VerifyRecord {
                kind: "verify".into(),
                ts_ns: k.read_ts_ns,
                array: n.clone(),
                chunks: k.counters.len() as u64,
                counter_mismatches: cm,
                kernel_in_flight_chunks: kin,
                mirror_in_flight_chunks: min,
                in_flight_mismatches: im,
                torn_in_flight: ti,
                drops: fc.dropped,
                missed: fc.missed,
                examples,
                mirror_disk_dirty,
                disk_dirty,
                disk_mismatches,
                quiescent: quiescent && !disturbed,
                state_diffs: diffs,
                repaired_end_writes,
                late_daemon_passes,
            });
        }
        Ok(out)
    }

    /// Compares each mirror with its on-disk bitmap; re-seeds an array whose drift persisted
    /// over two reconciliations, and every array after ring-buffer drops. An array whose disk
    /// read was disturbed by a bitmap call ([`RECONCILE_GUARD_NS`]) is not compared this time:
    /// [`maintain`](Self::maintain) tries it again every [`RECONCILE_RETRY`] until the next
    /// period.
    pub fn reconcile(&mut self) -> Result<()> {
        let drops = self.feed.counters()?.dropped;
        let dropped = drops > self.last_drops;
        self.last_drops = drops;
        self.reconcile_pending.clear();
        let names: Vec<String> = self.mirror.arrays.keys().cloned().collect();
        for n in names {
            if dropped {
                self.reseed_after_drops(&n);
            } else if !self.try_reconcile(&n)? {
                self.reconcile_pending.insert(n);
            }
        }
        self.last_reconcile_try = Instant::now();
        self.settle_seeds()
    }

    /// The kernel dropped feed records: the mirror of `n` lost events; its drift is measured
    /// and it is re-seeded.
    fn reseed_after_drops(&mut self, n: &str) {
        let Some(mut a) = self.mirror.remove(n) else {
            return;
        };
        if a.bitmap.is_some() {
            match read_disk_bitmap(&a.info) {
                Ok(disk) => {
                    let drift = a.drift_against(&disk.bits);
                    a.health.drift_chunks = drift;
                    a.last_reconcile_ns = Some(monotonic_ns());
                    self.prev_drift.insert(n.to_string(), drift);
                    tracing::info!("{n}: re-seeding the mirror (the kernel dropped feed records)");
                    if let Err(e) = self.seed(&mut a) {
                        tracing::warn!("{n}: re-seed failed: {e:#}");
                    }
                }
                Err(e) => eprintln!("md-bitmap: {n}: cannot read the on-disk bitmap: {e:#}"),
            }
        }
        self.mirror.insert(a);
    }

    /// Reconciles array `n` with its on-disk bitmap at a quiet instant: every event stamped
    /// before the read is applied first; a read within [`RECONCILE_GUARD_NS`] of the array's
    /// last bitmap call, or during one, is not compared (false: try again). Otherwise the
    /// drift is recorded (and, when it is not zero, what the mirror knew about each drifting
    /// chunk is logged: see [`MirrorArray::drift_report`]); drift at two reconciliations in
    /// a row re-seeds the mirror. An array whose `struct mddev` or `struct bitmap` is no longer
    /// the one its mirror was seeded with (stopped and reassembled since the last rescan) is
    /// not compared but rescanned, which re-seeds it. True when the array was reconciled (or
    /// has nothing to reconcile).
    fn try_reconcile(&mut self, n: &str) -> Result<bool> {
        if self.mirror.arrays.get(n).is_none_or(|a| a.bitmap.is_none()) {
            return Ok(true);
        }
        let t0 = monotonic_ns();
        self.drain_to_backlog()?;
        if !self.backlog.is_empty() {
            self.read_kernel_degraded();
        }
        self.apply_until(t0)?;
        let Some(a) = self.mirror.arrays.get_mut(n) else {
            return Ok(true);
        };
        a.settle(t0);
        let disk = match read_disk_bitmap(&a.info) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("md-bitmap: {n}: cannot read the on-disk bitmap: {e:#}");
                return Ok(true);
            }
        };
        let t1 = monotonic_ns();
        self.drain_to_backlog()?;
        // Stopped and reassembled (or its bitmap re-created) since the last rescan: the read is
        // of the new array's bitmap, whose bitmap calls the mirror of the old one never routed.
        // Checked after the read: a new array that wrote the bits read already existed.
        let Some((dev, mddev, bitmap)) = self
            .mirror
            .arrays
            .get(n)
            .map(|a| (a.info.dev, a.mddev, a.bitmap_addr))
        else {
            return Ok(true);
        };
        if self.kernel_objects_moved(dev, mddev, bitmap) {
            tracing::info!("{n}: re-created in the kernel since the last rescan; not compared");
            self.rescan()?;
            return Ok(true);
        }
        let during = self.backlog.iter().find(|ev| {
            ev.ts_ns <= t1
                && !matches!(
                    ev.kind,
                    EventKind::BioQueue { .. }
                        | EventKind::BioComplete { .. }
                        | EventKind::BioRemap { .. }
                )
                && self.mirror.route(ev).as_deref() == Some(n)
        });
        let Some(a) = self.mirror.arrays.get(n) else {
            return Ok(true);
        };
        let disturbed = crate::mirror::drift::read_disturbed(
            a.last_bitmap_call_ns(),
            t0,
            during,
            RECONCILE_GUARD_NS,
        );
        let drift = a.drift_against(&disk.bits);
        if let Some(why) = disturbed {
            if drift > 0 {
                tracing::debug!(
                    "{n}: not reconciled ({why}): {drift} chunks differ, not counted as drift"
                );
            }
            return Ok(false);
        }
        if drift > 0 {
            let report = a.drift_report(&disk.bits, &disk.member);
            tracing::info!("{}", report.first().map_or("", String::as_str));
            for l in report.iter().skip(1) {
                tracing::debug!("{l}");
            }
        }
        let persisted = drift > 0 && self.prev_drift.get(n).copied().unwrap_or(0) > 0;
        self.prev_drift.insert(n.to_string(), drift);
        let mut a = self.mirror.remove(n).expect("array present");
        a.health.drift_chunks = drift;
        a.last_reconcile_ns = Some(monotonic_ns());
        if persisted {
            tracing::info!("{n}: re-seeding the mirror (drift persisted)");
            if let Err(e) = self.seed(&mut a) {
                tracing::warn!("{n}: re-seed failed: {e:#}");
            }
        }
        self.mirror.insert(a);
        Ok(true)
    }

    /// Rescans sysfs at least every [`RESCAN_EVERY`] (array and member states, `degraded`,
    /// `sync_action`/`sync_completed`: sysfs reads only, no device I/O), and also reconciles with
    /// the on-disk bitmaps when `every` has passed since the last time.
    pub fn maintain(&mut self, every: Duration) -> Result<()> {
        if self.last_maintain.elapsed() >= every {
            self.last_maintain = Instant::now();
            self.last_rescan = Instant::now();
            self.rescan()?;
            self.reconcile()?;
        } else if !self.reconcile_pending.is_empty()
            && self.last_reconcile_try.elapsed() >= RECONCILE_RETRY
        {
            self.last_reconcile_try = Instant::now();
            let pending: Vec<String> = std::mem::take(&mut self.reconcile_pending)
                .into_iter()
                .collect();
            for n in pending {
                if !self.try_reconcile(&n)? {
                    self.reconcile_pending.insert(n);
                }
            }
        }
        if self.last_rescan.elapsed() >= RESCAN_EVERY {
            self.last_rescan = Instant::now();
            self.rescan()?;
        }
        Ok(())
    }

    /// Ring-buffer drops so far.
    pub fn drops(&self) -> u64 {
        self.feed.counters().map(|c| c.dropped).unwrap_or(0)
    }

    /// A snapshot of every array now.
    pub fn snapshot(&self) -> Snapshot {
        let now = monotonic_ns();
        let drops = self.drops();
        Snapshot {
            schema_version: SCHEMA_VERSION,
            kind: "snapshot".into(),
            time_unix_ms: unix_ms(),
            source: "live".into(),
            fallback_reason: None,
            arrays: self
                .mirror
                .arrays
                .values()
                .map(|a| a.snapshot(now, drops))
                .collect(),
        }
    }

    /// The kernel's own bitmap state of an array (the oracle), when readable.
    pub fn kernel_state(&mut self, name: &str) -> Result<crate::feed::kstate::KernelBitmap> {
        let r = self
            .kstate
            .as_ref()
            .context("kernel counters are not readable on this kernel")?;
        let a = self.mirror.arrays.get(name).context("no such array")?;
        let mddev = match a.mddev {
            Some(m) => m,
            None => r.find_mddev(&mut self.feed, a.info.dev)?,
        };
        r.read(&mut self.feed, mddev)
    }
}

/// A snapshot without BPF: sysfs and the on-disk bitmap only (nothing about writes in flight).
pub fn ondisk_snapshot(filter: &[String], reason: &str) -> Result<Snapshot> {
    let sysfs = Sysfs::default();
    let mut arrays = Vec::new();
    let now = monotonic_ns();
    for r in sysfs.arrays()? {
        if !filter.is_empty()
            && !filter
                .iter()
                .any(|f| f.trim_start_matches("/dev/") == r.name)
        {
            continue;
        }
        let info = sysfs.array_info(&r)?;
        let mut a = MirrorArray::new(info);
        if a.info.bitmap.is_some() {
            match read_disk_bitmap(&a.info) {
                Ok(d) => a.seed(
                    KernelVariant::default(),
                    d.geometry,
                    &d.bits,
                    d.events,
                    d.events_cleared,
                    None,
                ),
                Err(e) => eprintln!("md-bitmap: {}: {e:#}", a.info.name),
            }
        }
        a.last_reconcile_ns = Some(now);
        arrays.push(a.snapshot(now, 0));
    }
    Ok(Snapshot {
        schema_version: SCHEMA_VERSION,
        kind: "snapshot".into(),
        time_unix_ms: unix_ms(),
        source: "ondisk".into(),
        fallback_reason: Some(reason.to_string()),
        arrays,
    })
}
