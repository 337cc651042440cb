//! Read-only access to a member: block devices through `O_DIRECT`, image files normally.
//!
//! md writes bitmap pages with bios that bypass the member's page cache, so a buffered read of a
//! live member can return a page cached long ago (seen on 6.1: 41 bits the daemon had cleared
//! still read as set). Block devices are therefore read with `O_DIRECT` into 4 KiB-aligned
//! buffers, at offsets and lengths rounded out to the device's logical block size, as
//! `mdadm -X` does. Regular files (images) are read through the page cache: nothing bypasses it.
//! Nothing here writes.
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{OndiskError, ReadAt, Result};

/// Size of the bounce buffer for direct reads.
const DIRECT_CHUNK: usize = 64 * 1024;

/// A block of memory aligned for `O_DIRECT` (4 KiB covers every common logical block size and
/// DMA alignment).
#[repr(C, align(4096))]
struct AlignedChunk([u8; DIRECT_CHUNK]);

/// What kind of file a member path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// A block device, read with `O_DIRECT`.
    BlockDevice,
    /// A regular file (an image of a member), read normally.
    RegularFile,
}

impl DeviceKind {
    /// "block_device" or "regular_file".
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BlockDevice => "block_device",
            Self::RegularFile => "regular_file",
        }
    }
}

/// An open member device or image.
#[derive(Debug)]
pub struct MemberDevice {
    path: PathBuf,
    file: File,
    kind: DeviceKind,
    size: u64,
    /// Alignment of offsets and lengths for direct reads (the logical block size, at least 4096).
    align: u64,
}

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> OndiskError {
    move |source| OndiskError::Io { what, source }
}

/// The logical block size of a block device from sysfs, if it can be read.
fn logical_block_size(rdev: u64) -> Option<u64> {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    let p = format!("/sys/dev/block/{major}:{minor}/queue/logical_block_size");
    let s = std::fs::read_to_string(p).ok()?;
    s.trim().parse().ok().filter(|v: &u64| v.is_power_of_two())
}

impl MemberDevice {
    /// Opens `path` read-only: a block device with `O_DIRECT`, a regular file normally.
    pub fn open(path: &Path) -> Result<Self> {
        let shown = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(io_err(format!("cannot open {shown}")))?;
        let ft = meta.file_type();
        if ft.is_block_device() {
            let mut file = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(path)
                .map_err(io_err(format!("cannot open {shown} with O_DIRECT")))?;
            let size = file
                .seek(SeekFrom::End(0))
                .map_err(io_err(format!("cannot get the size of {shown}")))?;
            let align = logical_block_size(meta.rdev()).unwrap_or(512).max(4096);
            Ok(Self {
                path: path.to_path_buf(),
                file,
                kind: DeviceKind::BlockDevice,
                size,
                align,
            })
        } else if ft.is_file() {
            let file = File::open(path).map_err(io_err(format!("cannot open {shown}")))?;
            Ok(Self {
                path: path.to_path_buf(),
                file,
                kind: DeviceKind::RegularFile,
                size: meta.len(),
                align: 1,
            })
        } else {
            Err(OndiskError::NotDeviceOrFile(shown))
        }
    }

    /// The path it was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Block device or regular file.
    pub fn kind(&self) -> DeviceKind {
        self.kind
    }

    fn read_direct(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let a = self.align;
        let needed = buf.len() as u64;
        let truncated = || OndiskError::Truncated {
            what: format!("read of {}", self.path.display()),
            offset,
            needed,
            size: self.size,
        };
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.size)
            .ok_or_else(truncated)?;
        let first = offset / a * a;
        let last = end.div_ceil(a).checked_mul(a).ok_or_else(truncated)?;
        let mut chunk = Box::new(AlignedChunk([0u8; DIRECT_CHUNK]));
        let mut pos = first;
        while pos < last {
            let want = ((last - pos) as usize).min(DIRECT_CHUNK);
            let got = self
                .file
                .read_at(&mut chunk.0[..want], pos)
                .map_err(io_err(format!(
                    "cannot read {} at byte {pos}",
                    self.path.display()
                )))?;
            if got == 0 {
                break;
            }
            // Copy the overlap of [pos, pos+got) with [offset, end).
            let lo = pos.max(offset);
            let hi = (pos + got as u64).min(end);
            if lo < hi {
                let src = &chunk.0[(lo - pos) as usize..(hi - pos) as usize];
                buf[(lo - offset) as usize..(hi - offset) as usize].copy_from_slice(src);
            }
            pos += got as u64;
            if got < want {
                break;
            }
        }
        if pos < end {
            return Err(truncated());
        }
        Ok(())
    }
}

impl ReadAt for MemberDevice {
    fn size_bytes(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        match self.kind {
            DeviceKind::BlockDevice => self.read_direct(offset, buf),
            DeviceKind::RegularFile => self.file.read_exact_at(buf, offset).map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    OndiskError::Truncated {
                        what: format!("read of {}", self.path.display()),
                        offset,
                        needed: buf.len() as u64,
                        size: self.size,
                    }
                } else {
                    OndiskError::Io {
                        what: format!("cannot read {} at byte {offset}", self.path.display()),
                        source: e,
                    }
                }
            }),
        }
    }
}
