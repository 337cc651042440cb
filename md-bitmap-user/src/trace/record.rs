//! `md-bitmap record`: write a trace of an array's writes from the eBPF feed.
//!
//! Recorded: every write bio queued on the md device (`block_bio_queue`, time, sector,
//! length) with its completion time when the feed sees it (`block_bio_complete`, matched on
//! sector and length, oldest first), and this array's entries into the bitmap daemon (with
//! jiffies), the bitmap superblock update, the bitmap unplug, and each return of the array's md
//! thread function (`raid1d` / `raid10d` / `raid5d`: the thread goes back to sleep, and its
//! timeout, the daemon's timer, counts from there). The header holds the geometry read from
//! sysfs and the member's bitmap superblock, and the on-disk dirty bits at the start.
//!
//! Events are written in queue-time order once their completion is known (or after
//! [`COMPLETION_WAIT_NS`]); blocks are flushed every second, and SIGINT/SIGTERM, the end of
//! `--duration` or an error all flush what was recorded, so the file is always a valid trace.
use std::collections::VecDeque;
use std::io::BufWriter;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{TraceEvent, TraceHeader, TraceWriter};
use crate::agent::{monotonic_ns, read_disk_bitmap};
use crate::feed::kstate::KernelStateReader;
use crate::feed::record::EventKind;
use crate::feed::symbols::WriteArgs;
use crate::feed::{BitmapAbi, FeedEvent, KernelSymbols, ebpf::Feed};
use crate::mirror::variant_for;
use crate::sysfs::Sysfs;
use md_bitmap_common::RecordKind;

/// How long a write waits for its completion before it is written without one.
pub const COMPLETION_WAIT_NS: u64 = 30_000_000_000;

/// `md-bitmap record` arguments.
#[derive(clap::Args, Debug)]
pub struct RecordArgs {
    /// The array (md0, /dev/md0, /dev/md/NAME).
    #[arg(long)]
    pub array: String,
    /// Trace file to write.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// Stop after this many seconds (default: until SIGINT/SIGTERM).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Create this file once the probes are attached (lets scripts start a workload then).
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
}

/// Events waiting for their completion, in queue-time order.
#[derive(Default)]
struct Pending {
    q: VecDeque<TraceEvent>,
    /// Daemon entries waiting for their return (thread id, entry time): the return tells
    /// whether the pass ran, and at which jiffies.
    daemon_open: Vec<(u32, u64)>,
    /// The kernel's `bitmap->daemon_lastrun` as last seen.
    lastrun: Option<u64>,
}

impl Pending {
    fn insert(&mut self, ev: TraceEvent) {
        // Records from different CPUs arrive nearly sorted: insert from the back.
        let t = ev.t_ns();
        let mut i = self.q.len();
        while i > 0 && self.q[i - 1].t_ns() > t {
            i -= 1;
        }
        self.q.insert(i, ev);
    }

    /// The daemon's return on thread `tid`: md read `jiffies` for its time test after taking
    /// `bitmap_info.mutex`, later than the entry probe's stamp, and set `daemon_lastrun` to it
    /// when the pass ran. A pass that ran is recorded at the kernel's `daemon_lastrun`, so that
    /// the replay's `time_before()` test passes where the kernel's did; one that did not keeps
    /// the entry's jiffies (the test failed later, so it fails then too). As the mirror does
    /// with the same probe.
    ///
    /// A thread is in one daemon call at a time, so the return belongs to that thread's newest
    /// open entry; older open entries of the thread lost their return record and are dropped
    /// (they keep their entry jiffies and no longer hold the queue back).
    fn daemon_done(&mut self, tid: u32, lastrun: Option<u64>) {
        let Some(i) = self.daemon_open.iter().rposition(|(t, _)| *t == tid) else {
            return;
        };
        let (_, t_entry) = self.daemon_open.remove(i);
        self.daemon_open.retain(|(t, _)| *t != tid);
        let Some(l) = lastrun else {
            return;
        };
        if self.lastrun.is_some_and(|prev| prev != l) {
            for e in self.q.iter_mut().rev() {
                if let TraceEvent::Daemon { t_ns, jiffies } = e
                    && *t_ns == t_entry
                {
                    *jiffies = (*jiffies).max(l);
                    break;
                }
            }
        }
        self.lastrun = Some(l);
    }

    fn complete(&mut self, sector: u64, sectors: u64, t_ns: u64) {
        for e in self.q.iter_mut() {
            if let TraceEvent::Write {
                t_ns: q,
                sector: s,
                sectors: n,
                latency_ns: l @ None,
            } = e
                && *s == sector
                && *n == sectors
                && *q <= t_ns
            {
                *l = Some(t_ns - *q);
                return;
            }
        }
    }

    /// Writes out the ready prefix (everything if `all`).
    fn drain_ready<W: std::io::Write>(
        &mut self,
        w: &mut TraceWriter<W>,
        now: u64,
        all: bool,
    ) -> Result<()> {
        while let Some(e) = self.q.front() {
            let ready = all
                || match e {
                    TraceEvent::Write {
                        t_ns, latency_ns, ..
                    } => latency_ns.is_some() || now.saturating_sub(*t_ns) > COMPLETION_WAIT_NS,
                    TraceEvent::Daemon { t_ns, .. } => {
                        !self.daemon_open.iter().any(|(_, t)| t == t_ns)
                            || now.saturating_sub(*t_ns) > COMPLETION_WAIT_NS
                    }
                    _ => true,
                };
            if !ready {
                break;
            }
            let e = self.q.pop_front().expect("front exists");
            w.push(&e)?;
        }
        Ok(())
    }
}

/// The thread function md runs for a personality (`md_register_thread(raid1d, ...)` etc.).
fn md_thread_fn(level: &str) -> Option<&'static str> {
    match level {
        "raid1" => Some("raid1d"),
        "raid10" => Some("raid10d"),
        "raid4" | "raid5" | "raid6" => Some("raid5d"),
        _ => None,
    }
}

/// A block device given as `MAJOR:MINOR` or a device node path.
pub fn device_number(s: &str) -> Result<crate::feed::record::DevNum> {
    if let Some(d) = crate::feed::record::DevNum::parse(s) {
        return Ok(d);
    }
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = std::fs::metadata(s).with_context(|| format!("no such device {s}"))?;
    if !m.file_type().is_block_device() {
        bail!("{s} is not a block device");
    }
    let r = m.rdev();
    Ok(crate::feed::record::DevNum {
        major: libc::major(r),
        minor: libc::minor(r),
    })
}

fn uname_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Runs `md-bitmap record`.
pub fn run(args: &RecordArgs, stop: &AtomicBool) -> Result<()> {
    let syms = KernelSymbols::load()?;
    let abi = BitmapAbi::resolve(&syms)?;
    let sysfs = Sysfs::default();
    let aref = sysfs.find_array(&args.array)?;
    let info = sysfs.array_info(&aref)?;
    let bm = info
        .bitmap
        .as_ref()
        .with_context(|| format!("{} has no bitmap", info.name))?;
    if bm.location == "none" || bm.location == "file" {
        bail!(
            "{} has no internal bitmap (location {}); record needs one",
            info.name,
            bm.location
        );
    }
    let disk = read_disk_bitmap(&info)?;
    let mut feed = Feed::load()?;
    feed.attach(&abi)?;
    feed.watch_dev(aref.dev)?;
    // md_thread() sleeps `thread->timeout` from the end of each run of the personality's thread
    // function (not from its daemon call, which comes first: md_check_recovery() can block long
    // after it, in set_in_sync()'s percpu_ref switch or md_update_sb()'s superblock writes).
    if let Some(f) = md_thread_fn(&info.level)
        && let Err(e) = feed.attach_thread_run_end(f)
    {
        eprintln!(
            "md-bitmap: cannot probe {f} ({e:#}); the trace will not say when md's thread slept, and tune times its timer from the daemon calls"
        );
    }
    // The array's kernel objects, to keep other arrays' daemon and superblock events out.
    let (mut owners, mut lastrun, mut kevents) = (Vec::new(), None, None);
    match KernelStateReader::new(&syms).and_then(|r| {
        feed.load_peek()?;
        // md's offsets, for the daemon's return probe (`daemon_lastrun`). Not
        // `daemon_passes_only` (the live mirror's filter): the trace keeps every daemon call,
        // each a wake-up of md's thread that the replay needs.
        let layout = r.layout().for_ebpf(abi.first_arg_is_mddev);
        debug_assert_eq!(layout.daemon_passes_only, 0);
        feed.set_md_layout(layout)?;
        let mddev = r.find_mddev(&mut feed, aref.dev)?;
        let bitmap = r.bitmap_addr(&mut feed, mddev)?;
        let k = r.read(&mut feed, mddev)?;
        Ok((mddev, bitmap, k))
    }) {
        Ok((mddev, bitmap, k)) => {
            owners = vec![mddev, bitmap];
            lastrun = Some(k.daemon_lastrun_jiffies);
            kevents = Some((k.events_cleared, k.events));
        }
        Err(e) => eprintln!(
            "md-bitmap: cannot find {}'s kernel objects ({e:#}); recording every array's daemon and superblock events",
            info.name
        ),
    }
    let variant = variant_for(&abi);
    let mut dirty = Vec::new();
    let chunks = disk.geometry.chunks();
    let mut c = 0;
    while c < chunks {
        if disk.bits[(c / 8) as usize] >> (c % 8) & 1 != 0 {
            let s = c;
            while c < chunks && disk.bits[(c / 8) as usize] >> (c % 8) & 1 != 0 {
                c += 1;
            }
            dirty.push((s, c));
        } else {
            c += 1;
        }
    }
    let header = TraceHeader {
        array: info.name.clone(),
        level: info.level.clone(),
        layout: info.layout,
        raid_disks: info.raid_disks,
        chunk_size_bytes: info.chunk_size_bytes,
        component_size_kib: info.component_size_kib,
        array_sectors: info.array_sectors,
        bitmap_chunk_bytes: disk.geometry.chunk_size(),
        bitmap_sync_sectors: disk.geometry.sync_size(),
        bitmap_space_sectors: bm.space_sectors,
        bitmap_location: bm.location.clone(),
        daemon_sleep_secs: bm.time_base_secs,
        active_members: info
            .members
            .iter()
            .filter(|m| m.slot.is_some() && !m.faulty())
            .count() as u32,
        sync_speed_max_kibs: info.sync_speed_max_kibs,
        kernel_release: uname_release(),
        kernel_variant: crate::tune::replay::variant_name(variant).to_string(),
        accounting: if abi.write_args == WriteArgs::Plain {
            "per-bio"
        } else {
            "per-stripe"
        }
        .to_string(),
        initial_dirty: dirty,
        // md's own counters when readable (the on-disk copy lags `mddev->events`).
        initial_events: kevents.unwrap_or((disk.events_cleared, disk.events)),
        start_ns: monotonic_ns(),
        daemon_lastrun_jiffies: lastrun,
        initial_array_state: Some(info.array_state.clone()),
    };
    let file = std::fs::File::create(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))?;
    let mut w = TraceWriter::new(BufWriter::new(file), &header)?;
    if let Some(p) = &args.ready_file {
        std::fs::write(p, b"")?;
    }
    eprintln!(
        "md-bitmap: recording writes of {} to {}",
        info.name,
        args.output.display()
    );
    let deadline = args
        .duration
        .map(|d| Instant::now() + Duration::from_secs_f64(d));
    let mut pending = Pending {
        lastrun,
        ..Pending::default()
    };
    let r = record_loop(
        &mut feed,
        &abi,
        &owners,
        aref.dev,
        deadline,
        stop,
        &mut pending,
        &mut w,
    );
    // Whatever happened, write out everything recorded.
    let fin = pending
        .drain_ready(&mut w, u64::MAX, true)
        .and_then(|_| w.flush());
    let (events, bytes) = (w.events, w.bytes);
    r?;
    fin?;
    let c = feed.counters()?;
    eprintln!(
        "md-bitmap: {events} events, {bytes} bytes written; kernel emitted {}, dropped {}",
        c.emitted, c.dropped
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn record_loop<W: std::io::Write>(
    feed: &mut Feed,
    abi: &BitmapAbi,
    owners: &[u64],
    dev: crate::feed::record::DevNum,
    deadline: Option<Instant>,
    stop: &AtomicBool,
    pending: &mut Pending,
    w: &mut TraceWriter<W>,
) -> Result<()> {
    let mut batch = Vec::new();
    let mut last_flush = Instant::now();
    let ours = |o: u64| owners.is_empty() || owners.contains(&o);
    // The array's md thread(s): the threads that called the daemon for it.
    let mut md_tids: Vec<u32> = Vec::new();
    loop {
        let stopping =
            deadline.is_some_and(|d| Instant::now() >= d) || stop.load(Ordering::Relaxed);
        batch.clear();
        feed.drain(|r| batch.push(*r))?;
        for r in &batch {
            if r.kind == RecordKind::ThreadRunEnd as u32 {
                if md_tids.contains(&r.tid) {
                    pending.insert(TraceEvent::ThreadSleep { t_ns: r.ts_ns });
                }
                continue;
            }
            let Some(ev) = FeedEvent::decode(r, abi) else {
                continue;
            };
            let t = ev.ts_ns;
            match ev.kind {
                EventKind::BioQueue {
                    dev: d,
                    sector,
                    sectors,
                    rwbs,
                    ..
                } if d == dev && rwbs == "W" && sectors > 0 => pending.insert(TraceEvent::Write {
                    t_ns: t,
                    sector,
                    sectors,
                    latency_ns: None,
                }),
                EventKind::BioComplete {
                    dev: d,
                    sector,
                    sectors,
                    rwbs,
                    ..
                } if d == dev && rwbs == "W" => pending.complete(sector, sectors, t),
                EventKind::DaemonWork { mddev } if ours(mddev) => {
                    if !md_tids.contains(&ev.tid) {
                        md_tids.push(ev.tid);
                    }
                    pending.daemon_open.push((ev.tid, t));
                    pending.insert(TraceEvent::Daemon {
                        t_ns: t,
                        jiffies: ev.jiffies,
                    })
                }
                EventKind::DaemonDone { mddev, lastrun } if ours(mddev) => {
                    pending.daemon_done(ev.tid, lastrun)
                }
                EventKind::UpdateSb { owner, .. } if ours(owner) => {
                    pending.insert(TraceEvent::UpdateSb { t_ns: t })
                }
                EventKind::Unplug { owner } if ours(owner) => {
                    pending.insert(TraceEvent::Unplug { t_ns: t })
                }
                _ => {}
            }
        }
        pending.drain_ready(w, monotonic_ns(), false)?;
        if last_flush.elapsed() >= Duration::from_secs(1) {
            w.flush()?;
            last_flush = Instant::now();
        }
        if stopping {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daemon_jiffies(p: &Pending) -> Vec<u64> {
        p.q.iter()
            .filter_map(|e| match e {
                TraceEvent::Daemon { jiffies, .. } => Some(*jiffies),
                _ => None,
            })
            .collect()
    }

    /// A daemon entry is held until its return; a pass that ran (the kernel's `daemon_lastrun`
    /// moved) is recorded at the kernel's jiffies, one that did not keeps the entry's.
    #[test]
    fn daemon_entries_take_the_kernels_lastrun_when_the_pass_ran() {
        let mut p = Pending {
            lastrun: Some(900),
            ..Pending::default()
        };
        p.daemon_open.push((7, 100));
        p.insert(TraceEvent::Daemon {
            t_ns: 100,
            jiffies: 1000,
        });
        let mut w = TraceWriter::new(Vec::new(), &crate::trace::tests::header()).unwrap();
        p.drain_ready(&mut w, 200, false).unwrap();
        assert_eq!(p.q.len(), 1, "held until its return");
        p.daemon_done(7, Some(1003));
        assert_eq!(daemon_jiffies(&p), vec![1003]);
        p.drain_ready(&mut w, 300, false).unwrap();
        assert!(p.q.is_empty());

        // Not due: lastrun unchanged, the entry's jiffies stay.
        p.daemon_open.push((7, 400));
        p.insert(TraceEvent::Daemon {
            t_ns: 400,
            jiffies: 1100,
        });
        p.daemon_done(7, Some(1003));
        assert_eq!(daemon_jiffies(&p), vec![1100]);
        assert!(p.daemon_open.is_empty());
    }

    /// A return pairs with its thread's newest open entry; an older entry of the same thread
    /// whose return was lost is dropped from the open list, not paired.
    #[test]
    fn daemon_return_pairs_with_the_threads_newest_entry() {
        let mut p = Pending {
            lastrun: Some(900),
            ..Pending::default()
        };
        for (tid, t, j) in [(7, 100, 1000), (8, 150, 1001), (7, 400, 1100)] {
            p.daemon_open.push((tid, t));
            p.insert(TraceEvent::Daemon {
                t_ns: t,
                jiffies: j,
            });
        }
        p.daemon_done(7, Some(1102));
        // The entry at 400 ran the pass (at the kernel's 1102); the stale one at 100 keeps its
        // jiffies; thread 8's call is still open.
        assert_eq!(daemon_jiffies(&p), vec![1000, 1001, 1102]);
        assert_eq!(p.daemon_open, vec![(8, 150)]);
        let mut w = TraceWriter::new(Vec::new(), &crate::trace::tests::header()).unwrap();
        p.drain_ready(&mut w, 500, false).unwrap();
        assert_eq!(p.q.len(), 2, "only thread 8's open call holds the queue");
    }
}
