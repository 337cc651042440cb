//! `cargo xtask setup`: everything the project needs on a fresh machine of this kind, installed by
//! the project's own code. Each step checks first and does nothing when its part is present, so a
//! second run takes seconds.
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::kernels::{self, Series};

/// Debian packages the flows use (qemu for the VMs, mdadm and busybox for the guest, LLVM 22 for
/// bpf-linker, kmod for depmod, xz/zstd for module decompression).
pub const DEBIAN_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "mdadm",
    "dmsetup",
    "busybox-static",
    "kmod",
    "xz-utils",
    "zstd",
    "llvm-22-dev",
    "libpolly-22-dev",
    "tmux",
];

/// The bpf-linker version that builds against LLVM 22 on Rust 1.95.
pub const BPF_LINKER_VERSION: &str = "0.13.0";

fn missing_packages() -> Vec<&'static str> {
    DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .map(|o| !String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(true)
        })
        .collect()
}

fn step(name: &str, f: impl FnOnce() -> Result<String>) -> Result<()> {
    let t = Instant::now();
    let what = f().with_context(|| format!("setup step {name} failed"))?;
    eprintln!(
        "xtask setup: {name:<12} {what} ({:.1}s)",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn status(cmd: &mut Command) -> Result<()> {
    let s = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !s.success() {
        bail!("{cmd:?} failed with {s}");
    }
    Ok(())
}

fn debian_packages() -> Result<String> {
    let missing = missing_packages();
    if missing.is_empty() {
        return Ok("present".into());
    }
    status(Command::new("apt-get").args(["-q", "update"]))?;
    status(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["-q", "-y", "install", "--no-install-recommends"])
            .args(&missing),
    )?;
    Ok(format!("installed {}", missing.join(" ")))
}

fn nightly_rust_src() -> Result<String> {
    let out = Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output()
        .context("cannot run rustup")?;
    if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("rust-src") {
        return Ok("present".into());
    }
    if !out.status.success() {
        status(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    status(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))?;
    Ok("installed".into())
}

fn bpf_linker() -> Result<String> {
    let have = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if have.contains(BPF_LINKER_VERSION) {
        return Ok(format!("present ({})", have.trim()));
    }
    status(
        Command::new("cargo")
            .env("LLVM_PREFIX", "/usr/lib/llvm-22")
            .args([
                "install",
                "--locked",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
                "llvm-22",
            ]),
    )?;
    Ok(format!("built {BPF_LINKER_VERSION}"))
}

/// Runs every setup step.
pub fn run() -> Result<()> {
    let t = Instant::now();
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("setup installs Debian packages and must run as root");
    }
    step("packages", debian_packages)?;
    step("rust-src", nightly_rust_src)?;
    step("bpf-linker", bpf_linker)?;
    for s in Series::ALL {
        step(&format!("kernel {}", s.short()), || {
            let k = kernels::ensure(s)?;
            Ok(format!(
                "{} ({} {})",
                k.release, k.package, k.package_version
            ))
        })?;
    }
    eprintln!("xtask setup: done in {:.1}s", t.elapsed().as_secs_f64());
    Ok(())
}

/// Whether everything is in place (a cheap check the README commands run before [`run`]).
pub fn is_complete() -> bool {
    missing_packages().is_empty()
        && Command::new("bpf-linker")
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION))
            .unwrap_or(false)
        && Series::ALL.iter().all(|s| kernels::cached(*s).is_some())
}
