//! Finding the md superblock and the bitmap on a member, the way mdadm (`guess_super`,
//! `locate_bitmap0/1`, `bitmap_fd_read`) and the kernel (`super_90_load`, `super_1_load`,
//! `md_bitmap_read_sb`) do, over any [`ReadAt`] source.
use super::bitmap::{
    BitmapContent, BitmapKind, BitmapSuper, DirtyScan, Geometry, scan_bits, scan_lockless,
};
use super::superblock::{
    ByteOrder, MD_FEATURE_JOURNAL, MD_FEATURE_MULTIPLE_PPLS, MD_FEATURE_PPL, MD_SB_BYTES,
    MIN_SECTORS_1X, MdSuperblock, MetadataVersion, parse_v1, parse_v090, v090_offset_bytes,
};
use super::{OndiskError, ReadAt, Result, SECTOR_BYTES, read_range};

/// Most cluster node slots this tool reads. md-cluster arrays have a handful of nodes; a larger
/// count comes from a corrupt superblock.
pub const MAX_CLUSTER_NODES: u32 = 256;

/// A member's md superblock, bitmap superblock and decoded bitmap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberBitmap {
    /// Size of the member (device or image) in bytes.
    pub device_size_bytes: u64,
    /// The md superblock chosen (as mdadm's `guess_super` would choose).
    pub superblock: MdSuperblock,
    /// Where the bitmap superblock starts on the member, in bytes.
    pub bitmap_offset_bytes: u64,
    /// The bitmap superblock (for a clustered bitmap: node slot 0's).
    pub bitmap: BitmapSuper,
    /// Chunk count and area position; `None` for an uninitialised lockless bitmap.
    pub geometry: Option<Geometry>,
    /// The decoded bits or states (for a clustered bitmap: node slot 0's).
    pub content: BitmapContent,
    /// For a bitmap with `nodes > 0`: every node's slot, as `mdadm -X` lists them.
    pub cluster_slots: Vec<ClusterSlot>,
    /// Things the kernel would object to, or caveats of the decoding, that did not stop it.
    pub warnings: Vec<String>,
}

impl MemberBitmap {
    /// Dirty chunks and ranges of the bitmap (node slot 0 for a clustered bitmap).
    pub fn dirty(&self) -> DirtyScan {
        self.content.dirty()
    }
}

/// One node's slot of a clustered bitmap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSlot {
    /// Node slot number.
    pub slot: u32,
    /// Where the slot's bitmap superblock is, in bytes.
    pub offset_bytes: u64,
    /// The slot's bitmap, or why it could not be read (`mdadm -X` prints
    /// "Unable to read bitmap on node").
    pub result: std::result::Result<SlotBitmap, String>,
}

/// A readable cluster slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotBitmap {
    /// The slot's bitmap superblock (decoded even if its magic is wrong, as mdadm does).
    pub bitmap: BitmapSuper,
    /// The slot's dirty bits.
    pub scan: DirtyScan,
}

/// Finds the md superblock of a member as mdadm's `guess_super` does: 0.90 first, then the best
/// of 1.0, 1.1 and 1.2 (latest `ctime`, earlier minor on ties); if both a 0.90 and a 1.x
/// superblock are present the 1.x one wins only with a strictly later creation time.
///
/// Unlike mdadm, a byte-swapped (big-endian) 0.90 superblock is recognised too.
pub fn find_superblock<R: ReadAt + ?Sized>(src: &R) -> Result<MdSuperblock> {
    let size = src.size_bytes();
    let sectors = size / SECTOR_BYTES;
    if sectors < MIN_SECTORS_1X {
        return Err(OndiskError::TooSmall { size });
    }
    let v090 = match v090_offset_bytes(size) {
        Some(off) => {
            let buf = read_range(src, off, MD_SB_BYTES as u64, "md 0.90 superblock")?;
            match parse_v090(&buf, off) {
                Ok(sb) => Some(sb),
                Err(OndiskError::NoSuperblockHere(_)) => None,
                Err(e) => return Err(e),
            }
        }
        None => None,
    };
    let mut v1: Option<MdSuperblock> = None;
    for version in [
        MetadataVersion::V1_0,
        MetadataVersion::V1_1,
        MetadataVersion::V1_2,
    ] {
        let Some(off) = version.v1_offset_sectors(sectors) else {
            continue;
        };
        let buf = read_range(
            src,
            off * SECTOR_BYTES,
            MD_SB_BYTES as u64,
            "md 1.x superblock",
        )?;
        match parse_v1(&buf, off, version) {
            Ok(sb) => {
                if v1.as_ref().is_none_or(|b| sb.ctime_raw > b.ctime_raw) {
                    v1 = Some(sb);
                }
            }
            Err(OndiskError::NoSuperblockHere(_)) => {}
            Err(e) => return Err(e),
        }
    }
    match (v090, v1) {
        // guess_super_type compares `unsigned int` creation times.
        (Some(a), Some(b)) => Ok(if (b.ctime_raw as u32) > (a.ctime_raw as u32) {
            b
        } else {
            a
        }),
        (Some(a), None) => Ok(a),
        (None, Some(b)) => Ok(b),
        (None, None) => Err(OndiskError::NotMember),
    }
}

/// Where the internal bitmap of a member starts, in bytes: for 1.x
/// `(super_offset + (s32)bitmap_offset) * 512` when `MD_FEATURE_BITMAP_OFFSET` is set, for 0.90
/// 4 KiB after the superblock when `MD_SB_BITMAP_PRESENT` is set.
pub fn bitmap_offset_bytes(sb: &MdSuperblock) -> Result<u64> {
    let Some(rel) = sb.bitmap_offset_sectors else {
        let detail = if sb.feature_map & (MD_FEATURE_PPL | MD_FEATURE_MULTIPLE_PPLS) != 0 {
            ": it keeps a partial parity log (PPL) instead"
        } else if sb.feature_map & MD_FEATURE_JOURNAL != 0 {
            ": it has a write journal instead"
        } else {
            ""
        };
        return Err(OndiskError::NoBitmap {
            metadata: sb.version_string(),
            detail: detail.into(),
        });
    };
    let abs = i128::from(sb.offset_bytes / SECTOR_BYTES) + i128::from(rel);
    if abs < 0 {
        return Err(OndiskError::Geometry(format!(
            "bitmap offset {rel} sectors from the superblock at sector {} points before the device start",
            sb.offset_bytes / SECTOR_BYTES
        )));
    }
    u64::try_from(abs)
        .ok()
        .and_then(|s| s.checked_mul(SECTOR_BYTES))
        .ok_or_else(|| {
            OndiskError::Geometry(format!("bitmap offset {rel} sectors is out of range"))
        })
}

/// Reads and decodes everything about a member's bitmap: superblock, bitmap superblock,
/// geometry, the bits or lockless states, and cluster slots.
///
/// Errors are the cases where `mdadm -X` prints nothing useful or the kernel would refuse the
/// bitmap outright: no md superblock, no bitmap, wrong bitmap magic, unknown version, UUID
/// mismatch, impossible geometry, or an area running past the end of the member.
pub fn examine_member<R: ReadAt + ?Sized>(src: &R) -> Result<MemberBitmap> {
    let sb = find_superblock(src)?;
    let mut warnings = Vec::new();
    if !sb.checksum_valid {
        warnings.push(format!(
            "md superblock checksum 0x{:08x} does not match the computed 0x{:08x}; the kernel would refuse this member",
            sb.checksum_stored, sb.checksum_computed
        ));
    }
    let off = bitmap_offset_bytes(&sb)?;
    let head = read_range(src, off, 256, "bitmap superblock")?;
    let bsb = BitmapSuper::parse(&head, off)?;
    if bsb.uuid != sb.array_uuid {
        return Err(OndiskError::UuidMismatch {
            bitmap: sb.uuid_string_for(&bsb.uuid),
            array: sb.array_uuid_string(),
        });
    }
    for c in bsb.kernel_complaints() {
        warnings.push(format!("the kernel would refuse this bitmap: {c}"));
    }
    let kind = bsb
        .kind()
        .ok_or(OndiskError::UnknownBitmapVersion(bsb.version))?;
    if kind == BitmapKind::HostEndian {
        if sb.byte_order == ByteOrder::Big {
            return Err(OndiskError::Undecodable(
                "version 3 (host-endian) bitmap written by a big-endian host: its bit order depends on the writer's word size".into(),
            ));
        }
        if sb.version.is_v1() {
            warnings.push(
                "version 3 (host-endian) bitmap decoded as little-endian: the dirty count is exact, but positions are wrong if a big-endian host wrote it".into(),
            );
        }
    }
    let (geometry, content) = if bsb.is_lockless_first_use() {
        warnings.push(
            "lockless bitmap not yet initialised by the kernel (BITMAP_FIRST_USE): no chunk states to read".into(),
        );
        (None, BitmapContent::LocklessUninitialized)
    } else {
        let geo = bsb.geometry()?;
        let area = read_range(
            src,
            off.saturating_add(geo.area_offset),
            geo.area_bytes,
            if bsb.is_lockless() {
                "lockless bitmap state area"
            } else {
                "bitmap bit area"
            },
        )?;
        let content = if bsb.is_lockless() {
            BitmapContent::Lockless(scan_lockless(&area, geo.chunks)?)
        } else {
            BitmapContent::Bits(scan_bits(&area, geo.chunks)?)
        };
        (Some(geo), content)
    };
    let cluster_slots = if bsb.nodes > 0 {
        let geo = geometry.ok_or_else(|| {
            OndiskError::Geometry("a clustered bitmap cannot be a lockless one".into())
        })?;
        if bsb.nodes > MAX_CLUSTER_NODES {
            return Err(OndiskError::Geometry(format!(
                "{} cluster nodes is implausible (at most {MAX_CLUSTER_NODES} are read)",
                bsb.nodes
            )));
        }
        let stride = BitmapSuper::cluster_slot_bytes(&geo);
        (0..bsb.nodes)
            .map(|slot| {
                // mdadm's locate_bitmap0 ignores the node number; only 1.x has slots.
                let offset_bytes = if sb.version.is_v1() {
                    off.saturating_add(u64::from(slot).saturating_mul(stride))
                } else {
                    off
                };
                let result = read_slot(src, offset_bytes);
                if let Ok(s) = &result
                    && s.bitmap.magic != super::bitmap::BITMAP_MAGIC
                {
                    warnings.push(format!(
                        "node slot {slot}: invalid bitmap magic 0x{:x}, the bitmap appears to be corrupted",
                        s.bitmap.magic
                    ));
                }
                ClusterSlot {
                    slot,
                    offset_bytes,
                    result,
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(MemberBitmap {
        device_size_bytes: src.size_bytes(),
        superblock: sb,
        bitmap_offset_bytes: off,
        bitmap: bsb,
        geometry,
        content,
        cluster_slots,
        warnings,
    })
}

/// Reads one cluster node's slot the way mdadm's `bitmap_fd_read` does (magic not required).
fn read_slot<R: ReadAt + ?Sized>(src: &R, offset: u64) -> std::result::Result<SlotBitmap, String> {
    let head = read_range(src, offset, 256, "bitmap superblock").map_err(|e| e.to_string())?;
    let bitmap = BitmapSuper::from_bytes(&head).map_err(|e| e.to_string())?;
    // mdadm counts nothing when sync_size or chunksize is zero.
    if bitmap.sync_size_sectors == 0 || bitmap.chunksize_raw == 0 {
        return Ok(SlotBitmap {
            bitmap,
            scan: DirtyScan::default(),
        });
    }
    let geo = bitmap.geometry().map_err(|e| e.to_string())?;
    let area = read_range(
        src,
        offset.saturating_add(geo.area_offset),
        geo.area_bytes,
        "bitmap bit area",
    )
    .map_err(|e| e.to_string())?;
    let scan = scan_bits(&area, geo.chunks).map_err(|e| e.to_string())?;
    Ok(SlotBitmap { bitmap, scan })
}
