//! Array geometry as sysfs reports it, validated into an [`ArrayMap`].
//!
//! All sizes inside this module are 512-byte sectors unless a name says otherwise.

use super::raid5::{Raid5Algorithm, Raid5Conf};
use super::raid10::{Raid10Conf, Raid10Layout};

/// Bytes in a sector, the unit of every `offset`/`sectors` value in this module.
pub const SECTOR_SIZE: u64 = 512;

/// `RAID5_STRIPE_SIZE` on kernels with 4 KiB pages (`DEFAULT_STRIPE_SIZE`, raid5.h): 4096 bytes.
pub const DEFAULT_STRIPE_SIZE: u32 = 4096;

/// The md personalities that can carry a write-intent bitmap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    /// raid1 (drivers/md/raid1.c).
    Raid1,
    /// raid4: raid456 personality with `conf->level == 4` (parity on the last device).
    Raid4,
    /// raid5 (drivers/md/raid5.c).
    Raid5,
    /// raid6 (drivers/md/raid5.c).
    Raid6,
    /// raid10 (drivers/md/raid10.c).
    Raid10,
}

impl Level {
    /// Parses `/sys/block/mdX/md/level` (`raid1`, `raid10`, ...); a bare number is accepted too.
    pub fn from_sysfs(s: &str) -> Result<Self, GeometryError> {
        let t = s.trim();
        let n = t.strip_prefix("raid").unwrap_or(t);
        match n {
            "1" => Ok(Level::Raid1),
            "4" => Ok(Level::Raid4),
            "5" => Ok(Level::Raid5),
            "6" => Ok(Level::Raid6),
            "10" => Ok(Level::Raid10),
            _ => Err(GeometryError::UnsupportedLevel(t.to_string())),
        }
    }

    /// The md level number (1, 4, 5, 6 or 10), as in `mddev->level`.
    pub fn number(self) -> u32 {
        match self {
            Level::Raid1 => 1,
            Level::Raid4 => 4,
            Level::Raid5 => 5,
            Level::Raid6 => 6,
            Level::Raid10 => 10,
        }
    }

    /// True for the raid456 personality (raid4, raid5, raid6).
    pub fn is_parity(self) -> bool {
        matches!(self, Level::Raid4 | Level::Raid5 | Level::Raid6)
    }
}

/// Why a geometry was rejected. Each check mirrors one the kernel makes when it starts the array.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GeometryError {
    /// The level has no bitmap support here (raid0, linear, multipath, faulty, ...).
    #[error("md level {0:?} is not supported by the bitmap mapping")]
    UnsupportedLevel(String),
    /// Too few (or zero) member devices for the level.
    #[error("raid_disks {raid_disks} is invalid for {level:?}")]
    RaidDisks {
        /// The level.
        level: Level,
        /// The rejected device count.
        raid_disks: u32,
    },
    /// raid4/5/6/10 need a power-of-two chunk of at least 4 KiB (`setup_conf` / `setup_geo`).
    #[error("chunk_size {0} bytes is not a power of two of at least 4096")]
    ChunkSize(u64),
    /// The stripe size (`RAID5_STRIPE_SIZE`) must be a power of two of at least 4 KiB that
    /// divides the chunk.
    #[error("stripe_size {0} bytes is invalid")]
    StripeSize(u32),
    /// The layout number is not valid for the level (`algorithm_valid_raid5/6`, `setup_geo`).
    #[error("layout {layout:#x} is invalid for {level:?}")]
    Layout {
        /// The level.
        level: Level,
        /// The rejected layout number.
        layout: u32,
    },
    /// raid10 needs `2 <= near*far <= raid_disks` and a non-empty far set (`setup_conf`).
    #[error("raid10 layout {layout:#x} needs {copies} copies on {raid_disks} devices")]
    Raid10Copies {
        /// The layout number.
        layout: u32,
        /// near_copies * far_copies.
        copies: u32,
        /// Member count.
        raid_disks: u32,
    },
}

/// An array's shape as `/sys/block/mdX/md/` reports it.
///
/// Units are the kernel's: `chunk_size` and `stripe_size` in bytes, `component_size` in sectors
/// (sysfs `component_size` is KiB; [`ArrayGeometry::from_sysfs`] converts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArrayGeometry {
    /// `md/level`.
    pub level: Level,
    /// `md/layout`: raid5/6 `ALGORITHM_*` number, raid10 near/far/offset encoding, 0 for raid1.
    pub layout: u32,
    /// `md/raid_disks` (no reshape in progress).
    pub raid_disks: u32,
    /// `md/chunk_size` in bytes (ignored for raid1).
    pub chunk_size: u64,
    /// Per-member data size in sectors, `mddev->dev_sectors` (sysfs `component_size` * 2).
    pub component_size: u64,
    /// `RAID5_STRIPE_SIZE(conf)` in bytes (`md/stripe_size`); 4096 on 4 KiB-page kernels.
    pub stripe_size: u32,
}

impl ArrayGeometry {
    /// Builds a geometry from the sysfs values: `level`, `layout`, `raid_disks`, `chunk_size`
    /// (bytes) and `component_size` (KiB). The stripe size defaults to [`DEFAULT_STRIPE_SIZE`].
    pub fn from_sysfs(
        level: &str,
        layout: u32,
        raid_disks: u32,
        chunk_size_bytes: u64,
        component_size_kib: u64,
    ) -> Result<Self, GeometryError> {
        Ok(ArrayGeometry {
            level: Level::from_sysfs(level)?,
            layout,
            raid_disks,
            chunk_size: chunk_size_bytes,
            component_size: component_size_kib * 2,
            stripe_size: DEFAULT_STRIPE_SIZE,
        })
    }

    /// The chunk size in sectors (`mddev->chunk_sectors`).
    pub fn chunk_sectors(&self) -> u64 {
        self.chunk_size / SECTOR_SIZE
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Raid1 { dev_sectors: u64 },
    Parity(Raid5Conf),
    Raid10(Raid10Conf),
}

/// A validated array geometry: the entry point for the mapping functions.
///
/// Build it with [`ArrayMap::new`]; then [`ArrayMap::write_calls`] gives the bitmap calls of a
/// write, [`ArrayMap::sync_size`] what the bitmap covers and [`ArrayMap::resync_extents`] what a
/// resync of one bitmap chunk touches.
#[derive(Debug, Clone)]
pub struct ArrayMap {
    geometry: ArrayGeometry,
    pub(crate) kind: Kind,
}

impl ArrayMap {
    /// Validates `geometry` the way the personality's `run`/`setup_conf` would.
    pub fn new(geometry: ArrayGeometry) -> Result<Self, GeometryError> {
        let g = geometry;
        let kind = match g.level {
            Level::Raid1 => {
                if g.raid_disks == 0 {
                    return Err(GeometryError::RaidDisks {
                        level: g.level,
                        raid_disks: g.raid_disks,
                    });
                }
                Kind::Raid1 {
                    dev_sectors: g.component_size,
                }
            }
            Level::Raid4 | Level::Raid5 | Level::Raid6 => {
                let chunk = checked_chunk(g.chunk_size)?;
                if g.stripe_size < 4096
                    || !g.stripe_size.is_power_of_two()
                    || u64::from(g.stripe_size) > g.chunk_size
                {
                    return Err(GeometryError::StripeSize(g.stripe_size));
                }
                let min_disks = if g.level == Level::Raid6 { 4 } else { 2 };
                if g.raid_disks < min_disks {
                    return Err(GeometryError::RaidDisks {
                        level: g.level,
                        raid_disks: g.raid_disks,
                    });
                }
                let algorithm = match g.level {
                    // raid4 ignores the algorithm (raid5_compute_sector `case 4`).
                    Level::Raid4 => Raid5Algorithm::ParityN,
                    Level::Raid5 => Raid5Algorithm::from_layout(g.layout)
                        .filter(|a| a.valid_for_raid5())
                        .ok_or(GeometryError::Layout {
                            level: g.level,
                            layout: g.layout,
                        })?,
                    _ => Raid5Algorithm::from_layout(g.layout)
                        .filter(|a| a.valid_for_raid6())
                        .ok_or(GeometryError::Layout {
                            level: g.level,
                            layout: g.layout,
                        })?,
                };
                Kind::Parity(Raid5Conf::new(
                    g.level,
                    algorithm,
                    g.raid_disks,
                    chunk,
                    u64::from(g.stripe_size) / SECTOR_SIZE,
                    g.component_size,
                ))
            }
            Level::Raid10 => {
                let chunk = checked_chunk(g.chunk_size)?;
                let layout = Raid10Layout::decode(g.layout)?;
                Kind::Raid10(Raid10Conf::new(
                    layout,
                    g.layout,
                    g.raid_disks,
                    chunk,
                    g.component_size,
                )?)
            }
        };
        Ok(ArrayMap { geometry, kind })
    }

    /// The geometry this map was built from.
    pub fn geometry(&self) -> &ArrayGeometry {
        &self.geometry
    }

    /// The raid4/5/6 configuration, if this is a parity array.
    pub fn raid5(&self) -> Option<&Raid5Conf> {
        match &self.kind {
            Kind::Parity(c) => Some(c),
            _ => None,
        }
    }

    /// The raid10 configuration, if this is a raid10 array.
    pub fn raid10(&self) -> Option<&Raid10Conf> {
        match &self.kind {
            Kind::Raid10(c) => Some(c),
            _ => None,
        }
    }

    /// What the bitmap covers, in sectors: `mddev->resync_max_sectors`, which is the
    /// bitmap superblock's `sync_size`.
    ///
    /// * raid1: `mddev->dev_sectors` (set by `md_run`: "may be over-ridden by personality").
    /// * raid4/5/6: `dev_sectors` rounded down to the chunk (`raid5_run`:
    ///   `mddev->dev_sectors &= ~(chunk_sectors - 1); resync_max_sectors = dev_sectors`).
    /// * raid10: the array size, `raid10_size(mddev, 0, 0)` (`raid10_run`).
    pub fn sync_size(&self) -> u64 {
        match &self.kind {
            Kind::Raid1 { dev_sectors } => *dev_sectors,
            Kind::Parity(c) => c.dev_sectors(),
            Kind::Raid10(c) => c.array_sectors(),
        }
    }

    /// The array size in sectors (`pers->size(mddev, 0, 0)`: `raid1_size`, `raid5_size`,
    /// `raid10_size`).
    pub fn array_sectors(&self) -> u64 {
        match &self.kind {
            Kind::Raid1 { dev_sectors } => *dev_sectors,
            Kind::Parity(c) => c.dev_sectors() * u64::from(c.data_disks()),
            Kind::Raid10(c) => c.array_sectors(),
        }
    }

    /// Per-member data sectors actually used (`mddev->dev_sectors` after the personality ran).
    pub fn dev_sectors(&self) -> u64 {
        match &self.kind {
            Kind::Raid1 { dev_sectors } => *dev_sectors,
            Kind::Parity(c) => c.dev_sectors(),
            Kind::Raid10(c) => c.dev_sectors(),
        }
    }

    /// Number of bitmap chunks (bits) for a bitmap with this `chunkshift`
    /// (log2 of the bitmap chunk in sectors): `DIV_ROUND_UP(resync_max_sectors, 1 << chunkshift)`
    /// as in `md_bitmap_resize`.
    pub fn bitmap_chunks(&self, chunkshift: u32) -> u64 {
        self.sync_size().div_ceil(1u64 << chunkshift)
    }
}

fn checked_chunk(chunk_size: u64) -> Result<u64, GeometryError> {
    if chunk_size < 4096 || !chunk_size.is_power_of_two() {
        return Err(GeometryError::ChunkSize(chunk_size));
    }
    Ok(chunk_size / SECTOR_SIZE)
}
