//! Bitmap geometry: chunks, counter pages and file pages, as `md_bitmap_resize()` and
//! `md_bitmap_storage_alloc()` size them.

use std::ops::Range;

/// Bytes per sector; every `offset`/`sectors`/`sync_size` in the engine counts 512-byte sectors.
pub const SECTOR_SIZE: u64 = 512;

/// `sizeof(bitmap_super_t)`: the on-disk superblock in front of the bits.
pub const BITMAP_SB_BYTES: u64 = 256;

/// `PAGE_SIZE` of x86_64 and most arm64 kernels, the default for [`BitmapGeometry::new`].
pub const KERNEL_PAGE_SIZE: u64 = 4096;

/// The smallest chunk the kernel accepts (`bitmap chunksize too small` below it).
pub const MIN_CHUNK_SIZE: u64 = 512;

/// The largest chunk the kernel accepts: `chunksize_store()` refuses `>= 1 << 32` (the
/// superblock field is 32 bits), so 2^31 is the largest power of two.
pub const MAX_CHUNK_SIZE: u64 = 1 << 31;

/// Why a geometry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BitmapGeometryError {
    /// Not a power of two in `MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE`.
    #[error("bitmap chunk size {0} is not a power of two between 512 and 2^31 bytes")]
    ChunkSize(u64),
    /// Not a power of two in 512..=1 MiB.
    #[error("page size {0} is not a power of two between 512 and 1 MiB")]
    PageSize(u64),
    /// More counters than this machine can index.
    #[error("bitmap of {0} chunks is too large to model")]
    TooLarge(u64),
}

/// The shape of one array's classic bitmap.
///
/// Units: `chunk_size` and `page_size` in bytes, `sync_size` in 512-byte sectors
/// (`mddev->resync_max_sectors`, the superblock's `sync_size`).
///
/// Derived exactly as the kernel does: `chunkshift = log2(chunk_size) - 9`,
/// `chunks = DIV_ROUND_UP(sync_size, 1 << chunkshift)`,
/// `bytes = DIV_ROUND_UP(chunks, 8) + 256`, `file_pages = DIV_ROUND_UP(bytes, PAGE_SIZE)`,
/// `counter pages = DIV_ROUND_UP(chunks, PAGE_SIZE / 2)`.
///
/// The page size is the kernel's `PAGE_SIZE` (4096 on x86_64; 16 KiB / 64 KiB arm64 and ppc64
/// kernels exist). Sizes below 4096 do not exist in real kernels; they are accepted so tests can
/// exercise many pages with few chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BitmapGeometry {
    chunk_size: u64,
    chunkshift: u32,
    sync_size: u64,
    chunks: u64,
    page_shift: u32,
}

impl BitmapGeometry {
    /// Geometry for a bitmap with `chunk_size` bytes per bit covering `sync_size` sectors, with
    /// 4 KiB kernel pages.
    pub fn new(chunk_size: u64, sync_size: u64) -> Result<Self, BitmapGeometryError> {
        Self::with_page_size(chunk_size, sync_size, KERNEL_PAGE_SIZE)
    }

    /// Like [`new`](Self::new) with another kernel `PAGE_SIZE` (bytes).
    pub fn with_page_size(
        chunk_size: u64,
        sync_size: u64,
        page_size: u64,
    ) -> Result<Self, BitmapGeometryError> {
        if !chunk_size.is_power_of_two() || !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size)
        {
            return Err(BitmapGeometryError::ChunkSize(chunk_size));
        }
        if !page_size.is_power_of_two() || !(512..=1 << 20).contains(&page_size) {
            return Err(BitmapGeometryError::PageSize(page_size));
        }
        let chunkshift = chunk_size.trailing_zeros() - 9;
        let chunks = sync_size.div_ceil(1u64 << chunkshift);
        let geo = BitmapGeometry {
            chunk_size,
            chunkshift,
            sync_size,
            chunks,
            page_shift: page_size.trailing_zeros(),
        };
        // Counters (2 bytes each) and file bits must be addressable with usize.
        let counters = geo.counter_pages().checked_mul(geo.counters_per_page());
        let file_bits = geo.file_pages().checked_mul(geo.bits_per_file_page());
        match (counters, file_bits) {
            (Some(c), Some(b)) if usize::try_from(c).is_ok() && usize::try_from(b).is_ok() => {
                Ok(geo)
            }
            _ => Err(BitmapGeometryError::TooLarge(chunks)),
        }
    }

    /// Geometry for `chunks` chunks of `chunk_size` bytes (sync_size = chunks × chunk sectors).
    pub fn from_chunks(chunk_size: u64, chunks: u64) -> Result<Self, BitmapGeometryError> {
        if !chunk_size.is_power_of_two() || chunk_size < MIN_CHUNK_SIZE {
            return Err(BitmapGeometryError::ChunkSize(chunk_size));
        }
        let sync = chunks
            .checked_mul(chunk_size / SECTOR_SIZE)
            .ok_or(BitmapGeometryError::TooLarge(chunks))?;
        Self::new(chunk_size, sync)
    }

    /// Bitmap chunk size in bytes (`bitmap_info.chunksize`, sb `chunksize`).
    #[inline]
    pub fn chunk_size(&self) -> u64 {
        self.chunk_size
    }

    /// Bitmap chunk size in sectors (`1 << chunkshift`).
    #[inline]
    pub fn chunk_sectors(&self) -> u64 {
        1 << self.chunkshift
    }

    /// `counts.chunkshift`: `chunk = sector >> chunkshift`.
    #[inline]
    pub fn chunkshift(&self) -> u32 {
        self.chunkshift
    }

    /// Sectors covered (`resync_max_sectors`, sb `sync_size`).
    #[inline]
    pub fn sync_size(&self) -> u64 {
        self.sync_size
    }

    /// Number of chunks (bits, counters in use): `counts.chunks`.
    #[inline]
    pub fn chunks(&self) -> u64 {
        self.chunks
    }

    /// Kernel `PAGE_SIZE` in bytes.
    #[inline]
    pub fn page_size(&self) -> u64 {
        1 << self.page_shift
    }

    /// log2 of the page size (`PAGE_SHIFT`).
    #[inline]
    pub fn page_shift(&self) -> u32 {
        self.page_shift
    }

    /// `PAGE_COUNTER_RATIO`: counters per in-memory counter page (2048 with 4 KiB pages).
    #[inline]
    pub fn counters_per_page(&self) -> u64 {
        1 << self.counter_page_shift()
    }

    /// `PAGE_COUNTER_SHIFT` (11 with 4 KiB pages): `counter page = chunk >> shift`.
    #[inline]
    pub fn counter_page_shift(&self) -> u32 {
        self.page_shift - 1
    }

    /// `counts.pages`: in-memory counter pages, `DIV_ROUND_UP(chunks, PAGE_COUNTER_RATIO)`.
    /// This is the `B` of `/proc/mdstat`'s `bitmap: A/B pages`.
    #[inline]
    pub fn counter_pages(&self) -> u64 {
        self.chunks.div_ceil(self.counters_per_page())
    }

    /// Bytes of the bit area: `DIV_ROUND_UP(chunks, 8)`.
    #[inline]
    pub fn bit_bytes(&self) -> u64 {
        self.chunks.div_ceil(8)
    }

    /// `storage.bytes`: bit area plus the 256-byte superblock.
    #[inline]
    pub fn bytes(&self) -> u64 {
        self.bit_bytes() + BITMAP_SB_BYTES
    }

    /// `storage.file_pages`: pages of the bitmap "file" (superblock + bits),
    /// `DIV_ROUND_UP(bytes, PAGE_SIZE)`. Each bitmap write writes one of these pages.
    #[inline]
    pub fn file_pages(&self) -> u64 {
        self.bytes().div_ceil(self.page_size())
    }

    /// Bits per file page (`PAGE_BITS`, 32768 with 4 KiB pages).
    #[inline]
    pub fn bits_per_file_page(&self) -> u64 {
        self.page_size() * 8
    }

    /// Bits taken by the superblock at the start of file page 0 (`sizeof(bitmap_super_t) << 3`).
    #[inline]
    pub fn sb_bits(&self) -> u64 {
        BITMAP_SB_BYTES * 8
    }

    /// `file_page_index()`: the file page holding `chunk`'s bit, `(chunk + 2048) >> 15` with
    /// 4 KiB pages.
    #[inline]
    pub fn file_page_of(&self, chunk: u64) -> u64 {
        (chunk + self.sb_bits()) >> (self.page_shift + 3)
    }

    /// `file_page_offset()`: the bit inside its file page, `(chunk + 2048) & 32767`.
    #[inline]
    pub fn bit_in_file_page(&self, chunk: u64) -> u64 {
        (chunk + self.sb_bits()) & (self.bits_per_file_page() - 1)
    }

    /// The chunks whose bits live in file page `page`, clamped to `0..chunks`.
    pub fn file_page_chunks(&self, page: u64) -> Range<u64> {
        let bits = self.bits_per_file_page();
        let lo = (page * bits)
            .saturating_sub(self.sb_bits())
            .min(self.chunks);
        let hi = ((page + 1) * bits)
            .saturating_sub(self.sb_bits())
            .min(self.chunks);
        lo..hi
    }

    /// The counter page holding `chunk`'s counter (`chunk >> PAGE_COUNTER_SHIFT`).
    #[inline]
    pub fn counter_page_of(&self, chunk: u64) -> u64 {
        chunk >> self.counter_page_shift()
    }

    /// The chunk of a sector (`sector >> chunkshift`).
    #[inline]
    pub fn chunk_of(&self, sector: u64) -> u64 {
        sector >> self.chunkshift
    }

    /// The sectors `[start, end)` of a chunk (the last one may extend past `sync_size`).
    #[inline]
    pub fn chunk_sector_range(&self, chunk: u64) -> Range<u64> {
        (chunk << self.chunkshift)..((chunk + 1) << self.chunkshift)
    }

    /// `/proc/mdstat`'s chunk field: `chunksize >> 10` with `KB`, or bytes with `B` below 1 KiB.
    pub fn mdstat_chunk(&self) -> String {
        let kb = self.chunk_size >> 10;
        if kb != 0 {
            format!("{kb}KB")
        } else {
            format!("{}B", self.chunk_size)
        }
    }
}
