//! The bitmap start/end-write calls one write to an md array causes.
//!
//! Input is one bio as submitted to the md device (what `block_bio_queue` shows on `mdX`).
//! The model follows it through `md_submit_bio()` (`bio_split_to_limits()`), the personality's
//! own splits, and the accounting form the kernel uses (see [`Accounting`]).

use std::collections::BTreeSet;
use std::ops::Range;

use super::geometry::{ArrayMap, Kind};
use super::raid5::Raid5Conf;

/// raid1.h `BARRIER_UNIT_SECTOR_SIZE` (`1 << BARRIER_UNIT_SECTOR_BITS`, 17): 64 MiB in sectors.
pub const BARRIER_UNIT_SECTOR_SIZE: u64 = 1 << 17;

/// `BIO_MAX_VECS * (PAGE_SIZE >> 9)` with 4 KiB pages: raid1's cap on a write when a
/// write-mostly member and a bitmap exist (`raid1_write_request`, since v5.14).
pub const RAID1_WRITE_BEHIND_MAX_SECTORS: u64 = 256 * 8;

/// raid5.c `RAID5_MAX_REQ_STRIPES`: raid456 sets `max_hw_sectors` to this many stripe pages
/// (`RAID5_MAX_REQ_STRIPES << RAID5_STRIPE_SHIFT`, v6.0+), so no larger bio reaches it.
pub const RAID5_MAX_REQ_STRIPES: u64 = 256;

/// Which bitmap accounting the running kernel uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Accounting {
    /// v6.14+ and the Feb 2025 stable backports (6.6.y, 6.12.y, 6.13.y): one call per bio md
    /// accounts, from `md_account_bio()` → `md_clone_bio()` → `md_bitmap_start()`, with
    /// `raid5_bitmap_sector()` widening for raid4/5/6; the end call comes from
    /// `md_end_clone_io()` → `md_bitmap_end()` with the same `(offset, sectors)`.
    PerBio,
    /// v6.13 and older without the backport: raid1 one call per r1_bio
    /// (`raid1_write_request`, end in `close_write`), raid10 one per r10_bio
    /// (`raid10_write_request`, end in `close_write`), raid4/5/6 one
    /// `(sh->sector, RAID5_STRIPE_SECTORS)` call per (stripe_head, data device) written
    /// (`__add_stripe_bio`, end in `handle_stripe_clean_event`).
    PerStripe,
}

/// The md device's request-queue limits that drive `bio_split_to_limits()`
/// (`/sys/block/mdX/queue/*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// `max_sectors` (sysfs `max_sectors_kb` * 2).
    pub max_sectors: u64,
    /// `chunk_sectors` (sysfs `chunk_sectors`; 0 = none). raid10 sets it from v6.17
    /// ("md/raid10: set chunk_sectors limit"); member limits can also stack into it.
    pub chunk_sectors: u64,
    /// `physical_block_size` / 512 (a power of two, at least 1).
    pub physical_block_sectors: u64,
    /// `logical_block_size` / 512 (a power of two, at least 1).
    pub logical_block_sectors: u64,
}

impl QueueLimits {
    /// Limits from the sysfs files `max_sectors_kb`, `chunk_sectors`, `physical_block_size`
    /// and `logical_block_size` (bytes).
    pub fn from_sysfs(
        max_sectors_kb: u64,
        chunk_sectors: u64,
        physical_block_size: u64,
        logical_block_size: u64,
    ) -> Self {
        QueueLimits {
            max_sectors: max_sectors_kb * 2,
            chunk_sectors,
            physical_block_sectors: (physical_block_size / 512).max(1),
            logical_block_sectors: (logical_block_size / 512).max(1),
        }
    }

    /// Mirrors `get_max_io_size()` (block/blk-merge.c) for a read/write bio at `sector`, then
    /// the `ALIGN_DOWN(bytes, logical_block_size)` of `bio_split_rw()`: the length of the front
    /// piece when the bio is longer than this.
    pub fn max_io_sectors(&self, sector: u64) -> u64 {
        let pbs = self.physical_block_sectors.max(1);
        let lbs = self.logical_block_sectors.max(1);
        let mut max_sectors = self.max_sectors;
        if self.chunk_sectors != 0 {
            // blk_chunk_sectors_left() / blk_boundary_sectors_left()
            let left = if self.chunk_sectors.is_power_of_two() {
                self.chunk_sectors - (sector & (self.chunk_sectors - 1))
            } else {
                self.chunk_sectors - sector % self.chunk_sectors
            };
            max_sectors = max_sectors.min(left);
        }
        let start = sector & (pbs - 1);
        let end = (start + max_sectors) & !(pbs - 1);
        let n = if end > start {
            end - start
        } else {
            max_sectors & !(lbs - 1)
        };
        (n & !(lbs - 1)).max(lbs)
    }
}

/// What, besides the array geometry, decides how a write is cut up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallOptions {
    /// Bitmap accounting of the running kernel.
    pub accounting: Accounting,
    /// md queue limits; `None` means md receives the bio whole (raid4/5/6 still cap it at
    /// [`RAID5_MAX_REQ_STRIPES`] stripe pages, as their `max_hw_sectors` forces).
    pub queue: Option<QueueLimits>,
    /// raid1 only: a WriteMostly member exists (write-behind possible), so
    /// `raid1_write_request` caps each r1_bio at [`RAID1_WRITE_BEHIND_MAX_SECTORS`].
    pub raid1_write_behind: bool,
    /// Split-off remainders go to the head of `current->bio_list`
    /// (`submit_bio_noacct_nocheck(bio, split = true)`, "block: fix ordering of recursive
    /// split IO", with `bio_submit_split_bioset()` in raid1/raid10; in the v6.18 cycle,
    /// version not confirmed). `false` (≤6.17, including 6.1 and 6.12) appends them, so a
    /// block-layer tail runs before an md remainder split off after it.
    pub split_remainder_at_head: bool,
}

impl CallOptions {
    /// Options with the given accounting, no queue limits and no write-mostly member.
    pub fn new(accounting: Accounting) -> Self {
        CallOptions {
            accounting,
            queue: None,
            raid1_write_behind: false,
            split_remainder_at_head: false,
        }
    }
}

/// One bitmap start-write call, `bitmap_startwrite(mddev, offset, sectors)` (names vary by
/// version: `md_bitmap_startwrite` ≤6.11, `bitmap_startwrite` 6.12–6.15, `bitmap_start_write`
/// ≥6.16). Its end-write is the call with the same `(offset, sectors)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BitmapCall {
    /// First sector, in bitmap address space (member space for raid1/4/5/6, array space for
    /// raid10).
    pub offset: u64,
    /// Length in sectors.
    pub sectors: u64,
}

impl BitmapCall {
    /// One past the last sector.
    pub fn end(&self) -> u64 {
        self.offset + self.sectors
    }

    /// The bitmap chunks this call counts in, as the startwrite loop walks them
    /// (`chunk = offset >> chunkshift`, stepping by the sectors left in each chunk).
    /// Empty for a zero-length call.
    pub fn chunks(&self, chunkshift: u32) -> Range<u64> {
        if self.sectors == 0 {
            return 0..0;
        }
        (self.offset >> chunkshift)..((self.end() - 1) >> chunkshift) + 1
    }
}

/// The set of bitmap chunks touched by `calls` for a bitmap with `chunkshift`
/// (log2 of the bitmap chunk in sectors, `bitmap->counts.chunkshift`).
///
/// Chunks beyond the end of the bitmap are returned as computed; the kernel ignores counters
/// past its last counter page (`md_bitmap_get_counter` returns NULL).
pub fn chunks_touched<I>(calls: I, chunkshift: u32) -> BTreeSet<u64>
where
    I: IntoIterator<Item = BitmapCall>,
{
    calls
        .into_iter()
        .flat_map(|c| c.chunks(chunkshift))
        .collect()
}

impl ArrayMap {
    /// The bitmap start-write calls, in kernel order, for one write bio of `sectors` sectors at
    /// array sector `sector` submitted to the md device. Each call's end-write has the same
    /// `(offset, sectors)` and comes when that unit completes (completion order).
    ///
    /// Modelled: the block-layer split in `md_submit_bio()` (if `options.queue` is given, and
    /// raid456's `max_hw_sectors`), the order `__submit_bio_noacct()` processes split-off
    /// remainders in, raid1's barrier-unit and write-behind splits, raid10's chunk split, and
    /// raid456's stripe walk (`raid5_make_request` → `make_stripe_request` →
    /// `add_all_stripe_bios`). Not modelled: bad-block splits (raid1/raid10 write around known
    /// bad blocks on members with `WriteErrorSeen`), segment-count splits (they depend on the
    /// memory behind the bio), reshape, discards, and a write to a raid456 (stripe, device)
    /// that already has a queued write from an earlier bio (no new start-write then); the
    /// pieces of this one bio are assumed to stay queued together.
    pub fn write_calls(&self, sector: u64, sectors: u64, options: &CallOptions) -> WriteCalls<'_> {
        let mut pending = Vec::new();
        if sectors > 0 {
            pending.push((sector, sectors));
        }
        WriteCalls {
            map: self,
            options: *options,
            pending,
            walk: None,
            repeat: None,
            queued_blocks: Vec::new(),
        }
    }
}

/// Iterator over the start-write calls of one write; see [`ArrayMap::write_calls`].
///
/// It allocates only when the bio is split (the list of split-off remainders).
#[derive(Debug, Clone)]
pub struct WriteCalls<'a> {
    map: &'a ArrayMap,
    options: CallOptions,
    /// `current->bio_list` of md bios still to process, front first.
    pending: Vec<(u64, u64)>,
    walk: Option<StripeWalk>,
    repeat: Option<(BitmapCall, u64)>,
    /// raid456 per-stripe: partially written stripe pages (array sectors, stripe aligned)
    /// already queued by an earlier piece of this write.
    queued_blocks: Vec<u64>,
}

impl Iterator for WriteCalls<'_> {
    type Item = BitmapCall;

    fn next(&mut self) -> Option<BitmapCall> {
        loop {
            if let Some((call, left)) = self.repeat {
                if left > 0 {
                    self.repeat = (left > 1).then_some((call, left - 1));
                    return Some(call);
                }
                self.repeat = None;
            }
            if let Some(walk) = &mut self.walk {
                let conf = match &self.map.kind {
                    Kind::Parity(c) => c,
                    _ => unreachable!("stripe walk on a non-parity array"),
                };
                match walk.next_stripe(conf) {
                    Some((sh_sector, count)) => {
                        self.repeat = Some((
                            BitmapCall {
                                offset: sh_sector,
                                sectors: conf.stripe_sectors(),
                            },
                            count,
                        ));
                        continue;
                    }
                    None => {
                        self.walk = None;
                    }
                }
            }
            if self.pending.is_empty() {
                return None;
            }
            let bio = self.pending.remove(0);
            if let Some(call) = self.submit(bio) {
                return Some(call);
            }
        }
    }
}

impl WriteCalls<'_> {
    /// One turn of `__submit_bio_noacct()`'s loop for an md bio: `md_submit_bio()` and the
    /// personality's `make_request`. Same-queue bios it submits go in front of the bios that
    /// were already pending. Returns the call this bio makes directly, if any; raid456
    /// per-stripe calls come from the stripe walk it sets up.
    fn submit(&mut self, (sector, mut len): (u64, u64)) -> Option<BitmapCall> {
        let mut new: Vec<(u64, u64)> = Vec::new();

        // md_submit_bio(): bio_split_to_limits(); the remainder goes to current->bio_list.
        let limits = match (&self.map.kind, self.options.queue) {
            (Kind::Parity(c), q) => {
                let cap = RAID5_MAX_REQ_STRIPES * c.stripe_sectors();
                let mut q = q.unwrap_or(QueueLimits {
                    max_sectors: cap,
                    chunk_sectors: 0,
                    physical_block_sectors: 1,
                    logical_block_sectors: 1,
                });
                q.max_sectors = q.max_sectors.min(cap);
                Some(q)
            }
            (_, q) => q,
        };
        if let Some(q) = limits {
            let max = q.max_io_sectors(sector);
            if len > max {
                new.push((sector + max, len - max));
                len = max;
            }
        }

        let direct = match &self.map.kind {
            Kind::Raid1 { .. } => {
                // raid1_make_request(): align_to_barrier_unit_end();
                // raid1_write_request(): write-behind cap, then bio_split() of the front.
                let mut m = (sector + 1).next_multiple_of(BARRIER_UNIT_SECTOR_SIZE) - sector;
                m = m.min(len);
                if self.options.raid1_write_behind {
                    m = m.min(RAID1_WRITE_BEHIND_MAX_SECTORS);
                }
                if m < len {
                    new.push((sector + m, len - m));
                    len = m;
                }
                Some(BitmapCall {
                    offset: sector,
                    sectors: len,
                })
            }
            Kind::Raid10(c) => {
                // raid10_make_request(): cut at the chunk boundary unless near_copies covers
                // every device; raid10_write_request() splits the bio there.
                if c.splits_at_chunks() {
                    let chunk = c.chunk_sectors();
                    let m = chunk - (sector & (chunk - 1));
                    if m < len {
                        new.push((sector + m, len - m));
                        len = m;
                    }
                }
                Some(BitmapCall {
                    offset: sector,
                    sectors: len,
                })
            }
            Kind::Parity(c) => match self.options.accounting {
                Accounting::PerBio => {
                    let (offset, sectors) = c.bitmap_sector(sector, len);
                    Some(BitmapCall { offset, sectors })
                }
                Accounting::PerStripe => {
                    let ss = c.stripe_sectors();
                    let first = sector & !(ss - 1);
                    let last = sector + len;
                    let last_block = (last - 1) & !(ss - 1);
                    let mut skip = [None, None];
                    if self.queued_blocks.contains(&first) {
                        skip[0] = Some(first);
                    }
                    if self.queued_blocks.contains(&last_block) {
                        skip[1] = Some(last_block);
                    }
                    if sector != first {
                        self.queued_blocks.push(first);
                    }
                    if !last.is_multiple_of(ss) {
                        self.queued_blocks.push(last_block);
                    }
                    self.walk = Some(StripeWalk::new(c, sector, len, skip));
                    None
                }
            },
        };

        // Assemble as __submit_bio_noacct() does: same-queue bios just submitted, then the
        // ones that were pending before. Added at the head, the later remainder comes first.
        if self.options.split_remainder_at_head {
            new.reverse();
        }
        if !new.is_empty() {
            new.append(&mut self.pending);
            self.pending = new;
        }
        direct
    }
}

/// `find_next_bit_wrap()` on a `u64` word array of `size` bits.
fn find_next_bit_wrap(bits: &[u64], size: u32, offset: u32) -> u32 {
    let test = |i: u32| bits[(i / 64) as usize] & (1 << (i % 64)) != 0;
    if offset < size
        && let Some(i) = (offset..size).find(|&i| test(i))
    {
        return i;
    }
    (0..offset.min(size)).find(|&i| test(i)).unwrap_or(size)
}

/// The stripe walk of one raid456 bio in `raid5_make_request()` (v6.0+ with the
/// `raid5_bio_lowest_chunk_sector()` start of v6.2, backported to 6.1.y).
#[derive(Debug, Clone)]
struct StripeWalk {
    /// `ctx->first_sector`: bio start rounded down to the stripe page.
    first: u64,
    /// `ctx->last_sector`: `bio_end_sector()`.
    last: u64,
    /// `stripe_cnt`.
    cnt: u32,
    /// `ctx->sectors_to_do` (320 bits: a bio of 256 pages that is not page aligned spans 257).
    todo: [u64; 5],
    /// Current index `s`, or `None` before the first stripe.
    s: Option<u32>,
    /// Start of the bio, for `raid5_bio_lowest_chunk_sector()`.
    bi_sector: u64,
    bio_sectors: u64,
    /// Stripe pages whose (stripe, dev) already has a queued write: no start-write for them.
    skip: [Option<u64>; 2],
}

impl StripeWalk {
    fn new(conf: &Raid5Conf, bi_sector: u64, bio_sectors: u64, skip: [Option<u64>; 2]) -> Self {
        let ss = conf.stripe_sectors();
        let first = bi_sector & !(ss - 1);
        let last = bi_sector + bio_sectors;
        let cnt = (last - first).div_ceil(ss);
        assert!(
            cnt <= 320,
            "raid456 bio of {cnt} stripe pages exceeds max_hw_sectors"
        );
        let cnt = cnt as u32;
        let mut todo = [0u64; 5];
        for i in 0..cnt {
            todo[(i / 64) as usize] |= 1 << (i % 64);
        }
        StripeWalk {
            first,
            last,
            cnt,
            todo,
            s: None,
            bi_sector,
            bio_sectors,
            skip,
        }
    }

    /// Processes the next stripe like `make_stripe_request()` + `add_all_stripe_bios()`:
    /// returns the stripe_head's member sector and the number of start-writes it makes.
    fn next_stripe(&mut self, conf: &Raid5Conf) -> Option<(u64, u64)> {
        let ss = conf.stripe_sectors();
        let s = match self.s {
            None => {
                let logical = conf.lowest_chunk_sector(self.bi_sector, self.bio_sectors);
                ((logical - self.first) / ss) as u32
            }
            Some(prev) => {
                let s = find_next_bit_wrap(&self.todo, self.cnt, prev);
                if s == self.cnt {
                    return None;
                }
                s
            }
        };
        self.s = Some(s);
        let logical = self.first + u64::from(s) * ss;
        let sh_sector = conf.compute_sector(logical).sector;
        // dev->sector for each data device of the stripe is the array sector of data index k
        // in this row at the same in-chunk offset (raid5_compute_blocknr).
        let chunk = conf.chunk_sectors();
        let row = sh_sector / chunk;
        let off = sh_sector % chunk;
        let dd = u64::from(conf.data_disks());
        let mut count = 0;
        for k in 0..dd {
            let dev_logical = (row * dd + k) * chunk + off;
            if dev_logical < self.first || dev_logical >= self.last {
                continue;
            }
            let idx = ((dev_logical - self.first) / ss) as u32;
            self.todo[(idx / 64) as usize] &= !(1 << (idx % 64));
            if !self.skip.contains(&Some(dev_logical)) {
                count += 1;
            }
        }
        Some((sh_sector, count))
    }
}
