//! The live mirror: one engine [`Bitmap`] per md array, driven by decoded kernel events.
//!
//! No I/O here: the agent ([`crate::agent`]) reads sysfs, the on-disk bitmap and the kernel's
//! counters to seed and reconcile, and feeds [`FeedEvent`]s in; [`Mirror::snapshot`] is the
//! read side for every view and exporter.
pub mod drift;
pub mod snapshot;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

// The mirror's maps are keyed by sectors and kernel addresses, looked up for every event:
// foldhash (hashbrown's default hasher; randomly seeded per map) instead of SipHash.
use foldhash::HashMap;

use crate::engine::{Bitmap, BitmapConfig, BitmapGeometry, Counter, DaemonOutcome, KernelVariant};
use crate::feed::record::{DevNum, EventKind};
use crate::feed::symbols::{BitmapAbi, WriteArgs};
use crate::feed::{FeedEvent, kstate::KernelBitmap};
use crate::sysfs::ArrayInfo;
use snapshot::{ArraySnapshot, BitmapGeometrySnapshot, Counts, FeedHealth, MemberSnapshot, ranges};

/// Removes the oldest entry of `key`; whether there was one.
fn pop(m: &mut HashMap<(u64, u64), VecDeque<u64>>, key: (u64, u64)) -> bool {
    let Some(q) = m.get_mut(&key) else {
        return false;
    };
    q.pop_front();
    if q.is_empty() {
        m.remove(&key);
    }
    true
}

/// How long after a raid4/5/6 write bio completes its end-writes must have been seen (they
/// come microseconds before or after the completion, in the same thread).
pub const PARITY_REPAIR_GRACE_NS: u64 = 50_000_000;

/// How long after a bitmap call's kprobe fires its counter change may land. The probe stamps
/// the event at the function's entry; the counter changes after `counts.lock` is taken
/// (`md_bitmap_startwrite()`/`endwrite()`), the daemon's walk after
/// `mddev->bitmap_info.mutex` (`md_bitmap_daemon_work()`). A kernel read of the counters that
/// falls within this of a chunk's event may or may not include it.
pub const SEED_GUARD_NS: u64 = 100_000_000;

/// Completion of a seed from the kernel's counters (see [`MirrorArray::settle_seed`]).
#[derive(Default)]
struct SeedSettle {
    /// Chunks whose counter still needs a read at a quiet instant (`None`: every chunk).
    unsettled: Option<BTreeSet<u64>>,
    /// Counter-changing events applied since the seed, as (kernel ns, chunk range), `None`
    /// for array-wide ones (daemon passes, sync).
    touches: VecDeque<(u64, Option<(u64, u64)>)>,
}

/// raid1 and raid10 account a write to the bitmap with the array bio's own range.
fn identity_ranges(level: &str) -> bool {
    matches!(level, "raid1" | "raid10")
}

/// The engine variant for the running kernel's bitmap ABI.
pub fn variant_for(abi: &BitmapAbi) -> KernelVariant {
    match (abi.write_args, abi.first_arg_is_mddev) {
        (WriteArgs::Plain, _) => KernelVariant::V6_14,
        (WriteArgs::SuccessBehind, true) => KernelVariant::V6_12,
        (WriteArgs::SuccessBehind, false) => KernelVariant::V6_1,
    }
}

/// How a mirrored array was seeded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seed {
    /// From the kernel's own counters (exact) plus the on-disk bits.
    Kernel,
    /// From the on-disk bits only (writes in flight at start are unknown).
    OnDisk,
}

/// One mirrored array.
pub struct MirrorArray {
    /// What sysfs said at the last rescan.
    pub info: ArrayInfo,
    /// The engine model, when the array has a bitmap.
    pub bitmap: Option<Bitmap>,
    /// Kernel address of the array's `struct mddev`, when known.
    pub mddev: Option<u64>,
    /// Kernel address of its `struct bitmap`, when known.
    pub bitmap_addr: Option<u64>,
    /// How it was seeded.
    pub seed: Option<Seed>,
    /// Events stamped before this (CLOCK_MONOTONIC ns) are already in the seed.
    pub seed_ts_ns: u64,
    /// Start-writes without their end-write: (offset, sectors) -> start times (ns).
    pending_writes: HashMap<(u64, u64), VecDeque<u64>>,
    /// Write bios queued on the array and not completed: (sector, sectors) -> queue times.
    pending_bios: HashMap<(u64, u64), VecDeque<u64>>,
    /// End-writes applied at bio completion because their event was lost, by range, with the
    /// `success` each was applied with (see [`repair_success`](Self::repair_success)).
    repaired: HashMap<(u64, u64), VecDeque<bool>>,
    /// The `success` argument (kernels before the 6.14 rework) of the array's last end-write
    /// event made while `mddev->degraded` was set, for repairs of lost ones; `None` once the
    /// array is whole again, and from the start of a sync run (see
    /// [`repair_success`](Self::repair_success)).
    degraded_success: Option<bool>,
    /// Feed health.
    pub health: FeedHealth,
    /// Monotonic ns of the last reconciliation.
    pub last_reconcile_ns: Option<u64>,
    /// Kernel time (ns) of the last bitmap event applied.
    pub last_bitmap_event_ns: u64,
    /// Whether the daemon call in progress (entry seen, return not yet) ran in the engine.
    daemon_entry_ran: Option<bool>,
    /// raid4/5/6: the last write bio each thread queued on the array (tid -> bio address).
    last_queued_bio: HashMap<u32, u64>,
    /// raid4/5/6: the start-writes md made for each write bio in flight (bio -> ranges).
    bio_starts: HashMap<u64, Vec<(u64, u64)>>,
    /// raid4/5/6: write bios in flight linked to each start-write range.
    linked_bios: HashMap<(u64, u64), u32>,
    /// raid4/5/6: ranges of completed bios to check for a lost end-write, with the kernel time
    /// (ns) the check is due.
    due_repairs: VecDeque<(u64, Vec<(u64, u64)>)>,
    /// Lag from kernel event to its application here, microseconds.
    lag_us: hdrhistogram::Histogram<u64>,
    /// A kernel seed not yet confirmed at a quiet instant.
    seed_settle: Option<SeedSettle>,
    /// A sync run is under way: a sync call was seen (or the seed found one running) and no
    /// `md_bitmap_close_sync()` since.
    sync_run: bool,
    /// Sync runs taken as recoveries, whose start marked every bitmap page NEEDWRITE.
    pub recovery_write_alls: u64,
    /// A failed end-write (raid1/raid10 `R1BIO_Degraded`/`R10BIO_Degraded`: the write missed a
    /// member) was seen since sysfs last said the array was whole (see
    /// [`degraded`](Self::degraded)).
    failed_end_write: bool,
    /// `mddev->degraded != 0` as last read from the kernel (see [`degraded`](Self::degraded)).
    kernel_degraded: Option<bool>,
    /// The last bitmap events applied, for drift reports ([`drift`]).
    history: drift::History,
}

impl MirrorArray {
    /// A mirror of an array with no engine state yet.
    pub fn new(info: ArrayInfo) -> Self {
        Self {
            info,
            bitmap: None,
            mddev: None,
            bitmap_addr: None,
            seed: None,
            seed_ts_ns: 0,
            pending_writes: HashMap::default(),
            pending_bios: HashMap::default(),
            repaired: HashMap::default(),
            degraded_success: None,
            health: FeedHealth::default(),
            last_reconcile_ns: None,
            last_bitmap_event_ns: 0,
            daemon_entry_ran: None,
            last_queued_bio: HashMap::default(),
            bio_starts: HashMap::default(),
            linked_bios: HashMap::default(),
            due_repairs: VecDeque::new(),
            // 1 µs to 1 h at 2 significant digits: a few KiB, fixed.
            lag_us: hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 2)
                .expect("valid histogram bounds"),
            seed_settle: None,
            sync_run: false,
            recovery_write_alls: 0,
            failed_end_write: false,
            kernel_degraded: None,
            history: drift::History::default(),
        }
    }

    /// Records that an event stamped `event_ns` by the kernel (BPF `ktime`, CLOCK_MONOTONIC)
    /// was applied at `applied_ns` (CLOCK_MONOTONIC).
    pub fn record_lag(&mut self, event_ns: u64, applied_ns: u64) {
        if event_ns < self.seed_ts_ns {
            return;
        }
        let us = applied_ns.saturating_sub(event_ns) / 1000;
        self.lag_us.saturating_record(us.max(1));
    }

    /// Lag quantile `q` (0..=1) in microseconds, `None` before any event.
    pub fn lag_quantile_us(&self, q: f64) -> Option<u64> {
        (!self.lag_us.is_empty()).then(|| self.lag_us.value_at_quantile(q))
    }

    /// The oldest pending start-write's start time (ns).
    pub fn oldest_pending_write_ns(&self) -> Option<u64> {
        self.pending_writes
            .values()
            .filter_map(|q| q.front().copied())
            .min()
    }

    /// The oldest in-flight write bio's queue time (ns).
    pub fn oldest_pending_bio_ns(&self) -> Option<u64> {
        self.pending_bios
            .values()
            .filter_map(|q| q.front().copied())
            .min()
    }

    /// The oldest in-flight write bio as (sector, sectors, queued ns).
    pub fn oldest_pending_bio(&self) -> Option<(u64, u64, u64)> {
        self.pending_bios
            .iter()
            .filter_map(|(k, q)| q.front().map(|t| (k.0, k.1, *t)))
            .min_by_key(|x| x.2)
    }

    /// Pending start-writes as (offset, sectors, started ns), oldest first.
    pub fn pending_writes(&self) -> Vec<(u64, u64, u64)> {
        let mut v: Vec<(u64, u64, u64)> = self
            .pending_writes
            .iter()
            .flat_map(|((o, s), q)| q.iter().map(move |t| (*o, *s, *t)))
            .collect();
        v.sort_by_key(|x| x.2);
        v
    }

    /// Seeds the engine. `disk_bits` is the on-disk bit area (chunk i in byte i/8, bit i%8);
    /// `kernel`, when readable, gives the exact counters and daemon timing.
    pub fn seed(
        &mut self,
        variant: KernelVariant,
        geo: BitmapGeometry,
        disk_bits: &[u8],
        events: u64,
        events_cleared: u64,
        kernel: Option<&KernelBitmap>,
    ) {
        // Daemon timing in jiffies: the kernel's own values when known, else HZ=250 from sysfs.
        let (sleep, lastrun) = match kernel {
            Some(k) => (k.daemon_sleep_jiffies, k.daemon_lastrun_jiffies),
            None => (
                self.info
                    .bitmap
                    .as_ref()
                    .map(|b| (b.time_base_secs * 250.0) as u64)
                    .unwrap_or(1250),
                0,
            ),
        };
        let mut bm = Bitmap::new(geo, BitmapConfig::new(variant, sleep.max(1)), lastrun);
        bm.seed_from_disk(disk_bits, events, events_cleared);
        if let Some(k) = kernel {
            for (i, raw) in k.counters.iter().enumerate() {
                if bm.counters().get(i).copied() != Some(*raw) {
                    bm.set_counter(i as u64, *raw);
                }
            }
            // The on-disk bits were read at another instant than the counters: the in-memory
            // bits follow the counters (set when a counter leaves 0, cleared when it reaches 0).
            let mut cleared = false;
            for c in 0..geo.chunks() {
                let had = bm.cached_bit(c);
                if bm.align_cached_bit(c) && had {
                    cleared = true;
                }
            }
            bm.set_events(k.events);
            // A bit cleared here leaves its page PENDING, and md clears `allclean` whenever it
            // makes a page PENDING (`md_bitmap_file_clear_bit()`): kept set, it would make the
            // mirror's daemon skip the pass that writes the page, and keep the bit on the
            // mirror's disk after md's has lost it.
            bm.set_allclean(k.allclean && !cleared);
            self.seed_ts_ns = k.read_ts_ns;
            self.seed = Some(Seed::Kernel);
            self.seed_settle = Some(SeedSettle::default());
            self.kernel_degraded = Some(k.degraded > 0);
        } else {
            self.seed = Some(Seed::OnDisk);
            self.seed_settle = None;
        }
        if self.bitmap.is_some() {
            self.health.reseeds += 1;
        }
        self.pending_writes.clear();
        self.repaired.clear();
        self.bio_starts.clear();
        self.linked_bios.clear();
        self.due_repairs.clear();
        self.last_queued_bio.clear();
        self.sync_run = !matches!(self.info.sync_action.as_str(), "idle" | "");
        self.bitmap = Some(bm);
    }

    /// Whether `mddev->degraded` is non-zero as far as the mirror knows. The end-write rule
    /// reads it at each end-write (`md_bitmap_endwrite()`: `events_cleared`/`need_sync` advance
    /// only on a whole array; on 6.14+ and backports such as Debian's 6.12, a degraded array
    /// also sets NEEDED), and it flips when md fails a member (`raid1_error()`:
    /// `mddev->degraded++`, before that write's end-write) or a recovery completes. sysfs at the
    /// last rescan is up to one interval old, which made the mirror clear bits md kept (or
    /// keep bits md cleared) after a failure or a re-add; so the agent reads the kernel's
    /// value before it applies each batch of events ([`set_kernel_degraded`]
    /// (Self::set_kernel_degraded)). Without it: sysfs, or a failed end-write (raid1/raid10
    /// `R1BIO_Degraded`: the write missed a member) since the rescan.
    pub fn degraded(&self) -> bool {
        match self.kernel_degraded {
            Some(d) => d || self.failed_end_write,
            None => self.info.degraded > 0 || self.failed_end_write,
        }
    }

    /// `mddev->degraded != 0`, read from the kernel just now.
    pub fn set_kernel_degraded(&mut self, degraded: bool) {
        self.kernel_degraded = Some(degraded);
        self.failed_end_write = false;
        if !degraded {
            self.degraded_success = None;
        }
    }

    /// Takes the array's sysfs state from a rescan.
    pub fn set_info(&mut self, info: ArrayInfo) {
        self.info = info;
        self.failed_end_write = false;
    }

    fn apply(&mut self, ev: &FeedEvent) {
        if ev.ts_ns < self.seed_ts_ns {
            return;
        }
        self.history.push(ev);
        self.settle(ev.ts_ns);
        if let EventKind::EndWrite {
            success: Some(false),
            ..
        } = ev.kind
            && identity_ranges(&self.info.level)
        {
            self.failed_end_write = true;
        }
        let degraded = self.degraded();
        match &ev.kind {
            EventKind::BioQueue {
                sector,
                sectors,
                rwbs,
                bio,
                ..
            } if rwbs.contains('W') && *sectors > 0 => {
                self.pending_bios
                    .entry((*sector, *sectors))
                    .or_default()
                    .push_back(ev.ts_ns);
                if !identity_ranges(&self.info.level) && *bio != 0 {
                    self.last_queued_bio.insert(ev.tid, *bio);
                }
            }
            EventKind::BioComplete {
                sector,
                sectors,
                rwbs,
                bio,
                ..
            } => {
                let key = (*sector, *sectors);
                pop(&mut self.pending_bios, key);
                if rwbs.contains('W') {
                    self.repair_missed_end_write(key, degraded);
                    self.repair_missed_parity_end_writes(*bio, ev.ts_ns);
                }
            }
            _ => {}
        }
        if let (Some(st), Some(bm)) = (self.seed_settle.as_mut(), self.bitmap.as_ref()) {
            let shift = bm.geometry().chunkshift();
            let touch = match &ev.kind {
                EventKind::StartWrite {
                    offset, sectors, ..
                }
                | EventKind::EndWrite {
                    offset, sectors, ..
                } => Some(Some((
                    offset >> shift,
                    (offset + sectors.saturating_sub(1)) >> shift,
                ))),
                EventKind::DaemonWork { .. }
                | EventKind::DaemonDone { .. }
                | EventKind::StartSync { .. }
                | EventKind::EndSync { .. }
                | EventKind::CloseSync { .. }
                | EventKind::CondEndSync { .. } => Some(None),
                _ => None,
            };
            if let Some(t) = touch {
                st.touches.push_back((ev.ts_ns, t));
            }
        }
        let Some(bm) = self.bitmap.as_mut() else {
            return;
        };
        // Daemon calls are stamped below, only when the pass ran.
        if !matches!(
            ev.kind,
            EventKind::BioQueue { .. }
                | EventKind::BioComplete { .. }
                | EventKind::BioRemap { .. }
                | EventKind::DaemonWork { .. }
                | EventKind::DaemonDone { .. }
        ) {
            self.last_bitmap_event_ns = ev.ts_ns;
        }
        // A sync run starting on a degraded array is a recovery: md has just added the
        // member(s) to recover ("spares") and, before it starts the sync thread, marked every
        // bitmap page NEEDWRITE so the new member gets the whole bitmap (md_check_recovery() on
        // 6.1, md_start_sync() on 6.7+: `if (spares) md_bitmap_write_all()`), which the next
        // unplug or daemon pass writes out. No probe sees that call; the run's first sync call
        // (md_bitmap_cond_end_sync() or md_bitmap_start_sync() from the personality's
        // sync_request) does. End-sync calls do not start a run: md_bitmap_close_sync() makes
        // one per chunk after its own event.
        match &ev.kind {
            EventKind::StartSync { .. } | EventKind::CondEndSync { .. } => {
                if !self.sync_run {
                    if degraded {
                        bm.write_all();
                        self.recovery_write_alls += 1;
                    }
                    self.degraded_success = None;
                }
                self.sync_run = true;
            }
            EventKind::CloseSync { .. } => self.sync_run = false,
            _ => {}
        }
        match &ev.kind {
            EventKind::StartWrite {
                offset,
                sectors,
                behind,
                ..
            } => {
                bm.start_write(*offset, *sectors, behind.unwrap_or(false));
                self.pending_writes
                    .entry((*offset, *sectors))
                    .or_default()
                    .push_back(ev.ts_ns);
                // raid4/5/6 start a bio's bitmap writes in the submitting thread, right after
                // the block layer queued the bio: per stripe in add_stripe_bio() (≤6.13), once
                // per bio in md_account_bio() -> md_bitmap_start() (6.14+ and backports).
                if let Some(bio) = self.last_queued_bio.get(&ev.tid) {
                    self.bio_starts
                        .entry(*bio)
                        .or_default()
                        .push((*offset, *sectors));
                    *self.linked_bios.entry((*offset, *sectors)).or_default() += 1;
                }
                self.health.events += 1;
            }
            EventKind::EndWrite {
                offset,
                sectors,
                success,
                behind,
                degraded: at_call,
                ..
            } => {
                let key = (*offset, *sectors);
                let had_start = pop(&mut self.pending_writes, key);
                // raid1/raid10 complete the array bio right after its end-write; when no other
                // write of the range is pending, a queued bio of the range is done even if its
                // completion event is lost (raw tracepoints skip a program that interrupts
                // itself on the same CPU), so it must not age as "in flight" forever.
                if identity_ranges(&self.info.level) && !self.pending_writes.contains_key(&key) {
                    self.pending_bios.remove(&key);
                }
                let repaired_as = if had_start {
                    None
                } else {
                    self.repaired.get_mut(&key).and_then(VecDeque::pop_front)
                };
                if self.repaired.get(&key).is_some_and(VecDeque::is_empty) {
                    self.repaired.remove(&key);
                }
                if let Some(s) = success {
                    self.degraded_success = at_call.unwrap_or(degraded).then_some(*s);
                }
                if let Some(assumed) = repaired_as {
                    // The late real end-write of one that was repaired at bio completion. A
                    // repair that took a failed write (md set NEEDED) for a successful one is
                    // corrected: the chunks keep their bits until a resync.
                    if *success == Some(false) && assumed {
                        bm.mark_needed(*offset, *sectors);
                    }
                } else {
                    bm.end_write(
                        *offset,
                        *sectors,
                        success.unwrap_or(true),
                        behind.unwrap_or(false),
                        // The kernel's own `mddev->degraded` at the call when the probe read
                        // it; sysfs, polled, can lag behind a member's failure.
                        at_call.unwrap_or(degraded),
                    );
                }
                self.health.events += 1;
            }
            EventKind::DaemonWork { .. } => {
                let outcome = bm.daemon_work(ev.jiffies);
                if let DaemonOutcome::Ran(_) = outcome {
                    self.last_bitmap_event_ns = ev.ts_ns;
                }
                self.daemon_entry_ran = Some(!matches!(outcome, DaemonOutcome::NotDue));
                self.health.events += 1;
            }
            EventKind::DaemonDone {
                lastrun: Some(l), ..
            } => {
                // md_bitmap_daemon_work() (6.1) / bitmap_daemon_work() (6.12) read `jiffies`
                // after mutex_lock(&mddev->bitmap_info.mutex), for the time test and again for
                // `daemon_lastrun = jiffies`, later than the entry probe's `jiffies`. The kernel's
                // `daemon_lastrun` after the call says what happened: unchanged, no pass; changed
                // while the engine found the pass not due at entry, the kernel's test passed on a
                // later jiffy: run the pass now, at the kernel's time; changed after a pass the
                // engine also ran, only the stamp differs.
                if *l != bm.daemon_lastrun() {
                    match self.daemon_entry_ran {
                        Some(false) => {
                            if let DaemonOutcome::Ran(_) = bm.daemon_work(*l) {
                                self.last_bitmap_event_ns = ev.ts_ns;
                            }
                            self.health.late_daemon_passes += 1;
                        }
                        _ => bm.set_daemon_lastrun(*l),
                    }
                }
                self.daemon_entry_ran = None;
            }
            EventKind::Unplug { .. } => {
                bm.unplug();
                self.health.events += 1;
            }
            EventKind::UpdateSb { events, .. } => {
                // md_update_sb() advances (or, on a clean/dirty flip, rolls back) mddev->events
                // before it calls the bitmap's update_sb; end-writes compare events_cleared
                // with it and set need_sync (md_bitmap_endwrite() / bitmap_endwrite()).
                if let Some(e) = events {
                    bm.set_events(*e);
                }
                bm.update_sb();
                self.health.events += 1;
            }
            EventKind::StartSync {
                offset, degraded, ..
            } => {
                bm.start_sync(*offset, *degraded);
                self.health.events += 1;
            }
            EventKind::EndSync { offset, .. } => {
                bm.end_sync_op(*offset);
                self.health.events += 1;
            }
            EventKind::CloseSync { .. } => {
                bm.close_sync();
                self.health.events += 1;
            }
            EventKind::CondEndSync { sector, force, .. } => {
                bm.cond_end_sync(*sector, *force, ev.jiffies);
                self.health.events += 1;
            }
            _ => {}
        }
    }

    /// The `success` a lost end-write is repaired with (kernels before the 6.14 rework; later
    /// ones ignore it). md passes `!R1BIO_Degraded` (raid1), `!R10BIO_Degraded` (raid10),
    /// `!STRIPE_DEGRADED` (raid4/5/6): false when a member the write should have reached is
    /// missing or faulty, or the write failed on one (`raid1_write_request()`,
    /// `handle_write_finished()`), and 6.1's `md_bitmap_endwrite()` then sets NEEDED, so the
    /// chunk keeps its bit until a resync. On a whole array that is true. On a degraded one it
    /// is what md passed the array's last write made while degraded, since the array was whole
    /// or a sync run began; with none such, true during a sync run (a recovery: its member
    /// already takes the writes while `mddev->degraded` still counts it), false otherwise (a
    /// member missing or faulty; also the write whose failure made the array degraded, whose
    /// end-write md makes after `md_error()`). Taking true on a degraded array cleared bits md
    /// kept.
    fn repair_success(&self, degraded: bool) -> bool {
        !degraded || self.degraded_success.unwrap_or(self.sync_run)
    }

    /// md ends a write's bitmap accounting just before it completes the array bio. On raid1 and
    /// raid10 the bitmap range of a bio md did not split is the bio's own range, so when a write
    /// bio completes while more start-writes of its range are pending than bios of that range
    /// are still in flight, its end-write event was lost (the kernel drops a kprobe that fires
    /// while another kprobe handler runs on the CPU): apply it now and count the repair. Its
    /// real end-write, should it come late, is then ignored.
    fn repair_missed_end_write(&mut self, key: (u64, u64), degraded: bool) {
        if !identity_ranges(&self.info.level) {
            return;
        }
        let pending = self.pending_writes.get(&key).map_or(0, VecDeque::len);
        let in_flight = self.pending_bios.get(&key).map_or(0, VecDeque::len);
        if pending > in_flight {
            self.repair_end_write(key, degraded);
        }
    }

    /// Applies the lost end-write of a pending start-write of range `key` with
    /// [`repair_success`](Self::repair_success), and counts the repair.
    fn repair_end_write(&mut self, key: (u64, u64), degraded: bool) {
        let success = self.repair_success(degraded);
        let Some(bm) = self.bitmap.as_mut() else {
            return;
        };
        pop(&mut self.pending_writes, key);
        bm.end_write(key.0, key.1, success, false, degraded);
        self.repaired.entry(key).or_default().push_back(success);
        self.health.repaired_end_writes += 1;
        tracing::debug!(
            "{}: end-write {}+{} lost, applied at its bio's completion (success={success}, degraded={degraded})",
            self.info.name,
            key.0,
            key.1
        );
    }

    /// raid4/5/6: every start-write md made for an array bio is over shortly after the bio
    /// completes. 6.14+ and backports such as Debian's 6.12 end it just before:
    /// md_end_clone_io() calls md_bitmap_end() and then bio_endio(orig_bio). ≤6.13 end it just
    /// after, in the same thread: handle_stripe_clean_event() calls bio_endio() on a device's
    /// written bios and then md_bitmap_endwrite() for the stripe. So [`PARITY_REPAIR_GRACE_NS`]
    /// after a write bio completes, a range with more start-writes pending than other linked
    /// bios in flight lost an end-write event: [`settle`](Self::settle) applies it then and
    /// counts the repair (a late real one is then ignored, as for raid1).
    fn repair_missed_parity_end_writes(&mut self, bio: u64, completed_ns: u64) {
        if identity_ranges(&self.info.level) || bio == 0 {
            return;
        }
        self.last_queued_bio.retain(|_, b| *b != bio);
        let Some(keys) = self.bio_starts.remove(&bio) else {
            return;
        };
        for key in &keys {
            if let Some(n) = self.linked_bios.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    self.linked_bios.remove(key);
                }
            }
        }
        self.due_repairs
            .push_back((completed_ns + PARITY_REPAIR_GRACE_NS, keys));
    }

    /// Applies the raid4/5/6 end-write repairs that are due at kernel time `now_ns` (see
    /// [`repair_missed_parity_end_writes`](Self::repair_missed_parity_end_writes)).
    pub fn settle(&mut self, now_ns: u64) {
        let degraded = self.degraded();
        while self
            .due_repairs
            .front()
            .is_some_and(|(due, _)| *due <= now_ns)
        {
            let (_, keys) = self.due_repairs.pop_front().unwrap();
            for key in keys {
                let pending = self.pending_writes.get(&key).map_or(0, VecDeque::len);
                let linked = self.linked_bios.get(&key).copied().unwrap_or(0) as usize;
                if pending > linked {
                    self.repair_end_write(key, degraded);
                }
            }
        }
    }

    /// Whether a kernel seed still waits for [`settle_seed`](Self::settle_seed).
    pub fn seed_unsettled(&self) -> bool {
        self.seed_settle.is_some()
    }

    /// Completes a seed from the kernel's counters with a later read `k`, all of whose events
    /// up to `k.read_ts_ns` have been applied. The first read can be torn by writes in flight:
    /// a bitmap event is stamped when md enters the function, its counter changes a little
    /// later, so an event stamped just before a read may or may not be in it (it was dropped as
    /// older than the seed), and the daemon's walk runs after its entry event. So every chunk
    /// takes the counter of the first read at which neither it nor the array (a daemon pass, a
    /// sync call) had an event in the preceding [`SEED_GUARD_NS`]; its in-memory bit follows
    /// (see [`Bitmap::align_cached_bit`]). Returns (counters corrected, chunks still unsettled),
    /// `None` when nothing waits.
    pub fn settle_seed(&mut self, k: &KernelBitmap) -> Option<(u64, u64)> {
        let st = self.seed_settle.as_mut()?;
        let Some(bm) = self.bitmap.as_mut() else {
            self.seed_settle = None;
            return None;
        };
        if k.chunks != bm.geometry().chunks() {
            // Another bitmap than the one seeded; the rescan re-seeds.
            self.seed_settle = None;
            return None;
        }
        let from = k.read_ts_ns.saturating_sub(SEED_GUARD_NS);
        st.touches.retain(|(t, _)| *t >= from);
        let near: Vec<Option<(u64, u64)>> = st
            .touches
            .iter()
            .filter(|(t, _)| *t <= k.read_ts_ns)
            .map(|(_, r)| *r)
            .collect();
        let left_now = |u: &Option<BTreeSet<u64>>| u.as_ref().map_or(k.chunks, |s| s.len() as u64);
        if near.iter().any(Option::is_none) {
            return Some((0, left_now(&st.unsettled)));
        }
        let touched = |c: u64| near.iter().flatten().any(|(a, b)| *a <= c && c <= *b);
        let candidates: Vec<u64> = match &st.unsettled {
            None => (0..k.chunks).collect(),
            Some(s) => s.iter().copied().collect(),
        };
        let (mut left, mut fixed) = (BTreeSet::new(), 0);
        for c in candidates {
            if touched(c) {
                left.insert(c);
                continue;
            }
            let raw = k.counters[c as usize];
            if bm.counters().get(c as usize).copied() != Some(raw) {
                bm.set_counter(c, raw);
                fixed += 1;
            }
            bm.align_cached_bit(c);
        }
        if !k.allclean {
            bm.set_allclean(false);
        }
        let n = left.len() as u64;
        if left.is_empty() {
            self.seed_settle = None;
        } else {
            st.unsettled = Some(left);
        }
        Some((fixed, n))
    }

    /// Chunks whose mirrored on-disk bit differs from `disk_bits` (the real on-disk area).
    pub fn drift_against(&self, disk_bits: &[u8]) -> u64 {
        let Some(bm) = &self.bitmap else { return 0 };
        let mine = bm.disk_bitmap_bytes();
        let chunks = bm.geometry().chunks();
        (0..chunks)
            .filter(|c| {
                let (b, i) = ((c / 8) as usize, c % 8);
                let a = mine.get(b).is_some_and(|x| x >> i & 1 == 1);
                let d = disk_bits.get(b).is_some_and(|x| x >> i & 1 == 1);
                a != d
            })
            .count() as u64
    }

    /// The cost prediction from the mirrored state: on-disk dirty chunks, and NEEDED chunks
    /// when the mirror was seeded from the kernel's counters. `None` when the array has a
    /// bitmap the mirror could not seed (the prediction would wrongly say "no bitmap").
    pub fn prediction(&self) -> Option<crate::predict::Prediction> {
        if self.info.bitmap.is_some() && self.bitmap.is_none() {
            return None;
        }
        let mut inp = crate::predict::gather::inputs_from_info(&self.info);
        if let Some(bm) = &self.bitmap {
            inp.bitmap = Some(crate::predict::BitmapInput {
                chunk_bytes: bm.geometry().chunk_size(),
                sync_size_sectors: bm.geometry().sync_size(),
                dirty_on_disk: bm.disk_dirty_ranges(),
                needed: (self.seed == Some(Seed::Kernel))
                    .then(|| bm.counter_ranges(|c: Counter| c.needed() || c.resync())),
                events: bm.events(),
                events_cleared: bm.events_cleared(),
            });
            inp.notes.push(format!(
                "dirty chunks: the mirror's on-disk bits{}",
                if self.seed == Some(Seed::Kernel) {
                    "; re-add: the mirror's NEEDED counters"
                } else {
                    "; re-add: NEEDED taken as the on-disk bits (mirror not seeded from the kernel)"
                }
            ));
        }
        Some(crate::predict::predict(&inp))
    }

    /// The snapshot of this array at CLOCK_MONOTONIC `now_ns`.
    pub fn snapshot(&self, now_ns: u64, drops: u64) -> ArraySnapshot {
        let i = &self.info;
        let age = |t: Option<u64>| t.map(|t| now_ns.saturating_sub(t) as f64 / 1e9);
        let (counts, dirty, inflight, needed, bitmap) = match &self.bitmap {
            Some(bm) => {
                let s = bm.summary();
                let g = bm.geometry();
                (
                    Counts {
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
                    ranges(&bm.disk_dirty_ranges()),
                    ranges(&bm.counter_ranges(|c: Counter| c.count() > 2)),
                    ranges(&bm.counter_ranges(|c: Counter| c.needed())),
                    i.bitmap.as_ref().map(|b| BitmapGeometrySnapshot {
                        chunk_size_bytes: g.chunk_size(),
                        chunks: g.chunks(),
                        sync_size_sectors: g.sync_size(),
                        time_base_secs: b.time_base_secs,
                        location: b.location.clone(),
                        metadata: b.metadata.clone(),
                        backlog: b.backlog,
                    }),
                )
            }
            None => (Counts::default(), vec![], vec![], vec![], None),
        };
        let mut health = self.health.clone();
        health.drops = drops;
        health.last_reconcile_age_secs = age(self.last_reconcile_ns);
        health.lag_p50_us = self.lag_quantile_us(0.5);
        health.lag_p99_us = self.lag_quantile_us(0.99);
        health.anomalies = self
            .bitmap
            .as_ref()
            .map(|b| {
                let a = b.anomalies();
                a.end_write_underflow
                    + a.end_write_unallocated
                    + a.beyond_last_page
                    + a.beyond_chunks
                    + a.behind_underflow
            })
            .unwrap_or(0);
        ArraySnapshot {
            name: i.name.clone(),
            dev: i.dev.to_string(),
            level: i.level.clone(),
            layout: i.layout,
            raid_disks: i.raid_disks,
            chunk_size_bytes: i.chunk_size_bytes,
            metadata_version: i.metadata_version.clone(),
            array_state: i.array_state.clone(),
            degraded: i.degraded,
            sync_action: i.sync_action.clone(),
            members: i
                .members
                .iter()
                .map(|m| MemberSnapshot {
                    name: m.name.clone(),
                    slot: m.slot,
                    state: m.state.clone(),
                })
                .collect(),
            bitmap,
            counts,
            dirty_ranges: dirty,
            in_flight_ranges: inflight,
            needed_ranges: needed,
            oldest_pending_write_age_secs: age(self.oldest_pending_write_ns()),
            oldest_inflight_bio_age_secs: age(self.oldest_pending_bio_ns()),
            feed: health,
            prediction: self.prediction(),
            alerts: vec![],
        }
    }
}

/// Every mirrored array, and the routing of kernel events to them.
#[derive(Default)]
pub struct Mirror {
    /// Arrays by name.
    pub arrays: BTreeMap<String, MirrorArray>,
    by_addr: HashMap<u64, Arc<str>>,
    by_dev: HashMap<DevNum, Arc<str>>,
    /// Bitmap events that matched no array.
    pub unrouted: u64,
}

impl Mirror {
    /// Adds or replaces an array, indexing its kernel addresses.
    pub fn insert(&mut self, a: MirrorArray) {
        let name: Arc<str> = a.info.name.as_str().into();
        self.by_dev.insert(a.info.dev, name.clone());
        for addr in [a.mddev, a.bitmap_addr].into_iter().flatten() {
            self.by_addr.insert(addr, name.clone());
        }
        self.arrays.insert(a.info.name.clone(), a);
    }

    /// Removes an array (it stopped).
    pub fn remove(&mut self, name: &str) -> Option<MirrorArray> {
        self.by_addr.retain(|_, n| &**n != name);
        self.by_dev.retain(|_, n| &**n != name);
        self.arrays.remove(name)
    }

    /// [`apply`](Self::apply), and records the event's lag: it was applied at `applied_ns`
    /// (CLOCK_MONOTONIC).
    pub fn apply_at(&mut self, ev: &FeedEvent, applied_ns: u64) {
        if let Some(name) = self.apply(ev)
            && let Some(a) = self.arrays.get_mut(&*name)
        {
            a.record_lag(ev.ts_ns, applied_ns);
        }
    }

    /// Routes one event to its array and applies it; the array's name.
    pub fn apply(&mut self, ev: &FeedEvent) -> Option<Arc<str>> {
        let name = self.route(ev);
        match name.as_ref().and_then(|n| self.arrays.get_mut(&**n)) {
            Some(a) => a.apply(ev),
            None => self.unrouted += 1,
        }
        name
    }

    /// The array an event belongs to, if known.
    pub fn route(&self, ev: &FeedEvent) -> Option<Arc<str>> {
        match &ev.kind {
            EventKind::StartWrite { owner: addr, .. }
            | EventKind::EndWrite { owner: addr, .. }
            | EventKind::StartSync { owner: addr, .. }
            | EventKind::EndSync { owner: addr, .. }
            | EventKind::CloseSync { owner: addr }
            | EventKind::CondEndSync { owner: addr, .. }
            | EventKind::Unplug { owner: addr }
            | EventKind::UpdateSb { owner: addr, .. }
            | EventKind::DaemonWork { mddev: addr }
            | EventKind::DaemonDone { mddev: addr, .. } => {
                self.by_addr.get(addr).cloned().or_else(|| {
                    // Without kernel addresses, a single array takes every bitmap event.
                    (self.arrays.len() == 1 && self.by_addr.is_empty())
                        .then(|| self.arrays.keys().next().map(|n| n.as_str().into()))
                        .flatten()
                })
            }
            EventKind::BioQueue { dev, .. }
            | EventKind::BioComplete { dev, .. }
            | EventKind::BioRemap { dev, .. } => self.by_dev.get(dev).cloned(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::sysfs::BitmapInfo;

    pub(crate) fn info() -> ArrayInfo {
        ArrayInfo {
            name: "md0".into(),
            dev: DevNum { major: 9, minor: 0 },
            level: "raid1".into(),
            layout: 0,
            chunk_size_bytes: 0,
            raid_disks: 2,
            component_size_kib: 1 << 20,
            array_sectors: 2 << 20,
            metadata_version: "1.2".into(),
            array_state: "active".into(),
            degraded: 0,
            sync_action: "idle".into(),
            sync_completed: None,
            sync_speed_kibs: None,
            sync_speed_min_kibs: None,
            sync_speed_max_kibs: None,
            resync_start_sectors: None,
            safe_mode_delay_secs: None,
            uuid: None,
            bitmap: Some(BitmapInfo {
                location: "+8".into(),
                chunk_size_bytes: 65536,
                time_base_secs: 5.0,
                metadata: "internal".into(),
                backlog: 0,
                can_clear: Some(true),
                space_sectors: 0,
                max_backlog_used: 0,
            }),
            members: vec![],
        }
    }

    fn ev(ts_ns: u64, jiffies: u64, kind: EventKind) -> FeedEvent {
        FeedEvent {
            ts_ns,
            jiffies,
            cpu: 0,
            tid: 1,
            kind,
        }
    }

    fn kernel(read_ts_ns: u64, chunks: u64, set: &[(u64, u16)]) -> KernelBitmap {
        let mut counters = vec![0u16; chunks as usize];
        for (c, v) in set {
            counters[*c as usize] = *v;
        }
        KernelBitmap {
            events: 5,
            degraded: 0,
            events_cleared: 5,
            daemon_sleep_jiffies: 250,
            daemon_lastrun_jiffies: 0,
            read_ts_ns,
            need_sync: false,
            allclean: false,
            behind_writes: 0,
            flags: 0,
            chunkshift: 7,
            chunks,
            pages: 1,
            missing_pages: 0,
            page_info: vec![],
            counters,
        }
    }

    #[test]
    fn a_kernel_seed_settles_each_chunk_at_a_quiet_read() {
        let mut a = MirrorArray::new(info());
        a.bitmap_addr = Some(0xb17);
        a.mddev = Some(0x3dd);
        let geo = BitmapGeometry::new(65536, 2 << 20).unwrap();
        let chunks = geo.chunks();
        let g = SEED_GUARD_NS;
        let t1 = 10 * g;
        // Disk read after the counters: chunk 5's bit is still on disk though its counter is
        // already 0 (md cleared it in memory, the page write is pending); chunk 0 has a write
        // in flight whose bit the disk does not show yet.
        let k1 = kernel(t1, chunks, &[(0, 3)]);
        a.seed(KernelVariant::V6_12, geo, &[0b0010_0000], 5, 5, Some(&k1));
        {
            let bm = a.bitmap.as_ref().unwrap();
            assert!(
                bm.cached_bit(0) && !bm.cached_bit(5),
                "memory bits follow the counters"
            );
            assert!(
                bm.disk_bit(5) && !bm.disk_bit(0),
                "the disk copy is the disk's"
            );
        }
        assert!(a.seed_unsettled());
        let mut m = Mirror::default();
        m.insert(a);
        // A write on chunk 2 after the seed; the first read also missed a start on chunk 1 (its
        // event was stamped just before the read, its counter changed just after).
        m.apply(&ev(
            t1 + 10,
            1,
            EventKind::StartWrite {
                owner: 0xb17,
                offset: 2 * 128,
                sectors: 8,
                behind: Some(false),
            },
        ));
        let arr = m.arrays.get_mut("md0").unwrap();
        let k2 = kernel(t1 + g / 2, chunks, &[(0, 3), (1, 3), (2, 3)]);
        assert_eq!(arr.settle_seed(&k2), Some((1, 1)), "chunk 2 waits");
        assert_eq!(arr.bitmap.as_ref().unwrap().counter(1).count(), 3);
        assert!(arr.bitmap.as_ref().unwrap().cached_bit(1));
        // A daemon pass near the next read: nothing is settled at it.
        m.apply(&ev(t1 + 2 * g, 300, EventKind::DaemonWork { mddev: 0x3dd }));
        let arr = m.arrays.get_mut("md0").unwrap();
        let k3 = kernel(t1 + 2 * g + 10, chunks, &[(0, 3), (1, 3), (2, 3)]);
        assert_eq!(arr.settle_seed(&k3), Some((0, 1)));
        let k4 = kernel(t1 + 4 * g, chunks, &[(0, 3), (1, 3), (2, 3)]);
        assert_eq!(arr.settle_seed(&k4), Some((0, 0)));
        assert!(!arr.seed_unsettled());
        assert_eq!(arr.settle_seed(&k4), None);
    }

    #[test]
    fn a_recovery_start_marks_every_bitmap_page_for_writing() {
        let mut i = info();
        i.degraded = 1;
        let mut a = MirrorArray::new(i);
        a.bitmap_addr = Some(0xb17);
        let geo = BitmapGeometry::new(65536, 2 << 20).unwrap();
        a.seed(KernelVariant::V6_12, geo, &[], 1, 1, None);
        let mut m = Mirror::default();
        m.insert(a);
        let sync = |t, kind| ev(t, 1, kind);
        let cond = EventKind::CondEndSync {
            owner: 0xb17,
            sector: 0,
            force: false,
        };
        let needwrite = |m: &Mirror| {
            m.arrays["md0"]
                .bitmap
                .as_ref()
                .unwrap()
                .file_page_attrs(0)
                .needwrite
        };
        assert!(!needwrite(&m));
        m.apply(&sync(1, cond.clone()));
        assert!(needwrite(&m), "md_bitmap_write_all() before the recovery");
        assert_eq!(m.arrays["md0"].recovery_write_alls, 1);
        // Later sync calls of the same run do not count again; a new run does.
        m.apply(&sync(2, cond.clone()));
        m.apply(&sync(3, EventKind::CloseSync { owner: 0xb17 }));
        m.apply(&sync(4, cond));
        assert_eq!(m.arrays["md0"].recovery_write_alls, 2);
    }

    #[test]
    fn a_failed_end_write_means_degraded_before_the_rescan_says_so() {
        let mut a = MirrorArray::new(info());
        a.bitmap_addr = Some(0xb17);
        let geo = BitmapGeometry::new(65536, 2 << 20).unwrap();
        a.seed(KernelVariant::V6_12, geo, &[], 5, 5, None);
        let mut m = Mirror::default();
        m.insert(a);
        let w = |t, start: bool, success: bool| {
            let (offset, sectors, owner) = (t * 128, 8, 0xb17);
            ev(
                t,
                1,
                if start {
                    EventKind::StartWrite {
                        owner,
                        offset,
                        sectors,
                        behind: Some(false),
                    }
                } else {
                    EventKind::EndWrite {
                        owner,
                        offset,
                        sectors,
                        success: Some(success),
                        behind: Some(false),
                        degraded: None,
                    }
                },
            )
        };
        // md failed a member (mddev->events moves on with the superblock update).
        m.apply(&ev(
            1,
            1,
            EventKind::UpdateSb {
                owner: 0xb17,
                events: Some(6),
            },
        ));
        m.apply(&w(2, true, false));
        m.apply(&w(2, false, false));
        assert!(m.arrays["md0"].degraded());
        // A write that ends well afterwards must not advance events_cleared (md reads
        // mddev->degraded, already 1), though the rescan still says 0.
        m.apply(&w(3, true, true));
        m.apply(&w(3, false, true));
        let bm = m.arrays["md0"].bitmap.as_ref().unwrap();
        assert_eq!((bm.events_cleared(), bm.need_sync()), (5, false));
        // A rescan is authoritative again.
        let a = m.arrays.get_mut("md0").unwrap();
        a.set_info(info());
        assert!(!a.degraded());
    }

    #[test]
    fn snapshots_carry_the_prediction_from_the_mirrored_bits() {
        let mut i = info();
        i.members = (0..2)
            .map(|n| crate::sysfs::MemberInfo {
                name: format!("vd{}", ["a", "b"][n]),
                dev: None,
                slot: Some(n as u32),
                state: vec!["in_sync".into()],
                data_offset_sectors: 4096,
                size_kib: 1 << 20,
                errors: 0,
                recovery_start_sectors: None,
            })
            .collect();
        let unseeded = MirrorArray::new(i.clone());
        assert_eq!(
            unseeded.snapshot(1, 0).prediction,
            None,
            "no engine, no guess"
        );
        let mut a = MirrorArray::new(i);
        let geo = BitmapGeometry::new(65536, 2 << 20).unwrap();
        a.seed(KernelVariant::V6_1, geo, &[0b0000_0110], 1, 1, None);
        let p = a.snapshot(1, 0).prediction.unwrap();
        assert_eq!(p.crash_now.kind, crate::predict::CostKind::Bitmap);
        assert_eq!(p.crash_now.chunk_ranges, vec![[1, 3]]);
        assert_eq!(p.crash_now.total_read_bytes, 2 * 65536);
    }

    #[test]
    fn events_route_by_owner_and_drive_the_engine() {
        let mut a = MirrorArray::new(info());
        a.bitmap_addr = Some(0xb17);
        a.mddev = Some(0x3dd);
        let geo = BitmapGeometry::new(65536, 2 << 20).unwrap();
        a.seed(KernelVariant::V6_1, geo, &[], 1, 1, None);
        let mut m = Mirror::default();
        m.insert(a);
        let start = EventKind::StartWrite {
            owner: 0xb17,
            offset: 128,
            sectors: 8,
            behind: Some(false),
        };
        m.apply(&ev(10, 100, start));
        m.apply(&ev(11, 100, EventKind::Unplug { owner: 0xb17 }));
        let s = m.arrays["md0"].snapshot(20, 0);
        assert_eq!(s.counts.in_flight_chunks, 1);
        assert_eq!(s.dirty_ranges, vec![[1, 2]]);
        assert_eq!(s.oldest_pending_write_age_secs, Some(10e-9));
        let end = EventKind::EndWrite {
            owner: 0xb17,
            offset: 128,
            sectors: 8,
            success: Some(true),
            behind: Some(false),
            degraded: None,
        };
        m.apply(&ev(30, 101, end));
        // An event for an unknown owner is counted, not applied.
        m.apply(&ev(31, 101, EventKind::Unplug { owner: 0xdead }));
        assert_eq!(m.unrouted, 1);
        let s = m.arrays["md0"].snapshot(40, 0);
        assert_eq!(s.counts.in_flight_chunks, 0);
        assert_eq!(s.oldest_pending_write_age_secs, None);
        // Three daemon passes (time_base 5 s = 1250 jiffies at HZ=250) clear the bit on disk.
        for (i, j) in [1400u64, 2700, 4000].iter().enumerate() {
            m.apply(&ev(
                50 + i as u64,
                *j,
                EventKind::DaemonWork { mddev: 0x3dd },
            ));
        }
        assert!(m.arrays["md0"].snapshot(60, 0).dirty_ranges.is_empty());
    }

    /// On ≥6.14 kernels (and backports) a write that ends while the array is degraded leaves its
    /// chunk NEEDED. The probe's `mddev->degraded` at the call decides, not sysfs: the agent's
    /// last sysfs poll can predate the member's failure (seen on 6.12.117: degraded writes right
    /// after `mdadm --fail` were mirrored without NEEDED).
    #[test]
    fn degraded_at_the_end_write_call_wins_over_stale_sysfs() {
        for (at_call, needed) in [(Some(true), 1), (Some(false), 0), (None, 0)] {
            let mut a = MirrorArray::new(info());
            a.bitmap_addr = Some(0xb17);
            let geo = BitmapGeometry::new(65536, 2 << 20).unwrap();
            a.seed(KernelVariant::V6_14, geo, &[], 1, 1, None);
            assert_eq!(a.info.degraded, 0);
            let mut m = Mirror::default();
            m.insert(a);
            let start = EventKind::StartWrite {
                owner: 0xb17,
                offset: 128,
                sectors: 8,
                behind: None,
            };
            let end = EventKind::EndWrite {
                owner: 0xb17,
                offset: 128,
                sectors: 8,
                success: None,
                behind: None,
                degraded: at_call,
            };
            m.apply(&ev(10, 100, start));
            m.apply(&ev(20, 101, end));
            let s = m.arrays["md0"].snapshot(30, 0);
            assert_eq!(
                s.counts.needed_chunks, needed,
                "degraded at call {at_call:?}"
            );
        }
    }

    #[test]
    fn the_kernels_daemon_lastrun_decides_whether_a_pass_ran() {
        let mut a = MirrorArray::new(info());
        a.mddev = Some(0x3dd);
        a.bitmap_addr = Some(0xb17);
        let geo = BitmapGeometry::new(65536, 2 << 20).unwrap();
        a.seed(KernelVariant::V6_1, geo, &[], 1, 1, None);
        let mut m = Mirror::default();
        m.insert(a);
        let start = EventKind::StartWrite {
            owner: 0xb17,
            offset: 0,
            sectors: 8,
            behind: Some(false),
        };
        let end = EventKind::EndWrite {
            owner: 0xb17,
            offset: 0,
            sectors: 8,
            success: Some(true),
            behind: Some(false),
            degraded: None,
        };
        m.apply(&ev(1, 10, start));
        m.apply(&ev(2, 10, end));
        let daemon = |m: &mut Mirror, t: u64, entry: u64, lastrun: u64| {
            m.apply(&ev(t, entry, EventKind::DaemonWork { mddev: 0x3dd }));
            m.apply(&ev(
                t + 1,
                lastrun,
                EventKind::DaemonDone {
                    mddev: 0x3dd,
                    lastrun: Some(lastrun),
                },
            ));
        };
        let counter = |m: &Mirror| m.arrays["md0"].bitmap.as_ref().unwrap().counter(0).count();
        assert_eq!(counter(&m), 2);
        // Seeded with daemon_lastrun 0 and daemon_sleep 1250: entry at jiffy 1249 is not due,
        // but the kernel read jiffies 1250 after its mutex and ran the pass (lastrun changed).
        daemon(&mut m, 10, 1249, 1250);
        assert_eq!(counter(&m), 1);
        assert_eq!(m.arrays["md0"].health.late_daemon_passes, 1);
        // Due at entry (2500) and the kernel stamped 2501: one pass, the kernel's stamp.
        daemon(&mut m, 20, 2500, 2501);
        assert_eq!(counter(&m), 0);
        let bm = m.arrays["md0"].bitmap.as_ref().unwrap();
        assert_eq!((bm.daemon_lastrun(), bm.daemon_passes()), (2501, 2));
        // Not due and lastrun unchanged: nothing.
        daemon(&mut m, 30, 3750, 2501);
        assert_eq!(m.arrays["md0"].bitmap.as_ref().unwrap().daemon_passes(), 2);
        assert_eq!(m.arrays["md0"].health.late_daemon_passes, 1);
    }

    #[test]
    fn update_sb_carries_mddev_events_into_the_end_write_rule() {
        let mut a = MirrorArray::new(info());
        a.bitmap_addr = Some(0xb17);
        let geo = BitmapGeometry::new(65536, 2 << 20).unwrap();
        a.seed(KernelVariant::V6_1, geo, &[], 5, 5, None);
        let mut m = Mirror::default();
        m.insert(a);
        // md_update_sb() advanced mddev->events to 6 (array went active).
        m.apply(&ev(
            1,
            1,
            EventKind::UpdateSb {
                owner: 0xb17,
                events: Some(6),
            },
        ));
        m.apply(&ev(
            2,
            1,
            EventKind::StartWrite {
                owner: 0xb17,
                offset: 0,
                sectors: 8,
                behind: Some(false),
            },
        ));
        m.apply(&ev(
            3,
            1,
            EventKind::EndWrite {
                owner: 0xb17,
                offset: 0,
                sectors: 8,
                success: Some(true),
                behind: Some(false),
                degraded: None,
            },
        ));
        let bm = m.arrays["md0"].bitmap.as_ref().unwrap();
        assert_eq!(
            (bm.events(), bm.events_cleared(), bm.need_sync()),
            (6, 6, true)
        );
    }

    #[test]
    fn lag_quantiles_come_from_applied_events() {
        let mut a = MirrorArray::new(info());
        a.bitmap_addr = Some(0xb17);
        let geo = BitmapGeometry::new(65536, 2 << 20).unwrap();
        a.seed(KernelVariant::V6_1, geo, &[], 1, 1, None);
        let mut m = Mirror::default();
        m.insert(a);
        assert_eq!(m.arrays["md0"].snapshot(0, 0).feed.lag_p50_us, None);
        for i in 0..100u64 {
            // Applied i+1 ms after the kernel stamped it.
            m.apply_at(
                &ev(1_000_000, 1, EventKind::Unplug { owner: 0xb17 }),
                1_000_000 + (i + 1) * 1_000_000,
            );
        }
        // Unrouted events are not measured.
        m.apply_at(&ev(1, 1, EventKind::Unplug { owner: 0xdead }), 1 << 40);
        let f = m.arrays["md0"].snapshot(0, 0).feed;
        let (p50, p99) = (f.lag_p50_us.unwrap(), f.lag_p99_us.unwrap());
        assert!((49_000..=51_000).contains(&p50), "{p50}");
        assert!((98_000..=100_500).contains(&p99), "{p99}");
    }

    #[test]
    fn raid5_a_lost_stripe_end_write_is_repaired_when_the_array_bio_completes() {
        let mut i = info();
        i.level = "raid5".into();
        let mut a = MirrorArray::new(i);
        a.bitmap_addr = Some(0xb17);
        let geo = BitmapGeometry::new(65536, 2 << 20).unwrap();
        a.seed(KernelVariant::V6_1, geo, &[], 1, 1, None);
        let mut m = Mirror::default();
        m.insert(a);
        let dev = DevNum { major: 9, minor: 0 };
        let on = |tid: u32, t: u64, kind: EventKind| FeedEvent {
            ts_ns: t,
            jiffies: 1,
            cpu: 0,
            tid,
            kind,
        };
        let queue = |bio: u64| EventKind::BioQueue {
            dev,
            sector: 0,
            sectors: 16,
            rwbs: "WS".into(),
            bio,
        };
        let done = |bio: u64| EventKind::BioComplete {
            dev,
            sector: 0,
            sectors: 16,
            rwbs: "WS".into(),
            error: 0,
            bio,
        };
        let start = |off: u64| EventKind::StartWrite {
            owner: 0xb17,
            offset: off,
            sectors: 8,
            behind: Some(false),
        };
        let end = |off: u64| EventKind::EndWrite {
            owner: 0xb17,
            offset: off,
            sectors: 8,
            success: Some(true),
            behind: Some(false),
            degraded: None,
        };
        // Thread 7 queues bio A (two stripes: start-writes at 0 and 8); thread 9 queues bio B
        // on stripe 0 too.
        m.apply(&on(7, 1, queue(0xa)));
        m.apply(&on(7, 2, start(0)));
        m.apply(&on(7, 3, start(8)));
        m.apply(&on(9, 4, queue(0xb)));
        m.apply(&on(9, 5, start(0)));
        // A completes; stripe 8's end-write follows it (≤6.13 order), stripe 0's for A is lost.
        m.apply(&on(0, 6, done(0xa)));
        m.apply(&on(0, 7, end(8)));
        let s = m.arrays["md0"].snapshot(8, 0);
        assert_eq!(s.feed.repaired_end_writes, 0, "not before the grace period");
        assert_eq!(s.counts.in_flight_writes, 2);
        let g = PARITY_REPAIR_GRACE_NS;
        m.arrays.get_mut("md0").unwrap().settle(6 + g);
        let s = m.arrays["md0"].snapshot(7 + g, 0);
        assert_eq!(s.feed.repaired_end_writes, 1);
        assert_eq!(s.counts.in_flight_writes, 1, "B is still in flight");
        // B ends normally: nothing repaired, nothing in flight.
        m.apply(&on(0, 9 + g, end(0)));
        m.apply(&on(0, 10 + g, done(0xb)));
        m.arrays.get_mut("md0").unwrap().settle(11 + 2 * g);
        let s = m.arrays["md0"].snapshot(12 + 2 * g, 0);
        assert_eq!(
            (
                s.counts.in_flight_writes,
                s.feed.repaired_end_writes,
                s.feed.anomalies
            ),
            (0, 1, 0)
        );
    }

    #[test]
    fn a_lost_end_write_is_repaired_when_its_bio_completes() {
        let mut a = MirrorArray::new(info());
        a.bitmap_addr = Some(0xb17);
        let geo = BitmapGeometry::new(65536, 2 << 20).unwrap();
        a.seed(KernelVariant::V6_14, geo, &[], 1, 1, None);
        let mut m = Mirror::default();
        m.insert(a);
        let dev = DevNum { major: 9, minor: 0 };
        let bio = |t, done: bool| {
            let kind = if done {
                EventKind::BioComplete {
                    dev,
                    sector: 256,
                    sectors: 8,
                    rwbs: "W".into(),
                    error: 0,
                    bio: 0,
                }
            } else {
                EventKind::BioQueue {
                    dev,
                    sector: 256,
                    sectors: 8,
                    rwbs: "W".into(),
                    bio: 0,
                }
            };
            ev(t, 1, kind)
        };
        let start = EventKind::StartWrite {
            owner: 0xb17,
            offset: 256,
            sectors: 8,
            behind: None,
        };
        let end = EventKind::EndWrite {
            owner: 0xb17,
            offset: 256,
            sectors: 8,
            success: None,
            behind: None,
            degraded: None,
        };
        // Two writes of the same range in flight; the first one's end-write event is lost.
        m.apply(&bio(1, false));
        m.apply(&ev(2, 1, start.clone()));
        m.apply(&bio(3, false));
        m.apply(&ev(4, 1, start));
        m.apply(&bio(5, true));
        let s = m.arrays["md0"].snapshot(6, 0);
        assert_eq!(s.feed.repaired_end_writes, 1);
        assert_eq!(
            s.counts.in_flight_writes, 1,
            "the second write is still in flight"
        );
        // The second completes normally.
        m.apply(&ev(7, 1, end.clone()));
        m.apply(&bio(8, true));
        let s = m.arrays["md0"].snapshot(9, 0);
        assert_eq!(
            (s.counts.in_flight_writes, s.feed.repaired_end_writes),
            (0, 1)
        );
        // A late copy of the lost end-write is ignored rather than underflowing the counter.
        m.apply(&ev(10, 1, end));
        let s = m.arrays["md0"].snapshot(11, 0);
        assert_eq!(s.feed.anomalies, 0);
        assert_eq!(
            m.arrays["md0"].bitmap.as_ref().unwrap().counter(2).count(),
            2
        );
    }

    /// A mirror of md0, a raid1 on 6.1 with a clean bitmap (64 KiB chunks), md's
    /// `mddev->degraded` as given.
    fn mirror_6_1(degraded: bool) -> Mirror {
        let mut a = MirrorArray::new(info());
        a.bitmap_addr = Some(0xb17);
        let geo = BitmapGeometry::new(65536, 2 << 20).unwrap();
        a.seed(KernelVariant::V6_1, geo, &[], 5, 5, None);
        a.set_kernel_degraded(degraded);
        let mut m = Mirror::default();
        m.insert(a);
        m
    }

    /// A raid1 write on 6.1, as (bio queued, start-write, end-write, bio completed) events at
    /// `t`..`t + 3` on chunk `chunk` (64 KiB chunks).
    fn write_events(t: u64, chunk: u64, success: bool) -> [FeedEvent; 4] {
        let dev = DevNum { major: 9, minor: 0 };
        let (sector, sectors) = (chunk * 128, 8);
        [
            ev(
                t,
                1,
                EventKind::BioQueue {
                    dev,
                    sector,
                    sectors,
                    rwbs: "W".into(),
                    bio: 0,
                },
            ),
            ev(
                t + 1,
                1,
                EventKind::StartWrite {
                    owner: 0xb17,
                    offset: sector,
                    sectors,
                    behind: Some(false),
                },
            ),
            ev(
                t + 2,
                1,
                EventKind::EndWrite {
                    owner: 0xb17,
                    offset: sector,
                    sectors,
                    success: Some(success),
                    behind: Some(false),
                    degraded: Some(!success),
                },
            ),
            ev(
                t + 3,
                1,
                EventKind::BioComplete {
                    dev,
                    sector,
                    sectors,
                    rwbs: "W".into(),
                    error: 0,
                    bio: 0,
                },
            ),
        ]
    }

    #[test]
    fn a_lost_end_write_on_a_degraded_6_1_array_is_repaired_as_failed() {
        let mut m = mirror_6_1(true);
        // A write md ended with success = 0 (R1BIO_Degraded: a member is missing).
        for e in write_events(10, 1, false) {
            m.apply(&e);
        }
        // The next one's end-write event is lost.
        let [q, s, _, c] = write_events(20, 2, false);
        for e in [q, s, c] {
            m.apply(&e);
        }
        let a = &m.arrays["md0"];
        assert_eq!(a.health.repaired_end_writes, 1);
        let bm = a.bitmap.as_ref().unwrap();
        for chunk in [1, 2] {
            assert!(
                bm.counter(chunk).needed(),
                "chunk {chunk}: {:?}",
                bm.counter(chunk)
            );
        }
        // The daemon never clears a NEEDED chunk: both keep their bits, as on the kernel.
        let m0 = m.arrays.get_mut("md0").unwrap();
        let bm = m0.bitmap.as_mut().unwrap();
        bm.unplug();
        for j in 1..=4 {
            bm.daemon_work(j * 10_000);
        }
        assert!(bm.disk_bit(1) && bm.disk_bit(2));
    }

    #[test]
    fn a_lost_end_write_on_a_whole_array_is_repaired_as_successful() {
        let mut m = mirror_6_1(false);
        let [q, s, _, c] = write_events(20, 2, true);
        for e in [q, s, c] {
            m.apply(&e);
        }
        let bm = m.arrays["md0"].bitmap.as_ref().unwrap();
        assert_eq!(bm.counter(2).raw(), 2, "ended: the daemon clears it");
    }

    #[test]
    fn a_repair_taken_as_successful_is_corrected_by_its_late_failed_end_write() {
        let mut m = mirror_6_1(false);
        // The completion is seen before the end-write (the repair takes the write as
        // successful: the array was whole at the last look), then the end-write says failed.
        let [q, s, e, c] = write_events(20, 2, false);
        for x in [q, s, c] {
            m.apply(&x);
        }
        let m0 = m.arrays.get_mut("md0").unwrap();
        m0.bitmap.as_mut().unwrap().daemon_work(10_000);
        assert_eq!(m0.bitmap.as_ref().unwrap().counter(2).raw(), 1);
        m.apply(&e);
        let bm = m.arrays["md0"].bitmap.as_ref().unwrap();
        assert!(bm.counter(2).needed() && bm.counter(2).count() == 2);
        assert!(bm.cached_bit(2));
        assert_eq!(bm.anomalies().end_write_underflow, 0);
    }

    #[test]
    fn a_seed_clearing_a_bit_the_disk_still_shows_lets_the_next_pass_write_it() {
        let geo = BitmapGeometry::new(65536, 2 << 20).unwrap();
        let chunks = geo.chunks();
        // md cleared chunk 5 (counter 0) and, by the time of its counters' read, said allclean;
        // the disk read after still shows the bit.
        let mut k = kernel(100, chunks, &[]);
        k.allclean = true;
        let mut disk = vec![0u8; chunks.div_ceil(8) as usize];
        disk[0] = 1 << 5;
        let mut a = MirrorArray::new(info());
        a.seed(KernelVariant::V6_1, geo, &disk, 5, 5, Some(&k));
        let bm = a.bitmap.as_mut().unwrap();
        assert!(bm.disk_bit(5) && !bm.cached_bit(5));
        assert!(!bm.allclean());
        bm.daemon_work(1000);
        assert!(!bm.disk_bit(5), "the next daemon pass writes the page");
        // Nothing to clear: md's allclean is taken as read.
        let mut a = MirrorArray::new(info());
        a.seed(KernelVariant::V6_1, geo, &[], 5, 5, Some(&k));
        assert!(a.bitmap.as_ref().unwrap().allclean());
    }

    #[test]
    fn the_write_whose_failure_degrades_the_array_is_repaired_as_failed() {
        // The array was whole: md passed success for its writes.
        let mut m = mirror_6_1(false);
        for e in write_events(10, 1, true) {
            m.apply(&e);
        }
        // A write fails on a member: md_error() degrades the array, then md ends the write
        // with success = 0, and that end-write event is lost.
        m.arrays.get_mut("md0").unwrap().set_kernel_degraded(true);
        let [q, s, _, c] = write_events(20, 2, false);
        for e in [q, s, c] {
            m.apply(&e);
        }
        let a = &m.arrays["md0"];
        assert_eq!(a.health.repaired_end_writes, 1);
        assert!(a.bitmap.as_ref().unwrap().counter(2).needed());
    }

    #[test]
    fn a_lost_end_write_during_a_recovery_is_repaired_as_successful() {
        let mut m = mirror_6_1(true);
        for e in write_events(10, 1, false) {
            m.apply(&e);
        }
        // The re-added member's recovery starts (md_do_sync()'s first cond-end-sync): md's
        // writes reach it, so md passes success although mddev->degraded still counts it.
        let sync = EventKind::CondEndSync {
            owner: 0xb17,
            sector: 0,
            force: false,
        };
        m.apply(&ev(15, 1, sync));
        let [q, s, _, c] = write_events(20, 2, false);
        for e in [q, s, c] {
            m.apply(&e);
        }
        let bm = m.arrays["md0"].bitmap.as_ref().unwrap();
        assert!(
            bm.counter(1).needed(),
            "written while the member was missing"
        );
        assert_eq!(bm.counter(2).raw(), 2, "written during the recovery");
    }

    #[test]
    fn close_syncs_own_end_syncs_do_not_start_a_sync_run() {
        let mut m = mirror_6_1(true);
        let sync = |t, kind| ev(t, 1, kind);
        m.apply(&sync(
            1,
            EventKind::StartSync {
                owner: 0xb17,
                offset: 0,
                degraded: false,
            },
        ));
        assert!(m.arrays["md0"].sync_run);
        m.apply(&sync(2, EventKind::CloseSync { owner: 0xb17 }));
        m.apply(&sync(
            3,
            EventKind::EndSync {
                owner: 0xb17,
                offset: 0,
            },
        ));
        assert!(!m.arrays["md0"].sync_run);
        assert_eq!(m.arrays["md0"].recovery_write_alls, 1);
    }
}
