//! The real kernels tests run on: Debian's cloud kernels, fetched with `apt-get download`, unpacked
//! with `dpkg-deb -x`, modules decompressed and indexed with `depmod -b` into the cache.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::paths::cache_dir;

/// A kernel series the tests know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Series {
    /// Debian 12's 6.1 (md_bitmap_startwrite with `behind`/`success`).
    V6_1,
    /// Debian 12's backported 6.12 (bitmap_startwrite on `struct mddev *`, reworked accounting).
    V6_12,
}

impl Series {
    /// All series, oldest first.
    pub const ALL: [Series; 2] = [Series::V6_1, Series::V6_12];

    /// Short name used on the command line and in test names ("6.1", "6.12").
    pub fn short(self) -> &'static str {
        match self {
            Series::V6_1 => "6.1",
            Series::V6_12 => "6.12",
        }
    }

    /// Parses "6.1" / "6.12".
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "6.1" => Ok(Series::V6_1),
            "6.12" => Ok(Series::V6_12),
            _ => bail!("unknown kernel series {s:?} (known: 6.1, 6.12)"),
        }
    }

    /// The package the tests were developed against; used when the archive still has it.
    fn preferred_package(self) -> &'static str {
        match self {
            Series::V6_1 => "linux-image-6.1.0-56-cloud-amd64-unsigned",
            Series::V6_12 => "linux-image-6.12.117+deb12-cloud-amd64-unsigned",
        }
    }

    /// Regex for `apt-cache search --names-only` when the preferred package is gone.
    fn package_pattern(self) -> &'static str {
        match self {
            Series::V6_1 => r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$",
            Series::V6_12 => r"^linux-image-6\.12\.[0-9]+\+deb12-cloud-amd64-unsigned$",
        }
    }
}

/// An unpacked kernel in the cache.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Kernel {
    /// Which series.
    pub series: Series,
    /// Debian package name.
    pub package: String,
    /// Debian package version.
    pub package_version: String,
    /// `uname -r`.
    pub release: String,
    /// Unpack root (holds boot/ and lib/modules/).
    pub root: PathBuf,
}

impl Kernel {
    /// The kernel image.
    pub fn vmlinuz(&self) -> PathBuf {
        self.root
            .join("boot")
            .join(format!("vmlinuz-{}", self.release))
    }

    /// The module tree (`lib/modules/<release>`), decompressed and depmod'ed.
    pub fn modules_dir(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.release)
    }

    /// The kernel's build config.
    pub fn config(&self) -> PathBuf {
        self.root
            .join("boot")
            .join(format!("config-{}", self.release))
    }
}

fn kernels_dir() -> PathBuf {
    cache_dir().join("kernels")
}

fn manifest_path(series: Series) -> PathBuf {
    kernels_dir().join(format!("{}.json", series.short()))
}

/// The kernel of `series` in the cache, if setup has fetched it.
pub fn cached(series: Series) -> Option<Kernel> {
    let text = std::fs::read_to_string(manifest_path(series)).ok()?;
    let k: Kernel = serde_json::from_str(&text).ok()?;
    (k.vmlinuz().is_file() && k.modules_dir().join("modules.dep").is_file()).then_some(k)
}

/// The kernel of `series`, or an error that says to run setup.
pub fn get(series: Series) -> Result<Kernel> {
    cached(series).with_context(|| {
        format!(
            "kernel {} is not in the cache ({}): run `cargo xtask setup`",
            series.short(),
            kernels_dir().display()
        )
    })
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn package_available(name: &str) -> bool {
    run(Command::new("apt-cache").args(["show", "--no-all-versions", name]))
        .map(|s| s.contains("Package:"))
        .unwrap_or(false)
}

fn choose_package(series: Series) -> Result<String> {
    let preferred = series.preferred_package();
    if package_available(preferred) {
        return Ok(preferred.to_string());
    }
    let list =
        run(Command::new("apt-cache").args(["search", "--names-only", series.package_pattern()]))?;
    let mut names: Vec<String> = list
        .lines()
        .filter_map(|l| l.split(" - ").next())
        .map(str::to_string)
        .collect();
    names.sort_by_key(|n| version_key(n));
    names
        .pop()
        .with_context(|| format!("no Debian package for kernel {} found", series.short()))
}

fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// Fetches and unpacks the kernel of `series` unless the cache already has it.
pub fn ensure(series: Series) -> Result<Kernel> {
    if let Some(k) = cached(series) {
        return Ok(k);
    }
    let package = choose_package(series)?;
    let dir = kernels_dir().join(series.short());
    let dl = kernels_dir().join("download");
    std::fs::create_dir_all(&dl)?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    eprintln!("xtask: fetching {package}");
    run(Command::new("apt-get").current_dir(&dl).args([
        "-q",
        "-o",
        "APT::Sandbox::User=root",
        "download",
        &package,
    ]))?;
    let deb = std::fs::read_dir(&dl)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with(&format!("{}_", package.replace('+', "%2b")))
                    || n.starts_with(&format!("{package}_"))
            })
        })
        .with_context(|| format!("apt-get download left no .deb for {package}"))?;
    let package_version = run(Command::new("dpkg-deb")
        .args(["-f"])
        .arg(&deb)
        .arg("Version"))?
    .trim()
    .to_string();
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir))?;
    let release = std::fs::read_dir(dir.join("lib/modules"))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .context("package has no lib/modules")?;
    let moddir = dir.join("lib/modules").join(&release);
    decompress_modules(&moddir)?;
    run(Command::new("depmod").arg("-b").arg(&dir).arg(&release))?;
    let k = Kernel {
        series,
        package,
        package_version,
        release,
        root: dir,
    };
    std::fs::write(manifest_path(series), serde_json::to_string_pretty(&k)?)?;
    std::fs::remove_file(&deb).ok();
    Ok(k)
}

/// Decompresses `*.ko.xz` / `*.ko.zst` in place, so that busybox modprobe in the guest needs no
/// decompressor.
fn decompress_modules(dir: &Path) -> Result<()> {
    let mut xz = Vec::new();
    let mut zst = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "xz") {
                xz.push(p);
            } else if p.extension().is_some_and(|x| x == "zst") {
                zst.push(p);
            }
        }
    }
    for chunk in xz.chunks(200) {
        run(Command::new("xz").arg("-d").arg("-f").args(chunk))?;
    }
    for chunk in zst.chunks(200) {
        run(Command::new("zstd")
            .args(["-d", "-q", "-f", "--rm"])
            .args(chunk))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_key_orders_abi_numbers_numerically() {
        let mut v = [
            "linux-image-6.12.9+deb12-cloud-amd64-unsigned",
            "linux-image-6.12.117+deb12-cloud-amd64-unsigned",
            "linux-image-6.12.41+deb12-cloud-amd64-unsigned",
        ];
        v.sort_by_key(|n| version_key(n));
        assert_eq!(v[2], "linux-image-6.12.117+deb12-cloud-amd64-unsigned");
    }
}
