//! The kernel's own bitmap state, read from kernel memory: an oracle for the engine.
//!
//! It shares nothing with the engine's state machine: it finds the array's `struct mddev` on md's
//! `all_mddevs` list (address from kallsyms), follows `mddev->bitmap`, and copies
//! `bitmap->counts.bp[page].map` (the 16-bit counters, 2048 per page) through the `peek` eBPF
//! program, with every structure offset taken from md_mod's BTF. What it returns is what
//! md-bitmap.c holds at that instant.
use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::btf::Btf;
use super::ebpf::Feed;
use super::record::DevNum;
use super::symbols::KernelSymbols;

/// Structure offsets (bytes) for the running kernel, from md_mod's BTF.
#[derive(Clone, Debug, Serialize)]
pub struct Layout {
    mddev_all_mddevs: u32,
    bitmap_mddev: u32,
    mddev_unit: u32,
    mddev_bitmap: u32,
    mddev_events: u32,
    mddev_degraded: u32,
    mddev_daemon_sleep: u32,
    bitmap_daemon_lastrun: u32,
    bitmap_counts_bp: u32,
    bitmap_counts_pages: u32,
    bitmap_counts_missing_pages: u32,
    bitmap_counts_chunkshift: u32,
    bitmap_counts_chunks: u32,
    bitmap_events_cleared: u32,
    bitmap_need_sync: u32,
    bitmap_allclean: u32,
    bitmap_behind_writes: u32,
    bitmap_flags: u32,
    bitmap_page_size: u32,
    bitmap_page_flags_word: u32,
    bitmap_page_hijacked_bit: u32,
    bitmap_page_pending_bit: u32,
    bitmap_page_count_bit: u32,
}

impl Layout {
    /// Reads the offsets from BTF.
    pub fn from_btf(btf: &Btf) -> Result<Self> {
        let off = |s: &str, p: &str| btf.offset_of(s, p).map(|(o, _)| o);
        let page = btf
            .find_struct("bitmap_page")
            .context("md_mod BTF has no struct bitmap_page")?;
        let bit = |name: &str| -> Result<u32> {
            Ok(btf
                .member(page, name)
                .with_context(|| format!("struct bitmap_page has no {name}"))?
                .bit_offset)
        };
        let hijacked = bit("hijacked")?;
        Ok(Self {
            mddev_all_mddevs: off("mddev", "all_mddevs")?,
            bitmap_mddev: off("bitmap", "mddev")?,
            mddev_unit: off("mddev", "unit")?,
            mddev_bitmap: off("mddev", "bitmap")?,
            mddev_events: off("mddev", "events")?,
            mddev_degraded: off("mddev", "degraded")?,
            mddev_daemon_sleep: off("mddev", "bitmap_info.daemon_sleep")?,
            bitmap_daemon_lastrun: off("bitmap", "daemon_lastrun")?,
            bitmap_counts_bp: off("bitmap", "counts.bp")?,
            bitmap_counts_pages: off("bitmap", "counts.pages")?,
            bitmap_counts_missing_pages: off("bitmap", "counts.missing_pages")?,
            bitmap_counts_chunkshift: off("bitmap", "counts.chunkshift")?,
            bitmap_counts_chunks: off("bitmap", "counts.chunks")?,
            bitmap_events_cleared: off("bitmap", "events_cleared")?,
            bitmap_need_sync: off("bitmap", "need_sync")?,
            bitmap_allclean: off("bitmap", "allclean")?,
            bitmap_behind_writes: off("bitmap", "behind_writes")?,
            bitmap_flags: off("bitmap", "flags")?,
            bitmap_page_size: btf.size_of(page).context("size of bitmap_page")?,
            bitmap_page_flags_word: (hijacked / 32) * 4,
            bitmap_page_hijacked_bit: hijacked % 32,
            bitmap_page_pending_bit: bit("pending")? - (hijacked / 32) * 32,
            bitmap_page_count_bit: bit("count")? - (hijacked / 32) * 32,
        })
    }
}

impl Layout {
    /// The offsets the eBPF programs read md's structures with; `first_arg_is_mddev` as in
    /// [`BitmapAbi`](super::symbols::BitmapAbi).
    pub fn for_ebpf(&self, first_arg_is_mddev: bool) -> md_bitmap_common::MdLayout {
        md_bitmap_common::MdLayout {
            valid: 1,
            bitmap_mddev: self.bitmap_mddev,
            mddev_events: self.mddev_events,
            mddev_bitmap: self.mddev_bitmap,
            bitmap_daemon_lastrun: self.bitmap_daemon_lastrun,
            mddev_degraded: self.mddev_degraded,
            first_arg_is_mddev: first_arg_is_mddev.into(),
            mddev_daemon_sleep: self.mddev_daemon_sleep,
            daemon_passes_only: 0,
        }
    }
}

/// One counter page as the kernel holds it.
#[derive(Clone, Debug, Serialize)]
pub struct KernelPage {
    /// Page index (2048 chunks per page).
    pub index: u64,
    /// `map` is allocated.
    pub allocated: bool,
    /// The page's map pointer is hijacked as two counters (allocation failure).
    pub hijacked: bool,
    /// The daemon must visit it.
    pub pending: bool,
    /// Non-zero counters on the page (`bitmap_page.count`).
    pub count: u32,
}

/// The kernel's bitmap state for one array at one instant.
#[derive(Clone, Debug, Serialize)]
pub struct KernelBitmap {
    /// `mddev->events`.
    pub events: u64,
    /// `mddev->degraded`.
    pub degraded: u32,
    /// `bitmap->events_cleared`.
    pub events_cleared: u64,
    /// `mddev->bitmap_info.daemon_sleep` in jiffies.
    pub daemon_sleep_jiffies: u64,
    /// `bitmap->daemon_lastrun` in jiffies.
    pub daemon_lastrun_jiffies: u64,
    /// `bpf_ktime_get_ns()` when the counter pages were read (CLOCK_MONOTONIC): events
    /// stamped before it are already reflected in `counters`.
    pub read_ts_ns: u64,
    /// `bitmap->need_sync`.
    pub need_sync: bool,
    /// `bitmap->allclean`.
    pub allclean: bool,
    /// `bitmap->behind_writes`.
    pub behind_writes: u32,
    /// `bitmap->flags`.
    pub flags: u64,
    /// `counts.chunkshift` (chunk = sector >> chunkshift).
    pub chunkshift: u32,
    /// `counts.chunks`.
    pub chunks: u64,
    /// `counts.pages`.
    pub pages: u64,
    /// `counts.missing_pages`.
    pub missing_pages: u64,
    /// Per-page flags.
    pub page_info: Vec<KernelPage>,
    /// Every chunk's counter (`bitmap_counter_t`: NEEDED 1<<15, RESYNC 1<<14, count in the low
    /// 14 bits); 0 on unallocated pages. On a hijacked page each of its two counters stands for
    /// 1024 chunks and is repeated over them.
    pub counters: Vec<u16>,
}

/// Reads the kernel's bitmap state of md arrays.
pub struct KernelStateReader {
    layout: Layout,
    all_mddevs: u64,
}

/// Reads a structure at `base` far enough to cover an 8-byte field at each of `offsets`.
fn peek_fields(feed: &mut Feed, base: u64, offsets: &[u32]) -> Result<Vec<u8>> {
    let end = offsets.iter().copied().max().unwrap_or(0) + 8;
    feed.peek(base, end as usize)
}

/// Little-endian u64 at `o`; 0 if `b` is too short (callers read enough; this only keeps a
/// layout mistake from panicking).
fn u64_at(b: &[u8], o: u32) -> u64 {
    b.get(o as usize..o as usize + 8)
        .map(|s| u64::from_le_bytes(s.try_into().unwrap()))
        .unwrap_or(0)
}

/// Little-endian u32 at `o`; 0 if `b` is too short.
fn u32_at(b: &[u8], o: u32) -> u32 {
    b.get(o as usize..o as usize + 4)
        .map(|s| u32::from_le_bytes(s.try_into().unwrap()))
        .unwrap_or(0)
}

impl KernelStateReader {
    /// Prepares the reader: md_mod's BTF for offsets, kallsyms for `all_mddevs`.
    pub fn new(syms: &KernelSymbols) -> Result<Self> {
        let btf = Btf::load_module("md_mod")?;
        let layout = Layout::from_btf(&btf)?;
        let all_mddevs = syms.data_addr("md_mod", "all_mddevs").context(
            "md_mod's all_mddevs is not in /proc/kallsyms (needs CONFIG_KALLSYMS_ALL and root)",
        )?;
        Ok(Self { layout, all_mddevs })
    }

    /// The offsets in use.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Address of the `struct mddev` of array `dev`.
    pub fn find_mddev(&self, feed: &mut Feed, dev: DevNum) -> Result<u64> {
        let want = dev.to_kernel();
        let mut next = feed.peek_u64(self.all_mddevs)?;
        for _ in 0..4096 {
            if next == self.all_mddevs || next == 0 {
                break;
            }
            let mddev = next - self.layout.mddev_all_mddevs as u64;
            let unit = u32::from_le_bytes(
                feed.peek(mddev + self.layout.mddev_unit as u64, 4)?
                    .try_into()
                    .unwrap(),
            );
            if unit == want {
                return Ok(mddev);
            }
            next = feed.peek_u64(next)?;
        }
        bail!("array {dev} is not on md's all_mddevs list")
    }

    /// Address of the array's `struct bitmap` (0 when it has none).
    pub fn bitmap_addr(&self, feed: &mut Feed, mddev: u64) -> Result<u64> {
        feed.peek_u64(mddev + self.layout.mddev_bitmap as u64)
    }

    /// `mddev->degraded` of the array whose `struct mddev` is at `mddev` (one 4-byte read).
    pub fn read_degraded(&self, feed: &mut Feed, mddev: u64) -> Result<u32> {
        let b = feed.peek(mddev + self.layout.mddev_degraded as u64, 4)?;
        Ok(u32_at(&b, 0))
    }

    /// Reads the bitmap state of the array whose `struct mddev` is at `mddev`.
    pub fn read(&self, feed: &mut Feed, mddev: u64) -> Result<KernelBitmap> {
        let l = &self.layout;
        let md = peek_fields(
            feed,
            mddev,
            &[
                l.mddev_bitmap,
                l.mddev_events,
                l.mddev_degraded,
                l.mddev_daemon_sleep,
            ],
        )?;
        let bitmap = u64_at(&md, l.mddev_bitmap);
        if bitmap == 0 {
            bail!("the array has no bitmap");
        }
        let events = u64_at(&md, l.mddev_events);
        let degraded = u32_at(&md, l.mddev_degraded);
        let b = peek_fields(
            feed,
            bitmap,
            &[
                l.bitmap_counts_bp,
                l.bitmap_counts_pages,
                l.bitmap_counts_missing_pages,
                l.bitmap_counts_chunkshift,
                l.bitmap_counts_chunks,
                l.bitmap_events_cleared,
                l.bitmap_need_sync,
                l.bitmap_allclean,
                l.bitmap_behind_writes,
                l.bitmap_flags,
                l.bitmap_daemon_lastrun,
            ],
        )?;
        let bp = u64_at(&b, l.bitmap_counts_bp);
        let pages = u64_at(&b, l.bitmap_counts_pages);
        let chunks = u64_at(&b, l.bitmap_counts_chunks);
        let chunkshift = u64_at(&b, l.bitmap_counts_chunkshift) as u32;
        if pages > (1 << 24) || chunks > pages * 2048 {
            bail!(
                "implausible bitmap geometry read from the kernel ({pages} pages, {chunks} chunks)"
            );
        }
        let mut counters = vec![0u16; chunks as usize];
        let mut page_info = Vec::with_capacity(pages as usize);
        let psz = l.bitmap_page_size as u64;
        let per_read = (4096 / psz).max(1);
        let mut p = 0;
        while p < pages {
            let n = per_read.min(pages - p);
            let raw = feed.peek(bp + p * psz, (n * psz) as usize)?;
            for i in 0..n {
                let base = (i * psz) as u32;
                let map = u64_at(&raw, base);
                let word = u32_at(&raw, base + l.bitmap_page_flags_word);
                let hijacked = word >> l.bitmap_page_hijacked_bit & 1 == 1;
                let pending = word >> l.bitmap_page_pending_bit & 1 == 1;
                let count = word >> l.bitmap_page_count_bit & ((1 << 30) - 1);
                let index = p + i;
                let first = (index * 2048) as usize;
                let last = ((index + 1) * 2048).min(chunks) as usize;
                if hijacked {
                    // md_bitmap_get_counter: the map pointer's bytes hold two counters.
                    let c = map.to_le_bytes();
                    for (k, slot) in counters[first..last].iter_mut().enumerate() {
                        let half = k / 1024;
                        *slot = u16::from_le_bytes([c[half * 2], c[half * 2 + 1]]);
                    }
                } else if map != 0 {
                    let data = feed.peek(map, 4096)?;
                    for (k, slot) in counters[first..last].iter_mut().enumerate() {
                        *slot = u16::from_le_bytes([data[k * 2], data[k * 2 + 1]]);
                    }
                }
                page_info.push(KernelPage {
                    index,
                    allocated: map != 0 && !hijacked,
                    hijacked,
                    pending,
                    count,
                });
            }
            p += n;
        }
        let read_ts_ns = feed.last_peek_ts_ns();
        Ok(KernelBitmap {
            daemon_sleep_jiffies: u64_at(&md, l.mddev_daemon_sleep),
            daemon_lastrun_jiffies: u64_at(&b, l.bitmap_daemon_lastrun),
            read_ts_ns,
            events,
            degraded,
            events_cleared: u64_at(&b, l.bitmap_events_cleared),
            need_sync: u32_at(&b, l.bitmap_need_sync) != 0,
            allclean: u32_at(&b, l.bitmap_allclean) != 0,
            behind_writes: u32_at(&b, l.bitmap_behind_writes),
            flags: u64_at(&b, l.bitmap_flags),
            chunkshift,
            chunks,
            pages,
            missing_pages: u64_at(&b, l.bitmap_counts_missing_pages),
            page_info,
            counters,
        })
    }
}
