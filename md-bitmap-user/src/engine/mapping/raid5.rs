//! raid4/5/6 address mapping, mirroring drivers/md/raid5.c.
//!
//! Sectors are 512-byte units. "Logical" sectors are array addresses (`r_sector`); "device"
//! sectors are member addresses relative to the member's `data_offset` (`sh->sector`).

use super::geometry::Level;

/// The raid5/6 `ALGORITHM_*` layouts (drivers/md/raid5.h), i.e. `md/layout` for raid5/6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Raid5Algorithm {
    /// `ALGORITHM_LEFT_ASYMMETRIC` (0): rotating parity N with data restart.
    LeftAsymmetric,
    /// `ALGORITHM_RIGHT_ASYMMETRIC` (1): rotating parity 0 with data restart.
    RightAsymmetric,
    /// `ALGORITHM_LEFT_SYMMETRIC` (2): rotating parity N with data continuation (md default).
    LeftSymmetric,
    /// `ALGORITHM_RIGHT_SYMMETRIC` (3): rotating parity 0 with data continuation.
    RightSymmetric,
    /// `ALGORITHM_PARITY_0` (4): P (and Q) are the first devices.
    Parity0,
    /// `ALGORITHM_PARITY_N` (5): P (and Q) are the last devices; also `ALGORITHM_PARITY_N_6`.
    ParityN,
    /// `ALGORITHM_ROTATING_ZERO_RESTART` (8): DDF PRL=6 RLQ=1.
    RotatingZeroRestart,
    /// `ALGORITHM_ROTATING_N_RESTART` (9): DDF PRL=6 RLQ=2.
    RotatingNRestart,
    /// `ALGORITHM_ROTATING_N_CONTINUE` (10): DDF PRL=6 RLQ=3.
    RotatingNContinue,
    /// `ALGORITHM_LEFT_ASYMMETRIC_6` (16): raid5 left-asymmetric plus Q on the last device.
    LeftAsymmetric6,
    /// `ALGORITHM_RIGHT_ASYMMETRIC_6` (17).
    RightAsymmetric6,
    /// `ALGORITHM_LEFT_SYMMETRIC_6` (18).
    LeftSymmetric6,
    /// `ALGORITHM_RIGHT_SYMMETRIC_6` (19).
    RightSymmetric6,
    /// `ALGORITHM_PARITY_0_6` (20).
    Parity06,
}

impl Raid5Algorithm {
    /// Decodes an `ALGORITHM_*` number; `None` for numbers raid5.h does not define.
    pub fn from_layout(layout: u32) -> Option<Self> {
        use Raid5Algorithm::*;
        Some(match layout {
            0 => LeftAsymmetric,
            1 => RightAsymmetric,
            2 => LeftSymmetric,
            3 => RightSymmetric,
            4 => Parity0,
            5 => ParityN,
            8 => RotatingZeroRestart,
            9 => RotatingNRestart,
            10 => RotatingNContinue,
            16 => LeftAsymmetric6,
            17 => RightAsymmetric6,
            18 => LeftSymmetric6,
            19 => RightSymmetric6,
            20 => Parity06,
            _ => return None,
        })
    }

    /// The `ALGORITHM_*` number.
    pub fn layout(self) -> u32 {
        use Raid5Algorithm::*;
        match self {
            LeftAsymmetric => 0,
            RightAsymmetric => 1,
            LeftSymmetric => 2,
            RightSymmetric => 3,
            Parity0 => 4,
            ParityN => 5,
            RotatingZeroRestart => 8,
            RotatingNRestart => 9,
            RotatingNContinue => 10,
            LeftAsymmetric6 => 16,
            RightAsymmetric6 => 17,
            LeftSymmetric6 => 18,
            RightSymmetric6 => 19,
            Parity06 => 20,
        }
    }

    /// `algorithm_valid_raid5()`: layouts 0..=5.
    pub fn valid_for_raid5(self) -> bool {
        self.layout() <= 5
    }

    /// `algorithm_valid_raid6()`: 0..=5, 8..=10 and 16..=20.
    pub fn valid_for_raid6(self) -> bool {
        true
    }
}

/// Where `raid5_compute_sector()` puts one array sector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raid5Location {
    /// Member index holding the data (`*dd_idx`).
    pub dd_idx: u32,
    /// Member holding P for this stripe (`sh->pd_idx`).
    pub pd_idx: u32,
    /// Member holding Q (raid6 only; `sh->qd_idx`, -1 in the kernel otherwise).
    pub qd_idx: Option<u32>,
    /// `sh->ddf_layout`: set for the three DDF rotating layouts.
    pub ddf_layout: bool,
    /// Sector on the member, relative to its data offset (`new_sector`).
    pub sector: u64,
}

/// A raid4/5/6 array's mapping parameters (`struct r5conf` fields used by the mapping).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raid5Conf {
    level: Level,
    algorithm: Raid5Algorithm,
    raid_disks: u32,
    chunk_sectors: u64,
    stripe_sectors: u64,
    dev_sectors: u64,
}

impl Raid5Conf {
    /// A raid4/5/6 configuration. `chunk_sectors` and `stripe_sectors` must be powers of two
    /// with `stripe_sectors <= chunk_sectors` ([`super::ArrayMap::new`] checks this).
    /// `dev_sectors` is rounded down to the chunk as `raid5_run` does.
    pub fn new(
        level: Level,
        algorithm: Raid5Algorithm,
        raid_disks: u32,
        chunk_sectors: u64,
        stripe_sectors: u64,
        dev_sectors: u64,
    ) -> Self {
        Raid5Conf {
            level,
            algorithm,
            raid_disks,
            chunk_sectors,
            stripe_sectors,
            dev_sectors: dev_sectors & !(chunk_sectors - 1),
        }
    }

    /// The level (4, 5 or 6).
    pub fn level(&self) -> Level {
        self.level
    }

    /// The layout algorithm (raid4 reports [`Raid5Algorithm::ParityN`]).
    pub fn algorithm(&self) -> Raid5Algorithm {
        self.algorithm
    }

    /// Member count (`conf->raid_disks`).
    pub fn raid_disks(&self) -> u32 {
        self.raid_disks
    }

    /// Chunk size in sectors (`conf->chunk_sectors`).
    pub fn chunk_sectors(&self) -> u64 {
        self.chunk_sectors
    }

    /// `RAID5_STRIPE_SECTORS(conf)`: sectors per stripe_head page (8 with 4 KiB pages).
    pub fn stripe_sectors(&self) -> u64 {
        self.stripe_sectors
    }

    /// Per-member sectors in use (`mddev->dev_sectors`, chunk aligned).
    pub fn dev_sectors(&self) -> u64 {
        self.dev_sectors
    }

    /// `conf->max_degraded`: 2 for raid6, 1 otherwise.
    pub fn max_degraded(&self) -> u32 {
        if self.level == Level::Raid6 { 2 } else { 1 }
    }

    /// `raid_disks - max_degraded`.
    pub fn data_disks(&self) -> u32 {
        self.raid_disks - self.max_degraded()
    }

    /// Sectors of array data in one full stripe row: `chunk_sectors * data_disks`
    /// (the `sectors_per_chunk` of `raid5_bitmap_sector`).
    pub fn data_stripe_sectors(&self) -> u64 {
        self.chunk_sectors * u64::from(self.data_disks())
    }

    /// Mirrors `raid5_compute_sector(conf, r_sector, previous = 0, &dd_idx, sh)`: the member and
    /// member sector holding array sector `r_sector`, plus the stripe's P/Q members.
    pub fn compute_sector(&self, r_sector: u64) -> Raid5Location {
        use Raid5Algorithm::*;
        let sectors_per_chunk = self.chunk_sectors;
        let raid_disks = i64::from(self.raid_disks);
        let data_disks = i64::from(self.data_disks());

        // chunk_offset = sector_div(r_sector, sectors_per_chunk); chunk_number = r_sector;
        let chunk_offset = r_sector % sectors_per_chunk;
        let chunk_number = r_sector / sectors_per_chunk;
        // stripe = chunk_number; *dd_idx = sector_div(stripe, data_disks);
        let stripe = chunk_number / data_disks as u64;
        let mut dd_idx = (chunk_number % data_disks as u64) as i64;
        let stripe2 = stripe;
        let rem = |s: u64, d: i64| (s % d as u64) as i64;

        let pd_idx: i64;
        let mut qd_idx: i64 = -1;
        let mut ddf_layout = false;
        match self.level {
            Level::Raid4 => {
                pd_idx = data_disks;
            }
            Level::Raid5 => match self.algorithm {
                LeftAsymmetric => {
                    pd_idx = data_disks - rem(stripe2, raid_disks);
                    if dd_idx >= pd_idx {
                        dd_idx += 1;
                    }
                }
                RightAsymmetric => {
                    pd_idx = rem(stripe2, raid_disks);
                    if dd_idx >= pd_idx {
                        dd_idx += 1;
                    }
                }
                LeftSymmetric => {
                    pd_idx = data_disks - rem(stripe2, raid_disks);
                    dd_idx = (pd_idx + 1 + dd_idx) % raid_disks;
                }
                RightSymmetric => {
                    pd_idx = rem(stripe2, raid_disks);
                    dd_idx = (pd_idx + 1 + dd_idx) % raid_disks;
                }
                Parity0 => {
                    pd_idx = 0;
                    dd_idx += 1;
                }
                ParityN => {
                    pd_idx = data_disks;
                }
                // ArrayMap::new rejects these for raid5 (the kernel would BUG()).
                _ => unreachable!("raid6-only algorithm on raid5"),
            },
            Level::Raid6 => match self.algorithm {
                LeftAsymmetric => {
                    pd_idx = raid_disks - 1 - rem(stripe2, raid_disks);
                    qd_idx = pd_idx + 1;
                    if pd_idx == raid_disks - 1 {
                        dd_idx += 1; // Q D D D P
                        qd_idx = 0;
                    } else if dd_idx >= pd_idx {
                        dd_idx += 2; // D D P Q D
                    }
                }
                RightAsymmetric => {
                    pd_idx = rem(stripe2, raid_disks);
                    qd_idx = pd_idx + 1;
                    if pd_idx == raid_disks - 1 {
                        dd_idx += 1; // Q D D D P
                        qd_idx = 0;
                    } else if dd_idx >= pd_idx {
                        dd_idx += 2; // D D P Q D
                    }
                }
                LeftSymmetric => {
                    pd_idx = raid_disks - 1 - rem(stripe2, raid_disks);
                    qd_idx = (pd_idx + 1) % raid_disks;
                    dd_idx = (pd_idx + 2 + dd_idx) % raid_disks;
                }
                RightSymmetric => {
                    pd_idx = rem(stripe2, raid_disks);
                    qd_idx = (pd_idx + 1) % raid_disks;
                    dd_idx = (pd_idx + 2 + dd_idx) % raid_disks;
                }
                Parity0 => {
                    pd_idx = 0;
                    qd_idx = 1;
                    dd_idx += 2;
                }
                ParityN => {
                    pd_idx = data_disks;
                    qd_idx = data_disks + 1;
                }
                RotatingZeroRestart => {
                    // Exactly the same as RIGHT_ASYMMETRIC, but the order of blocks for
                    // computing Q is different.
                    pd_idx = rem(stripe2, raid_disks);
                    qd_idx = pd_idx + 1;
                    if pd_idx == raid_disks - 1 {
                        dd_idx += 1;
                        qd_idx = 0;
                    } else if dd_idx >= pd_idx {
                        dd_idx += 2;
                    }
                    ddf_layout = true;
                }
                RotatingNRestart => {
                    // Same as left_asymmetric, but the first stripe is D D D P Q rather than
                    // Q D D D P.
                    pd_idx = raid_disks - 1 - rem(stripe2 + 1, raid_disks);
                    qd_idx = pd_idx + 1;
                    if pd_idx == raid_disks - 1 {
                        dd_idx += 1;
                        qd_idx = 0;
                    } else if dd_idx >= pd_idx {
                        dd_idx += 2;
                    }
                    ddf_layout = true;
                }
                RotatingNContinue => {
                    // Same as left_symmetric but Q is before P.
                    pd_idx = raid_disks - 1 - rem(stripe2, raid_disks);
                    qd_idx = (pd_idx + raid_disks - 1) % raid_disks;
                    dd_idx = (pd_idx + 1 + dd_idx) % raid_disks;
                    ddf_layout = true;
                }
                LeftAsymmetric6 => {
                    // RAID5 left_asymmetric, with Q on last device.
                    pd_idx = data_disks - rem(stripe2, raid_disks - 1);
                    if dd_idx >= pd_idx {
                        dd_idx += 1;
                    }
                    qd_idx = raid_disks - 1;
                }
                RightAsymmetric6 => {
                    pd_idx = rem(stripe2, raid_disks - 1);
                    if dd_idx >= pd_idx {
                        dd_idx += 1;
                    }
                    qd_idx = raid_disks - 1;
                }
                LeftSymmetric6 => {
                    pd_idx = data_disks - rem(stripe2, raid_disks - 1);
                    dd_idx = (pd_idx + 1 + dd_idx) % (raid_disks - 1);
                    qd_idx = raid_disks - 1;
                }
                RightSymmetric6 => {
                    pd_idx = rem(stripe2, raid_disks - 1);
                    dd_idx = (pd_idx + 1 + dd_idx) % (raid_disks - 1);
                    qd_idx = raid_disks - 1;
                }
                Parity06 => {
                    pd_idx = 0;
                    dd_idx += 1;
                    qd_idx = raid_disks - 1;
                }
            },
            Level::Raid1 | Level::Raid10 => unreachable!("not a parity level"),
        }

        Raid5Location {
            dd_idx: dd_idx as u32,
            pd_idx: pd_idx as u32,
            qd_idx: (qd_idx >= 0).then_some(qd_idx as u32),
            ddf_layout,
            // new_sector = (sector_t)stripe * sectors_per_chunk + chunk_offset;
            sector: stripe * sectors_per_chunk + chunk_offset,
        }
    }

    /// P and Q members of the stripe row containing member sector `dev_sector`
    /// (`stripe_set_idx()`).
    pub fn parity_members(&self, dev_sector: u64) -> (u32, Option<u32>) {
        let loc = self.compute_sector(self.row_first_logical(dev_sector));
        (loc.pd_idx, loc.qd_idx)
    }

    /// `stripe_set_idx()`'s argument: the array sector of data index 0 at member sector
    /// `dev_sector`: `stripe * data_disks * chunk + chunk_offset`.
    fn row_first_logical(&self, dev_sector: u64) -> u64 {
        let stripe = dev_sector / self.chunk_sectors;
        let chunk_offset = dev_sector % self.chunk_sectors;
        stripe * u64::from(self.data_disks()) * self.chunk_sectors + chunk_offset
    }

    /// Mirrors `raid5_compute_blocknr(sh, i, previous = 0)`: the array sector stored on member
    /// `disk` at member sector `dev_sector`, or `None` for a P/Q block (the kernel returns 0) or
    /// when the kernel's own consistency check fails ("compute_blocknr: map not correct").
    pub fn compute_blocknr(&self, dev_sector: u64, disk: u32) -> Option<u64> {
        use Raid5Algorithm::*;
        let raid_disks = i64::from(self.raid_disks);
        let data_disks = i64::from(self.data_disks());
        let sectors_per_chunk = self.chunk_sectors;
        let (pd, qd) = self.parity_members(dev_sector);
        let pd_idx = i64::from(pd);
        let qd_idx = qd.map_or(-1, i64::from);
        let chunk_offset = dev_sector % sectors_per_chunk;
        let stripe = dev_sector / sectors_per_chunk;
        let mut i = i64::from(disk);
        if i == pd_idx {
            return None;
        }
        match self.level {
            Level::Raid4 => {}
            Level::Raid5 => match self.algorithm {
                LeftAsymmetric | RightAsymmetric => {
                    if i > pd_idx {
                        i -= 1;
                    }
                }
                LeftSymmetric | RightSymmetric => {
                    if i < pd_idx {
                        i += raid_disks;
                    }
                    i -= pd_idx + 1;
                }
                Parity0 => i -= 1,
                ParityN => {}
                _ => unreachable!("raid6-only algorithm on raid5"),
            },
            Level::Raid6 => {
                if i == qd_idx {
                    return None; // It is the Q disk
                }
                match self.algorithm {
                    LeftAsymmetric | RightAsymmetric | RotatingZeroRestart | RotatingNRestart => {
                        if pd_idx == raid_disks - 1 {
                            i -= 1; // Q D D D P
                        } else if i > pd_idx {
                            i -= 2; // D D P Q D
                        }
                    }
                    LeftSymmetric | RightSymmetric => {
                        if pd_idx == raid_disks - 1 {
                            i -= 1; // Q D D D P
                        } else {
                            // D D P Q D
                            if i < pd_idx {
                                i += raid_disks;
                            }
                            i -= pd_idx + 2;
                        }
                    }
                    Parity0 => i -= 2,
                    ParityN => {}
                    RotatingNContinue => {
                        // Like left_symmetric, but P is before Q
                        if pd_idx == 0 {
                            i -= 1; // P D D D Q
                        } else {
                            // D D Q P D
                            if i < pd_idx {
                                i += raid_disks;
                            }
                            i -= pd_idx + 1;
                        }
                    }
                    LeftAsymmetric6 | RightAsymmetric6 => {
                        if i > pd_idx {
                            i -= 1;
                        }
                    }
                    LeftSymmetric6 | RightSymmetric6 => {
                        if i < pd_idx {
                            i += data_disks + 1;
                        }
                        i -= pd_idx + 1;
                    }
                    Parity06 => i -= 1,
                }
            }
            Level::Raid1 | Level::Raid10 => unreachable!("not a parity level"),
        }
        if i < 0 || i >= data_disks {
            return None;
        }
        let chunk_number = stripe * data_disks as u64 + i as u64;
        let r_sector = chunk_number * sectors_per_chunk + chunk_offset;
        let check = self.compute_sector(r_sector);
        (check.sector == dev_sector && check.dd_idx == disk).then_some(r_sector)
    }

    /// Mirrors `raid5_bitmap_sector()` (raid5.c, v6.14 and the Feb 2025 stable backports) with
    /// no reshape running: the member range `(offset, sectors)` that `md_bitmap_start()` passes
    /// to the bitmap for an array bio `(offset, sectors)`.
    ///
    /// The kernel rounds the array range out to whole data stripes (`sectors_per_chunk = chunk *
    /// data_disks`) and maps both ends to member sectors. The patch as posted upstream used the
    /// `round_down`/`round_up` bit-mask macros, which do not round for a data-disk count that is
    /// not a power of two; the kernel md-bitmap is tested on (Debian 6.12.117) rounds exactly:
    /// on a 4-disk raid5 its on-disk bits match exact rounding and contradict the masks
    /// (`tests/tests/kernel_ondisk.rs`), so this rounds exactly.
    pub fn bitmap_sector(&self, offset: u64, sectors: u64) -> (u64, u64) {
        let spc = self.data_stripe_sectors();
        let start = offset / spc * spc;
        let end = (offset + sectors).div_ceil(spc) * spc;
        let start = self.compute_sector(start).sector;
        let end = self.compute_sector(end).sector;
        // `*sectors = end - start` is unsigned long arithmetic in the kernel.
        (start, end.wrapping_sub(start))
    }

    /// Mirrors `raid5_bio_lowest_chunk_sector()` (v6.2+, backported to 6.1.y/6.0.y): the
    /// stripe-aligned array sector `raid5_make_request()` starts with for a bio
    /// `(bi_sector, bio_sectors)`.
    pub fn lowest_chunk_sector(&self, bi_sector: u64, bio_sectors: u64) -> u64 {
        let r_sector = bi_sector & !(self.stripe_sectors - 1);
        let loc = self.compute_sector(r_sector);
        let chunk_offset = loc.sector % self.chunk_sectors;
        if self.chunk_sectors - chunk_offset >= bio_sectors {
            return r_sector;
        }
        // Bio crosses to the next data disk. Check whether it's in the same chunk.
        let mut dd_idx = i64::from(loc.dd_idx) + 1;
        let pd = i64::from(loc.pd_idx);
        let qd = loc.qd_idx.map_or(-1, i64::from);
        while dd_idx == pd || dd_idx == qd {
            dd_idx += 1;
        }
        if dd_idx >= i64::from(self.raid_disks) {
            return r_sector;
        }
        r_sector + self.chunk_sectors - chunk_offset
    }
}
