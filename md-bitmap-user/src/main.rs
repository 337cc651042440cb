//! The `md-bitmap` command: parse, wire, run. The work lives in the library (`md_bitmap`).
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::{Parser, Subcommand};
use md_bitmap::feed::{BitmapAbi, FeedEvent, KernelSymbols, ebpf::Feed};
use md_bitmap::sysfs::Sysfs;

/// See and steer the write-intent bitmap of Linux md RAID arrays while they run.
#[derive(Parser, Debug)]
#[command(name = "md-bitmap", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show the on-disk bitmap of member devices or image files, as `mdadm -X` does (works
    /// without root on image files).
    Inspect(md_bitmap::inspect::InspectArgs),
    /// Print one snapshot of every array's mirrored bitmap (live with root and BPF, else from
    /// the on-disk bitmap and sysfs, labelled so).
    Snapshot(SnapshotArgs),
    /// Stream snapshots of the live mirror: a summary line per array, or one JSON object per line
    /// with --ndjson.
    Watch(WatchArgs),
    /// Print the raw kernel events md-bitmap's eBPF feed sees, one JSON object per line
    /// (needs root). For checking the feed on a kernel; `watch` is the everyday view.
    Events(EventsArgs),
    /// Show which kernel functions and tracepoints md-bitmap would attach to on this kernel.
    Abi,
    /// Check the live mirror against the kernel's own bitmap counters (read from kernel memory)
    /// and the on-disk bitmap, repeatedly; prints one JSON record per array and check.
    Verify(VerifyArgs),
    /// Read md's own in-memory bitmap counters of an array from kernel memory (through BPF, with
    /// offsets from md_mod's BTF) and print them as JSON. A debugging oracle; needs root.
    KernelState(KernelStateArgs),
    /// Predict what a crash now, a re-add of a missing member, or the running sync will cost:
    /// bytes read and written per member and duration, with the assumptions (reads only).
    Predict(md_bitmap::predict::gather::PredictArgs),
    /// Serve Prometheus metrics of the live mirror and its alerts at http://ADDR/metrics
    /// (loopback by default), evaluating the alert rules as `watch` does.
    Serve(md_bitmap::serve::ServeArgs),
    /// Record a compact binary trace of an array's writes (time, sector, length) with its
    /// geometry, for `tune` (needs root). Ctrl-C or SIGTERM ends it with a valid file.
    Record(md_bitmap::trace::record::RecordArgs),
    /// Replay a recorded trace under candidate bitmap chunk sizes: bits set, bitmap page
    /// writes, dirty bytes, predicted crash resync and memory per size, and a recommendation
    /// with the mdadm commands that apply it.
    Tune(md_bitmap::tune::TuneArgs),
    /// The terminal view: every array's bitmap as a heatmap with counts and feed health (also
    /// what `md-bitmap` alone starts on a terminal).
    Tui(md_bitmap::tui::TuiArgs),
    /// Runs and kernel time of each loaded md-bitmap eBPF program (counted while
    /// `kernel.bpf_stats_enabled` is 1), for measuring the feed's cost; needs root.
    BpfStats(md_bitmap::feed::progstats::BpfStatsArgs),
}

#[derive(clap::Args, Debug)]
struct EventsArgs {
    /// Array to watch block I/O on (md0, /dev/md0, /dev/md/NAME); default all arrays.
    #[arg(long)]
    array: Vec<String>,
    /// Stop after this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Stop after this many events.
    #[arg(long)]
    count: Option<u64>,
    /// Create this file once the probes are attached (lets scripts start a workload then).
    #[arg(long)]
    ready_file: Option<std::path::PathBuf>,
    /// Also see bios queued on these block devices (e.g. members: md's own superblock and
    /// bitmap writes), as MAJOR:MINOR or /dev path.
    #[arg(long)]
    device: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct SnapshotArgs {
    /// Only these arrays (md0, /dev/md0); default all.
    #[arg(long)]
    array: Vec<String>,
    /// Print JSON (schema: docs/schema/snapshot.schema.json).
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct WatchArgs {
    /// Only these arrays (md0, /dev/md0); default all.
    #[arg(long)]
    array: Vec<String>,
    /// Print NDJSON: one snapshot object per line.
    #[arg(long)]
    ndjson: bool,
    /// Seconds between snapshots.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Seconds between reconciliations with the on-disk bitmap and sysfs rescans.
    #[arg(long, default_value_t = 5.0)]
    reconcile: f64,
    /// Stop after this many snapshots.
    #[arg(long)]
    count: Option<u64>,
    /// Create this file once the mirror is seeded and attached.
    #[arg(long)]
    ready_file: Option<std::path::PathBuf>,
    /// Alert rules (transitions are printed as `"type":"alert"` lines with --ndjson).
    #[command(flatten)]
    alerts: md_bitmap::alerts::config::AlertArgs,
}

#[derive(clap::Args, Debug)]
struct VerifyArgs {
    /// Only these arrays; default all.
    #[arg(long)]
    array: Vec<String>,
    /// Seconds between checks.
    #[arg(long, default_value_t = 0.5)]
    interval: f64,
    /// Stop after this many seconds (default: until SIGINT/SIGTERM).
    #[arg(long)]
    duration: Option<f64>,
    /// Create this file once the mirror is seeded and attached.
    #[arg(long)]
    ready_file: Option<std::path::PathBuf>,
    /// Also write every event applied to the mirror to this file (NDJSON).
    #[arg(long)]
    events_out: Option<std::path::PathBuf>,
}

fn run_verify(args: &VerifyArgs) -> Result<()> {
    use std::io::Write;
    let stop = stop_on_signals()?;
    let mut agent = md_bitmap::agent::Agent::start(&args.array)?;
    if let Some(e) = agent.kstate_error() {
        anyhow::bail!("cannot read the kernel's counters: {e}");
    }
    if let Some(p) = &args.events_out {
        let f = std::fs::File::create(p)?;
        agent.log_events_to(Box::new(std::io::BufWriter::new(f)));
    }
    if let Some(p) = &args.ready_file {
        std::fs::write(p, b"")?;
    }
    let deadline = args
        .duration
        .map(|d| Instant::now() + Duration::from_secs_f64(d));
    let interval = Duration::from_secs_f64(args.interval.max(0.05));
    let mut next = Instant::now();
    let mut out = std::io::stdout().lock();
    loop {
        let stopping = stop.load(std::sync::atomic::Ordering::Relaxed)
            || deadline.is_some_and(|d| Instant::now() >= d);
        if Instant::now() >= next || stopping {
            next += interval;
            for r in agent.verify()? {
                serde_json::to_writer(&mut out, &r)?;
                out.write_all(b"\n")?;
            }
            out.flush()?;
        } else {
            agent.poll()?;
        }
        if stopping {
            break;
        }
        agent.wait(Duration::from_millis(10))?;
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
struct KernelStateArgs {
    /// The array (md0, /dev/md0, /dev/md/NAME).
    #[arg(long)]
    array: String,
    /// Print every chunk's counter (not only the non-zero ones).
    #[arg(long)]
    all: bool,
}

fn run_kernel_state(args: &KernelStateArgs) -> Result<()> {
    let syms = KernelSymbols::load()?;
    let array = Sysfs::default().find_array(&args.array)?;
    let reader = md_bitmap::feed::kstate::KernelStateReader::new(&syms)?;
    let mut feed = Feed::load()?;
    feed.load_peek()?;
    let mddev = reader.find_mddev(&mut feed, array.dev)?;
    let mut st = reader.read(&mut feed, mddev)?;
    // Runs of equal non-zero counters as [start, end, value], end exclusive.
    let mut nonzero: Vec<(usize, usize, u16)> = Vec::new();
    for (i, c) in st.counters.iter().enumerate() {
        match nonzero.last_mut() {
            Some((_, end, v)) if *end == i && *v == *c => *end += 1,
            _ if *c != 0 => nonzero.push((i, i + 1, *c)),
            _ => {}
        }
    }
    if !args.all {
        st.counters.clear();
    }
    let mut v = serde_json::to_value(&st)?;
    v["array"] = array.name.clone().into();
    v["nonzero"] = serde_json::to_value(nonzero)?;
    println!("{}", serde_json::to_string(&v)?);
    Ok(())
}

fn print_snapshot_text(s: &md_bitmap::mirror::snapshot::Snapshot) {
    println!(
        "source: {}{}",
        s.source,
        s.fallback_reason
            .as_ref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    );
    for a in &s.arrays {
        let b = a.bitmap.as_ref();
        println!(
            "{} {} [{}] {}: bitmap {}, {} dirty on disk, {} with writes in flight, {} needed, oldest pending write {}",
            a.name,
            a.level,
            a.members.len(),
            a.array_state,
            b.map(|b| format!("{} chunks of {} KiB", b.chunks, b.chunk_size_bytes / 1024))
                .unwrap_or_else(|| "none".into()),
            a.counts.dirty_on_disk_chunks,
            a.counts.in_flight_chunks,
            a.counts.needed_chunks,
            a.oldest_pending_write_age_secs
                .map(|s| format!("{s:.1}s"))
                .unwrap_or_else(|| "-".into())
        );
    }
}

/// Starts the live agent, or says why it cannot.
fn live_agent(arrays: &[String]) -> std::result::Result<md_bitmap::agent::Agent, String> {
    md_bitmap::agent::Agent::start(arrays).map_err(|e| format!("{e:#}"))
}

fn run_snapshot(args: &SnapshotArgs) -> Result<()> {
    let snap = match live_agent(&args.array) {
        Ok(mut agent) => {
            agent.poll()?;
            agent.snapshot()
        }
        Err(why) => {
            eprintln!("md-bitmap: live feed unavailable ({why}); showing on-disk state");
            md_bitmap::agent::ondisk_snapshot(&args.array, &why)?
        }
    };
    if !args.array.is_empty() && snap.arrays.is_empty() {
        anyhow::bail!("no such md array: {}", args.array.join(", "));
    }
    if args.json {
        println!("{}", serde_json::to_string(&snap)?);
    } else {
        print_snapshot_text(&snap);
    }
    Ok(())
}

fn run_watch(args: &WatchArgs) -> Result<()> {
    use std::io::Write;
    let stop = stop_on_signals()?;
    md_bitmap::alerts::deliver::init_logging();
    let reconcile = Duration::from_secs_f64(args.reconcile.max(0.1));
    let mut alerting = md_bitmap::alerts::Alerting::new(&args.alerts, reconcile)?;
    let mut agent = match live_agent(&args.array) {
        Ok(a) => Some(a),
        Err(why) => {
            eprintln!("md-bitmap: live feed unavailable ({why}); streaming on-disk state");
            None
        }
    };
    if let Some(p) = &args.ready_file {
        std::fs::write(p, b"")?;
    }
    let interval = Duration::from_secs_f64(args.interval.max(0.01));
    let mut next = Instant::now();
    let mut printed = 0u64;
    let mut out = std::io::stdout().lock();
    loop {
        let stopping = stop.load(std::sync::atomic::Ordering::Relaxed);
        if let Some(a) = agent.as_mut() {
            a.poll()?;
            a.maintain(reconcile)?;
        }
        if Instant::now() >= next || stopping {
            next += interval;
            let mut snap = match agent.as_ref() {
                Some(a) => a.snapshot(),
                None => md_bitmap::agent::ondisk_snapshot(&args.array, "no BPF")?,
            };
            let transitions = alerting.step(agent.as_mut(), &mut snap);
            if args.ndjson {
                for t in &transitions {
                    serde_json::to_writer(&mut out, t)?;
                    out.write_all(b"\n")?;
                }
                serde_json::to_writer(&mut out, &snap)?;
                out.write_all(b"\n")?;
            } else {
                print_snapshot_text(&snap);
            }
            out.flush()?;
            printed += 1;
            if args.count.is_some_and(|c| printed >= c) || stopping {
                break;
            }
        }
        match agent.as_mut() {
            Some(a) => a.wait(Duration::from_millis(20))?,
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    Ok(())
}

/// A flag that SIGINT or SIGTERM sets, so long-running commands stop cleanly and flush.
fn stop_on_signals() -> Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    Ok(stop)
}

fn run_abi() -> Result<()> {
    let abi = BitmapAbi::resolve(&KernelSymbols::load()?)?;
    println!("{}", serde_json::to_string_pretty(&abi)?);
    Ok(())
}

fn run_events(args: &EventsArgs) -> Result<()> {
    let syms = KernelSymbols::load()?;
    let abi = BitmapAbi::resolve(&syms)?;
    let sysfs = Sysfs::default();
    let arrays = if args.array.is_empty() {
        sysfs.arrays()?
    } else {
        args.array
            .iter()
            .map(|a| sysfs.find_array(a))
            .collect::<Result<Vec<_>>>()?
    };
    let mut feed = Feed::load()?;
    feed.attach(&abi)?;
    for a in &arrays {
        feed.watch_dev(a.dev)?;
    }
    for d in &args.device {
        feed.watch_dev(md_bitmap::trace::record::device_number(d)?)?;
    }
    eprintln!(
        "md-bitmap: attached {} kprobes and {} tracepoints ({}); watching {}",
        feed.attached.kprobes.len(),
        feed.attached.tracepoints.len(),
        feed.attached.block_path,
        arrays
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let stop = stop_on_signals()?;
    if let Some(p) = &args.ready_file {
        std::fs::write(p, b"")?;
    }
    let deadline = args
        .duration
        .map(|d| Instant::now() + Duration::from_secs_f64(d));
    let mut seen = 0u64;
    let mut out = std::io::stdout().lock();
    use std::io::Write;
    let mut batch = Vec::new();
    loop {
        // Checked before draining, so that the last drain sees everything emitted until now.
        let stopping = deadline.is_some_and(|d| Instant::now() >= d)
            || stop.load(std::sync::atomic::Ordering::Relaxed);
        batch.clear();
        feed.drain(|r| batch.push(*r))?;
        let mut done = false;
        for r in &batch {
            if let Some(ev) = FeedEvent::decode(r, &abi) {
                serde_json::to_writer(&mut out, &ev)?;
                out.write_all(b"\n")?;
                seen += 1;
                if args.count.is_some_and(|c| seen >= c) {
                    done = true;
                    break;
                }
            }
        }
        out.flush()?;
        if done || stopping {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    out.flush()?;
    let c = feed.counters()?;
    eprintln!(
        "md-bitmap: {} events printed; kernel emitted {}, dropped {}",
        seen, c.emitted, c.dropped
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(command) = &cli.command else {
        // No subcommand: the TUI on a terminal, the help elsewhere.
        use std::io::IsTerminal;
        if std::io::stdout().is_terminal() && std::io::stdin().is_terminal() {
            return exit_code(md_bitmap::tui::run(&Default::default()));
        }
        let _ = <Cli as clap::CommandFactory>::command().print_help();
        return ExitCode::SUCCESS;
    };
    // Agent messages (re-seeds, alert deliveries, metrics server) go through `tracing`: to stderr,
    // or to the journal under systemd, for every command but the TUI, which owns the terminal.
    if !matches!(command, Command::Tui(_)) {
        md_bitmap::alerts::deliver::init_logging();
    }
    exit_code(match command {
        Command::Events(a) => run_events(a),
        Command::Abi => run_abi(),
        Command::Inspect(a) => md_bitmap::inspect::run(a),
        Command::Snapshot(a) => run_snapshot(a),
        Command::Watch(a) => run_watch(a),
        Command::Verify(a) => run_verify(a),
        Command::KernelState(a) => run_kernel_state(a),
        Command::Predict(a) => md_bitmap::predict::gather::run(a),
        Command::Serve(a) => stop_on_signals().and_then(|s| md_bitmap::serve::run(a, s)),
        Command::Record(a) => stop_on_signals().and_then(|s| md_bitmap::trace::record::run(a, &s)),
        Command::Tune(a) => md_bitmap::tune::run(a),
        Command::Tui(a) => md_bitmap::tui::run(a),
        Command::BpfStats(a) => md_bitmap::feed::progstats::run(a),
    })
}

fn exit_code(r: Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("md-bitmap: {e:#}");
            ExitCode::FAILURE
        }
    }
}
