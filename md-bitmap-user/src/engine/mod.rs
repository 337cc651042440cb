//! The bitmap engine: a model of the kernel's classic write-intent bitmap (drivers/md/md-bitmap.c).
//!
//! No I/O, no clock, no `unsafe`: every input is a call the kernel makes on the bitmap, and time
//! comes in as a `u64` `now` in the caller's unit, the same unit as
//! [`BitmapConfig::daemon_sleep`] (the live feed passes jiffies, trace replay nanoseconds). Sector
//! arguments are 512-byte sectors of bitmap address space ([`mapping`] turns array writes into
//! them); chunk sizes are bytes.
//!
//! # The state machine
//!
//! Each bitmap chunk has a 16-bit counter ([`Counter`]) and one bit, of which there are two
//! copies: the **cached** bit in the kernel's page of the bitmap "file" and the **on-disk** bit,
//! which changes only when that file page is written to the members.
//!
//! The counter's low 14 bits are *writes in flight plus up to two "ticks"* standing for the
//! on-disk bit; bit 15 is [`NEEDED_MASK`] (resync needed), bit 14 [`RESYNC_MASK`] (resync
//! running):
//!
//! * **0** clean: no writes, bit clear (or its clearing not yet written).
//! * **start-write** ([`Bitmap::start_write`]): 0 → set the cached bit, mark its file page
//!   DIRTY, count the counter page, then as 1; 1 → 2; then increment. One write on a clean chunk
//!   leaves 3, N concurrent writes N+2. At [`COUNTER_MAX`] the writer sleeps until an end-write
//!   on the chunk.
//! * **unplug** ([`Bitmap::unplug`]) writes every DIRTY (and NEEDWRITE) file page before the
//!   data writes go down: the set bit is on disk before the data it protects.
//! * **end-write** ([`Bitmap::end_write`]) decrements; on a healthy array it advances
//!   `events_cleared` to the md event count (`need_sync`), on a failed (≤6.13) or degraded
//!   (≥6.14) write it sets NEEDED instead ([`EndWriteRule`]). A counter that drops to ≤ 2 makes
//!   its counter page *pending* and clears `allclean`.
//! * **the daemon** ([`Bitmap::daemon_work`], every `daemon_sleep`) walks pending counter pages:
//!   2 → 1; 1 → 0 and the cached bit is cleared (file page PENDING). On the next pass PENDING
//!   becomes NEEDWRITE and the page is written, so the bit leaves the disk 2–3 passes after the
//!   chunk went idle. Any value above 2 (writes in flight, NEEDED, RESYNC) is left alone, so a
//!   NEEDED chunk keeps its bit until a resync handles it.
//! * **resync**: start-sync turns NEEDED into RESYNC (unless the array stays degraded),
//!   end-sync clears RESYNC and lets the daemon clean the chunk, or puts NEEDED back if the sync
//!   was aborted ([`Bitmap::start_sync`], [`Bitmap::end_sync`], [`Bitmap::close_sync`],
//!   [`Bitmap::cond_end_sync`]).
//! * **load** ([`Bitmap::load_from_disk`]): every bit found on disk becomes counter 2, plus
//!   NEEDED if the chunk lies at or after the resync checkpoint; a stale bitmap marks everything.
//!
//! Counters live in counter pages of `PAGE_SIZE / 2` counters (2048): a page is allocated while
//! any of its counters has been made non-zero and not yet cleaned; `/proc/mdstat`'s
//! `bitmap: A/B pages` counts them ([`Bitmap::mdstat_line`]). Bits live in file pages of
//! `PAGE_SIZE` bytes after the 256-byte superblock, chunk `c` in page `(c + 2048) >> 15`.
//!
//! Kernel versions differ in the end-write rule, write-behind accounting and the end-sync
//! signature: [`KernelVariant`] picks the behaviour at run time. Each method's documentation
//! names the kernel function it mirrors.
//!
//! # Use
//!
//! ```
//! use md_bitmap::engine::{Bitmap, BitmapConfig, BitmapGeometry, KernelVariant};
//! let geo = BitmapGeometry::new(64 << 20, 1 << 30).unwrap(); // 64 MiB chunks, 512 GiB
//! let mut bm = Bitmap::new(geo, BitmapConfig::new(KernelVariant::V6_14, 5 * 250), 0);
//! bm.start_write(0, 8, false);
//! bm.unplug(); // the bit is on disk now
//! bm.end_write(0, 8, true, false, false);
//! for pass in 1..=3 {
//!     bm.daemon_work(pass * 5 * 250);
//! }
//! assert!(!bm.disk_bit(0));
//! ```
pub mod mapping;

mod bitmap;
mod block;
mod counter;
mod layout;
mod ops;
mod summary;
mod variant;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use bitmap::{
    Bitmap, BitmapConfig, BlockedWriter, CounterPageState, EndOutcome, LoadParams, PageAttrs,
    StartOutcome, SuperblockModel, SyncBlocks, time_before,
};
pub use counter::{COUNTER_MAX, Counter, NEEDED_MASK, RESYNC_MASK};
pub use layout::{
    BITMAP_SB_BYTES, BitmapGeometry, BitmapGeometryError, KERNEL_PAGE_SIZE, MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE, SECTOR_SIZE,
};
pub use ops::{Op, OpOutcome};
pub use summary::{Anomalies, DaemonOutcome, DaemonPass, PageWrites, Summary};
pub use variant::{EndWriteRule, KernelVariant};
