//! The replay as it was before the speed work (commit 58ac2be), kept verbatim (but for the
//! figures' assembly at the end, shared with it: [`SizeResult::of_replay`]) as the
//! reference that `tests.rs` compares the fast [`replay`](super::replay::replay) against:
//! every per-size figure must be equal.
use std::collections::HashMap;

use anyhow::Result;

use super::replay::{DaemonMode, ReplayInput, ReplayOptions, SizeResult, Step};
use crate::engine::{Bitmap, BitmapConfig, BitmapGeometry};

/// Time-weighted samples of the on-disk dirty chunk count.
struct DirtyTimeline {
    last_t: u64,
    last_v: u64,
    hist: HashMap<u64, u64>,
    max: u64,
}

impl DirtyTimeline {
    fn new(t: u64, v: u64) -> Self {
        Self {
            last_t: t,
            last_v: v,
            hist: HashMap::new(),
            max: v,
        }
    }
    #[inline]
    fn set(&mut self, t: u64, v: u64) {
        if v == self.last_v {
            return;
        }
        let dt = t.saturating_sub(self.last_t);
        if dt > 0 {
            *self.hist.entry(self.last_v).or_default() += dt;
        }
        self.last_t = self.last_t.max(t);
        self.last_v = v;
        self.max = self.max.max(v);
    }
    /// (mean, p99, max) over `[start, end]`.
    fn finish(mut self, end: u64) -> (f64, u64, u64) {
        let dt = end.saturating_sub(self.last_t);
        *self.hist.entry(self.last_v).or_default() += dt.max(1);
        let mut v: Vec<(u64, u64)> = std::mem::take(&mut self.hist).into_iter().collect();
        v.sort_unstable();
        let total: u64 = v.iter().map(|x| x.1).sum();
        let mean = v.iter().map(|&(a, w)| a as f64 * w as f64).sum::<f64>() / total as f64;
        let target = (total as f64 * 0.99).ceil() as u64;
        let mut acc = 0;
        let mut p99 = 0;
        for (a, w) in v {
            acc += w;
            p99 = a;
            if acc >= target {
                break;
            }
        }
        (mean, p99, self.max)
    }
}

/// Replays `input` with a bitmap of `chunk_bytes` chunks.
pub fn replay_reference(
    input: &ReplayInput,
    chunk_bytes: u64,
    opts: &ReplayOptions,
) -> Result<SizeResult> {
    let geo = BitmapGeometry::new(chunk_bytes, input.sync_sectors)
        .map_err(|e| anyhow::anyhow!("chunk size {chunk_bytes}: {e:?}"))?;
    let shift = geo.chunkshift();
    let recorded = opts.daemon == DaemonMode::Recorded && input.has_daemon_events();
    // Engine time: jiffies with recorded wake-ups, else nanoseconds.
    let (sleep, hz) = match (recorded, input.sleep_jiffies, input.hz) {
        (true, Some(s), Some(hz)) => (s, hz),
        _ => (input.sleep_ns, 1_000_000_000),
    };
    let (t0, t_end) = input.span_ns;
    // Jiffies at ns `t`, from the nearest earlier recorded wake-up (the first one before it).
    let first = input.steps.iter().find_map(|s| match s.1 {
        Step::Daemon { jiffies } => Some((s.0, jiffies)),
        _ => None,
    });
    let mut ref_pt: Option<(u64, u64)> = first;
    let to_time = |t: u64, r: Option<(u64, u64)>| -> u64 {
        let Some((rt, rj)) = r else { return t };
        let j = |d: u64| (d as u128 * u128::from(hz) / 1_000_000_000) as u64;
        if t >= rt {
            rj.wrapping_add(j(t - rt))
        } else {
            rj.wrapping_sub(j(rt - t))
        }
    };
    // `daemon_lastrun` when recording started, if the recorder read it; else as if the first
    // recorded wake-up found the daemon due.
    let start_time = match (recorded, input.header.daemon_lastrun_jiffies, first) {
        (true, Some(j), _) => j,
        (true, None, Some((_, j))) => j.wrapping_sub(sleep),
        _ => t0,
    };
    let mut bm = Bitmap::new(geo, BitmapConfig::new(input.variant, sleep), start_time);
    if !input.initial_dirty_sectors.is_empty() {
        let mut bits = vec![0u8; geo.chunks().div_ceil(8) as usize];
        for &(a, b) in &input.initial_dirty_sectors {
            if b > a {
                for c in (a >> shift)..=((b - 1) >> shift) {
                    bits[(c / 8) as usize] |= 1 << (c % 8);
                }
            }
        }
        let (ec, ev) = input.header.initial_events;
        bm.seed_from_disk(&bits, ev, ec);
    } else {
        let (ec, ev) = input.header.initial_events;
        bm.set_events(ev.max(ec));
    }
    let mut timeline = DirtyTimeline::new(t0, bm.disk_dirty_chunks());
    // `mddev->events` across superblock updates (see `Step::UpdateSb` below).
    let mut events = bm.events();
    let mut in_sync = input
        .header
        .initial_array_state
        .as_deref()
        .is_none_or(|s| s == "clean");
    let mut can_decrease_events = false;
    let mut bits_set = 0u64;
    let mut max_alloc = bm.allocated_pages();
    // When the md thread last went to sleep (ns), and whether it is in a run; no timer for the
    // chunk size in use (as in `replay`).
    let mut last_wake = t0;
    let mut running = false;
    let timer_from_trace = recorded && chunk_bytes == input.header.bitmap_chunk_bytes;
    let slack = if recorded { 100_000_000 } else { 0 };
    let chunks = geo.chunks();

    macro_rules! after_write_pages {
        ($t:expr) => {{
            timeline.set($t, bm.disk_dirty_chunks());
            max_alloc = max_alloc.max(bm.allocated_pages());
        }};
    }

    for &(t, step) in &input.steps {
        // Timer wake-ups of the md thread due before this step.
        while !timer_from_trace && !running && bm.daemon_timeout().is_some() {
            let due = last_wake.saturating_add(input.sleep_ns + slack);
            if due > t {
                break;
            }
            let now = if recorded {
                let j = to_time(due, ref_pt);
                // A timer wake-up comes when the daemon is due (the thread's timeout is
                // `daemon_sleep` from its last run).
                if crate::engine::time_before(j, bm.next_daemon_due()) {
                    bm.next_daemon_due()
                } else {
                    j
                }
            } else {
                due
            };
            last_wake = due;
            let out = bm.daemon_work(now);
            if out.pass().is_some_and(|p| p.pages_written > 0) {
                after_write_pages!(due);
            }
        }
        match step {
            Step::Start { a, b } => {
                if !recorded {
                    // The write wakes the md thread (modelled mode).
                    last_wake = t;
                    let out = bm.daemon_work(t);
                    if out.pass().is_some_and(|p| p.pages_written > 0) {
                        after_write_pages!(t);
                    }
                }
                for &(off, n) in &input.calls[a as usize..b as usize] {
                    let n = u64::from(n);
                    if n > 0 {
                        let lo = off >> shift;
                        let hi = ((off + n - 1) >> shift).min(chunks.saturating_sub(1));
                        for c in lo..=hi {
                            bits_set += u64::from(bm.counter(c).raw() == 0);
                        }
                    }
                    bm.start_write(off, n, false);
                }
                if !input.has_unplug && bm.unplug() > 0 {
                    after_write_pages!(t);
                }
            }
            Step::Unplug => {
                if bm.unplug() > 0 {
                    after_write_pages!(t);
                }
            }
            Step::End { a, b } => {
                for &(off, n) in &input.calls[a as usize..b as usize] {
                    bm.end_write(off, u64::from(n), true, false, false);
                }
            }
            Step::Daemon { jiffies } => {
                if recorded {
                    ref_pt = Some((t, jiffies));
                    if input.has_thread_sleep {
                        running = true;
                    } else {
                        last_wake = t;
                    }
                    let out = bm.daemon_work(jiffies);
                    if out.pass().is_some_and(|p| p.pages_written > 0) {
                        after_write_pages!(t);
                    }
                }
            }
            Step::ThreadSleep => {
                if recorded {
                    running = false;
                    last_wake = t;
                }
            }
            Step::UpdateSb => {
                // md_update_sb() around a recorded bitmap superblock update: under a write
                // workload these are the clean <-> dirty transitions (md_write_start() and
                // the safe-mode timer), where `mddev->events` goes up on the way to dirty and
                // back down on the way to clean when it may (`can_decrease_events`).
                if in_sync {
                    events += 1;
                    can_decrease_events = true;
                } else if can_decrease_events && events != 1 {
                    events -= 1;
                    can_decrease_events = false;
                } else {
                    events += 1;
                    can_decrease_events = true;
                }
                in_sync = !in_sync;
                bm.set_events(events);
                bm.update_sb();
                after_write_pages!(t);
            }
        }
    }
    let dirty = timeline.finish(t_end);
    Ok(SizeResult::of_replay(
        input,
        &geo,
        &bm,
        (bits_set, max_alloc),
        dirty,
        opts,
    ))
}
