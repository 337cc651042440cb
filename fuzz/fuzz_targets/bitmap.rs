//! bitmap_super_t and the area after it: decoding, geometry checks, the bit scan of versions 3-5
//! and the state scan of the lockless version 6.
#![no_main]

use libfuzzer_sys::fuzz_target;
use md_bitmap::ondisk::BitmapSuper;
use md_bitmap::ondisk::bitmap::{scan_bits, scan_lockless};

fuzz_target!(|data: &[u8]| {
    let Ok(sb) = BitmapSuper::from_bytes(data) else {
        return;
    };
    let _ = BitmapSuper::parse(data, 0);
    let _ = sb.state_flags();
    let _ = sb.cluster_name();
    let _ = sb.kernel_complaints();
    let _ = sb.chunk_size_bytes();
    if let Ok(g) = sb.geometry() {
        assert!(g.area_bytes <= md_bitmap::ondisk::bitmap::MAX_AREA_BYTES);
        let _ = BitmapSuper::cluster_slot_bytes(&g);
        let area = data.get(g.area_offset as usize..).unwrap_or(&[]);
        if sb.is_lockless() {
            if let Ok(s) = scan_lockless(area, g.chunks) {
                let total: u64 = s.counts.named().iter().map(|(_, n)| n).sum();
                assert_eq!(total, g.chunks);
                assert!(s.dirty.dirty_chunks <= g.chunks);
            }
        } else if let Ok(s) = scan_bits(area, g.chunks) {
            assert!(s.dirty_chunks <= g.chunks);
            let covered: u64 = s.dirty_ranges.iter().map(|r| r.end - r.start).sum();
            assert_eq!(covered, s.dirty_chunks);
            assert!(s.dirty_ranges.windows(2).all(|w| w[0].end < w[1].start));
            assert!(s.dirty_ranges.last().is_none_or(|r| r.end <= g.chunks));
        }
    }
    // Any byte string is also a bit area and a state area.
    let n = data.len() as u64;
    let _ = scan_bits(data, n * 8);
    let _ = scan_bits(data, (n * 8).saturating_sub(3));
    let _ = scan_lockless(data, n);
});
