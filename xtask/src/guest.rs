//! The `md-bitmap` binary for the guest: a static glibc build (no musl toolchain needed), as the
//! guest has no shared libraries but mdadm's.
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::paths::{repo_root, target_dir};

/// Host target triple the static build uses (an explicit `--target` keeps `+crt-static` off
/// build scripts and proc-macros).
pub const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Builds `md-bitmap` statically in release mode and returns its path.
pub fn build_md_bitmap() -> Result<PathBuf> {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(repo_root())
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .args([
            "build",
            "--quiet",
            "--release",
            "--package",
            "md-bitmap-user",
            "--bin",
            "md-bitmap",
            "--target",
            TARGET,
        ])
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("building the static md-bitmap for the guest failed");
    }
    let bin = target_dir().join(TARGET).join("release/md-bitmap");
    if !bin.is_file() {
        bail!("{} missing after the build", bin.display());
    }
    Ok(bin)
}
