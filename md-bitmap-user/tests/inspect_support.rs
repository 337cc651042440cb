//! Builds synthetic md member images from the documented layouts (md_p.h, bitmap.h, mdadm's
//! super0.c/super1.c placement), independently of `md_bitmap::ondisk`, so that tests compare the
//! parser against a second reading of the format. Included by the other `inspect_*` tests with
//! `#[path]`; its own tests check the builder against hand-computed values.
#![allow(dead_code)]

/// Metadata format of a synthetic member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Meta {
    V090Le,
    V090Be,
    V10,
    V11,
    V12,
}

/// The bitmap to put on a member.
#[derive(Clone, Debug)]
pub struct BitmapSpec {
    pub magic: u32,
    pub version: u32,
    /// Overrides the array UUID in the bitmap superblock.
    pub uuid: Option<[u8; 16]>,
    pub events: u64,
    pub events_cleared: u64,
    pub sync_size: u64,
    pub state: u32,
    /// Bytes for versions 3-5, sectors for version 6.
    pub chunksize: u32,
    pub daemon_sleep: u32,
    pub write_behind: u32,
    pub sectors_reserved: u32,
    pub nodes: u32,
    pub cluster_name: String,
    /// Dirty chunk numbers (versions 3-5; every cluster slot gets `slot_dirty[i]` instead).
    pub dirty: Vec<u64>,
    /// Per-slot dirty chunks for clustered bitmaps (slot 0 uses `dirty`).
    pub slot_dirty: Vec<Vec<u64>>,
    /// Per-slot events for clustered bitmaps.
    pub slot_events: Vec<u64>,
    /// State bytes of a lockless bitmap.
    pub states: Vec<u8>,
    /// Bytes written after the last chunk's bits (to test that they are ignored).
    pub trailing_garbage: bool,
}

impl BitmapSpec {
    pub fn classic(chunksize: u32, sync_size: u64, dirty: Vec<u64>) -> Self {
        Self {
            magic: 0x6d74_6962,
            version: 4,
            uuid: None,
            events: 1234,
            events_cleared: 1200,
            sync_size,
            state: 0,
            chunksize,
            daemon_sleep: 5,
            write_behind: 0,
            sectors_reserved: 0,
            nodes: 0,
            cluster_name: String::new(),
            dirty,
            slot_dirty: Vec::new(),
            slot_events: Vec::new(),
            states: Vec::new(),
            trailing_garbage: false,
        }
    }

    pub fn lockless(chunksize_sectors: u32, sync_size: u64, states: Vec<u8>) -> Self {
        Self {
            version: 6,
            chunksize: chunksize_sectors,
            daemon_sleep: 30,
            states,
            ..Self::classic(0, sync_size, Vec::new())
        }
    }

    /// Number of chunks as mdadm's bitmap_bits computes it (classic) or the kernel (lockless).
    /// Saturates for impossible geometries (those are only written as far as the image goes).
    pub fn chunks(&self) -> u64 {
        if self.chunksize == 0 {
            return 0;
        }
        let c = if self.version == 6 {
            u128::from(self.sync_size).div_ceil(u128::from(self.chunksize))
        } else {
            (u128::from(self.sync_size) * 512).div_ceil(u128::from(self.chunksize))
        };
        u64::try_from(c).unwrap_or(u64::MAX)
    }

    /// mdadm `calc_bitmap_size(bms, 4096)`: bytes of one node's bitmap, 4 KiB rounded.
    pub fn slot_bytes(&self) -> u64 {
        (self.chunks().div_ceil(8).saturating_add(256))
            .div_ceil(4096)
            .saturating_mul(4096)
    }
}

/// A member to build.
#[derive(Clone, Debug)]
pub struct Spec {
    pub meta: Meta,
    pub device_sectors: u64,
    pub uuid: [u8; 16],
    pub name: String,
    pub ctime: u64,
    pub level: i32,
    pub layout: u32,
    pub raid_disks: u32,
    pub raid_chunk_sectors: u32,
    pub size_sectors: u64,
    pub events: u64,
    pub dev_number: u32,
    /// 1.x role of this device (0xffff spare ...); 0.90: raid_disk with active+sync state.
    pub role: u16,
    pub bitmap: Option<BitmapSpec>,
    /// 1.x: bitmap offset in sectors from the superblock (default: mdadm's choice).
    pub bitmap_offset: Option<i32>,
    /// Store a wrong superblock checksum.
    pub bad_checksum: bool,
    /// Extra 1.x feature bits.
    pub extra_features: u32,
}

impl Spec {
    pub fn new(meta: Meta, device_sectors: u64, bitmap: Option<BitmapSpec>) -> Self {
        Self {
            meta,
            device_sectors,
            uuid: [
                0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d,
                0x1e, 0x1f,
            ],
            name: "testhost:7".into(),
            ctime: 1_700_000_000,
            level: 1,
            layout: 0,
            raid_disks: 2,
            raid_chunk_sectors: 0,
            size_sectors: bitmap.as_ref().map_or(1000, |b| b.sync_size),
            events: 1234,
            dev_number: 1,
            role: 1,
            bitmap,
            bitmap_offset: None,
            bad_checksum: false,
            extra_features: 0,
        }
    }

    /// Superblock start in sectors.
    pub fn sb_sector(&self) -> u64 {
        match self.meta {
            Meta::V090Le | Meta::V090Be => (self.device_sectors & !127) - 128,
            Meta::V10 => (self.device_sectors - 16) & !7,
            Meta::V11 => 0,
            Meta::V12 => 8,
        }
    }

    /// Bitmap offset in sectors relative to the superblock.
    pub fn bitmap_rel(&self) -> i64 {
        match self.meta {
            Meta::V090Le | Meta::V090Be => 8,
            _ => {
                if let Some(o) = self.bitmap_offset {
                    return i64::from(o);
                }
                match self.meta {
                    Meta::V10 => {
                        // mdadm add_internal_bitmap1 for 1.0: offset = -room - bbl_size.
                        let b = self.bitmap.as_ref().expect("bitmap");
                        let room = b.slot_bytes() / 512;
                        -(room as i64) - 8
                    }
                    _ => 8,
                }
            }
        }
    }

    /// Absolute byte offset of the bitmap superblock.
    pub fn bitmap_byte(&self) -> u64 {
        ((self.sb_sector() as i64 + self.bitmap_rel()) * 512) as u64
    }
}

fn put32(img: &mut [u8], off: usize, v: u32, be: bool) {
    let b = if be { v.to_be_bytes() } else { v.to_le_bytes() };
    img[off..off + 4].copy_from_slice(&b);
}

fn put64le(img: &mut [u8], off: usize, v: u64) {
    img[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

fn put16le(img: &mut [u8], off: usize, v: u16) {
    img[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

/// md_p.h 0.90 superblock.
fn sb090(spec: &Spec, be: bool) -> Vec<u8> {
    let mut sb = vec![0u8; 4096];
    let w = |sb: &mut Vec<u8>, word: usize, v: u32| put32(sb, word * 4, v, be);
    w(&mut sb, 0, 0xa92b_4efc);
    w(&mut sb, 1, 0);
    w(&mut sb, 2, 90);
    w(&mut sb, 3, 0);
    // The UUID words are stored as the raw bytes of the array UUID (kernel memcpy).
    sb[5 * 4..6 * 4].copy_from_slice(&spec.uuid[0..4]);
    w(&mut sb, 6, spec.ctime as u32);
    w(&mut sb, 7, spec.level as u32);
    w(&mut sb, 8, (spec.size_sectors / 2) as u32);
    w(&mut sb, 9, spec.raid_disks);
    w(&mut sb, 10, spec.raid_disks);
    sb[13 * 4..14 * 4].copy_from_slice(&spec.uuid[4..8]);
    sb[14 * 4..15 * 4].copy_from_slice(&spec.uuid[8..12]);
    sb[15 * 4..16 * 4].copy_from_slice(&spec.uuid[12..16]);
    w(&mut sb, 32, spec.ctime as u32);
    let state = 1 | if spec.bitmap.is_some() { 1 << 8 } else { 0 };
    w(&mut sb, 33, state);
    w(&mut sb, 34, spec.raid_disks);
    w(&mut sb, 35, spec.raid_disks);
    // events: little-endian hosts store lo then hi, big-endian hi then lo.
    let (a, b) = if be {
        ((spec.events >> 32) as u32, spec.events as u32)
    } else {
        (spec.events as u32, (spec.events >> 32) as u32)
    };
    w(&mut sb, 39, a);
    w(&mut sb, 40, b);
    w(&mut sb, 64, spec.layout);
    w(&mut sb, 65, spec.raid_chunk_sectors * 512);
    for d in 0..spec.raid_disks as usize {
        let base = 128 + d * 32;
        w(&mut sb, base, d as u32);
        w(&mut sb, base + 3, d as u32);
        w(&mut sb, base + 4, 0b110);
    }
    w(&mut sb, 992, spec.dev_number);
    w(&mut sb, 995, u32::from(spec.role));
    w(&mut sb, 996, 0b110);
    // checksum: sum of host-order words with the checksum word zero, folded to 32 bits.
    let mut sum: u64 = 0;
    for i in 0..1024 {
        let v = &sb[i * 4..i * 4 + 4];
        let a = [v[0], v[1], v[2], v[3]];
        sum += u64::from(if be {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        });
    }
    let mut csum = ((sum & 0xffff_ffff) + (sum >> 32)) as u32;
    if spec.bad_checksum {
        csum ^= 0x5a5a;
    }
    w(&mut sb, 38, csum);
    sb
}

/// The 1.x superblock checksum over 256 + 2*max_dev bytes.
pub fn csum1(sb: &[u8]) -> u32 {
    let max_dev = u32::from_le_bytes(sb[220..224].try_into().unwrap()) as usize;
    let size = 256 + 2 * max_dev;
    let mut sum: u64 = 0;
    let mut i = 0;
    while i + 4 <= size {
        if i != 216 {
            sum += u64::from(u32::from_le_bytes(sb[i..i + 4].try_into().unwrap()));
        }
        i += 4;
    }
    if size - i == 2 {
        sum += u64::from(u16::from_le_bytes(sb[i..i + 2].try_into().unwrap()));
    }
    ((sum & 0xffff_ffff) + (sum >> 32)) as u32
}

/// md_p.h `struct mdp_superblock_1`.
fn sb1(spec: &Spec) -> Vec<u8> {
    let mut sb = vec![0u8; 4096];
    put32(&mut sb, 0, 0xa92b_4efc, false);
    put32(&mut sb, 4, 1, false);
    let features = if spec.bitmap.is_some() { 1 } else { 0 } | spec.extra_features;
    put32(&mut sb, 8, features, false);
    sb[16..32].copy_from_slice(&spec.uuid);
    let n = spec.name.as_bytes();
    sb[32..32 + n.len().min(32)].copy_from_slice(&n[..n.len().min(32)]);
    put64le(&mut sb, 64, spec.ctime);
    put32(&mut sb, 72, spec.level as u32, false);
    put32(&mut sb, 76, spec.layout, false);
    put64le(&mut sb, 80, spec.size_sectors);
    put32(&mut sb, 88, spec.raid_chunk_sectors, false);
    put32(&mut sb, 92, spec.raid_disks, false);
    if spec.bitmap.is_some() {
        put32(&mut sb, 96, spec.bitmap_rel() as i32 as u32, false);
    }
    let sb_sector = spec.sb_sector();
    let data_offset = match spec.meta {
        Meta::V10 => 0,
        _ => 2048.min(spec.device_sectors / 2),
    };
    put64le(&mut sb, 128, data_offset);
    put64le(
        &mut sb,
        136,
        spec.device_sectors.saturating_sub(data_offset + 64),
    );
    put64le(&mut sb, 144, sb_sector);
    put32(&mut sb, 160, spec.dev_number, false);
    sb[168..184].copy_from_slice(&[0xd0; 16]);
    put64le(&mut sb, 192, spec.ctime + 10);
    put64le(&mut sb, 200, spec.events);
    put64le(&mut sb, 208, u64::MAX);
    let max_dev = spec.raid_disks.max(spec.dev_number + 1);
    put32(&mut sb, 220, max_dev, false);
    for d in 0..max_dev as usize {
        let role = if d as u32 == spec.dev_number {
            spec.role
        } else {
            d as u16
        };
        put16le(&mut sb, 256 + 2 * d, role);
    }
    let mut c = csum1(&sb);
    if spec.bad_checksum {
        c ^= 0x5a5a;
    }
    put32(&mut sb, 216, c, false);
    sb
}

/// bitmap.h `bitmap_super_t` with its bit (or state) area.
fn bitmap_area(spec: &Spec, b: &BitmapSpec, slot: usize) -> Vec<u8> {
    let mut v = vec![0u8; 256];
    put32(&mut v, 0, b.magic, false);
    put32(&mut v, 4, b.version, false);
    v[8..24].copy_from_slice(&b.uuid.unwrap_or(spec.uuid));
    let events = b.slot_events.get(slot).copied().unwrap_or(b.events);
    put64le(&mut v, 24, events);
    put64le(&mut v, 32, b.events_cleared);
    put64le(&mut v, 40, b.sync_size);
    put32(&mut v, 48, b.state, false);
    put32(&mut v, 52, b.chunksize, false);
    put32(&mut v, 56, b.daemon_sleep, false);
    put32(&mut v, 60, b.write_behind, false);
    put32(&mut v, 64, b.sectors_reserved, false);
    put32(&mut v, 68, b.nodes, false);
    let n = b.cluster_name.as_bytes();
    v[72..72 + n.len().min(63)].copy_from_slice(&n[..n.len().min(63)]);
    if b.version == 6 {
        v.resize(1024, 0);
        v.extend_from_slice(&b.states);
        return v;
    }
    let chunks = b.chunks();
    // Never build more bits than a test image can hold (impossible geometries claim terabytes).
    let nbytes = chunks.div_ceil(8).min(64 << 20) as usize;
    let mut bits = vec![0u8; nbytes];
    let dirty = if slot == 0 {
        &b.dirty
    } else {
        b.slot_dirty.get(slot).unwrap_or(&b.dirty)
    };
    for &c in dirty {
        bits[(c / 8) as usize] |= 1 << (c % 8);
    }
    if b.trailing_garbage {
        // Set every bit past the last chunk: in the partial last byte and a page of 0xff after.
        let tail = (chunks % 8) as u32;
        if tail > 0 && nbytes > 0 {
            bits[nbytes - 1] |= !((1u8 << tail) - 1);
        }
        bits.extend(std::iter::repeat_n(0xff, 4096));
    }
    v.extend_from_slice(&bits);
    v
}

/// Builds the member image.
pub fn build(spec: &Spec) -> Vec<u8> {
    let mut img = vec![0u8; (spec.device_sectors * 512) as usize];
    let sb_off = (spec.sb_sector() * 512) as usize;
    let sb = match spec.meta {
        Meta::V090Le => sb090(spec, false),
        Meta::V090Be => sb090(spec, true),
        _ => sb1(spec),
    };
    img[sb_off..sb_off + sb.len()].copy_from_slice(&sb);
    if let Some(b) = &spec.bitmap {
        let base = spec.bitmap_byte() as usize;
        let slots = b.nodes.max(1) as usize;
        for slot in 0..slots {
            let off = base + slot * b.slot_bytes() as usize;
            if off >= img.len() {
                continue;
            }
            let area = bitmap_area(spec, b, slot);
            let end = (off + area.len()).min(img.len());
            img[off..end].copy_from_slice(&area[..end - off]);
        }
    }
    img
}

/// Writes an image into `dir` and returns its path.
pub fn write_image(dir: &std::path::Path, name: &str, img: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, img).expect("write image");
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v12_layout_matches_hand_computed_offsets() {
        let spec = Spec::new(
            Meta::V12,
            4096,
            Some(BitmapSpec::classic(65536, 16000, vec![0])),
        );
        let img = build(&spec);
        // 1.2: superblock at 4 KiB, bitmap 8 sectors later at 8 KiB.
        assert_eq!(&img[4096..4100], &0xa92b_4efcu32.to_le_bytes());
        assert_eq!(&img[8192..8196], b"bitm");
        assert_eq!(img[8192 + 256], 1);
        // 16000 sectors * 512 / 65536 = 125 chunks.
        assert_eq!(spec.bitmap.as_ref().unwrap().chunks(), 125);
    }

    #[test]
    fn v10_bitmap_sits_before_the_superblock() {
        let spec = Spec::new(
            Meta::V10,
            4100,
            Some(BitmapSpec::classic(65536, 16000, vec![])),
        );
        // sb at (4100 - 16) & !7 = 4080; room = 4 KiB = 8 sectors; bbl 8 sectors.
        assert_eq!(spec.sb_sector(), 4080);
        assert_eq!(spec.bitmap_byte(), (4080 - 16) * 512);
    }

    #[test]
    fn v090_magic_in_both_byte_orders() {
        let le = build(&Spec::new(Meta::V090Le, 4096, None));
        let be = build(&Spec::new(Meta::V090Be, 4096, None));
        let off = ((4096 & !127) - 128) * 512;
        assert_eq!(&le[off..off + 4], &[0xfc, 0x4e, 0x2b, 0xa9]);
        assert_eq!(&be[off..off + 4], &[0xa9, 0x2b, 0x4e, 0xfc]);
    }
}
