//! Records shared by md-bitmap's eBPF programs and its userspace agent.
//!
//! Everything here is `#[repr(C)]` plain data: the eBPF side writes it into a ring buffer and the
//! user side reads it back byte for byte. Only what both sides must agree on lives here; decoding
//! into richer events happens in `md-bitmap-user`'s `feed` module.
#![no_std]

/// What kind of kernel event a [`Record`] carries.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// Entry of the bitmap's start-write function (`md_bitmap_startwrite` / `bitmap_startwrite` /
    /// `bitmap_start_write`, depending on the kernel).
    StartWrite = 1,
    /// Entry of the bitmap's end-write function.
    EndWrite = 2,
    /// `block/block_bio_queue` on a watched md device.
    BioQueue = 3,
    /// `block/block_bio_complete` on a watched md device.
    BioComplete = 4,
    /// Entry of the bitmap's start-sync function.
    StartSync = 5,
    /// Entry of the bitmap's end-sync function.
    EndSync = 6,
    /// Entry of the bitmap's close-sync function.
    CloseSync = 7,
    /// Entry of the bitmap's cond-end-sync function.
    CondEndSync = 8,
    /// Entry of the bitmap daemon (`md_bitmap_daemon_work` / `bitmap_daemon_work`). With
    /// [`MdLayout::daemon_passes_only`], only calls that ran a pass are reported: the entry
    /// probe reads `daemon_lastrun` and `daemon_sleep` and, when the kernel's
    /// `time_before(jiffies, daemon_lastrun + daemon_sleep)` holds at entry, holds the record back
    /// until the return probe; the pair (this record, stamped at entry, then [`DaemonDone`]) is
    /// emitted there only if `daemon_lastrun` changed (the kernel read `jiffies` later and the
    /// pass ran after all); otherwise the call did nothing but re-arm the thread's timeout, and
    /// neither record is emitted.
    ///
    /// [`DaemonDone`]: RecordKind::DaemonDone
    DaemonWork = 9,
    /// Entry of the bitmap unplug function (the synchronous on-disk bit writes).
    Unplug = 10,
    /// `block/block_bio_remap` whose source is a watched md device.
    BioRemap = 11,
    /// Entry of the bitmap superblock update (`md_bitmap_update_sb` / `bitmap_update_sb`), which
    /// writes the superblock's page, and with it the bits that share page 0.
    UpdateSb = 12,
    /// Return of the bitmap daemon: `args[0]` the `struct mddev`, `args[1]` the kernel's
    /// `bitmap->daemon_lastrun` after the call, `args[2]` 1 when it could be read (needs
    /// [`MdLayout`]).
    DaemonDone = 13,
    /// Return of an md personality's thread function (`raid1d` / `raid10d` / `raid5d`), attached
    /// by `md-bitmap record` only: the md thread goes back to sleep in `md_thread()`'s
    /// `wait_event_interruptible_timeout(..., thread->timeout)`, whose timeout counts from here.
    /// No arguments (the recorder tells the array's thread by its tid).
    ThreadRunEnd = 14,
}

impl RecordKind {
    /// Decodes the raw `kind` field of a [`Record`].
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::StartWrite,
            2 => Self::EndWrite,
            3 => Self::BioQueue,
            4 => Self::BioComplete,
            5 => Self::StartSync,
            6 => Self::EndSync,
            7 => Self::CloseSync,
            8 => Self::CondEndSync,
            9 => Self::DaemonWork,
            10 => Self::Unplug,
            11 => Self::BioRemap,
            12 => Self::UpdateSb,
            13 => Self::DaemonDone,
            14 => Self::ThreadRunEnd,
            _ => return None,
        })
    }
}

/// One kernel event as the eBPF programs see it, undecoded.
///
/// For block events, `args[2]` holds the bio's `bi_opf` (op in the low 8 bits: 0 read, 1 write,
/// 2 flush, 3 discard).
///
/// For kprobes, `args` holds the first five integer arguments of the probed function as raw
/// register values: their meaning depends on the kernel's prototype (for example
/// `md_bitmap_startwrite(struct bitmap *, sector_t, unsigned long, int behind)` on 6.1 against
/// `bitmap_startwrite(struct mddev *, sector_t, unsigned long)` on 6.12.y), so the user side picks
/// the layout at run time. For block tracepoints, `dev` is the kernel's `dev_t` encoding
/// (`major << 20 | minor`), `args[0]` the sector, `args[1]` the number of sectors, `args[2]` the
/// `rwbs` string's eight bytes, `args[3]` the error (complete) or the member device (remap), and
/// `args[4]` the member sector (remap only).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// A [`RecordKind`] as `u32`.
    pub kind: u32,
    /// CPU the event fired on.
    pub cpu: u32,
    /// `bpf_ktime_get_ns()` at the event (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// Block device (`major << 20 | minor`) for tracepoints; 0 for kprobes, except end-write:
    /// there, with [`MdLayout`] set, `1 + mddev->degraded` read at the call (0: not read). md's
    /// end-write rule depends on it (≥6.14 and backports: degraded → NEEDED), and sysfs, polled,
    /// can lag behind a member's failure.
    pub dev: u32,
    /// Thread id of the task the event fired in.
    pub tid: u32,
    /// `bpf_jiffies64()` at the event: md's bitmap daemon schedules itself in jiffies, so the
    /// engine replays its `time_before(jiffies, daemon_lastrun + daemon_sleep)` test exactly.
    pub jiffies: u64,
    /// Raw arguments, see the type's documentation.
    pub args: [u64; 5],
}

impl Record {
    /// Size in bytes of one record in the ring buffer.
    pub const SIZE: usize = core::mem::size_of::<Record>();
}

/// Index into the `COUNTERS` per-CPU array of feed statistics.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Records written to the ring buffer.
    Emitted = 0,
    /// Records lost because the ring buffer was full.
    Dropped = 1,
    /// Block events seen on devices that are not watched (filtered out in the kernel).
    Filtered = 2,
    /// Bitmap daemon calls that ran no pass and were not reported (with
    /// [`MdLayout::daemon_passes_only`]).
    IdleDaemon = 3,
}

/// Number of slots in the `COUNTERS` map.
pub const COUNTER_SLOTS: u32 = 4;

/// Default ring buffer size in bytes (a power of two multiple of the page size).
pub const RING_BYTES: u32 = 1 << 22;

/// The kernel's `dev_t` encoding used by block tracepoints: `major << 20 | minor`.
pub const fn kernel_dev(major: u32, minor: u32) -> u32 {
    (major << 20) | minor
}

/// Byte offsets of `struct bio` / `struct block_device` fields the raw block tracepoint programs
/// read, from the running kernel's vmlinux BTF (written by userspace into `BIO_LAYOUT` before the
/// programs are attached; all zero means "not configured" and the programs emit nothing).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BioLayout {
    /// `bio.bi_bdev` (a `struct block_device *`).
    pub bi_bdev: u32,
    /// `bio.bi_opf` (u32: op in the low 8 bits).
    pub bi_opf: u32,
    /// `bio.bi_iter.bi_sector` (u64).
    pub bi_sector: u32,
    /// `bio.bi_iter.bi_size` (u32, bytes).
    pub bi_size: u32,
    /// `bio.bi_status` (u8).
    pub bi_status: u32,
    /// `block_device.bd_dev` (u32 dev_t).
    pub bd_dev: u32,
}

#[cfg(feature = "user")]
// SAFETY: `BioLayout` is `repr(C)`, `Copy`, six u32 and no padding.
unsafe impl aya::Pod for BioLayout {}

/// Byte offsets in md's structures (from md_mod's BTF, written by userspace into `MD_LAYOUT`;
/// `valid == 0` means unknown and the programs read nothing). With it, the update-sb probe
/// reports `mddev->events` (`args[1]`, with `args[2] = 1`), the daemon's return probe reports
/// `bitmap->daemon_lastrun`, and the end-write probe reports `mddev->degraded` (see [`Record::dev`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MdLayout {
    /// Non-zero when the offsets below are set.
    pub valid: u32,
    /// `bitmap.mddev` (a `struct mddev *`).
    pub bitmap_mddev: u32,
    /// `mddev.events` (u64).
    pub mddev_events: u32,
    /// `mddev.bitmap` (a `struct bitmap *`).
    pub mddev_bitmap: u32,
    /// `bitmap.daemon_lastrun` (unsigned long, jiffies).
    pub bitmap_daemon_lastrun: u32,
    /// `mddev.degraded` (int).
    pub mddev_degraded: u32,
    /// Non-zero when the bitmap functions' first argument is a `struct mddev *` (6.12+) rather
    /// than a `struct bitmap *`.
    pub first_arg_is_mddev: u32,
    /// `mddev.bitmap_info.daemon_sleep` (unsigned long, jiffies).
    pub mddev_daemon_sleep: u32,
    /// Non-zero: report only the bitmap daemon's calls that ran a pass (see
    /// [`RecordKind::DaemonWork`]).
    pub daemon_passes_only: u32,
}

#[cfg(feature = "user")]
// SAFETY: `MdLayout` is `repr(C)`, `Copy`, nine u32 and no padding (4-byte alignment).
unsafe impl aya::Pod for MdLayout {}

/// Largest kernel read one run of the `peek` program makes (one page of bitmap counters).
pub const PEEK_MAX: usize = 4096;

/// The `peek` program's answer, in the `PEEK_BUF` map. md-bitmap reads md's own bitmap counters
/// with it, as an oracle for the engine (structure offsets come from md_mod's BTF).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PeekReply {
    /// The request's sequence number.
    pub seq: u64,
    /// `bpf_probe_read_kernel`'s result (0 on success).
    pub ret: i64,
    /// `bpf_ktime_get_ns()` when the memory was read.
    pub ts_ns: u64,
    /// The bytes read.
    pub data: [u8; PEEK_MAX],
}

#[cfg(feature = "user")]
// SAFETY: `PeekReply` is `repr(C)`, `Copy`, integers and a byte array, no padding (8 + 8 + 8 + 4096).
unsafe impl aya::Pod for PeekReply {}

#[cfg(feature = "user")]
// SAFETY: `Record` is `repr(C)`, `Copy`, made only of integers and has no padding
// (4 + 4 + 8 + 4 + 4 + 8 + 40 bytes, every field naturally aligned), so any byte pattern is valid.
unsafe impl aya::Pod for Record {}
