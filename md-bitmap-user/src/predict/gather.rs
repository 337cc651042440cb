//! The I/O side of the prediction: sysfs, `/proc/sys/dev/raid`, the on-disk bitmap and
//! superblock (O_DIRECT reads), the array's I/O over a short window, and each member's read
//! throughput (a short O_DIRECT read of its data area; never a write). Then `md-bitmap predict`.
use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::{BitmapInput, Inputs, MemberInput, Prediction, predict};
use crate::ondisk::{ReadAt, read_member};
use crate::sysfs::{ArrayInfo, Sysfs};
use crate::units;

/// `md-bitmap predict` arguments.
#[derive(clap::Args, Debug)]
pub struct PredictArgs {
    /// Only these arrays (md0, /dev/md0); default all.
    #[arg(long)]
    pub array: Vec<String>,
    /// Print JSON, one prediction per line (schema: docs/schema/predict.schema.json).
    #[arg(long)]
    pub json: bool,
    /// MiB to read from each member (O_DIRECT, sequential, from its data area) to measure its
    /// throughput; 0 skips the measurement (durations then assume members outrun speed_max).
    #[arg(long, default_value_t = 4)]
    pub measure_mib: u64,
    /// A device you mean to add or re-add (e.g. /dev/sdc): its md superblock (if any) decides
    /// between a bitmap-based re-add and a full recovery. Read only.
    #[arg(long)]
    pub device: Option<std::path::PathBuf>,
    /// Do not read md's in-memory counters (through BPF) for the NEEDED chunks of a re-add;
    /// take them as the bits set on disk instead (an upper bound).
    #[arg(long)]
    pub no_kernel: bool,
    /// Seconds to sample the array's I/O counters to decide whether it is busy.
    #[arg(long, default_value_t = 0.5)]
    pub sample_secs: f64,
}

/// Ranges of set bits in a bit area (chunk i in byte i/8, bit i%8).
pub fn bit_ranges(bits: &[u8], chunks: u64) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::new();
    for c in 0..chunks {
        if bits
            .get((c / 8) as usize)
            .is_some_and(|b| b >> (c % 8) & 1 == 1)
        {
            match out.last_mut() {
                Some(r) if r.end == c => r.end = c + 1,
                _ => out.push(c..c + 1),
            }
        }
    }
    out
}

/// The system-wide limits, `/proc/sys/dev/raid/speed_limit_{min,max}`.
fn proc_limit(name: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/sys/dev/raid/{name}"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Sectors read + written on a block device so far (`/sys/block/X/stat` fields 3 and 7).
pub fn io_sectors(dev: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/sys/block/{dev}/stat")).ok()?;
    let f: Vec<u64> = s
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    Some(*f.get(2)? + *f.get(6)?)
}

/// Sequential read throughput of `dev` in KiB/s: `mib` MiB with O_DIRECT from `offset`.
fn measure_read(dev: &str, offset: u64, mib: u64) -> Result<f64> {
    let path = Path::new("/dev").join(dev);
    let m = crate::ondisk::MemberDevice::open(&path)?;
    let len = (mib << 20).min(m.size_bytes().saturating_sub(offset));
    if len == 0 {
        anyhow::bail!("{} has no data to read at {offset}", path.display());
    }
    let mut buf = vec![0u8; 1 << 20];
    let t = Instant::now();
    let mut pos = 0;
    while pos < len {
        let n = (len - pos).min(buf.len() as u64) as usize;
        m.read_exact_at(offset + pos, &mut buf[..n])?;
        pos += n as u64;
    }
    let secs = t.elapsed().as_secs_f64().max(1e-6);
    Ok(len as f64 / 1024.0 / secs)
}

/// md's defaults for `speed_limit_min` / `speed_limit_max` (md.c `sysctl_speed_limit_*`).
const DEFAULT_SPEED_MIN: u64 = 1000;
const DEFAULT_SPEED_MAX: u64 = 200_000;

/// Inputs from sysfs alone, no I/O (what snapshots use, with the mirror's bitmap). The per-array
/// `sync_speed_min/max` already show the system value when no local one is set.
pub fn inputs_from_info(info: &ArrayInfo) -> Inputs {
    let speed_min = info.sync_speed_min_kibs.unwrap_or(DEFAULT_SPEED_MIN);
    let speed_max = info.sync_speed_max_kibs.unwrap_or(DEFAULT_SPEED_MAX);
    Inputs {
        name: info.name.clone(),
        level: info.level.clone(),
        raid_disks: info.raid_disks,
        dev_sectors: info.component_size_kib * 2,
        layout: info.layout,
        chunk_size_bytes: info.chunk_size_bytes,
        array_state: info.array_state.clone(),
        safe_mode_delay_secs: info.safe_mode_delay_secs,
        resync_start: info.resync_start_sectors,
        members: info
            .members
            .iter()
            .map(|m| MemberInput {
                name: m.name.clone(),
                slot: m.slot,
                in_sync: m.in_sync(),
                faulty: m.faulty(),
                write_mostly: m.write_mostly(),
                read_kibs: None,
            })
            .collect(),
        bitmap: None,
        sb_events: None,
        sync_action: info.sync_action.clone(),
        sync_completed: info.sync_completed,
        sync_speed_kibs: info.sync_speed_kibs,
        speed_min_kibs: speed_min,
        speed_max_kibs: speed_max,
        busy: None,
        candidate: None,
        notes: vec![],
        kernel: running_kernel(),
    }
}

/// The running kernel's `major.minor`, read once from `/proc/sys/kernel/osrelease`.
fn running_kernel() -> Option<(u32, u32)> {
    static K: std::sync::OnceLock<Option<(u32, u32)>> = std::sync::OnceLock::new();
    *K.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .and_then(|r| super::parse_release(&r))
    })
}

/// Gathers everything for one array: sysfs, the on-disk bitmap and superblock of its first
/// in-sync member, the array's I/O over `sample`, and each member's read throughput.
pub fn gather(
    info: &ArrayInfo,
    measure_mib: u64,
    sample: Duration,
    device: Option<&Path>,
    kernel: Option<&mut KernelNeeded>,
) -> Result<Inputs> {
    let mut inp = inputs_from_info(info);
    if info.sync_speed_min_kibs.is_none()
        && let Some(v) = proc_limit("speed_limit_min")
    {
        inp.speed_min_kibs = v;
    }
    if info.sync_speed_max_kibs.is_none()
        && let Some(v) = proc_limit("speed_limit_max")
    {
        inp.speed_max_kibs = v;
    }
    inp.notes.push(
        "dirty chunks: the bitmap on disk, read with O_DIRECT from the first in-sync member now (what md_bitmap_init_from_disk would load)".into(),
    );
    if info.bitmap.is_some() {
        let m = info
            .members
            .iter()
            .find(|m| m.in_sync() && !m.faulty())
            .with_context(|| {
                format!(
                    "{} has no in-sync member to read the bitmap from",
                    info.name
                )
            })?;
        let (_, mb) = read_member(&Path::new("/dev").join(&m.name))?;
        let g = mb
            .geometry
            .with_context(|| format!("{}: no classic bitmap on {}", info.name, m.name))?;
        let mut bits = vec![0u8; g.chunks.div_ceil(8) as usize];
        for r in mb.dirty().dirty_ranges {
            for c in r {
                bits[(c / 8) as usize] |= 1 << (c % 8);
            }
        }
        inp.sb_events = Some(mb.superblock.events);
        if let Some(d) = device {
            inp.candidate = Some(candidate(d, &mb.superblock.array_uuid)?);
        }
        inp.bitmap = Some(BitmapInput {
            chunk_bytes: g.chunk_size_bytes,
            sync_size_sectors: mb.bitmap.sync_size_sectors,
            dirty_on_disk: bit_ranges(&bits, g.chunks),
            needed: None,
            events: mb.bitmap.events,
            events_cleared: mb.bitmap.events_cleared,
        });
        // NEEDED matters for a re-add (degraded) and a running sync only.
        let wanted = info.degraded > 0 || !matches!(info.sync_action.as_str(), "idle" | "frozen");
        let k = match kernel {
            _ if !wanted => Err(anyhow::anyhow!(
                "not needed: the array is not degraded and not syncing"
            )),
            Some(k) => k.needed(info),
            None => Err(anyhow::anyhow!("--no-kernel")),
        };
        match k {
            Ok(needed) => {
                inp.bitmap.as_mut().unwrap().needed = Some(needed);
                inp.notes.push(
                    "re-add and running syncs: the NEEDED chunks read from md's in-memory counters (bitmap->counts, through BPF)".into(),
                );
            }
            Err(e) => inp.notes.push(format!(
                "re-add: md's in-memory counters not read ({e:#}); the NEEDED chunks are taken as those set on disk (an upper bound: chunks written before a failure and not yet cleared by the daemon are counted)"
            )),
        }
    }
    if !sample.is_zero() {
        let before = io_sectors(&info.name);
        std::thread::sleep(sample);
        let after = io_sectors(&info.name);
        if let (Some(a), Some(b)) = (before, after) {
            inp.busy = Some(b > a);
            inp.notes.push(format!(
                "busy: {} sectors of array I/O in a {:.1} s sample of /sys/block/{}/stat",
                b - a,
                sample.as_secs_f64(),
                info.name
            ));
        }
    }
    if measure_mib > 0 {
        for (mi, m) in inp.members.iter_mut().enumerate() {
            if m.faulty {
                continue;
            }
            let off = info.members[mi].data_offset_sectors * 512;
            match measure_read(&m.name, off, measure_mib) {
                Ok(k) => m.read_kibs = Some(k),
                Err(e) => inp
                    .notes
                    .push(format!("could not measure {}: {e:#}", m.name)),
            }
        }
        inp.notes.push(format!(
            "member throughput: {measure_mib} MiB sequential O_DIRECT read of each member's data area (cold for the device, may hit a host cache under virtualisation)"
        ));
    }
    Ok(inp)
}

/// Reads the chunks NEEDED in md's own counters from kernel memory (through BPF), loading the
/// BPF programs once for all arrays.
#[derive(Default)]
pub struct KernelNeeded {
    state: Option<
        std::result::Result<
            (
                crate::feed::kstate::KernelStateReader,
                crate::feed::ebpf::Feed,
            ),
            String,
        >,
    >,
}

impl KernelNeeded {
    /// The chunk ranges of `info`'s bitmap that a sync would copy: NEEDED or RESYNC.
    pub fn needed(&mut self, info: &ArrayInfo) -> Result<Vec<Range<u64>>> {
        use crate::feed::{KernelSymbols, ebpf::Feed, kstate::KernelStateReader};
        let st = self.state.get_or_insert_with(|| {
            (|| -> Result<_> {
                let syms = KernelSymbols::load()?;
                let reader = KernelStateReader::new(&syms)?;
                let mut feed = Feed::load()?;
                feed.load_peek()?;
                Ok((reader, feed))
            })()
            .map_err(|e| format!("{e:#}"))
        });
        let (reader, feed) = st.as_mut().map_err(|e| anyhow::anyhow!("{e}"))?;
        let mddev = reader.find_mddev(feed, info.dev)?;
        let k = reader.read(feed, mddev)?;
        let mut out: Vec<Range<u64>> = Vec::new();
        for (c, v) in k.counters.iter().enumerate() {
            // __bitmap_start_sync() syncs a chunk whose counter is NEEDED or RESYNC (a sync
            // already started on it, e.g. ahead of a running recovery's checkpoint).
            if v & (crate::engine::NEEDED_MASK | crate::engine::RESYNC_MASK) != 0 {
                let c = c as u64;
                match out.last_mut() {
                    Some(r) if r.end == c => r.end = c + 1,
                    _ => out.push(c..c + 1),
                }
            }
        }
        Ok(out)
    }
}

/// Reads the superblock of a device to be added.
fn candidate(dev: &Path, array_uuid: &[u8; 16]) -> Result<super::CandidateInput> {
    let m = crate::ondisk::MemberDevice::open(dev)?;
    let superblock = match crate::ondisk::find_superblock(&m) {
        Ok(sb) => Some((
            &sb.array_uuid == array_uuid,
            sb.events,
            match sb.role {
                crate::ondisk::DeviceRole::Active(s) => Some(s),
                _ => None,
            },
        )),
        Err(_) => None,
    };
    Ok(super::CandidateInput {
        name: dev.display().to_string(),
        superblock,
    })
}

fn cost_text(out: &mut String, title: &str, c: &super::Cost) {
    use std::fmt::Write;
    let _ = writeln!(out, "  {title}: {:?} — {}", c.kind, c.reason);
    if c.sync_bytes_per_member > 0 {
        let _ = writeln!(
            out,
            "    {} per member{}; read {}, written {}",
            units::bytes(c.sync_bytes_per_member),
            if c.chunks > 0 {
                format!(" ({} bitmap chunks)", c.chunks)
            } else {
                String::new()
            },
            units::bytes(c.total_read_bytes),
            units::bytes(c.total_write_bytes)
        );
        for m in &c.members {
            let wmax = if m.write_bytes_max > m.write_bytes {
                format!(" (up to {})", units::bytes(m.write_bytes_max))
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "    {:<16} slot {:<4} {:<20} read {:>10}  write {:>10}{wmax}",
                m.name,
                m.slot.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
                m.role,
                units::bytes(m.read_bytes),
                units::bytes(m.write_bytes)
            );
        }
    }
    if let Some(d) = &c.duration {
        let _ = writeln!(
            out,
            "    duration ≈ {} idle ({:.0} KiB/s, limited by {}), ≤ {} if busy; expected {}",
            units::duration(d.idle_secs),
            d.rate_kibs,
            d.limited_by,
            units::duration(d.busy_secs_max),
            units::duration(d.expected_secs)
        );
    }
}

/// One prediction as text (what `md-bitmap predict` prints without `--json`).
pub fn render_text(p: &Prediction) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {}: component {}{}",
        p.array,
        p.level,
        units::bytes(p.component_bytes),
        p.bitmap_chunk_bytes
            .map(|c| format!(", bitmap chunk {}", units::bytes(c)))
            .unwrap_or_else(|| ", no bitmap".into())
    );
    cost_text(&mut out, "crash now", &p.crash_now);
    for r in &p.re_add {
        cost_text(
            &mut out,
            &format!(
                "re-add slot {}{}",
                r.slot.map(|s| s.to_string()).unwrap_or_default(),
                r.member
                    .as_ref()
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default()
            ),
            r,
        );
    }
    if p.re_add.is_empty() {
        let _ = writeln!(out, "  re-add: no member is missing or failed");
    }
    if let Some(r) = &p.running {
        let _ = writeln!(
            out,
            "  running {}: {} left by the bitmap ({} by sync_completed), ETA {} (sync_completed alone: {}) at {} KiB/s",
            r.action,
            units::bytes(r.remaining_bytes),
            units::bytes(r.remaining_bytes_naive),
            r.eta_secs.map_or("-".into(), units::duration),
            r.eta_naive_secs.map_or("-".into(), units::duration),
            r.sync_speed_kibs
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into())
        );
    }
    let _ = writeln!(out, "  assumptions:");
    for a in &p.assumptions {
        let _ = writeln!(out, "    - {a}");
    }
    out
}

/// `md-bitmap predict`.
pub fn run(args: &PredictArgs) -> Result<()> {
    if !(0.0..=60.0).contains(&args.sample_secs) {
        anyhow::bail!("--sample-secs must be between 0 and 60");
    }
    let sysfs = Sysfs::default();
    let arrays = if args.array.is_empty() {
        sysfs.arrays()?
    } else {
        args.array
            .iter()
            .map(|a| sysfs.find_array(a))
            .collect::<Result<Vec<_>>>()?
    };
    if arrays.is_empty() {
        anyhow::bail!("no md arrays");
    }
    let mut kernel = KernelNeeded::default();
    for a in arrays {
        let info = sysfs.array_info(&a)?;
        if info.level.is_empty() || info.array_state == "inactive" {
            eprintln!("md-bitmap: {} is inactive; skipped", info.name);
            continue;
        }
        let inp = gather(
            &info,
            args.measure_mib,
            Duration::from_secs_f64(args.sample_secs),
            args.device.as_deref(),
            (!args.no_kernel).then_some(&mut kernel),
        )?;
        let p = predict(&inp);
        if args.json {
            println!("{}", serde_json::to_string(&p)?);
        } else {
            print!("{}", render_text(&p));
        }
    }
    Ok(())
}
