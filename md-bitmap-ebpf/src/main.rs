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
        generated::bpf_probe_read_kernel,
    },
    macros::{kprobe, map, tracepoint},
    maps::{Array, HashMap, PerCpuArray, RingBuf},
    programs::{ProbeContext, TracePointContext},
};
use md_bitmap_common::{
    COUNTER_SLOTS, Counter, PEEK_MAX, PeekReply, PeekRequest, RING_BYTES, Record, RecordKind,
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

#[inline(always)]
fn emit(kind: RecordKind, dev: u32, args: [u64; 5]) {
    match EVENTS.reserve::<Record>(0) {
        Some(mut entry) => {
            entry.write(Record {
                kind: kind as u32,
                // SAFETY: plain BPF helper calls with no arguments.
                cpu: unsafe { bpf_get_smp_processor_id() },
                ts_ns: unsafe { bpf_ktime_get_ns() },
                dev,
                tid: bpf_get_current_pid_tgid() as u32,
                // SAFETY: plain BPF helper call with no arguments.
                jiffies: unsafe { bpf_jiffies64() },
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
bitmap_kprobe!(md_end_write, RecordKind::EndWrite);
bitmap_kprobe!(md_start_sync, RecordKind::StartSync);
bitmap_kprobe!(md_end_sync, RecordKind::EndSync);
bitmap_kprobe!(md_close_sync, RecordKind::CloseSync);
bitmap_kprobe!(md_cond_end_sync, RecordKind::CondEndSync);
bitmap_kprobe!(md_daemon_work, RecordKind::DaemonWork);
bitmap_kprobe!(md_unplug, RecordKind::Unplug);

// Offsets in the block tracepoints' records, identical on 6.1 and 6.12 and checked against
// /sys/kernel/tracing/events/block/*/format by the user side before attaching.
const TP_DEV: usize = 8;
const TP_SECTOR: usize = 16;
const TP_NR_SECTOR: usize = 24;
/// block_bio_queue: `char rwbs[8]` at 28. block_bio_complete: `int error` at 28, rwbs at 32.
const TP_QUEUE_RWBS: usize = 28;
const TP_COMPLETE_ERROR: usize = 28;
const TP_COMPLETE_RWBS: usize = 32;
/// block_bio_remap: `dev_t old_dev` at 28, `sector_t old_sector` at 32, rwbs at 40.
const TP_REMAP_OLD_DEV: usize = 28;
const TP_REMAP_OLD_SECTOR: usize = 32;
const TP_REMAP_RWBS: usize = 40;

#[inline(always)]
fn watched(dev: u32) -> bool {
    // SAFETY: the value is only tested for presence and never held across helper calls.
    unsafe { WATCHED_DEVS.get(&dev).is_some() }
}

#[inline(always)]
fn read_u32(ctx: &TracePointContext, off: usize) -> u32 {
    // SAFETY: `off` is a fixed offset inside the tracepoint's record (checked by userspace).
    unsafe { ctx.read_at::<u32>(off).unwrap_or(0) }
}

#[inline(always)]
fn read_u64(ctx: &TracePointContext, off: usize) -> u64 {
    // SAFETY: as for `read_u32`.
    unsafe { ctx.read_at::<u64>(off).unwrap_or(0) }
}

#[tracepoint]
pub fn block_bio_queue(ctx: TracePointContext) -> u32 {
    let dev = read_u32(&ctx, TP_DEV);
    if !watched(dev) {
        bump(Counter::Filtered);
        return 0;
    }
    let args = [
        read_u64(&ctx, TP_SECTOR),
        read_u32(&ctx, TP_NR_SECTOR) as u64,
        // rwbs is read as one u64: indexing it with a variable fails the verifier.
        read_u64(&ctx, TP_QUEUE_RWBS),
        0,
        0,
    ];
    emit(RecordKind::BioQueue, dev, args);
    0
}

#[tracepoint]
pub fn block_bio_complete(ctx: TracePointContext) -> u32 {
    let dev = read_u32(&ctx, TP_DEV);
    if !watched(dev) {
        bump(Counter::Filtered);
        return 0;
    }
    let args = [
        read_u64(&ctx, TP_SECTOR),
        read_u32(&ctx, TP_NR_SECTOR) as u64,
        read_u64(&ctx, TP_COMPLETE_RWBS),
        read_u32(&ctx, TP_COMPLETE_ERROR) as i32 as i64 as u64,
        0,
    ];
    emit(RecordKind::BioComplete, dev, args);
    0
}

#[tracepoint]
pub fn block_bio_remap(ctx: TracePointContext) -> u32 {
    // The remap's `old_dev` is the md array, `dev` the member the bio goes to.
    let old_dev = read_u32(&ctx, TP_REMAP_OLD_DEV);
    if !watched(old_dev) {
        return 0;
    }
    let args = [
        read_u64(&ctx, TP_REMAP_OLD_SECTOR),
        read_u32(&ctx, TP_NR_SECTOR) as u64,
        read_u64(&ctx, TP_REMAP_RWBS),
        read_u32(&ctx, TP_DEV) as u64,
        read_u64(&ctx, TP_SECTOR),
    ];
    emit(RecordKind::BioRemap, old_dev, args);
    0
}

/// The pending kernel-memory read (see [`PeekRequest`]).
#[map]
static PEEK_REQ: Array<PeekRequest> = Array::with_max_entries(1, 0);

/// The answer to the last kernel-memory read.
#[map]
static PEEK_BUF: Array<PeekReply> = Array::with_max_entries(1, 0);

/// Serves a [`PeekRequest`] when the requesting process calls `getppid()`: copies kernel memory
/// (md's bitmap counters) for md-bitmap's oracle. Other processes' calls return at once.
#[tracepoint]
pub fn peek(_ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let Some(req) = PEEK_REQ.get(0) else {
        return 0;
    };
    if req.tgid != tgid || req.tgid == 0 {
        return 0;
    }
    let Some(reply) = PEEK_BUF.get_ptr_mut(0) else {
        return 0;
    };
    let len = req.len as usize;
    if len > PEEK_MAX {
        return 0;
    }
    // SAFETY: `reply` points at this map's only value, PEEK_MAX bytes of `data`; `len` is checked
    // against PEEK_MAX above; bpf_probe_read_kernel tolerates any source address (it faults safely).
    unsafe {
        let ret = bpf_probe_read_kernel(
            (*reply).data.as_mut_ptr().cast(),
            len as u32,
            req.addr as *const core::ffi::c_void,
        );
        (*reply).ret = ret;
        (*reply).seq = req.seq;
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
