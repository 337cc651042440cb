//! The 16-bit per-chunk counter, `bitmap_counter_t` in drivers/md/md-bitmap.h.
//!
//! See the [module documentation](super) for what the values mean.

use std::fmt;

/// `NEEDED_MASK` (`1 << 15`): the chunk needs a resync. Set by `md_bitmap_init_from_disk()` for
/// bits found on disk, by the end-write of a failed (≤6.13) or degraded (≥6.14) write, by an
/// aborted end-sync, and by `md_bitmap_dirty_bits()`.
pub const NEEDED_MASK: u16 = 1 << 15;

/// `RESYNC_MASK` (`1 << 14`): a resync of the chunk is running (set by start-sync instead of
/// NEEDED, cleared by end-sync).
pub const RESYNC_MASK: u16 = 1 << 14;

/// `COUNTER_MAX` (`RESYNC_MASK - 1` = 0x3FFF = 16383): the largest value of the low 14 bits.
/// A start-write that finds a chunk at this value sleeps until an end-write on it.
pub const COUNTER_MAX: u16 = RESYNC_MASK - 1;

/// One chunk's counter as the kernel stores it: 14 bits of count plus the NEEDED and RESYNC
/// flags.
///
/// The count is "ticks + writes in flight": a chunk with writes in flight always carries the
/// 2 ticks that stand for its on-disk bit, so `count()` ≥ 3 ⇔ writes in flight (for balanced
/// start/end calls); 2 = dirty and idle; 1 = the daemon's first step towards clean; 0 = clean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
#[repr(transparent)]
pub struct Counter(pub u16);

impl Counter {
    /// The clean counter (0): no writes, no ticks, on-disk bit clear (or about to be).
    pub const CLEAN: Counter = Counter(0);

    /// The raw 16-bit value, flags included.
    #[inline]
    pub fn raw(self) -> u16 {
        self.0
    }

    /// `COUNTER(x)`: the low 14 bits (ticks + writes in flight).
    #[inline]
    pub fn count(self) -> u16 {
        self.0 & COUNTER_MAX
    }

    /// `NEEDED(x)`: the NEEDED flag.
    #[inline]
    pub fn needed(self) -> bool {
        self.0 & NEEDED_MASK != 0
    }

    /// `RESYNC(x)`: the RESYNC flag.
    #[inline]
    pub fn resync(self) -> bool {
        self.0 & RESYNC_MASK != 0
    }

    /// Writes in flight: `COUNTER(x) - 2` when `COUNTER(x) > 2`, else 0. Exact as long as every
    /// end-write had a start-write (the kernel keeps no separate tick count: see the module
    /// documentation).
    #[inline]
    pub fn writes_in_flight(self) -> u16 {
        self.count().saturating_sub(2)
    }

    /// True when `COUNTER(x) > 2`: at least one write in flight.
    #[inline]
    pub fn has_writes_in_flight(self) -> bool {
        self.count() > 2
    }

    /// True when `COUNTER(x) == COUNTER_MAX`: the next start-write on the chunk blocks.
    #[inline]
    pub fn at_max(self) -> bool {
        self.count() == COUNTER_MAX
    }

    /// True for the raw value 0 (the kernel's "clean": bit clear or being cleared).
    #[inline]
    pub fn is_clean(self) -> bool {
        self.0 == 0
    }
}

impl From<u16> for Counter {
    fn from(v: u16) -> Self {
        Counter(v)
    }
}

impl fmt::Display for Counter {
    /// `3`, `2+N` (NEEDED), `2+R` (RESYNC), `2+NR`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.count())?;
        if self.needed() || self.resync() {
            f.write_str("+")?;
            if self.needed() {
                f.write_str("N")?;
            }
            if self.resync() {
                f.write_str("R")?;
            }
        }
        Ok(())
    }
}
