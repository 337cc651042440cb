//! `md-bitmap tune`: replay a recorded write trace under candidate bitmap chunk sizes and
//! recommend one.
//!
//! Each size is replayed through the engine ([`replay`]); the figures per size are the
//! synchronous bitmap updates (bits set), bitmap page writes and their rate, on-disk dirty
//! bytes over time (time-weighted mean, p99, max), a predicted crash resync and the kernel
//! memory the bitmap takes.
//!
//! Crash-resync model (simple, documented; the `predict` module does the full job): a crash
//! at time t resyncs every chunk dirty on disk at t (`md_bitmap_load()` marks them NEEDED),
//! so the expected resync bytes for a crash at a random moment are the time-weighted mean
//! dirty bytes, the worst case the maximum; durations divide by the resync speed (the array's
//! `sync_speed_max` when recorded, else `--resync-speed`). Bytes are bitmap-space bytes: per
//! member for raid1/4/5/6, of the array for raid10, the unit md's `sync_speed` counts in.
pub mod chart;
#[cfg(test)]
mod reference;
pub mod replay;
pub mod svg;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Result, bail};
use rayon::prelude::*;
use serde::Serialize;

pub use replay::{DaemonMode, ReplayInput, ReplayOptions, SizeResult, counter_floor, replay};

use crate::engine::{BITMAP_SB_BYTES, BitmapGeometry, MAX_CHUNK_SIZE};
use crate::trace::{TraceLoss, read_trace_file};
use crate::units;

/// The smallest candidate chunk size (4 KiB, one page).
pub const MIN_CANDIDATE: u64 = 4096;

/// What the recommendation optimises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Objective {
    /// The size minimising log(page writes / best) + log(expected resync / best): neither
    /// overhead nor resync far from their best.
    Balanced,
    /// Smallest expected crash resync (ties: fewer page writes).
    MinResync,
    /// Fewest bitmap page writes (ties: smaller resync).
    MinOverhead,
}

/// `md-bitmap tune` arguments.
#[derive(clap::Args, Debug)]
pub struct TuneArgs {
    /// Trace written by `md-bitmap record`.
    pub trace: PathBuf,
    /// Chunk sizes to try, comma-separated (4K, 64K, 1M, 65536, ...); default every power of
    /// two from 4 KiB (or the smallest whose bitmap fits the array's bitmap space) up to the
    /// one covering the whole array, plus the size in use.
    #[arg(long, value_delimiter = ',', value_parser = parse_size)]
    pub chunk_sizes: Vec<u64>,
    /// What to recommend for.
    #[arg(long, value_enum, default_value_t = Objective::Balanced)]
    pub objective: Objective,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write the trade-off curve (page writes and expected resync per chunk size) to this SVG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Resync speed for the duration model (e.g. 200M = 200 MiB/s); default the array's
    /// sync_speed_max from the trace, else 200000K (md's default).
    #[arg(long, value_parser = parse_size)]
    pub resync_speed: Option<u64>,
    /// How the md thread's wake-ups into the bitmap daemon are replayed.
    #[arg(long, value_enum, default_value_t = DaemonMode::Recorded)]
    pub daemon: DaemonMode,
    /// Replay only the first SECS seconds of the trace.
    #[arg(long, value_name = "SECS")]
    pub until: Option<f64>,
    /// Show the trade-off curve and the table in the terminal (the table's columns fit its
    /// width; ↑/↓ scroll it on a short terminal; q or Esc quits).
    #[arg(long, conflicts_with = "json")]
    pub tui: bool,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Parses a byte size: a number with an optional K/M/G suffix (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('G') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{s:?} is not a size (e.g. 64K, 1M, 4096)"))
}

/// Human size: 4K, 64M, 1G (exact powers), else bytes.
pub fn human(b: u64) -> String {
    for (sfx, sh) in [("G", 30), ("M", 20), ("K", 10)] {
        if b >= 1 << sh && b.is_multiple_of(1 << sh) {
            return format!("{}{}", b >> sh, sfx);
        }
    }
    format!("{b}")
}

/// Whether a bitmap of `chunk` bytes over `sync_sectors` fits `space_sectors` (0: unknown,
/// no limit): the superblock and one bit per chunk (`md_bitmap_resize()`:
/// `bytes = DIV_ROUND_UP(chunks, 8) + sizeof(bitmap_super_t)` against `bitmap_info.space`).
pub fn fits(chunk: u64, sync_sectors: u64, space_sectors: u64) -> bool {
    let chunks = (sync_sectors * 512).div_ceil(chunk);
    space_sectors == 0 || (chunks.div_ceil(8) + BITMAP_SB_BYTES).div_ceil(512) <= space_sectors
}

/// The default candidates: powers of two from 4 KiB (or the smallest that fits the bitmap
/// space) to the first size that covers the whole bitmap space in one chunk, plus `in_use`.
pub fn default_candidates(sync_sectors: u64, space_sectors: u64, in_use: u64) -> Vec<u64> {
    let top = (sync_sectors * 512)
        .next_power_of_two()
        .clamp(MIN_CANDIDATE, MAX_CHUNK_SIZE);
    let mut v: Vec<u64> = (12..=31)
        .map(|s| 1u64 << s)
        .filter(|&c| c <= top && fits(c, sync_sectors, space_sectors))
        .collect();
    if in_use > 0 && !v.contains(&in_use) {
        v.push(in_use);
    }
    v.sort_unstable();
    v
}

/// The recommended size for `objective`, an index into `results`.
pub fn recommend(results: &[SizeResult], objective: Objective) -> Option<usize> {
    let pw = |r: &SizeResult| r.page_writes_total as f64 + 1.0;
    let rs = |r: &SizeResult| r.resync_mean_bytes + 1.0;
    let best_pw = results.iter().map(pw).fold(f64::INFINITY, f64::min);
    let best_rs = results.iter().map(rs).fold(f64::INFINITY, f64::min);
    let key = |r: &SizeResult| -> (f64, f64) {
        match objective {
            Objective::MinOverhead => (pw(r), rs(r)),
            Objective::MinResync => (rs(r), pw(r)),
            Objective::Balanced => ((pw(r) / best_pw).ln() + (rs(r) / best_rs).ln(), pw(r)),
        }
    };
    (0..results.len()).min_by(|&a, &b| {
        key(&results[a])
            .partial_cmp(&key(&results[b]))
            .expect("finite scores")
    })
}

/// The mdadm commands that switch `array` to a bitmap of `chunk` bytes.
pub fn mdadm_commands(array: &str, chunk: u64) -> Vec<String> {
    let dev = if array.starts_with("/dev/") {
        array.to_string()
    } else {
        format!("/dev/{array}")
    };
    vec![
        format!("mdadm --grow {dev} --bitmap=none"),
        format!(
            "mdadm --grow {dev} --bitmap=internal --bitmap-chunk={}",
            human(chunk)
        ),
    ]
}

/// Everything `tune` reports.
#[derive(Clone, Debug, Serialize)]
pub struct TuneReport {
    /// Array the trace was recorded on.
    pub array: String,
    /// Kernel it ran.
    pub kernel_release: String,
    /// Array writes replayed.
    pub writes: u64,
    /// Of which without a recorded completion.
    pub writes_without_latency: u64,
    /// Trace span, seconds.
    pub span_secs: f64,
    /// What the reader could not use.
    pub trace_loss: TraceLoss,
    /// Daemon wake-ups actually used.
    pub daemon: DaemonMode,
    /// Resync speed of the model, bytes/s.
    pub resync_bytes_per_sec: f64,
    /// Per chunk size, ascending.
    pub results: Vec<SizeResult>,
    /// The objective.
    pub objective: Objective,
    /// The recommended chunk size, bytes.
    pub recommended_chunk_bytes: u64,
    /// mdadm commands applying it (empty if it is the size in use).
    pub commands: Vec<String>,
}

/// Replays `input` under each of `sizes` in parallel; `progress` counts replayed steps.
pub fn replay_all(
    input: &ReplayInput,
    sizes: &[u64],
    opts: &ReplayOptions,
    progress: Option<&AtomicU64>,
) -> Result<Vec<SizeResult>> {
    let mut out = sizes
        .par_iter()
        .map(|&c| {
            let r = replay(input, c, opts);
            if let Some(p) = progress {
                p.fetch_add(input.steps.len() as u64, Ordering::Relaxed);
            }
            r
        })
        .collect::<Result<Vec<_>>>()?;
    out.sort_by_key(|r| r.chunk_bytes);
    Ok(out)
}

/// Runs `md-bitmap tune`.
pub fn run(args: &TuneArgs) -> Result<()> {
    let trace = read_trace_file(&args.trace)?;
    if !trace.loss.is_empty() {
        eprintln!(
            "md-bitmap: trace {} is damaged ({}); replaying the {} intact block(s)",
            args.trace.display(),
            trace.loss,
            trace.blocks
        );
    }
    let mut input = ReplayInput::new(&trace)?;
    if let Some(u) = args.until {
        if u.is_nan() || u < 0.0 {
            bail!("--until must be a number of seconds >= 0");
        }
        let start = input.span_ns.0;
        input = input.until(start.saturating_add((u * 1e9) as u64));
    }
    if input.writes == 0 {
        bail!("the trace holds no writes: nothing to tune");
    }
    let h = &input.header;
    let mut sizes = if args.chunk_sizes.is_empty() {
        default_candidates(
            h.bitmap_sync_sectors,
            h.bitmap_space_sectors,
            h.bitmap_chunk_bytes,
        )
    } else {
        args.chunk_sizes.clone()
    };
    sizes.sort_unstable();
    sizes.dedup();
    for &c in &sizes {
        if BitmapGeometry::new(c, h.bitmap_sync_sectors).is_err() {
            bail!(
                "chunk size {c} is not a power of two between 512 bytes and {}",
                human(MAX_CHUNK_SIZE)
            );
        }
    }
    let speed = args
        .resync_speed
        .or(h.sync_speed_max_kibs.map(|k| k * 1024))
        .unwrap_or(200_000 * 1024) as f64;
    let daemon = if args.daemon == DaemonMode::Recorded && !input.has_daemon_events() {
        DaemonMode::Modelled
    } else {
        args.daemon
    };
    if daemon == DaemonMode::Recorded && !input.has_thread_sleep && !args.quiet {
        eprintln!(
            "md-bitmap: the trace has no md thread run ends (format version 1, or the probe was not attached): for sizes other than the one in use, the daemon's timer counts from the daemon calls"
        );
    }
    let opts = ReplayOptions {
        daemon,
        resync_bytes_per_sec: speed,
    };
    let total = input.steps.len() as u64 * sizes.len() as u64;
    let show_bar =
        !args.quiet && total >= 2_000_000 && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let progress = AtomicU64::new(0);
    let done = std::sync::atomic::AtomicBool::new(false);
    let results = std::thread::scope(|s| -> Result<Vec<SizeResult>> {
        let bar_thread = show_bar.then(|| {
            let (progress, done) = (&progress, &done);
            s.spawn(move || {
                let bar = indicatif::ProgressBar::new(total);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "replaying {bar:40} {percent:>3}% {per_sec} eta {eta}",
                    )
                    .expect("valid template"),
                );
                while !done.load(Ordering::Relaxed) {
                    bar.set_position(progress.load(Ordering::Relaxed));
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                bar.finish_and_clear();
            })
        });
        let r = replay_all(&input, &sizes, &opts, Some(&progress));
        done.store(true, Ordering::Relaxed);
        if let Some(t) = bar_thread {
            let _ = t.join();
        }
        r
    })?;
    let best = recommend(&results, args.objective).expect("at least one size");
    let rec = results[best].chunk_bytes;
    let report = TuneReport {
        array: h.array.clone(),
        kernel_release: h.kernel_release.clone(),
        writes: input.writes,
        writes_without_latency: input.writes_without_latency,
        span_secs: input.span_ns.1.saturating_sub(input.span_ns.0) as f64 / 1e9,
        trace_loss: trace.loss.clone(),
        daemon,
        resync_bytes_per_sec: speed,
        objective: args.objective,
        recommended_chunk_bytes: rec,
        commands: if rec == h.bitmap_chunk_bytes {
            Vec::new()
        } else {
            mdadm_commands(&h.array, rec)
        },
        results,
    };
    if let Some(p) = &args.plot {
        std::fs::write(p, svg::tradeoff_svg(&report))
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", p.display()))?;
    }
    if args.tui {
        chart::show(&report)?;
    } else if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_table(&report));
    }
    Ok(())
}

/// The text report.
pub fn render_table(r: &TuneReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}: {} writes over {:.1} s (kernel {}; daemon wake-ups {}; resync at {}/s)",
        r.array,
        r.writes,
        r.span_secs,
        r.kernel_release,
        match r.daemon {
            DaemonMode::Recorded => "recorded",
            DaemonMode::Modelled => "modelled",
        },
        units::bytes_f(r.resync_bytes_per_sec)
    );
    let _ = writeln!(
        s,
        "{:>7} {:>10} {:>11} {:>8} {:>10} {:>10} {:>10} {:>17} {:>17} {:>10}",
        "chunk",
        "bits set",
        "page wr",
        "wr/s",
        "dirty avg",
        "dirty p99",
        "dirty max",
        "crash resync avg",
        "crash resync max",
        "memory"
    );
    for x in &r.results {
        let mark = match (x.in_use, x.chunk_bytes == r.recommended_chunk_bytes) {
            (true, true) => " *<",
            (true, false) => " *",
            (false, true) => " <",
            _ => "",
        };
        let _ = writeln!(
            s,
            "{:>7} {:>10} {:>11} {:>8.2} {:>10} {:>10} {:>10} {:>17} {:>17} {:>10}{}",
            human(x.chunk_bytes),
            x.bits_set,
            x.page_writes_total,
            x.page_writes_per_sec,
            units::bytes_f(x.dirty_mean_bytes),
            units::bytes_f(x.dirty_p99_bytes as f64),
            units::bytes_f(x.dirty_max_bytes as f64),
            units::duration(x.resync_mean_secs),
            units::duration(x.resync_max_secs),
            units::bytes_f(x.memory_peak_bytes as f64),
            mark
        );
    }
    let _ = writeln!(
        s,
        "* in use, < recommended ({}): {}",
        match r.objective {
            Objective::Balanced => "balanced",
            Objective::MinResync => "min-resync",
            Objective::MinOverhead => "min-overhead",
        },
        human(r.recommended_chunk_bytes)
    );
    if r.commands.is_empty() {
        let _ = writeln!(s, "the chunk size in use is already the recommended one");
    } else {
        let _ = writeln!(
            s,
            "to apply (the array runs without a bitmap between the two commands):"
        );
        for c in &r.commands {
            let _ = writeln!(s, "  {c}");
        }
    }
    s
}

#[cfg(test)]
mod tests;
