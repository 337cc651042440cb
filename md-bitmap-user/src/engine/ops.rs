//! The engine's inputs as values: one [`Op`] per kernel call, applied with [`Bitmap::apply`].
//!
//! Handy for feeds, trace replay and tests that keep events in a queue; the direct methods on
//! [`Bitmap`] do the same without the enum.

use super::bitmap::{Bitmap, EndOutcome, StartOutcome, SyncBlocks};
use super::summary::DaemonOutcome;

/// One call the kernel makes on the bitmap (offsets and sectors in 512-byte sectors of bitmap
/// address space; see [`Bitmap`] for each call's semantics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// [`Bitmap::start_write`].
    StartWrite {
        /// First sector.
        offset: u64,
        /// Length in sectors.
        sectors: u64,
        /// ≤6.13 write-behind flag.
        behind: bool,
    },
    /// [`Bitmap::end_write`].
    EndWrite {
        /// First sector.
        offset: u64,
        /// Length in sectors.
        sectors: u64,
        /// ≤6.13 `success` (ignored by the ≥6.14 rule).
        success: bool,
        /// ≤6.13 write-behind flag.
        behind: bool,
        /// `mddev->degraded != 0`.
        degraded: bool,
    },
    /// [`Bitmap::start_behind_write`].
    StartBehindWrite,
    /// [`Bitmap::end_behind_write`].
    EndBehindWrite,
    /// [`Bitmap::unplug`].
    Unplug,
    /// [`Bitmap::daemon_work`].
    DaemonWork,
    /// [`Bitmap::start_sync`].
    StartSync {
        /// First sector.
        offset: u64,
        /// The array stays degraded after this sync.
        degraded: bool,
    },
    /// [`Bitmap::end_sync`].
    EndSync {
        /// First sector.
        offset: u64,
        /// The sync of this range was aborted (6.12+ op: always true).
        aborted: bool,
    },
    /// [`Bitmap::close_sync`].
    CloseSync,
    /// [`Bitmap::cond_end_sync`].
    CondEndSync {
        /// Sector the sync reached.
        sector: u64,
        /// Run even if `daemon_sleep` has not passed.
        force: bool,
    },
    /// [`Bitmap::set_events`].
    SetEvents(u64),
    /// [`Bitmap::update_sb`].
    UpdateSb,
    /// [`Bitmap::flush`].
    Flush,
    /// [`Bitmap::write_all`].
    WriteAll,
    /// [`Bitmap::dirty_bits`] for chunks `first..=last`.
    DirtyBits {
        /// First chunk.
        first: u64,
        /// Last chunk (inclusive).
        last: u64,
    },
}

/// What [`Bitmap::apply`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpOutcome {
    /// The call returns nothing.
    Done,
    /// From a start-write.
    Start(StartOutcome),
    /// From an end-write.
    End(EndOutcome),
    /// Pages written by unplug.
    Unplugged(u64),
    /// From the daemon.
    Daemon(DaemonOutcome),
    /// From start-sync.
    Sync(SyncBlocks),
    /// `*blocks` from end-sync.
    Blocks(u64),
    /// Whether cond-end-sync ran.
    CondEndSync(bool),
}

impl Bitmap {
    /// Apply calls in order, each at its own time: [`apply`](Self::apply) on each element,
    /// outcomes dropped (blocked writers stay visible in
    /// [`blocked_writers`](Self::blocked_writers) and [`take_resumed`](Self::take_resumed)).
    /// Convenient for trace replay.
    pub fn apply_batch(&mut self, ops: &[(u64, Op)]) {
        for &(now, op) in ops {
            self.apply(op, now);
        }
    }

    /// Apply one call at time `now` (caller's unit; used by the daemon, flush and
    /// cond-end-sync, ignored by the rest).
    #[inline]
    pub fn apply(&mut self, op: Op, now: u64) -> OpOutcome {
        match op {
            Op::StartWrite {
                offset,
                sectors,
                behind,
            } => OpOutcome::Start(self.start_write(offset, sectors, behind)),
            Op::EndWrite {
                offset,
                sectors,
                success,
                behind,
                degraded,
            } => OpOutcome::End(self.end_write(offset, sectors, success, behind, degraded)),
            Op::StartBehindWrite => {
                self.start_behind_write();
                OpOutcome::Done
            }
            Op::EndBehindWrite => {
                self.end_behind_write();
                OpOutcome::Done
            }
            Op::Unplug => OpOutcome::Unplugged(self.unplug()),
            Op::DaemonWork => OpOutcome::Daemon(self.daemon_work(now)),
            Op::StartSync { offset, degraded } => {
                OpOutcome::Sync(self.start_sync(offset, degraded))
            }
            Op::EndSync { offset, aborted } => OpOutcome::Blocks(self.end_sync(offset, aborted)),
            Op::CloseSync => {
                self.close_sync();
                OpOutcome::Done
            }
            Op::CondEndSync { sector, force } => {
                OpOutcome::CondEndSync(self.cond_end_sync(sector, force, now))
            }
            Op::SetEvents(e) => {
                self.set_events(e);
                OpOutcome::Done
            }
            Op::UpdateSb => {
                self.update_sb();
                OpOutcome::Done
            }
            Op::Flush => {
                self.flush(now);
                OpOutcome::Done
            }
            Op::WriteAll => {
                self.write_all();
                OpOutcome::Done
            }
            Op::DirtyBits { first, last } => {
                self.dirty_bits(first, last);
                OpOutcome::Done
            }
        }
    }
}
