//! Delivery of alert transitions: tracing (stderr, or the journal when run by systemd) and an
//! external program run the way `mdadm --monitor --program` runs one.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{AlertEvent, Severity};

/// Sets up `tracing` once: to the journal when stderr is the journal (`$JOURNAL_STREAM`, as
/// systemd sets it) and journald answers, else to stderr. `MD_BITMAP_LOG` (an `EnvFilter`
/// directive, default `info`) picks what is logged.
pub fn init_logging() {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_env("MD_BITMAP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let journald = std::env::var_os("JOURNAL_STREAM")
        .is_some()
        .then(|| tracing_journald::layer().ok())
        .flatten();
    let registry = tracing_subscriber::registry().with(filter);
    let r = match journald {
        Some(j) => registry.with(j).try_init(),
        None => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_target(false),
            )
            .try_init(),
    };
    // Already initialised (tests, or a second call): keep the first.
    let _ = r;
}

/// The arguments of an alert program, as `mdadm --monitor --program` passes them: the event
/// name, the md device (`/dev/md0`) and, when the alert names one, the component device
/// (`/dev/dm-0`).
pub fn program_args(ev: &AlertEvent) -> Vec<String> {
    let mut v = vec![ev.program_event(), format!("/dev/{}", ev.alert.array)];
    if let Some(m) = &ev.alert.member {
        v.push(format!("/dev/{m}"));
    }
    v
}

/// Delivers alert transitions.
#[derive(Clone, Debug, Default)]
pub struct Delivery {
    /// The alert program, if any.
    pub program: Option<PathBuf>,
}

impl Delivery {
    /// Logs `ev` and, if there is an alert program, starts it without waiting for it.
    pub fn deliver(&self, ev: &AlertEvent) {
        log(ev);
        if let Some(p) = &self.program {
            spawn_program(p, ev);
        }
    }
}

fn log(ev: &AlertEvent) {
    let a = &ev.alert;
    let (id, name, sev) = (a.id.as_str(), a.name.as_str(), a.severity.as_str());
    if ev.state == "resolved" {
        tracing::info!(alert = id, name, severity = sev, "resolved: {}", a.message);
        return;
    }
    match a.severity {
        Severity::Critical => tracing::error!(alert = id, name, severity = sev, "{}", a.message),
        Severity::Warning => tracing::warn!(alert = id, name, severity = sev, "{}", a.message),
        Severity::Info => tracing::info!(alert = id, name, severity = sev, "{}", a.message),
    }
}

/// Runs `prog` (no shell) with [`program_args`] and the event as JSON on stdin, on a thread of
/// its own so the agent never waits for it; failures are logged.
pub fn spawn_program(prog: &Path, ev: &AlertEvent) -> std::thread::JoinHandle<()> {
    let prog = prog.to_path_buf();
    let args = program_args(ev);
    let json = serde_json::to_vec(ev).unwrap_or_default();
    std::thread::spawn(move || {
        let child = Command::new(&prog)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("alert program {}: cannot start: {e}", prog.display());
                return;
            }
        };
        if let Some(mut stdin) = child.stdin.take() {
            // A program that does not read stdin closes the pipe: not an error of ours.
            let _ = stdin.write_all(&json).and_then(|_| stdin.write_all(b"\n"));
        }
        match child.wait() {
            Ok(s) if s.success() => {}
            Ok(s) => tracing::warn!("alert program {} {}: {s}", prog.display(), args.join(" ")),
            Err(e) => tracing::warn!("alert program {}: {e}", prog.display()),
        }
    })
}
