//! Property tests: random call sequences against a deliberately simple reference model (a
//! line-by-line transcription of md-bitmap.c over `Vec<bool>`s, no bit tricks, no incremental
//! counts) plus invariants that hold for any balanced sequence.

use proptest::prelude::*;

use super::*;

const SLEEP: u64 = 100;
/// 1 KiB chunks: 2 sectors, so writes straddle chunks.
const CHUNK: u64 = 1024;
const CS: u64 = CHUNK / 512;
/// 512-byte "pages" (not a real kernel size) give 256 counters per counter page and 4096 bits
/// per file page, so a few thousand chunks span many pages of both kinds.
const PAGE: u64 = 512;
const CHUNKS: u64 = 2600;

fn geometry() -> BitmapGeometry {
    // One sector short of CHUNKS full chunks: the last chunk is partial.
    BitmapGeometry::with_page_size(CHUNK, CHUNKS * CS - 1, PAGE).unwrap()
}

/// The reference: md-bitmap.c transcribed.
struct Ref {
    shift: u32,
    chunks: u64,
    pages: u64,
    cpp: u64,
    file_pages: u64,
    page_bits: u64,
    sync_size: u64,
    page_sectors: u64,
    counters: Vec<u16>,
    bp_count: Vec<u32>,
    bp_alloc: Vec<bool>,
    bp_pending: Vec<bool>,
    cached: Vec<bool>,
    disk: Vec<bool>,
    dirty: Vec<bool>,
    pending: Vec<bool>,
    needwrite: Vec<bool>,
    allclean: bool,
    need_sync: bool,
    events: u64,
    events_cleared: u64,
    sb_ec: u64,
    disk_sb_ec: u64,
    lastrun: u64,
    last_end_sync: u64,
    behind: i32,
    behind_used: i32,
    writes: PageWrites,
    rule: EndWriteRule,
}

impl Ref {
    fn new(g: &BitmapGeometry, rule: EndWriteRule) -> Ref {
        let cpp = g.counters_per_page();
        let pages = g.counter_pages();
        let fp = g.file_pages();
        let pb = g.bits_per_file_page();
        Ref {
            shift: g.chunkshift(),
            chunks: g.chunks(),
            pages,
            cpp,
            file_pages: fp,
            page_bits: pb,
            sync_size: g.sync_size(),
            page_sectors: g.page_size() / 512,
            counters: vec![0; (pages * cpp) as usize],
            bp_count: vec![0; pages as usize],
            bp_alloc: vec![false; pages as usize],
            bp_pending: vec![false; pages as usize],
            cached: vec![false; (fp * pb) as usize],
            disk: vec![false; (fp * pb) as usize],
            dirty: vec![false; fp as usize],
            pending: vec![false; fp as usize],
            needwrite: vec![false; fp as usize],
            allclean: false,
            need_sync: false,
            events: 0,
            events_cleared: 0,
            sb_ec: 0,
            disk_sb_ec: 0,
            lastrun: 0,
            last_end_sync: 0,
            behind: 0,
            behind_used: 0,
            writes: PageWrites::default(),
            rule,
        }
    }

    /// md_bitmap_get_counter: (counter index, blocks).
    fn get_counter(&mut self, offset: u64, create: bool) -> (Option<usize>, u64) {
        let chunk = offset >> self.shift;
        let page = chunk / self.cpp;
        let mut csize = 1u64 << self.shift;
        if page >= self.pages {
            return (None, csize - offset % csize);
        }
        if create {
            self.bp_alloc[page as usize] = true;
        }
        if !self.bp_alloc[page as usize] {
            csize = (1u64 << self.shift) * self.cpp;
            return (None, csize - offset % csize);
        }
        (Some(chunk as usize), csize - offset % csize)
    }

    fn count_page(&mut self, chunk: u64, inc: i32) {
        let page = (chunk / self.cpp) as usize;
        self.bp_count[page] = (self.bp_count[page] as i32 + inc) as u32;
        if self.bp_count[page] == 0 {
            self.bp_alloc[page] = false;
            let lo = page * self.cpp as usize;
            for c in &mut self.counters[lo..lo + self.cpp as usize] {
                *c = 0;
            }
        }
    }

    fn file_set_bit(&mut self, chunk: u64) {
        let fb = chunk + 2048;
        let page = fb / self.page_bits;
        if page >= self.file_pages {
            return;
        }
        self.cached[fb as usize] = true;
        self.dirty[page as usize] = true;
    }

    fn file_clear_bit(&mut self, chunk: u64) {
        let fb = chunk + 2048;
        let page = fb / self.page_bits;
        if page >= self.file_pages {
            return;
        }
        self.cached[fb as usize] = false;
        if !self.needwrite[page as usize] {
            self.pending[page as usize] = true;
            self.allclean = false;
        }
    }

    fn write_page(&mut self, p: u64) {
        let lo = (p * self.page_bits) as usize;
        let hi = lo + self.page_bits as usize;
        let (c, d) = (&self.cached[lo..hi], &mut self.disk[lo..hi]);
        d.copy_from_slice(c);
        if p == 0 {
            self.disk_sb_ec = self.sb_ec;
        }
    }

    fn startwrite(&mut self, mut offset: u64, mut sectors: u64, behind: bool) {
        if behind {
            self.behind += 1;
            self.behind_used = self.behind_used.max(self.behind);
        }
        while sectors > 0 {
            let (bmc, blocks) = self.get_counter(offset, true);
            let Some(i) = bmc else { return };
            assert!(self.counters[i] & COUNTER_MAX != COUNTER_MAX);
            match self.counters[i] {
                0 => {
                    self.file_set_bit(offset >> self.shift);
                    self.count_page(offset >> self.shift, 1);
                    self.counters[i] = 2;
                }
                1 => self.counters[i] = 2,
                _ => {}
            }
            self.counters[i] += 1;
            offset += blocks;
            sectors = sectors.saturating_sub(blocks);
        }
    }

    fn endwrite(
        &mut self,
        mut offset: u64,
        mut sectors: u64,
        success: bool,
        behind: bool,
        degraded: bool,
    ) {
        if behind {
            self.behind -= 1;
        }
        while sectors > 0 {
            let (bmc, blocks) = self.get_counter(offset, false);
            let Some(i) = bmc else { return };
            match self.rule {
                EndWriteRule::SuccessArg => {
                    if success && !degraded && self.events_cleared < self.events {
                        self.events_cleared = self.events;
                        self.need_sync = true;
                    }
                    if !success && self.counters[i] & NEEDED_MASK == 0 {
                        self.counters[i] |= NEEDED_MASK;
                    }
                }
                EndWriteRule::Degraded => {
                    if !degraded {
                        if self.events_cleared < self.events {
                            self.events_cleared = self.events;
                            self.need_sync = true;
                        }
                    } else if self.counters[i] & NEEDED_MASK == 0 {
                        self.counters[i] |= NEEDED_MASK;
                    }
                }
            }
            self.counters[i] -= 1;
            if self.counters[i] <= 2 {
                self.bp_pending[(offset >> self.shift) as usize / self.cpp as usize] = true;
                self.allclean = false;
            }
            offset += blocks;
            sectors = sectors.saturating_sub(blocks);
        }
    }

    fn unplug(&mut self) {
        let mut writing = false;
        for i in 0..self.file_pages as usize {
            let d = std::mem::take(&mut self.dirty[i]);
            let n = std::mem::take(&mut self.needwrite[i]);
            if d || n {
                writing = true;
                self.pending[i] = false;
                self.write_page(i as u64);
                if d {
                    self.writes.unplug_dirty += 1;
                } else {
                    self.writes.unplug_needwrite += 1;
                }
            }
        }
        if writing {
            self.writes.unplug_batches += 1;
        }
    }

    fn daemon_work(&mut self, now: u64) -> bool {
        if time_before(now, self.lastrun + SLEEP) {
            return false;
        }
        self.lastrun = now;
        if self.allclean {
            return false;
        }
        self.allclean = true;
        for j in 0..self.file_pages as usize {
            if std::mem::take(&mut self.pending[j]) {
                self.needwrite[j] = true;
            }
        }
        if self.need_sync {
            self.need_sync = false;
            self.sb_ec = self.events_cleared;
            self.needwrite[0] = true;
        }
        let mask = self.cpp - 1;
        let mut nextpage = 0;
        let mut j = 0u64;
        while j < self.chunks {
            let block = j << self.shift;
            if j == nextpage {
                nextpage += self.cpp;
                let p = (j / self.cpp) as usize;
                if !self.bp_pending[p] {
                    j = (j | mask) + 1;
                    continue;
                }
                self.bp_pending[p] = false;
            }
            let (bmc, _) = self.get_counter(block, false);
            let Some(i) = bmc else {
                j = (j | mask) + 1;
                continue;
            };
            if self.counters[i] == 1 && !self.need_sync {
                self.counters[i] = 0;
                self.count_page(j, -1);
                self.file_clear_bit(j);
            } else if self.counters[i] != 0 && self.counters[i] <= 2 {
                self.counters[i] = 1;
                self.bp_pending[(j / self.cpp) as usize] = true;
                self.allclean = false;
            }
            j += 1;
        }
        for j in 0..self.file_pages as usize {
            if self.dirty[j] {
                break;
            }
            if std::mem::take(&mut self.needwrite[j]) {
                self.write_page(j as u64);
                self.writes.daemon += 1;
            }
        }
        true
    }

    fn start_sync_one(&mut self, offset: u64, degraded: bool) -> (bool, u64) {
        let (bmc, blocks) = self.get_counter(offset, false);
        let mut rv = false;
        if let Some(i) = bmc {
            if self.counters[i] & RESYNC_MASK != 0 {
                rv = true;
            } else if self.counters[i] & NEEDED_MASK != 0 {
                rv = true;
                if !degraded {
                    self.counters[i] |= RESYNC_MASK;
                    self.counters[i] &= !NEEDED_MASK;
                }
            }
        }
        (rv, blocks)
    }

    fn start_sync(&mut self, mut offset: u64, degraded: bool) -> (bool, u64) {
        let (mut rv, mut blocks) = (false, 0);
        while blocks < self.page_sectors {
            let (r, b) = self.start_sync_one(offset, degraded);
            rv |= r;
            offset += b;
            blocks += b;
        }
        (rv, blocks)
    }

    fn end_sync(&mut self, offset: u64, aborted: bool) -> u64 {
        let (bmc, blocks) = self.get_counter(offset, false);
        if let Some(i) = bmc
            && self.counters[i] & RESYNC_MASK != 0
        {
            self.counters[i] &= !RESYNC_MASK;
            if self.counters[i] & NEEDED_MASK == 0 && aborted {
                self.counters[i] |= NEEDED_MASK;
            } else if self.counters[i] <= 2 {
                self.bp_pending[(offset >> self.shift) as usize / self.cpp as usize] = true;
                self.allclean = false;
            }
        }
        blocks
    }

    fn close_sync(&mut self) {
        let mut s = 0;
        while s < self.sync_size {
            s += self.end_sync(s, false);
        }
    }

    fn cond_end_sync(&mut self, sector: u64, force: bool, now: u64) -> bool {
        if sector == 0 {
            self.last_end_sync = now;
            return false;
        }
        if !force && time_before(now, self.last_end_sync + SLEEP) {
            return false;
        }
        let sector = sector & !((1u64 << self.shift) - 1);
        let mut s = 0;
        while s < sector && s < self.sync_size {
            s += self.end_sync(s, false);
        }
        self.last_end_sync = now;
        true
    }

    /// Compare every observable against the engine.
    fn compare(&self, bm: &Bitmap) -> Result<(), TestCaseError> {
        prop_assert_eq!(bm.counters(), &self.counters[..]);
        for p in 0..self.pages {
            let s = bm.counter_page(p);
            let pi = p as usize;
            prop_assert_eq!(
                (s.allocated, s.pending, s.count),
                (self.bp_alloc[pi], self.bp_pending[pi], self.bp_count[pi]),
                "counter page {}",
                p
            );
        }
        prop_assert_eq!(
            bm.cached_bitmap_bytes(),
            pack(&self.cached[2048..], self.chunks)
        );
        prop_assert_eq!(
            bm.disk_bitmap_bytes(),
            pack(&self.disk[2048..], self.chunks)
        );
        prop_assert_eq!(
            bm.cached_dirty_ranges(),
            runs(&self.cached[2048..], self.chunks)
        );
        prop_assert_eq!(
            bm.disk_dirty_ranges(),
            runs(&self.disk[2048..], self.chunks)
        );
        for p in 0..self.file_pages {
            let a = bm.file_page_attrs(p);
            let pi = p as usize;
            prop_assert_eq!(
                (a.dirty, a.pending, a.needwrite),
                (self.dirty[pi], self.pending[pi], self.needwrite[pi]),
                "file page {}",
                p
            );
        }
        let w = bm.page_writes();
        prop_assert_eq!(
            (
                w.unplug_dirty,
                w.unplug_needwrite,
                w.unplug_batches,
                w.daemon
            ),
            (
                self.writes.unplug_dirty,
                self.writes.unplug_needwrite,
                self.writes.unplug_batches,
                self.writes.daemon
            )
        );
        prop_assert_eq!(bm.allclean(), self.allclean);
        prop_assert_eq!(bm.need_sync(), self.need_sync);
        prop_assert_eq!(bm.events_cleared(), self.events_cleared);
        prop_assert_eq!(bm.sb().events_cleared, self.sb_ec);
        prop_assert_eq!(bm.disk_sb().events_cleared, self.disk_sb_ec);
        prop_assert_eq!(bm.daemon_lastrun(), self.lastrun);
        prop_assert_eq!(bm.last_end_sync(), self.last_end_sync);
        prop_assert_eq!(
            (bm.behind_writes(), bm.behind_writes_used()),
            (self.behind, self.behind_used)
        );
        Ok(())
    }
}

/// The runs of set bits among the first `chunks`, as half-open ranges, one bit at a time.
fn runs(bits: &[bool], chunks: u64) -> Vec<std::ops::Range<u64>> {
    let mut out: Vec<std::ops::Range<u64>> = Vec::new();
    for c in 0..chunks {
        if bits[c as usize] {
            match out.last_mut() {
                Some(r) if r.end == c => r.end = c + 1,
                _ => out.push(c..c + 1),
            }
        }
    }
    out
}

/// The first `chunks` bits packed LSB-first, as the on-disk bit area.
fn pack(bits: &[bool], chunks: u64) -> Vec<u8> {
    let mut out = vec![0u8; chunks.div_ceil(8) as usize];
    for (i, _) in bits
        .iter()
        .enumerate()
        .take(out.len() * 8)
        .filter(|(_, b)| **b)
    {
        out[i / 8] |= 1 << (i % 8);
    }
    out
}

fn unpack(bytes: &[u8]) -> Vec<bool> {
    (0..bytes.len() * 8)
        .map(|i| bytes[i / 8] >> (i % 8) & 1 != 0)
        .collect()
}

#[derive(Debug, Clone)]
enum G {
    Start {
        chunk: u64,
        sub: u64,
        sectors: u64,
        behind: bool,
    },
    End {
        pick: usize,
        success: bool,
    },
    Unplug,
    Daemon {
        dt: u64,
    },
    Degraded(bool),
    BumpEvents,
    StartSync {
        chunk: u64,
        degraded: bool,
    },
    EndSync {
        chunk: u64,
        aborted: bool,
    },
    CloseSync,
    CondEndSync {
        chunk: u64,
        force: bool,
        dt: u64,
    },
}

/// Chunks near the interesting boundaries: start, counter-page edges (256), the file-page edge
/// (2048 with 512-byte pages) and the end.
fn chunk() -> impl Strategy<Value = u64> {
    prop_oneof![0..24u64, 250..262u64, 2040..2056u64, CHUNKS - 6..CHUNKS,]
}

fn op() -> impl Strategy<Value = G> {
    prop_oneof![
        8 => (chunk(), 0..CS, 1..6u64, prop::bool::weighted(0.1)).prop_map(
            |(chunk, sub, sectors, behind)| G::Start { chunk, sub, sectors, behind }
        ),
        8 => (any::<usize>(), prop::bool::weighted(0.9))
            .prop_map(|(pick, success)| G::End { pick, success }),
        3 => Just(G::Unplug),
        5 => (0..2 * SLEEP).prop_map(|dt| G::Daemon { dt }),
        1 => prop::bool::weighted(0.3).prop_map(G::Degraded),
        1 => Just(G::BumpEvents),
        1 => (chunk(), any::<bool>()).prop_map(|(chunk, degraded)| G::StartSync { chunk, degraded }),
        1 => (chunk(), any::<bool>()).prop_map(|(chunk, aborted)| G::EndSync { chunk, aborted }),
        1 => Just(G::CloseSync),
        1 => (chunk(), any::<bool>(), 0..2 * SLEEP)
            .prop_map(|(chunk, force, dt)| G::CondEndSync { chunk, force, dt }),
    ]
}

/// Long writes anywhere (up to 300 chunks each), so that counter pages hold more than 64
/// counted chunks and the daemon takes its whole-block path (with and without `need_sync`).
fn dense_op() -> impl Strategy<Value = G> {
    prop_oneof![
        8 => (0..CHUNKS, 0..CS, 1..600u64, prop::bool::weighted(0.1)).prop_map(
            |(chunk, sub, sectors, behind)| G::Start { chunk, sub, sectors, behind }
        ),
        6 => (any::<usize>(), prop::bool::weighted(0.9))
            .prop_map(|(pick, success)| G::End { pick, success }),
        2 => Just(G::Unplug),
        5 => (0..2 * SLEEP).prop_map(|dt| G::Daemon { dt }),
        1 => prop::bool::weighted(0.3).prop_map(G::Degraded),
        2 => Just(G::BumpEvents),
    ]
}

fn chunks_of(offset: u64, sectors: u64) -> std::ops::Range<u64> {
    (offset / CS)..((offset + sectors - 1) / CS + 1)
}

fn run(ops: &[G], kernel: KernelVariant) -> Result<(), TestCaseError> {
    let g = geometry();
    let mut bm = Bitmap::new(g, BitmapConfig::new(kernel, SLEEP), 0);
    let mut r = Ref::new(&g, kernel.end_write);
    let n = CHUNKS as usize;
    let mut inflight: Vec<(u64, u64, bool)> = Vec::new();
    let mut per_chunk = vec![0u16; n];
    let mut idle = vec![0u32; n];
    let mut degraded = false;
    let mut now = 0u64;

    for (step, o) in ops.iter().enumerate() {
        let before_disk = unpack(&bm.disk_bitmap_bytes());
        let before: Vec<Counter> = bm.counters()[..n].iter().map(|&c| Counter(c)).collect();
        let mut needed_cleared_ok = 0..0u64;
        let mut ran = false;
        match *o {
            G::Start {
                chunk,
                sub,
                sectors,
                behind,
            } => {
                let offset = chunk * CS + sub;
                let sectors = sectors.min(CHUNKS * CS - 1 - offset).max(1);
                prop_assert_eq!(
                    bm.start_write(offset, sectors, behind),
                    StartOutcome::Started
                );
                r.startwrite(offset, sectors, behind);
                inflight.push((offset, sectors, behind));
                for c in chunks_of(offset, sectors) {
                    per_chunk[c as usize] += 1;
                }
            }
            G::End { pick, success } => {
                if !inflight.is_empty() {
                    let (offset, sectors, behind) = inflight.swap_remove(pick % inflight.len());
                    bm.end_write(offset, sectors, success, behind, degraded);
                    r.endwrite(offset, sectors, success, behind, degraded);
                    for c in chunks_of(offset, sectors) {
                        per_chunk[c as usize] -= 1;
                    }
                }
            }
            G::Unplug => {
                bm.unplug();
                r.unplug();
            }
            G::Daemon { dt } => {
                now += dt;
                ran = bm.daemon_work(now).ran();
                prop_assert_eq!(ran, r.daemon_work(now));
            }
            G::Degraded(d) => degraded = d,
            G::BumpEvents => {
                r.events += 1;
                bm.set_events(r.events);
            }
            G::StartSync { chunk, degraded } => {
                let s = bm.start_sync(chunk * CS, degraded);
                prop_assert_eq!((s.sync, s.blocks), r.start_sync(chunk * CS, degraded));
                if !degraded {
                    needed_cleared_ok = chunks_of(chunk * CS, s.blocks);
                }
            }
            G::EndSync { chunk, aborted } => {
                let b = bm.end_sync(chunk * CS, aborted);
                prop_assert_eq!(b, r.end_sync(chunk * CS, aborted));
            }
            G::CloseSync => {
                bm.close_sync();
                r.close_sync();
            }
            G::CondEndSync { chunk, force, dt } => {
                now += dt;
                let a = bm.cond_end_sync(chunk * CS, force, now);
                prop_assert_eq!(a, r.cond_end_sync(chunk * CS, force, now));
            }
        }

        // Differential check.
        r.compare(&bm)?;
        prop_assert!(
            bm.check_consistency().is_empty(),
            "{:?}",
            bm.check_consistency()
        );
        prop_assert!(bm.anomalies().is_empty(), "{:?}", bm.anomalies());

        // Idle-pass bookkeeping: daemon passes that ran count up; any other call that changed
        // a counter (write, end, sync) restarts the chunk's idle time.
        if ran {
            for i in idle.iter_mut() {
                *i += 1;
            }
        } else if !matches!(o, G::Daemon { .. }) {
            for (c, k) in bm.counters()[..n].iter().enumerate() {
                if Counter(*k) != before[c] {
                    idle[c] = 0;
                }
            }
        }
        let disk = unpack(&bm.disk_bitmap_bytes());
        let cached = unpack(&bm.cached_bitmap_bytes());
        let dirty_pages: Vec<bool> = (0..g.file_pages())
            .map(|p| bm.file_page_attrs(p).dirty)
            .collect();

        let mut in_flight_chunks = 0;
        for c in 0..CHUNKS {
            let ci = c as usize;
            let k = Counter(bm.counters()[ci]);
            // Counters never underflow: COUNTER() is exactly ticks + writes in flight.
            prop_assert_eq!(
                k.writes_in_flight(),
                per_chunk[ci],
                "chunk {} step {}",
                c,
                step
            );
            if per_chunk[ci] > 0 {
                in_flight_chunks += 1;
            }
            // A bit is cleared on disk only after two idle daemon passes.
            if before_disk[ci] && !disk[ci] {
                prop_assert!(
                    idle[ci] >= 2,
                    "chunk {} left the disk after {} passes",
                    c,
                    idle[ci]
                );
            }
            // NEEDED survives everything but a non-degraded start-sync over the chunk.
            if before[ci].needed() && !k.needed() {
                prop_assert!(
                    needed_cleared_ok.contains(&c),
                    "NEEDED of {} lost at {:?}",
                    c,
                    o
                );
            }
            // A counted chunk holds its cached bit.
            if k.raw() != 0 {
                prop_assert!(cached[ci], "chunk {} counted without its bit", c);
            }
            // Outside DIRTY pages, every cached bit is on disk.
            if cached[ci] && !dirty_pages[g.file_page_of(c) as usize] {
                prop_assert!(disk[ci], "chunk {} set in cache only", c);
            }
        }
        prop_assert_eq!(bm.summary().in_flight_chunks, in_flight_chunks);
        if matches!(o, G::Unplug) {
            // After unplug, disk bits ⊇ chunks with writes in flight (and every counted chunk).
            for (c, &k) in bm.counters()[..n].iter().enumerate() {
                if k != 0 {
                    prop_assert!(disk[c], "chunk {} in flight but clear on disk", c);
                }
            }
            prop_assert_eq!(bm.summary().dirty_file_pages, 0);
        }
    }
    // Drain: end everything, then the daemon cleans every chunk that is not NEEDED/RESYNC.
    for (offset, sectors, behind) in inflight.drain(..) {
        bm.end_write(offset, sectors, true, behind, false);
    }
    bm.close_sync();
    bm.unplug();
    for _ in 0..4 {
        now += SLEEP;
        bm.daemon_work(now);
    }
    let s = bm.summary();
    prop_assert_eq!(s.disk_dirty_chunks, s.needed_chunks);
    prop_assert_eq!(s.behind_writes, 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_reference_model_6_13(ops in prop::collection::vec(op(), 1..120)) {
        run(&ops, KernelVariant::V6_1)?;
    }

    #[test]
    fn engine_matches_reference_model_6_14(ops in prop::collection::vec(op(), 1..120)) {
        run(&ops, KernelVariant::V6_14)?;
    }

    #[test]
    fn engine_matches_reference_model_dense_writes(
        ops in prop::collection::vec(dense_op(), 1..160),
        v6_14 in any::<bool>(),
    ) {
        run(&ops, if v6_14 { KernelVariant::V6_14 } else { KernelVariant::V6_1 })?;
    }
}
