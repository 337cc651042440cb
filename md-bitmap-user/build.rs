//! Builds the eBPF programs (crate `md-bitmap-ebpf`) for bpfel-unknown-none with aya-build and
//! leaves the object in OUT_DIR, where `feed::ebpf` embeds it.
//!
//! With `AYA_BUILD_SKIP=1` the eBPF build is skipped and an empty object is embedded instead: the
//! rest of the crate builds and tests without nightly or bpf-linker, and the live feed then fails
//! at load time with "this md-bitmap was built without its eBPF programs".
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    let obj = out.join("md-bitmap");
    let skip = std::env::var("AYA_BUILD_SKIP")
        .map(|v| v == "1" || v.eq_ignore_ascii_case("true"))
        .unwrap_or(false);
    if skip {
        println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
        std::fs::write(&obj, [])?;
        return Ok(());
    }
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap())
        .parent()
        .unwrap()
        .join("md-bitmap-ebpf");
    let root = root.to_str().unwrap();
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "md-bitmap-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
