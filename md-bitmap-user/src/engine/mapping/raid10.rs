//! raid10 address mapping, mirroring drivers/md/raid10.c (`setup_geo`, `calc_sectors`,
//! `raid10_size`, `__raid10_find_phys`, `raid10_find_virt`).
//!
//! Sectors are 512-byte units. raid10's bitmap lives in array ("virtual") address space.

use super::geometry::{GeometryError, Level};

/// How far copies are grouped into sets: `layout >> 17` in `setup_geo()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FarSetVariant {
    /// 0: "original layout": one far set spanning all devices (`far_set_size = raid_disks`).
    Original,
    /// 1 (bit 0x20000): the buggy "improved" layout, `far_set_size = raid_disks / far_copies`.
    Buggy,
    /// 2 (bit 0x40000): the fixed "improved" layout, `far_set_size = far_copies * near_copies`.
    Fixed,
}

/// A decoded raid10 `md/layout` number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Raid10Layout {
    /// `layout & 0xff`.
    pub near_copies: u32,
    /// `(layout >> 8) & 0xff`.
    pub far_copies: u32,
    /// `layout & 0x10000`: "offset" instead of "far" placement of the far copies.
    pub far_offset: bool,
    /// `layout >> 17`.
    pub far_sets: FarSetVariant,
}

impl Raid10Layout {
    /// Decodes like `setup_geo()`: rejects `layout >> 19`, zero near/far counts and unknown
    /// far-set variants.
    pub fn decode(layout: u32) -> Result<Self, GeometryError> {
        let bad = GeometryError::Layout {
            level: Level::Raid10,
            layout,
        };
        if layout >> 19 != 0 {
            return Err(bad);
        }
        let near_copies = layout & 0xff;
        let far_copies = (layout >> 8) & 0xff;
        if near_copies == 0 || far_copies == 0 {
            return Err(bad);
        }
        let far_sets = match layout >> 17 {
            0 => FarSetVariant::Original,
            1 => FarSetVariant::Buggy,
            2 => FarSetVariant::Fixed,
            _ => return Err(bad),
        };
        Ok(Raid10Layout {
            near_copies,
            far_copies,
            far_offset: layout & (1 << 16) != 0,
            far_sets,
        })
    }

    /// `near_copies * far_copies` (`conf->copies`).
    pub fn copies(&self) -> u32 {
        self.near_copies * self.far_copies
    }
}

/// One copy of an array sector: `r10bio->devs[slot]` after `__raid10_find_phys()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raid10Copy {
    /// Slot in `r10bio->devs[]` (0 = first near copy, then its far copies, ...).
    pub slot: u32,
    /// Member index (`devnum`).
    pub dev: u32,
    /// Member sector relative to the data offset (`addr`).
    pub sector: u64,
}

/// A raid10 array's mapping parameters (`struct geom` plus `conf->dev_sectors`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raid10Conf {
    layout: Raid10Layout,
    raid_disks: u32,
    chunk_shift: u32,
    far_set_size: u32,
    stride: u64,
    dev_sectors: u64,
}

impl Raid10Conf {
    /// Builds the geometry like `setup_conf()` + `calc_sectors(conf, component_size)`.
    ///
    /// `layout_raw` is only used in errors; `chunk_sectors` must be a power of two.
    pub fn new(
        layout: Raid10Layout,
        layout_raw: u32,
        raid_disks: u32,
        chunk_sectors: u64,
        component_size: u64,
    ) -> Result<Self, GeometryError> {
        let copies = layout.copies();
        // setup_conf: "if (copies < 2 || copies > mddev->raid_disks)" -> unsupported layout.
        if copies < 2 || copies > raid_disks {
            return Err(GeometryError::Raid10Copies {
                layout: layout_raw,
                copies,
                raid_disks,
            });
        }
        let far_set_size = match layout.far_sets {
            FarSetVariant::Original => raid_disks,
            FarSetVariant::Buggy => raid_disks / layout.far_copies,
            FarSetVariant::Fixed => layout.far_copies * layout.near_copies,
        };
        if far_set_size == 0 || far_set_size > raid_disks {
            return Err(GeometryError::Raid10Copies {
                layout: layout_raw,
                copies,
                raid_disks,
            });
        }
        let mut conf = Raid10Conf {
            layout,
            raid_disks,
            chunk_shift: chunk_sectors.trailing_zeros(),
            far_set_size,
            stride: 0,
            dev_sectors: 0,
        };
        conf.calc_sectors(component_size);
        Ok(conf)
    }

    /// Mirrors `calc_sectors()`: sets `dev_sectors` (per-member sectors used) and `stride`.
    fn calc_sectors(&mut self, size: u64) {
        let nc = u64::from(self.layout.near_copies);
        let fc = u64::from(self.layout.far_copies);
        let rd = u64::from(self.raid_disks);
        let mut size = size >> self.chunk_shift;
        size /= fc;
        size *= rd;
        size /= nc;
        // 'size' is now the number of chunks in the array; "used chunks per device":
        size *= u64::from(self.layout.copies());
        size = size.div_ceil(rd);
        self.dev_sectors = size << self.chunk_shift;
        if self.layout.far_offset {
            self.stride = 1 << self.chunk_shift;
        } else {
            size /= fc;
            self.stride = size << self.chunk_shift;
        }
    }

    /// The decoded layout.
    pub fn layout(&self) -> Raid10Layout {
        self.layout
    }

    /// Member count (`geo->raid_disks`).
    pub fn raid_disks(&self) -> u32 {
        self.raid_disks
    }

    /// Chunk size in sectors.
    pub fn chunk_sectors(&self) -> u64 {
        1 << self.chunk_shift
    }

    /// `geo->far_set_size`.
    pub fn far_set_size(&self) -> u32 {
        self.far_set_size
    }

    /// `geo->stride`: member-sector distance between far copies.
    pub fn stride(&self) -> u64 {
        self.stride
    }

    /// `conf->dev_sectors`: per-member sectors used (sysfs `component_size` after start).
    pub fn dev_sectors(&self) -> u64 {
        self.dev_sectors
    }

    /// Mirrors `raid10_size(mddev, 0, 0)`: the array size in sectors, which is also the
    /// bitmap's `sync_size` (`raid10_run`: `mddev->resync_max_sectors = size`).
    pub fn array_sectors(&self) -> u64 {
        let mut size = self.dev_sectors >> self.chunk_shift;
        size /= u64::from(self.layout.far_copies);
        size *= u64::from(self.raid_disks);
        size /= u64::from(self.layout.near_copies);
        size << self.chunk_shift
    }

    /// The condition under which `raid10_make_request()` cuts a bio at a chunk boundary:
    /// `near_copies < raid_disks`.
    pub fn splits_at_chunks(&self) -> bool {
        self.layout.near_copies < self.raid_disks
    }

    /// Mirrors `__raid10_find_phys()`: every copy of array sector `sector`, in
    /// `r10bio->devs[]` slot order.
    pub fn copies(&self, sector: u64) -> Raid10Copies<'_> {
        let chunk_mask = (1u64 << self.chunk_shift) - 1;
        let chunk = (sector >> self.chunk_shift) * u64::from(self.layout.near_copies);
        let mut stripe = chunk / u64::from(self.raid_disks);
        let dev = (chunk % u64::from(self.raid_disks)) as u32;
        if self.layout.far_offset {
            stripe *= u64::from(self.layout.far_copies);
        }
        let base = (sector & chunk_mask) + (stripe << self.chunk_shift);
        Raid10Copies {
            conf: self,
            n: 0,
            f: 0,
            slot: 0,
            dev,
            sector: base,
            d: dev,
            s: base,
        }
    }

    /// Mirrors `raid10_find_virt(conf, sector, dev)`: the array sector whose copy is at member
    /// `dev`, member sector `sector`.
    pub fn find_virt(&self, sector: u64, dev: u32) -> u64 {
        let nc = i64::from(self.layout.near_copies);
        let fc = u64::from(self.layout.far_copies);
        let rd = i64::from(self.raid_disks);
        let fss = i64::from(self.far_set_size);
        let mut dev = i64::from(dev);
        let mut far_set_start = (dev / fss) * fss;
        let mut far_set_size = fss;
        if rd % fss != 0 {
            let last_far_set_start = (rd / fss - 1) * fss;
            if dev >= last_far_set_start {
                far_set_size = fss + rd % fss;
                far_set_start = last_far_set_start;
            }
        }
        let chunk_mask = (1u64 << self.chunk_shift) - 1;
        let offset = sector & chunk_mask;
        let chunk;
        if self.layout.far_offset {
            let c = sector >> self.chunk_shift;
            let f = (c % fc) as i64;
            chunk = c / fc;
            dev -= f * nc;
            if dev < far_set_start {
                dev += far_set_size;
            }
        } else {
            let mut sector = sector;
            while self.stride > 0 && sector >= self.stride {
                sector -= self.stride;
                if dev < nc + far_set_start {
                    dev += far_set_size - nc;
                } else {
                    dev -= nc;
                }
            }
            chunk = sector >> self.chunk_shift;
        }
        // sector_t arithmetic: a negative `dev` wraps, as in C.
        let vchunk = chunk.wrapping_mul(rd as u64).wrapping_add(dev as u64) / nc as u64;
        (vchunk << self.chunk_shift).wrapping_add(offset)
    }
}

/// Iterator over the copies of one array sector; see [`Raid10Conf::copies`].
#[derive(Debug, Clone)]
pub struct Raid10Copies<'a> {
    conf: &'a Raid10Conf,
    n: u32,
    f: u32,
    slot: u32,
    /// First-copy device of the current near copy (`dev` in the kernel loop).
    dev: u32,
    /// First-copy sector of the current near copy (`sector` in the kernel loop).
    sector: u64,
    /// Current far copy (`d`, `s`).
    d: u32,
    s: u64,
}

impl Iterator for Raid10Copies<'_> {
    type Item = Raid10Copy;

    fn next(&mut self) -> Option<Raid10Copy> {
        let c = self.conf;
        let nc = c.layout.near_copies;
        let fc = c.layout.far_copies;
        if self.n >= nc {
            return None;
        }
        if self.f == 0 {
            self.d = self.dev;
            self.s = self.sector;
        } else {
            let rd = i64::from(c.raid_disks);
            let fss = i64::from(c.far_set_size);
            let last_far_set_start = (rd / fss - 1) * fss;
            let last_far_set_size = fss + rd % fss;
            let mut d = i64::from(self.d);
            let set = d / fss;
            d += i64::from(nc);
            if rd % fss != 0 && d > last_far_set_start {
                d -= last_far_set_start;
                d %= last_far_set_size;
                d += last_far_set_start;
            } else {
                d %= fss;
                d += fss * set;
            }
            self.d = d as u32;
            self.s += c.stride;
        }
        let out = Raid10Copy {
            slot: self.slot,
            dev: self.d,
            sector: self.s,
        };
        self.slot += 1;
        self.f += 1;
        if self.f >= fc {
            self.f = 0;
            self.n += 1;
            self.dev += 1;
            if self.dev >= c.raid_disks {
                self.dev = 0;
                self.sector += 1 << c.chunk_shift;
            }
        }
        Some(out)
    }
}
