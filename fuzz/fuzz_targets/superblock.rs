//! md superblock parsing: 0.90 (either byte order) and 1.x at every expected offset, the 1.x
//! checksum, and the superblock search over the input taken as a whole member.
#![no_main]

use libfuzzer_sys::fuzz_target;
use md_bitmap::ondisk::superblock::{
    MetadataVersion, parse_v1, parse_v090, v1_checksum, v090_offset_bytes,
};
use md_bitmap::ondisk::{bitmap_offset_bytes, find_superblock};

fuzz_target!(|data: &[u8]| {
    if let Ok(sb) = parse_v090(data, 0) {
        let _ = sb.array_uuid_string();
        let _ = bitmap_offset_bytes(&sb);
    }
    let _ = v1_checksum(data);
    // Take the stored super_offset as the expected one so the 1.x body is reached.
    let at = data
        .get(144..152)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
        .unwrap_or(0);
    for v in [
        MetadataVersion::V0_90,
        MetadataVersion::V1_0,
        MetadataVersion::V1_1,
        MetadataVersion::V1_2,
    ] {
        if let Ok(sb) = parse_v1(data, at, v) {
            let _ = sb.array_uuid_string();
            let _ = sb.level_name();
            let _ = bitmap_offset_bytes(&sb);
        }
        let _ = v.v1_offset_sectors(data.len() as u64 / 512);
    }
    let _ = v090_offset_bytes(data.len() as u64);
    if let Ok(sb) = find_superblock(data) {
        let _ = bitmap_offset_bytes(&sb);
    }
});
