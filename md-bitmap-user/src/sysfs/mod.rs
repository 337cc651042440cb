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

/// A member device of an array (`md/dev-*`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MemberInfo {
    /// Kernel name of the member block device (`sdb`, `vda`, `dm-3`).
    pub name: String,
    /// Its device number, if sysfs shows it.
    pub dev: Option<DevNum>,
    /// Role in the array (`slot`), `None` for spares and failed members.
    pub slot: Option<u32>,
    /// `state` flags: in_sync, faulty, writemostly, blocked, spare, write_error, ...
    pub state: Vec<String>,
    /// Data offset on the member in sectors (`offset`).
    pub data_offset_sectors: u64,
    /// Space used on the member in KiB (`size`).
    pub size_kib: u64,
    /// Corrected read errors (`errors`).
    pub errors: u64,
    /// Recovery progress (`recovery_start`): `None` when in sync ("none").
    pub recovery_start_sectors: Option<u64>,
}

impl MemberInfo {
    /// Whether the member has failed.
    pub fn faulty(&self) -> bool {
        self.state.iter().any(|s| s == "faulty")
    }
    /// Whether the member is write-mostly.
    pub fn write_mostly(&self) -> bool {
        self.state.iter().any(|s| s == "writemostly")
    }
    /// Whether the member is fully in sync.
    pub fn in_sync(&self) -> bool {
        self.state.iter().any(|s| s == "in_sync")
    }
}

/// The array's bitmap as sysfs shows it (`md/bitmap/*`).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct BitmapInfo {
    /// `location`: `+8` (sectors from the superblock), `file`, or `none`.
    pub location: String,
    /// Bitmap chunk size in bytes.
    pub chunk_size_bytes: u64,
    /// Daemon sleep (`time_base`) in seconds.
    pub time_base_secs: f64,
    /// `metadata`: internal, external or clustered.
    pub metadata: String,
    /// `backlog`: the write-behind limit.
    pub backlog: u32,
    /// `can_clear`.
    pub can_clear: Option<bool>,
    /// `space` in sectors.
    pub space_sectors: u64,
    /// `max_backlog_used`.
    pub max_backlog_used: u32,
}

/// Everything sysfs says about one array.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ArrayInfo {
    /// Kernel name (`md0`).
    pub name: String,
    /// Device number.
    pub dev: DevNum,
    /// `level`: raid1, raid10, raid4, raid5, raid6, raid0, linear, or "" while inactive.
    pub level: String,
    /// `layout` as the kernel's integer.
    pub layout: u32,
    /// RAID chunk size in bytes (`chunk_size`).
    pub chunk_size_bytes: u64,
    /// `raid_disks`.
    pub raid_disks: u32,
    /// Per-member data size in KiB (`component_size`).
    pub component_size_kib: u64,
    /// Array size in sectors (`/sys/block/mdX/size`).
    pub array_sectors: u64,
    /// `metadata_version`: `1.2`, `0.90`, `external:...`, `none`.
    pub metadata_version: String,
    /// `array_state`: clean, active, write-pending, inactive, ...
    pub array_state: String,
    /// `degraded`: number of missing members.
    pub degraded: u32,
    /// `sync_action`: idle, resync, recover, check, repair, reshape, frozen.
    pub sync_action: String,
    /// `sync_completed` as (done, total) sectors while a sync runs.
    pub sync_completed: Option<(u64, u64)>,
    /// `sync_speed` in KiB/s while a sync runs.
    pub sync_speed_kibs: Option<u64>,
    /// `sync_speed_min` in KiB/s.
    pub sync_speed_min_kibs: Option<u64>,
    /// `sync_speed_max` in KiB/s.
    pub sync_speed_max_kibs: Option<u64>,
    /// `resync_start` (recovery_cp): `None` when the array is in sync.
    pub resync_start_sectors: Option<u64>,
    /// `safe_mode_delay` in seconds.
    pub safe_mode_delay_secs: Option<f64>,
    /// `uuid`, if shown.
    pub uuid: Option<String>,
    /// The bitmap, if the array has one.
    pub bitmap: Option<BitmapInfo>,
    /// Members.
    pub members: Vec<MemberInfo>,
}

/// The leading number of a sysfs value ("1000 (system)" -> 1000).
fn leading_u64(s: &str) -> Option<u64> {
    s.split_whitespace().next()?.parse().ok()
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

    fn md_dir(&self, name: &str) -> PathBuf {
        self.root.join("block").join(name).join("md")
    }

    fn opt(&self, p: &Path) -> Option<String> {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// Reads everything sysfs shows about `array`.
    pub fn array_info(&self, array: &ArrayRef) -> Result<ArrayInfo> {
        let md = self.md_dir(&array.name);
        if !md.is_dir() {
            bail!("{} is gone (no {})", array.name, md.display());
        }
        let get = |f: &str| self.opt(&md.join(f)).unwrap_or_default();
        let num = |f: &str| leading_u64(&get(f));
        let bitmap = {
            let b = md.join("bitmap");
            let location = self.opt(&b.join("location")).unwrap_or_default();
            if location.is_empty() || location == "none" {
                None
            } else {
                let g = |f: &str| self.opt(&b.join(f)).unwrap_or_default();
                Some(BitmapInfo {
                    location,
                    chunk_size_bytes: leading_u64(&g("chunksize")).unwrap_or(0),
                    time_base_secs: g("time_base").parse().unwrap_or(5.0),
                    metadata: g("metadata"),
                    backlog: leading_u64(&g("backlog")).unwrap_or(0) as u32,
                    can_clear: match g("can_clear").as_str() {
                        "true" => Some(true),
                        "false" => Some(false),
                        _ => None,
                    },
                    space_sectors: leading_u64(&g("space")).unwrap_or(0),
                    max_backlog_used: leading_u64(&g("max_backlog_used")).unwrap_or(0) as u32,
                })
            }
        };
        let mut members = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&md) {
            for e in rd.flatten() {
                let fname = e.file_name().to_string_lossy().into_owned();
                let Some(name) = fname.strip_prefix("dev-") else {
                    continue;
                };
                let d = md.join(&fname);
                let g = |f: &str| self.opt(&d.join(f)).unwrap_or_default();
                members.push(MemberInfo {
                    name: name.to_string(),
                    dev: self
                        .opt(&d.join("block").join("dev"))
                        .and_then(|s| DevNum::parse(&s)),
                    slot: g("slot").parse().ok(),
                    state: g("state")
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect(),
                    data_offset_sectors: leading_u64(&g("offset")).unwrap_or(0),
                    size_kib: leading_u64(&g("size")).unwrap_or(0),
                    errors: leading_u64(&g("errors")).unwrap_or(0),
                    recovery_start_sectors: leading_u64(&g("recovery_start")),
                });
            }
        }
        members.sort_by(|a, b| {
            (a.slot.is_none(), a.slot, &a.name).cmp(&(b.slot.is_none(), b.slot, &b.name))
        });
        let sync_completed = get("sync_completed")
            .split_once('/')
            .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)));
        Ok(ArrayInfo {
            name: array.name.clone(),
            dev: array.dev,
            level: get("level"),
            layout: num("layout").unwrap_or(0) as u32,
            chunk_size_bytes: num("chunk_size").unwrap_or(0),
            raid_disks: num("raid_disks").unwrap_or(0) as u32,
            component_size_kib: num("component_size").unwrap_or(0),
            array_sectors: self
                .opt(&self.root.join("block").join(&array.name).join("size"))
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            metadata_version: get("metadata_version"),
            array_state: get("array_state"),
            degraded: num("degraded").unwrap_or(0) as u32,
            sync_action: get("sync_action"),
            sync_completed,
            sync_speed_kibs: num("sync_speed"),
            sync_speed_min_kibs: num("sync_speed_min"),
            sync_speed_max_kibs: num("sync_speed_max"),
            resync_start_sectors: num("resync_start"),
            safe_mode_delay_secs: get("safe_mode_delay").parse().ok(),
            uuid: Some(get("uuid")).filter(|s| !s.is_empty()),
            bitmap,
            members,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &Path, rel: &str, val: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, format!("{val}\n")).unwrap();
    }

    /// A raid5 as the 6.12 guest shows it.
    fn fake_raid5(root: &Path) {
        let md = "block/md0/md";
        put(root, "block/md0/dev", "9:0");
        put(root, "block/md0/size", "253952");
        for (f, v) in [
            ("level", "raid5"),
            ("layout", "2"),
            ("chunk_size", "524288"),
            ("raid_disks", "3"),
            ("component_size", "63488"),
            ("metadata_version", "1.2"),
            ("array_state", "clean"),
            ("degraded", "0"),
            ("sync_action", "idle"),
            ("sync_completed", "none"),
            ("sync_speed", "none"),
            ("sync_speed_min", "1000 (system)"),
            ("sync_speed_max", "200000 (system)"),
            ("resync_start", "none"),
            ("safe_mode_delay", "0.204"),
            ("bitmap/location", "+8"),
            ("bitmap/chunksize", "65536"),
            ("bitmap/time_base", "5"),
            ("bitmap/metadata", "internal"),
            ("bitmap/backlog", "0"),
            ("bitmap/can_clear", "true"),
            ("bitmap/space", "0"),
            ("bitmap/max_backlog_used", "0"),
        ] {
            put(root, &format!("{md}/{f}"), v);
        }
        for (i, d) in ["vda", "vdb", "vdc"].iter().enumerate() {
            put(root, &format!("{md}/dev-{d}/slot"), &i.to_string());
            put(
                root,
                &format!("{md}/dev-{d}/state"),
                if i == 2 { "faulty" } else { "in_sync" },
            );
            put(root, &format!("{md}/dev-{d}/offset"), "4096");
            put(root, &format!("{md}/dev-{d}/size"), "63488");
            put(root, &format!("{md}/dev-{d}/errors"), "0");
            put(root, &format!("{md}/dev-{d}/recovery_start"), "none");
            put(
                root,
                &format!("{md}/dev-{d}/block/dev"),
                &format!("253:{}", i * 16),
            );
        }
        put(root, "block/vda/dev", "253:0");
    }

    #[test]
    fn reads_a_raid5_with_bitmap() {
        let t = tempfile::tempdir().unwrap();
        fake_raid5(t.path());
        let s = Sysfs::at(t.path());
        let arrays = s.arrays().unwrap();
        assert_eq!(arrays.len(), 1);
        let a = s.array_info(&arrays[0]).unwrap();
        assert_eq!(a.level, "raid5");
        assert_eq!(a.chunk_size_bytes, 524288);
        assert_eq!(a.array_sectors, 253952);
        assert_eq!(a.sync_speed_min_kibs, Some(1000));
        assert_eq!(a.sync_completed, None);
        assert_eq!(a.resync_start_sectors, None);
        let b = a.bitmap.unwrap();
        assert_eq!((b.chunk_size_bytes, b.time_base_secs), (65536, 5.0));
        assert_eq!(a.members.len(), 3);
        assert!(a.members[2].faulty());
        assert_eq!(
            a.members[1].dev,
            Some(DevNum {
                major: 253,
                minor: 16
            })
        );
    }

    #[test]
    fn non_md_device_is_a_clear_error() {
        let t = tempfile::tempdir().unwrap();
        fake_raid5(t.path());
        let err = Sysfs::at(t.path()).find_array("vda").unwrap_err();
        assert!(err.to_string().contains("not an md array"), "{err}");
    }
}
