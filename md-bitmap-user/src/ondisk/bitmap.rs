//! The bitmap superblock (`bitmap_super_t`, 256 bytes, little-endian) and the area after it.
//!
//! * Versions 3 (host-endian bits, deprecated), 4 (the normal one) and 5 (clustered: one slot per
//!   node) keep one bit per chunk starting at byte 256; chunk `i` is bit `i % 8` of byte
//!   `256 + i / 8` (`test_bit_le`). `chunksize` is in bytes and
//!   `chunks = ceil(sync_size * 512 / chunksize)` (mdadm `bitmap_bits`).
//! * Version 6 (lockless, `md-llbitmap.c`, Linux 6.18+) keeps one state byte per chunk starting
//!   at byte 1024 (`BITMAP_DATA_OFFSET`); there `chunksize` is in sectors and
//!   `chunks = ceil(sync_size / chunksize)`.
//!
//! Everything here is a pure function of bytes.
use std::ops::Range;

use super::{OndiskError, Result, SECTOR_BYTES, le32, le64};

/// `BITMAP_MAGIC`: "bitm" read as a little-endian word.
pub const BITMAP_MAGIC: u32 = 0x6d74_6962;
/// Size of `bitmap_super_t`; the bits of versions 3-5 start right after it.
pub const BITMAP_SUPER_BYTES: usize = 256;
/// `BITMAP_DATA_OFFSET` of the lockless bitmap: where its state bytes start.
pub const LOCKLESS_DATA_OFFSET: u64 = 1024;
/// `BITMAP_MAJOR_HOSTENDIAN`.
pub const BITMAP_MAJOR_HOSTENDIAN: u32 = 3;
/// `BITMAP_MAJOR_HI`: the normal little-endian bitmap.
pub const BITMAP_MAJOR_HI: u32 = 4;
/// `BITMAP_MAJOR_CLUSTERED`.
pub const BITMAP_MAJOR_CLUSTERED: u32 = 5;
/// `BITMAP_MAJOR_LOCKLESS`.
pub const BITMAP_MAJOR_LOCKLESS: u32 = 6;
/// `COUNTER_MAX`: the kernel's limit on `write_behind`.
pub const COUNTER_MAX: u32 = 0x3fff;
/// Largest bit or state area this tool reads (256 MiB, i.e. 2^31 classic chunks). Real bitmaps
/// are far smaller (mdadm sizes them to at most a few hundred KiB); a larger claim is taken as a
/// corrupt superblock rather than a reason to allocate gigabytes.
pub const MAX_AREA_BYTES: u64 = 256 << 20;

/// `bitmap->flags` / `sb->state` bits (kernel `enum bitmap_state`), with the names used in output.
pub const STATE_FLAGS: [(u32, &str); 6] = [
    (1, "stale"),
    (2, "write_error"),
    (3, "first_use"),
    (4, "clean"),
    (5, "daemon_busy"),
    (15, "host_endian"),
];

/// Which bitmap format a superblock describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BitmapKind {
    /// Version 3: bits in the writer's native `unsigned long` order (deprecated).
    HostEndian,
    /// Version 4: little-endian bits, the normal case.
    Classic,
    /// Version 5: cluster-md, one bitmap slot per node.
    Clustered,
    /// Version 6: lockless bitmap, one state byte per chunk.
    Lockless,
}

impl BitmapKind {
    /// The kind of a superblock `version`, if known.
    pub fn from_version(v: u32) -> Option<Self> {
        Some(match v {
            BITMAP_MAJOR_HOSTENDIAN => Self::HostEndian,
            BITMAP_MAJOR_HI => Self::Classic,
            BITMAP_MAJOR_CLUSTERED => Self::Clustered,
            BITMAP_MAJOR_LOCKLESS => Self::Lockless,
            _ => return None,
        })
    }

    /// "host_endian", "classic", "clustered" or "lockless".
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HostEndian => "host_endian",
            Self::Classic => "classic",
            Self::Clustered => "clustered",
            Self::Lockless => "lockless",
        }
    }
}

/// A decoded `bitmap_super_t`. Fields keep their on-disk meaning; use the methods for units.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BitmapSuper {
    /// `magic` (should be [`BITMAP_MAGIC`]).
    pub magic: u32,
    /// `version` (3 to 6).
    pub version: u32,
    /// `uuid`: must equal the array UUID bytes.
    pub uuid: [u8; 16],
    /// `events`: written before the md superblock's.
    pub events: u64,
    /// `events_cleared`: event count at the last bit clear.
    pub events_cleared: u64,
    /// `sync_size`: sectors the bitmap covers.
    pub sync_size_sectors: u64,
    /// `state`: `bitmap->flags` bits (see [`STATE_FLAGS`]).
    pub state: u32,
    /// `chunksize` as stored: bytes for versions 3-5, sectors for version 6.
    pub chunksize_raw: u32,
    /// `daemon_sleep` in seconds.
    pub daemon_sleep_secs: u32,
    /// `write_behind`: max outstanding write-behind writes (0 = normal).
    pub write_behind: u32,
    /// `sectors_reserved`: space reserved for the bitmap, in sectors (0 = unknown).
    pub sectors_reserved: u32,
    /// `nodes`: cluster nodes (version 5).
    pub nodes: u32,
    /// `cluster_name` and the padding after it (a C string that may run into the padding).
    pub cluster_name_raw: [u8; 184],
}

impl BitmapSuper {
    /// Decodes the 256-byte superblock without judging it (mdadm's `sb_le_to_cpu`).
    pub fn from_bytes(buf: &[u8]) -> Result<Self> {
        if buf.len() < BITMAP_SUPER_BYTES {
            return Err(OndiskError::ShortBuffer {
                what: "bitmap superblock",
                needed: BITMAP_SUPER_BYTES,
                got: buf.len(),
            });
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&buf[8..24]);
        let mut name = [0u8; 184];
        name.copy_from_slice(&buf[72..256]);
        Ok(Self {
            magic: le32(buf, 0),
            version: le32(buf, 4),
            uuid,
            events: le64(buf, 24),
            events_cleared: le64(buf, 32),
            sync_size_sectors: le64(buf, 40),
            state: le32(buf, 48),
            chunksize_raw: le32(buf, 52),
            daemon_sleep_secs: le32(buf, 56),
            write_behind: le32(buf, 60),
            sectors_reserved: le32(buf, 64),
            nodes: le32(buf, 68),
            cluster_name_raw: name,
        })
    }

    /// Decodes and checks magic and version. `offset` (bytes on the member) only feeds the
    /// error message.
    pub fn parse(buf: &[u8], offset: u64) -> Result<Self> {
        let sb = Self::from_bytes(buf)?;
        if sb.magic != BITMAP_MAGIC {
            return Err(OndiskError::BadBitmapMagic {
                offset,
                magic: sb.magic,
            });
        }
        if sb.kind().is_none() {
            return Err(OndiskError::UnknownBitmapVersion(sb.version));
        }
        Ok(sb)
    }

    /// The format, if the version is known.
    pub fn kind(&self) -> Option<BitmapKind> {
        BitmapKind::from_version(self.version)
    }

    /// True for the lockless (version 6) format.
    pub fn is_lockless(&self) -> bool {
        self.version == BITMAP_MAJOR_LOCKLESS
    }

    /// Bitmap chunk size in bytes (converting the lockless bitmap's sectors).
    pub fn chunk_size_bytes(&self) -> u64 {
        if self.is_lockless() {
            u64::from(self.chunksize_raw) * SECTOR_BYTES
        } else {
            u64::from(self.chunksize_raw)
        }
    }

    /// The cluster name: the C string starting at `cluster_name` (as `printf("%s")` reads it).
    pub fn cluster_name(&self) -> String {
        let end = self
            .cluster_name_raw
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.cluster_name_raw.len());
        String::from_utf8_lossy(&self.cluster_name_raw[..end]).into_owned()
    }

    /// Names of the set `state` bits (see [`STATE_FLAGS`]); unknown bits as `bit<N>`.
    pub fn state_flags(&self) -> Vec<String> {
        (0..32)
            .filter(|b| self.state & (1 << b) != 0)
            .map(|b| {
                STATE_FLAGS
                    .iter()
                    .find(|(n, _)| *n == b)
                    .map(|(_, name)| (*name).to_string())
                    .unwrap_or_else(|| format!("bit{b}"))
            })
            .collect()
    }

    /// True if `BITMAP_STALE` is set: the kernel will resync everything.
    pub fn is_stale(&self) -> bool {
        self.state & (1 << 1) != 0
    }

    /// True if a lockless bitmap was created by mdadm and not yet initialised by the kernel
    /// (`BITMAP_FIRST_USE`): its chunk size and state bytes are not meaningful yet.
    pub fn is_lockless_first_use(&self) -> bool {
        self.is_lockless() && self.state & (1 << 3) != 0
    }

    /// Checks the geometry as the kernel would and computes the chunk count and where the
    /// bit or state area lies relative to the bitmap superblock.
    pub fn geometry(&self) -> Result<Geometry> {
        let raw = u64::from(self.chunksize_raw);
        let unit = if self.is_lockless() {
            "sectors"
        } else {
            "bytes"
        };
        if raw == 0 {
            return Err(OndiskError::Geometry("chunk size is zero".into()));
        }
        if !raw.is_power_of_two() {
            return Err(OndiskError::Geometry(format!(
                "chunk size {raw} {unit} is not a power of two"
            )));
        }
        if !self.is_lockless() && raw < SECTOR_BYTES {
            return Err(OndiskError::Geometry(format!(
                "chunk size {raw} bytes is below the kernel's minimum of 512"
            )));
        }
        let sync = self.sync_size_sectors;
        let chunks = if self.is_lockless() {
            sync.div_ceil(raw)
        } else {
            let bytes = sync.checked_mul(SECTOR_BYTES).ok_or_else(|| {
                OndiskError::Geometry(format!(
                    "sync size {sync} sectors overflows 64 bits when counted in bytes"
                ))
            })?;
            bytes.div_ceil(raw)
        };
        let (area_offset, area_bytes) = if self.is_lockless() {
            (LOCKLESS_DATA_OFFSET, chunks)
        } else {
            (BITMAP_SUPER_BYTES as u64, chunks.div_ceil(8))
        };
        if area_bytes > MAX_AREA_BYTES {
            return Err(OndiskError::Geometry(format!(
                "sync size {sync} sectors with chunk size {raw} {unit} gives {chunks} chunks, \
                 a {area_bytes}-byte bitmap (over the {MAX_AREA_BYTES}-byte sanity limit)"
            )));
        }
        Ok(Geometry {
            chunk_size_bytes: self.chunk_size_bytes(),
            chunks,
            area_offset,
            area_bytes,
        })
    }

    /// Bytes one cluster node's slot occupies (mdadm `calc_bitmap_size(bms, 4096)`, kernel
    /// `DIV_ROUND_UP(((chunks + 7) >> 3) + 256, 4096) << 12`), from a checked geometry.
    pub fn cluster_slot_bytes(geometry: &Geometry) -> u64 {
        (geometry.chunks.div_ceil(8) + BITMAP_SUPER_BYTES as u64).div_ceil(4096) * 4096
    }

    /// Problems the kernel would refuse the bitmap for that do not stop us reading it
    /// (daemon sleep or write-behind out of range).
    pub fn kernel_complaints(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.daemon_sleep_secs < 1 {
            v.push("daemon sleep period 0 is out of range".into());
        }
        if !self.is_lockless() && self.write_behind > COUNTER_MAX {
            v.push(format!(
                "write-behind limit {} is out of range (0 - 16383)",
                self.write_behind
            ));
        }
        v
    }
}

/// The shape of a bitmap: how many chunks and where their bits or bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Chunk size in bytes.
    pub chunk_size_bytes: u64,
    /// Number of chunks (bits, or state bytes for the lockless bitmap).
    pub chunks: u64,
    /// Where the bit or state area starts, in bytes after the bitmap superblock's start.
    pub area_offset: u64,
    /// Bytes of the area that hold chunks.
    pub area_bytes: u64,
}

/// Dirty chunks of a bit area.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirtyScan {
    /// Chunks covered.
    pub chunks: u64,
    /// Chunks whose bit is set (or, for the lockless bitmap, whose state needs a resync).
    pub dirty_chunks: u64,
    /// Maximal runs of dirty chunks, half-open `[start, end)`, ascending.
    pub dirty_ranges: Vec<Range<u64>>,
}

impl DirtyScan {
    /// Dirty share in percent (0 for an empty bitmap), as mdadm computes it.
    pub fn dirty_percent(&self) -> f64 {
        100.0 * self.dirty_chunks as f64 / self.chunks.max(1) as f64
    }
}

/// Builds maximal half-open ranges from ascending dirty positions.
#[derive(Default)]
struct RangeBuilder {
    ranges: Vec<Range<u64>>,
    count: u64,
}

impl RangeBuilder {
    fn push_run(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        self.count += end - start;
        if let Some(last) = self.ranges.last_mut()
            && last.end == start
        {
            last.end = end;
            return;
        }
        self.ranges.push(start..end);
    }
}

/// Scans the bits of a version 3-5 bitmap: chunk `i` is bit `i % 8` of `bits[i / 8]`. Only the
/// first `chunks` bits count (mdadm `count_dirty_bits` uses the low bits of a partial last byte).
/// `bits` must hold at least `ceil(chunks / 8)` bytes.
pub fn scan_bits(bits: &[u8], chunks: u64) -> Result<DirtyScan> {
    let need = chunks.div_ceil(8);
    if (bits.len() as u64) < need {
        return Err(OndiskError::ShortBuffer {
            what: "bitmap bit area",
            needed: usize::try_from(need).unwrap_or(usize::MAX),
            got: bits.len(),
        });
    }
    let mut rb = RangeBuilder::default();
    let full = (chunks / 8) as usize;
    let mut i = 0usize;
    while i < full {
        // Skip clean stretches a word at a time.
        if i.is_multiple_of(8) && i + 8 <= full && bits[i..i + 8].iter().all(|&b| b == 0) {
            i += 8;
            continue;
        }
        let b = bits[i];
        let base = i as u64 * 8;
        match b {
            0 => {}
            0xff => rb.push_run(base, base + 8),
            _ => push_byte(&mut rb, base, b, 8),
        }
        i += 1;
    }
    let tail = (chunks % 8) as u32;
    if tail > 0 {
        push_byte(&mut rb, full as u64 * 8, bits[full], tail);
    }
    Ok(DirtyScan {
        chunks,
        dirty_chunks: rb.count,
        dirty_ranges: rb.ranges,
    })
}

fn push_byte(rb: &mut RangeBuilder, base: u64, b: u8, nbits: u32) {
    let mut bit = 0;
    while bit < nbits {
        if b & (1 << bit) != 0 {
            let start = bit;
            while bit < nbits && b & (1 << bit) != 0 {
                bit += 1;
            }
            rb.push_run(base + u64::from(start), base + u64::from(bit));
        } else {
            bit += 1;
        }
    }
}

/// A lockless bitmap chunk state (`enum llbitmap_state`). Values 0-4 exist since Linux 6.18;
/// 5-7 were added later for raid456 "proactive sync".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocklessState {
    /// 0 `BitUnwritten`: no valid data (never written, or discarded).
    Unwritten,
    /// 1 `BitClean`: data consistent.
    Clean,
    /// 2 `BitDirty`: written recently; consistent once the I/O is done.
    Dirty,
    /// 3 `BitNeedSync`: must be resynchronised.
    NeedSync,
    /// 4 `BitSyncing`: being resynchronised.
    Syncing,
    /// 5 `BitNeedSyncUnwritten` (newer kernels).
    NeedSyncUnwritten,
    /// 6 `BitSyncingUnwritten` (newer kernels).
    SyncingUnwritten,
    /// 7 `BitCleanUnwritten` (newer kernels).
    CleanUnwritten,
    /// Any other byte; the kernel forces a resync of such a chunk.
    Invalid(u8),
}

impl LocklessState {
    /// Decodes a state byte.
    pub fn from_byte(b: u8) -> Self {
        match b {
            0 => Self::Unwritten,
            1 => Self::Clean,
            2 => Self::Dirty,
            3 => Self::NeedSync,
            4 => Self::Syncing,
            5 => Self::NeedSyncUnwritten,
            6 => Self::SyncingUnwritten,
            7 => Self::CleanUnwritten,
            x => Self::Invalid(x),
        }
    }

    /// True for states that mean the chunk's copies may differ, i.e. that lead to a resync after
    /// the array is assembled again (Dirty becomes NeedSync on reload) — the lockless analogue of
    /// a set bit.
    pub fn needs_sync(self) -> bool {
        matches!(
            self,
            Self::Dirty
                | Self::NeedSync
                | Self::Syncing
                | Self::NeedSyncUnwritten
                | Self::SyncingUnwritten
                | Self::Invalid(_)
        )
    }
}

/// How many chunks of a lockless bitmap are in each state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocklessCounts {
    /// `BitUnwritten`.
    pub unwritten: u64,
    /// `BitClean`.
    pub clean: u64,
    /// `BitDirty`.
    pub dirty: u64,
    /// `BitNeedSync`.
    pub need_sync: u64,
    /// `BitSyncing`.
    pub syncing: u64,
    /// `BitNeedSyncUnwritten`.
    pub need_sync_unwritten: u64,
    /// `BitSyncingUnwritten`.
    pub syncing_unwritten: u64,
    /// `BitCleanUnwritten`.
    pub clean_unwritten: u64,
    /// Bytes that are no known state.
    pub invalid: u64,
}

impl LocklessCounts {
    fn add(&mut self, s: LocklessState) {
        let c = match s {
            LocklessState::Unwritten => &mut self.unwritten,
            LocklessState::Clean => &mut self.clean,
            LocklessState::Dirty => &mut self.dirty,
            LocklessState::NeedSync => &mut self.need_sync,
            LocklessState::Syncing => &mut self.syncing,
            LocklessState::NeedSyncUnwritten => &mut self.need_sync_unwritten,
            LocklessState::SyncingUnwritten => &mut self.syncing_unwritten,
            LocklessState::CleanUnwritten => &mut self.clean_unwritten,
            LocklessState::Invalid(_) => &mut self.invalid,
        };
        *c += 1;
    }

    /// (name, count) pairs in state order, names as the kernel's `llbitmap/bits` prints them
    /// with spaces replaced by underscores.
    pub fn named(&self) -> [(&'static str, u64); 9] {
        [
            ("unwritten", self.unwritten),
            ("clean", self.clean),
            ("dirty", self.dirty),
            ("need_sync", self.need_sync),
            ("syncing", self.syncing),
            ("need_sync_unwritten", self.need_sync_unwritten),
            ("syncing_unwritten", self.syncing_unwritten),
            ("clean_unwritten", self.clean_unwritten),
            ("invalid", self.invalid),
        ]
    }
}

/// A decoded lockless state area.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocklessScan {
    /// Chunks per state.
    pub counts: LocklessCounts,
    /// Chunks needing a resync (see [`LocklessState::needs_sync`]) and their ranges.
    pub dirty: DirtyScan,
}

/// Decodes the first `chunks` state bytes of a lockless bitmap (`states` starts at
/// [`LOCKLESS_DATA_OFFSET`] of the bitmap).
pub fn scan_lockless(states: &[u8], chunks: u64) -> Result<LocklessScan> {
    let n = usize::try_from(chunks)
        .ok()
        .filter(|&n| n <= states.len())
        .ok_or(OndiskError::ShortBuffer {
            what: "lockless bitmap state area",
            needed: usize::try_from(chunks).unwrap_or(usize::MAX),
            got: states.len(),
        })?;
    let mut counts = LocklessCounts::default();
    let mut rb = RangeBuilder::default();
    for (i, &b) in states[..n].iter().enumerate() {
        let s = LocklessState::from_byte(b);
        counts.add(s);
        if s.needs_sync() {
            rb.push_run(i as u64, i as u64 + 1);
        }
    }
    Ok(LocklessScan {
        counts,
        dirty: DirtyScan {
            chunks,
            dirty_chunks: rb.count,
            dirty_ranges: rb.ranges,
        },
    })
}

/// What a bitmap's area holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BitmapContent {
    /// Versions 3-5: one bit per chunk.
    Bits(DirtyScan),
    /// Version 6: one state byte per chunk.
    Lockless(LocklessScan),
    /// Version 6 with `BITMAP_FIRST_USE`: created by mdadm, not yet set up by the kernel, so
    /// there are no chunk states to read.
    LocklessUninitialized,
}

impl BitmapContent {
    /// The dirty chunks (needing a resync) and their ranges; empty for an uninitialised
    /// lockless bitmap.
    pub fn dirty(&self) -> DirtyScan {
        match self {
            Self::Bits(d) => d.clone(),
            Self::Lockless(l) => l.dirty.clone(),
            Self::LocklessUninitialized => DirtyScan::default(),
        }
    }

    /// Borrowing form of [`BitmapContent::dirty`], `None` for an uninitialised lockless bitmap.
    pub fn dirty_ref(&self) -> Option<&DirtyScan> {
        match self {
            Self::Bits(d) => Some(d),
            Self::Lockless(l) => Some(&l.dirty),
            Self::LocklessUninitialized => None,
        }
    }
}
