//! The member I/O a resync does for one bitmap chunk (the inverse direction of the mapping),
//! for a resync-cost predictor.

use super::geometry::{ArrayMap, Kind, SECTOR_SIZE};

/// What a resync does with one member byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResyncAccess {
    /// Read only.
    Read,
    /// Written unconditionally (raid1: every member except the one read from).
    Write,
    /// Read, and written only where the copy or parity turns out not to match
    /// (raid10 copies after the first; raid4/5/6 P and Q blocks).
    ReadThenWriteIfMismatch,
}

/// One member byte range touched by a resync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResyncExtent {
    /// Member index (`rdev->raid_disk`).
    pub member: u32,
    /// Byte offset on the member, relative to its data offset (add `data_offset * 512`).
    pub offset: u64,
    /// Length in bytes.
    pub bytes: u64,
    /// What the resync does there.
    pub access: ResyncAccess,
}

impl ArrayMap {
    /// The member ranges a resync of bitmap chunk `chunk` reads and writes, sorted by member
    /// and offset, adjacent ranges with the same access merged. `chunkshift` is log2 of the
    /// bitmap chunk in sectors. The chunk is clipped to [`ArrayMap::sync_size`]; a chunk past
    /// it gives nothing.
    ///
    /// * raid1 (`raid1_sync_request` / `sync_request_write` for `MD_RECOVERY_SYNC`): the chunk's
    ///   bytes at the same member offset; read from `raid1_source` (the kernel reads the
    ///   lowest-numbered In_sync member without bad blocks there that is not WriteMostly) and
    ///   written to every other member.
    /// * raid4/5/6 (`raid5_sync_request`, `handle_parity_checks5/6`): the chunk is a member
    ///   range; every member is read there, and P/Q blocks are rewritten where parity does not
    ///   match. Rows are split by which member holds P/Q.
    /// * raid10 (`raid10_sync_request` resync branch, `sync_request_write`): the chunk is an
    ///   array range; every copy of it is read (`__raid10_find_phys`) and copies other than the
    ///   first (slot 0, "the lowest numbered drive is authoritative") are rewritten where they
    ///   differ.
    ///
    /// Recovery onto a replaced or re-added member is not this: it reads one copy and writes
    /// only the recovering member.
    pub fn resync_extents(
        &self,
        chunk: u64,
        chunkshift: u32,
        raid1_source: u32,
    ) -> Vec<ResyncExtent> {
        let sync = self.sync_size();
        let a = chunk << chunkshift;
        if a >= sync {
            return Vec::new();
        }
        let b = ((chunk + 1) << chunkshift).min(sync);
        // (member, start sector, end sector, access)
        let mut raw: Vec<(u32, u64, u64, ResyncAccess)> = Vec::new();
        match &self.kind {
            Kind::Raid1 { .. } => {
                for m in 0..self.geometry().raid_disks {
                    let access = if m == raid1_source {
                        ResyncAccess::Read
                    } else {
                        ResyncAccess::Write
                    };
                    raw.push((m, a, b, access));
                }
            }
            Kind::Parity(c) => {
                let ch = c.chunk_sectors();
                let mut p = a;
                while p < b {
                    let e = ((p / ch + 1) * ch).min(b);
                    let (pd, qd) = c.parity_members(p);
                    for m in 0..c.raid_disks() {
                        let access = if m == pd || Some(m) == qd {
                            ResyncAccess::ReadThenWriteIfMismatch
                        } else {
                            ResyncAccess::Read
                        };
                        raw.push((m, p, e, access));
                    }
                    p = e;
                }
            }
            Kind::Raid10(c) => {
                let ch = c.chunk_sectors();
                let mut p = a;
                while p < b {
                    let e = ((p / ch + 1) * ch).min(b);
                    for copy in c.copies(p) {
                        let access = if copy.slot == 0 {
                            ResyncAccess::Read
                        } else {
                            ResyncAccess::ReadThenWriteIfMismatch
                        };
                        raw.push((copy.dev, copy.sector, copy.sector + (e - p), access));
                    }
                    p = e;
                }
            }
        }
        raw.sort_unstable_by_key(|&(m, s, _, _)| (m, s));
        let mut out: Vec<ResyncExtent> = Vec::new();
        for (m, s, e, access) in raw {
            if let Some(last) = out.last_mut()
                && last.member == m
                && last.access == access
                && last.offset + last.bytes == s * SECTOR_SIZE
            {
                last.bytes += (e - s) * SECTOR_SIZE;
                continue;
            }
            out.push(ResyncExtent {
                member: m,
                offset: s * SECTOR_SIZE,
                bytes: (e - s) * SECTOR_SIZE,
                access,
            });
        }
        out
    }
}
