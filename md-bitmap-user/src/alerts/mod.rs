//! Alerts: rules over the mirror's state that tell people when md writes are stuck, when the
//! bitmap is in trouble and when the mirror itself cannot be trusted.
//!
//! [`AlertEngine::evaluate`] is pure: it takes one [`ArrayInput`] per array (the array's
//! [`ArraySnapshot`] plus a few facts the agent gathers, see [`inputs`]) and the wall clock, and
//! returns the transitions: an alert *fires* once when its condition starts to hold and
//! *resolves* once when it stops. Each alert has a stable id (`array/Name[/member]`), a name in
//! the style of `mdadm --monitor` events, a severity, the array, the chunk range and member when
//! known, and the age of the condition.
//!
//! Delivery is in [`deliver`] (NDJSON records, `--alert-program`, tracing) and thresholds come
//! from flags and a TOML file ([`config`], documented in `docs/alerts.md`).
pub mod config;
pub mod deliver;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::mirror::snapshot::ArraySnapshot;
pub use config::Thresholds;

/// `enum bitmap_state` bit `BITMAP_STALE` in `bitmap->flags` (drivers/md/md-bitmap.h): the
/// bitmap does not describe the array; md resyncs everything.
pub const BITMAP_STALE: u64 = 1 << 1;
/// `BITMAP_WRITE_ERROR`: a bitmap page write failed (`md_bitmap_file_kick`,
/// `write_sb_page`/`write_file_page` errors); md keeps this in memory only (since Linux 5.x
/// `md_bitmap_update_sb` masks it out of `sb->state`).
pub const BITMAP_WRITE_ERROR: u64 = 1 << 2;

/// Alert names, in the style of `mdadm --monitor` events.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum AlertName {
    /// A bitmap start-write without its end-write for longer than the threshold (the chunk's
    /// counter cannot drop, the bit cannot clear, and the writer waits).
    StuckWrite,
    /// A write bio queued on the array and not completed for longer than the threshold.
    StuckBio,
    /// A chunk counter at `COUNTER_MAX`: writers sleep in `md_bitmap_startwrite` on
    /// `overflow_wait` until one of the chunk's writes ends.
    CounterMax,
    /// `BITMAP_WRITE_ERROR` in the kernel's `bitmap->flags`.
    BitmapWriteError,
    /// `BITMAP_STALE` in the kernel's `bitmap->flags`: a full resync follows.
    StaleBitmap,
    /// A member is faulty (sysfs `state` has `faulty`), as mdadm's `Fail`.
    MemberFailed,
    /// Bits accumulate while the array is degraded (md keeps them set until the member is back;
    /// informational: they are what a `--re-add` recovers).
    DegradedAccumulation,
    /// The kernel could not queue feed records (ring buffer full): the mirror re-seeds.
    FeedDrops,
    /// The mirror's on-disk bits differed from the real on-disk bitmap at reconciliation.
    FeedDrift,
}

impl AlertName {
    /// Every name.
    pub const ALL: [AlertName; 9] = [
        AlertName::StuckWrite,
        AlertName::StuckBio,
        AlertName::CounterMax,
        AlertName::BitmapWriteError,
        AlertName::StaleBitmap,
        AlertName::MemberFailed,
        AlertName::DegradedAccumulation,
        AlertName::FeedDrops,
        AlertName::FeedDrift,
    ];

    /// The name as text (`StuckWrite`).
    pub fn as_str(self) -> &'static str {
        match self {
            AlertName::StuckWrite => "StuckWrite",
            AlertName::StuckBio => "StuckBio",
            AlertName::CounterMax => "CounterMax",
            AlertName::BitmapWriteError => "BitmapWriteError",
            AlertName::StaleBitmap => "StaleBitmap",
            AlertName::MemberFailed => "MemberFailed",
            AlertName::DegradedAccumulation => "DegradedAccumulation",
            AlertName::FeedDrops => "FeedDrops",
            AlertName::FeedDrift => "FeedDrift",
        }
    }

    /// Parses a name (as in the config file's `disabled` list).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|n| n.as_str() == s)
    }

    /// The severity alerts of this name have.
    pub fn severity(self) -> Severity {
        match self {
            AlertName::StuckWrite
            | AlertName::StuckBio
            | AlertName::BitmapWriteError
            | AlertName::MemberFailed => Severity::Critical,
            AlertName::CounterMax
            | AlertName::StaleBitmap
            | AlertName::FeedDrops
            | AlertName::FeedDrift => Severity::Warning,
            AlertName::DegradedAccumulation => Severity::Info,
        }
    }
}

/// How bad an alert is.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing, not a fault.
    Info,
    /// Needs a look.
    Warning,
    /// Writes are stuck or data is at risk.
    Critical,
}

impl Severity {
    /// The severity as text.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One alert, as it is while active.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Alert {
    /// Stable id: `ARRAY/Name` or `ARRAY/Name/MEMBER`; the same condition keeps its id.
    pub id: String,
    /// The alert's name.
    pub name: AlertName,
    /// Its severity.
    pub severity: Severity,
    /// Array (`md0`).
    pub array: String,
    /// Chunks concerned, half-open `[start, end)`, when known.
    pub chunks: Option<[u64; 2]>,
    /// Member device concerned (`dm-0`), when known.
    pub member: Option<String>,
    /// How long the condition has held (for stuck writes: the oldest write's age), seconds.
    pub age_secs: Option<f64>,
    /// The measured value that crossed the threshold (seconds, chunks, drops...).
    pub value: f64,
    /// The threshold it crossed.
    pub threshold: f64,
    /// One line for people.
    pub message: String,
    /// Wall clock when it fired, Unix milliseconds.
    pub fired_unix_ms: u64,
}

/// A transition of an alert, as `watch --ndjson` streams it (`"type":"alert"`) and
/// `--alert-program` receives it on stdin.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct AlertEvent {
    /// Same as the snapshot's `schema_version`.
    pub schema_version: u32,
    /// Always `"alert"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `"fired"` or `"resolved"`.
    pub state: String,
    /// Wall clock of the transition, Unix milliseconds.
    pub time_unix_ms: u64,
    /// The alert (for `resolved`: as it was last seen active).
    pub alert: Alert,
}

impl AlertEvent {
    /// The event name for `--alert-program`: the alert's name, `...Resolved` when it resolves.
    pub fn program_event(&self) -> String {
        if self.state == "resolved" {
            format!("{}Resolved", self.alert.name.as_str())
        } else {
            self.alert.name.as_str().to_string()
        }
    }
}

/// A pending write or bio as the rules see it.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingIo {
    /// Chunks it covers, half-open, when known.
    pub chunks: Option<[u64; 2]>,
    /// Sectors `[start, end)` (bitmap sectors for writes, array sectors for bios).
    pub sectors: [u64; 2],
    /// Age in seconds.
    pub age_secs: f64,
}

/// What the rules read about one array.
#[derive(Clone, Debug)]
pub struct ArrayInput {
    /// The array's snapshot.
    pub snap: ArraySnapshot,
    /// The oldest pending bitmap write.
    pub oldest_write: Option<PendingIo>,
    /// The oldest write bio in flight on the array.
    pub oldest_bio: Option<PendingIo>,
    /// Members with writes in flight in the block layer (`/sys/block/M/inflight`), by name.
    pub member_writes_in_flight: Vec<(String, u64)>,
    /// Writes in flight on the md device itself as the block layer counts them
    /// (`/sys/block/mdX/inflight`, md's own bio accounting), when readable.
    pub array_writes_in_flight: Option<u64>,
    /// Members that are device-mapper devices: their `/dev/mapper` name and whether they are
    /// suspended (`/sys/block/dm-N/dm/name`, `dm/suspended`; sysfs, no I/O to the device).
    pub member_dm: Vec<DmMember>,
    /// Chunks whose counter is at `COUNTER_MAX`, half-open ranges.
    pub counter_max_ranges: Vec<[u64; 2]>,
    /// The kernel's `bitmap->flags`, when readable.
    pub kernel_bitmap_flags: Option<u64>,
}

impl ArrayInput {
    /// An input with nothing but the snapshot.
    pub fn from_snapshot(snap: ArraySnapshot) -> Self {
        Self {
            snap,
            oldest_write: None,
            oldest_bio: None,
            member_writes_in_flight: vec![],
            member_dm: vec![],
            array_writes_in_flight: None,
            counter_max_ranges: vec![],
            kernel_bitmap_flags: None,
        }
    }

    /// The member a stuck write most likely hangs on: the one member with writes in flight in
    /// the block layer, when exactly one has; else the one suspended device-mapper member (dm
    /// queues bios to a suspended device before the block layer counts them in flight:
    /// `dm_submit_bio()` defers them while `DMF_BLOCK_IO_FOR_SUSPEND` is set); else unknown.
    fn stuck_member(&self) -> Option<String> {
        let busy: Vec<&(String, u64)> = self
            .member_writes_in_flight
            .iter()
            .filter(|(_, n)| *n > 0)
            .collect();
        if busy.len() == 1 {
            return Some(busy[0].0.clone());
        }
        let suspended: Vec<&DmMember> = self.member_dm.iter().filter(|d| d.suspended).collect();
        (busy.is_empty() && suspended.len() == 1).then(|| suspended[0].name.clone())
    }

    /// " (member dm-1 = /dev/mapper/d1, suspended)" for the alert message.
    fn member_text(&self, m: Option<&str>) -> String {
        let Some(m) = m else { return String::new() };
        match self.member_dm.iter().find(|d| d.name == m) {
            Some(d) => format!(
                " (member {m}{}{})",
                d.mapper
                    .as_ref()
                    .map(|n| format!(" = /dev/mapper/{n}"))
                    .unwrap_or_default(),
                if d.suspended { ", suspended" } else { "" }
            ),
            None => format!(" (member {m})"),
        }
    }
}

/// A member that is a device-mapper device.
#[derive(Clone, Debug, PartialEq)]
pub struct DmMember {
    /// Kernel name (`dm-1`).
    pub name: String,
    /// `/dev/mapper` name, when readable.
    pub mapper: Option<String>,
    /// `/sys/block/dm-N/dm/suspended` is 1.
    pub suspended: bool,
}

/// The device-mapper facts of member `name` from sysfs (`None` if it is not a dm device).
pub fn dm_member(name: &str) -> Option<DmMember> {
    let dir = std::path::Path::new("/sys/block").join(name).join("dm");
    let suspended = std::fs::read_to_string(dir.join("suspended")).ok()?;
    Some(DmMember {
        name: name.to_string(),
        mapper: std::fs::read_to_string(dir.join("name"))
            .ok()
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty()),
        suspended: suspended.trim() == "1",
    })
}

/// A condition that holds now (before fire-once bookkeeping).
struct Condition {
    name: AlertName,
    member: Option<String>,
    chunks: Option<[u64; 2]>,
    age_secs: Option<f64>,
    value: f64,
    threshold: f64,
    message: String,
}

fn chunks_text(c: Option<[u64; 2]>) -> String {
    match c {
        Some([s, e]) if e == s + 1 => format!("chunk {s}"),
        Some([s, e]) => format!("chunks {s}-{}", e - 1),
        None => "chunks unknown".into(),
    }
}

/// Per-array memory of the feed counters, for rules about changes (drops).
#[derive(Default, Clone)]
struct FeedMemory {
    drops: u64,
    /// Wall clock (ms) of the last evaluation that saw the drop count rise.
    last_drop_ms: Option<u64>,
    /// Re-seeds seen at the evaluation before the last rise of the drop count (a re-seed that
    /// landed between that evaluation and the one that saw the drops counts as after them).
    reseeds_at_drop: u64,
    /// Re-seeds at the previous evaluation.
    reseeds: u64,
    /// `last_reconcile_age_secs` at the previous evaluation (a smaller one: a new reconciliation).
    reconcile_age: Option<f64>,
    /// Consecutive reconciliations that found drift at or above the threshold.
    drift_streak: u32,
}

/// The alert engine: thresholds plus the set of active alerts.
pub struct AlertEngine {
    /// Thresholds and disabled rules.
    pub thresholds: Thresholds,
    active: BTreeMap<String, Alert>,
    feed: BTreeMap<String, FeedMemory>,
    /// Wall clock (ms) each array was first seen degraded with its dirty count then.
    degraded_since: BTreeMap<String, (u64, u64)>,
}

impl AlertEngine {
    /// An engine with no active alerts.
    pub fn new(thresholds: Thresholds) -> Self {
        Self {
            thresholds,
            active: BTreeMap::new(),
            feed: BTreeMap::new(),
            degraded_since: BTreeMap::new(),
        }
    }

    /// Active alerts, by id.
    pub fn active(&self) -> impl Iterator<Item = &Alert> {
        self.active.values()
    }

    /// Active alerts of one array.
    pub fn active_for(&self, array: &str) -> Vec<Alert> {
        self.active
            .values()
            .filter(|a| a.array == array)
            .cloned()
            .collect()
    }

    fn conditions(&mut self, now_ms: u64, inp: &ArrayInput) -> Vec<Condition> {
        let t = &self.thresholds;
        let s = &inp.snap;
        let mut out = Vec::new();
        // After ring-buffer drops and before the re-seed, the mirror's pending writes and bios
        // may miss their ends: FeedDrops says so, the stuck rules wait for the re-seed.
        let untrusted = {
            let mem = self.feed.entry(s.name.clone()).or_default();
            if s.feed.drops > mem.drops {
                s.feed.reseeds <= mem.reseeds
            } else {
                mem.last_drop_ms.is_some() && s.feed.reseeds <= mem.reseeds_at_drop
            }
        };
        // StuckWrite: md_bitmap_startwrite without md_bitmap_endwrite (the counter stays up).
        if let Some(w) = &inp.oldest_write
            && w.age_secs > t.stuck_write_secs
            && !untrusted
        {
            let member = inp.stuck_member();
            out.push(Condition {
                name: AlertName::StuckWrite,
                member: member.clone(),
                chunks: w.chunks,
                age_secs: Some(w.age_secs),
                value: w.age_secs,
                threshold: t.stuck_write_secs,
                message: format!(
                    "{}: write pending on {} for {:.1}s{}",
                    s.name,
                    chunks_text(w.chunks),
                    w.age_secs,
                    inp.member_text(member.as_deref())
                ),
            });
        }
        // StuckBio: block_bio_queue on the md device without block_bio_complete, while the
        // block layer agrees that the array has writes in flight (a completion event the
        // kernel skipped must not read as a stuck bio).
        if let Some(b) = &inp.oldest_bio
            && b.age_secs > t.stuck_bio_secs
            && inp.array_writes_in_flight != Some(0)
            && !untrusted
        {
            let member = inp.stuck_member();
            out.push(Condition {
                name: AlertName::StuckBio,
                member: member.clone(),
                chunks: b.chunks,
                age_secs: Some(b.age_secs),
                value: b.age_secs,
                threshold: t.stuck_bio_secs,
                message: format!(
                    "{}: write bio at sectors {}-{} ({}) in flight for {:.1}s{}",
                    s.name,
                    b.sectors[0],
                    b.sectors[1].saturating_sub(1),
                    chunks_text(b.chunks),
                    b.age_secs,
                    inp.member_text(member.as_deref())
                ),
            });
        }
        // CounterMax: md_bitmap_startwrite finds COUNTER_MAX and sleeps on overflow_wait.
        if s.counts.blocked_writers > 0 || !inp.counter_max_ranges.is_empty() {
            let chunks = inp.counter_max_ranges.first().copied();
            out.push(Condition {
                name: AlertName::CounterMax,
                member: None,
                chunks,
                age_secs: None,
                value: s.counts.blocked_writers as f64,
                threshold: 0.0,
                message: format!(
                    "{}: {} at COUNTER_MAX, {} writer(s) blocked",
                    s.name,
                    chunks_text(chunks),
                    s.counts.blocked_writers
                ),
            });
        }
        if let Some(f) = inp.kernel_bitmap_flags {
            if f & BITMAP_WRITE_ERROR != 0 {
                out.push(Condition {
                    name: AlertName::BitmapWriteError,
                    member: None,
                    chunks: None,
                    age_secs: None,
                    value: 1.0,
                    threshold: 0.0,
                    message: format!("{}: the kernel failed to write the bitmap", s.name),
                });
            }
            if f & BITMAP_STALE != 0 {
                out.push(Condition {
                    name: AlertName::StaleBitmap,
                    member: None,
                    chunks: None,
                    age_secs: None,
                    value: 1.0,
                    threshold: 0.0,
                    message: format!("{}: the bitmap is stale; md resyncs everything", s.name),
                });
            }
        }
        for m in &s.members {
            if m.state.iter().any(|x| x == "faulty") {
                out.push(Condition {
                    name: AlertName::MemberFailed,
                    member: Some(m.name.clone()),
                    chunks: None,
                    age_secs: None,
                    value: 1.0,
                    threshold: 0.0,
                    message: format!("{}: member {} is faulty", s.name, m.name),
                });
            }
        }
        // DegradedAccumulation: while degraded, md keeps bits set (md_bitmap_endwrite with
        // !success or a degraded array sets NEEDED / never clears), so they grow.
        let dirty = s.counts.dirty_on_disk_chunks;
        if s.degraded > 0 {
            let (since, base) = *self
                .degraded_since
                .entry(s.name.clone())
                .or_insert((now_ms, dirty));
            let grown = dirty.saturating_sub(base);
            if s.bitmap.is_some() && dirty >= t.degraded_dirty_chunks.max(1) {
                out.push(Condition {
                    name: AlertName::DegradedAccumulation,
                    member: None,
                    chunks: s.dirty_ranges.first().map(|r| {
                        [r[0], s.dirty_ranges.last().map(|l| l[1]).unwrap_or(r[1])]
                    }),
                    age_secs: Some(now_ms.saturating_sub(since) as f64 / 1000.0),
                    value: dirty as f64,
                    threshold: t.degraded_dirty_chunks as f64,
                    message: format!(
                        "{}: degraded ({} missing), {} chunks dirty ({} more since degraded); a re-add recovers them",
                        s.name, s.degraded, dirty, grown
                    ),
                });
            }
        } else {
            self.degraded_since.remove(&s.name);
        }
        // FeedDrops: the drop count rose; holds until drops stop for `drops_clear_secs` and
        // the mirror re-seeded since.
        let mem = self.feed.entry(s.name.clone()).or_default();
        if s.feed.drops > mem.drops {
            mem.last_drop_ms = Some(now_ms);
            mem.reseeds_at_drop = mem.reseeds.min(s.feed.reseeds);
        }
        mem.drops = s.feed.drops;
        mem.reseeds = s.feed.reseeds;
        if let Some(at) = mem.last_drop_ms {
            let quiet = now_ms.saturating_sub(at) as f64 / 1000.0;
            let reseeded = s.feed.reseeds > mem.reseeds_at_drop;
            if quiet < t.drops_clear_secs || !reseeded {
                out.push(Condition {
                    name: AlertName::FeedDrops,
                    member: None,
                    chunks: None,
                    age_secs: Some(quiet),
                    value: s.feed.drops as f64,
                    threshold: 0.0,
                    message: format!(
                        "{}: the kernel dropped {} feed records (ring buffer full){}",
                        s.name,
                        s.feed.drops,
                        if reseeded {
                            "; the mirror re-seeded"
                        } else {
                            "; the mirror re-seeds at the next reconciliation"
                        }
                    ),
                });
            } else {
                mem.last_drop_ms = None;
            }
        }
        // FeedDrift: drift at `drift_reconciles` reconciliations in a row. Each compares a disk
        // read at a quiet instant (agent.rs `RECONCILE_GUARD_NS`); a disturbed read is retried
        // and does not count as a reconciliation here (`last_reconcile_age` does not reset).
        let age = s.feed.last_reconcile_age_secs;
        let new_reconcile = match (mem.reconcile_age, age) {
            (None, Some(_)) => true,
            (Some(prev), Some(now)) => now < prev,
            _ => false,
        };
        mem.reconcile_age = age;
        let drifted = s.feed.drift_chunks >= t.drift_chunks.max(1);
        if new_reconcile {
            mem.drift_streak = if drifted { mem.drift_streak + 1 } else { 0 };
        }
        if drifted && mem.drift_streak >= t.drift_reconciles.max(1) {
            out.push(Condition {
                name: AlertName::FeedDrift,
                member: None,
                chunks: None,
                age_secs: None,
                value: s.feed.drift_chunks as f64,
                threshold: t.drift_chunks as f64,
                message: format!(
                    "{}: the mirror's on-disk bits differed from the disk at {} reconciliations in a row ({} chunks at the last)",
                    s.name, mem.drift_streak, s.feed.drift_chunks
                ),
            });
        }
        out.retain(|c| !self.thresholds.disabled.contains(&c.name));
        out
    }

    /// Evaluates every rule over `arrays` at wall clock `now_ms`; returns the transitions
    /// (fired, then resolved), each exactly once. Arrays not in `arrays` (stopped) resolve.
    pub fn evaluate(&mut self, now_ms: u64, arrays: &[ArrayInput]) -> Vec<AlertEvent> {
        let mut holding: BTreeMap<String, Alert> = BTreeMap::new();
        for inp in arrays {
            for c in self.conditions(now_ms, inp) {
                let id = match &c.member {
                    Some(m) if c.name == AlertName::MemberFailed => {
                        format!("{}/{}/{}", inp.snap.name, c.name.as_str(), m)
                    }
                    _ => format!("{}/{}", inp.snap.name, c.name.as_str()),
                };
                let fired = self
                    .active
                    .get(&id)
                    .map(|a| a.fired_unix_ms)
                    .unwrap_or(now_ms);
                holding.insert(
                    id.clone(),
                    Alert {
                        id,
                        name: c.name,
                        severity: c.name.severity(),
                        array: inp.snap.name.clone(),
                        chunks: c.chunks,
                        member: c.member,
                        age_secs: c.age_secs,
                        value: c.value,
                        threshold: c.threshold,
                        message: c.message,
                        fired_unix_ms: fired,
                    },
                );
            }
        }
        let present: std::collections::BTreeSet<&str> =
            arrays.iter().map(|a| a.snap.name.as_str()).collect();
        self.feed.retain(|k, _| present.contains(k.as_str()));
        self.degraded_since
            .retain(|k, _| present.contains(k.as_str()));
        let event = |state: &str, a: &Alert| AlertEvent {
            schema_version: crate::mirror::snapshot::SCHEMA_VERSION,
            kind: "alert".into(),
            state: state.into(),
            time_unix_ms: now_ms,
            alert: a.clone(),
        };
        let mut out = Vec::new();
        for (id, a) in &holding {
            if !self.active.contains_key(id) {
                out.push(event("fired", a));
            }
        }
        for (id, a) in &self.active {
            if !holding.contains_key(id) {
                out.push(event("resolved", a));
            }
        }
        self.active = holding;
        out
    }
}

/// Gathers the rules' inputs from the live agent: the snapshot of each array plus its oldest
/// pending write and bio (chunk ranges from the bitmap geometry), the members' in-flight writes
/// (`/sys/block/M/inflight`), the chunks at COUNTER_MAX, and `kernel_flags` (the kernel's
/// `bitmap->flags` per array, read by the caller through [`crate::agent::Agent::kernel_state`]).
pub fn inputs(
    agent: &crate::agent::Agent,
    snap: &crate::mirror::snapshot::Snapshot,
    kernel_flags: &BTreeMap<String, u64>,
) -> Vec<ArrayInput> {
    let now = crate::agent::monotonic_ns();
    snap.arrays
        .iter()
        .map(|s| {
            let mut inp = ArrayInput::from_snapshot(s.clone());
            inp.kernel_bitmap_flags = kernel_flags.get(&s.name).copied();
            inp.array_writes_in_flight = member_writes_in_flight(&s.name);
            inp.member_writes_in_flight = s
                .members
                .iter()
                .filter_map(|m| member_writes_in_flight(&m.name).map(|n| (m.name.clone(), n)))
                .collect();
            inp.member_dm = s
                .members
                .iter()
                .filter_map(|m| dm_member(&m.name))
                .collect();
            if let Some(a) = agent.mirror.arrays.get(&s.name) {
                let chunk_sectors = a
                    .bitmap
                    .as_ref()
                    .map(|b| (b.geometry().chunk_size() / 512).max(1));
                let to_chunks = |start: u64, n: u64| {
                    chunk_sectors.map(|cs| [start / cs, (start + n.max(1) - 1) / cs + 1])
                };
                inp.oldest_write = a.pending_writes().first().map(|&(o, n, t)| PendingIo {
                    chunks: to_chunks(o, n),
                    sectors: [o, o + n],
                    age_secs: now.saturating_sub(t) as f64 / 1e9,
                });
                inp.oldest_bio = a.oldest_pending_bio().map(|(o, n, t)| PendingIo {
                    // raid1/raid10 account the bio's own range in the bitmap; other levels map
                    // array sectors through the stripe layout (see engine::mapping).
                    chunks: if matches!(s.level.as_str(), "raid1" | "raid10") {
                        to_chunks(o, n)
                    } else {
                        None
                    },
                    sectors: [o, o + n],
                    age_secs: now.saturating_sub(t) as f64 / 1e9,
                });
                if let Some(bm) = &a.bitmap {
                    inp.counter_max_ranges = crate::mirror::snapshot::ranges(&bm.counter_ranges(
                        |c: crate::engine::Counter| c.count() == crate::engine::COUNTER_MAX,
                    ));
                }
            }
            inp
        })
        .collect()
}

/// Writes in flight on a block device (a member, or the md device), from
/// `/sys/block/NAME/inflight` ("reads writes").
pub fn member_writes_in_flight(name: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/sys/block/{name}/inflight"))
        .or_else(|_| std::fs::read_to_string(format!("/sys/class/block/{name}/inflight")))
        .ok()?;
    s.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests;

/// The alerting of a running command: the engine, delivery, and the kernel flags it reads at
/// most every `flags_every`.
pub struct Alerting {
    /// The rules.
    pub engine: AlertEngine,
    /// Where transitions go besides the caller's output.
    pub delivery: deliver::Delivery,
    kernel_flags: BTreeMap<String, u64>,
    last_flags: Option<std::time::Instant>,
    flags_every: std::time::Duration,
}

impl Alerting {
    /// From resolved flags and config.
    pub fn new(args: &config::AlertArgs, flags_every: std::time::Duration) -> anyhow::Result<Self> {
        let (t, program) = args.resolve()?;
        Ok(Self {
            engine: AlertEngine::new(t),
            delivery: deliver::Delivery { program },
            kernel_flags: BTreeMap::new(),
            last_flags: None,
            flags_every,
        })
    }

    /// Evaluates the rules on `snap` (filling each array's `alerts`), delivers the transitions
    /// and returns them. `agent` is the live agent, absent in the on-disk fallback.
    pub fn step(
        &mut self,
        agent: Option<&mut crate::agent::Agent>,
        snap: &mut crate::mirror::snapshot::Snapshot,
    ) -> Vec<AlertEvent> {
        let inputs = match agent {
            Some(agent) => {
                if self
                    .last_flags
                    .is_none_or(|t| t.elapsed() >= self.flags_every)
                {
                    self.last_flags = Some(std::time::Instant::now());
                    self.kernel_flags.clear();
                    for a in &snap.arrays {
                        if a.bitmap.is_some()
                            && let Ok(k) = agent.kernel_state(&a.name)
                        {
                            self.kernel_flags.insert(a.name.clone(), k.flags);
                        }
                    }
                }
                inputs(agent, snap, &self.kernel_flags)
            }
            None => snap
                .arrays
                .iter()
                .map(|a| ArrayInput::from_snapshot(a.clone()))
                .collect(),
        };
        let events = self.engine.evaluate(crate::agent::unix_ms(), &inputs);
        for a in &mut snap.arrays {
            a.alerts = self.engine.active_for(&a.name);
        }
        for e in &events {
            self.delivery.deliver(e);
        }
        events
    }
}

/// The JSON Schema of [`AlertEvent`], as committed in `docs/schema/alert.schema.json`.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(AlertEvent)).expect("schema serialises")
}
