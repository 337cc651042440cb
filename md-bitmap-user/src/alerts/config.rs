//! Alert thresholds: defaults, a TOML file (`--config`, see `docs/alerts.md`), and flags, which
//! win over the file.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Deserializer};

use super::AlertName;

/// Thresholds and switches of the alert rules.
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds {
    /// StuckWrite: a bitmap write pending longer than this (seconds).
    pub stuck_write_secs: f64,
    /// StuckBio: a write bio to the array in flight longer than this (seconds).
    pub stuck_bio_secs: f64,
    /// DegradedAccumulation: at least this many chunks dirty while degraded.
    pub degraded_dirty_chunks: u64,
    /// FeedDrift: at least this many chunks of drift at reconciliation.
    pub drift_chunks: u64,
    /// FeedDrift: ... at this many reconciliations in a row.
    pub drift_reconciles: u32,
    /// FeedDrops resolves once no drop was seen for this long (and the mirror re-seeded).
    pub drops_clear_secs: f64,
    /// Rules that never fire.
    pub disabled: Vec<AlertName>,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            stuck_write_secs: 10.0,
            stuck_bio_secs: 10.0,
            degraded_dirty_chunks: 1,
            drift_chunks: 1,
            drift_reconciles: 2,
            drops_clear_secs: 30.0,
            disabled: vec![],
        }
    }
}

/// The config file: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Seconds.
    #[serde(default, deserialize_with = "secs")]
    pub stuck_write_secs: Option<f64>,
    /// Seconds.
    #[serde(default, deserialize_with = "secs")]
    pub stuck_bio_secs: Option<f64>,
    /// Chunks.
    pub degraded_dirty_chunks: Option<u64>,
    /// Chunks.
    pub drift_chunks: Option<u64>,
    /// Reconciliations in a row.
    pub drift_reconciles: Option<u32>,
    /// Seconds.
    #[serde(default, deserialize_with = "secs")]
    pub drops_clear_secs: Option<f64>,
    /// Alert names that never fire.
    #[serde(default)]
    pub disabled: Vec<String>,
    /// Program run on every alert transition (as `--alert-program`).
    pub program: Option<PathBuf>,
}

/// Seconds as an integer or a float (TOML keeps them apart).
fn secs<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        I(i64),
        F(f64),
    }
    Ok(Option::<Num>::deserialize(d)?.map(|n| match n {
        Num::I(i) => i as f64,
        Num::F(f) => f,
    }))
}

impl ConfigFile {
    /// Parses the TOML text of a config file.
    pub fn parse(text: &str) -> Result<Self> {
        let c: ConfigFile = toml::from_str(text)
            .map_err(|e| anyhow::anyhow!("{}", e.message().lines().next().unwrap_or("bad TOML")))?;
        Ok(c)
    }

    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("{}", path.display()))
    }
}

/// Alert flags shared by `watch` and `serve`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AlertArgs {
    /// Alert rules file (TOML; see docs/alerts.md). Flags win over it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// StuckWrite: seconds a bitmap write may stay pending [default: 10].
    #[arg(long, value_name = "SECS")]
    pub stuck_write_secs: Option<f64>,
    /// StuckBio: seconds a write bio to an array may stay in flight [default: 10].
    #[arg(long, value_name = "SECS")]
    pub stuck_bio_secs: Option<f64>,
    /// DegradedAccumulation: dirty chunks while degraded that make it fire [default: 1].
    #[arg(long, value_name = "CHUNKS")]
    pub degraded_dirty_chunks: Option<u64>,
    /// FeedDrift: chunks of drift that make it fire [default: 1].
    #[arg(long, value_name = "CHUNKS")]
    pub drift_chunks: Option<u64>,
    /// FeedDrift: reconciliations in a row that must show the drift [default: 2].
    #[arg(long, value_name = "N")]
    pub drift_reconciles: Option<u32>,
    /// FeedDrops: seconds without new drops before it resolves [default: 30].
    #[arg(long, value_name = "SECS")]
    pub drops_clear_secs: Option<f64>,
    /// Never fire this alert (StuckWrite, StuckBio, CounterMax, BitmapWriteError, StaleBitmap,
    /// MemberFailed, DegradedAccumulation, FeedDrops, FeedDrift); repeatable.
    #[arg(long, value_name = "NAME")]
    pub disable: Vec<String>,
    /// Run PROG (no shell) on every alert transition, as `mdadm --monitor --program` does:
    /// `PROG EVENT MDDEVICE [COMPONENT]`, the alert as JSON on stdin.
    #[arg(long, value_name = "PROG")]
    pub alert_program: Option<PathBuf>,
}

fn check_secs(what: &str, v: f64) -> Result<f64> {
    if !(v.is_finite() && v >= 0.0) {
        bail!("{what} must be a non-negative number of seconds, not {v}");
    }
    Ok(v)
}

fn names(list: &[String]) -> Result<Vec<AlertName>> {
    list.iter()
        .map(|n| {
            AlertName::parse(n).with_context(|| {
                format!(
                    "unknown alert name {n:?} (known: {})",
                    AlertName::ALL.map(|a| a.as_str()).join(", ")
                )
            })
        })
        .collect()
}

impl AlertArgs {
    /// Thresholds and the alert program: defaults, then the file, then the flags.
    pub fn resolve(&self) -> Result<(Thresholds, Option<PathBuf>)> {
        let file = match &self.config {
            Some(p) => ConfigFile::load(p)?,
            None => ConfigFile::default(),
        };
        let mut t = Thresholds::default();
        let pick = |flag: Option<f64>, file: Option<f64>, dflt: f64| flag.or(file).unwrap_or(dflt);
        t.stuck_write_secs = check_secs(
            "stuck_write_secs",
            pick(
                self.stuck_write_secs,
                file.stuck_write_secs,
                t.stuck_write_secs,
            ),
        )?;
        t.stuck_bio_secs = check_secs(
            "stuck_bio_secs",
            pick(self.stuck_bio_secs, file.stuck_bio_secs, t.stuck_bio_secs),
        )?;
        t.drops_clear_secs = check_secs(
            "drops_clear_secs",
            pick(
                self.drops_clear_secs,
                file.drops_clear_secs,
                t.drops_clear_secs,
            ),
        )?;
        t.degraded_dirty_chunks = self
            .degraded_dirty_chunks
            .or(file.degraded_dirty_chunks)
            .unwrap_or(t.degraded_dirty_chunks);
        t.drift_chunks = self
            .drift_chunks
            .or(file.drift_chunks)
            .unwrap_or(t.drift_chunks);
        t.drift_reconciles = self
            .drift_reconciles
            .or(file.drift_reconciles)
            .unwrap_or(t.drift_reconciles);
        t.disabled = names(&file.disabled)?;
        t.disabled.extend(names(&self.disable)?);
        let program = self.alert_program.clone().or(file.program);
        Ok((t, program))
    }
}
