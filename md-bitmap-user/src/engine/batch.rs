//! Batched calls for trace replay (`md-bitmap tune`): the same state changes as a sequence of
//! the single calls of [`Bitmap`], in fewer steps where the replay knows more than one call's
//! context. Each function states the sequence of kernel calls it equals; the tune tests compare
//! the replay with a reference that makes the single calls.
//!
//! A child module of `bitmap` so that it reads the model's private state without widening it.
use super::{Bitmap, WriteCause};

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
            if chunk < self.chunks {
                match self.start_chunk_fast(chunk) {
                    Some(clean) => {
                        set += u64::from(clean);
                        continue;
                    }
                    // A clean counter on a missing counter page: the loop allocates it.
                    None => set += u64::from(self.counters.get(chunk as usize) == Some(&0)),
                }
            }
            self.start_write(chunk << self.shift, 1, false);
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
            if !(chunk < self.chunks && self.end_chunk_fast(chunk, true, false)) {
                self.end_write(chunk << self.shift, 1, true, false, false);
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
        self.write_page_counted::<true>(page, WriteCause::UnplugDirty);
        self.writes.unplug_batches += 1;
        1
    }
}
