//! md-bitmap's eBPF programs.
//!
//! Kprobes on md's bitmap functions and tracepoints on the block layer copy the raw facts of each
//! event (time, CPU, task, device and the first five arguments) into one ring buffer. They decide
//! nothing: which argument means what depends on the running kernel's prototypes, and that is
//! resolved in userspace (`md-bitmap-user`'s `feed::abi`). Lost records are counted per CPU.
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_jiffies64, bpf_ktime_get_ns,
        bpf_probe_read_kernel as bpf_probe_read_kernel_t, generated::bpf_probe_read_kernel,
    },
    macros::{btf_tracepoint, kprobe, kretprobe, map, raw_tracepoint},
    maps::{Array, HashMap, PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, ProbeContext, RawTracePointContext, RetProbeContext},
};
use md_bitmap_common::{
    BioLayout, COUNTER_SLOTS, Counter, MdLayout, PEEK_MAX, PeekReply, RING_BYTES, Record,
    RecordKind,
};

/// Every event, in the order the kernel produced them on each CPU.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

/// Feed statistics (see [`Counter`]).
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// Block devices (kernel `dev_t` encoding) whose bios are reported; filled by userspace with the
/// md arrays it watches.
#[map]
static WATCHED_DEVS: HashMap<u32, u8> = HashMap::with_max_entries(256, 0);

#[inline(always)]
fn bump(counter: Counter) {
    if let Some(p) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: the pointer comes from a per-CPU array slot of this CPU; eBPF programs are not
        // preempted on the same CPU by another instance of themselves mid-update.
        unsafe { *p += 1 };
    }
}

/// When this event happened: (ts_ns, jiffies, cpu).
#[inline(always)]
fn now() -> (u64, u64, u32) {
    // SAFETY: plain BPF helper calls with no arguments.
    unsafe {
        (
            bpf_ktime_get_ns(),
            bpf_jiffies64(),
            bpf_get_smp_processor_id(),
        )
    }
}

#[inline(always)]
fn emit(kind: RecordKind, dev: u32, args: [u64; 5]) {
    emit_at(kind, dev, args, now());
}

/// [`emit`] of an event stamped earlier (`at` from [`now`]) in the same thread.
#[inline(always)]
fn emit_at(kind: RecordKind, dev: u32, args: [u64; 5], at: (u64, u64, u32)) {
    match EVENTS.reserve::<Record>(0) {
        Some(mut entry) => {
            entry.write(Record {
                kind: kind as u32,
                cpu: at.2,
                ts_ns: at.0,
                dev,
                tid: bpf_get_current_pid_tgid() as u32,
                jiffies: at.1,
                args,
            });
            entry.submit(0);
            bump(Counter::Emitted);
        }
        None => bump(Counter::Dropped),
    }
}

#[inline(always)]
fn probe_args(ctx: &ProbeContext) -> [u64; 5] {
    [
        ctx.arg::<u64>(0).unwrap_or(0),
        ctx.arg::<u64>(1).unwrap_or(0),
        ctx.arg::<u64>(2).unwrap_or(0),
        ctx.arg::<u64>(3).unwrap_or(0),
        ctx.arg::<u64>(4).unwrap_or(0),
    ]
}

macro_rules! bitmap_kprobe {
    ($name:ident, $kind:expr) => {
        #[kprobe]
        pub fn $name(ctx: ProbeContext) -> u32 {
            emit($kind, 0, probe_args(&ctx));
            0
        }
    };
}

bitmap_kprobe!(md_start_write, RecordKind::StartWrite);
bitmap_kprobe!(md_start_sync, RecordKind::StartSync);
bitmap_kprobe!(md_end_sync, RecordKind::EndSync);
bitmap_kprobe!(md_close_sync, RecordKind::CloseSync);
bitmap_kprobe!(md_cond_end_sync, RecordKind::CondEndSync);
bitmap_kprobe!(md_unplug, RecordKind::Unplug);

/// md structure offsets (from md_mod's BTF, set by userspace).
#[map]
static MD_LAYOUT: Array<MdLayout> = Array::with_max_entries(1, 0);

/// End-write. With [`MdLayout`] it also reports `mddev->degraded` at the call, as `dev = 1 +
/// degraded`: ≥6.14 kernels (and backports) make a chunk NEEDED when the write ends while the
/// array is degraded, and userspace's view of sysfs can lag behind a member's failure.
#[kprobe]
pub fn md_end_write(ctx: ProbeContext) -> u32 {
    let args = probe_args(&ctx);
    let mut dev = 0;
    if let Some(l) = MD_LAYOUT.get(0)
        && l.valid != 0
    {
        let mddev: u64 = if l.first_arg_is_mddev != 0 {
            args[0]
        } else {
            read_at(args[0], l.bitmap_mddev)
        };
        if mddev != 0 {
            let degraded: u32 = read_at(mddev, l.mddev_degraded);
            dev = degraded.saturating_add(1);
        }
    }
    emit(RecordKind::EndWrite, dev, args);
    0
}

/// A bitmap daemon call in progress, for its return probe.
#[derive(Clone, Copy)]
#[repr(C)]
struct DaemonCall {
    /// The call's `struct mddev *`.
    mddev: u64,
    /// `bitmap->daemon_lastrun` at entry (valid when `held` is 1).
    lastrun: u64,
    /// The entry's stamp (ts_ns, jiffies, cpu).
    ts_ns: u64,
    jiffies: u64,
    cpu: u32,
    /// 1: the entry record was held back (the pass was not due at entry).
    held: u32,
}

/// Each thread's bitmap daemon call in progress (the daemon can sleep on the bitmap mutex and
/// return on another CPU).
#[map]
static DAEMON_CALL: HashMap<u32, DaemonCall> = HashMap::with_max_entries(1024, 0);

/// Entry of the bitmap daemon. It reads `jiffies` itself only after taking
/// `bitmap_info.mutex`, so whether a pass ran is reported by [`md_daemon_work_ret`]. With
/// `daemon_passes_only` (see `RecordKind::DaemonWork`), a call whose pass is not due at entry by
/// the kernel's own test (`md_bitmap_daemon_work()`: `time_before(jiffies,
/// bitmap->daemon_lastrun + mddev->bitmap_info.daemon_sleep)`) holds its record back: on 6.1
/// raid1d calls the daemon from md_check_recovery() after every write, and almost every call
/// returns there.
#[kprobe]
pub fn md_daemon_work(ctx: ProbeContext) -> u32 {
    let args = probe_args(&ctx);
    let tid = bpf_get_current_pid_tgid() as u32;
    let at = now();
    let mut call = DaemonCall {
        mddev: args[0],
        lastrun: 0,
        ts_ns: at.0,
        jiffies: at.1,
        cpu: at.2,
        held: 0,
    };
    if let Some(l) = MD_LAYOUT.get(0)
        && l.valid != 0
        && l.daemon_passes_only != 0
    {
        let bitmap: u64 = read_at(args[0], l.mddev_bitmap);
        if bitmap != 0 {
            let lastrun: u64 = read_at(bitmap, l.bitmap_daemon_lastrun);
            let sleep: u64 = read_at(args[0], l.mddev_daemon_sleep);
            // time_before(a, b): (long)(a - b) < 0.
            if (at.1.wrapping_sub(lastrun.wrapping_add(sleep)) as i64) < 0 {
                call.lastrun = lastrun;
                call.held = 1;
            }
        }
    }
    let _ = DAEMON_CALL.insert(&tid, &call, 0);
    if call.held == 0 {
        emit_at(RecordKind::DaemonWork, 0, args, at);
    }
    0
}

/// Return of the bitmap daemon: the kernel's `bitmap->daemon_lastrun`, which the daemon sets to
/// `jiffies` exactly when its `time_before(jiffies, daemon_lastrun + daemon_sleep)` test passed.
/// A held-back entry is emitted now (with its entry stamp) if the pass ran after all; if
/// `daemon_lastrun` is unchanged, nothing is.
#[kretprobe]
pub fn md_daemon_work_ret(_ctx: RetProbeContext) -> u32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: the value is copied out at once and never held across helper calls.
    let Some(call) = (unsafe { DAEMON_CALL.get(&tid) }).copied() else {
        return 0;
    };
    let _ = DAEMON_CALL.remove(&tid);
    let mddev = call.mddev;
    let mut args = [mddev, 0, 0, 0, 0];
    if let Some(l) = MD_LAYOUT.get(0)
        && l.valid != 0
    {
        let bitmap: u64 = read_at(mddev, l.mddev_bitmap);
        if bitmap != 0 {
            args[1] = read_at(bitmap, l.bitmap_daemon_lastrun);
            args[2] = 1;
        }
    }
    if call.held != 0 {
        if args[2] == 1 && args[1] == call.lastrun {
            bump(Counter::IdleDaemon);
            return 0;
        }
        emit_at(
            RecordKind::DaemonWork,
            0,
            [mddev, 0, 0, 0, 0],
            (call.ts_ns, call.jiffies, call.cpu),
        );
    }
    emit(RecordKind::DaemonDone, 0, args);
    0
}

/// Return of the md personality's thread function (`raid1d` / `raid10d` / `raid5d`), attached
/// only by `md-bitmap record`: `md_thread()` then sleeps until woken or until
/// `thread->timeout` has passed, counted from this instant (the bitmap daemon's timer).
#[kretprobe]
pub fn md_thread_run_ret(_ctx: RetProbeContext) -> u32 {
    emit(RecordKind::ThreadRunEnd, 0, [0; 5]);
    0
}

/// Entry of the bitmap superblock update; with [`MdLayout`] it also reports `mddev->events`,
/// which `md_update_sb()` has just advanced (the end-write rule compares `events_cleared` with
/// it and sets `need_sync`).
#[kprobe]
pub fn md_update_sb(ctx: ProbeContext) -> u32 {
    let mut args = probe_args(&ctx);
    args[1] = 0;
    args[2] = 0;
    if let Some(l) = MD_LAYOUT.get(0)
        && l.valid != 0
    {
        let mddev: u64 = read_at(args[0], l.bitmap_mddev);
        if mddev != 0 {
            args[1] = read_at(mddev, l.mddev_events);
            args[2] = 1;
        }
    }
    emit(RecordKind::UpdateSb, 0, args);
    0
}

/// Where `struct bio` keeps what the block programs read (from vmlinux BTF, set by userspace).
#[map]
static BIO_LAYOUT: Array<BioLayout> = Array::with_max_entries(1, 0);

/// Per major number (`dev >> 20`, 12 bits): non-zero when some watched device has it. Userspace
/// keeps it in step with [`WATCHED_DEVS`]. An array lookup is inlined by the verifier (no helper
/// call), so the bios of other disks (md's members among them, when their major differs from
/// the array's) are turned away before the hash lookup.
#[map]
static WATCHED_MAJORS: Array<u8> = Array::with_max_entries(4096, 0);

#[inline(always)]
fn watched(dev: u32) -> bool {
    match WATCHED_MAJORS.get(dev >> 20) {
        Some(n) if *n != 0 => {}
        _ => return false,
    }
    // SAFETY: the value is only tested for presence and never held across helper calls.
    unsafe { WATCHED_DEVS.get(&dev).is_some() }
}

#[inline(always)]
fn read_at<T: Copy + Default>(base: u64, off: u32) -> T {
    // SAFETY: bpf_probe_read_kernel tolerates any address; a fault yields the default value.
    unsafe { bpf_probe_read_kernel_t::<T>((base + off as u64) as *const T).unwrap_or_default() }
}

/// The device (kernel `dev_t`) a bio is on: two reads, so that bios of devices nobody watches
/// (the members below md, every other disk) cost no more than this and a map lookup.
///
/// Measured (kernel_overhead, `bpf-stats`): reading `struct bio`'s fields with one 64-byte
/// `bpf_probe_read_kernel` instead of one read per field made each block program run slower,
/// not faster (6.1 under -icount: 1040 ns per run against 580), so each field is read alone.
#[inline(always)]
fn bio_dev(l: &BioLayout, bio: u64) -> u32 {
    let bdev: u64 = read_at(bio, l.bi_bdev);
    read_at(bdev, l.bd_dev)
}

/// (sector, sectors, opf, status) of a bio.
#[inline(always)]
fn bio_facts(l: &BioLayout, bio: u64) -> (u64, u64, u64, u64) {
    let sector: u64 = read_at(bio, l.bi_sector);
    let size: u32 = read_at(bio, l.bi_size);
    let opf: u32 = read_at(bio, l.bi_opf);
    let status: u8 = read_at(bio, l.bi_status);
    (sector, (size >> 9) as u64, opf as u64, status as u64)
}

// Raw tracepoints, not classic ones: a classic tracepoint program holds the per-CPU
// `bpf_prog_active` guard while it runs, so md's end-write kprobe, which fires in interrupt
// context, would be skipped whenever it interrupts one (seen under emulation). Raw tracepoint
// programs only guard against themselves.

/// `block_bio_queue(struct bio *bio)`.
#[raw_tracepoint(tracepoint = "block_bio_queue")]
pub fn block_bio_queue(ctx: RawTracePointContext) -> u32 {
    let Some(l) = BIO_LAYOUT.get(0) else { return 0 };
    if l.bi_bdev == 0 && l.bd_dev == 0 {
        return 0;
    }
    let bio: u64 = ctx.arg(0);
    let dev = bio_dev(l, bio);
    if !watched(dev) {
        bump(Counter::Filtered);
        return 0;
    }
    let (sector, sectors, opf, _) = bio_facts(l, bio);
    emit(RecordKind::BioQueue, dev, [sector, sectors, opf, 0, bio]);
    0
}

/// `block_bio_complete(struct request_queue *q, struct bio *bio)`.
#[raw_tracepoint(tracepoint = "block_bio_complete")]
pub fn block_bio_complete(ctx: RawTracePointContext) -> u32 {
    let Some(l) = BIO_LAYOUT.get(0) else { return 0 };
    if l.bi_bdev == 0 && l.bd_dev == 0 {
        return 0;
    }
    let bio: u64 = ctx.arg(1);
    let dev = bio_dev(l, bio);
    if !watched(dev) {
        bump(Counter::Filtered);
        return 0;
    }
    let (sector, sectors, opf, status) = bio_facts(l, bio);
    emit(
        RecordKind::BioComplete,
        dev,
        [sector, sectors, opf, status, bio],
    );
    0
}

/// `block_bio_remap(struct bio *bio, dev_t dev, sector_t from)`: `bio` already points at the
/// member; `dev`/`from` are the md array and its sector.
#[raw_tracepoint(tracepoint = "block_bio_remap")]
pub fn block_bio_remap(ctx: RawTracePointContext) -> u32 {
    let Some(l) = BIO_LAYOUT.get(0) else { return 0 };
    if l.bi_bdev == 0 && l.bd_dev == 0 {
        return 0;
    }
    let old_dev = ctx.arg::<u64>(1) as u32;
    if !watched(old_dev) {
        return 0;
    }
    let from: u64 = ctx.arg(2);
    let bio: u64 = ctx.arg(0);
    let member = bio_dev(l, bio);
    let (member_sector, sectors, opf, _) = bio_facts(l, bio);
    emit(
        RecordKind::BioRemap,
        old_dev,
        [from, sectors, opf, member as u64, member_sector],
    );
    0
}

// BTF tracepoints (`tp_btf`): the same two events, the same records, but `struct bio` is read by
// plain loads the verifier checks against vmlinux BTF (turned into fault-tolerant loads by the
// JIT, BPF_PROBE_MEM) instead of `bpf_probe_read_kernel` helper calls: a member bio, which is
// only to be filtered out, costs two loads and an array lookup. The offsets are read-only
// globals set by userspace at load time (frozen `.rodata`), so the verifier knows them as
// constants, as it requires for loads through BTF pointers. Like raw tracepoints, these programs
// run under `bpf_trace_run*` and only guard against themselves. Userspace attaches these when
// they load and falls back to the raw tracepoint programs above when not.

/// `struct bio` offsets for the BTF tracepoint programs (set by userspace before load).
#[unsafe(no_mangle)]
static BTF_BIO: BioLayout = BioLayout {
    bi_bdev: 0,
    bi_opf: 0,
    bi_sector: 0,
    bi_size: 0,
    bi_status: 0,
    bd_dev: 0,
};

#[inline(always)]
fn btf_off(field: &u32) -> u64 {
    // SAFETY: a read of this program's own read-only global.
    unsafe { core::ptr::read_volatile(field) as u64 }
}

/// A load through a BTF-typed kernel pointer (`base` from the tracepoint's arguments or a load
/// from one).
#[inline(always)]
fn btf_load<T: Copy>(base: u64, off: u64) -> T {
    // SAFETY: the verifier checks the access against the BTF type of `base` at this (constant)
    // offset; the JIT makes it a load that yields zero instead of faulting.
    unsafe { core::ptr::read_volatile((base + off) as *const T) }
}

#[inline(always)]
fn btf_bio_dev(bio: u64) -> u32 {
    let bdev: u64 = btf_load(bio, btf_off(&BTF_BIO.bi_bdev));
    btf_load(bdev, btf_off(&BTF_BIO.bd_dev))
}

#[inline(always)]
fn btf_bio_facts(bio: u64) -> (u64, u64, u64, u64) {
    let sector: u64 = btf_load(bio, btf_off(&BTF_BIO.bi_sector));
    let size: u32 = btf_load(bio, btf_off(&BTF_BIO.bi_size));
    let opf: u32 = btf_load(bio, btf_off(&BTF_BIO.bi_opf));
    let status: u8 = btf_load(bio, btf_off(&BTF_BIO.bi_status));
    (sector, (size >> 9) as u64, opf as u64, status as u64)
}

/// [`block_bio_queue`] as a BTF tracepoint.
#[btf_tracepoint(function = "block_bio_queue")]
pub fn btf_bio_queue(ctx: BtfTracePointContext) -> u32 {
    if btf_off(&BTF_BIO.bi_bdev) == 0 && btf_off(&BTF_BIO.bd_dev) == 0 {
        return 0;
    }
    let bio: u64 = ctx.arg(0);
    let dev = btf_bio_dev(bio);
    if !watched(dev) {
        bump(Counter::Filtered);
        return 0;
    }
    let (sector, sectors, opf, _) = btf_bio_facts(bio);
    emit(RecordKind::BioQueue, dev, [sector, sectors, opf, 0, bio]);
    0
}

/// [`block_bio_complete`] as a BTF tracepoint.
#[btf_tracepoint(function = "block_bio_complete")]
pub fn btf_bio_complete(ctx: BtfTracePointContext) -> u32 {
    if btf_off(&BTF_BIO.bi_bdev) == 0 && btf_off(&BTF_BIO.bd_dev) == 0 {
        return 0;
    }
    let bio: u64 = ctx.arg(1);
    let dev = btf_bio_dev(bio);
    if !watched(dev) {
        bump(Counter::Filtered);
        return 0;
    }
    let (sector, sectors, opf, status) = btf_bio_facts(bio);
    emit(
        RecordKind::BioComplete,
        dev,
        [sector, sectors, opf, status, bio],
    );
    0
}

/// The answer to the last kernel-memory read.
#[map]
static PEEK_BUF: Array<PeekReply> = Array::with_max_entries(1, 0);

/// Copies kernel memory (md's bitmap counters) for md-bitmap's oracle: arguments (kernel
/// address, bytes, sequence number). Never attached: userspace runs it on demand with
/// `BPF_PROG_TEST_RUN`, so it costs nothing to anyone else (where a syscall tracepoint, the
/// trigger it had before, put every system call of every process on the tracing slow path).
#[raw_tracepoint(tracepoint = "peek")]
pub fn peek(ctx: RawTracePointContext) -> u32 {
    let addr: u64 = ctx.arg(0);
    let len: u64 = ctx.arg(1);
    let seq: u64 = ctx.arg(2);
    let Some(reply) = PEEK_BUF.get_ptr_mut(0) else {
        return 1;
    };
    if len > PEEK_MAX as u64 {
        return 1;
    }
    // SAFETY: `reply` points at this map's only value, PEEK_MAX bytes of `data`; `len` is checked
    // against PEEK_MAX above; bpf_probe_read_kernel tolerates any source address (it faults safely).
    unsafe {
        let ret = bpf_probe_read_kernel(
            (*reply).data.as_mut_ptr().cast(),
            len as u32,
            addr as *const core::ffi::c_void,
        );
        (*reply).ret = ret;
        (*reply).ts_ns = bpf_ktime_get_ns();
        (*reply).seq = seq;
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
