//! On-disk md superblocks and write-intent bitmaps, read from a member device or an image of one.
//!
//! This is what `md-bitmap inspect` prints and what the rest of the tool uses to seed or check its
//! model against the disk. The layouts follow the kernel (`include/uapi/linux/raid/md_p.h`,
//! `drivers/md/md.c`, `drivers/md/md-bitmap.[ch]`, `drivers/md/md-llbitmap.c`) and mdadm
//! (`super0.c`, `super1.c`, `bitmap.c`).
//!
//! The module is split so that everything that interprets bytes is a pure function and can be
//! fuzzed:
//! * [`superblock`]: md superblocks, metadata 0.90 (either byte order) and 1.0/1.1/1.2.
//! * [`bitmap`]: `bitmap_super_t` (versions 3 to 6), bitmap geometry and the bit/state areas.
//! * [`member`]: finds the superblock and the bitmap on a member exactly as mdadm and the kernel
//!   do, working on any [`ReadAt`] source (a byte slice in tests and fuzzing, a device here).
//! * [`reader`]: the thin I/O layer: opens block devices with `O_DIRECT` (md writes bitmap pages
//!   around the page cache, so buffered reads can be stale) and image files normally. It never
//!   writes.
//!
//! The entry point for the rest of the tool is [`read_member`] (open and examine a path) or
//! [`examine_member`] (examine any [`ReadAt`]).
use std::path::Path;

pub mod bitmap;
pub mod member;
pub mod reader;
pub mod superblock;

pub use bitmap::{
    BitmapContent, BitmapKind, BitmapSuper, DirtyScan, Geometry, LocklessCounts, LocklessScan,
    LocklessState,
};
pub use member::{
    ClusterSlot, MemberBitmap, SlotBitmap, bitmap_offset_bytes, examine_member, find_superblock,
};
pub use reader::{DeviceKind, MemberDevice};
pub use superblock::{ByteOrder, DeviceRole, MdSuperblock, MetadataVersion};

/// Bytes in a sector, the unit of md's offsets and sizes.
pub const SECTOR_BYTES: u64 = 512;

/// Why a member's superblock or bitmap could not be read. Every message is one line.
#[derive(Debug, thiserror::Error)]
pub enum OndiskError {
    /// The operating system refused an open, stat or read.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, e.g. "cannot open /dev/sdb1".
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The path is neither a block device nor a regular file.
    #[error("{0} is neither a block device nor a regular file")]
    NotDeviceOrFile(String),
    /// A structure extends past the end of the device or image.
    #[error(
        "{what} at byte {offset} needs {needed} bytes, but the device ends at byte {size} (truncated image?)"
    )]
    Truncated {
        /// What was to be read.
        what: String,
        /// Byte offset on the member.
        offset: u64,
        /// Bytes needed from `offset`.
        needed: u64,
        /// Size of the device or image in bytes.
        size: u64,
    },
    /// A buffer handed to a parser is shorter than the structure it must hold.
    #[error("{what} needs {needed} bytes, got {got}")]
    ShortBuffer {
        /// The structure being parsed.
        what: &'static str,
        /// Bytes the structure needs.
        needed: usize,
        /// Bytes given.
        got: usize,
    },
    /// The device is too small to carry any md superblock.
    #[error("not an md member: {size} bytes is too small to hold an md superblock")]
    TooSmall {
        /// Size of the device or image in bytes.
        size: u64,
    },
    /// No md superblock of any supported metadata version was found.
    #[error("not an md member: no md superblock (metadata 0.90, 1.0, 1.1 or 1.2) found")]
    NotMember,
    /// There is no md superblock of this kind at the place looked at (used while probing).
    #[error("no {0} superblock here")]
    NoSuperblockHere(&'static str),
    /// An md superblock was found but is not usable.
    #[error("bad md superblock (metadata {metadata}): {reason}")]
    BadSuperblock {
        /// Metadata version, e.g. "1.2".
        metadata: String,
        /// What is wrong.
        reason: String,
    },
    /// The member's superblock says it has no internal bitmap.
    #[error("md member (metadata {metadata}) has no internal bitmap{detail}")]
    NoBitmap {
        /// Metadata version, e.g. "1.2".
        metadata: String,
        /// Extra detail, starting with a separator (e.g. ": it uses a PPL instead"), or empty.
        detail: String,
    },
    /// The bytes where the bitmap superblock should be do not start with `BITMAP_MAGIC`.
    #[error("no bitmap superblock at byte {offset}: magic is 0x{magic:08x}, expected 0x6d746962")]
    BadBitmapMagic {
        /// Byte offset on the member.
        offset: u64,
        /// The magic found.
        magic: u32,
    },
    /// The bitmap superblock has a version this tool does not know.
    #[error("unknown bitmap version {0} (known: 3 host-endian, 4, 5 clustered, 6 lockless)")]
    UnknownBitmapVersion(u32),
    /// The bitmap belongs to another array.
    #[error("bitmap UUID {bitmap} does not match the array UUID {array}")]
    UuidMismatch {
        /// UUID in the bitmap superblock.
        bitmap: String,
        /// UUID in the md superblock.
        array: String,
    },
    /// The bitmap superblock describes a geometry the kernel would refuse or that cannot exist.
    #[error("impossible bitmap geometry: {0}")]
    Geometry(String),
    /// The bitmap cannot be decoded (e.g. a host-endian bitmap from a big-endian writer).
    #[error("cannot decode bitmap: {0}")]
    Undecodable(String),
}

/// Shorthand for results of this module.
pub type Result<T, E = OndiskError> = std::result::Result<T, E>;

/// Random-access, read-only bytes of a member: a device, an image file or a slice in memory.
pub trait ReadAt {
    /// Size in bytes.
    fn size_bytes(&self) -> u64;
    /// Fills `buf` from byte `offset`. Callers check the range against [`ReadAt::size_bytes`]
    /// first (see [`read_range`]); an implementation reports a short read as an error.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;
}

impl ReadAt for [u8] {
    fn size_bytes(&self) -> u64 {
        self.len() as u64
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let start = usize::try_from(offset).ok();
        let src = start
            .and_then(|s| s.checked_add(buf.len()).map(|e| (s, e)))
            .and_then(|(s, e)| self.get(s..e));
        match src {
            Some(src) => {
                buf.copy_from_slice(src);
                Ok(())
            }
            None => Err(OndiskError::Truncated {
                what: "read".into(),
                offset,
                needed: buf.len() as u64,
                size: self.len() as u64,
            }),
        }
    }
}

impl ReadAt for Vec<u8> {
    fn size_bytes(&self) -> u64 {
        self.as_slice().size_bytes()
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.as_slice().read_exact_at(offset, buf)
    }
}

/// Reads `len` bytes at `offset` after checking that they lie inside the member, so that a
/// corrupt header can never make us allocate more than the member holds. `what` names the
/// structure for the error message.
pub fn read_range<R: ReadAt + ?Sized>(
    src: &R,
    offset: u64,
    len: u64,
    what: &str,
) -> Result<Vec<u8>> {
    let size = src.size_bytes();
    let fits = offset.checked_add(len).is_some_and(|end| end <= size);
    if !fits {
        return Err(OndiskError::Truncated {
            what: what.to_string(),
            offset,
            needed: len,
            size,
        });
    }
    let len = usize::try_from(len).map_err(|_| {
        OndiskError::Geometry(format!("{what} of {len} bytes does not fit in memory"))
    })?;
    let mut buf = vec![0u8; len];
    src.read_exact_at(offset, &mut buf)?;
    Ok(buf)
}

/// Opens `path` (a member block device, read with `O_DIRECT`, or an image file) and examines
/// its md superblock and bitmap. This is the one call the rest of the tool needs.
pub fn read_member(path: &Path) -> Result<(MemberDevice, MemberBitmap)> {
    let dev = MemberDevice::open(path)?;
    let m = examine_member(&dev)?;
    Ok((dev, m))
}

/// Little-endian `u16` at `off` (callers guarantee the bounds).
pub(crate) fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

/// Little-endian `u32` at `off` (callers guarantee the bounds).
pub(crate) fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Little-endian `u64` at `off` (callers guarantee the bounds).
pub(crate) fn le64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

/// Formats 16 UUID bytes as four groups of eight hex digits, bytes in order (mdadm's form for
/// metadata 1.x, e.g. `10111213:14151617:18191a1b:1c1d1e1f`).
pub fn uuid_string(u: &[u8; 16]) -> String {
    let mut s = String::with_capacity(35);
    for (i, b) in u.iter().enumerate() {
        if i > 0 && i.is_multiple_of(4) {
            s.push(':');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Formats 16 UUID bytes as four 32-bit words read in `order`, each as eight hex digits: mdadm's
/// form for metadata 0.90, whose UUID is four host-endian words.
pub fn uuid_words_string(u: &[u8; 16], order: ByteOrder) -> String {
    let words: Vec<String> = u
        .chunks_exact(4)
        .map(|c| {
            let a = [c[0], c[1], c[2], c[3]];
            let w = match order {
                ByteOrder::Little => u32::from_le_bytes(a),
                ByteOrder::Big => u32::from_be_bytes(a),
            };
            format!("{w:08x}")
        })
        .collect();
    words.join(":")
}
