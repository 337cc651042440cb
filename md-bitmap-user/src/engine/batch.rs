//! Batched calls for trace replay (`md-bitmap tune`): the same state changes as a sequence of
//! the single calls of [`Bitmap`], in fewer steps where the replay knows more than one call's
//! context. Each function states the sequence of kernel calls it equals; the tune tests compare
//! the replay with a reference that makes the single calls.
//!
//! A child module of `bitmap` so that it reads the model's private state without widening it.
use super::{Bitmap, CACHED, DISK};
use crate::engine::COUNTER_MAX;

impl Bitmap {
    /// Equals `start_write(c << chunkshift, 1, false)` for every chunk `c` in `lo..=hi`, in
    /// order (the kernel's `md_bitmap_startwrite()` / `bitmap_start_write()` loop, one chunk
    /// per step), and returns the number of clean chunks below `chunks` it found: the bits it
    /// set in the cached filemap (`case 0:` → `md_bitmap_file_set_bit()`). (Chunks past
    /// `chunks`, which only unbalanced or out-of-range callers send, are not counted.)
    ///
    /// Per chunk, on an allocated counter page: 0 → 3 with the cached bit set, its file page
    /// DIRTY and the page counted (`md_bitmap_count_page(+1)`); 1 → 3; 2..COUNTER_MAX-1 → +1.
    /// Anything else (a missing counter page, COUNTER_MAX, a chunk at or past `chunks`) goes
    /// through [`start_write`](Self::start_write) itself, so the result is the same.
    #[inline]
    pub fn start_write_chunks(&mut self, lo: u64, hi: u64) -> u64 {
        let mut set = 0u64;
        for chunk in lo..=hi {
            let idx = chunk as usize;
            let old = match self.counters.get(idx) {
                Some(&c) if chunk < self.chunks => c,
                _ => {
                    self.start_write(chunk << self.shift, 1, false);
                    continue;
                }
            };
            if old == 0 {
                set += 1;
                let page = idx >> self.cps;
                if !self.pages[page].allocated {
                    self.start_write(chunk << self.shift, 1, false);
                    continue;
                }
                self.counters[idx] = 3;
                self.count_page_inc(page);
                self.first_write(chunk);
            } else if (old & COUNTER_MAX).wrapping_sub(2) < COUNTER_MAX - 2 {
                self.counters[idx] = old + 1;
            } else if old == 1 {
                self.counters[idx] = 3;
            } else {
                self.start_write(chunk << self.shift, 1, false);
            }
        }
        set
    }

    /// Equals `end_write(c << chunkshift, 1, true, false, false)` for every chunk `c` in
    /// `lo..=hi`, in order: a successful, not write-behind end-write on a healthy array
    /// (`md_bitmap_endwrite()` / `bitmap_end_write()`, one chunk per step of its loop).
    ///
    /// Per chunk with writes in flight (3 <= COUNTER < COUNTER_MAX): `events_cleared` takes
    /// `mddev->events` (and `need_sync` is set) if it is lower, `(*bmc)--`, and a count that
    /// drops to 2 or below makes the counter page pending with `allclean = 0`
    /// (`md_bitmap_set_pending()`). Both end-write rules agree here (success and not degraded:
    /// no NEEDED). Anything else goes through [`end_write`](Self::end_write) itself.
    #[inline]
    pub fn end_write_chunks(&mut self, lo: u64, hi: u64) {
        for chunk in lo..=hi {
            let idx = chunk as usize;
            match self.counters.get(idx) {
                Some(&old)
                    if chunk < self.chunks
                        && (old & COUNTER_MAX).wrapping_sub(3) < COUNTER_MAX - 3 =>
                {
                    let c = old - 1;
                    self.counters[idx] = c;
                    if self.events_cleared < self.events {
                        self.events_cleared = self.events;
                        self.need_sync = true;
                    }
                    if c <= 2 {
                        self.pages[idx >> self.cps].pending = true;
                        self.allclean = false;
                    }
                }
                _ => {
                    self.end_write(chunk << self.shift, 1, true, false, false);
                }
            }
        }
    }

    /// The file page holding `chunk`'s bit.
    #[inline(always)]
    pub fn file_page_of_chunk(&self, chunk: u64) -> u64 {
        (chunk + self.sb_bits) >> self.fps
    }

    /// Equals [`unplug`](Self::unplug) when the caller knows that file page `page` is the
    /// only page that may be DIRTY (a page whose bits its start-writes just set, with every
    /// other page written by an unplug since its last DIRTY mark): when no page is NEEDWRITE,
    /// `md_bitmap_unplug()` / `bitmap_unplug()` write exactly that page (it loses DIRTY,
    /// NEEDWRITE and PENDING, its on-disk copy becomes the cached one, one unplug batch), so
    /// the scan over every page's attributes is skipped. With NEEDWRITE pages, or `page` not
    /// DIRTY, it is `unplug()`. Debug builds check the caller's claim.
    #[inline]
    pub fn unplug_one_page(&mut self, page: u64) -> u64 {
        let (pw, pm) = ((page >> 6) as usize, 1u64 << (page & 63));
        debug_assert!(
            (self.attr_dirty.iter().enumerate())
                .all(|(i, &w)| w & !if i == pw { pm } else { 0 } == 0),
            "unplug_one_page: another page is DIRTY"
        );
        if self.n_needwrite != 0 || self.attr_dirty.get(pw).is_none_or(|&w| w & pm == 0) {
            return self.unplug();
        }
        self.attr_dirty[pw] &= !pm;
        self.attr_pending[pw] &= !pm;
        self.write_page_sparse(page);
        self.writes.unplug_batches += 1;
        1
    }

    /// `write_page(p, WriteCause::UnplugDirty)` for a page of which few bits changed (the
    /// usual unplug: the bits a step just set, and those the daemon cleared since the page's
    /// last write): the same on-disk copy, `disk_set` and counts, with the change of
    /// `disk_set` counted bit by bit over the changed bits only.
    fn write_page_sparse(&mut self, p: u64) {
        let dpw = self.words_per_page / 64;
        let base = p as usize * dpw;
        let mut delta = 0i64;
        for dwi in base..base + dpw {
            let mut m = std::mem::take(&mut self.diff[dwi]);
            while m != 0 {
                let w = dwi * 64 + m.trailing_zeros() as usize;
                m &= m - 1;
                let (old, new) = (self.bits[DISK][w], self.bits[CACHED][w]);
                let mask = self.in_range_mask(w);
                let (mut up, mut down) = (new & !old & mask, old & !new & mask);
                while up != 0 {
                    up &= up - 1;
                    delta += 1;
                }
                while down != 0 {
                    down &= down - 1;
                    delta -= 1;
                }
                self.bits[DISK][w] = new;
            }
        }
        self.disk_set = self.disk_set.wrapping_add_signed(delta);
        if p == 0 {
            self.disk_sb = self.sb;
        }
        self.writes.unplug_dirty += 1;
    }
}
