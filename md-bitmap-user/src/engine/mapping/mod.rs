//! Mapping from array writes to the bitmap start/end-write calls the kernel makes, per md
//! personality, and back from bitmap chunks to the member I/O a resync does.
//!
//! Units: every `offset`/`sectors`/`sector` is in 512-byte sectors; sizes named `*_size` or
//! `bytes` are bytes. Member sectors are relative to the member's `data_offset`.
//!
//! Where a bitmap offset lives:
//! * raid1: array sector = member sector (the chunk covers the same bytes on every member);
//! * raid4/5/6: member sector (`sh->sector`, or `raid5_bitmap_sector()` output);
//! * raid10: array ("virtual") sector (`r10_bio->sector`).
//!
//! Accounting by kernel version ([`Accounting`]):
//! * ≤6.13 without the Feb 2025 stable backport: per r1_bio / r10_bio / (stripe_head, data
//!   device) — [`Accounting::PerStripe`];
//! * ≥6.14 and 6.6.y / 6.12.y / 6.13.y with the backport: per bio in `md_account_bio()` —
//!   [`Accounting::PerBio`]. For raid1 and raid10 both give the same calls (the bio is
//!   accounted after the personality's splits); they differ for raid4/5/6.
//!
//! Kernel quirks reproduced on purpose (a model that "fixed" them would disagree with the
//! on-disk bitmap):
//! * raid10 offset layouts whose near copies wrap past the last member, buggy far sets
//!   (`layout >> 17 == 1`) and far sets with a larger last set place copies that
//!   `raid10_find_virt()` does not map back ([`Raid10Conf::copies`] follows
//!   `__raid10_find_phys()` regardless).
//!
//! Entry points: build an [`ArrayMap`] from an [`ArrayGeometry`], then call
//! [`ArrayMap::write_calls`], [`chunks_touched`], [`ArrayMap::sync_size`] and
//! [`ArrayMap::resync_extents`].

mod calls;
mod geometry;
pub mod raid10;
pub mod raid5;
mod resync;

#[cfg(test)]
mod tests;

pub use calls::{
    Accounting, BARRIER_UNIT_SECTOR_SIZE, BitmapCall, CallOptions, QueueLimits,
    RAID1_WRITE_BEHIND_MAX_SECTORS, RAID5_MAX_REQ_STRIPES, WriteCalls, chunks_touched,
};
pub use geometry::{
    ArrayGeometry, ArrayMap, DEFAULT_STRIPE_SIZE, GeometryError, Level, SECTOR_SIZE,
};
pub use raid5::{Raid5Algorithm, Raid5Conf, Raid5Location};
pub use raid10::{FarSetVariant, Raid10Conf, Raid10Copy, Raid10Layout};
pub use resync::{ResyncAccess, ResyncExtent};
