//! Resync and recovery cost prediction: what a crash now, a re-add of a missing member, or the
//! sync already running will cost, per member, in bytes read and written and in time.
//!
//! [`predict`] is pure: it takes [`Inputs`] (sysfs state, the on-disk bitmap, speed limits and
//! measured throughput, gathered by [`gather`]) and mirrors the kernel's rules:
//!
//! * which chunks a sync touches: `md_bitmap_load` / `md_bitmap_init_from_disk` (every bit set
//!   on disk becomes NEEDED when the array was not clean, `start = recovery_cp`), then
//!   `md_bitmap_start_sync` in `raid1_sync_request` / `raid5_sync_request` skips every chunk
//!   that is not NEEDED; a synced chunk covers `chunk` sectors clamped to `dev_sectors`;
//! * who reads and who writes: `raid1_sync_request` reads from the first in-sync,
//!   not-write-mostly mirror (`read_disk`) and, in a resync (`MD_RECOVERY_SYNC`), writes every
//!   other in-sync mirror (`sync_request_write`); in a recovery it writes only the members
//!   that are not In_sync. raid4/5/6 (`handle_stripe` with `s.syncing`) read every block of
//!   each stripe; a resync writes parity only where `handle_parity_checks5/6` finds a mismatch;
//!   a recovery writes the rebuilt member. A raid10 resync (`raid10_sync_request`, whose
//!   bitmap and progress are in the array's address space) reads every copy of each synced
//!   range and rewrites later copies only where they differ from the first; a raid10
//!   recovery (re-add) writes the member's copies of the NEEDED chunks from the first in-sync
//!   copy (md paces it differently by kernel: see [`Raid10Giveup`]); a degraded
//!   raid10's crash resync reads every present copy of each range that still has two and gives
//!   up the others, which md paces, and before 6.11 may end on, differently by kernel
//!   ([`Raid10Giveup`]);
//! * when md does it all: no bitmap (`recovery_cp = 0` after an unclean stop, so
//!   `md_do_sync` covers the whole component), a stale bitmap (`md_bitmap_read_sb`:
//!   bitmap events older than the array's → `BITMAP_STALE`, every bit set), a member whose
//!   events are older than the bitmap's `events_cleared` (`super_1_validate` refuses the
//!   bitmap-based re-add), a member added rather than re-added (`saved_raid_disk < 0` →
//!   `conf->fullsync`);
//! * how fast: `md_do_sync` throttles to `speed_max` (per array or
//!   `/proc/sys/dev/raid/speed_limit_max`) when the members are otherwise idle and lets other
//!   I/O go first down to `speed_min` when they are busy; its speed is
//!   `io_sectors / 2 / (whole seconds since the mark + 1)`, so a sync shorter than the
//!   30 s mark window ends about one second before `bytes / speed_max`.
pub mod gather;

use std::collections::BTreeMap;
use std::ops::Range;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Version of the prediction format.
pub const SCHEMA_VERSION: u32 = 1;

/// `SYNC_MARKS * SYNC_MARK_STEP` in md.c: the window over which md measures its sync speed.
const MARK_WINDOW_SECS: f64 = 30.0;
/// `msleep(500)` in md_do_sync when over `speed_max`: on average half of it is lost at the end.
const THROTTLE_SLEEP_SECS: f64 = 0.5;

/// A member as the prediction sees it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemberInput {
    /// Kernel name (`vdb`).
    pub name: String,
    /// Role in the array; `None` for spares and removed/failed members without a slot.
    pub slot: Option<u32>,
    /// In_sync.
    pub in_sync: bool,
    /// Faulty.
    pub faulty: bool,
    /// WriteMostly.
    pub write_mostly: bool,
    /// Measured sequential O_DIRECT read throughput, KiB/s.
    pub read_kibs: Option<f64>,
}

/// The bitmap as the prediction sees it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BitmapInput {
    /// Bitmap chunk size in bytes.
    pub chunk_bytes: u64,
    /// Sectors the bitmap covers (per member for raid1/4/5/6).
    pub sync_size_sectors: u64,
    /// Chunks whose bit is set on disk (what `md_bitmap_init_from_disk` would load).
    pub dirty_on_disk: Vec<Range<u64>>,
    /// Chunks NEEDED or RESYNC in the kernel's memory (those `__bitmap_start_sync()` syncs), when
    /// known (live mirror seeded from the kernel, or md's counters read through BPF).
    pub needed: Option<Vec<Range<u64>>>,
    /// Bitmap superblock `events`.
    pub events: u64,
    /// Bitmap superblock `events_cleared`.
    pub events_cleared: u64,
}

/// A device the admin means to add to the array (`md-bitmap predict --device`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CandidateInput {
    /// Kernel name or path as given.
    pub name: String,
    /// Its md superblock, when it carries one: (same array UUID as the array, events, role
    /// slot recorded in it).
    pub superblock: Option<(bool, u64, Option<u32>)>,
}

/// Everything [`predict`] needs about one array.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inputs {
    /// Kernel name.
    pub name: String,
    /// `level` (`raid1`, `raid5`, ...).
    pub level: String,
    /// `raid_disks`.
    pub raid_disks: u32,
    /// Per-member data size in sectors (`component_size` × 2, md's `dev_sectors`).
    pub dev_sectors: u64,
    /// `layout` (raid10's copies and layout; raid5/6's algorithm).
    pub layout: u32,
    /// `chunk_size` in bytes (the RAID chunk, not the bitmap's).
    pub chunk_size_bytes: u64,
    /// `array_state`.
    pub array_state: String,
    /// `safe_mode_delay` in seconds.
    pub safe_mode_delay_secs: Option<f64>,
    /// `resync_start` (`recovery_cp`): `None` when in sync.
    pub resync_start: Option<u64>,
    /// Members.
    pub members: Vec<MemberInput>,
    /// The bitmap, `None` when the array has none.
    pub bitmap: Option<BitmapInput>,
    /// The array superblock's events (from a member), when read.
    pub sb_events: Option<u64>,
    /// `sync_action`.
    pub sync_action: String,
    /// `sync_completed` (done, total) sectors.
    pub sync_completed: Option<(u64, u64)>,
    /// `sync_speed` KiB/s (md's own measure of the running sync).
    pub sync_speed_kibs: Option<u64>,
    /// `sync_speed_min` KiB/s.
    pub speed_min_kibs: u64,
    /// `sync_speed_max` KiB/s.
    pub speed_max_kibs: u64,
    /// Whether the array saw I/O in the sampling window (`None`: not sampled).
    pub busy: Option<bool>,
    /// The device to be added, if named.
    pub candidate: Option<CandidateInput>,
    /// How the inputs were obtained, added to the assumptions.
    pub notes: Vec<String>,
    /// The running kernel's `major.minor` (`/proc/sys/kernel/osrelease`), for behaviour that
    /// changed between kernels; `None` when unknown.
    pub kernel: Option<(u32, u32)>,
}

/// What a sync will do.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CostKind {
    /// Nothing to sync.
    None,
    /// Only the chunks the bitmap marks.
    Bitmap,
    /// The whole component (no usable bitmap).
    Full,
    /// md will refuse to start the array or the sync (see the reason).
    Refused,
    /// Not modelled for this level (see the reason).
    Unmodelled,
}

/// One member's I/O in a sync.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct MemberIo {
    /// Kernel name.
    pub name: String,
    /// Role.
    pub slot: Option<u32>,
    /// `read source`, `write target`, `read (parity check)`, `read and write`, `idle`.
    pub role: String,
    /// Bytes md will read from it.
    pub read_bytes: u64,
    /// Bytes md will write to it.
    pub write_bytes: u64,
    /// Upper bound of the writes when they depend on content (raid4/5/6 resync rewrites
    /// parity only where it mismatches: at most the stripes with writes in flight).
    pub write_bytes_max: u64,
}

/// A duration estimate.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct DurationEstimate {
    /// The estimate for the array as sampled (idle → `idle_secs`; busy → `busy_secs_max`).
    pub expected_secs: f64,
    /// With the members otherwise idle: md runs up to `speed_max`, or the members' speed.
    pub idle_secs: f64,
    /// With other I/O on the array: md yields to it down to `speed_min`; at most this long.
    pub busy_secs_max: f64,
    /// The sync rate assumed for `idle_secs`, KiB/s per member.
    pub rate_kibs: f64,
    /// What bounds `rate_kibs`: `speed_max`, `member throughput (vdb)` or `sync_speed`.
    pub limited_by: String,
}

/// The cost of one scenario.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Cost {
    /// `crash_now` or `re_add`.
    pub scenario: String,
    /// For re-adds: the member's slot.
    pub slot: Option<u32>,
    /// For re-adds: the member's name when md still lists it.
    pub member: Option<String>,
    /// Bitmap-based, full, none, refused or unmodelled.
    pub kind: CostKind,
    /// Why, in words (the kernel rule).
    pub reason: String,
    /// Bitmap chunks synced (0 for full syncs and arrays without a bitmap).
    pub chunks: u64,
    /// Those chunks as half-open `[start, end)` ranges.
    pub chunk_ranges: Vec<[u64; 2]>,
    /// Bytes of each member's data area the sync covers (md's `io_sectors` × 512); for a
    /// raid10 resync, bytes of the array's address space (md counts it in virtual sectors).
    pub sync_bytes_per_member: u64,
    /// Per-member I/O.
    pub members: Vec<MemberIo>,
    /// Sum of `read_bytes`.
    pub total_read_bytes: u64,
    /// Sum of `write_bytes`.
    pub total_write_bytes: u64,
    /// How long, when there is something to sync.
    pub duration: Option<DurationEstimate>,
}

/// The sync running now.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct RunningSync {
    /// `sync_action` (`resync`, `recover`, `check`, `repair`, `reshape`).
    pub action: String,
    /// `sync_completed`: sectors done.
    pub done_sectors: u64,
    /// `sync_completed`: sectors in all.
    pub total_sectors: u64,
    /// Bytes per member still to sync, from the bitmap (chunks at or after the position);
    /// equal to `remaining_bytes_naive` when the sync does not use the bitmap.
    pub remaining_bytes: u64,
    /// `(total - done) × 512`: what `sync_completed` alone suggests.
    pub remaining_bytes_naive: u64,
    /// Whether `remaining_bytes` comes from the bitmap.
    pub uses_bitmap: bool,
    /// md's measured `sync_speed`, KiB/s.
    pub sync_speed_kibs: Option<u64>,
    /// `remaining_bytes / sync_speed`.
    pub eta_secs: Option<f64>,
    /// `remaining_bytes_naive / sync_speed` (what /proc/mdstat's `finish=` shows).
    pub eta_naive_secs: Option<f64>,
}

/// The speeds the durations come from.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct SpeedInputs {
    /// `sync_speed_min`, KiB/s.
    pub speed_min_kibs: u64,
    /// `sync_speed_max`, KiB/s.
    pub speed_max_kibs: u64,
    /// md's `sync_speed` of the running sync, KiB/s.
    pub sync_speed_kibs: Option<u64>,
    /// Measured member read throughput, KiB/s, by member name.
    pub member_read_kibs: Vec<(String, f64)>,
    /// Whether the array had I/O in the sampling window (`None`: not sampled).
    pub busy: Option<bool>,
}

/// The prediction for one array.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Prediction {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Kernel name.
    pub array: String,
    /// Level.
    pub level: String,
    /// Bitmap chunk size in bytes, when there is a bitmap.
    pub bitmap_chunk_bytes: Option<u64>,
    /// Per-member data size (md's `dev_sectors` × 512).
    pub component_bytes: u64,
    /// If the machine crashed now and the array were assembled again.
    pub crash_now: Cost,
    /// If each missing or failed member were re-added now (one entry per missing slot).
    pub re_add: Vec<Cost>,
    /// The sync running now, if any.
    pub running: Option<RunningSync>,
    /// Speeds used.
    pub speed: SpeedInputs,
    /// Every assumption behind the figures.
    pub assumptions: Vec<String>,
}

/// [`MemberIo::name`] of a re-added member md no longer lists (removed) and no `--device` named.
pub const REMOVED_MEMBER: &str = "(removed member)";

/// Whether `level` is one of md's parity levels.
fn parity_level(level: &str) -> bool {
    matches!(level, "raid4" | "raid5" | "raid6")
}

/// The chunk ranges' per-member byte count: each chunk covers `chunk` sectors clamped to
/// `dev_sectors` (the last chunk may be partial).
fn chunk_bytes_covered(ranges: &[Range<u64>], chunk_bytes: u64, dev_sectors: u64) -> u64 {
    let dev_bytes = dev_sectors * 512;
    ranges
        .iter()
        .map(|r| {
            let s = (r.start * chunk_bytes).min(dev_bytes);
            let e = (r.end * chunk_bytes).min(dev_bytes);
            e - s
        })
        .sum()
}

fn count(ranges: &[Range<u64>]) -> u64 {
    ranges.iter().map(|r| r.end - r.start).sum()
}

fn to_pairs(ranges: &[Range<u64>]) -> Vec<[u64; 2]> {
    ranges.iter().map(|r| [r.start, r.end]).collect()
}

/// How md paces a raid10 recovery, by [`Raid10Giveup`]: why its duration is what it is, or
/// why it has none.
fn raid10_recovery_pace(giveup: Option<Raid10Giveup>) -> &'static str {
    match giveup {
        Some(Raid10Giveup::Accumulate) => {
            "Before 6.11 raid10_sync_request returns the member sectors it skips before each recovered range with that range, so md counts them toward sync_speed_max: its duration is that of the member's span up to the end of the last recovered range"
        }
        Some(Raid10Giveup::SkipEach) => {
            "Its duration is not predicted: from 6.11 (bc49694a9e8f) each range raid10_sync_request skips goes through md's end-of-sync path (close_sync waits for the requests in flight), which md's pace does not account for (measured on 6.12: 0.7 MiB recovered at 2048 KiB/s took 1.3-1.5 s)"
        }
        None => {
            "Its duration is not predicted: md paces a raid10 recovery differently by kernel (before 6.11 the sectors it skips count toward sync_speed_max, from 6.11 not) and the kernel release is unknown"
        }
    }
}

/// A raid10 recovery of the member in `slot` (`raid10_sync_request`'s recovery branch): md walks
/// the member's sectors, maps each back to the array (`raid10_find_virt`) and recovers it when
/// its bitmap chunk is NEEDED (every chunk for a full recovery), reading the first In_sync copy
/// in `raid10_find_phys` order and writing the member's. Returns the bytes recovered, the I/O
/// per member and the member's span up to the end of the last range recovered (bytes).
fn raid10_recovery_io(
    inp: &Inputs,
    ranges: &[Range<u64>],
    kind: CostKind,
    target: &str,
    slot: u32,
) -> (u64, Vec<MemberIo>, u64) {
    let (Some(b), Some(map)) = (inp.bitmap.as_ref(), raid10_geometry(inp)) else {
        return (0, vec![], 0);
    };
    let Some(conf) = map.raid10() else {
        return (0, vec![], 0);
    };
    let (ch, sync) = (conf.chunk_sectors(), map.sync_size());
    let shift = (b.chunk_bytes / 512).max(1).trailing_zeros();
    // A full recovery: every chunk.
    let all = 0..sync.div_ceil(1 << shift);
    let ranges = if kind == CostKind::Full {
        std::slice::from_ref(&all)
    } else {
        ranges
    };
    let in_sync = |dev: u32| {
        inp.members
            .iter()
            .any(|m| m.slot == Some(dev) && m.in_sync && !m.faulty)
    };
    let mut reads: BTreeMap<u32, u64> = Default::default();
    let (mut written, mut span) = (0u64, 0u64);
    for chunk in ranges.iter().flat_map(|r| r.clone()) {
        let (mut p, e) = (chunk << shift, ((chunk + 1) << shift).min(sync));
        while p < e {
            let q = ((p / ch + 1) * ch).min(e);
            let copies: Vec<_> = conf.copies(p).collect();
            if let Some(own) = copies.iter().find(|c| c.dev == slot)
                && let Some(src) = copies.iter().find(|c| c.dev != slot && in_sync(c.dev))
            {
                *reads.entry(src.dev).or_default() += (q - p) * 512;
                written += (q - p) * 512;
                span = span.max((own.sector + (q - p)) * 512);
            }
            p = q;
        }
    }
    let mut io: Vec<MemberIo> = present_by_slot(inp)
        .into_iter()
        .filter(|m| m.slot != Some(slot))
        .map(|m| {
            let r = reads.get(&m.slot.unwrap_or(u32::MAX)).copied().unwrap_or(0);
            MemberIo {
                name: m.name.clone(),
                slot: m.slot,
                role: if r > 0 { "read source" } else { "idle" }.into(),
                read_bytes: r,
                write_bytes: 0,
                write_bytes_max: 0,
            }
        })
        .collect();
    io.push(recovery_target_io(target, Some(slot), written));
    (written, io, span)
}

/// md's `read_disk` choice in `raid1_sync_request`: the first in-sync, non-faulty, not
/// write-mostly mirror by slot, else the first write-mostly one.
fn raid1_read_disk(members: &[&MemberInput]) -> Option<usize> {
    let usable = |m: &&MemberInput| m.in_sync && !m.faulty && m.slot.is_some();
    let mut idx: Vec<usize> = (0..members.len())
        .filter(|&i| usable(&members[i]))
        .collect();
    idx.sort_by_key(|&i| members[i].slot);
    idx.iter()
        .copied()
        .find(|&i| !members[i].write_mostly)
        .or_else(|| idx.first().copied())
}

/// Per-member I/O of a sync over `bytes` per member. `targets` are the members written in a
/// recovery (empty for a resync).
fn member_io(
    inp: &Inputs,
    bytes: u64,
    recovery_target: Option<&str>,
    recovery_slot: Option<u32>,
) -> Vec<MemberIo> {
    let active: Vec<&MemberInput> = inp
        .members
        .iter()
        .filter(|m| !m.faulty && m.slot.is_some())
        .collect();
    let mut out = Vec::new();
    if inp.level == "raid1" {
        let rd = raid1_read_disk(&active);
        for (i, m) in active.iter().enumerate() {
            let (role, r, w) = if Some(i) == rd {
                ("read source", bytes, 0)
            } else if recovery_target == Some(m.name.as_str()) || !m.in_sync {
                ("write target", 0, bytes)
            } else if recovery_target.is_none() {
                // resync: sync_request_write writes every read target but read_disk.
                ("write target", 0, bytes)
            } else {
                ("idle", 0, 0)
            };
            out.push(MemberIo {
                name: m.name.clone(),
                slot: m.slot,
                role: role.into(),
                read_bytes: r,
                write_bytes: w,
                write_bytes_max: w,
            });
        }
    } else if parity_level(&inp.level) {
        for m in &active {
            let target = recovery_target == Some(m.name.as_str())
                || (recovery_target.is_none() && !m.in_sync);
            let (role, r, w, wmax) = if target {
                ("write target", 0, bytes, bytes)
            } else if recovery_target.is_some() {
                ("read source", bytes, 0, 0)
            } else {
                // handle_parity_checks5/6: parity rewritten only where it mismatches.
                ("read (parity check)", bytes, 0, bytes)
            };
            out.push(MemberIo {
                name: m.name.clone(),
                slot: m.slot,
                role: role.into(),
                read_bytes: r,
                write_bytes: w,
                write_bytes_max: wmax,
            });
        }
    }
    if let Some(t) = recovery_target
        && !out.iter().any(|m| m.name == t)
    {
        out.push(recovery_target_io(t, recovery_slot, bytes));
    }
    out
}

/// The member a recovery writes `bytes` to, named `name` (empty: one md no longer lists).
fn recovery_target_io(name: &str, slot: Option<u32>, bytes: u64) -> MemberIo {
    MemberIo {
        name: if name.is_empty() {
            REMOVED_MEMBER.to_string()
        } else {
            name.to_string()
        },
        slot,
        role: "write target".into(),
        read_bytes: 0,
        write_bytes: bytes,
        write_bytes_max: bytes,
    }
}

/// The members md can read or write (not faulty, in a slot), by slot.
fn present_by_slot(inp: &Inputs) -> Vec<&MemberInput> {
    let mut members: Vec<&MemberInput> = inp
        .members
        .iter()
        .filter(|m| !m.faulty && m.slot.is_some())
        .collect();
    members.sort_by_key(|m| m.slot);
    members
}

/// md_do_sync's time for `bytes` per member at a cap of `cap_kibs`. md measures its speed as
/// `done / (whole seconds since the mark + 1)`, so within the 30 s mark window it is allowed
/// `cap × (t + 1)` by time t and ends about one second before `bytes / cap`; the 0.5 s throttle
/// sleeps and the requests in flight at each check (md counts only completed ones) smear the
/// end, modelled as a quarter second. Past the window the mark slides and the rate approaches
/// `cap × (1 + 1/window)`.
pub fn throttled_secs(bytes: u64, cap_kibs: f64) -> f64 {
    if bytes == 0 || cap_kibs <= 0.0 {
        return 0.0;
    }
    let kib = bytes as f64 / 1024.0;
    let at_cap = kib / cap_kibs;
    if at_cap <= MARK_WINDOW_SECS {
        ((at_cap - 1.0).max(0.0) + THROTTLE_SLEEP_SECS / 2.0).min(at_cap)
    } else {
        let mid = MARK_WINDOW_SECS - 1.5;
        MARK_WINDOW_SECS - 1.0
            + (kib - cap_kibs * MARK_WINDOW_SECS) / (cap_kibs * (mid + 1.0) / mid)
    }
}

fn duration(inp: &Inputs, bytes: u64, io: &[MemberIo]) -> Option<DurationEstimate> {
    if bytes == 0 {
        return None;
    }
    let cap = inp.speed_max_kibs.max(inp.speed_min_kibs) as f64;
    // The member that takes longest at its measured throughput bounds the sync (writes
    // assumed as fast as reads): its own bytes at its own speed.
    let slowest = io
        .iter()
        .filter_map(|m| {
            let own = m.read_bytes.max(m.write_bytes);
            let k = inp
                .members
                .iter()
                .find(|x| x.name == m.name)
                .and_then(|x| x.read_kibs)?;
            (own > 0).then(|| (own as f64 / 1024.0 / k, k, m.name.clone()))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let kib = bytes as f64 / 1024.0;
    let throttled = throttled_secs(bytes, cap);
    let (idle, rate, limited_by) = match &slowest {
        Some((secs, k, name)) if *secs > throttled => {
            (*secs, *k, format!("member throughput ({name})"))
        }
        _ => (throttled, cap, "speed_max".to_string()),
    };
    let busy_max = if inp.speed_min_kibs > 0 {
        (kib / inp.speed_min_kibs as f64).max(idle)
    } else {
        f64::INFINITY
    };
    let busy_max = if busy_max.is_finite() { busy_max } else { idle };
    Some(DurationEstimate {
        expected_secs: if inp.busy == Some(true) {
            busy_max
        } else {
            idle
        },
        idle_secs: idle,
        busy_secs_max: busy_max,
        rate_kibs: rate,
        limited_by,
    })
}

fn cost(
    inp: &Inputs,
    scenario: &str,
    kind: CostKind,
    reason: String,
    ranges: &[Range<u64>],
    target: Option<(&str, Option<u32>)>,
) -> Cost {
    let bytes = match kind {
        CostKind::Bitmap => inp
            .bitmap
            .as_ref()
            .map(|b| chunk_bytes_covered(ranges, b.chunk_bytes, sync_sectors(inp)))
            .unwrap_or(0),
        CostKind::Full => sync_sectors(inp) * 512,
        _ => 0,
    };
    // A raid10 recovery (a re-add's target): its pace depends on the kernel (see
    // raid10_recovery_pace).
    let raid10 = inp.level == "raid10";
    let raid10_recovery = match target {
        Some((name, Some(slot))) if raid10 => Some((name, slot)),
        _ => None,
    };
    // (bytes, I/O, the recovered member's span md paces before 6.11)
    let (bytes, members, span) = match raid10_recovery {
        _ if bytes == 0 => (0, vec![], None),
        Some((name, slot)) => {
            let (b, io, span) = raid10_recovery_io(inp, ranges, kind, name, slot);
            (b, io, Some(span))
        }
        None if raid10 => (bytes, raid10_resync_io(inp, kind, ranges), None),
        None => {
            let io = member_io(inp, bytes, target.map(|t| t.0), target.and_then(|t| t.1));
            (bytes, io, None)
        }
    };
    let giveup = inp.kernel.map(Raid10Giveup::for_kernel);
    let duration = match (span, giveup) {
        (Some(span), Some(Raid10Giveup::Accumulate)) => duration(inp, span, &members),
        (Some(_), _) => None,
        (None, _) => duration(inp, bytes, &members),
    };
    let reason = if raid10_recovery.is_some() && bytes > 0 {
        format!("{reason}. {}", raid10_recovery_pace(giveup))
    } else {
        reason
    };
    let bitmapped = kind == CostKind::Bitmap;
    Cost {
        scenario: scenario.into(),
        slot: target.and_then(|t| t.1),
        member: target.map(|t| t.0.to_string()).filter(|s| !s.is_empty()),
        kind,
        reason,
        chunks: if bitmapped { count(ranges) } else { 0 },
        chunk_ranges: if bitmapped { to_pairs(ranges) } else { vec![] },
        sync_bytes_per_member: bytes,
        total_read_bytes: members.iter().map(|m| m.read_bytes).sum(),
        total_write_bytes: members.iter().map(|m| m.write_bytes).sum(),
        members,
        duration,
    }
}

/// How md's raid10 resync passes an array range with fewer than two readable copies
/// (`raid10_sync_request`, resync branch: `count < 2` → `giveup`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Raid10Giveup {
    /// Before 6.11: the range joins the call's `sectors_skipped` and the call goes on
    /// (`goto skipped`, which resets `max_sector`); when the call then reads, it returns
    /// them with its own sectors, so md_do_sync counts them toward its pace; `raid_disks` of
    /// them in one call return the rest of the array as skipped ("nothing to do at all"):
    /// the resync ends there.
    Accumulate,
    /// From 6.11 (bc49694a9e8f, "md: pass in max_sectors for pers->sync_request()", which
    /// stopped resetting `max_sector` at `skipped:`): the jump back finds `sector_nr >=
    /// max_sector` and returns the range as skipped, so it is neither counted nor able to end
    /// the resync.
    SkipEach,
}

impl Raid10Giveup {
    fn for_kernel(k: (u32, u32)) -> Self {
        if k >= (6, 11) {
            Self::SkipEach
        } else {
            Self::Accumulate
        }
    }
}

/// `major.minor` of a kernel release such as `6.12.117+deb12-cloud-amd64`.
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut it = release.trim().split(['.', '-', '+']);
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// `RESYNC_PAGES << (PAGE_SHIFT - 9)`: the most one raid10 resync request covers (64 KiB).
const RAID10_MAX_SYNC_SECTORS: u64 = 128;

/// What md's resync of a degraded raid10 does, walking its dirty bitmap chunks as
/// `raid10_sync_request` does: each request covers at most [`RAID10_MAX_SYNC_SECTORS`], stops
/// at the end of the bitmap chunk and, when `near_copies < raid_disks`, of the RAID chunk;
/// every present copy of a range with at least two is read (the first is the reference, the
/// others rewritten where they differ); a range with fewer is given up (see [`Raid10Giveup`]).
fn raid10_degraded_walk(
    inp: &Inputs,
    ranges: &[Range<u64>],
    giveup: Raid10Giveup,
) -> Option<DegradedWalk> {
    let b = inp.bitmap.as_ref()?;
    let map = raid10_geometry(inp)?;
    let conf = map.raid10()?;
    let cs = b.chunk_bytes / 512;
    if cs == 0 {
        return None;
    }
    let sync = map.sync_size();
    let readable: Vec<u32> = present_by_slot(inp)
        .iter()
        .filter(|m| m.in_sync)
        .filter_map(|m| m.slot)
        .collect();
    let raid_chunk = conf.chunk_sectors();
    let mut w = DegradedWalk {
        per_slot: BTreeMap::new(),
        compared: 0,
        paced: 0,
        given_up: 0,
        ended: None,
    };
    // The current call's given-up ranges (count, sectors) and where the last request ended.
    let (mut skipped_n, mut skipped_sectors, mut last_end) = (0u32, 0u64, None);
    for r in ranges {
        for chunk in r.clone() {
            let (a, b) = (chunk * cs, ((chunk + 1) * cs).min(sync));
            let mut p = a;
            while p < b {
                let mut e = (p + RAID10_MAX_SYNC_SECTORS).min(b);
                if conf.splits_at_chunks() {
                    e = e.min((p / raid_chunk + 1) * raid_chunk);
                }
                if last_end != Some(p) {
                    // A clean stretch between: md_bitmap_start_sync skips it and the call ends.
                    (skipped_n, skipped_sectors) = (0, 0);
                }
                last_end = Some(e);
                let copies: Vec<_> = conf
                    .copies(p)
                    .filter(|c| readable.contains(&c.dev))
                    .collect();
                if copies.len() >= 2 {
                    for (i, c) in copies.iter().enumerate() {
                        let x = w.per_slot.entry(c.dev).or_default();
                        x.0 += (e - p) * 512;
                        if i > 0 {
                            x.1 += (e - p) * 512;
                        }
                    }
                    w.compared += e - p;
                    w.paced += e - p + skipped_sectors;
                    (skipped_n, skipped_sectors) = (0, 0);
                } else {
                    w.given_up += 1;
                    if giveup == Raid10Giveup::Accumulate {
                        skipped_n += 1;
                        skipped_sectors += e - p;
                        if skipped_n >= inp.raid_disks {
                            w.ended = Some(e);
                            return Some(w);
                        }
                    }
                }
                p = e;
            }
        }
    }
    Some(w)
}

/// The crash resync of a degraded raid10 with dirty chunks `ranges` (see
/// [`raid10_degraded_walk`]); `None` when its geometry cannot be mapped.
fn raid10_degraded_crash(
    inp: &Inputs,
    ranges: &[Range<u64>],
    giveup: Raid10Giveup,
) -> Option<Cost> {
    let w = raid10_degraded_walk(inp, ranges, giveup)?;
    let members = resync_member_io(inp, &w.per_slot);
    let pace = match giveup {
        Raid10Giveup::Accumulate => {
            "before 6.11 the ranges it gives up count toward md's pace when the same request then reads, and as many given up in a row as the array has members end the resync there (\"nothing to do at all\")"
        }
        Raid10Giveup::SkipEach => {
            "from 6.11 each range it gives up is returned as skipped: not counted toward md's pace"
        }
    };
    let mut reason = format!(
        "degraded raid10, array active: every bit set on disk becomes NEEDED; raid10_sync_request reads every present copy of each dirty range that still has two (the first is the reference, the others rewritten where they differ) and gives up ranges with fewer ({pace}); while degraded md_bitmap_start_sync keeps NEEDED, so the bits stay set for the re-add's recovery"
    );
    if let Some(end) = w.ended {
        reason += &format!(
            "; here the resync ends at array sector {end}, past which no dirty range is compared"
        );
    }
    // From 6.11 a given-up request goes through the end-of-sync path (close_sync waits for the
    // requests in flight and frees the buffer pool the next request re-creates): measured on
    // 6.12, 1 MiB compared at 320 KiB/s took 3.2 s, where a whole raid10's 1 MiB takes 2.1 s.
    let duration = if giveup == Raid10Giveup::SkipEach && w.given_up > 0 {
        reason += ". Its duration is not predicted: from 6.11 each range md gives up ends its resync pass (close_sync waits for the requests in flight), which md's pace alone does not account for";
        None
    } else {
        duration(inp, w.paced * 512, &members)
    };
    Some(Cost {
        scenario: "crash_now".into(),
        slot: None,
        member: None,
        kind: CostKind::Bitmap,
        reason,
        chunks: count(ranges),
        chunk_ranges: to_pairs(ranges),
        sync_bytes_per_member: w.compared * 512,
        total_read_bytes: members.iter().map(|m| m.read_bytes).sum(),
        total_write_bytes: 0,
        members,
        duration,
    })
}

fn modelled(level: &str) -> bool {
    level == "raid1" || parity_level(level)
}

/// Sectors md's resync walks: the array's address space for raid10 (`resync_max_sectors`,
/// what its bitmap covers), each member's data area (`dev_sectors`) for the other levels.
fn sync_sectors(inp: &Inputs) -> u64 {
    match (&inp.bitmap, inp.level.as_str()) {
        (Some(b), "raid10") => b.sync_size_sectors,
        (None, "raid10") => raid10_geometry(inp).map_or(inp.dev_sectors, |g| g.array_sectors()),
        _ => inp.dev_sectors,
    }
}

/// The array's raid10 mapping from its sysfs geometry.
fn raid10_geometry(inp: &Inputs) -> Option<crate::engine::mapping::ArrayMap> {
    use crate::engine::mapping::{ArrayGeometry, ArrayMap};
    let geo = ArrayGeometry::from_sysfs(
        &inp.level,
        inp.layout,
        inp.raid_disks,
        inp.chunk_size_bytes,
        inp.dev_sectors / 2,
    )
    .ok()?;
    ArrayMap::new(geo).ok()
}

/// What [`raid10_degraded_walk`] finds.
struct DegradedWalk {
    /// Per present slot: bytes read, bytes rewritten at most.
    per_slot: BTreeMap<u32, (u64, u64)>,
    /// Array sectors compared.
    compared: u64,
    /// Array sectors md counts toward its pace.
    paced: u64,
    /// Requests given up.
    given_up: u64,
    /// The array sector where the resync ends early, if it does.
    ended: Option<u64>,
}

/// A raid10 resync's I/O per member (`raid10_sync_request`'s resync branch and
/// `sync_request_write`): every copy of each synced array range is read
/// (`__raid10_find_phys`); copies after the first are rewritten only where they differ from
/// it, so the writes expected after a crash with no write in flight are none, and at most
/// the later copies. Members missing from the array are not read. A full resync (no usable
/// bitmap) reads every member's whole data area.
fn raid10_resync_io(inp: &Inputs, kind: CostKind, ranges: &[Range<u64>]) -> Vec<MemberIo> {
    use crate::engine::mapping::ResyncAccess;
    // (read, rewritten where different) per slot.
    let mut per_slot: BTreeMap<u32, (u64, u64)> = Default::default();
    match (kind, &inp.bitmap, raid10_geometry(inp)) {
        (CostKind::Bitmap, Some(b), Some(map)) if b.chunk_bytes >= 512 => {
            let shift = (b.chunk_bytes / 512).trailing_zeros();
            for r in ranges {
                for chunk in r.clone() {
                    for e in map.resync_extents(chunk, shift, 0) {
                        let x = per_slot.entry(e.member).or_default();
                        x.0 += e.bytes;
                        if e.access == ResyncAccess::ReadThenWriteIfMismatch {
                            x.1 += e.bytes;
                        }
                    }
                }
            }
        }
        _ => {
            for slot in 0..inp.raid_disks {
                per_slot.insert(slot, (inp.dev_sectors * 512, inp.dev_sectors * 512));
            }
        }
    }
    resync_member_io(inp, &per_slot)
}

/// Each present member's share of a raid10 resync, from (read, rewritten at most) per slot:
/// copies are read and compared, rewritten only where they differ (none expected).
fn resync_member_io(inp: &Inputs, per_slot: &BTreeMap<u32, (u64, u64)>) -> Vec<MemberIo> {
    present_by_slot(inp)
        .into_iter()
        .map(|m| {
            let (r, w) = per_slot
                .get(&m.slot.unwrap_or(u32::MAX))
                .copied()
                .unwrap_or_default();
            MemberIo {
                name: m.name.clone(),
                slot: m.slot,
                role: if r > 0 { "read (copy compare)" } else { "idle" }.into(),
                read_bytes: r,
                write_bytes: 0,
                write_bytes_max: w,
            }
        })
        .collect()
}

fn no_redundancy(level: &str) -> bool {
    matches!(level, "raid0" | "linear" | "")
}

/// Whether md reloads every bit as set: `md_bitmap_read_sb` marks the bitmap `BITMAP_STALE`
/// when its events are older than the array's, and `md_bitmap_init_from_disk` then sets every
/// bit (`memset(0xff)`). Those bits become NEEDED only from `start` on (`md_bitmap_load`:
/// `start = recovery_cp` when not degraded), so on a clean array (`recovery_cp = MaxSector`)
/// no bit is NEEDED and nothing is synced; callers ask only for an array that is not clean.
fn stale(inp: &Inputs) -> Option<String> {
    let b = inp.bitmap.as_ref()?;
    let sb = inp.sb_events?;
    (b.events < sb).then(|| {
        format!(
            "stale bitmap: bitmap events {} < array events {sb}; md_bitmap_read_sb sets BITMAP_STALE, md_bitmap_init_from_disk sets every bit, and on an array that is not clean (start = recovery_cp = 0) every chunk is NEEDED: a full resync",
            b.events
        )
    })
}

fn crash_now(inp: &Inputs) -> Cost {
    let none = |why: String| cost(inp, "crash_now", CostKind::None, why, &[], None);
    if no_redundancy(&inp.level) {
        return none(format!("{} has no redundancy to resync", inp.level));
    }
    if !modelled(&inp.level) && inp.level != "raid10" {
        return cost(
            inp,
            "crash_now",
            CostKind::Unmodelled,
            format!("per-member resync I/O of {} is not modelled", inp.level),
            &[],
            None,
        );
    }
    let working = inp
        .members
        .iter()
        .filter(|m| m.in_sync && !m.faulty && m.slot.is_some())
        .count() as u32;
    if inp.level == "raid1" && working <= 1 {
        return none(
            "one working mirror: raid1_run sets recovery_cp = MaxSector, nothing to resync".into(),
        );
    }
    let degraded = working < inp.raid_disks;
    let degraded_raid10 = inp.level == "raid10" && degraded;
    let unmodelled_raid10 = |why: &str| {
        cost(
            inp,
            "crash_now",
            CostKind::Unmodelled,
            format!("the resync of a degraded raid10 after a crash is not modelled {why}"),
            &[],
            None,
        )
    };
    if parity_level(&inp.level)
        && degraded
        && !matches!(inp.array_state.as_str(), "clean" | "readonly" | "read-auto")
    {
        return cost(
            inp,
            "crash_now",
            CostKind::Refused,
            "dirty degraded array: raid5_run refuses to start it (\"cannot start dirty degraded array\") unless start_dirty_degraded is set, and then cannot resync it".into(),
            &[],
            None,
        );
    }
    match inp.array_state.as_str() {
        // Read-only (`start_ro` after an unclean stop): md never rewrote the superblock, so
        // it still says dirty (super_1_validate: recovery_cp = resync_offset, shown in
        // resync_start); md_check_recovery leaves a read-only array alone, and the resync
        // runs once it goes read-write, as it would after a crash now.
        "readonly" | "read-auto" if inp.resync_start.is_some() => {}
        "clean" | "readonly" | "read-auto" | "inactive" | "clear" => {
            return none(format!(
                "array_state is {}: the superblock says clean (super_1_sync writes resync_offset = MaxSector), so md_bitmap_load loads dirty bits without NEEDED and no resync runs",
                inp.array_state
            ));
        }
        _ => {}
    }
    let Some(b) = inp.bitmap.as_ref() else {
        if degraded_raid10 {
            return unmodelled_raid10("without a bitmap (a full resync)");
        }
        return cost(
            inp,
            "crash_now",
            CostKind::Full,
            "no bitmap: the superblock says active (resync_offset = 0), so md_do_sync resyncs the whole component".into(),
            &[],
            None,
        );
    };
    if let Some(why) = stale(inp) {
        if degraded_raid10 {
            return unmodelled_raid10("with a stale bitmap (a full resync)");
        }
        return cost(inp, "crash_now", CostKind::Full, why, &[], None);
    }
    let ranges = b.dirty_on_disk.clone();
    if degraded_raid10 && !ranges.is_empty() {
        let Some(giveup) = inp.kernel.map(Raid10Giveup::for_kernel) else {
            return unmodelled_raid10("when the kernel release is unknown (md changed it in 6.11)");
        };
        return raid10_degraded_crash(inp, &ranges, giveup)
            .unwrap_or_else(|| unmodelled_raid10("for this geometry"));
    }
    let why = if ranges.is_empty() {
        "array active but no bit set on disk".to_string()
    } else {
        "array active (superblock resync_offset = 0): every bit set on disk becomes NEEDED (md_bitmap_init_from_disk) and raid*_sync_request syncs exactly those chunks".to_string()
    };
    let kind = if ranges.is_empty() {
        CostKind::None
    } else {
        CostKind::Bitmap
    };
    cost(inp, "crash_now", kind, why, &ranges, None)
}

fn re_add(inp: &Inputs) -> Vec<Cost> {
    if no_redundancy(&inp.level) || inp.raid_disks == 0 {
        return vec![];
    }
    let present: Vec<u32> = inp
        .members
        .iter()
        .filter(|m| !m.faulty)
        .filter_map(|m| m.slot)
        .collect();
    let mut out = Vec::new();
    for slot in 0..inp.raid_disks {
        if present.contains(&slot) {
            continue;
        }
        let failed = inp
            .members
            .iter()
            .find(|m| m.faulty && m.slot == Some(slot))
            .map(|m| m.name.clone());
        let cand = inp.candidate.as_ref().filter(|c| {
            // The candidate goes to the slot its superblock records, else the first free one.
            match c.superblock {
                Some((true, _, Some(s))) => s == slot,
                _ => !out
                    .iter()
                    .any(|x: &Cost| x.member.as_deref() == Some(c.name.as_str())),
            }
        });
        let target = cand
            .map(|c| c.name.clone())
            .or(failed.clone())
            .unwrap_or_default();
        let t = Some((target.as_str(), Some(slot)));
        let raid10 = inp.level == "raid10" && inp.bitmap.is_some();
        if let (Some(c), Some(b)) = (cand, &inp.bitmap)
            && (modelled(&inp.level) || raid10)
        {
            let full = match c.superblock {
                None => Some(format!(
                    "{} carries no md superblock: it is added as a new member (saved_raid_disk < 0, so raid1_add_disk/raid5_add_disk set conf->fullsync) and recovered in full",
                    c.name
                )),
                Some((false, _, _)) => Some(format!(
                    "{} belongs to another array (UUID differs): added as a new member (conf->fullsync), recovered in full",
                    c.name
                )),
                Some((true, ev, _)) if ev < b.events_cleared => Some(format!(
                    "events out of range: {} has events {ev} < bitmap events_cleared {}: super_1_validate gives it no role (no Bitmap_sync), so mdadm --re-add is refused (add_new_disk: -EINVAL); it can only be added as a new member (mdadm --add; some mdadm versions want mdadm --zero-superblock first) and is recovered in full",
                    c.name, b.events_cleared
                )),
                _ => None,
            };
            if let Some(why) = full {
                out.push(cost(inp, "re_add", CostKind::Full, why, &[], t));
                continue;
            }
        }
        if !modelled(&inp.level) && !raid10 {
            out.push(cost(
                inp,
                "re_add",
                CostKind::Unmodelled,
                format!("per-member recovery I/O of {} is not modelled", inp.level),
                &[],
                t,
            ));
            continue;
        }
        let c = match &inp.bitmap {
            None => cost(
                inp,
                "re_add",
                CostKind::Full,
                "no bitmap: a re-added member is recovered in full (md_bitmap_start_sync without a bitmap always syncs)".into(),
                &[],
                t,
            ),
            Some(b) => {
                let (ranges, from) = match &b.needed {
                    Some(n) => (n.clone(), "NEEDED in the kernel's counters"),
                    None => (b.dirty_on_disk.clone(), "set on disk"),
                };
                cost(
                    inp,
                    "re_add",
                    CostKind::Bitmap,
                    format!(
                        "re-add (mdadm --re-add) of the member that left slot {slot}: super_1_validate accepts it with Bitmap_sync while its superblock events >= bitmap events_cleared ({}); recovery then syncs the chunks {from}. A member with older events, or one added rather than re-added (a new or wiped disk: saved_raid_disk < 0 → conf->fullsync), is recovered in full: {} bytes",
                        b.events_cleared,
                        inp.dev_sectors * 512
                    ),
                    &ranges,
                    t,
                )
            }
        };
        out.push(c);
    }
    out
}

fn running(inp: &Inputs) -> Option<RunningSync> {
    if matches!(inp.sync_action.as_str(), "idle" | "frozen" | "") {
        return None;
    }
    let (done, total) = inp.sync_completed?;
    let naive = total.saturating_sub(done) * 512;
    // Resync and recovery skip chunks that are not NEEDED; check/repair/reshape do not.
    let bitmap_ranges = match (&inp.bitmap, inp.sync_action.as_str()) {
        (Some(b), "resync" | "recover") if modelled(&inp.level) => Some((
            b.needed.clone().unwrap_or_else(|| b.dirty_on_disk.clone()),
            b.chunk_bytes,
        )),
        _ => None,
    };
    let remaining = match &bitmap_ranges {
        Some((ranges, chunk)) => {
            let chunk_sectors = chunk / 512;
            let left: Vec<Range<u64>> = ranges
                .iter()
                .filter_map(|r| {
                    let s = r.start * chunk_sectors;
                    let e = r.end * chunk_sectors;
                    let s = s.max(done);
                    let e = e.min(total);
                    (s < e).then_some(s..e)
                })
                .collect();
            left.iter().map(|r| (r.end - r.start) * 512).sum()
        }
        None => naive,
    };
    let eta = |b: u64| {
        inp.sync_speed_kibs
            .filter(|s| *s > 0)
            .map(|s| b as f64 / 1024.0 / s as f64)
    };
    Some(RunningSync {
        action: inp.sync_action.clone(),
        done_sectors: done,
        total_sectors: total,
        remaining_bytes: remaining,
        remaining_bytes_naive: naive,
        uses_bitmap: bitmap_ranges.is_some(),
        sync_speed_kibs: inp.sync_speed_kibs,
        eta_secs: eta(remaining),
        eta_naive_secs: eta(naive),
    })
}

/// The prediction for one array.
pub fn predict(inp: &Inputs) -> Prediction {
    let mut assumptions = vec![
        "crash now: the array is assembled again with the same members and the bitmap as it is on disk now; writes not yet issued are not counted".to_string(),
        format!(
            "the array marks itself clean after safe_mode_delay ({}) without writes; a crash while clean costs no resync",
            inp.safe_mode_delay_secs
                .map(|s| format!("{s} s"))
                .unwrap_or_else(|| "unknown".into())
        ),
        match inp.level.as_str() {
            "raid1" => "raid1 resync reads the first in-sync, not write-mostly mirror and writes all the others (no comparison); a recovery reads that mirror and writes the recovering one".to_string(),
            l if parity_level(l) => "raid4/5/6 resync reads every member and rewrites parity only where it mismatches (stripes with writes in flight at the crash): write_bytes = 0, write_bytes_max bounds it; a recovery reads every other member and writes the recovering one".to_string(),
            l => format!("{l}: per-member I/O not modelled"),
        },
        format!(
            "durations: md_do_sync throttles to speed_max {} KiB/s when the members are otherwise idle (ending about 1 s early: its speed divides by whole seconds + 1) and yields to other I/O down to speed_min {} KiB/s when busy",
            inp.speed_max_kibs, inp.speed_min_kibs
        ),
        "members write as fast as they read (only reads are measured: md-bitmap never writes to a member)".to_string(),
        "bad blocks, write errors and reshapes are not modelled".to_string(),
    ];
    assumptions.extend(inp.notes.iter().cloned());
    Prediction {
        schema_version: SCHEMA_VERSION,
        array: inp.name.clone(),
        level: inp.level.clone(),
        bitmap_chunk_bytes: inp.bitmap.as_ref().map(|b| b.chunk_bytes),
        component_bytes: inp.dev_sectors * 512,
        crash_now: crash_now(inp),
        re_add: re_add(inp),
        running: running(inp),
        speed: SpeedInputs {
            speed_min_kibs: inp.speed_min_kibs,
            speed_max_kibs: inp.speed_max_kibs,
            sync_speed_kibs: inp.sync_speed_kibs,
            member_read_kibs: inp
                .members
                .iter()
                .filter_map(|m| m.read_kibs.map(|k| (m.name.clone(), k)))
                .collect(),
            busy: inp.busy,
        },
        assumptions,
    }
}

/// The JSON Schema of `md-bitmap predict --json` output (one [`Prediction`] per line), as
/// committed in `docs/schema/predict.schema.json`.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Prediction)).expect("schema serialises")
}

#[cfg(test)]
mod tests;
