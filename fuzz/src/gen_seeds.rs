//! Writes seed inputs for the fuzz targets: valid members of every metadata version and bitmap
//! kind, built by the image builder the `inspect_*` tests use, plus their superblocks and bitmap
//! areas cut out for the `superblock` and `bitmap` targets.
//!
//! Usage: `cargo run --manifest-path fuzz/Cargo.toml --bin gen_seeds [CORPUS_DIR]`
//! (default `fuzz/corpus`).
#[path = "../../md-bitmap-user/tests/inspect_support.rs"]
#[allow(dead_code, unused_imports)]
mod support;

use support::{BitmapSpec, Meta, Spec, build};

fn main() {
    let root = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/corpus").into());
    let mut specs = Vec::new();
    for meta in [Meta::V090Le, Meta::V090Be, Meta::V10, Meta::V11, Meta::V12] {
        specs.push(Spec::new(
            meta,
            160,
            Some(BitmapSpec::classic(65536, 16000, vec![0, 5, 124])),
        ));
        let mut b = BitmapSpec::classic(512, 1000, (0..40).collect());
        b.version = 3;
        specs.push(Spec::new(meta, 160, Some(b)));
        specs.push(Spec::new(meta, 160, None));
    }
    specs.push(Spec::new(
        Meta::V12,
        64,
        Some(BitmapSpec::lockless(
            128,
            2000,
            vec![0, 1, 2, 3, 4, 5, 6, 7, 9, 1, 1, 2, 2, 0, 0, 3],
        )),
    ));
    let mut b = BitmapSpec::classic(1 << 20, 1 << 15, vec![1, 3]);
    b.version = 5;
    b.nodes = 3;
    b.cluster_name = "fuzz".into();
    b.slot_dirty = vec![vec![1], vec![2], vec![0, 1, 2, 3]];
    let mut s = Spec::new(Meta::V12, 64, Some(b));
    s.bitmap_offset = Some(8);
    specs.push(s);
    let mut n = 0;
    for (i, spec) in specs.iter().enumerate() {
        let img = build(spec);
        write(&root.join("member"), &format!("m{i}"), &img);
        let sb = (spec.sb_sector() * 512) as usize;
        write(
            &root.join("superblock"),
            &format!("s{i}"),
            &img[sb..sb + 4096],
        );
        if spec.bitmap.is_some() {
            let b = spec.bitmap_byte() as usize;
            let end = (b + 8192).min(img.len());
            write(&root.join("bitmap"), &format!("b{i}"), &img[b..end]);
        }
        n += 1;
    }
    eprintln!("wrote seeds from {n} members under {}", root.display());
}

fn write(dir: &std::path::Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("create corpus dir");
    std::fs::write(dir.join(name), bytes).expect("write seed");
}
