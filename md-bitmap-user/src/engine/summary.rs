//! Cheap, immutable figures about a [`Bitmap`](super::Bitmap): counts, page writes, daemon
//! passes and anomalies.

/// File-page writes, counted the way the kernel issues them: one per file page written (the
/// kernel then sends that page to every active member; members are not multiplied in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct PageWrites {
    /// Pages unplug wrote because they were DIRTY (newly set bits). These are the synchronous
    /// metadata writes a first write to a clean chunk waits for.
    pub unplug_dirty: u64,
    /// Pages unplug wrote that were only NEEDWRITE (cleared bits carried along).
    pub unplug_needwrite: u64,
    /// Unplug calls that wrote at least one page: each is one synchronous wait for the writer.
    pub unplug_batches: u64,
    /// Pages the daemon wrote (cleared bits, `events_cleared`), asynchronously.
    pub daemon: u64,
    /// Page 0 written by `update_sb` (md superblock updates, load, flush).
    pub sb_update: u64,
    /// Pages written while loading a stale bitmap.
    pub load: u64,
}

impl PageWrites {
    /// All page writes (`unplug_batches` is not a write and is not included).
    pub fn total(&self) -> u64 {
        self.unplug_dirty + self.unplug_needwrite + self.daemon + self.sb_update + self.load
    }

    /// Page writes caused by bits being set or cleared (unplug + daemon), the figure a chunk-size
    /// tuner compares across chunk sizes.
    pub fn bit_traffic(&self) -> u64 {
        self.unplug_dirty + self.unplug_needwrite + self.daemon
    }
}

/// Calls the kernel would handle oddly; all zero when start/end calls are balanced and in
/// range. A non-zero value usually means the feed lost events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Anomalies {
    /// End-writes on a chunk whose `COUNTER()` was 0: the kernel's `(*bmc)--` wraps the u16
    /// (to NEEDED|RESYNC|COUNTER_MAX from 0), modelled as such.
    pub end_write_underflow: u64,
    /// End-writes that reached a chunk whose counter page was not allocated: the kernel
    /// returns there, skipping the rest of the range.
    pub end_write_unallocated: u64,
    /// Chunks past the last counter page (`md_bitmap_get_counter` returns NULL; start/end
    /// write return).
    pub beyond_last_page: u64,
    /// Start-writes on chunks `>= chunks` but inside the last counter page: the kernel counts
    /// them (and sets a padding bit); the daemon never walks them back to 0.
    pub beyond_chunks: u64,
    /// End of a write-behind write with `behind_writes <= 0`.
    pub behind_underflow: u64,
}

impl Anomalies {
    /// True when nothing odd was seen.
    pub fn is_empty(&self) -> bool {
        *self == Anomalies::default()
    }
}

/// What one daemon pass that ran did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct DaemonPass {
    /// Allocated counter pages walked (their `pending` was set).
    pub counter_pages_visited: u64,
    /// Counters set to 1 (from 2, or left at 1 while `need_sync`).
    pub ticked: u64,
    /// Counters taken from 1 to 0 (their cached bit cleared).
    pub cleared: u64,
    /// Counter pages freed (count reached 0).
    pub counter_pages_freed: u64,
    /// File pages written.
    pub pages_written: u64,
    /// `need_sync` was handled: `events_cleared` copied to the superblock, page 0 NEEDWRITE.
    pub synced_events_cleared: bool,
}

/// What [`Bitmap::daemon_work`](super::Bitmap::daemon_work) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DaemonOutcome {
    /// `time_before(now, daemon_lastrun + daemon_sleep)`: returned at once.
    NotDue,
    /// `allclean` was set: `daemon_lastrun = now`, the md thread timeout becomes
    /// `MAX_SCHEDULE_TIMEOUT`, nothing else.
    AllClean,
    /// The pass ran.
    Ran(DaemonPass),
}

impl DaemonOutcome {
    /// True when the pass ran (walked counters, wrote pages).
    pub fn ran(&self) -> bool {
        matches!(self, DaemonOutcome::Ran(_))
    }

    /// The pass details, if it ran.
    pub fn pass(&self) -> Option<&DaemonPass> {
        match self {
            DaemonOutcome::Ran(p) => Some(p),
            _ => None,
        }
    }
}

/// Counts over one bitmap, taken in O(chunks) (one pass over the counters and the bits) by
/// [`Bitmap::summary`](super::Bitmap::summary).
///
/// Definitions (for balanced start/end calls):
/// * a chunk has **writes in flight** when `COUNTER(x) > 2`; it then has exactly
///   `COUNTER(x) − 2` of them. Start-write always lifts a counter to ≥ 3 (0 and 1 become 2
///   before the increment), so while any write is in flight both ticks are present and the
///   count is never 1 or 2. Writers blocked at `COUNTER_MAX` are not counted in the counter
///   (they have not incremented it yet) and appear in `blocked_writers` instead;
/// * **dirty on disk** / **dirty in cache**: chunks `< chunks` whose bit is set in that copy;
/// * **NEEDED** / **RESYNC**: chunks with that flag (they also hold the bit and never drop it
///   while the flag is set);
/// * **non-zero**: counters not 0 (dirty in memory, including the daemon's half-way 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Summary {
    /// `counts.chunks`.
    pub chunks: u64,
    /// `counts.pages` (mdstat `B`).
    pub counter_pages: u64,
    /// Allocated counter pages (mdstat `A`).
    pub allocated_pages: u64,
    /// Counter pages with `pending` set.
    pub pending_counter_pages: u64,
    /// `storage.file_pages`.
    pub file_pages: u64,
    /// File pages with DIRTY.
    pub dirty_file_pages: u64,
    /// File pages with PENDING.
    pub pending_file_pages: u64,
    /// File pages with NEEDWRITE.
    pub needwrite_file_pages: u64,
    /// Counters not 0.
    pub nonzero_chunks: u64,
    /// Chunks with `COUNTER(x) > 2`.
    pub in_flight_chunks: u64,
    /// Sum over chunks of `COUNTER(x) − 2` where positive: (write, chunk) pairs in flight.
    pub in_flight_writes: u64,
    /// Chunks with NEEDED.
    pub needed_chunks: u64,
    /// Chunks with RESYNC.
    pub resync_chunks: u64,
    /// Chunks whose cached bit is set.
    pub cached_dirty_chunks: u64,
    /// Chunks whose on-disk bit is set (what `mdadm -X` would call dirty).
    pub disk_dirty_chunks: u64,
    /// Writers blocked at `COUNTER_MAX`.
    pub blocked_writers: u64,
    /// Distinct chunks those writers wait on.
    pub blocked_chunks: u64,
    /// Write-behind writes in flight.
    pub behind_writes: i32,
    /// High-water mark of `behind_writes`.
    pub behind_writes_used: i32,
    /// `mddev->events`.
    pub events: u64,
    /// `bitmap->events_cleared`.
    pub events_cleared: u64,
    /// `bitmap->need_sync`.
    pub need_sync: bool,
    /// `bitmap->allclean`.
    pub allclean: bool,
    /// Daemon passes that ran.
    pub daemon_passes: u64,
    /// Page writes so far.
    pub page_writes: PageWrites,
    /// Odd calls so far.
    pub anomalies: Anomalies,
}
