//! The whole member path: the input is a member image; find the superblock, locate and decode
//! the bitmap (and cluster slots), then render it as text, map and JSON as `inspect` would.
#![no_main]

use libfuzzer_sys::fuzz_target;
use md_bitmap::inspect::{InspectRecord, render_map, render_text};
use md_bitmap::ondisk::{DeviceKind, examine_member};

fuzz_target!(|data: &[u8]| {
    let Ok(m) = examine_member(data) else {
        return;
    };
    let d = m.dirty();
    assert!(d.dirty_chunks <= d.chunks);
    let _ = render_text("fuzz.img", &m);
    for w in [0, 1, 20, 80, 300] {
        let _ = render_map(&m, w);
    }
    let rec = InspectRecord::new(
        std::path::Path::new("fuzz.img"),
        DeviceKind::RegularFile,
        &m,
    );
    let _ = serde_json::to_string(&rec).unwrap();
});
