//! Decoding ring-buffer [`Record`]s into [`FeedEvent`]s for the running kernel's ABI.
use std::borrow::Cow;

use md_bitmap_common::{Record, RecordKind};
use serde::Serialize;

use super::symbols::{BitmapAbi, WriteArgs};

/// A block device number as `major:minor`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct DevNum {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

impl DevNum {
    /// Decodes the kernel's internal `dev_t` (`major << 20 | minor`), as block tracepoints report it.
    pub fn from_kernel(dev: u32) -> Self {
        Self {
            major: dev >> 20,
            minor: dev & ((1 << 20) - 1),
        }
    }

    /// The kernel's internal encoding.
    pub fn to_kernel(self) -> u32 {
        md_bitmap_common::kernel_dev(self.major, self.minor)
    }

    /// Parses sysfs's `major:minor`.
    pub fn parse(s: &str) -> Option<Self> {
        let (a, b) = s.trim().split_once(':')?;
        Some(Self {
            major: a.parse().ok()?,
            minor: b.parse().ok()?,
        })
    }
}

impl std::fmt::Display for DevNum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// The operation of a bio from its `bi_opf` (`REQ_OP_*` in the low 8 bits), as blktrace's
/// rwbs letter: R(ead), W(rite), F(lush), D(iscard), Z (write zeroes), or N (other).
/// Borrowed, so that decoding a bio event allocates nothing.
fn rwbs(opf: u64) -> Cow<'static, str> {
    Cow::Borrowed(match opf & 0xff {
        0 => "R",
        1 => "W",
        2 => "F",
        3 => "D",
        9 => "Z",
        _ => "N",
    })
}

/// What happened, decoded for the running kernel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// The bitmap's start-write on `[offset, offset + sectors)` of bitmap space.
    StartWrite {
        /// Kernel address of the `struct bitmap` (6.1-6.11) or `struct mddev` (6.12+) it is for.
        owner: u64,
        /// First sector in bitmap space.
        offset: u64,
        /// Number of sectors.
        sectors: u64,
        /// Whether this is a write-behind write (kernels with the `behind` argument only).
        behind: Option<bool>,
    },
    /// The bitmap's end-write.
    EndWrite {
        /// As for start-write.
        owner: u64,
        /// First sector in bitmap space.
        offset: u64,
        /// Number of sectors.
        sectors: u64,
        /// The `success` argument (kernels before the Feb 2025 rework only).
        success: Option<bool>,
        /// The `behind` argument (same kernels).
        behind: Option<bool>,
        /// `mddev->degraded != 0` at the call, when the probe could read it.
        #[serde(skip_serializing_if = "Option::is_none")]
        degraded: Option<bool>,
    },
    /// Start-sync at `offset` (the kernel fills in the block count it covers).
    StartSync {
        /// As for start-write.
        owner: u64,
        /// Sector.
        offset: u64,
        /// The `degraded` argument.
        degraded: bool,
    },
    /// End-sync at `offset`.
    EndSync {
        /// As for start-write.
        owner: u64,
        /// Sector.
        offset: u64,
    },
    /// Close-sync (end of a resync).
    CloseSync {
        /// As for start-write.
        owner: u64,
    },
    /// Cond-end-sync up to `sector`.
    CondEndSync {
        /// As for start-write.
        owner: u64,
        /// Sector.
        sector: u64,
        /// The `force` argument.
        force: bool,
    },
    /// Entry of the bitmap daemon (which returns at once unless `daemon_sleep` has passed).
    DaemonWork {
        /// Kernel address of the `struct mddev`.
        mddev: u64,
    },
    /// Return of the bitmap daemon.
    DaemonDone {
        /// Kernel address of the `struct mddev`.
        mddev: u64,
        /// `bitmap->daemon_lastrun` after the call (jiffies), when md's offsets are known: it
        /// changed exactly when the daemon's time test passed.
        lastrun: Option<u64>,
    },
    /// Entry of the bitmap superblock update (writes page 0 of the bitmap).
    UpdateSb {
        /// As for start-write.
        owner: u64,
        /// `mddev->events` at the call, when md's offsets are known.
        events: Option<u64>,
    },
    /// Entry of the unplug function.
    Unplug {
        /// As for start-write.
        owner: u64,
    },
    /// A bio queued on a watched md device.
    BioQueue {
        /// The md device.
        dev: DevNum,
        /// First sector (array space).
        sector: u64,
        /// Length in sectors.
        sectors: u64,
        /// The block layer's `rwbs` string.
        rwbs: Cow<'static, str>,
        /// Kernel address of the `struct bio` (pairs its completion with it, and with the
        /// start-writes md made for it).
        #[serde(default)]
        bio: u64,
    },
    /// A bio completed on a watched md device.
    BioComplete {
        /// The md device.
        dev: DevNum,
        /// First sector.
        sector: u64,
        /// Length in sectors.
        sectors: u64,
        /// `rwbs`.
        rwbs: Cow<'static, str>,
        /// The bio's `bi_status` (0 on success).
        error: i32,
        /// Kernel address of the `struct bio`.
        #[serde(default)]
        bio: u64,
    },
    /// A bio of a watched md device remapped to a member.
    BioRemap {
        /// The md device.
        dev: DevNum,
        /// Sector on the md device.
        sector: u64,
        /// Length in sectors.
        sectors: u64,
        /// `rwbs`.
        rwbs: Cow<'static, str>,
        /// The member device.
        member: DevNum,
        /// Sector on the member.
        member_sector: u64,
    },
}

/// One decoded event with its timing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FeedEvent {
    /// CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    /// The kernel's jiffies at the event.
    pub jiffies: u64,
    /// CPU.
    pub cpu: u32,
    /// Thread id.
    pub tid: u32,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

impl FeedEvent {
    /// Decodes a record for the kernel described by `abi`; `None` for an unknown kind, and for
    /// [`RecordKind::ThreadRunEnd`], which is no bitmap event (only `md-bitmap record` attaches
    /// its probe and reads it from the raw record).
    pub fn decode(rec: &Record, abi: &BitmapAbi) -> Option<Self> {
        let a = rec.args;
        let plain = abi.write_args == WriteArgs::Plain;
        let kind = match RecordKind::from_u32(rec.kind)? {
            RecordKind::StartWrite => EventKind::StartWrite {
                owner: a[0],
                offset: a[1],
                sectors: a[2],
                behind: (!plain).then_some(a[3] as u32 != 0),
            },
            RecordKind::EndWrite => EventKind::EndWrite {
                owner: a[0],
                offset: a[1],
                sectors: a[2],
                success: (!plain).then_some(a[3] as u32 != 0),
                behind: (!plain).then_some(a[4] as u32 != 0),
                degraded: (rec.dev != 0).then_some(rec.dev > 1),
            },
            RecordKind::StartSync => EventKind::StartSync {
                owner: a[0],
                offset: a[1],
                // `int degraded` (6.1) / `bool degraded` (6.12): the low byte is enough for both.
                degraded: a[3] as u8 != 0,
            },
            RecordKind::EndSync => EventKind::EndSync {
                owner: a[0],
                offset: a[1],
            },
            RecordKind::CloseSync => EventKind::CloseSync { owner: a[0] },
            RecordKind::CondEndSync => EventKind::CondEndSync {
                owner: a[0],
                sector: a[1],
                force: a[2] as u8 != 0,
            },
            RecordKind::DaemonWork => EventKind::DaemonWork { mddev: a[0] },
            RecordKind::Unplug => EventKind::Unplug { owner: a[0] },
            RecordKind::UpdateSb => EventKind::UpdateSb {
                owner: a[0],
                events: (a[2] == 1).then_some(a[1]),
            },
            RecordKind::ThreadRunEnd => return None,
            RecordKind::DaemonDone => EventKind::DaemonDone {
                mddev: a[0],
                lastrun: (a[2] == 1).then_some(a[1]),
            },
            RecordKind::BioQueue => EventKind::BioQueue {
                dev: DevNum::from_kernel(rec.dev),
                sector: a[0],
                sectors: a[1],
                rwbs: rwbs(a[2]),
                bio: a[4],
            },
            RecordKind::BioComplete => EventKind::BioComplete {
                dev: DevNum::from_kernel(rec.dev),
                sector: a[0],
                sectors: a[1],
                rwbs: rwbs(a[2]),
                error: a[3] as u8 as i32,
                bio: a[4],
            },
            RecordKind::BioRemap => EventKind::BioRemap {
                dev: DevNum::from_kernel(rec.dev),
                sector: a[0],
                sectors: a[1],
                rwbs: rwbs(a[2]),
                member: DevNum::from_kernel(a[3] as u32),
                member_sector: a[4],
            },
        };
        Some(Self {
            ts_ns: rec.ts_ns,
            jiffies: rec.jiffies,
            cpu: rec.cpu,
            tid: rec.tid,
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_round_trips_through_the_kernel_encoding() {
        let d = DevNum::parse("9:127").unwrap();
        assert_eq!(d.to_kernel(), 0x90007f);
        assert_eq!(DevNum::from_kernel(0x90007f), d);
    }

    #[test]
    fn op_letters_follow_req_op() {
        assert_eq!(rwbs(1 | (1 << 11)), "W");
        assert_eq!(rwbs(0), "R");
        assert_eq!(rwbs(3), "D");
    }
}
