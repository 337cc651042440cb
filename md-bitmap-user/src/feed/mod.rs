//! The live feed: finds the running kernel's bitmap functions, loads and attaches md-bitmap's eBPF
//! programs, and decodes their ring-buffer records into [`FeedEvent`]s.
//!
//! Nothing here interprets the bitmap: the feed says what the kernel did (a start-write on
//! `[offset, offset + sectors)` of some array's bitmap, a bio queued on md0) and the engine
//! decides what that means for the counters.
pub mod btf;
pub mod ebpf;
pub mod kstate;
pub mod progstats;
pub mod record;
pub mod symbols;

pub use record::FeedEvent;
pub use symbols::{BitmapAbi, KernelSymbols};
