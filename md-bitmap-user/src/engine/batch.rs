//! Batched calls for trace replay (`md-bitmap tune`): the same state changes as a sequence of
//! the single calls of [`Bitmap`], in fewer steps where the replay knows more than one call's
//! context. Each function states the sequence of kernel calls it equals; the tune tests compare
//! the replay with a reference that makes the single calls.
//!
//! A child module of `bitmap` so that it reads the model's private state without widening it.
use super::{Bitmap, WriteCause};
use crate::engine::COUNTER_MAX;

impl Bitmap {
    /// Equals `start_write(c << chunkshift, 1, false)` for every chunk `c` in `lo..=hi`, in
    /// order (the kernel's `md_bitmap_startwrite()` / `bitmap_start_write()` loop, one chunk
    /// per step), and returns `(clean chunks found, the last of them)`: the bits this call set
    /// in the cached filemap (`case 0:` → `md_bitmap_file_set_bit()`).
    ///
    /// Per chunk, on an allocated counter page: 0 → 3 with the cached bit set, its file page
    /// DIRTY and the page counted (`md_bitmap_count_page(+1)`); 1 → 3; 2..COUNTER_MAX-1 → +1.
    /// Anything else (a missing counter page, COUNTER_MAX, a chunk at or past `chunks`) goes
    /// through [`start_write`](Self::start_write) itself, so the result is the same.
    #[inline]
    pub fn start_write_chunks(&mut self, lo: u64, hi: u64) -> (u64, Option<u64>) {
        let (mut set, mut last) = (0u64, None);
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
                last = Some(chunk);
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
        (set, last)
    }

    /// Equals [`unplug`](Self::unplug), faster when the only page to write is the file page
    /// of `chunk` (a chunk whose bit a start-write just set): then that page alone is DIRTY and
    /// none is NEEDWRITE, and `md_bitmap_unplug()` / `bitmap_unplug()` write exactly it (it
    /// loses DIRTY, NEEDWRITE and PENDING, its on-disk copy becomes the cached one, one unplug
    /// batch). Anything else takes the full page scan of `unplug`.
    #[inline]
    pub fn unplug_after_first_write(&mut self, chunk: u64) -> u64 {
        let page = (chunk + self.sb_bits) >> self.fps;
        let (pw, pm) = ((page >> 6) as usize, 1u64 << (page & 63));
        let only_this = self.n_needwrite == 0
            && page < self.file_pages
            && self
                .attr_dirty
                .iter()
                .enumerate()
                .all(|(i, &w)| w == if i == pw { pm } else { 0 });
        if !only_this {
            return self.unplug();
        }
        self.attr_dirty[pw] = 0;
        self.attr_pending[pw] &= !pm;
        self.write_page(page, WriteCause::UnplugDirty);
        self.writes.unplug_batches += 1;
        1
    }
}
