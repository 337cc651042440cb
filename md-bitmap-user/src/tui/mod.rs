//! `md-bitmap tui`: a terminal view of every md array's live write-intent bitmap.
//!
//! The data is the live mirror (the same [`Agent`] loop `watch` runs: poll the eBPF feed,
//! rescan and reconcile, take snapshots); without BPF it falls back to the on-disk bitmap and
//! sysfs, and says so. [`view`] turns snapshots into heatmap cells; [`ui`] draws them and
//! handles keys. The terminal is restored on exit, on panic (ratatui's panic hook) and on
//! SIGINT/SIGTERM/SIGHUP (a flag the loop checks every 50 ms).
pub mod ui;
pub mod view;

#[cfg(test)]
mod tests;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;

use crate::agent::{Agent, monotonic_ns, ondisk_snapshot, unix_ms};
use crate::mirror::snapshot::{SCHEMA_VERSION, Snapshot};
use ui::{Action, App, SourceInfo};
use view::ArrayView;

/// Arguments of `md-bitmap tui`.
#[derive(clap::Args, Debug, Clone)]
pub struct TuiArgs {
    /// Only these arrays (md0, /dev/md0); default all.
    #[arg(long)]
    pub array: Vec<String>,
    /// Seconds between samples of the mirror (redraws follow them).
    #[arg(long, default_value_t = 0.5)]
    pub interval: f64,
    /// Seconds between reconciliations with the on-disk bitmap and sysfs rescans.
    #[arg(long, default_value_t = 5.0)]
    pub reconcile: f64,
    /// Folder the `s` key writes JSON snapshots to.
    #[arg(long, default_value = ".")]
    pub snapshot_dir: PathBuf,
    /// No terminal UI: print this many frames as plain text, one per --interval, then exit
    /// (for logs and CI).
    #[arg(long)]
    pub frames: Option<u64>,
    /// Frame size for --frames, COLSxROWS.
    #[arg(long, default_value = "120x40", value_parser = parse_size)]
    pub size: (u16, u16),
    /// Alert thresholds and delivery, as for `watch`.
    #[command(flatten)]
    pub alerts: crate::alerts::config::AlertArgs,
}

impl Default for TuiArgs {
    fn default() -> Self {
        Self {
            array: Vec::new(),
            interval: 0.5,
            reconcile: 5.0,
            snapshot_dir: PathBuf::from("."),
            frames: None,
            size: (120, 40),
            alerts: Default::default(),
        }
    }
}

fn parse_size(s: &str) -> std::result::Result<(u16, u16), String> {
    let (c, r) = s
        .split_once('x')
        .ok_or_else(|| format!("size {s:?} is not COLSxROWS"))?;
    let c: u16 = c.parse().map_err(|_| format!("bad column count {c:?}"))?;
    let r: u16 = r.parse().map_err(|_| format!("bad row count {r:?}"))?;
    if !(20..=1000).contains(&c) || !(10..=1000).contains(&r) {
        return Err(format!("size {s} out of range (20x10 to 1000x1000)"));
    }
    Ok((c, r))
}

/// Where the arrays come from.
pub enum Source {
    /// The live mirror.
    Live(Box<Agent>),
    /// On-disk bitmaps and sysfs (no BPF).
    OnDisk {
        /// Array filter.
        filter: Vec<String>,
        /// Why not live.
        reason: String,
    },
}

impl Source {
    /// The live agent, else the on-disk fallback with the reason.
    pub fn open(filter: &[String]) -> (Self, SourceInfo) {
        match Agent::start(filter) {
            Ok(a) => (Source::Live(Box::new(a)), SourceInfo::Live),
            Err(e) => {
                let reason = format!("live feed unavailable: {e:#}");
                (
                    Source::OnDisk {
                        filter: filter.to_vec(),
                        reason: reason.clone(),
                    },
                    SourceInfo::OnDisk(reason),
                )
            }
        }
    }

    /// Applies pending events and does periodic maintenance.
    pub fn tick(&mut self, reconcile: Duration) -> Result<()> {
        if let Source::Live(a) = self {
            a.poll()?;
            a.maintain(reconcile)?;
        }
        Ok(())
    }

    /// Evaluates the alert rules on a sample (as `watch` does) and puts the active alerts into
    /// the snapshot and its views.
    pub fn alert(
        &mut self,
        alerting: &mut crate::alerts::Alerting,
        views: &mut [ArrayView],
        snap: &mut Snapshot,
    ) {
        let agent = match self {
            Source::Live(a) => Some(a.as_mut()),
            Source::OnDisk { .. } => None,
        };
        alerting.step(agent, snap);
        for v in views.iter_mut() {
            if let Some(a) = snap.arrays.iter().find(|a| a.name == v.snap.name) {
                v.snap.alerts = a.alerts.clone();
                if let Some(o) = v.json.as_object_mut() {
                    o.insert(
                        "alerts".into(),
                        serde_json::to_value(&a.alerts).unwrap_or_default(),
                    );
                }
            }
        }
    }

    /// New views (carrying intensity over from `prev`) and the matching snapshot.
    pub fn sample(&mut self, prev: Vec<ArrayView>, dt: f64) -> Result<(Vec<ArrayView>, Snapshot)> {
        let mut prev: std::collections::HashMap<String, ArrayView> =
            prev.into_iter().map(|v| (v.snap.name.clone(), v)).collect();
        match self {
            Source::Live(agent) => {
                let now = monotonic_ns();
                let drops = agent.drops();
                let views: Vec<ArrayView> = agent
                    .mirror
                    .arrays
                    .values()
                    .map(|a| ArrayView::refresh(prev.remove(&a.info.name), a, now, drops, dt))
                    .collect();
                let snap = Snapshot {
                    schema_version: SCHEMA_VERSION,
                    kind: "snapshot".into(),
                    time_unix_ms: unix_ms(),
                    source: "live".into(),
                    fallback_reason: None,
                    arrays: views.iter().map(|v| v.snap.clone()).collect(),
                };
                Ok((views, snap))
            }
            Source::OnDisk { filter, reason } => {
                let snap = ondisk_snapshot(filter, reason)?;
                let views = snap
                    .arrays
                    .iter()
                    .map(|a| ArrayView::update(prev.remove(&a.name), a.clone(), dt))
                    .collect();
                Ok((views, snap))
            }
        }
    }
}

/// Writes `snap` as JSON into `dir`; returns the file's path.
pub fn write_snapshot(dir: &std::path::Path, snap: &Snapshot) -> Result<PathBuf> {
    let dir = std::fs::canonicalize(dir)
        .with_context(|| format!("snapshot folder {} not found", dir.display()))?;
    let path = dir.join(format!("md-bitmap-snapshot-{}.json", snap.time_unix_ms));
    let json = serde_json::to_string_pretty(snap)?;
    std::fs::write(&path, json + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

fn stop_flag() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    Ok(stop)
}

/// Runs `md-bitmap tui`.
pub fn run(args: &TuiArgs) -> Result<()> {
    if !args.interval.is_finite() || args.interval <= 0.0 {
        bail!("--interval must be a positive number of seconds");
    }
    if let Some(n) = args.frames {
        return run_frames(args, n);
    }
    if !std::io::stdout().is_terminal() {
        bail!("the TUI needs a terminal on stdout (use --frames N for plain-text frames)");
    }
    let stop = stop_flag()?;
    let (mut source, info) = Source::open(&args.array);
    let mut app = App::new(info, args.snapshot_dir.clone());
    // Raw mode, alternate screen, and a panic hook that restores the terminal first.
    let mut term = ratatui::try_init().context("cannot set up the terminal")?;
    let r = event_loop(args, &mut source, &mut app, &mut term, &stop);
    ratatui::restore();
    r
}

fn event_loop(
    args: &TuiArgs,
    source: &mut Source,
    app: &mut App,
    term: &mut ratatui::DefaultTerminal,
    stop: &AtomicBool,
) -> Result<()> {
    use ratatui::crossterm::event::{self, Event};
    let interval = Duration::from_secs_f64(args.interval.max(0.05));
    let reconcile = Duration::from_secs_f64(args.reconcile.max(0.1));
    let mut alerting = crate::alerts::Alerting::new(&args.alerts, reconcile)?;
    let mut next = Instant::now();
    let mut last = Instant::now();
    let mut redraw = true;
    while !stop.load(Ordering::Relaxed) {
        source.tick(reconcile)?;
        if Instant::now() >= next {
            next = Instant::now() + interval;
            if !app.paused {
                let dt = last.elapsed().as_secs_f64();
                last = Instant::now();
                let (mut views, mut snap) = source.sample(std::mem::take(&mut app.views), dt)?;
                source.alert(&mut alerting, &mut views, &mut snap);
                app.set_views(views);
                app.last_snapshot = Some(snap);
                redraw = true;
            }
        }
        if redraw {
            term.draw(|f| app.draw(f))?;
            redraw = false;
        }
        if event::poll(Duration::from_millis(50))? {
            match event::read()? {
                Event::Key(k) => {
                    redraw = true;
                    match app.key(k) {
                        Action::Quit => break,
                        Action::WriteSnapshot => {
                            app.status = match &app.last_snapshot {
                                None => "no snapshot yet".into(),
                                Some(s) => match write_snapshot(&app.snapshot_dir, s) {
                                    Ok(p) => format!("snapshot written to {}", p.display()),
                                    Err(e) => format!("snapshot not written: {e:#}"),
                                },
                            };
                        }
                        Action::None => {}
                    }
                }
                Event::Resize(..) => {
                    term.autoresize()?;
                    redraw = true;
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Renders the app into a fresh buffer of `cols` × `rows`.
pub fn render_to_buffer(app: &mut App, cols: u16, rows: u16) -> Buffer {
    let area = Rect::new(0, 0, cols, rows);
    let mut buf = Buffer::empty(area);
    app.render(area, &mut buf);
    buf
}

fn run_frames(args: &TuiArgs, n: u64) -> Result<()> {
    use std::io::Write;
    let stop = stop_flag()?;
    let (mut source, info) = Source::open(&args.array);
    let mut app = App::new(info, args.snapshot_dir.clone());
    let interval = Duration::from_secs_f64(args.interval.max(0.05));
    let reconcile = Duration::from_secs_f64(args.reconcile.max(0.1));
    let mut alerting = crate::alerts::Alerting::new(&args.alerts, reconcile)?;
    let t0 = Instant::now();
    let mut last = Instant::now();
    let mut out = std::io::stdout().lock();
    for i in 0..n {
        let due = t0 + interval.mul_f64(i as f64);
        while Instant::now() < due && !stop.load(Ordering::Relaxed) {
            source.tick(reconcile)?;
            std::thread::sleep(Duration::from_millis(20));
        }
        source.tick(reconcile)?;
        let dt = last.elapsed().as_secs_f64();
        last = Instant::now();
        let (mut views, mut snap) = source.sample(std::mem::take(&mut app.views), dt)?;
        source.alert(&mut alerting, &mut views, &mut snap);
        app.set_views(views);
        app.last_snapshot = Some(snap);
        let buf = render_to_buffer(&mut app, args.size.0, args.size.1);
        writeln!(
            out,
            "--- frame {} at {:.1}s ---",
            i + 1,
            t0.elapsed().as_secs_f64()
        )?;
        out.write_all(ui::buffer_text(&buf).as_bytes())?;
        out.flush()?;
        if stop.load(Ordering::Relaxed) {
            break;
        }
    }
    Ok(())
}
