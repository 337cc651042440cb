//! Diagnosing drift: when a reconciliation finds the mirror's on-disk bits differing from the
//! real on-disk bitmap, what the mirror knew about each drifting chunk.
//!
//! Each [`MirrorArray`](super::MirrorArray) keeps its last [`HISTORY`] bitmap events (not bio
//! events); [`MirrorArray::drift_report`](super::MirrorArray::drift_report) lists, per drifting
//! chunk, the mirror's counter, cached and on-disk bits, its file page's attributes, the real
//! on-disk bit (and the member it was read from), the array's degraded and sync state, and the
//! recent events that touched the chunk or the whole array.
use std::collections::VecDeque;

use crate::feed::FeedEvent;
use crate::feed::record::EventKind;

/// Bitmap events other than sync calls kept per array for drift reports.
pub const HISTORY: usize = 512;

/// Sync calls (start-sync, end-sync, cond-end-sync) kept per array, apart: a resync's end
/// (`md_bitmap_close_sync()`) calls end-sync once per chunk, which would flush every write
/// from one shared history.
pub const SYNC_HISTORY: usize = 1024;

/// Drifting chunks detailed in one report (the rest are counted).
pub const REPORT_CHUNKS: usize = 8;

/// Events listed per drifting chunk.
pub const REPORT_EVENTS: usize = 24;

/// The first and last chunk of `len` sectors (at least one) at `off`.
fn chunk_span(off: u64, len: u64, chunk_sectors: u64) -> (u64, u64) {
    (off / chunk_sectors, (off + len.max(1) - 1) / chunk_sectors)
}

/// The last [`HISTORY`] bitmap events and [`SYNC_HISTORY`] sync calls of an array.
#[derive(Default)]
pub struct History {
    events: VecDeque<FeedEvent>,
    syncs: VecDeque<FeedEvent>,
}

impl History {
    /// Keeps `ev` if it is a bitmap event (bio events are not kept).
    pub fn push(&mut self, ev: &FeedEvent) {
        let (ring, cap) = match ev.kind {
            EventKind::BioQueue { .. }
            | EventKind::BioComplete { .. }
            | EventKind::BioRemap { .. } => {
                return;
            }
            EventKind::StartSync { .. }
            | EventKind::EndSync { .. }
            | EventKind::CondEndSync { .. } => (&mut self.syncs, SYNC_HISTORY),
            _ => (&mut self.events, HISTORY),
        };
        if ring.len() == cap {
            ring.pop_front();
        }
        ring.push_back(ev.clone());
    }

    /// Kernel time (ns) of the last bitmap event kept.
    pub fn last_ts_ns(&self) -> Option<u64> {
        let a = self.events.back().map(|e| e.ts_ns);
        let b = self.syncs.back().map(|e| e.ts_ns);
        a.max(b)
    }

    /// Chunk ranges (first, last) of the write events (start-write, end-write) stamped in
    /// `[from, to]`.
    pub fn writes_between(&self, from: u64, to: u64, chunk_sectors: u64) -> Vec<(u64, u64)> {
        self.events
            .iter()
            .rev()
            .take_while(|e| e.ts_ns >= from)
            .filter(|e| e.ts_ns <= to)
            .filter_map(|e| match &e.kind {
                EventKind::StartWrite {
                    offset, sectors, ..
                }
                | EventKind::EndWrite {
                    offset, sectors, ..
                } => Some(chunk_span(*offset, *sectors, chunk_sectors)),
                _ => None,
            })
            .collect()
    }

    /// Events that touched `chunk` (writes and syncs on it) or the whole array (daemon passes,
    /// unplugs, superblock updates, close-sync), latest last, at most `n`.
    pub fn touching(&self, chunk: u64, chunk_sectors: u64, n: usize) -> Vec<&FeedEvent> {
        let on = |off: u64, len: u64| {
            let (first, last) = chunk_span(off, len, chunk_sectors);
            (first..=last).contains(&chunk)
        };
        let mut all: Vec<&FeedEvent> = self.events.iter().chain(&self.syncs).collect();
        all.sort_by_key(|e| e.ts_ns);
        let mut v: Vec<&FeedEvent> = all
            .into_iter()
            .rev()
            .filter(|e| match &e.kind {
                EventKind::StartWrite {
                    offset, sectors, ..
                }
                | EventKind::EndWrite {
                    offset, sectors, ..
                } => on(*offset, *sectors),
                EventKind::StartSync { offset, .. } | EventKind::EndSync { offset, .. } => {
                    offset / chunk_sectors == chunk
                }
                EventKind::CondEndSync { sector, .. } => sector / chunk_sectors >= chunk,
                _ => true,
            })
            .take(n)
            .collect();
        v.reverse();
        v
    }
}

/// Why a disk read taken from `t0` and finished with `during` (the array's first bitmap event
/// stamped before the read ended that was not applied before it, if any) cannot be compared
/// with the mirror: a bitmap call during the read, or one within `guard_ns` before it (its
/// page writes may not have landed). `None`: the read is comparable.
pub fn read_disturbed(
    last_call_ns: Option<u64>,
    t0: u64,
    during: Option<&FeedEvent>,
    guard_ns: u64,
) -> Option<String> {
    match (during, last_call_ns) {
        (Some(ev), _) => Some(format!("a bitmap call during the read ({})", describe(ev))),
        (None, Some(t)) if t.saturating_add(guard_ns) > t0 => Some(format!(
            "a bitmap call {} ms before the read",
            t0.saturating_sub(t) / 1_000_000
        )),
        _ => None,
    }
}

/// One line for an event of a drift report.
pub fn describe(ev: &FeedEvent) -> String {
    let what = match &ev.kind {
        EventKind::StartWrite {
            offset, sectors, ..
        } => format!("start_write {offset}+{sectors}"),
        EventKind::EndWrite {
            offset,
            sectors,
            success,
            degraded,
            ..
        } => format!("end_write {offset}+{sectors} success={success:?} degraded@call={degraded:?}"),
        EventKind::StartSync {
            offset, degraded, ..
        } => format!("start_sync {offset} degraded={degraded}"),
        EventKind::EndSync { offset, .. } => format!("end_sync {offset}"),
        EventKind::CloseSync { .. } => "close_sync".into(),
        EventKind::CondEndSync { sector, force, .. } => {
            format!("cond_end_sync {sector} force={force}")
        }
        EventKind::DaemonWork { .. } => "daemon entry".into(),
        EventKind::DaemonDone { lastrun, .. } => format!("daemon return lastrun={lastrun:?}"),
        EventKind::UpdateSb { events, .. } => format!("update_sb events={events:?}"),
        EventKind::Unplug { .. } => "unplug".into(),
        other => format!("{other:?}"),
    };
    format!("t={}ns j={} {what}", ev.ts_ns, ev.jiffies)
}

impl super::MirrorArray {
    /// Kernel time (ns) of the array's last bitmap call applied (any bitmap event, daemon
    /// calls that did not run a pass included).
    pub fn last_bitmap_call_ns(&self) -> Option<u64> {
        self.history.last_ts_ns()
    }

    /// Chunk ranges written (start-write or end-write events) in `[from, to]` (kernel ns).
    pub fn writes_between(&self, from: u64, to: u64) -> Vec<(u64, u64)> {
        match &self.bitmap {
            Some(bm) => self
                .history
                .writes_between(from, to, bm.geometry().chunk_sectors()),
            None => vec![],
        }
    }

    /// Chunks whose mirrored on-disk bit differs from `disk_bits`, in order.
    pub fn drifting_chunks(&self, disk_bits: &[u8]) -> Vec<u64> {
        let Some(bm) = &self.bitmap else {
            return vec![];
        };
        let mine = bm.disk_bitmap_bytes();
        let bit = |v: &[u8], c: u64| {
            v.get((c / 8) as usize)
                .is_some_and(|x| x >> (c % 8) & 1 == 1)
        };
        (0..bm.geometry().chunks())
            .filter(|&c| bit(&mine, c) != bit(disk_bits, c))
            .collect()
    }

    /// What the mirror knows about each chunk drifting from `disk_bits`, read from `member`:
    /// one summary line, then per chunk (at most [`REPORT_CHUNKS`]) its state and its recent
    /// events. Empty when nothing drifts.
    pub fn drift_report(&self, disk_bits: &[u8], member: &str) -> Vec<String> {
        let Some(bm) = &self.bitmap else {
            return vec![];
        };
        let chunks = self.drifting_chunks(disk_bits);
        if chunks.is_empty() {
            return vec![];
        }
        let i = &self.info;
        let mut out = vec![format!(
            "{}: drift in {} chunks against {member}; degraded: mirror {} (kernel {:?}, sysfs {}), \
             sync_action {}, sync run {}, recovery write-alls {}, members [{}]; events {} \
             events_cleared {} need_sync {} allclean {} daemon_lastrun {} last bitmap event {}ns",
            i.name,
            chunks.len(),
            self.degraded(),
            self.kernel_degraded,
            i.degraded,
            i.sync_action,
            self.sync_run,
            self.recovery_write_alls,
            i.members
                .iter()
                .map(|m| format!("{}:{:?}:{}", m.name, m.slot, m.state.join(",")))
                .collect::<Vec<_>>()
                .join(" "),
            bm.events(),
            bm.events_cleared(),
            bm.need_sync(),
            bm.allclean(),
            bm.daemon_lastrun(),
            self.last_bitmap_event_ns,
        )];
        let cs = bm.geometry().chunk_sectors();
        for &c in chunks.iter().take(REPORT_CHUNKS) {
            let page = bm.file_page_of(c);
            let real = disk_bits
                .get((c / 8) as usize)
                .is_some_and(|x| x >> (c % 8) & 1 == 1);
            out.push(format!(
                "  chunk {c}: counter {:#06x} (count {}, needed {}, resync {}), cached bit {}, \
                 mirrored disk bit {}, on {member} {real}; file page {page} {:?}; counter page {:?}",
                bm.counter(c).raw(),
                bm.counter(c).count(),
                bm.counter(c).needed(),
                bm.counter(c).resync(),
                bm.cached_bit(c),
                bm.disk_bit(c),
                bm.file_page_attrs(page),
                bm.counter_page(c >> bm.geometry().counter_page_shift()),
            ));
            for ev in self.history.touching(c, cs, REPORT_EVENTS) {
                out.push(format!("    {}", describe(ev)));
            }
        }
        if chunks.len() > REPORT_CHUNKS {
            out.push(format!("  ... and {} more", chunks.len() - REPORT_CHUNKS));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{BitmapGeometry, KernelVariant};
    use crate::mirror::{Mirror, MirrorArray};

    fn ev(ts_ns: u64, kind: EventKind) -> FeedEvent {
        FeedEvent {
            ts_ns,
            jiffies: 1,
            cpu: 0,
            tid: 1,
            kind,
        }
    }

    fn start(off: u64) -> EventKind {
        EventKind::StartWrite {
            owner: 0xb17,
            offset: off,
            sectors: 8,
            behind: Some(false),
        }
    }

    #[test]
    fn a_read_near_a_bitmap_call_is_not_compared() {
        let g = 250;
        assert_eq!(read_disturbed(None, 1000, None, g), None, "no call yet");
        assert_eq!(
            read_disturbed(Some(700), 1000, None, g),
            None,
            "quiet long enough"
        );
        assert!(
            read_disturbed(Some(800), 1000, None, g).is_some(),
            "within the guard"
        );
        let e = ev(1001, start(0));
        let why = read_disturbed(Some(100), 1000, Some(&e), g).unwrap();
        assert!(
            why.contains("during the read") && why.contains("start_write 0+8"),
            "{why}"
        );
    }

    #[test]
    fn the_history_keeps_bitmap_events_and_lists_those_of_a_chunk() {
        let mut h = History::default();
        let dev = crate::feed::record::DevNum { major: 9, minor: 0 };
        h.push(&ev(
            1,
            EventKind::BioQueue {
                dev,
                sector: 0,
                sectors: 8,
                rwbs: "W".into(),
                bio: 0,
            },
        ));
        assert_eq!(h.last_ts_ns(), None, "bio events are not kept");
        h.push(&ev(2, start(0)));
        h.push(&ev(3, start(128)));
        h.push(&ev(4, EventKind::Unplug { owner: 0xb17 }));
        // Chunk 1 (128 sectors a chunk): its start-write and the array-wide unplug.
        let on1: Vec<u64> = h.touching(1, 128, 10).iter().map(|e| e.ts_ns).collect();
        assert_eq!(on1, vec![3, 4]);
        assert_eq!(h.touching(0, 128, 1).len(), 1, "at most n, the latest");
        for i in 0..HISTORY as u64 + 5 {
            h.push(&ev(10 + i, EventKind::Unplug { owner: 0xb17 }));
        }
        assert_eq!(h.events.len(), HISTORY);
        assert_eq!(h.last_ts_ns(), Some(10 + HISTORY as u64 + 4));
    }

    #[test]
    fn a_drift_report_names_each_drifting_chunk_and_its_events() {
        let mut a = MirrorArray::new(crate::mirror::tests::info());
        a.bitmap_addr = Some(0xb17);
        let geo = BitmapGeometry::new(65536, 2 << 20).unwrap();
        a.seed(KernelVariant::V6_1, geo, &[], 1, 1, None);
        let mut m = Mirror::default();
        m.insert(a);
        m.apply(&ev(10, start(128)));
        m.apply(&ev(11, EventKind::Unplug { owner: 0xb17 }));
        let a = &m.arrays["md0"];
        assert_eq!(a.last_bitmap_call_ns(), Some(11));
        // The mirror wrote chunk 1's bit; the disk read shows chunk 2's instead.
        let disk = [0b0000_0100u8];
        assert_eq!(a.drifting_chunks(&disk), vec![1, 2]);
        assert_eq!(a.drift_against(&disk), 2);
        let r = a.drift_report(&disk, "vdb");
        assert!(r[0].contains("drift in 2 chunks against vdb"), "{}", r[0]);
        let c1 = r.iter().position(|l| l.starts_with("  chunk 1:")).unwrap();
        assert!(
            r[c1].contains("mirrored disk bit true, on vdb false"),
            "{}",
            r[c1]
        );
        assert!(r[c1 + 1].contains("start_write 128+8"), "{}", r[c1 + 1]);
        assert!(r[c1 + 2].contains("unplug"), "{}", r[c1 + 2]);
        assert!(
            r.iter()
                .any(|l| l.starts_with("  chunk 2:") && l.contains("on vdb true"))
        );
        assert!(
            a.drift_report(&[0b0000_0010], "vdb").is_empty(),
            "no drift, no report"
        );
    }
}
