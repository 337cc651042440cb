//! What the TUI draws from: per-array views built from the mirror's snapshots, the cell states
//! and palette, the recent-write intensity histogram, and the chunk → cell aggregation.
//!
//! A frame never loops over chunks: the heatmap reads the snapshot's sorted range lists (dirty on
//! disk, in flight, NEEDED, RESYNC) with one sweep per list, and intensity from a prefix sum over
//! a fixed-size histogram, so a frame costs O(cells + ranges) whatever the array's size.
use std::ops::Range;

use ratatui::style::Color;

use crate::mirror::MirrorArray;
use crate::mirror::snapshot::ArraySnapshot;

/// The state of a heatmap cell: the highest-priority state of the chunks it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CellState {
    /// Counter 0 and bit clear on disk.
    Clean,
    /// Bit set on disk, no write in flight (the daemon clears it 2–3 passes after the last write).
    Dirty,
    /// Writes in flight (`COUNTER() > 2`).
    InFlight,
    /// NEEDED: the chunk must be resynced.
    Needed,
    /// RESYNC: the bitmap marked the chunk as being resynced (`md_bitmap_start_sync`).
    Resync,
    /// The array's resync/recovery checkpoint (`sync_completed`) is in this chunk right now.
    Syncing,
}

impl CellState {
    /// Every state, lowest priority first.
    pub const ALL: [CellState; 6] = [
        CellState::Clean,
        CellState::Dirty,
        CellState::InFlight,
        CellState::Needed,
        CellState::Resync,
        CellState::Syncing,
    ];

    /// The glyph: distinct per state, so state reads without colour.
    pub fn glyph(self) -> char {
        match self {
            CellState::Clean => '·',
            CellState::Dirty => 'o',
            CellState::InFlight => '*',
            CellState::Needed => '!',
            CellState::Resync => 'R',
            CellState::Syncing => '>',
        }
    }

    /// The colour, from the Okabe–Ito palette (distinguishable with the common colour-vision
    /// deficiencies).
    pub fn color(self) -> Color {
        match self {
            CellState::Clean => Color::Rgb(0x80, 0x80, 0x80),
            CellState::Dirty => Color::Rgb(0x56, 0xB4, 0xE9), // sky blue
            CellState::InFlight => Color::Rgb(0xE6, 0x9F, 0x00), // orange
            CellState::Needed => Color::Rgb(0xD5, 0x5E, 0x00), // vermillion
            CellState::Resync => Color::Rgb(0xCC, 0x79, 0xA7), // reddish purple
            CellState::Syncing => Color::Rgb(0xF0, 0xE4, 0x42), // yellow
        }
    }

    /// Legend label.
    pub fn label(self) -> &'static str {
        match self {
            CellState::Clean => "clean",
            CellState::Dirty => "dirty on disk",
            CellState::InFlight => "writes in flight",
            CellState::Needed => "NEEDED",
            CellState::Resync => "RESYNC",
            CellState::Syncing => "syncing now",
        }
    }
}

/// Intensity levels above zero (the colour scale's steps).
pub const LEVELS: u8 = 8;

/// Background of intensity level 1..=[`LEVELS`]: a cividis ramp (dark blue to yellow, monotonic
/// lightness, readable with colour-vision deficiencies). Level 0 keeps the terminal's background.
pub fn intensity_color(level: u8) -> Option<Color> {
    const RAMP: [(u8, u8, u8); LEVELS as usize] = [
        (0x00, 0x33, 0x6F),
        (0x39, 0x48, 0x6B),
        (0x57, 0x5C, 0x6D),
        (0x70, 0x71, 0x73),
        (0x8A, 0x87, 0x79),
        (0xA6, 0x9D, 0x75),
        (0xC4, 0xB5, 0x6C),
        (0xFF, 0xEA, 0x46),
    ];
    (level > 0).then(|| {
        let (r, g, b) = RAMP[(level.min(LEVELS) - 1) as usize];
        Color::Rgb(r, g, b)
    })
}

/// On backgrounds this light, glyphs are drawn black instead of in their state colour.
pub fn light_background(level: u8) -> bool {
    level >= 6
}

/// Decaying per-region counts of recent writes over an array.
///
/// The snapshot has no per-write history, so intensity is sampled: at each sample every chunk
/// with writes in flight and every chunk that became dirty on disk since the previous sample
/// adds one to its region; counts decay with a half-life of [`Intensity::HALF_LIFE_SECS`].
#[derive(Clone, Debug, Default)]
pub struct Intensity {
    chunks: u64,
    /// Chunks per bucket.
    per: u64,
    buckets: Vec<f32>,
    /// Prefix sums of `buckets` (len + 1), rebuilt after each sample.
    prefix: Vec<f64>,
    max_density: f64,
    prev_dirty: Vec<[u64; 2]>,
}

impl Intensity {
    /// Buckets at most (fine enough for a full-screen heatmap).
    pub const MAX_BUCKETS: u64 = 1 << 16;
    /// Half-life of the counts, seconds.
    pub const HALF_LIFE_SECS: f64 = 10.0;

    /// An empty histogram over `chunks` chunks.
    pub fn new(chunks: u64) -> Self {
        let per = chunks.div_ceil(Self::MAX_BUCKETS).max(1);
        let n = chunks.div_ceil(per) as usize;
        Self {
            chunks,
            per,
            buckets: vec![0.0; n],
            prefix: vec![0.0; n + 1],
            max_density: 0.0,
            prev_dirty: Vec::new(),
        }
    }

    fn add_range(&mut self, r: Range<u64>) {
        let r = r.start.min(self.chunks)..r.end.min(self.chunks);
        let mut c = r.start;
        while c < r.end {
            let b = c / self.per;
            let end = ((b + 1) * self.per).min(r.end);
            self.buckets[b as usize] += (end - c) as f32;
            c = end;
        }
    }

    /// Takes one sample: `dirty` and `in_flight` as in the snapshot, `dt` seconds after the last.
    pub fn sample(&mut self, dirty: &[[u64; 2]], in_flight: &[[u64; 2]], dt: f64) {
        let decay = 0.5f64.powf(dt.max(0.0) / Self::HALF_LIFE_SECS) as f32;
        for b in &mut self.buckets {
            *b *= decay;
        }
        for r in in_flight {
            self.add_range(r[0]..r[1]);
        }
        for r in subtract(dirty, &self.prev_dirty) {
            self.add_range(r);
        }
        self.prev_dirty = dirty.to_vec();
        let mut acc = 0.0f64;
        self.max_density = 0.0;
        for (i, b) in self.buckets.iter().enumerate() {
            self.prefix[i] = acc;
            acc += *b as f64;
            let len = (self.chunks - i as u64 * self.per).min(self.per) as f64;
            self.max_density = self.max_density.max(*b as f64 / len);
        }
        self.prefix[self.buckets.len()] = acc;
    }

    /// Recent-write density (writes per chunk, decayed) over chunks `r`.
    pub fn density(&self, r: Range<u64>) -> f64 {
        if self.buckets.is_empty() || r.start >= r.end {
            return 0.0;
        }
        let (b0, b1) = (r.start / self.per, (r.end - 1) / self.per);
        let b1 = b1.min(self.buckets.len() as u64 - 1);
        if b0 > b1 {
            return 0.0;
        }
        let sum = self.prefix[b1 as usize + 1] - self.prefix[b0 as usize];
        let span = ((b1 + 1) * self.per).min(self.chunks) - b0 * self.per;
        sum / span as f64
    }

    /// The level (0..=[`LEVELS`]) of chunks `r`, relative to the densest region of the array.
    pub fn level(&self, r: Range<u64>) -> u8 {
        let d = self.density(r);
        if d <= 1e-3 || self.max_density <= 0.0 {
            return 0;
        }
        ((d / self.max_density * LEVELS as f64).ceil() as u8).clamp(1, LEVELS)
    }

    /// Densest region's density (writes per chunk, decayed): the top of the scale.
    pub fn max_density(&self) -> f64 {
        self.max_density
    }
}

/// `a` minus `b`, both sorted disjoint half-open ranges.
fn subtract(a: &[[u64; 2]], b: &[[u64; 2]]) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    let mut j = 0;
    for r in a {
        let mut s = r[0];
        while j < b.len() && b[j][1] <= s {
            j += 1;
        }
        let mut k = j;
        while s < r[1] {
            if k < b.len() && b[k][0] < r[1] {
                if b[k][0] > s {
                    out.push(s..b[k][0]);
                }
                s = s.max(b[k][1]);
                k += 1;
            } else {
                out.push(s..r[1]);
                break;
            }
        }
    }
    out
}

/// One array as the TUI shows it.
#[derive(Clone, Debug)]
pub struct ArrayView {
    /// The snapshot (geometry, counts, ranges, feed health).
    pub snap: ArraySnapshot,
    /// Chunks with RESYNC set, half-open ranges.
    pub resync_ranges: Vec<[u64; 2]>,
    /// Sync checkpoint and total (sectors) from sysfs `sync_completed`, while a sync runs.
    pub sync_completed: Option<(u64, u64)>,
    /// Recent writes.
    pub intensity: Intensity,
    /// Chunks per entry of `bucket_states` (a power of two, so that at most
    /// [`Intensity::MAX_BUCKETS`] cover the array).
    pub bucket: u64,
    /// The most urgent state of each bucket of chunks (syncing excepted), made once per sample
    /// so that a frame whose cells are whole buckets reads buckets instead of range lists.
    pub bucket_states: Vec<CellState>,
    /// The snapshot as JSON without its range lists (for fields other features add, such as
    /// `prediction` and `alerts`), made once per sample, not per frame.
    pub json: serde_json::Value,
}

impl ArrayView {
    /// A view from a snapshot alone.
    pub fn from_snapshot(snap: ArraySnapshot) -> Self {
        let chunks = snap.bitmap.as_ref().map(|b| b.chunks).unwrap_or(0);
        Self {
            snap,
            resync_ranges: Vec::new(),
            sync_completed: None,
            intensity: Intensity::new(chunks),
            bucket: chunks.div_ceil(Intensity::MAX_BUCKETS).next_power_of_two(),
            bucket_states: Vec::new(),
            json: serde_json::Value::Null,
        }
    }

    /// Recomputes the per-bucket states (after the range lists changed).
    pub fn rebuild_buckets(&mut self) {
        let b = self.bucket;
        let n = self.chunks().div_ceil(b) as usize;
        self.bucket_states = self
            .sweep(0, b, n)
            .into_iter()
            .map(|s| s.unwrap_or(CellState::Clean))
            .collect();
    }

    /// `snap` as JSON without the (possibly long) range lists.
    fn light_json(snap: &mut ArraySnapshot) -> serde_json::Value {
        let d = std::mem::take(&mut snap.dirty_ranges);
        let f = std::mem::take(&mut snap.in_flight_ranges);
        let n = std::mem::take(&mut snap.needed_ranges);
        let v = serde_json::to_value(&*snap).unwrap_or_default();
        (snap.dirty_ranges, snap.in_flight_ranges, snap.needed_ranges) = (d, f, n);
        v
    }

    /// Updates (or builds) the view of a mirrored array, `dt` seconds after the last sample.
    pub fn refresh(
        prev: Option<ArrayView>,
        a: &MirrorArray,
        now_ns: u64,
        drops: u64,
        dt: f64,
    ) -> Self {
        let snap = a.snapshot(now_ns, drops);
        let resync = a
            .bitmap
            .as_ref()
            .filter(|_| snap.counts.resync_chunks > 0)
            .map(|b| crate::mirror::snapshot::ranges(&b.counter_ranges(|c| c.resync())))
            .unwrap_or_default();
        let mut v = Self::update(prev, snap, dt);
        v.resync_ranges = resync;
        v.rebuild_buckets();
        v.sync_completed = a.info.sync_completed;
        v
    }

    /// Replaces the snapshot of `prev` (or starts a view) and samples intensity.
    pub fn update(prev: Option<ArrayView>, snap: ArraySnapshot, dt: f64) -> Self {
        let chunks = snap.bitmap.as_ref().map(|b| b.chunks).unwrap_or(0);
        let mut v = match prev {
            Some(mut p) if p.chunks() == chunks => {
                p.snap = snap;
                p
            }
            _ => Self::from_snapshot(snap),
        };
        v.json = Self::light_json(&mut v.snap);
        v.rebuild_buckets();
        v.intensity
            .sample(&v.snap.dirty_ranges, &v.snap.in_flight_ranges, dt);
        v
    }

    /// Chunks in the bitmap (0 without one).
    pub fn chunks(&self) -> u64 {
        self.snap.bitmap.as_ref().map(|b| b.chunks).unwrap_or(0)
    }

    /// The chunk range the running sync's checkpoint is in (md syncs in bitmap address space:
    /// chunk = sector / chunk sectors, as `md_bitmap_start_sync` computes it).
    pub fn syncing_chunks(&self) -> Option<Range<u64>> {
        let (done, total) = self.sync_completed?;
        let b = self.snap.bitmap.as_ref()?;
        let cs = (b.chunk_size_bytes / 512).max(1);
        if done >= total || b.chunks == 0 {
            return None;
        }
        let c = (done / cs).min(b.chunks - 1);
        Some(c..c + 1)
    }

    /// States of `n` consecutive cells of `per` chunks each, the first starting at chunk `first`;
    /// cells past the last chunk are `None`. Cells made of whole buckets are read from the
    /// per-bucket states; others sweep the range lists.
    pub fn cell_states(&self, first: u64, per: u64, n: usize) -> Vec<Option<CellState>> {
        let per = per.max(1);
        let b = self.bucket;
        let chunks = self.chunks();
        let mut out =
            if per.is_multiple_of(b) && first.is_multiple_of(b) && !self.bucket_states.is_empty() {
                let nb = self.bucket_states.len() as u64;
                (0..n as u64)
                    .map(|i| {
                        let c0 = first + i * per;
                        (c0 < chunks).then(|| {
                            let (b0, b1) = (c0 / b, ((c0 + per) / b).min(nb));
                            self.bucket_states[b0 as usize..b1 as usize]
                                .iter()
                                .copied()
                                .max()
                                .unwrap_or(CellState::Clean)
                        })
                    })
                    .collect()
            } else {
                self.sweep(first, per, n)
            };
        if let Some(r) = self.syncing_chunks()
            && r.start >= first
            && let Some(Some(c)) = out.get_mut(((r.start - first) / per) as usize)
        {
            *c = CellState::Syncing;
        }
        out
    }

    /// [`ArrayView::cell_states`] from the range lists: O(visible ranges + cells).
    pub(crate) fn sweep(&self, first: u64, per: u64, n: usize) -> Vec<Option<CellState>> {
        let chunks = self.chunks();
        let per = per.max(1);
        let mut out: Vec<Option<CellState>> = (0..n as u64)
            .map(|i| (first + i * per < chunks).then_some(CellState::Clean))
            .collect();
        let end = first
            .saturating_add(per.saturating_mul(n as u64))
            .min(chunks);
        let mut paint = |ranges: &mut dyn Iterator<Item = Range<u64>>, st: CellState| {
            for r in ranges {
                let (s, e) = (r.start.max(first), r.end.min(end));
                if s >= e {
                    continue;
                }
                for cell in out
                    .iter_mut()
                    .take(((e - 1 - first) / per) as usize + 1)
                    .skip(((s - first) / per) as usize)
                    .flatten()
                {
                    *cell = (*cell).max(st);
                }
            }
        };
        let visible = |v: &[[u64; 2]]| -> std::ops::Range<usize> {
            let lo = v.partition_point(|r| r[1] <= first);
            let hi = v.partition_point(|r| r[0] < end);
            lo..hi.max(lo)
        };
        let s = &self.snap;
        for (list, st) in [
            (&s.dirty_ranges, CellState::Dirty),
            (&s.in_flight_ranges, CellState::InFlight),
            (&s.needed_ranges, CellState::Needed),
            (&self.resync_ranges, CellState::Resync),
        ] {
            let vis = visible(list);
            paint(&mut list[vis].iter().map(|r| r[0]..r[1]), st);
        }
        out
    }
}
