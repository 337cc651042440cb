//! Which bitmap functions the running kernel has, and with which arguments.
//!
//! md's bitmap functions were renamed and re-typed several times (see
//! `docs/kernel-support.md`): `md_bitmap_startwrite(struct bitmap *, sector_t, unsigned long,
//! int behind)` on 6.1-6.11, `bitmap_startwrite(struct mddev *, ...)` on 6.12-6.15 (with or without
//! the `behind`/`success` arguments, depending on whether the Feb 2025 rework was backported), and
//! `bitmap_start_write` from 6.16. The names come from `/proc/kallsyms` (read once: a scan costs
//! over a second under emulation), the argument layout from the presence of the separate
//! behind-write functions that the rework introduced.
use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// One symbol of the running kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Symbol {
    /// Address (0 when kallsyms hides addresses from unprivileged readers).
    pub addr: u64,
    /// The exact name to attach a kprobe to (may carry a compiler suffix like `.isra.0`).
    pub name: String,
    /// The module that holds it (`md_mod`), or `None` for vmlinux.
    pub module: Option<String>,
}

/// The function symbols of the running kernel, indexed by their base name (without suffixes
/// such as `.isra.0` or `.constprop.0`), and the data symbols of modules.
#[derive(Clone, Debug, Default)]
pub struct KernelSymbols {
    by_base: HashMap<String, Vec<Symbol>>,
    module_data: HashMap<String, Vec<Symbol>>,
}

impl KernelSymbols {
    /// Reads `/proc/kallsyms`.
    pub fn load() -> Result<Self> {
        Self::from_path(Path::new("/proc/kallsyms"))
    }

    /// Reads a kallsyms-format file.
    pub fn from_path(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Ok(Self::parse(&text))
    }

    /// Parses kallsyms text (`address type name [module]` per line), keeping text symbols and
    /// modules' data symbols.
    pub fn parse(text: &str) -> Self {
        let mut by_base: HashMap<String, Vec<Symbol>> = HashMap::new();
        let mut module_data: HashMap<String, Vec<Symbol>> = HashMap::new();
        for line in text.lines() {
            let mut it = line.split_ascii_whitespace();
            let (Some(addr), Some(ty), Some(name)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            let module = it
                .next()
                .map(|m| m.trim_start_matches('[').trim_end_matches(']').to_string());
            let sym = |name: &str, module| Symbol {
                addr: u64::from_str_radix(addr, 16).unwrap_or(0),
                name: name.to_string(),
                module,
            };
            match ty {
                "t" | "T" => {
                    let base = name.split('.').next().unwrap_or(name).to_string();
                    by_base.entry(base).or_default().push(sym(name, module));
                }
                "b" | "B" | "d" | "D" if module.is_some() => {
                    module_data
                        .entry(name.to_string())
                        .or_default()
                        .push(sym(name, module));
                }
                _ => {}
            }
        }
        Self {
            by_base,
            module_data,
        }
    }

    /// Address of data symbol `name` of `module` (e.g. md_mod's `all_mddevs`), if visible.
    pub fn data_addr(&self, module: &str, name: &str) -> Option<u64> {
        self.module_data
            .get(name)?
            .iter()
            .find(|s| s.module.as_deref() == Some(module) && s.addr != 0)
            .map(|s| s.addr)
    }

    /// The first of `candidates` (base names) present in module `module`, if any.
    pub fn find_in(&self, module: &str, candidates: &[&str]) -> Option<&Symbol> {
        candidates.iter().find_map(|c| {
            self.by_base
                .get(*c)?
                .iter()
                .find(|s| s.module.as_deref() == Some(module) || (s.module.is_none()))
        })
    }

    /// Whether any symbol with this base name exists.
    pub fn has(&self, base: &str) -> bool {
        self.by_base.contains_key(base)
    }
}

/// How the running kernel's start/end-write functions take their arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteArgs {
    /// `(bitmap_or_mddev, offset, sectors, behind)` and
    /// `(bitmap_or_mddev, offset, sectors, success, behind)`: up to 6.13 (and stable kernels
    /// before the Feb 2025 backport). `success == 0` makes the chunk NEEDED.
    SuccessBehind,
    /// `(mddev, offset, sectors)` for both: 6.14+ and the 6.6.y/6.12.y/6.13.y backports. A write
    /// that ends while the array is degraded makes the chunk NEEDED; behind writes are counted by
    /// separate functions.
    Plain,
}

/// The bitmap functions of the running kernel that md-bitmap attaches to.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BitmapAbi {
    /// Start-write function (kprobe target).
    pub start_write: String,
    /// End-write function.
    pub end_write: String,
    /// Start-sync function, if found.
    pub start_sync: Option<String>,
    /// End-sync function, if found.
    pub end_sync: Option<String>,
    /// Close-sync function, if found.
    pub close_sync: Option<String>,
    /// Cond-end-sync function, if found.
    pub cond_end_sync: Option<String>,
    /// Daemon function, if found.
    pub daemon_work: Option<String>,
    /// Unplug function, if found.
    pub unplug: Option<String>,
    /// Bitmap superblock update function, if found.
    pub update_sb: Option<String>,
    /// Argument layout of start/end write.
    pub write_args: WriteArgs,
    /// Whether the first argument of the bitmap functions is a `struct mddev *` (6.12+) rather
    /// than a `struct bitmap *`.
    pub first_arg_is_mddev: bool,
}

const MD_MOD: &str = "md_mod";

impl BitmapAbi {
    /// Picks the functions and argument layout from the kernel's symbols.
    pub fn resolve(syms: &KernelSymbols) -> Result<Self> {
        let name = |cands: &[&str]| syms.find_in(MD_MOD, cands).map(|s| s.name.clone());
        let (start_write, end_write, first_arg_is_mddev) = if let (Some(s), Some(e)) = (
            name(&["md_bitmap_startwrite"]),
            name(&["md_bitmap_endwrite"]),
        ) {
            (s, e, false)
        } else if let (Some(s), Some(e)) = (
            name(&["bitmap_startwrite", "bitmap_start_write"]),
            name(&["bitmap_endwrite", "bitmap_end_write"]),
        ) {
            (s, e, true)
        } else {
            bail!(
                "the running kernel has no md bitmap start/end-write functions in /proc/kallsyms \
                 (is md_mod loaded? tried md_bitmap_startwrite, bitmap_startwrite, bitmap_start_write)"
            );
        };
        // The Feb 2025 rework (6.14, backported to 6.6.y/6.12.y/6.13.y) dropped the success and
        // behind arguments and introduced separate behind-write functions.
        let reworked = syms.has("md_bitmap_start_behind_write")
            || syms.has("bitmap_start_behind_write")
            || start_write.starts_with("bitmap_start_write");
        Ok(Self {
            start_write,
            end_write,
            start_sync: name(&["md_bitmap_start_sync", "bitmap_start_sync"]),
            end_sync: name(&["md_bitmap_end_sync", "bitmap_end_sync"]),
            close_sync: name(&["md_bitmap_close_sync", "bitmap_close_sync"]),
            cond_end_sync: name(&["md_bitmap_cond_end_sync", "bitmap_cond_end_sync"]),
            daemon_work: name(&["md_bitmap_daemon_work", "bitmap_daemon_work"]),
            unplug: name(&["md_bitmap_unplug", "bitmap_unplug"]),
            update_sb: name(&["md_bitmap_update_sb", "bitmap_update_sb"]),
            write_args: if reworked {
                WriteArgs::Plain
            } else {
                WriteArgs::SuccessBehind
            },
            first_arg_is_mddev,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K61: &str = "\
ffffffffc0100000 T md_bitmap_startwrite\t[md_mod]
ffffffffc0100100 T md_bitmap_endwrite\t[md_mod]
ffffffffc0100200 T md_bitmap_start_sync\t[md_mod]
ffffffffc0100300 T md_bitmap_daemon_work\t[md_mod]
ffffffffc0100400 t md_bitmap_unplug.part.0\t[md_mod]
ffffffff81000000 T submit_bio
";
    const K612: &str = "\
ffffffffc0100000 t bitmap_startwrite\t[md_mod]
ffffffffc0100100 t bitmap_endwrite\t[md_mod]
ffffffffc0100180 t bitmap_start_behind_write\t[md_mod]
ffffffffc0100200 t bitmap_start_sync\t[md_mod]
ffffffffc0100300 t bitmap_daemon_work\t[md_mod]
ffffffffc0100400 t llbitmap_start_sync\t[md_mod]
";

    #[test]
    fn resolves_6_1_names_with_success_and_behind() {
        let abi = BitmapAbi::resolve(&KernelSymbols::parse(K61)).unwrap();
        assert_eq!(abi.start_write, "md_bitmap_startwrite");
        assert_eq!(abi.write_args, WriteArgs::SuccessBehind);
        assert!(!abi.first_arg_is_mddev);
        assert_eq!(abi.unplug.as_deref(), Some("md_bitmap_unplug.part.0"));
    }

    #[test]
    fn resolves_6_12_backport_names_without_success() {
        let abi = BitmapAbi::resolve(&KernelSymbols::parse(K612)).unwrap();
        assert_eq!(abi.start_write, "bitmap_startwrite");
        assert_eq!(abi.end_write, "bitmap_endwrite");
        assert_eq!(abi.start_sync.as_deref(), Some("bitmap_start_sync"));
        assert_eq!(abi.write_args, WriteArgs::Plain);
        assert!(abi.first_arg_is_mddev);
    }

    #[test]
    fn no_md_is_a_clear_error() {
        let err = BitmapAbi::resolve(&KernelSymbols::parse("ffff T submit_bio\n")).unwrap_err();
        assert!(err.to_string().contains("md_mod loaded"));
    }
}
