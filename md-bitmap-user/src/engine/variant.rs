//! Kernel versions whose classic bitmap behaves differently, chosen at run time.

/// What an end-write does besides decrementing the counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndWriteRule {
    /// v6.13 and older without the Feb 2025 stable backport (`md_bitmap_endwrite(…, success,
    /// behind)` ≤6.11, `bitmap_endwrite(mddev, …, success, behind)` 6.12/6.13):
    /// `success && !degraded && events_cleared < events` → `events_cleared = events`,
    /// `need_sync = 1`; `!success` → NEEDED. A *successful* write while degraded sets neither:
    /// raid1/raid10 pass `success = !R1BIO_Degraded`, raid5 `!STRIPE_DEGRADED`, so in practice
    /// writes to a degraded array are reported unsuccessful, but the rule is the flag.
    SuccessArg,
    /// v6.14+ and the Feb 2025 backports to 6.6.y / 6.12.y / 6.13.y (`bitmap_endwrite(mddev,
    /// offset, sectors)`, `bitmap_end_write` from 6.16): no `success` argument; not degraded →
    /// the `events_cleared`/`need_sync` update; degraded → NEEDED. `success` is ignored.
    Degraded,
}

/// The kernel behaviour the engine models, chosen at run time.
///
/// Detect it from the running kernel's BTF prototypes rather than the version string (stable
/// backports moved 6.6.y, 6.12.y and 6.13.y to the new end-write in Feb 2025; the exact point
/// releases were not confirmed):
/// * `md_bitmap_endwrite` / `bitmap_endwrite` with a `success` parameter → [`EndWriteRule::SuccessArg`];
/// * without it (and `start_behind_write` / `end_behind_write` exist) → [`EndWriteRule::Degraded`];
/// * `md_bitmap_end_sync` with an `aborted` parameter → `end_sync_aborted_arg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KernelVariant {
    /// The end-write rule (see [`EndWriteRule`]).
    pub end_write: EndWriteRule,
    /// Write-behind is counted by the `behind` argument of start/end-write (≤6.13 before the
    /// backport) rather than by separate `start_behind_write`/`end_behind_write` calls (≥6.14).
    /// Informational: the engine applies the `behind` argument whatever this says, and the
    /// separate calls always work; a ≥6.14 feed passes `behind = false`.
    pub behind_in_write_calls: bool,
    /// `md_bitmap_end_sync(bitmap, offset, &blocks, aborted)` takes `aborted` (≤6.11 and the
    /// 6.6.y backport). From 6.12 the personality-facing `end_sync` op has no `aborted`
    /// argument and always behaves as `aborted = 1`, while `close_sync`/`cond_end_sync` use
    /// `aborted = 0` internally (commit "md/md-bitmap: remove the parameter 'aborted' for
    /// md_bitmap_end_sync()": personalities always passed 1). Informational: behaviour is the
    /// same; use [`Bitmap::end_sync_op`](super::Bitmap::end_sync_op) for the 6.12+ call.
    pub end_sync_aborted_arg: bool,
}

impl KernelVariant {
    /// v6.1 … v6.11 (and 5.x with the same logic), 6.6.y before the Feb 2025 backport.
    pub const V6_1: KernelVariant = KernelVariant {
        end_write: EndWriteRule::SuccessArg,
        behind_in_write_calls: true,
        end_sync_aborted_arg: true,
    };

    /// 6.6.y with the Feb 2025 backport: `md_bitmap_startwrite(bitmap, offset, sectors)` /
    /// `md_bitmap_endwrite(bitmap, offset, sectors)` plus `md_bitmap_{start,end}_behind_write`,
    /// still `md_bitmap_end_sync(…, aborted)`.
    pub const V6_6_BACKPORT: KernelVariant = KernelVariant {
        end_write: EndWriteRule::Degraded,
        behind_in_write_calls: false,
        end_sync_aborted_arg: true,
    };

    /// v6.12, v6.13 before the backport: `struct bitmap_operations`, `bitmap_startwrite(mddev,
    /// …, behind)`, `bitmap_endwrite(mddev, …, success, behind)`, `end_sync` op without
    /// `aborted`.
    pub const V6_12: KernelVariant = KernelVariant {
        end_write: EndWriteRule::SuccessArg,
        behind_in_write_calls: true,
        end_sync_aborted_arg: false,
    };

    /// v6.14 and later, and 6.12.y / 6.13.y with the Feb 2025 backport.
    pub const V6_14: KernelVariant = KernelVariant {
        end_write: EndWriteRule::Degraded,
        behind_in_write_calls: false,
        end_sync_aborted_arg: false,
    };

    /// The variant for kernel `major.minor`, given whether its stable series received the
    /// Feb 2025 start/end-write rework (`backported`; only meaningful for 6.6, 6.12 and 6.13).
    pub fn for_version(major: u32, minor: u32, backported: bool) -> KernelVariant {
        let v = (major, minor);
        if v >= (6, 14) {
            KernelVariant::V6_14
        } else if v >= (6, 12) {
            if backported {
                KernelVariant::V6_14
            } else {
                KernelVariant::V6_12
            }
        } else if v == (6, 6) && backported {
            KernelVariant::V6_6_BACKPORT
        } else {
            KernelVariant::V6_1
        }
    }
}

impl Default for KernelVariant {
    /// [`KernelVariant::V6_14`], the current behaviour.
    fn default() -> Self {
        KernelVariant::V6_14
    }
}
