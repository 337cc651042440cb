//! Replaying a write trace through the engine under one bitmap chunk size.
//!
//! The trace's array writes go through [`ArrayMap::write_calls`] once (the mapping does not
//! depend on the bitmap chunk size) into a time-ordered list of kernel calls
//! ([`ReplayInput`]); each chunk size then runs that list through a fresh [`Bitmap`]:
//!
//! * a write's start-writes, then `unplug` (the personality writes DIRTY bitmap pages before
//!   the data: raid1 `flush_bio_list()`/`raid1_prepare_flush_writes()`, raid10 likewise,
//!   raid5 `raid5d()`/`handle_active_stripes()` → `md_bitmap_unplug()`) at the recorded unplug
//!   calls (so concurrent writes share a page write as in the kernel), or right after the
//!   start-writes if the trace has none;
//! * its end-writes at queue time + latency (`close_write()` / `handle_stripe_clean_event()`;
//!   a write whose completion was not recorded gets the median recorded latency);
//! * the bitmap superblock updates the kernel made (`md_bitmap_update_sb()`, recorded), with
//!   `mddev->events` following `md_update_sb()` for clean/dirty transitions (up when the array
//!   goes dirty, back down when it goes clean), which makes end-writes set `need_sync` and the
//!   daemon write `events_cleared` as the kernel does;
//! * the daemon (`md_bitmap_daemon_work()` / `bitmap_daemon_work()`), run from the md thread:
//!   at every recorded wake-up of the thread into the daemon (their jiffies decide whether
//!   `daemon_sleep` has passed, as the kernel's `time_before()` does). For the chunk size in use
//!   these are all the thread's wake-ups: the kernel's thread had that bitmap, and each of its
//!   runs calls the daemon first (`md_check_recovery()`), so none is added. Another chunk size
//!   can leave the bitmap with work where the kernel's was all clean (its thread then slept
//!   with `MAX_SCHEDULE_TIMEOUT`), so there the thread's own timer is added when no recorded
//!   wake-up comes: `md_thread()` sleeps `thread->timeout` (`daemon_sleep` while the bitmap is
//!   not all clean) from the end of its run, which the trace records (the thread function's
//!   return, [`TraceEvent::ThreadSleep`]); no timer runs while the thread is in a run (it can
//!   block in `md_check_recovery()` for seconds after the daemon call). Traces without run ends
//!   (version 1) time the timer from the daemon call. A trace without daemon events (or
//!   [`DaemonMode::Modelled`]) wakes the thread at every write and at its timeout, in
//!   nanoseconds.
use std::collections::HashMap;

use anyhow::{Context, Result, bail};

use crate::engine::mapping::{Accounting, ArrayGeometry, ArrayMap, CallOptions};
use crate::engine::{
    Bitmap, BitmapConfig, BitmapGeometry, COUNTER_MAX, KERNEL_PAGE_SIZE, KernelVariant,
};
use crate::trace::{Trace, TraceEvent, TraceHeader};

/// Size of the kernel's `struct bitmap_page` (a `char *map` and two 32-bit bitfield words)
/// on 64-bit kernels: the per-counter-page array `md_bitmap_resize()` allocates up front.
pub const BITMAP_PAGE_STRUCT_BYTES: u64 = 16;

/// How the md thread's wake-ups into the daemon are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DaemonMode {
    /// The recorded wake-ups (jiffies); for sizes other than the one in use also the thread's
    /// timer, counted from its recorded run ends. Falls back to `modelled` when the trace has
    /// no wake-ups.
    Recorded,
    /// Wake-ups at every write and at the thread's timeout (nanoseconds).
    Modelled,
}

/// One call in the replay, in time order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Start-writes of calls `calls[a..b]`, then unplug.
    Start { a: u32, b: u32 },
    /// End-writes of calls `calls[a..b]`.
    End { a: u32, b: u32 },
    /// A recorded wake-up into the daemon, at these jiffies.
    Daemon { jiffies: u64 },
    /// A recorded bitmap superblock update.
    UpdateSb,
    /// A recorded bitmap unplug.
    Unplug,
    /// The md thread went back to sleep (its timeout counts from here).
    ThreadSleep,
}

/// A trace mapped to kernel calls, shared by every chunk size.
#[derive(Clone, Debug)]
pub struct ReplayInput {
    /// The trace's header.
    pub header: TraceHeader,
    pub(crate) variant: KernelVariant,
    /// `(offset, sectors)` of every start-/end-write call.
    pub(crate) calls: Vec<(u64, u32)>,
    /// `(t_ns, step)`, sorted by time (stable: a write's start precedes its end).
    pub(crate) steps: Vec<(u64, Step)>,
    /// Array writes replayed.
    pub writes: u64,
    /// Writes whose latency was not recorded.
    pub writes_without_latency: u64,
    /// First and last event time, ns.
    pub span_ns: (u64, u64),
    /// Jiffies per second, from the recorded daemon events (`None` without them).
    pub hz: Option<u64>,
    /// Daemon sleep in ns.
    pub sleep_ns: u64,
    /// Daemon sleep in jiffies (if `hz` is known).
    pub sleep_jiffies: Option<u64>,
    /// Initial on-disk dirty ranges, in sectors of bitmap space.
    pub(crate) initial_dirty_sectors: Vec<(u64, u64)>,
    /// Sectors the bitmap covers.
    pub sync_sectors: u64,
    /// The trace has the kernel's unplug calls (else each write unplugs at once).
    pub has_unplug: bool,
    /// The trace has the md thread's run ends ([`TraceEvent::ThreadSleep`]).
    pub has_thread_sleep: bool,
    /// Most start-/end-write calls in flight at once (a bound on any counter's writes in
    /// flight, which decides whether [`replay`] may split calls into single chunks).
    pub(crate) max_calls_in_flight: u64,
    /// Last bitmap sector any call touches (`None` without calls of a sector or more).
    pub(crate) last_call_sector: Option<u64>,
}

/// The engine variant named in a trace header.
pub fn variant_from_name(s: &str) -> Result<KernelVariant> {
    Ok(match s {
        "6.1" => KernelVariant::V6_1,
        "6.6-backport" => KernelVariant::V6_6_BACKPORT,
        "6.12" => KernelVariant::V6_12,
        "6.14" => KernelVariant::V6_14,
        _ => bail!("unknown kernel variant {s:?} in the trace header"),
    })
}

/// The name [`variant_from_name`] reads.
pub fn variant_name(v: KernelVariant) -> &'static str {
    if v == KernelVariant::V6_1 {
        "6.1"
    } else if v == KernelVariant::V6_6_BACKPORT {
        "6.6-backport"
    } else if v == KernelVariant::V6_12 {
        "6.12"
    } else {
        "6.14"
    }
}

/// Jiffies per second estimated from `(ns, jiffies)` pairs: the nearest usual `CONFIG_HZ`.
fn estimate_hz(pairs: &[(u64, u64)]) -> Option<u64> {
    let (&(t0, j0), &(t1, j1)) = (pairs.first()?, pairs.last()?);
    let dt = t1.checked_sub(t0)?;
    if dt < 2_000_000_000 {
        return None;
    }
    let rate = j1.wrapping_sub(j0) as f64 * 1e9 / dt as f64;
    [100u64, 250, 300, 1000]
        .into_iter()
        .min_by(|a, b| {
            (*a as f64 - rate)
                .abs()
                .partial_cmp(&(*b as f64 - rate).abs())
                .expect("finite")
        })
        .filter(|hz| (*hz as f64 - rate).abs() < *hz as f64 * 0.1)
}

/// `steps.sort_by_key(|s| s.0)` (a stable sort by time), done as a merge: the steps other
/// than end-writes come in trace order (already sorted when the trace is), the end-writes
/// (queue time + latency) nearly so; each list is stable-sorted on its own (cheap on sorted
/// runs), then they are merged by (time, push order), which is the stable order.
pub(crate) fn sort_steps(steps: Vec<(u64, Step)>) -> Vec<(u64, Step)> {
    let n = steps.len();
    let (mut ends, mut rest): (Vec<_>, Vec<_>) = steps
        .into_iter()
        .enumerate()
        .map(|(i, (t, s))| (t, i, s))
        .partition(|x| matches!(x.2, Step::End { .. }));
    if !rest.is_sorted_by_key(|x| x.0) {
        rest.sort_by_key(|x| x.0);
    }
    if !ends.is_sorted_by_key(|x| x.0) {
        ends.sort_by_key(|x| x.0);
    }
    let mut out = Vec::with_capacity(n);
    let (mut r, mut e) = (rest.into_iter().peekable(), ends.into_iter().peekable());
    loop {
        let take_rest = match (r.peek(), e.peek()) {
            (Some(a), Some(b)) => (a.0, a.1) < (b.0, b.1),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let x = if take_rest { r.next() } else { e.next() }.expect("peeked");
        out.push((x.0, x.2));
    }
    out
}

impl ReplayInput {
    /// Maps every write of `trace` to the kernel's bitmap calls.
    pub fn new(trace: &Trace) -> Result<Self> {
        let h = &trace.header;
        let geo = ArrayGeometry::from_sysfs(
            &h.level,
            h.layout,
            h.raid_disks,
            h.chunk_size_bytes,
            h.component_size_kib,
        )
        .map_err(|e| anyhow::anyhow!("trace geometry: {e}"))?;
        let map = ArrayMap::new(geo).map_err(|e| anyhow::anyhow!("trace geometry: {e}"))?;
        let variant = variant_from_name(&h.kernel_variant)?;
        let accounting = match h.accounting.as_str() {
            "per-bio" => Accounting::PerBio,
            "per-stripe" => Accounting::PerStripe,
            a => bail!("unknown accounting {a:?} in the trace header"),
        };
        let opts = CallOptions::new(accounting);
        if h.bitmap_sync_sectors == 0 {
            bail!("the trace header has no bitmap size");
        }
        let mut lat: Vec<u64> = trace
            .events
            .iter()
            .filter_map(|e| match e {
                TraceEvent::Write { latency_ns, .. } => *latency_ns,
                _ => None,
            })
            .collect();
        lat.sort_unstable();
        let default_latency = lat.get(lat.len() / 2).copied().unwrap_or(1_000_000);
        let mut calls = Vec::new();
        let mut steps = Vec::with_capacity(trace.events.len() * 2);
        let mut daemon_pairs = Vec::new();
        let (mut writes, mut no_lat) = (0u64, 0u64);
        let mut has_unplug = false;
        let mut has_thread_sleep = false;
        for ev in &trace.events {
            match *ev {
                TraceEvent::Write {
                    t_ns,
                    sector,
                    sectors,
                    latency_ns,
                } => {
                    let a = calls.len() as u32;
                    for c in map.write_calls(sector, sectors, &opts) {
                        let s = u32::try_from(c.sectors).context("a write call over 2 TiB")?;
                        calls.push((c.offset, s));
                    }
                    let b = calls.len() as u32;
                    writes += 1;
                    if a == b {
                        continue;
                    }
                    let l = latency_ns.unwrap_or_else(|| {
                        no_lat += 1;
                        default_latency
                    });
                    steps.push((t_ns, Step::Start { a, b }));
                    steps.push((t_ns.saturating_add(l), Step::End { a, b }));
                }
                TraceEvent::Daemon { t_ns, jiffies } => {
                    daemon_pairs.push((t_ns, jiffies));
                    steps.push((t_ns, Step::Daemon { jiffies }));
                }
                TraceEvent::UpdateSb { t_ns } => steps.push((t_ns, Step::UpdateSb)),
                TraceEvent::Unplug { t_ns } => {
                    has_unplug = true;
                    steps.push((t_ns, Step::Unplug));
                }
                TraceEvent::ThreadSleep { t_ns } => {
                    has_thread_sleep = true;
                    steps.push((t_ns, Step::ThreadSleep));
                }
            }
        }
        let steps = sort_steps(steps);
        let (mut in_flight, mut max_calls_in_flight) = (0u64, 0u64);
        for &(_, step) in &steps {
            match step {
                Step::Start { a, b } => {
                    in_flight += u64::from(b - a);
                    max_calls_in_flight = max_calls_in_flight.max(in_flight);
                }
                Step::End { a, b } => in_flight = in_flight.saturating_sub(u64::from(b - a)),
                _ => {}
            }
        }
        let last_call_sector = calls
            .iter()
            .filter(|c| c.1 > 0)
            .map(|&(off, n)| off + u64::from(n) - 1)
            .max();
        let span_ns = (
            trace.events.first().map_or(0, |e| e.t_ns()),
            trace.events.last().map_or(0, |e| e.t_ns()),
        );
        let hz = estimate_hz(&daemon_pairs).or(if daemon_pairs.is_empty() {
            None
        } else {
            // Too short to measure: Debian's (and most distributions') CONFIG_HZ.
            Some(250)
        });
        let sleep_ns = (h.daemon_sleep_secs * 1e9).round() as u64;
        let sleep_jiffies = hz.map(|hz| (h.daemon_sleep_secs * hz as f64).round() as u64);
        let cs = h.bitmap_chunk_bytes / 512;
        let initial_dirty_sectors = h
            .initial_dirty
            .iter()
            .map(|&(a, b)| (a * cs, (b * cs).min(h.bitmap_sync_sectors)))
            .collect();
        Ok(Self {
            header: h.clone(),
            variant,
            calls,
            steps,
            writes,
            writes_without_latency: no_lat,
            span_ns,
            hz,
            sleep_ns: sleep_ns.max(1),
            sleep_jiffies: sleep_jiffies.map(|s| s.max(1)),
            initial_dirty_sectors,
            sync_sectors: h.bitmap_sync_sectors,
            has_unplug,
            has_thread_sleep,
            max_calls_in_flight,
            last_call_sector,
        })
    }

    /// Drops every call at or after `t_ns` (CLOCK_MONOTONIC): the replay then ends in the
    /// state the kernel had at that instant (writes queued before it and completing after it
    /// stay in flight).
    pub fn until(mut self, t_ns: u64) -> Self {
        self.steps.retain(|s| s.0 < t_ns);
        self.span_ns.1 = self.span_ns.1.min(t_ns);
        self.writes = self
            .steps
            .iter()
            .filter(|s| matches!(s.1, Step::Start { .. }))
            .count() as u64;
        self
    }

    /// The bitmap geometry under `chunk_bytes` chunks over the trace's bitmap space.
    pub(crate) fn geometry(&self, chunk_bytes: u64) -> Result<BitmapGeometry> {
        BitmapGeometry::new(chunk_bytes, self.sync_sectors)
            .map_err(|e| anyhow::anyhow!("chunk size {chunk_bytes}: {e:?}"))
    }

    /// Whether the trace carries the md thread's wake-ups into the daemon.
    pub fn has_daemon_events(&self) -> bool {
        self.sleep_jiffies.is_some()
    }
}

/// What one chunk size did over the trace.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SizeResult {
    /// Bitmap chunk size, bytes.
    pub chunk_bytes: u64,
    /// The size in use when the trace was recorded.
    pub in_use: bool,
    /// Bitmap chunks (bits).
    pub chunks: u64,
    /// Bits set by start-write (a clean chunk written): each is a synchronous bitmap update
    /// that the data write waits for.
    pub bits_set: u64,
    /// Unplugs that wrote pages (synchronous waits of the writer).
    pub sync_waits: u64,
    /// Bitmap page writes for setting and clearing bits (unplug + daemon), per member.
    pub page_writes: u64,
    /// All bitmap page writes, superblock updates included, per member.
    pub page_writes_total: u64,
    /// `page_writes_total` per second of trace.
    pub page_writes_per_sec: f64,
    /// Dirty bytes on disk (chunks × chunk size, bitmap space), time-weighted mean.
    pub dirty_mean_bytes: f64,
    /// 99th percentile (by time).
    pub dirty_p99_bytes: u64,
    /// Maximum.
    pub dirty_max_bytes: u64,
    /// Predicted bytes a crash at a random moment would resync (mean dirty bytes).
    pub resync_mean_bytes: f64,
    /// Predicted resync bytes for a crash at the worst moment.
    pub resync_max_bytes: u64,
    /// Predicted resync seconds (mean).
    pub resync_mean_secs: f64,
    /// Predicted resync seconds (worst).
    pub resync_max_secs: f64,
    /// Kernel memory the bitmap always holds: the file pages (`storage.filemap`) and the
    /// `struct bitmap_page` array.
    pub memory_static_bytes: u64,
    /// Plus the most counter pages allocated at once.
    pub memory_peak_bytes: u64,
    /// Daemon passes that ran.
    pub daemon_passes: u64,
    /// On-disk dirty chunk ranges at the end of the trace.
    pub end_dirty: Vec<(u64, u64)>,
    /// Engine anomalies (unbalanced calls), all zero for a consistent trace.
    pub anomalies: u64,
}

impl SizeResult {
    /// The figures of a replay under `geo` that ended with `bm`, having set `bits_set` bits
    /// with at most `max_alloc` counter pages allocated at once, and held `(mean, p99, max)`
    /// chunks dirty on disk.
    pub(crate) fn of_replay(
        input: &ReplayInput,
        geo: &BitmapGeometry,
        bm: &Bitmap,
        (bits_set, max_alloc): (u64, u64),
        (mean_c, p99_c, max_c): (f64, u64, u64),
        opts: &ReplayOptions,
    ) -> SizeResult {
        let (t0, t_end) = input.span_ns;
        let chunk_bytes = geo.chunk_size();
        let writes = bm.page_writes();
        let span_s = (t_end.saturating_sub(t0) as f64 / 1e9).max(1e-9);
        let memory_static = static_memory(geo);
        let cb = chunk_bytes as f64;
        SizeResult {
            chunk_bytes,
            in_use: chunk_bytes == input.header.bitmap_chunk_bytes,
            chunks: geo.chunks(),
            bits_set,
            sync_waits: writes.unplug_batches,
            page_writes: writes.bit_traffic(),
            page_writes_total: writes.total(),
            page_writes_per_sec: writes.total() as f64 / span_s,
            dirty_mean_bytes: mean_c * cb,
            dirty_p99_bytes: p99_c * chunk_bytes,
            dirty_max_bytes: max_c * chunk_bytes,
            resync_mean_bytes: mean_c * cb,
            resync_max_bytes: max_c * chunk_bytes,
            resync_mean_secs: mean_c * cb / opts.resync_bytes_per_sec,
            resync_max_secs: (max_c * chunk_bytes) as f64 / opts.resync_bytes_per_sec,
            memory_static_bytes: memory_static,
            memory_peak_bytes: memory_static + max_alloc * KERNEL_PAGE_SIZE,
            daemon_passes: bm.daemon_passes(),
            end_dirty: bm
                .disk_dirty_ranges()
                .into_iter()
                .map(|r| (r.start, r.end))
                .collect(),
            anomalies: {
                let a = bm.anomalies();
                a.end_write_underflow
                    + a.end_write_unallocated
                    + a.beyond_last_page
                    + a.beyond_chunks
                    + a.behind_underflow
            },
        }
    }
}

/// Options for a replay.
#[derive(Clone, Copy, Debug)]
pub struct ReplayOptions {
    /// Daemon wake-ups.
    pub daemon: DaemonMode,
    /// Resync speed for the duration model, bytes/s.
    pub resync_bytes_per_sec: f64,
}

/// Bitmap memory of a geometry as the kernel allocates it (`md_bitmap_resize()`): file pages
/// of `PAGE_SIZE` and one `struct bitmap_page` per counter page.
pub fn static_memory(geo: &BitmapGeometry) -> u64 {
    geo.file_pages() * KERNEL_PAGE_SIZE + geo.counter_pages() * BITMAP_PAGE_STRUCT_BYTES
}

/// Dirty counts below this are tallied in a flat array (at most 32 MiB of `u64`s, grown on
/// demand); larger ones, only possible with bitmaps of over 4 M chunks, in a map.
const DENSE_LIMIT: u64 = 1 << 22;

/// Time-weighted samples of the on-disk dirty chunk count: time spent at each count.
struct DirtyTimeline {
    last_t: u64,
    last_v: u64,
    dense: Vec<u64>,
    sparse: HashMap<u64, u64>,
    max: u64,
}

impl DirtyTimeline {
    fn new(t: u64, v: u64) -> Self {
        Self {
            last_t: t,
            last_v: v,
            dense: Vec::new(),
            sparse: HashMap::new(),
            max: v,
        }
    }
    #[inline]
    fn add(&mut self, v: u64, dt: u64) {
        if v < DENSE_LIMIT {
            let i = v as usize;
            if i >= self.dense.len() {
                self.dense.resize((i + 1).next_power_of_two().max(1024), 0);
            }
            self.dense[i] += dt;
        } else {
            *self.sparse.entry(v).or_default() += dt;
        }
    }
    #[inline]
    fn set(&mut self, t: u64, v: u64) {
        if v == self.last_v {
            return;
        }
        let dt = t.saturating_sub(self.last_t);
        if dt > 0 {
            self.add(self.last_v, dt);
        }
        self.last_t = self.last_t.max(t);
        self.last_v = v;
        self.max = self.max.max(v);
    }
    /// (mean, p99, max) over `[start, end]`.
    fn finish(mut self, end: u64) -> (f64, u64, u64) {
        let dt = end.saturating_sub(self.last_t);
        self.add(self.last_v, dt.max(1));
        // (count, time) for every count held for a non-zero time, by count.
        let mut sparse: Vec<(u64, u64)> = std::mem::take(&mut self.sparse).into_iter().collect();
        sparse.sort_unstable();
        let v: Vec<(u64, u64)> = (self.dense.iter().enumerate())
            .filter(|&(_, &w)| w > 0)
            .map(|(a, &w)| (a as u64, w))
            .chain(sparse)
            .collect();
        let total: u64 = v.iter().map(|x| x.1).sum();
        let mean = v.iter().map(|&(a, w)| a as f64 * w as f64).sum::<f64>() / total as f64;
        let target = (total as f64 * 0.99).ceil() as u64;
        let mut acc = 0;
        let mut p99 = 0;
        for (a, w) in v {
            acc += w;
            p99 = a;
            if acc >= target {
                break;
            }
        }
        (mean, p99, self.max)
    }
}

/// Replays `input` with a bitmap of `chunk_bytes` chunks.
///
/// A call covering several chunks goes to the engine one chunk at a time, which is the
/// kernel's own loop (`md_bitmap_startwrite()` / `bitmap_start_write()` and the end-write
/// walk the range chunk by chunk, each step touching only that chunk's counter, bit and pages)
/// and lets every chunk take the engine's single-chunk paths. Two exits of the kernel's loop
/// would make the split differ, so it is used only when neither can happen: a chunk at
/// `COUNTER_MAX` (the writer sleeps on `overflow_wait` with the rest of its range uncounted;
/// ruled out when fewer calls than `COUNTER_MAX - 2` are ever in flight, as a counter holds
/// 2 + its writes in flight) and a chunk past the last counter page (`md_bitmap_get_counter()`
/// returns NULL and the loop ends; ruled out when every call lies inside the bitmap's chunks).
/// Otherwise every call goes to the engine as recorded.
pub fn replay(input: &ReplayInput, chunk_bytes: u64, opts: &ReplayOptions) -> Result<SizeResult> {
    let mut run = SizeRun::new(input, chunk_bytes, opts)?;
    let steps = &input.steps[..];
    let calls = &input.calls[..];
    for (i, &(t, step)) in steps.iter().enumerate() {
        if run.prefetch && i % LOOKAHEAD == 0 {
            run.prefetch_group(steps, calls, i);
        }
        run.step(t, step, calls);
    }
    Ok(run.finish(opts))
}

/// The floor the tune benchmark compares [`replay`] with: the same chunks' counters and nothing
/// else. Every start-write call increments, every end-write call decrements the plain `u16`
/// counter of each chunk it covers under `chunk_bytes` chunks (up to the bitmap's last), in the
/// replay's step order; no bits, pages, daemon or statistics. Returns the sum of the final
/// counters (0 for a trace whose writes all completed), so that the work cannot be optimised
/// away.
pub fn counter_floor(input: &ReplayInput, chunk_bytes: u64) -> Result<u64> {
    let geo = input.geometry(chunk_bytes)?;
    let shift = geo.chunkshift();
    // Chunks past the bitmap's (a damaged trace) are left out.
    let last = input.last_call_sector.map_or(0, |s| s >> shift);
    let mut counters = vec![0u16; (last + 1).min(geo.chunks()) as usize];
    let calls = &input.calls[..];
    for &(_, step) in &input.steps {
        let (range, up) = match step {
            Step::Start { a, b } => (a as usize..b as usize, true),
            Step::End { a, b } => (a as usize..b as usize, false),
            _ => continue,
        };
        for &(off, n) in &calls[range] {
            if n == 0 {
                continue;
            }
            for c in (off >> shift)..=((off + u64::from(n) - 1) >> shift) {
                if let Some(x) = counters.get_mut(c as usize) {
                    *x = if up {
                        x.wrapping_add(1)
                    } else {
                        x.wrapping_sub(1)
                    };
                }
            }
        }
    }
    Ok(counters.iter().map(|&c| u64::from(c)).sum())
}

/// Steps whose first chunks are touched together, a group ahead (see
/// [`SizeRun::prefetch_group`]): the counters of random writes are cache misses (the 4 KiB-chunk
/// bitmap of a large array has tens of MiB of counters). Only start-writes: an end-write finds
/// its counter where its start-write (a latency earlier) left it, mostly still cached. Small
/// bitmaps stay in cache and skip it.
const LOOKAHEAD: usize = 16;

/// One chunk size's replay: its engine and the replay's state around it.
struct SizeRun<'a> {
    input: &'a ReplayInput,
    geo: BitmapGeometry,
    shift: u32,
    chunks: u64,
    bm: Bitmap,
    /// Recorded wake-ups drive the daemon (engine time in jiffies), else modelled ones (ns).
    recorded: bool,
    hz: u64,
    /// The latest recorded wake-up `(ns, jiffies)`: jiffies at other instants count from it.
    ref_pt: Option<(u64, u64)>,
    timeline: DirtyTimeline,
    /// `mddev->events` across superblock updates (see `Step::UpdateSb`).
    events: u64,
    in_sync: bool,
    can_decrease_events: bool,
    bits_set: u64,
    max_alloc: u64,
    /// When the md thread last went to sleep (ns; its timeout counts from there), and whether
    /// it is in a run (between a recorded daemon call and its recorded run end).
    last_wake: u64,
    running: bool,
    /// The chunk size in use: the recorded wake-ups are all the thread's (see the module doc).
    timer_from_trace: bool,
    slack: u64,
    /// Whether calls may be split into single chunks (see [`replay`]).
    split: bool,
    /// When the md thread's timer next fires (ns): `daemon_sleep` (+ slack) after its last
    /// wake-up while the daemon has left a timeout (`thread->timeout`, see
    /// `Bitmap::daemon_timeout`), never while the bitmap is all clean. Both inputs change only
    /// at a wake-up (`last_wake`) or a `daemon_work()` call, after which it is recomputed; so
    /// each step compares one number instead of re-deriving it.
    next_timer: u64,
    /// Whether `unplug()` can write anything: it writes the file pages marked DIRTY or
    /// NEEDWRITE and returns at once, changing nothing, when there are none
    /// (`md_bitmap_unplug()` / `bitmap_unplug()` skip pages that have neither). DIRTY comes
    /// only from start-write's `case 0:` (`md_bitmap_file_set_bit()`), NEEDWRITE only from a
    /// daemon pass (PENDING → NEEDWRITE, and page 0 for `need_sync`); unplug clears both on
    /// every page. So an unplug is skipped only when no start-write since the last one saw a
    /// clean counter and no daemon pass ran since: it would have been a no-op.
    unplug_due: bool,
    /// Touch the chunks of coming start-writes ahead ([`SizeRun::prefetch_group`]).
    prefetch: bool,
}

impl<'a> SizeRun<'a> {
    fn new(input: &'a ReplayInput, chunk_bytes: u64, opts: &ReplayOptions) -> Result<Self> {
        let geo = input.geometry(chunk_bytes)?;
        let shift = geo.chunkshift();
        let recorded = opts.daemon == DaemonMode::Recorded && input.has_daemon_events();
        // Engine time: jiffies with recorded wake-ups, else nanoseconds.
        let (sleep, hz) = match (recorded, input.sleep_jiffies, input.hz) {
            (true, Some(s), Some(hz)) => (s, hz),
            _ => (input.sleep_ns, 1_000_000_000),
        };
        let t0 = input.span_ns.0;
        // Jiffies at ns `t` count from the nearest earlier recorded wake-up (the first one
        // before it).
        let first = input.steps.iter().find_map(|s| match s.1 {
            Step::Daemon { jiffies } => Some((s.0, jiffies)),
            _ => None,
        });
        // `daemon_lastrun` when recording started, if the recorder read it; else as if the
        // first recorded wake-up found the daemon due.
        let start_time = match (recorded, input.header.daemon_lastrun_jiffies, first) {
            (true, Some(j), _) => j,
            (true, None, Some((_, j))) => j.wrapping_sub(sleep),
            _ => t0,
        };
        let mut bm = Bitmap::new(geo, BitmapConfig::new(input.variant, sleep), start_time);
        let (ec, ev) = input.header.initial_events;
        if !input.initial_dirty_sectors.is_empty() {
            let mut bits = vec![0u8; geo.chunks().div_ceil(8) as usize];
            for &(a, b) in &input.initial_dirty_sectors {
                if b > a {
                    for c in (a >> shift)..=((b - 1) >> shift) {
                        bits[(c / 8) as usize] |= 1 << (c % 8);
                    }
                }
            }
            bm.seed_from_disk(&bits, ev, ec);
        } else {
            bm.set_events(ev.max(ec));
        }
        let chunks = geo.chunks();
        let mut run = SizeRun {
            input,
            geo,
            shift,
            chunks,
            timeline: DirtyTimeline::new(t0, bm.disk_dirty_chunks()),
            events: bm.events(),
            in_sync: input
                .header
                .initial_array_state
                .as_deref()
                .is_none_or(|s| s == "clean"),
            can_decrease_events: false,
            bits_set: 0,
            max_alloc: bm.allocated_pages(),
            recorded,
            hz,
            ref_pt: first,
            last_wake: t0,
            running: false,
            timer_from_trace: recorded && chunk_bytes == input.header.bitmap_chunk_bytes,
            slack: if recorded { 100_000_000 } else { 0 },
            split: input.max_calls_in_flight + 2 < u64::from(COUNTER_MAX)
                && input.last_call_sector.is_none_or(|s| (s >> shift) < chunks),
            next_timer: u64::MAX,
            unplug_due: true,
            prefetch: bm.counters().len() >= 1 << 17,
            bm,
        };
        run.next_timer = run.timer_due();
        Ok(run)
    }

    /// Jiffies at ns `t` (ns itself without recorded wake-ups).
    fn to_time(&self, t: u64) -> u64 {
        let Some((rt, rj)) = self.ref_pt else {
            return t;
        };
        let j = |d: u64| (d as u128 * u128::from(self.hz) / 1_000_000_000) as u64;
        if t >= rt {
            rj.wrapping_add(j(t - rt))
        } else {
            rj.wrapping_sub(j(rt - t))
        }
    }

    /// See [`SizeRun::next_timer`].
    fn timer_due(&self) -> u64 {
        if self.bm.daemon_timeout().is_some() {
            self.last_wake
                .saturating_add(self.input.sleep_ns + self.slack)
        } else {
            u64::MAX
        }
    }

    /// After the engine wrote bitmap pages at `t`.
    #[inline]
    fn after_write_pages(&mut self, t: u64) {
        self.timeline.set(t, self.bm.disk_dirty_chunks());
        self.max_alloc = self.max_alloc.max(self.bm.allocated_pages());
    }

    /// A call of `daemon_work()` at engine time `now` (ns `t`).
    #[inline]
    fn daemon(&mut self, now: u64, t: u64) {
        let out = self.bm.daemon_work(now);
        if let Some(p) = out.pass() {
            self.unplug_due = true;
            if p.pages_written > 0 {
                self.after_write_pages(t);
            }
        }
        self.next_timer = self.timer_due();
    }

    /// Touches the first chunk of each start-write among the [`LOOKAHEAD`] steps that follow the
    /// next [`LOOKAHEAD`] (`i + LOOKAHEAD .. i + 2 × LOOKAHEAD`), all before using any: the
    /// loads are independent, so their cache misses overlap with each other, where one touch per
    /// step held up every step on its own miss.
    #[inline(never)]
    fn prefetch_group(&self, steps: &[(u64, Step)], calls: &[(u64, u32)], i: usize) {
        let ahead = steps.get(i + LOOKAHEAD..i + 2 * LOOKAHEAD).unwrap_or(&[]);
        let mut touched = [0u64; LOOKAHEAD];
        for (k, s) in ahead.iter().enumerate() {
            if let (_, Step::Start { a, .. }) = *s
                && let Some(&(off, _)) = calls.get(a as usize)
            {
                touched[k] = self.bm.touch_chunk(off >> self.shift);
            }
        }
        std::hint::black_box(touched);
    }

    /// Replays one step at ns `t`.
    #[inline(always)]
    fn step(&mut self, t: u64, step: Step, calls: &[(u64, u32)]) {
        // Timer wake-ups of the md thread due before this step.
        // No timer fires while the thread is in a run (it sleeps from the run's end), nor for
        // the chunk size in use with recorded wake-ups (see `timer_from_trace`).
        while !self.timer_from_trace && !self.running && self.next_timer <= t {
            self.timer_fires();
        }
        match step {
            Step::Start { a, b } => self.start(t, &calls[a as usize..b as usize]),
            Step::Unplug => {
                if self.unplug_due {
                    self.unplug_due = false;
                    if self.bm.unplug() > 0 {
                        self.after_write_pages(t);
                    }
                }
            }
            Step::End { a, b } => {
                let calls = &calls[a as usize..b as usize];
                if self.split {
                    for &(off, n) in calls {
                        if n == 0 {
                            continue;
                        }
                        let (lo, hi) = (off >> self.shift, (off + u64::from(n) - 1) >> self.shift);
                        self.bm.end_write_chunks(lo, hi);
                    }
                } else {
                    for &(off, n) in calls {
                        self.bm.end_write(off, u64::from(n), true, false, false);
                    }
                }
            }
            Step::Daemon { jiffies } => {
                if self.recorded {
                    self.ref_pt = Some((t, jiffies));
                    if self.input.has_thread_sleep {
                        self.running = true;
                    } else {
                        self.last_wake = t;
                    }
                    self.daemon(jiffies, t);
                }
            }
            Step::ThreadSleep => {
                if self.recorded {
                    self.running = false;
                    self.last_wake = t;
                    self.next_timer = self.timer_due();
                }
            }
            Step::UpdateSb => self.update_sb(t),
        }
    }

    /// The md thread's timer fires (at `next_timer`).
    #[inline(never)]
    fn timer_fires(&mut self) {
        let due = self.next_timer;
        let now = if self.recorded {
            let j = self.to_time(due);
            // A timer wake-up comes when the daemon is due (the thread's timeout is
            // `daemon_sleep` from its last run).
            let next = self.bm.next_daemon_due();
            if crate::engine::time_before(j, next) {
                next
            } else {
                j
            }
        } else {
            due
        };
        self.last_wake = due;
        self.daemon(now, due);
    }

    /// A write's start-writes at ns `t`, then its unplug if the trace records none.
    #[inline(always)]
    fn start(&mut self, t: u64, calls: &[(u64, u32)]) {
        if !self.recorded {
            // The write wakes the md thread (modelled mode).
            self.last_wake = t;
            self.daemon(t, t);
        }
        // The file pages whose bits this step's start-writes set lie in `dirty_pages`
        // (between the pages of the first and last chunk of the calls that set any).
        let mut dirty_pages: Option<(u64, u64)> = None;
        let shift = self.shift;
        if self.split {
            for &(off, n) in calls {
                if n == 0 {
                    continue; // no chunk: the kernel's loop does nothing
                }
                // Chunk by chunk (a call inside one chunk is one step of the loop whatever
                // its offset and length).
                let (lo, hi) = (off >> shift, (off + u64::from(n) - 1) >> shift);
                let set = self.bm.start_write_chunks(lo, hi);
                if set > 0 {
                    self.bits_set += set;
                    let (p, q) = (
                        self.bm.file_page_of_chunk(lo),
                        self.bm.file_page_of_chunk(hi),
                    );
                    dirty_pages = Some(dirty_pages.map_or((p, q), |(a, b)| (a.min(p), b.max(q))));
                }
            }
        } else {
            for &(off, n) in calls {
                let n = u64::from(n);
                if n > 0 {
                    let lo = off >> shift;
                    let hi = ((off + n - 1) >> shift).min(self.chunks.saturating_sub(1));
                    for c in lo..=hi {
                        self.bits_set += u64::from(self.bm.counter(c).raw() == 0);
                    }
                }
                self.bm.start_write(off, n, false);
            }
            // Chunks past `chunks` (in the last counter page) can set bits too.
            self.unplug_due = true;
        }
        if !self.input.has_unplug {
            // Unplug right after the start-writes (see `unplug_due`). Without recorded
            // unplugs every step ends with one, so no page is DIRTY when a step begins and
            // the only DIRTY pages are this step's: when they are one page, the engine writes
            // it without scanning every page's attributes.
            let written = match dirty_pages {
                _ if self.unplug_due => self.bm.unplug(),
                Some((p, q)) if p == q => self.bm.unplug_one_page(p),
                Some(_) => self.bm.unplug(),
                None => 0,
            };
            self.unplug_due = false;
            if written > 0 {
                self.after_write_pages(t);
            }
        } else {
            self.unplug_due |= dirty_pages.is_some();
        }
    }

    /// md_update_sb() around a recorded bitmap superblock update: under a write workload
    /// these are the clean <-> dirty transitions (md_write_start() and the safe-mode timer),
    /// where `mddev->events` goes up on the way to dirty and back down on the way to clean
    /// when it may (`can_decrease_events`).
    #[inline(never)]
    fn update_sb(&mut self, t: u64) {
        if self.in_sync {
            self.events += 1;
            self.can_decrease_events = true;
        } else if self.can_decrease_events && self.events != 1 {
            self.events -= 1;
            self.can_decrease_events = false;
        } else {
            self.events += 1;
            self.can_decrease_events = true;
        }
        self.in_sync = !self.in_sync;
        self.bm.set_events(self.events);
        self.bm.update_sb();
        self.after_write_pages(t);
    }

    /// The figures of the whole replay.
    fn finish(self, opts: &ReplayOptions) -> SizeResult {
        let dirty = self.timeline.finish(self.input.span_ns.1);
        let counts = (self.bits_set, self.max_alloc);
        SizeResult::of_replay(self.input, &self.geo, &self.bm, counts, dirty, opts)
    }
}
