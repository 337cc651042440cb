//! The per-array bitmap model: counters, counter pages, the cached ("filemap") and on-disk bit
//! copies, file-page attributes, the daemon, resync bookkeeping and write-behind counts.

use std::ops::Range;

#[path = "batch.rs"]
mod batch;

use super::block;
use super::counter::{COUNTER_MAX, Counter, NEEDED_MASK, RESYNC_MASK};
use super::layout::{BITMAP_SB_BYTES, BitmapGeometry};
use super::summary::{Anomalies, DaemonOutcome, DaemonPass, PageWrites, Summary};
use super::variant::{EndWriteRule, KernelVariant};

/// Settings of one bitmap that are not geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BitmapConfig {
    /// Which kernel behaviour to model.
    pub kernel: KernelVariant,
    /// `bitmap_info.daemon_sleep` (sysfs `bitmap/time_base`) in the caller's time unit: the same
    /// unit as every `now` passed to the engine (jiffies for the live feed, nanoseconds for trace
    /// replay, anything for tests).
    pub daemon_sleep: u64,
}

impl BitmapConfig {
    /// A config with the given kernel and `daemon_sleep` (caller's time unit).
    pub fn new(kernel: KernelVariant, daemon_sleep: u64) -> Self {
        BitmapConfig {
            kernel,
            daemon_sleep,
        }
    }
}

/// What [`Bitmap::start_write`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOutcome {
    /// Every chunk of the range was counted.
    Started,
    /// The writer found `chunk` at `COUNTER_MAX` and sleeps (`prepare_to_wait(&overflow_wait)`
    /// in TASK_UNINTERRUPTIBLE): the chunks before `chunk` are counted, the rest is not yet. The
    /// engine keeps it as a [`BlockedWriter`] and resumes it when an end-write wakes
    /// `overflow_wait`; `ticket` then appears in [`Bitmap::take_resumed`].
    Blocked {
        /// Identifies this writer in [`Bitmap::blocked_writers`] and [`Bitmap::take_resumed`].
        ticket: u64,
        /// The chunk it waits on.
        chunk: u64,
    },
}

/// What [`Bitmap::end_write`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EndOutcome {
    /// The end-write woke `overflow_wait` (it decremented a chunk at `COUNTER_MAX`).
    pub woke: bool,
    /// Blocked writers that then completed their start-write (their tickets are queued for
    /// [`Bitmap::take_resumed`]).
    pub resumed: usize,
}

/// A start-write sleeping on `overflow_wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockedWriter {
    /// Ticket returned in [`StartOutcome::Blocked`].
    pub ticket: u64,
    /// Chunk at `COUNTER_MAX` it waits on.
    pub chunk: u64,
    /// First sector not yet counted (the blocked chunk's part of the range starts here).
    pub offset: u64,
    /// Sectors of the range not yet counted.
    pub sectors: u64,
}

/// Result of [`Bitmap::start_sync`]: `md_bitmap_start_sync()`'s return value and `*blocks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncBlocks {
    /// True when the range must be synced (RESYNC already set, or NEEDED found).
    pub sync: bool,
    /// Sectors covered from `offset`; at least one page (`PAGE_SIZE >> 9`).
    pub blocks: u64,
}

/// The attribute bits of one file page (`storage.filemap_attr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PageAttrs {
    /// `BITMAP_PAGE_DIRTY`: newly set bits; unplug writes it before the data write.
    pub dirty: bool,
    /// `BITMAP_PAGE_PENDING`: bits cleared; becomes NEEDWRITE on the next daemon pass.
    pub pending: bool,
    /// `BITMAP_PAGE_NEEDWRITE`: cleared bits to be written by the daemon (or unplug).
    pub needwrite: bool,
}

/// The state of one in-memory counter page (`struct bitmap_page`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CounterPageState {
    /// `map != NULL`: the page is allocated (counted in mdstat's `A/B pages`).
    pub allocated: bool,
    /// `pending`: the daemon will visit the page.
    pub pending: bool,
    /// `count`: number of counters made non-zero (0 → non-zero transitions minus 1 → 0 ones).
    pub count: u32,
}

/// The bitmap superblock fields the engine tracks (a cached and an on-disk copy exist).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SuperblockModel {
    /// `sb->events`.
    pub events: u64,
    /// `sb->events_cleared`.
    pub events_cleared: u64,
}

/// Arguments of [`Bitmap::load_from_disk`] (`md_bitmap_load()` → `md_bitmap_init_from_disk()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadParams {
    /// `start` in sectors: bits of chunks ending at or after it get NEEDED. See
    /// [`LoadParams::start_for`].
    pub start: u64,
    /// The bitmap is stale (`BITMAP_STALE`: sb events < md events, or the sb says so): every
    /// bit is set and written out first (full resync).
    pub stale: bool,
    /// `mddev->events` at load.
    pub events: u64,
    /// `sb->events_cleared` as read (replaced by `events` when stale, as `md_bitmap_read_sb()`).
    pub events_cleared: u64,
}

impl LoadParams {
    /// `md_bitmap_load()`'s `start`: `recovery_cp` when the array is not degraded or
    /// `events_cleared == events`, else 0. `recovery_cp` is `MaxSector` (`u64::MAX`) for a
    /// cleanly stopped array, so only a crashed ("active") array gets NEEDED bits.
    pub fn start_for(degraded: bool, events_cleared: u64, events: u64, recovery_cp: u64) -> u64 {
        if !degraded || events_cleared == events {
            recovery_cp
        } else {
            0
        }
    }
}

/// Why a file page was written (see [`PageWrites`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteCause {
    UnplugDirty,
    UnplugNeedwrite,
    Daemon,
    SbUpdate,
    Load,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct CounterPage {
    count: u32,
    allocated: bool,
    pending: bool,
}

/// Counts over all counters, taken by [`CounterStats::scan`] when asked for (keeping them
/// incrementally would put five read-modify-writes on every start/end-write).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct CounterStats {
    nonzero: u64,
    in_flight_chunks: u64,
    in_flight_writes: u64,
    needed: u64,
    resync: u64,
}

impl CounterStats {
    /// One pass over `counters`, in blocks with narrow accumulators so it vectorizes.
    fn scan(counters: &[u16]) -> CounterStats {
        let mut s = CounterStats::default();
        for blk in counters.chunks(1024) {
            let (mut nz, mut fc, mut fw, mut nd, mut rs) = (0u32, 0u32, 0u32, 0u32, 0u32);
            for &c in blk {
                let n = u32::from(c & COUNTER_MAX);
                nz += u32::from(c != 0);
                fc += u32::from(n > 2);
                fw += n.saturating_sub(2);
                nd += u32::from(c >> 15);
                rs += u32::from((c >> 14) & 1);
            }
            s.nonzero += u64::from(nz);
            s.in_flight_chunks += u64::from(fc);
            s.in_flight_writes += u64::from(fw);
            s.needed += u64::from(nd);
            s.resync += u64::from(rs);
        }
        s
    }

    /// The incremental form of [`scan`](Self::scan) for one counter going `old` → `new`
    /// (the consistency check compares both).
    fn apply(&mut self, old: u16, new: u16) {
        let (o, n) = (Counter(old), Counter(new));
        self.nonzero = self
            .nonzero
            .wrapping_add(u64::from(new != 0))
            .wrapping_sub(u64::from(old != 0));
        self.in_flight_chunks = self
            .in_flight_chunks
            .wrapping_add(u64::from(n.has_writes_in_flight()))
            .wrapping_sub(u64::from(o.has_writes_in_flight()));
        self.in_flight_writes = self
            .in_flight_writes
            .wrapping_add(u64::from(n.writes_in_flight()))
            .wrapping_sub(u64::from(o.writes_in_flight()));
        if (old ^ new) & (NEEDED_MASK | RESYNC_MASK) != 0 {
            self.needed = self
                .needed
                .wrapping_add(u64::from(n.needed()))
                .wrapping_sub(u64::from(o.needed()));
            self.resync = self
                .resync
                .wrapping_add(u64::from(n.resync()))
                .wrapping_sub(u64::from(o.resync()));
        }
    }
}

/// Index of the cached copy in `bits`.
const CACHED: usize = 0;
/// Index of the on-disk copy in `bits`.
const DISK: usize = 1;

#[inline(always)]
fn bit_test(v: &[u64], i: u64) -> bool {
    (v[(i >> 6) as usize] >> (i & 63)) & 1 != 0
}

/// Sets bit `i`; returns whether it was already set.
#[inline(always)]
fn bit_set(v: &mut [u64], i: u64) -> bool {
    let w = &mut v[(i >> 6) as usize];
    let m = 1u64 << (i & 63);
    let was = *w & m != 0;
    *w |= m;
    was
}

fn popcount(v: &[u64]) -> u64 {
    v.iter().map(|w| u64::from(w.count_ones())).sum()
}

/// The kernel's `time_before(a, b)` on the caller's clock: `(long)(a - b) < 0`.
#[inline]
pub fn time_before(a: u64, b: u64) -> bool {
    (a.wrapping_sub(b) as i64) < 0
}

/// One array's classic write-intent bitmap, modelled without I/O or clock.
///
/// Build it with [`Bitmap::new`], then [`load_from_disk`](Self::load_from_disk) (assembly) or
/// [`seed_from_disk`](Self::seed_from_disk) (attaching to a running array), and feed it the
/// kernel's calls. Every function named after a kernel function performs that function's state
/// changes; see the [module documentation](super) for the state machine and the units.
///
/// `Clone` is the snapshot: the state is a few flat vectors (about 2.3 bytes per chunk).
#[derive(Debug, Clone)]
pub struct Bitmap {
    geo: BitmapGeometry,
    config: BitmapConfig,
    // Derived constants.
    shift: u32,
    /// Sectors per chunk − 1.
    chunk_mask: u64,
    cps: u32,
    fps: u32,
    chunks: u64,
    counter_limit: u64,
    sb_bits: u64,
    end_fbit: u64,
    file_pages: u64,
    words_per_page: usize,

    counters: Vec<u16>,
    pages: Vec<CounterPage>,
    missing_pages: u64,

    /// The cached (`bits[CACHED]`) and on-disk (`bits[DISK]`) words of the bitmap file, indexed
    /// by file bit (`chunk + 2048`; bits 0..2048 are the superblock). Two arrays rather than
    /// interleaved pairs: start-write touches only the cached copy, which then takes half the
    /// cache.
    bits: [Vec<u64>; 2],
    /// Chunks whose on-disk bit is set: kept as pages are written, so that trace replay can
    /// sample it on every page write (checked by `check_consistency`).
    disk_set: u64,
    /// One bit per word of `cached`: the word may differ from `disk`.
    diff: Vec<u64>,

    attr_dirty: Vec<u64>,
    attr_pending: Vec<u64>,
    attr_needwrite: Vec<u64>,
    n_needwrite: u64,

    allclean: bool,
    need_sync: bool,
    events: u64,
    events_cleared: u64,
    sb: SuperblockModel,
    disk_sb: SuperblockModel,

    daemon_lastrun: u64,
    thread_timeout: Option<u64>,
    last_end_sync: u64,
    curr_resync_completed: u64,
    daemon_passes: u64,

    behind_writes: i32,
    behind_writes_used: i32,

    blocked: Vec<BlockedWriter>,
    resumed: Vec<u64>,
    next_ticket: u64,

    writes: PageWrites,
    anomalies: Anomalies,
}

impl Bitmap {
    /// A freshly created bitmap (`md_bitmap_create()`): all counters 0, no counter page
    /// allocated, every bit clear in cache and on disk, `daemon_lastrun = now`, `allclean = 0`
    /// (kzalloc), `events = events_cleared = 0`.
    pub fn new(geo: BitmapGeometry, config: BitmapConfig, now: u64) -> Bitmap {
        let counter_pages = geo.counter_pages();
        let counter_limit = counter_pages << geo.counter_page_shift();
        let file_pages = geo.file_pages();
        let words_per_page = (geo.bits_per_file_page() / 64) as usize;
        let file_words = file_pages as usize * words_per_page;
        let attr_words = file_pages.div_ceil(64) as usize;
        Bitmap {
            geo,
            config,
            shift: geo.chunkshift(),
            chunk_mask: (1u64 << geo.chunkshift()) - 1,
            cps: geo.counter_page_shift(),
            fps: geo.page_shift() + 3,
            chunks: geo.chunks(),
            counter_limit,
            sb_bits: geo.sb_bits(),
            end_fbit: geo.sb_bits() + geo.chunks(),
            file_pages,
            words_per_page,
            counters: vec![0; counter_limit as usize],
            pages: vec![CounterPage::default(); counter_pages as usize],
            missing_pages: counter_pages,
            bits: [vec![0; file_words], vec![0; file_words]],
            disk_set: 0,
            diff: vec![0; file_words.div_ceil(64)],
            attr_dirty: vec![0; attr_words],
            attr_pending: vec![0; attr_words],
            attr_needwrite: vec![0; attr_words],
            n_needwrite: 0,
            allclean: false,
            need_sync: false,
            events: 0,
            events_cleared: 0,
            sb: SuperblockModel::default(),
            disk_sb: SuperblockModel::default(),
            daemon_lastrun: now,
            thread_timeout: None,
            last_end_sync: 0,
            curr_resync_completed: 0,
            daemon_passes: 0,
            behind_writes: 0,
            behind_writes_used: 0,
            blocked: Vec::new(),
            resumed: Vec::new(),
            next_ticket: 0,
            writes: PageWrites::default(),
            anomalies: Anomalies::default(),
        }
    }

    // ------------------------------------------------------------------------------------
    // Internal helpers mirroring md-bitmap.c's static functions.

    #[inline(always)]
    fn put(&mut self, idx: usize, new: u16) {
        self.counters[idx] = new;
    }

    /// `md_bitmap_checkpage(create = 1)` for a missing page (allocation never fails here, so
    /// pages are never "hijacked").
    #[cold]
    fn alloc_page(&mut self, page: usize) {
        self.pages[page].allocated = true;
        self.missing_pages -= 1;
    }

    /// `md_bitmap_checkfree()` freeing a page: kfree drops whatever the counters held (all 0
    /// unless start/end calls were unbalanced); a later allocation starts from zeroed memory.
    #[cold]
    fn free_page(&mut self, page: usize) {
        self.pages[page].allocated = false;
        self.missing_pages += 1;
        let lo = page << self.cps;
        let hi = lo + (1usize << self.cps);
        self.counters[lo..hi].fill(0);
    }

    /// `md_bitmap_count_page(+1)`; returns true if the page was freed (only on wrap).
    #[inline(always)]
    fn count_page_inc(&mut self, page: usize) {
        let p = &mut self.pages[page];
        p.count = p.count.wrapping_add(1) & ((1 << 30) - 1);
        if p.count == 0 {
            self.free_page(page);
        }
    }

    /// `md_bitmap_count_page(-1)` + `md_bitmap_checkfree()`; returns true if freed.
    #[inline]
    fn count_page_dec(&mut self, page: usize) -> bool {
        let p = &mut self.pages[page];
        p.count = p.count.wrapping_sub(1) & ((1 << 30) - 1);
        if p.count == 0 {
            self.free_page(page);
            true
        } else {
            false
        }
    }

    /// Mask of the bits of file word `w` that belong to chunks `0..chunks`.
    #[inline]
    fn in_range_mask(&self, w: usize) -> u64 {
        let lo = w as u64 * 64;
        if lo < self.sb_bits || lo >= self.end_fbit {
            0
        } else if lo + 64 <= self.end_fbit {
            !0
        } else {
            (1u64 << (self.end_fbit - lo)) - 1
        }
    }

    #[inline(always)]
    fn mark_diff(&mut self, fbit: u64) {
        let w = fbit >> 6;
        self.diff[(w >> 6) as usize] |= 1 << (w & 63);
    }

    #[inline]
    fn set_attr(v: &mut [u64], n: &mut u64, page: u64) {
        if !bit_set(v, page) {
            *n += 1;
        }
    }

    /// `md_bitmap_file_set_bit()`: set the cached bit, mark the file page DIRTY.
    #[inline(always)]
    fn file_set_bit(&mut self, chunk: u64) {
        let fbit = chunk + self.sb_bits;
        let page = fbit >> self.fps;
        if page >= self.file_pages {
            return;
        }
        let (w, m) = ((fbit >> 6) as usize, 1u64 << (fbit & 63));
        self.bits[CACHED][w] |= m;
        self.mark_diff(fbit);
        bit_set(&mut self.attr_dirty, page);
    }

    /// `md_bitmap_file_clear_bit()`: clear the cached bit; PENDING (and `allclean = 0`) unless
    /// the page is already NEEDWRITE.
    fn file_clear_bit(&mut self, chunk: u64) {
        let fbit = chunk + self.sb_bits;
        let page = fbit >> self.fps;
        if page >= self.file_pages {
            return;
        }
        let (w, m) = ((fbit >> 6) as usize, 1u64 << (fbit & 63));
        self.bits[CACHED][w] &= !m;
        self.mark_diff(fbit);
        if !bit_test(&self.attr_needwrite, page) {
            bit_set(&mut self.attr_pending, page);
            self.allclean = false;
        }
    }

    /// `write_page()` / `filemap_write_page()`: the on-disk copy of file page `p` becomes the
    /// cached one (one write per page, whatever the number of members).
    fn write_page(&mut self, p: u64, cause: WriteCause) {
        self.write_page_counted::<false>(p, cause);
    }

    /// [`write_page`](Self::write_page), with `disk_set`'s change counted per changed word by
    /// popcount (`SPARSE = false`) or bit by bit over the changed bits only (`SPARSE = true`:
    /// cheaper for a page of which few bits changed, such as an unplug's, on a target without
    /// a popcount instruction). Both count the same.
    #[inline]
    fn write_page_counted<const SPARSE: bool>(&mut self, p: u64, cause: WriteCause) {
        let dpw = self.words_per_page / 64;
        let base = p as usize * dpw;
        for dwi in base..base + dpw {
            let mut m = std::mem::take(&mut self.diff[dwi]);
            while m != 0 {
                let w = dwi * 64 + m.trailing_zeros() as usize;
                m &= m - 1;
                let (old, new) = (self.bits[DISK][w], self.bits[CACHED][w]);
                let mask = self.in_range_mask(w);
                let (set, cleared) = if SPARSE {
                    let (mut up, mut down) = (new & !old & mask, old & !new & mask);
                    let (mut set, mut cleared) = (0, 0);
                    while up != 0 {
                        up &= up - 1;
                        set += 1;
                    }
                    while down != 0 {
                        down &= down - 1;
                        cleared += 1;
                    }
                    (set, cleared)
                } else {
                    (
                        u64::from((new & mask).count_ones()),
                        u64::from((old & mask).count_ones()),
                    )
                };
                self.disk_set = self.disk_set + set - cleared;
                self.bits[DISK][w] = new;
            }
        }
        if p == 0 {
            self.disk_sb = self.sb;
        }
        match cause {
            WriteCause::UnplugDirty => self.writes.unplug_dirty += 1,
            WriteCause::UnplugNeedwrite => self.writes.unplug_needwrite += 1,
            WriteCause::Daemon => self.writes.daemon += 1,
            WriteCause::SbUpdate => self.writes.sb_update += 1,
            WriteCause::Load => self.writes.load += 1,
        }
    }

    /// `md_bitmap_set_pending()`.
    #[inline(always)]
    fn set_pending(&mut self, page: usize) {
        self.pages[page].pending = true;
    }

    /// `md_bitmap_get_counter(create = 0)`: the counter index, if its page exists, and
    /// `*blocks` (sectors to the end of the chunk, or of the whole counter page's span when the
    /// page is not allocated).
    #[inline]
    fn get_counter(&self, offset: u64) -> (Option<usize>, u64) {
        let chunk = offset >> self.shift;
        let csize = 1u64 << self.shift;
        if chunk >= self.counter_limit {
            return (None, csize - (offset & (csize - 1)));
        }
        let page = (chunk >> self.cps) as usize;
        if !self.pages[page].allocated {
            let span = 1u64 << (self.shift + self.cps);
            return (None, span - (offset & (span - 1)));
        }
        (Some(chunk as usize), csize - (offset & (csize - 1)))
    }

    /// `md_bitmap_set_memory_bits()` for one chunk: a clean counter becomes 2 (page counted and
    /// pending, `allclean = 0`); `needed` ORs NEEDED in.
    fn set_memory_bits(&mut self, chunk: u64, needed: bool) {
        if chunk >= self.counter_limit {
            self.anomalies.beyond_last_page += 1;
            return;
        }
        let page = (chunk >> self.cps) as usize;
        if !self.pages[page].allocated {
            self.alloc_page(page);
        }
        let idx = chunk as usize;
        let old = self.counters[idx];
        let mut c = old;
        if c == 0 {
            c = 2;
            self.count_page_inc(page);
            self.set_pending(page);
            self.allclean = false;
        }
        if needed {
            c |= NEEDED_MASK;
        }
        self.put(idx, c);
    }

    // ------------------------------------------------------------------------------------
    // Writes.

    /// Mirrors `md_bitmap_startwrite()` (≤6.11) / `bitmap_startwrite()` (6.12–6.15) /
    /// `bitmap_start_write()` (6.16+) for `sectors` sectors at bitmap sector `offset`.
    ///
    /// `behind` is the ≤6.13 argument: it counts a write-behind write
    /// ([`start_behind_write`](Self::start_behind_write)); kernels ≥6.14 pass no such argument.
    ///
    /// Per chunk: a chunk at `COUNTER_MAX` blocks the writer (see [`StartOutcome::Blocked`]);
    /// 0 → set the cached bit, page DIRTY, page count +1, fall through; 1 → 2; then `++`. So a
    /// clean chunk ends at 3, NEEDED/RESYNC flags are kept (the switch matches only the exact
    /// values 0 and 1). The bit reaches the disk at the next [`unplug`](Self::unplug).
    /// Chunks past the last counter page end the call (`md_bitmap_get_counter` returns NULL);
    /// chunks past `chunks` but inside the last counter page are counted, as in the kernel.
    #[inline(always)]
    pub fn start_write(&mut self, offset: u64, sectors: u64, behind: bool) -> StartOutcome {
        // Fast paths for a range inside one chunk: clean (raw 0 on an allocated counter page:
        // the `case 0:` steps, → 3), already dirty (2 <= COUNTER < COUNTER_MAX, flags allowed:
        // only the increment; a non-zero counter implies an allocated page), or raw 1 (→ 3).
        // Everything else (COUNTER_MAX, flags on a count below 2, a missing page, a range
        // crossing chunks, write-behind) takes the kernel's loop.
        if let Some(chunk) = self.single_chunk(offset, sectors, behind)
            && self.start_chunk_fast(chunk).is_some()
        {
            return StartOutcome::Started;
        }
        self.start_write_slow(offset, sectors, behind)
    }

    /// The chunk holding all of `sectors` (≥ 1) sectors at `offset`, if it is below `chunks`
    /// and the call is not write-behind: the calls the fast paths handle.
    #[inline(always)]
    fn single_chunk(&self, offset: u64, sectors: u64, behind: bool) -> Option<u64> {
        let chunk = offset >> self.shift;
        // sectors - 1 <= sectors left in the chunk - 1 (sectors == 0 wraps and fails).
        let fits = sectors.wrapping_sub(1) <= self.chunk_mask - (offset & self.chunk_mask);
        (fits & !behind & (chunk < self.chunks)).then_some(chunk)
    }

    /// Start-write's fast paths for chunk `chunk < chunks` (the caller checks the bound): clean
    /// (raw 0 on an allocated counter page: the `case 0:` steps, → 3; returns `Some(true)`),
    /// already dirty (2 <= COUNTER < COUNTER_MAX, flags allowed: only the increment; a non-zero
    /// counter implies an allocated page) or raw 1 (→ 3), both `Some(false)`. `None`, with
    /// nothing changed, for everything else (COUNTER_MAX, flags on a count below 2, a missing
    /// page): those take the kernel's loop.
    #[inline(always)]
    fn start_chunk_fast(&mut self, chunk: u64) -> Option<bool> {
        let idx = chunk as usize;
        let old = *self.counters.get(idx)?;
        if old == 0 {
            let page = idx >> self.cps;
            let p = &mut self.pages[page];
            if !p.allocated {
                return None;
            }
            self.counters[idx] = 3;
            // md_bitmap_count_page(+1) on the page just checked (one lookup).
            p.count = p.count.wrapping_add(1) & ((1 << 30) - 1);
            if p.count == 0 {
                self.free_page(page);
            }
            self.first_write(chunk);
            Some(true)
        } else if (old & COUNTER_MAX).wrapping_sub(2) < COUNTER_MAX - 2 {
            self.counters[idx] = old + 1;
            Some(false)
        } else if old == 1 {
            self.counters[idx] = 3;
            Some(false)
        } else {
            None
        }
    }

    /// The `md_bitmap_file_set_bit()` of start-write's `case 0:` for chunk `chunk < chunks`
    /// (cached bit, its diff word, file page DIRTY; the caller counts the counter page).
    #[inline(always)]
    fn first_write(&mut self, chunk: u64) {
        let fbit = chunk + self.sb_bits;
        let w = (fbit >> 6) as usize;
        self.bits[CACHED][w] |= 1 << (fbit & 63);
        self.diff[w >> 6] |= 1 << (w & 63);
        let fp = fbit >> self.fps;
        self.attr_dirty[(fp >> 6) as usize] |= 1 << (fp & 63);
    }

    #[inline(never)]
    fn start_write_slow(&mut self, offset: u64, sectors: u64, behind: bool) -> StartOutcome {
        if behind {
            self.start_behind_write();
        }
        match self.start_range(offset, sectors) {
            None => StartOutcome::Started,
            Some((offset, sectors)) => {
                let ticket = self.next_ticket;
                self.next_ticket += 1;
                let chunk = offset >> self.shift;
                self.blocked.push(BlockedWriter {
                    ticket,
                    chunk,
                    offset,
                    sectors,
                });
                StartOutcome::Blocked { ticket, chunk }
            }
        }
    }

    /// The startwrite loop; returns the uncounted remainder when a chunk is at COUNTER_MAX.
    #[inline]
    fn start_range(&mut self, mut offset: u64, mut sectors: u64) -> Option<(u64, u64)> {
        let shift = self.shift;
        let csize = 1u64 << shift;
        while sectors != 0 {
            let chunk = offset >> shift;
            if chunk >= self.chunks {
                if chunk >= self.counter_limit {
                    self.anomalies.beyond_last_page += 1;
                    return None;
                }
                self.anomalies.beyond_chunks += 1;
            }
            let page = (chunk >> self.cps) as usize;
            if !self.pages[page].allocated {
                self.alloc_page(page);
            }
            let idx = chunk as usize;
            let mut c = self.counters[idx];
            if c & COUNTER_MAX == COUNTER_MAX {
                return Some((offset, sectors));
            }
            if c <= 1 {
                if c == 0 {
                    self.file_set_bit(chunk);
                    self.count_page_inc(page);
                }
                c = 2;
            }
            self.counters[idx] = c + 1;
            let blocks = csize - (offset & (csize - 1));
            offset = offset.wrapping_add(blocks);
            sectors = sectors.saturating_sub(blocks);
        }
        None
    }

    /// Mirrors `md_bitmap_endwrite()` (≤6.11) / `bitmap_endwrite()` (6.12–6.15) /
    /// `bitmap_end_write()` (6.16+).
    ///
    /// `success` is the ≤6.13 argument (ignored by [`EndWriteRule::Degraded`]), `behind` the
    /// ≤6.13 write-behind flag ([`end_behind_write`](Self::end_behind_write)), `degraded` the
    /// value of `mddev->degraded != 0` at completion.
    ///
    /// Per chunk, by [`KernelVariant::end_write`]: the events_cleared/need_sync update or
    /// NEEDED (see [`EndWriteRule`]); a chunk at `COUNTER_MAX` wakes `overflow_wait`; then
    /// `(*bmc)--` and, if `*bmc <= 2` (raw value, so never with NEEDED/RESYNC set), the counter
    /// page becomes pending and `allclean = 0`.
    ///
    /// Odd kernel behaviour kept: a chunk whose counter page is not allocated ends the call
    /// (the rest of the range is skipped), and `(*bmc)--` on a zero count wraps the u16 (both
    /// only happen with unbalanced calls; counted in [`Anomalies`]).
    /// Blocked writers woken by this call retry after it, in FIFO order.
    #[inline(always)]
    pub fn end_write(
        &mut self,
        offset: u64,
        sectors: u64,
        success: bool,
        behind: bool,
        degraded: bool,
    ) -> EndOutcome {
        // Fast path: one chunk with writes in flight (3 <= COUNTER < COUNTER_MAX): the rule,
        // the decrement and the pending flag; no wake-up, no anomaly possible.
        if let Some(chunk) = self.single_chunk(offset, sectors, behind)
            && self.end_chunk_fast(chunk, success, degraded)
        {
            return EndOutcome::default();
        }
        self.end_write_slow(offset, sectors, success, behind, degraded)
    }

    /// End-write's fast path for chunk `chunk < chunks` (the caller checks the bound) with
    /// writes in flight (3 <= COUNTER < COUNTER_MAX): the variant's rule, the decrement and the
    /// pending flag; no wake-up, no anomaly possible. Returns false, with nothing changed, for
    /// any other counter: those take the kernel's loop.
    #[inline(always)]
    fn end_chunk_fast(&mut self, chunk: u64, success: bool, degraded: bool) -> bool {
        let idx = chunk as usize;
        let Some(&old) = self.counters.get(idx) else {
            return false;
        };
        if (old & COUNTER_MAX).wrapping_sub(3) >= COUNTER_MAX - 3 {
            return false;
        }
        let (clean, needed) = match self.config.kernel.end_write {
            EndWriteRule::Degraded => (!degraded, degraded),
            EndWriteRule::SuccessArg => (success && !degraded, !success),
        };
        let c = (old | if needed { NEEDED_MASK } else { 0 }) - 1;
        self.counters[idx] = c;
        if clean && self.events_cleared < self.events {
            self.events_cleared = self.events;
            self.need_sync = true;
        }
        if c <= 2 {
            self.pages[idx >> self.cps].pending = true;
            self.allclean = false;
        }
        true
    }

    #[inline(never)]
    fn end_write_slow(
        &mut self,
        offset: u64,
        sectors: u64,
        success: bool,
        behind: bool,
        degraded: bool,
    ) -> EndOutcome {
        if behind {
            self.end_behind_write();
        }
        let woke = match self.config.kernel.end_write {
            EndWriteRule::SuccessArg => self.end_range::<false>(offset, sectors, success, degraded),
            EndWriteRule::Degraded => self.end_range::<true>(offset, sectors, success, degraded),
        };
        if woke {
            EndOutcome {
                woke,
                resumed: self.wake_blocked(),
            }
        } else {
            EndOutcome::default()
        }
    }

    #[inline(always)]
    fn end_range<const DEGRADED_RULE: bool>(
        &mut self,
        mut offset: u64,
        mut sectors: u64,
        success: bool,
        degraded: bool,
    ) -> bool {
        let shift = self.shift;
        let csize = 1u64 << shift;
        let mut woke = false;
        while sectors != 0 {
            let chunk = offset >> shift;
            if chunk >= self.counter_limit {
                self.anomalies.beyond_last_page += 1;
                return woke;
            }
            let page = (chunk >> self.cps) as usize;
            if !self.pages[page].allocated {
                self.anomalies.end_write_unallocated += 1;
                return woke;
            }
            let idx = chunk as usize;
            let old = self.counters[idx];
            let mut c = old;
            if DEGRADED_RULE {
                if !degraded {
                    if self.events_cleared < self.events {
                        self.events_cleared = self.events;
                        self.need_sync = true;
                    }
                } else if c & NEEDED_MASK == 0 {
                    c |= NEEDED_MASK;
                }
            } else {
                if success && !degraded && self.events_cleared < self.events {
                    self.events_cleared = self.events;
                    self.need_sync = true;
                }
                if !success && c & NEEDED_MASK == 0 {
                    c |= NEEDED_MASK;
                }
            }
            match c & COUNTER_MAX {
                COUNTER_MAX => woke = true,
                0 => self.anomalies.end_write_underflow += 1,
                _ => {}
            }
            c = c.wrapping_sub(1);
            self.counters[idx] = c;
            if c <= 2 {
                self.set_pending(page);
                self.allclean = false;
            }
            let blocks = csize - (offset & (csize - 1));
            offset = offset.wrapping_add(blocks);
            sectors = sectors.saturating_sub(blocks);
        }
        woke
    }

    /// `wake_up(&overflow_wait)`: every blocked writer retries (FIFO); returns how many finished.
    #[cold]
    fn wake_blocked(&mut self) -> usize {
        let waiting = std::mem::take(&mut self.blocked);
        let mut done = 0;
        for w in waiting {
            match self.start_range(w.offset, w.sectors) {
                None => {
                    self.resumed.push(w.ticket);
                    done += 1;
                }
                Some((offset, sectors)) => self.blocked.push(BlockedWriter {
                    chunk: offset >> self.shift,
                    offset,
                    sectors,
                    ..w
                }),
            }
        }
        done
    }

    /// Writers blocked at `COUNTER_MAX`, oldest first.
    pub fn blocked_writers(&self) -> &[BlockedWriter] {
        &self.blocked
    }

    /// Tickets of blocked writers that have since completed their start-write, oldest first;
    /// the list is emptied.
    pub fn take_resumed(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.resumed)
    }

    /// Mirrors `bitmap_start_behind_write()` (≥6.14; `md_bitmap_start_behind_write()` in the
    /// 6.6.y backport) and the `behind` branch of ≤6.13 start-write: `behind_writes++` and the
    /// high-water mark `behind_writes_used` (sysfs `bitmap/max_backlog_used`).
    pub fn start_behind_write(&mut self) {
        self.behind_writes = self.behind_writes.wrapping_add(1);
        if self.behind_writes > self.behind_writes_used {
            self.behind_writes_used = self.behind_writes;
        }
    }

    /// Mirrors `bitmap_end_behind_write()` (≥6.14) and the `behind` branch of ≤6.13 end-write:
    /// `behind_writes--` (an `atomic_t`: it goes negative on unbalanced calls, counted in
    /// [`Anomalies::behind_underflow`]).
    pub fn end_behind_write(&mut self) {
        if self.behind_writes <= 0 {
            self.anomalies.behind_underflow += 1;
        }
        self.behind_writes = self.behind_writes.wrapping_sub(1);
    }

    /// Mirrors a write to sysfs `bitmap/max_backlog_used` (`behind_writes_used = 0`).
    pub fn reset_behind_writes_used(&mut self) {
        self.behind_writes_used = 0;
    }

    /// `atomic_read(&bitmap->behind_writes)`: write-behind writes in flight.
    pub fn behind_writes(&self) -> i32 {
        self.behind_writes
    }

    /// `behind_writes_used`: the high-water mark of [`behind_writes`](Self::behind_writes).
    pub fn behind_writes_used(&self) -> i32 {
        self.behind_writes_used
    }

    // ------------------------------------------------------------------------------------
    // Writing bitmap pages.

    /// Mirrors `md_bitmap_unplug()` (≤6.11; also `md_bitmap_unplug_async()` 6.5+) /
    /// `bitmap_unplug(mddev, sync)` (6.12+): every file page with DIRTY or NEEDWRITE loses
    /// both (and PENDING) and is written, so the on-disk copy of those pages becomes the cached
    /// one. The personality calls it before submitting data writes, so bits set by start-write
    /// are on disk before the data. Returns the number of pages written.
    #[inline]
    pub fn unplug(&mut self) -> u64 {
        if self.n_needwrite == 0 && self.attr_dirty.iter().all(|&w| w == 0) {
            return 0;
        }
        let mut written = 0;
        for wi in 0..self.attr_dirty.len() {
            let d = self.attr_dirty[wi];
            let mut m = d | self.attr_needwrite[wi];
            if m == 0 {
                continue;
            }
            self.attr_dirty[wi] = 0;
            self.attr_needwrite[wi] = 0;
            self.attr_pending[wi] &= !m;
            while m != 0 {
                let b = m.trailing_zeros();
                m &= m - 1;
                let p = wi as u64 * 64 + u64::from(b);
                let cause = if d >> b & 1 != 0 {
                    WriteCause::UnplugDirty
                } else {
                    WriteCause::UnplugNeedwrite
                };
                self.write_page(p, cause);
                written += 1;
            }
        }
        self.n_needwrite = 0;
        self.writes.unplug_batches += 1;
        written
    }

    /// Mirrors `md_bitmap_update_sb()` / `bitmap_update_sb()`: `sb->events = mddev->events`;
    /// if `events < events_cleared` ("rocking back to read-only") `events_cleared = events`;
    /// `sb->events_cleared = events_cleared`; then page 0 is written synchronously. Page 0
    /// holds the first bits too, so their cached state reaches the disk (page attributes are
    /// left alone). md calls it from every md superblock update (`md_update_sb()`).
    pub fn update_sb(&mut self) {
        self.sb.events = self.events;
        if self.events < self.events_cleared {
            self.events_cleared = self.events;
        }
        self.sb.events_cleared = self.events_cleared;
        self.write_page(0, WriteCause::SbUpdate);
    }

    /// Mirrors `md_bitmap_write_all()` / `bitmap_write_all()`: every file page NEEDWRITE,
    /// `allclean = 0` (used when a member is added so it gets the whole bitmap).
    pub fn write_all(&mut self) {
        for p in 0..self.file_pages {
            Self::set_attr(&mut self.attr_needwrite, &mut self.n_needwrite, p);
        }
        self.allclean = false;
    }

    // ------------------------------------------------------------------------------------
    // The daemon.

    /// Mirrors `md_bitmap_daemon_work()` (≤6.11) / `bitmap_daemon_work()` (6.12+) at time
    /// `now` (caller's unit, same as `daemon_sleep`).
    ///
    /// 1. `time_before(now, daemon_lastrun + daemon_sleep)` → [`DaemonOutcome::NotDue`].
    /// 2. `daemon_lastrun = now`; if `allclean` → the md thread's timeout becomes
    ///    `MAX_SCHEDULE_TIMEOUT` (see [`daemon_timeout`](Self::daemon_timeout)),
    ///    [`DaemonOutcome::AllClean`].
    /// 3. `allclean = 1`; every PENDING file page becomes NEEDWRITE.
    /// 4. `need_sync`: cleared, `events_cleared` copied to the cached superblock, page 0
    ///    NEEDWRITE.
    /// 5. The counter walk over counter pages whose `pending` is set (cleared on visit), chunks
    ///    `0..chunks`: raw 1 (and `!need_sync`) → 0, page count −1 (the page may be freed,
    ///    which ends its walk), cached bit cleared, file page PENDING unless NEEDWRITE; raw 2
    ///    (or 1 while `need_sync`) → 1, page pending, `allclean = 0`; anything else untouched.
    /// 6. NEEDWRITE pages are written in index order, stopping at the first DIRTY page (left to
    ///    unplug, which keeps "superblock first").
    ///
    /// So a cleared bit leaves the disk one pass after it leaves the cache, unless its page is
    /// already NEEDWRITE (same pass) or unplug writes the page first: 2–3 passes after the
    /// chunk goes idle.
    pub fn daemon_work(&mut self, now: u64) -> DaemonOutcome {
        let sleep = self.config.daemon_sleep;
        if time_before(now, self.daemon_lastrun.wrapping_add(sleep)) {
            self.daemon_done();
            return DaemonOutcome::NotDue;
        }
        self.daemon_lastrun = now;
        if self.allclean {
            self.thread_timeout = None;
            return DaemonOutcome::AllClean;
        }
        self.allclean = true;
        self.daemon_passes += 1;
        let mut pass = DaemonPass::default();

        for wi in 0..self.attr_pending.len() {
            let m = self.attr_pending[wi];
            if m != 0 {
                self.attr_pending[wi] = 0;
                self.attr_needwrite[wi] |= m;
            }
        }
        self.n_needwrite = popcount(&self.attr_needwrite);

        if self.need_sync {
            self.need_sync = false;
            self.sb.events_cleared = self.events_cleared;
            Self::set_attr(&mut self.attr_needwrite, &mut self.n_needwrite, 0);
            pass.synced_events_cleared = true;
        }

        for page in 0..self.pages.len() {
            if !self.pages[page].pending {
                continue;
            }
            self.pages[page].pending = false;
            if !self.pages[page].allocated {
                continue;
            }
            pass.counter_pages_visited += 1;
            self.walk_counter_page(page, &mut pass);
        }

        let first_dirty = self
            .attr_dirty
            .iter()
            .enumerate()
            .find(|(_, w)| **w != 0)
            .map(|(i, w)| i as u64 * 64 + u64::from(w.trailing_zeros()))
            .unwrap_or(self.file_pages)
            .min(self.file_pages);
        for wi in 0..self.attr_needwrite.len() {
            let base = wi as u64 * 64;
            if base >= first_dirty {
                break;
            }
            let mut m = self.attr_needwrite[wi];
            if first_dirty - base < 64 {
                m &= (1u64 << (first_dirty - base)) - 1;
            }
            if m == 0 {
                continue;
            }
            self.attr_needwrite[wi] &= !m;
            self.n_needwrite -= u64::from(m.count_ones());
            while m != 0 {
                let p = base + u64::from(m.trailing_zeros());
                m &= m - 1;
                self.write_page(p, WriteCause::Daemon);
                pass.pages_written += 1;
            }
        }
        self.daemon_done();
        DaemonOutcome::Ran(pass)
    }

    /// The daemon's `done:` label: `if (allclean == 0) thread->timeout = daemon_sleep`.
    fn daemon_done(&mut self) {
        if !self.allclean {
            self.thread_timeout = Some(self.config.daemon_sleep);
        }
    }

    /// Step 5 of the daemon for one allocated counter page, 64 counters at a time.
    ///
    /// Within a block the kernel's per-chunk steps commute (each touches its own counter and
    /// bit; the page attributes only accumulate), so a block is applied at once, except when
    /// the page's count could reach 0 inside it: then the kernel frees the page at that chunk
    /// and skips the rest, which the exact per-chunk loop reproduces.
    fn walk_counter_page(&mut self, page: usize, pass: &mut DaemonPass) {
        let lo = page << self.cps;
        let hi = (lo + (1usize << self.cps)).min(self.chunks as usize);
        let need_sync = self.need_sync;
        let mut base = lo;
        while base < hi {
            let end = (base + 64).min(hi);
            // A block of a page with more counted chunks than the block has counters (so
            // fewer 1 -> 0 steps than its count) cannot free the page: one pass. Otherwise
            // (and for the last, partial block) the 1s and 2s are found first.
            let count = self.pages[page].count;
            // The last, partial block, padded with zeros (made only for it: full blocks are
            // stepped in place).
            let mut partial: Option<[u16; 64]> = None;
            let blk = match <&mut [u16; 64]>::try_from(&mut self.counters[base..end]) {
                Ok(blk) if count > 64 => {
                    let steps = block::tick(blk, need_sync);
                    self.apply_block_steps(page, base, steps, pass);
                    base = end;
                    continue;
                }
                Ok(blk) => blk,
                Err(_) => {
                    let mut t = [0u16; 64];
                    t[..end - base].copy_from_slice(&self.counters[base..end]);
                    partial.insert(t)
                }
            };
            let (m1, m2) = block::masks(blk);
            if m1 | m2 == 0 {
                base = end;
                continue;
            }
            let n1 = if need_sync { 0 } else { m1.count_ones() };
            if n1 >= count {
                if self.walk_block_exact(page, base, m1 | m2, pass) {
                    return;
                }
                base = end;
                continue;
            }
            let steps = block::tick_masked(blk, (m1, m2), need_sync);
            if let Some(t) = &partial {
                self.counters[base..end].copy_from_slice(&t[..end - base]);
            }
            self.apply_block_steps(page, base, steps, pass);
            base = end;
        }
    }

    /// The page attributes and cached bits after [`block::tick`] stepped the block of chunks
    /// from `base` (a multiple of 64): `cleared` went 1 -> 0, `ticked` keep the page pending.
    #[inline(always)]
    fn apply_block_steps(
        &mut self,
        page: usize,
        base: usize,
        (cleared, ticked): (u64, u64),
        pass: &mut DaemonPass,
    ) {
        if ticked != 0 {
            self.pages[page].pending = true;
            self.allclean = false;
            pass.ticked += u64::from(ticked.count_ones());
        }
        if cleared != 0 {
            let n1 = cleared.count_ones();
            self.pages[page].count -= n1;
            pass.cleared += u64::from(n1);
            self.file_clear_bits(base as u64, cleared);
        }
    }

    /// The kernel's per-chunk walk over the chunks `base + k` for the bits `k` of `m` (each
    /// exactly 1 or 2). Returns true when the page was freed (the walk of the page ends).
    #[cold]
    fn walk_block_exact(
        &mut self,
        page: usize,
        base: usize,
        mut m: u64,
        pass: &mut DaemonPass,
    ) -> bool {
        while m != 0 {
            let j = base + m.trailing_zeros() as usize;
            m &= m - 1;
            let c = self.counters[j];
            if c == 1 && !self.need_sync {
                self.put(j, 0);
                pass.cleared += 1;
                let freed = self.count_page_dec(page);
                self.file_clear_bit(j as u64);
                if freed {
                    pass.counter_pages_freed += 1;
                    return true;
                }
            } else {
                // 2, or 1 while need_sync.
                self.put(j, 1);
                self.set_pending(page);
                self.allclean = false;
                pass.ticked += 1;
            }
        }
        false
    }

    /// `md_bitmap_file_clear_bit()` for the chunks `first + k`, bits `k` of `m`; `first` is a
    /// multiple of 64, so the bits share one cached word and one file page.
    #[inline(always)]
    fn file_clear_bits(&mut self, first: u64, m: u64) {
        let fbit = first + self.sb_bits;
        let page = fbit >> self.fps;
        if page >= self.file_pages {
            return;
        }
        let w = (fbit >> 6) as usize;
        self.bits[CACHED][w] &= !m;
        self.mark_diff(fbit);
        if !bit_test(&self.attr_needwrite, page) {
            bit_set(&mut self.attr_pending, page);
            self.allclean = false;
        }
    }

    /// Mirrors `md_bitmap_flush()` / `bitmap_flush()` (array stop): three daemon passes, each
    /// after rewinding `daemon_lastrun` by `2 × daemon_sleep`, then
    /// [`update_sb`](Self::update_sb).
    pub fn flush(&mut self, now: u64) {
        let sleep = self.config.daemon_sleep.wrapping_mul(2);
        for _ in 0..3 {
            self.daemon_lastrun = self.daemon_lastrun.wrapping_sub(sleep);
            self.daemon_work(now);
        }
        self.update_sb();
    }

    // ------------------------------------------------------------------------------------
    // Resync.

    /// `__bitmap_start_sync()` for one counter.
    fn start_sync_one(&mut self, offset: u64, degraded: bool) -> (bool, u64) {
        let (idx, blocks) = self.get_counter(offset);
        let mut rv = false;
        if let Some(idx) = idx {
            let old = self.counters[idx];
            if old & RESYNC_MASK != 0 {
                rv = true;
            } else if old & NEEDED_MASK != 0 {
                rv = true;
                if !degraded {
                    self.put(idx, (old | RESYNC_MASK) & !NEEDED_MASK);
                }
            }
        }
        (rv, blocks)
    }

    /// Mirrors `md_bitmap_start_sync()` (≤6.11) / `bitmap_start_sync()` (6.12+): calls
    /// `__bitmap_start_sync` until at least one page (`PAGE_SIZE >> 9` sectors) is covered and
    /// ORs the results. Per counter: RESYNC → sync; NEEDED → sync, and unless `degraded` NEEDED
    /// becomes RESYNC. A missing counter page reports its whole span (2048 chunks) as not
    /// needing sync. `degraded` is the personality's "the array will still be degraded after
    /// this sync" (bits are kept for a later re-add).
    pub fn start_sync(&mut self, mut offset: u64, degraded: bool) -> SyncBlocks {
        let min = self.geo.page_size() >> 9;
        let mut blocks = 0;
        let mut sync = false;
        while blocks < min {
            let (rv, b) = self.start_sync_one(offset, degraded);
            sync |= rv;
            offset = offset.wrapping_add(b);
            blocks += b;
        }
        SyncBlocks { sync, blocks }
    }

    /// Mirrors `md_bitmap_end_sync(bitmap, offset, &blocks, aborted)` (≤6.11) /
    /// `__bitmap_end_sync()` (6.12+): if RESYNC is set it is cleared; then if `aborted` and not
    /// NEEDED → NEEDED; otherwise a raw value ≤ 2 makes the page pending and `allclean = 0`.
    /// Returns `*blocks` (sectors to the end of the chunk, or of a missing page's span).
    pub fn end_sync(&mut self, offset: u64, aborted: bool) -> u64 {
        let (idx, blocks) = self.get_counter(offset);
        if let Some(idx) = idx {
            let old = self.counters[idx];
            if old & RESYNC_MASK != 0 {
                let mut c = old & !RESYNC_MASK;
                if c & NEEDED_MASK == 0 && aborted {
                    c |= NEEDED_MASK;
                } else if c <= 2 {
                    self.set_pending(idx >> self.cps);
                    self.allclean = false;
                }
                self.put(idx, c);
            }
        }
        blocks
    }

    /// Mirrors the 6.12+ `end_sync` op (`bitmap_end_sync(mddev, offset, &blocks)`), which
    /// always passes `aborted = true` (as every ≤6.11 personality call did): used by
    /// personalities for an aborted sync range.
    pub fn end_sync_op(&mut self, offset: u64) -> u64 {
        self.end_sync(offset, true)
    }

    /// Mirrors `md_bitmap_close_sync()` / `bitmap_close_sync()`: `end_sync(aborted = 0)` from
    /// sector 0 to `resync_max_sectors`, stepping by the returned blocks.
    pub fn close_sync(&mut self) {
        let end = self.geo.sync_size();
        let mut sector = 0u64;
        while sector < end {
            sector += self.end_sync(sector, false);
        }
    }

    /// Mirrors `md_bitmap_cond_end_sync()` / `bitmap_cond_end_sync()` at time `now`.
    ///
    /// `sector == 0` only records `last_end_sync = now`. Otherwise, unless `force`, nothing
    /// happens before `last_end_sync + daemon_sleep`; then `curr_resync_completed = sector`, and
    /// `end_sync(aborted = 0)` runs on every chunk below `sector` rounded down to a chunk, and
    /// `last_end_sync = now`. Returns whether it ran. (The kernel first waits for
    /// `recovery_active == 0`; that is the caller's business.)
    pub fn cond_end_sync(&mut self, sector: u64, force: bool, now: u64) -> bool {
        if sector == 0 {
            self.last_end_sync = now;
            return false;
        }
        if !force
            && time_before(
                now,
                self.last_end_sync.wrapping_add(self.config.daemon_sleep),
            )
        {
            return false;
        }
        self.curr_resync_completed = sector;
        let limit = sector & !((1u64 << self.shift) - 1);
        let end = self.geo.sync_size();
        let mut s = 0u64;
        while s < limit && s < end {
            s += self.end_sync(s, false);
        }
        self.last_end_sync = now;
        true
    }

    /// Mirrors `md_bitmap_dirty_bits()` (sysfs `md/bitmap_set_bits`) for chunks
    /// `first..=last`: `set_memory_bits(needed = 1)` and `md_bitmap_file_set_bit()` each.
    /// (The kernel also moves `recovery_cp` back to the first chunk; that is md state.)
    pub fn dirty_bits(&mut self, first: u64, last: u64) {
        let mut chunk = first;
        while chunk <= last {
            self.set_memory_bits(chunk, true);
            self.file_set_bit(chunk);
            if chunk == u64::MAX {
                break;
            }
            chunk += 1;
        }
    }

    // ------------------------------------------------------------------------------------
    // Loading.

    /// Replace both bit copies with `bits` (the bit area: chunk `i` in byte `i / 8`, bit
    /// `i % 8`); attributes cleared.
    fn reset_storage_from(&mut self, bits: &[u8]) {
        self.bits[CACHED].fill(0);
        self.bits[DISK].fill(0);
        let cap = (self.file_pages * self.geo.page_size() - BITMAP_SB_BYTES) as usize;
        let base = BITMAP_SB_BYTES as usize;
        for (k, &b) in bits.iter().take(cap).enumerate() {
            let fb = base + k;
            self.bits[CACHED][fb / 8] |= u64::from(b) << ((fb % 8) * 8);
        }
        let [cached, disk] = &mut self.bits;
        disk.copy_from_slice(cached);
        self.disk_set = self.count_bits(DISK);
        self.diff.fill(0);
        self.attr_dirty.fill(0);
        self.attr_pending.fill(0);
        self.attr_needwrite.fill(0);
        self.n_needwrite = 0;
    }

    /// Set bits of chunks `0..chunks` in the cached (`which = CACHED`) or on-disk copy.
    fn count_bits(&self, which: usize) -> u64 {
        let first = (self.sb_bits / 64) as usize;
        let last = self.end_fbit.div_ceil(64) as usize;
        (first..last)
            .map(|w| u64::from((self.bits[which][w] & self.in_range_mask(w)).count_ones()))
            .sum()
    }

    /// Chunks `< chunks` whose cached bit is set, in order.
    fn cached_chunks(&self) -> Vec<u64> {
        let mut out = Vec::new();
        for w in (self.sb_bits / 64) as usize..self.bits[CACHED].len() {
            let mut m = self.bits[CACHED][w] & self.in_range_mask(w);
            while m != 0 {
                out.push(w as u64 * 64 + u64::from(m.trailing_zeros()) - self.sb_bits);
                m &= m - 1;
            }
        }
        out
    }

    /// Mirrors `md_bitmap_load()` → `md_bitmap_init_from_disk(bitmap, start)` (assembly) with
    /// the on-disk bit area `bits` (chunk `i` in byte `i / 8`, bit `i % 8`; missing bytes read
    /// as 0).
    ///
    /// First `start_sync` over the whole range and `close_sync` ("clear out old bitmap info").
    /// Then the pages are read (cached = on-disk = `bits`). A stale bitmap has every bit of
    /// every page set (`memset 0xff`, padding included) and each page written
    /// ([`PageWrites::load`]). Every set bit of a chunk `i < chunks` becomes counter 2 (page
    /// pending, `allclean = 0`), plus NEEDED when the chunk ends at or after `start`
    /// (`(i + 1) << chunkshift >= start`). Finally the md thread timeout is `daemon_sleep` and
    /// [`update_sb`](Self::update_sb) writes page 0.
    pub fn load_from_disk(&mut self, bits: &[u8], params: &LoadParams) {
        let end = self.geo.sync_size();
        let mut sector = 0u64;
        while sector < end {
            sector += self.start_sync(sector, false).blocks;
        }
        self.close_sync();

        self.events = params.events;
        self.events_cleared = if params.stale {
            params.events
        } else {
            params.events_cleared
        };
        // The superblock page still holds what was read until update_sb() below.
        self.sb.events_cleared = params.events_cleared;
        self.disk_sb.events_cleared = params.events_cleared;

        self.reset_storage_from(bits);
        if params.stale {
            let wpp = self.words_per_page;
            for p in 0..self.file_pages {
                let first = p as usize * wpp;
                let lo = if p == 0 {
                    (self.sb_bits / 64) as usize
                } else {
                    0
                };
                for w in first + lo..first + wpp {
                    self.bits[CACHED][w] = !0;
                    self.diff[w / 64] |= 1 << (w % 64);
                }
                self.write_page(p, WriteCause::Load);
            }
        }
        let shift = self.shift;
        for chunk in self.cached_chunks() {
            let needed = (chunk + 1) << shift >= params.start;
            self.set_memory_bits(chunk, needed);
        }
        self.thread_timeout = Some(self.config.daemon_sleep);
        self.update_sb();
    }

    /// Attach to a running array: the on-disk bit area `bits` becomes both bit copies, and every
    /// set bit of a chunk `i < chunks` gets counter 2 without NEEDED (page pending,
    /// `allclean = 0`), as if loaded cleanly. `events` is `mddev->events`; `events_cleared`
    /// comes from the bitmap superblock. Not a kernel function: the real counters of a live
    /// array may be 1 (the daemon half-way) or carry writes in flight; reconcile them with
    /// [`set_counter`](Self::set_counter) if the kernel's counters can be read. Call it on a
    /// fresh bitmap; no page writes are counted.
    pub fn seed_from_disk(&mut self, bits: &[u8], events: u64, events_cleared: u64) {
        self.reset_storage_from(bits);
        self.events = events;
        self.events_cleared = events_cleared;
        self.sb = SuperblockModel {
            events,
            events_cleared,
        };
        self.disk_sb = self.sb;
        for chunk in self.cached_chunks() {
            self.set_memory_bits(chunk, false);
        }
        self.thread_timeout = Some(self.config.daemon_sleep);
    }

    /// Overwrite one counter with a raw value read from the kernel (reconciliation; not a
    /// kernel transition). Keeps the engine's bookkeeping consistent: the counter page is
    /// allocated and counted when the value becomes non-zero from 0, uncounted (and freed at
    /// count 0) when it becomes 0; a value of 1 or 2 makes the page pending. Bits are not
    /// touched. Returns false for a chunk past the last counter page.
    pub fn set_counter(&mut self, chunk: u64, raw: u16) -> bool {
        if chunk >= self.counter_limit {
            return false;
        }
        let page = (chunk >> self.cps) as usize;
        let idx = chunk as usize;
        let old = self.counters[idx];
        if old == raw {
            return true;
        }
        if !self.pages[page].allocated {
            self.alloc_page(page);
        }
        self.put(idx, raw);
        if raw == 1 || raw == 2 {
            self.set_pending(page);
            self.allclean = false;
        }
        if old == 0 {
            self.count_page_inc(page);
        } else if raw == 0 {
            self.count_page_dec(page);
        }
        true
    }

    /// Makes the cached (in-memory) bit of `chunk` agree with its counter, as md keeps it on a
    /// running array: `md_bitmap_startwrite()` sets the bit when a counter leaves 0
    /// (`md_bitmap_file_set_bit()`: page DIRTY, written at the next unplug) and
    /// `md_bitmap_daemon_work()` clears it when a counter reaches 0
    /// (`md_bitmap_file_clear_bit()`: page PENDING, written by the next pass). For attaching to
    /// a running array after [`set_counter`](Self::set_counter), when the on-disk bits were
    /// read at another instant than the counters. Not a kernel transition; returns whether the
    /// bit changed.
    pub fn align_cached_bit(&mut self, chunk: u64) -> bool {
        if chunk >= self.geo.chunks() {
            return false;
        }
        let want = self.counters.get(chunk as usize).is_some_and(|c| *c != 0);
        if self.cached_bit(chunk) == want {
            return false;
        }
        if want {
            self.file_set_bit(chunk);
        } else {
            self.file_clear_bit(chunk);
        }
        true
    }

    /// Gives the chunks of `[offset, offset + sectors)` the state a failed end-write leaves
    /// (`md_bitmap_endwrite()` with `success == 0` on 6.1-6.13: NEEDED set before the
    /// decrement, so the daemon never clears the chunk), for an end-write that was applied as
    /// successful before its real event said otherwise (a repair of a lost event). A chunk the
    /// daemon has since ticked from 2 to 1 is back at 2, one it cleared has its counter and
    /// cached bit back. Not a kernel transition; returns the number of chunks changed.
    pub fn mark_needed(&mut self, offset: u64, sectors: u64) -> u64 {
        let shift = self.geo.chunkshift();
        let (first, last) = (offset >> shift, (offset + sectors.max(1) - 1) >> shift);
        let mut changed = 0;
        for chunk in first..=last.min(self.geo.chunks().saturating_sub(1)) {
            let c = self.counter(chunk);
            if c.needed() {
                continue;
            }
            let raw = NEEDED_MASK | c.count().max(2);
            if self.set_counter(chunk, raw) {
                self.align_cached_bit(chunk);
                changed += 1;
            }
        }
        changed
    }

    // ------------------------------------------------------------------------------------
    // md state the bitmap reads.

    /// Tell the bitmap `mddev->events` (the md superblock event count). End-writes on a
    /// non-degraded array advance `events_cleared` to it (setting `need_sync`).
    pub fn set_events(&mut self, events: u64) {
        self.events = events;
    }

    /// `mddev->events` as last told.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// `bitmap->events_cleared`.
    pub fn events_cleared(&self) -> u64 {
        self.events_cleared
    }

    /// `bitmap->need_sync` (sysfs `bitmap/can_clear` shows its negation).
    pub fn need_sync(&self) -> bool {
        self.need_sync
    }

    /// `bitmap->allclean`: the last daemon pass found nothing to do and nothing happened since.
    pub fn allclean(&self) -> bool {
        self.allclean
    }

    /// The cached bitmap superblock fields.
    pub fn sb(&self) -> SuperblockModel {
        self.sb
    }

    /// The superblock fields as last written to disk (with page 0).
    pub fn disk_sb(&self) -> SuperblockModel {
        self.disk_sb
    }

    /// `bitmap->daemon_lastrun` (caller's time unit).
    pub fn daemon_lastrun(&self) -> u64 {
        self.daemon_lastrun
    }

    /// Sets `bitmap->allclean` to a value read from the kernel (attach to a running array). Not
    /// a kernel transition.
    pub fn set_allclean(&mut self, allclean: bool) {
        self.allclean = allclean;
    }

    /// Sets `bitmap->daemon_lastrun` to a value read from the kernel (a replayer that stamped a
    /// pass with an earlier `now` than the kernel's own `jiffies` read). Not a kernel transition.
    pub fn set_daemon_lastrun(&mut self, lastrun: u64) {
        self.daemon_lastrun = lastrun;
    }

    /// The earliest `now` at which [`daemon_work`](Self::daemon_work) runs:
    /// `daemon_lastrun + daemon_sleep`.
    pub fn next_daemon_due(&self) -> u64 {
        self.daemon_lastrun.wrapping_add(self.config.daemon_sleep)
    }

    /// The md thread's timeout as the bitmap last set it: `Some(daemon_sleep)` while there is
    /// work, `None` for `MAX_SCHEDULE_TIMEOUT` (the daemon stops ticking until the md thread is
    /// woken for another reason; a replayer should then call `daemon_work` only on such
    /// wake-ups). `None` also before load.
    pub fn daemon_timeout(&self) -> Option<u64> {
        self.thread_timeout
    }

    /// Daemon passes that ran (not `NotDue`, not `AllClean`).
    pub fn daemon_passes(&self) -> u64 {
        self.daemon_passes
    }

    /// `bitmap->last_end_sync` (caller's time unit).
    pub fn last_end_sync(&self) -> u64 {
        self.last_end_sync
    }

    /// `mddev->curr_resync_completed` as last set by [`cond_end_sync`](Self::cond_end_sync).
    pub fn curr_resync_completed(&self) -> u64 {
        self.curr_resync_completed
    }

    // ------------------------------------------------------------------------------------
    // Queries.

    /// The geometry.
    pub fn geometry(&self) -> &BitmapGeometry {
        &self.geo
    }

    /// The configuration.
    pub fn config(&self) -> &BitmapConfig {
        &self.config
    }

    /// Change `daemon_sleep` (sysfs `bitmap/time_base`), caller's time unit.
    pub fn set_daemon_sleep(&mut self, daemon_sleep: u64) {
        self.config.daemon_sleep = daemon_sleep;
    }

    /// A cache hint for a replayer that knows its next calls: touches `chunk`'s counter and
    /// its cached and on-disk bitmap words (the page write after a first write compares them)
    /// ahead of a start-/end-write on it, so that their cache misses overlap with the work in
    /// between. A plain load (no `unsafe` prefetch intrinsic); changes no state.
    #[inline(always)]
    pub fn prefetch_chunk(&self, chunk: u64) {
        std::hint::black_box(self.touch_chunk(chunk));
    }

    /// The loads of [`prefetch_chunk`](Self::prefetch_chunk), their values folded into one
    /// (for a caller that touches several chunks before using any: their loads then overlap).
    #[inline(always)]
    pub fn touch_chunk(&self, chunk: u64) -> u64 {
        let w = (chunk.wrapping_add(self.sb_bits) >> 6) as usize;
        u64::from(self.counters.get(chunk as usize).copied().unwrap_or(0))
            ^ self.bits[CACHED].get(w).copied().unwrap_or(0)
            ^ self.bits[DISK].get(w).copied().unwrap_or(0)
    }

    /// The counter of `chunk` (0 past the last counter page). Chunks in
    /// `chunks..counter_pages × 2048` exist in the kernel too.
    #[inline]
    pub fn counter(&self, chunk: u64) -> Counter {
        Counter(
            usize::try_from(chunk)
                .ok()
                .and_then(|i| self.counters.get(i))
                .copied()
                .unwrap_or(0),
        )
    }

    /// All counters, raw, indexed by chunk (length `counter_pages × counters_per_page`).
    pub fn counters(&self) -> &[u16] {
        &self.counters
    }

    fn file_bit(&self, which: usize, chunk: u64) -> bool {
        match chunk.checked_add(self.sb_bits) {
            Some(fb) if (fb >> self.fps) < self.file_pages => {
                self.bits[which][(fb >> 6) as usize] >> (fb & 63) & 1 != 0
            }
            _ => false,
        }
    }

    /// The chunk's bit in the cached filemap (what the kernel's pages hold).
    pub fn cached_bit(&self, chunk: u64) -> bool {
        self.file_bit(CACHED, chunk)
    }

    /// The chunk's bit on disk (as of the last write of its file page).
    pub fn disk_bit(&self, chunk: u64) -> bool {
        self.file_bit(DISK, chunk)
    }

    /// The file page holding `chunk`'s bit (`(chunk + 2048) >> 15` with 4 KiB pages).
    pub fn file_page_of(&self, chunk: u64) -> u64 {
        self.geo.file_page_of(chunk)
    }

    /// Attributes of file page `page` (all false past the last page).
    pub fn file_page_attrs(&self, page: u64) -> PageAttrs {
        if page >= self.file_pages {
            return PageAttrs::default();
        }
        PageAttrs {
            dirty: bit_test(&self.attr_dirty, page),
            pending: bit_test(&self.attr_pending, page),
            needwrite: bit_test(&self.attr_needwrite, page),
        }
    }

    /// State of counter page `page` (default past the last page).
    pub fn counter_page(&self, page: u64) -> CounterPageState {
        usize::try_from(page)
            .ok()
            .and_then(|p| self.pages.get(p))
            .map(|p| CounterPageState {
                allocated: p.allocated,
                pending: p.pending,
                count: p.count,
            })
            .unwrap_or_default()
    }

    /// `counts.pages - counts.missing_pages`: allocated counter pages (mdstat's `A`).
    pub fn allocated_pages(&self) -> u64 {
        self.pages.len() as u64 - self.missing_pages
    }

    /// Chunks whose on-disk bit is set, O(1) (the same figure as
    /// [`Summary::disk_dirty_chunks`](super::Summary::disk_dirty_chunks)).
    pub fn disk_dirty_chunks(&self) -> u64 {
        self.disk_set
    }

    /// The `/proc/mdstat` bitmap line, as `md_bitmap_status()` prints it (without the newline):
    /// `bitmap: A/B pages [KKB], NKB chunk`.
    pub fn mdstat_line(&self) -> String {
        let a = self.allocated_pages();
        format!(
            "bitmap: {}/{} pages [{}KB], {} chunk",
            a,
            self.pages.len(),
            (a * self.geo.page_size()) >> 10,
            self.geo.mdstat_chunk()
        )
    }

    fn bytes_of(&self, which: usize) -> Vec<u8> {
        let base = BITMAP_SB_BYTES as usize;
        (0..self.geo.bit_bytes() as usize)
            .map(|k| {
                let fb = base + k;
                (self.bits[which][fb / 8] >> ((fb % 8) * 8)) as u8
            })
            .collect()
    }

    /// The on-disk bit area in the on-disk layout: `DIV_ROUND_UP(chunks, 8)` bytes, chunk `i`
    /// in byte `i / 8`, bit `i % 8` (`set_bit_le`), i.e. the bytes after the 256-byte
    /// superblock. Padding bits of the last byte are as written (a stale load sets them).
    pub fn disk_bitmap_bytes(&self) -> Vec<u8> {
        self.bytes_of(DISK)
    }

    /// Like [`disk_bitmap_bytes`](Self::disk_bitmap_bytes) for the cached copy.
    pub fn cached_bitmap_bytes(&self) -> Vec<u8> {
        self.bytes_of(CACHED)
    }

    fn ranges_of(&self, which: usize) -> Vec<Range<u64>> {
        let mut out = Vec::new();
        let mut start: Option<u64> = None;
        let first = (self.sb_bits / 64) as usize;
        let last = self.end_fbit.div_ceil(64) as usize;
        for w in first..last {
            let mask = self.in_range_mask(w);
            let x = self.bits[which][w] & mask;
            match start {
                None if x == 0 => continue,
                Some(_) if x == !0 => continue,
                _ => {}
            }
            // The in-range bits are bits 0..n of the word (the bitmap starts at a word
            // boundary: `sb_bits` is 2048). From each run edge to the next: the next set bit
            // outside a run, the next clear bit inside one.
            let lo = w as u64 * 64;
            let n = mask.count_ones();
            let mut b = 0;
            while b < n {
                let edges = (if start.is_some() { !x } else { x }) >> b;
                if edges == 0 {
                    break;
                }
                b += edges.trailing_zeros();
                if b >= n {
                    break;
                }
                let at = lo + u64::from(b) - self.sb_bits;
                match start.take() {
                    None => start = Some(at),
                    Some(s) => out.push(s..at),
                }
            }
        }
        if let Some(s) = start {
            out.push(s..self.chunks);
        }
        out
    }

    /// Runs of chunks whose bit is set on disk, as half-open `[start, end)` chunk ranges in
    /// order (what a resync after a crash would cover, if NEEDED).
    pub fn disk_dirty_ranges(&self) -> Vec<Range<u64>> {
        self.ranges_of(DISK)
    }

    /// Runs of chunks whose cached bit is set, half-open chunk ranges.
    pub fn cached_dirty_ranges(&self) -> Vec<Range<u64>> {
        self.ranges_of(CACHED)
    }

    /// Runs of chunks `< chunks` whose counter satisfies `pred`, half-open chunk ranges (e.g.
    /// `|c| c.needed()` or `|c| c.has_writes_in_flight()`). Scans every counter.
    pub fn counter_ranges(&self, pred: impl Fn(Counter) -> bool) -> Vec<Range<u64>> {
        let mut out = Vec::new();
        let mut start = None;
        for (i, &c) in self.counters[..self.chunks as usize].iter().enumerate() {
            let i = i as u64;
            match (start, pred(Counter(c))) {
                (None, true) => start = Some(i),
                (Some(s), false) => {
                    out.push(s..i);
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            out.push(s..self.chunks);
        }
        out
    }

    /// Page writes so far, by cause.
    pub fn page_writes(&self) -> PageWrites {
        self.writes
    }

    /// Unbalanced or out-of-range calls seen so far.
    pub fn anomalies(&self) -> Anomalies {
        self.anomalies
    }

    /// Counts, O(chunks) (one pass over the counters and the bits): see [`Summary`] for the
    /// definitions.
    pub fn summary(&self) -> Summary {
        let mut blocked_chunks: Vec<u64> = self.blocked.iter().map(|w| w.chunk).collect();
        blocked_chunks.sort_unstable();
        blocked_chunks.dedup();
        let stats = CounterStats::scan(&self.counters);
        Summary {
            chunks: self.chunks,
            counter_pages: self.pages.len() as u64,
            allocated_pages: self.allocated_pages(),
            pending_counter_pages: self.pages.iter().filter(|p| p.pending).count() as u64,
            file_pages: self.file_pages,
            dirty_file_pages: popcount(&self.attr_dirty),
            pending_file_pages: popcount(&self.attr_pending),
            needwrite_file_pages: self.n_needwrite,
            nonzero_chunks: stats.nonzero,
            in_flight_chunks: stats.in_flight_chunks,
            in_flight_writes: stats.in_flight_writes,
            needed_chunks: stats.needed,
            resync_chunks: stats.resync,
            cached_dirty_chunks: self.count_bits(CACHED),
            disk_dirty_chunks: self.count_bits(DISK),
            blocked_writers: self.blocked.len() as u64,
            blocked_chunks: blocked_chunks.len() as u64,
            behind_writes: self.behind_writes,
            behind_writes_used: self.behind_writes_used,
            events: self.events,
            events_cleared: self.events_cleared,
            need_sync: self.need_sync,
            allclean: self.allclean,
            daemon_passes: self.daemon_passes,
            page_writes: self.writes,
            anomalies: self.anomalies,
        }
    }

    /// Heap bytes held by the model's data structures (capacities), for the memory budget:
    /// about 2 bytes (counter) + 2 × 1/8 byte (bits) per chunk plus per-page overhead.
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        self.counters.capacity() * size_of::<u16>()
            + self.pages.capacity() * size_of::<CounterPage>()
            + (self.bits[CACHED].capacity() + self.bits[DISK].capacity()) * size_of::<u64>()
            + (self.diff.capacity()
                + self.attr_dirty.capacity()
                + self.attr_pending.capacity()
                + self.attr_needwrite.capacity())
                * size_of::<u64>()
            + self.blocked.capacity() * size_of::<BlockedWriter>()
            + self.resumed.capacity() * size_of::<u64>()
    }

    /// Recount every incrementally maintained figure from scratch and compare (tests and
    /// debugging): returns the names of the figures that disagree.
    pub fn check_consistency(&self) -> Vec<&'static str> {
        let mut bad = Vec::new();
        let mut s = CounterStats::default();
        for &c in &self.counters {
            s.apply(0, c);
        }
        if s != CounterStats::scan(&self.counters) {
            bad.push("counter stats");
        }
        let missing = self.pages.iter().filter(|p| !p.allocated).count() as u64;
        if missing != self.missing_pages {
            bad.push("missing pages");
        }
        if self.disk_set != self.count_bits(DISK) {
            bad.push("on-disk bit count");
        }
        let mut diff_ok = true;
        for (w, (&cw, &dw)) in self.bits[CACHED].iter().zip(&self.bits[DISK]).enumerate() {
            diff_ok &= cw == dw || self.diff[w / 64] >> (w % 64) & 1 != 0;
        }
        if !diff_ok {
            bad.push("diff tracking");
        }
        if popcount(&self.attr_needwrite) != self.n_needwrite {
            bad.push("needwrite page count");
        }
        for (p, page) in self.pages.iter().enumerate() {
            let lo = p << self.cps;
            let hi = lo + (1 << self.cps);
            if !page.allocated && self.counters[lo..hi].iter().any(|&c| c != 0) {
                bad.push("counters on a missing page");
                break;
            }
        }
        bad
    }
}
