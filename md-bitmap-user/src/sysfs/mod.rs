//! md arrays as sysfs shows them (`/sys/block/mdX/md/...`).
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::feed::record::DevNum;

/// Where sysfs is; tests point this at a fake tree.
#[derive(Clone, Debug)]
pub struct Sysfs {
    root: PathBuf,
}

impl Default for Sysfs {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/sys"),
        }
    }
}

/// An md array's name and device number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArrayRef {
    /// Kernel name, e.g. `md0` or `md127`.
    pub name: String,
    /// Device number.
    pub dev: DevNum,
}

fn read_trim(p: &Path) -> Result<String> {
    Ok(std::fs::read_to_string(p)
        .with_context(|| format!("cannot read {}", p.display()))?
        .trim()
        .to_string())
}

impl Sysfs {
    /// A sysfs rooted elsewhere (for tests).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// All block devices that are md arrays (have an `md/` directory), sorted by name.
    pub fn arrays(&self) -> Result<Vec<ArrayRef>> {
        let dir = self.root.join("block");
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
        };
        for e in entries {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let p = dir.join(&name);
            if !p.join("md").is_dir() {
                continue;
            }
            let dev = read_trim(&p.join("dev"))?;
            let Some(dev) = DevNum::parse(&dev) else {
                continue;
            };
            out.push(ArrayRef { name, dev });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Resolves a user's array argument (`md0`, `/dev/md0`, `/dev/md/name`) to an array.
    pub fn find_array(&self, arg: &str) -> Result<ArrayRef> {
        let name = if arg.starts_with("/dev/") {
            let real =
                std::fs::canonicalize(arg).with_context(|| format!("no such device {arg}"))?;
            real.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else {
            arg.to_string()
        };
        let arrays = self.arrays()?;
        match arrays.into_iter().find(|a| a.name == name) {
            Some(a) => Ok(a),
            None => bail!("{arg} is not an md array (no /sys/block/{name}/md)"),
        }
    }
}
