//! md superblocks: metadata 0.90 (`mdp_super_t`, host-endian, so either byte order) and 1.x
//! (`struct mdp_superblock_1`, little-endian), as `include/uapi/linux/raid/md_p.h` lays them out.
//!
//! Where they live on a member (kernel `calc_dev_sboffset` / `super_1_load`, mdadm `load_super0` /
//! `load_super1`):
//! * 0.90: `MD_NEW_SIZE_SECTORS(size) = (size & ~127) - 128` sectors, i.e. the last 64 KiB-aligned
//!   64 KiB of the device; the superblock is 4 KiB and an internal bitmap follows 8 sectors after it.
//! * 1.0: `(size - 16) & ~7` sectors (8 to 12 KiB from the end, 4 KiB aligned).
//! * 1.1: sector 0.  1.2: sector 8 (4 KiB from the start).
//!
//! For 1.x the bitmap is at `super_offset + (s32)bitmap_offset` sectors, only when
//! `feature_map & MD_FEATURE_BITMAP_OFFSET`.
use super::{OndiskError, Result, SECTOR_BYTES, le16, le32, le64, uuid_string, uuid_words_string};

/// `MD_SB_MAGIC`, the first word of both superblock formats.
pub const MD_SB_MAGIC: u32 = 0xa92b_4efc;
/// `MD_SB_BYTES`: size of a 0.90 superblock, and what is read for a 1.x one.
pub const MD_SB_BYTES: usize = 4096;
/// `MD_RESERVED_SECTORS`: the 64 KiB reserved at the end of a 0.90 member.
pub const MD_RESERVED_SECTORS: u64 = 128;
/// `MD_SB_BITMAP_PRESENT`: bit in the 0.90 `state` word saying an internal bitmap follows.
pub const MD_SB_BITMAP_PRESENT: u32 = 8;
/// `MD_FEATURE_BITMAP_OFFSET`: 1.x feature bit saying `bitmap_offset` is meaningful.
pub const MD_FEATURE_BITMAP_OFFSET: u32 = 1;
/// `MD_FEATURE_JOURNAL`: the array has a raid5 write journal (excludes a bitmap).
pub const MD_FEATURE_JOURNAL: u32 = 512;
/// `MD_FEATURE_PPL`: partial parity log (excludes a bitmap).
pub const MD_FEATURE_PPL: u32 = 1024;
/// `MD_FEATURE_MULTIPLE_PPLS`.
pub const MD_FEATURE_MULTIPLE_PPLS: u32 = 2048;
/// The kernel's limit on 1.x `max_dev`: `(4096 - 256) / 2` role slots fit in the 4 KiB read.
pub const MAX_DEV_1X: u32 = (4096 - 256) / 2;
/// Smallest member (in sectors) mdadm looks at for 1.x metadata.
pub const MIN_SECTORS_1X: u64 = 24;

/// Metadata format of a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetadataVersion {
    /// 0.90 (also 0.91 while reshaping): superblock near the end, host byte order.
    V0_90,
    /// 1.0: superblock near the end.
    V1_0,
    /// 1.1: superblock at the start.
    V1_1,
    /// 1.2: superblock 4 KiB from the start (mdadm's default).
    V1_2,
}

impl MetadataVersion {
    /// The name mdadm and sysfs use: "0.90", "1.0", "1.1" or "1.2".
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V0_90 => "0.90",
            Self::V1_0 => "1.0",
            Self::V1_1 => "1.1",
            Self::V1_2 => "1.2",
        }
    }

    /// True for the 1.x family.
    pub fn is_v1(self) -> bool {
        !matches!(self, Self::V0_90)
    }

    /// Where a 1.x superblock of this minor version sits on a member of `device_sectors`
    /// sectors (kernel `super_1_load`), or `None` for 0.90 or a member under 24 sectors.
    pub fn v1_offset_sectors(self, device_sectors: u64) -> Option<u64> {
        if device_sectors < MIN_SECTORS_1X {
            return None;
        }
        match self {
            Self::V0_90 => None,
            Self::V1_0 => Some((device_sectors - 16) & !7),
            Self::V1_1 => Some(0),
            Self::V1_2 => Some(8),
        }
    }
}

/// Byte order of a superblock (0.90 superblocks are written in the writer's host order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteOrder {
    /// Little-endian (x86, arm64, ...; always the case for 1.x).
    Little,
    /// Big-endian (a 0.90 superblock written by e.g. s390 or old PowerPC).
    Big,
}

impl ByteOrder {
    /// "little" or "big".
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Little => "little",
            Self::Big => "big",
        }
    }
}

/// What this member is in its array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceRole {
    /// An active member in this slot (`raid_disk`).
    Active(u32),
    /// A spare (1.x role 0xffff; 0.90 neither faulty nor active+in sync).
    Spare,
    /// Marked faulty (1.x role 0xfffe; 0.90 `MD_DISK_FAULTY`).
    Faulty,
    /// The raid5 write journal (1.x role 0xfffd).
    Journal,
    /// A 1.x role value md does not define (or a `dev_number` outside the 4 KiB read).
    Unknown(u16),
}

impl DeviceRole {
    /// "active", "spare", "faulty", "journal" or "unknown".
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active(_) => "active",
            Self::Spare => "spare",
            Self::Faulty => "faulty",
            Self::Journal => "journal",
            Self::Unknown(_) => "unknown",
        }
    }

    /// The slot of an active member.
    pub fn slot(self) -> Option<u32> {
        match self {
            Self::Active(n) => Some(n),
            _ => None,
        }
    }
}

/// The facts of an md superblock that md-bitmap uses, normalised across metadata versions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MdSuperblock {
    /// Metadata format.
    pub version: MetadataVersion,
    /// 0.90 only: the minor version word (90, or 91 during a reshape).
    pub minor_version: u32,
    /// Byte order the superblock was written in (always little for 1.x).
    pub byte_order: ByteOrder,
    /// Where the superblock starts on the member, in bytes.
    pub offset_bytes: u64,
    /// The array UUID as the kernel holds it (`mddev->uuid`); the bitmap superblock's UUID must
    /// equal these bytes.
    pub array_uuid: [u8; 16],
    /// 1.x `set_name` (up to the first NUL), `None` for 0.90.
    pub array_name: Option<String>,
    /// Creation time, seconds since the epoch.
    pub ctime_secs: u64,
    /// The full 1.x `ctime` word (seconds in the low 40 bits, microseconds above), used by mdadm
    /// to pick among several 1.x superblocks; the 0.90 `ctime` otherwise.
    pub ctime_raw: u64,
    /// RAID level as stored (-4 multipath, -1 linear, 0, 1, 4, 5, 6, 10, ...).
    pub level: i32,
    /// Layout (raid5/6 algorithm, raid10 near/far/offset copies).
    pub layout: u32,
    /// Number of member slots in a complete array.
    pub raid_disks: u32,
    /// RAID chunk size in bytes (not the bitmap chunk).
    pub raid_chunk_size_bytes: u64,
    /// Size used on each member, in sectors (1.x `size`; 0.90 `size` KiB * 2).
    pub component_size_sectors: u64,
    /// Where data starts on the member, in sectors (0 for 0.90 and 1.0).
    pub data_offset_sectors: u64,
    /// 1.x `data_size`: sectors of the member usable for data.
    pub data_size_sectors: Option<u64>,
    /// Event count of the superblock.
    pub events: u64,
    /// 1.x `feature_map` (0 for 0.90).
    pub feature_map: u32,
    /// 0.90 `state` word (0 for 1.x).
    pub state: u32,
    /// Internal bitmap position relative to the superblock start, in sectors; `None` when the
    /// superblock says there is no internal bitmap.
    pub bitmap_offset_sectors: Option<i64>,
    /// Permanent device number (1.x `dev_number`; 0.90 `this_disk.number`).
    pub device_number: u32,
    /// This member's role.
    pub role: DeviceRole,
    /// 1.x `device_uuid`.
    pub device_uuid: Option<[u8; 16]>,
    /// Checksum stored in the superblock.
    pub checksum_stored: u32,
    /// Checksum computed as the kernel does (`calc_sb_1_csum` / `calc_sb_csum`).
    pub checksum_computed: u32,
    /// Whether the kernel would accept the checksum (0.90 compares folded 16-bit sums).
    pub checksum_valid: bool,
}

impl MdSuperblock {
    /// The array UUID as mdadm prints it: bytes in order for 1.x, four host-endian words for 0.90.
    pub fn array_uuid_string(&self) -> String {
        self.uuid_string_for(&self.array_uuid)
    }

    /// Formats any 16 UUID bytes of this array (e.g. the bitmap's) the way mdadm prints this
    /// metadata's UUIDs (`swapuuid`: 1.x bytes in order, 0.90 words in the superblock's order).
    pub fn uuid_string_for(&self, u: &[u8; 16]) -> String {
        if self.version.is_v1() {
            uuid_string(u)
        } else {
            uuid_words_string(u, self.byte_order)
        }
    }

    /// The kernel's/mdadm's name of the level ("raid1", "linear", ...), or `None` if unknown.
    pub fn level_name(&self) -> Option<&'static str> {
        level_name(self.level)
    }

    /// Metadata version as text, with 0.91 for a 0.90 superblock in reshape.
    pub fn version_string(&self) -> String {
        match self.version {
            MetadataVersion::V0_90 => format!("0.{}", self.minor_version),
            v => v.as_str().to_string(),
        }
    }
}

/// mdadm's `pers[]` names of RAID levels.
pub fn level_name(level: i32) -> Option<&'static str> {
    Some(match level {
        -5 => "faulty",
        -4 => "multipath",
        -1 => "linear",
        0 => "raid0",
        1 => "raid1",
        4 => "raid4",
        5 => "raid5",
        6 => "raid6",
        10 => "raid10",
        _ => return None,
    })
}

/// Where a 0.90 superblock sits on a member of `device_bytes` (`MD_NEW_SIZE_SECTORS`), in bytes,
/// or `None` if the member is under 64 KiB.
pub fn v090_offset_bytes(device_bytes: u64) -> Option<u64> {
    let sectors = device_bytes / SECTOR_BYTES;
    if sectors < MD_RESERVED_SECTORS {
        return None;
    }
    Some(((sectors & !(MD_RESERVED_SECTORS - 1)) - MD_RESERVED_SECTORS) * SECTOR_BYTES)
}

fn need(buf: &[u8], n: usize, what: &'static str) -> Result<()> {
    if buf.len() < n {
        return Err(OndiskError::ShortBuffer {
            what,
            needed: n,
            got: buf.len(),
        });
    }
    Ok(())
}

/// A 32-bit word reader for a 0.90 superblock in either byte order.
struct Words<'a> {
    b: &'a [u8],
    order: ByteOrder,
}

impl Words<'_> {
    fn w(&self, i: usize) -> u32 {
        let o = i * 4;
        let a = [self.b[o], self.b[o + 1], self.b[o + 2], self.b[o + 3]];
        match self.order {
            ByteOrder::Little => u32::from_le_bytes(a),
            ByteOrder::Big => u32::from_be_bytes(a),
        }
    }
    fn raw(&self, i: usize) -> [u8; 4] {
        let o = i * 4;
        [self.b[o], self.b[o + 1], self.b[o + 2], self.b[o + 3]]
    }
}

/// The 0.90 checksum (kernel `calc_sb_csum`, mdadm `calc_sb0_csum`): the sum of all 1024 words
/// with the checksum word taken as zero, folded once from 64 to 32 bits.
fn v090_checksum(w: &Words<'_>) -> u32 {
    let mut sum: u64 = 0;
    for i in 0..MD_SB_BYTES / 4 {
        if i != 32 + 6 {
            sum += u64::from(w.w(i));
        }
    }
    ((sum & 0xffff_ffff) + (sum >> 32)) as u32
}

/// The kernel's `md_csum_fold`: 0.90 checksums are compared folded to 16 bits.
fn csum_fold(c: u32) -> u32 {
    let c = (c & 0xffff) + (c >> 16);
    (c & 0xffff) + (c >> 16)
}

/// Parses a 0.90 superblock from the 4096 bytes at `offset_bytes` of a member.
///
/// Either byte order is accepted (the magic tells). Returns [`OndiskError::NoSuperblockHere`] if
/// the magic is absent or `major_version` is not 0, as mdadm's `load_super0` does; a bad checksum
/// is reported in [`MdSuperblock::checksum_valid`], not as an error, because `mdadm -X` does not
/// check it either.
pub fn parse_v090(buf: &[u8], offset_bytes: u64) -> Result<MdSuperblock> {
    need(buf, MD_SB_BYTES, "md 0.90 superblock")?;
    let order = match le32(buf, 0) {
        MD_SB_MAGIC => ByteOrder::Little,
        m if m.swap_bytes() == MD_SB_MAGIC => ByteOrder::Big,
        _ => return Err(OndiskError::NoSuperblockHere("0.90")),
    };
    let w = Words { b: buf, order };
    if w.w(1) != 0 {
        return Err(OndiskError::NoSuperblockHere("0.90"));
    }
    // Generic constant section: words 0..32; generic state: 32..64; personality: 64..128;
    // disks: 128 + 32*i; this_disk: 992.
    let mut uuid = [0u8; 16];
    for (i, word) in [5usize, 13, 14, 15].into_iter().enumerate() {
        uuid[i * 4..i * 4 + 4].copy_from_slice(&w.raw(word));
    }
    // events_lo/events_hi swap places with the writer's byte order (md_p.h).
    let (ev_hi, ev_lo) = match order {
        ByteOrder::Little => (w.w(32 + 8), w.w(32 + 7)),
        ByteOrder::Big => (w.w(32 + 7), w.w(32 + 8)),
    };
    let state = w.w(32 + 1);
    let this_state = w.w(992 + 4);
    let raid_disk = w.w(992 + 3);
    let role = if this_state & 1 != 0 {
        DeviceRole::Faulty
    } else if this_state & 0b110 == 0b110 {
        DeviceRole::Active(raid_disk)
    } else {
        DeviceRole::Spare
    };
    let stored = w.w(32 + 6);
    let computed = v090_checksum(&w);
    Ok(MdSuperblock {
        version: MetadataVersion::V0_90,
        minor_version: w.w(2),
        byte_order: order,
        offset_bytes,
        array_uuid: uuid,
        array_name: None,
        ctime_secs: u64::from(w.w(6)),
        ctime_raw: u64::from(w.w(6)),
        level: w.w(7) as i32,
        layout: w.w(64),
        raid_disks: w.w(10),
        raid_chunk_size_bytes: u64::from(w.w(65)),
        component_size_sectors: u64::from(w.w(8)) * 2,
        data_offset_sectors: 0,
        data_size_sectors: None,
        events: (u64::from(ev_hi) << 32) | u64::from(ev_lo),
        feature_map: 0,
        state,
        bitmap_offset_sectors: (state & (1 << MD_SB_BITMAP_PRESENT) != 0)
            .then_some((MD_SB_BYTES as u64 / SECTOR_BYTES) as i64),
        device_number: w.w(992),
        role,
        device_uuid: None,
        checksum_stored: stored,
        checksum_computed: computed,
        checksum_valid: stored == computed || csum_fold(stored) == csum_fold(computed),
    })
}

/// The 1.x checksum (kernel and mdadm `calc_sb_1_csum`) over `256 + 2 * max_dev` bytes with the
/// checksum field as zero. `None` if `max_dev` runs past the 4 KiB superblock.
pub fn v1_checksum(buf: &[u8]) -> Option<u32> {
    if buf.len() < 256 {
        return None;
    }
    let max_dev = le32(buf, 220);
    if max_dev > MAX_DEV_1X {
        return None;
    }
    let size = 256 + 2 * max_dev as usize;
    if buf.len() < size {
        return None;
    }
    let mut sum: u64 = 0;
    let mut off = 0;
    while off + 4 <= size {
        if off != 216 {
            sum += u64::from(le32(buf, off));
        }
        off += 4;
    }
    if size - off == 2 {
        sum += u64::from(le16(buf, off));
    }
    Some(((sum & 0xffff_ffff) + (sum >> 32)) as u32)
}

/// Parses a 1.x superblock read from `offset_sectors` of a member, where a superblock of
/// `version` belongs.
///
/// As mdadm's `load_super1`, this requires the magic, `major_version == 1` and
/// `super_offset == offset_sectors` (otherwise [`OndiskError::NoSuperblockHere`]). A bad checksum
/// or an out-of-range `max_dev` (both of which the kernel refuses) are reported in
/// [`MdSuperblock::checksum_valid`], because `mdadm -X` reads such members anyway.
pub fn parse_v1(buf: &[u8], offset_sectors: u64, version: MetadataVersion) -> Result<MdSuperblock> {
    need(buf, 256, "md 1.x superblock")?;
    if le32(buf, 0) != MD_SB_MAGIC || le32(buf, 4) != 1 || le64(buf, 144) != offset_sectors {
        return Err(OndiskError::NoSuperblockHere("1.x"));
    }
    // A location past 2^64 bytes cannot hold a superblock (only reachable with made-up offsets).
    let offset_bytes = offset_sectors
        .checked_mul(SECTOR_BYTES)
        .ok_or(OndiskError::NoSuperblockHere("1.x"))?;
    if !version.is_v1() {
        return Err(OndiskError::NoSuperblockHere("1.x"));
    }
    let feature_map = le32(buf, 8);
    let mut set_uuid = [0u8; 16];
    set_uuid.copy_from_slice(&buf[16..32]);
    let name_bytes = &buf[32..64];
    let name_len = name_bytes.iter().position(|&b| b == 0).unwrap_or(32);
    let name = String::from_utf8_lossy(&name_bytes[..name_len]).into_owned();
    let ctime = le64(buf, 64);
    let max_dev = le32(buf, 220);
    let dev_number = le32(buf, 160);
    let role = if dev_number < max_dev {
        let off = 256usize.saturating_add(2usize.saturating_mul(dev_number as usize));
        match buf.get(off..off.saturating_add(2)) {
            Some(r) => match u16::from_le_bytes([r[0], r[1]]) {
                0xffff => DeviceRole::Spare,
                0xfffe => DeviceRole::Faulty,
                0xfffd => DeviceRole::Journal,
                r if r < 0xff00 => DeviceRole::Active(u32::from(r)),
                r => DeviceRole::Unknown(r),
            },
            None => DeviceRole::Unknown(0),
        }
    } else {
        DeviceRole::Spare
    };
    let mut dev_uuid = [0u8; 16];
    dev_uuid.copy_from_slice(&buf[168..184]);
    let stored = le32(buf, 216);
    let computed = v1_checksum(buf);
    Ok(MdSuperblock {
        version,
        minor_version: 0,
        byte_order: ByteOrder::Little,
        offset_bytes,
        array_uuid: set_uuid,
        array_name: Some(name),
        ctime_secs: ctime & 0xff_ffff_ffff,
        ctime_raw: ctime,
        level: le32(buf, 72) as i32,
        layout: le32(buf, 76),
        raid_disks: le32(buf, 92),
        raid_chunk_size_bytes: u64::from(le32(buf, 88)) * SECTOR_BYTES,
        component_size_sectors: le64(buf, 80),
        data_offset_sectors: le64(buf, 128),
        data_size_sectors: Some(le64(buf, 136)),
        events: le64(buf, 200),
        feature_map,
        state: 0,
        bitmap_offset_sectors: (feature_map & MD_FEATURE_BITMAP_OFFSET != 0)
            .then_some(i64::from(le32(buf, 96) as i32)),
        device_number: dev_number,
        role,
        device_uuid: Some(dev_uuid),
        checksum_stored: stored,
        checksum_computed: computed.unwrap_or(0),
        checksum_valid: computed == Some(stored),
    })
}
