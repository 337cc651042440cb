//! md-bitmap: a userspace mirror of the Linux md write-intent bitmap.
//!
//! Data flows one way (see `docs/architecture.md`): the kernel's events reach [`feed`], which turns
//! them into engine calls; [`engine`] models `drivers/md/md-bitmap.c` without doing any I/O;
//! [`ondisk`] reads md superblocks and bitmaps from members; views and exporters read snapshots.
pub mod agent;
pub mod alerts;
pub mod engine;
pub mod feed;
pub mod inspect;
pub mod mirror;
pub mod ondisk;
pub mod predict;
pub mod serve;
pub mod sysfs;
pub mod trace;
pub mod tui;
pub mod tune;
pub mod units;
