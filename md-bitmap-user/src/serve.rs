//! `md-bitmap serve`: Prometheus metrics of the live mirror and its alerts over HTTP
//! (`GET /metrics`), for monitoring. The agent runs on the calling thread; a small HTTP server
//! (tiny_http) on another serves the exposition rendered at the last snapshot.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::alerts::{Alert, AlertName, Alerting, config::AlertArgs};
use crate::mirror::snapshot::Snapshot;

/// Default listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9842";

/// `md-bitmap serve` arguments.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (loopback by default; give 0.0.0.0:PORT to expose it).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: String,
    /// Only these arrays (md0, /dev/md0); default all.
    #[arg(long)]
    pub array: Vec<String>,
    /// Seconds between snapshots (metrics and alert evaluation).
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
    /// Seconds between reconciliations with the on-disk bitmap and sysfs rescans.
    #[arg(long, default_value_t = 5.0)]
    pub reconcile: f64,
    /// Create this file once the server listens and the mirror is seeded.
    #[arg(long)]
    pub ready_file: Option<std::path::PathBuf>,
    /// Alert rules.
    #[command(flatten)]
    pub alerts: AlertArgs,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ArrayLabel {
    array: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabels {
    array: String,
    name: String,
    severity: String,
}

type G = Family<ArrayLabel, Gauge<f64, AtomicU64>>;
type C = Family<ArrayLabel, Counter>;

/// Renders the Prometheus text exposition (OpenMetrics) of a snapshot and its active alerts.
pub fn render(snap: &Snapshot, alerts: &[Alert]) -> String {
    let mut reg = Registry::default();
    let mut gauge = |name: &str, help: &str| {
        let g = G::default();
        reg.register(name, help, g.clone());
        g
    };
    let dirty = gauge("md_bitmap_dirty_chunks", "Chunks dirty on disk");
    let inflight = gauge("md_bitmap_in_flight_chunks", "Chunks with writes in flight");
    let needed = gauge("md_bitmap_needed_chunks", "Chunks marked NEEDED");
    let blocked = gauge(
        "md_bitmap_blocked_writers",
        "Writers blocked on a counter at COUNTER_MAX",
    );
    let chunks = gauge("md_bitmap_chunks", "Chunks in the bitmap");
    let degraded = gauge("md_bitmap_degraded_members", "Missing members");
    let write_age = gauge(
        "md_bitmap_oldest_pending_write_age_seconds",
        "Age of the oldest pending bitmap write (0 when none)",
    );
    let bio_age = gauge(
        "md_bitmap_oldest_inflight_bio_age_seconds",
        "Age of the oldest write bio in flight on the array (0 when none)",
    );
    let drift = gauge(
        "md_bitmap_feed_drift_chunks",
        "Chunks the mirror differed from the on-disk bitmap at the last reconciliation",
    );
    let live = gauge(
        "md_bitmap_feed_live",
        "1 when the mirror is fed live by eBPF, 0 when it shows on-disk state only",
    );
    let resync_bytes = gauge(
        "md_bitmap_predicted_resync_bytes",
        "Bytes per member a resync after a crash now would sync (from the mirror's bitmap)",
    );
    let resync_secs = gauge(
        "md_bitmap_predicted_resync_seconds",
        "Expected duration of a resync after a crash now (0 when nothing to sync)",
    );
    let mut counter = |name: &str, help: &str| {
        let c = C::default();
        reg.register(name, help, c.clone());
        c
    };
    let events = counter(
        "md_bitmap_feed_events",
        "Bitmap events applied to the array's mirror",
    );
    let drops = counter(
        "md_bitmap_feed_drops",
        "Feed records the kernel dropped (ring buffer full), all arrays",
    );
    let reseeds = counter("md_bitmap_feed_reseeds", "Re-seeds of the array's mirror");
    let firing = Family::<AlertLabels, Gauge<i64, std::sync::atomic::AtomicI64>>::default();
    reg.register(
        "md_bitmap_alerts_firing",
        "Active alerts by name and severity",
        firing.clone(),
    );
    let is_live = (snap.source == "live") as u8 as f64;
    for a in &snap.arrays {
        let l = ArrayLabel {
            array: a.name.clone(),
        };
        let c = &a.counts;
        dirty.get_or_create(&l).set(c.dirty_on_disk_chunks as f64);
        inflight.get_or_create(&l).set(c.in_flight_chunks as f64);
        needed.get_or_create(&l).set(c.needed_chunks as f64);
        blocked.get_or_create(&l).set(c.blocked_writers as f64);
        chunks
            .get_or_create(&l)
            .set(a.bitmap.as_ref().map_or(0.0, |b| b.chunks as f64));
        degraded.get_or_create(&l).set(a.degraded as f64);
        write_age
            .get_or_create(&l)
            .set(a.oldest_pending_write_age_secs.unwrap_or(0.0));
        bio_age
            .get_or_create(&l)
            .set(a.oldest_inflight_bio_age_secs.unwrap_or(0.0));
        drift.get_or_create(&l).set(a.feed.drift_chunks as f64);
        if let Some(p) = &a.prediction {
            resync_bytes
                .get_or_create(&l)
                .set(p.crash_now.sync_bytes_per_member as f64);
            resync_secs.get_or_create(&l).set(
                p.crash_now
                    .duration
                    .as_ref()
                    .map_or(0.0, |d| d.expected_secs),
            );
        }
        live.get_or_create(&l).set(is_live);
        events.get_or_create(&l).inc_by(a.feed.events);
        drops.get_or_create(&l).inc_by(a.feed.drops);
        reseeds.get_or_create(&l).inc_by(a.feed.reseeds);
        // Every (name, severity) of the array, 0 when not firing, so dashboards see the series.
        for n in AlertName::ALL {
            let count = alerts
                .iter()
                .filter(|x| x.array == a.name && x.name == n)
                .count();
            firing
                .get_or_create(&AlertLabels {
                    array: a.name.clone(),
                    name: n.as_str().into(),
                    severity: n.severity().as_str().into(),
                })
                .set(count as i64);
        }
    }
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &reg).expect("writing to a String");
    out
}

/// Parses `--listen`; one clear error for a bad address.
pub fn parse_listen(s: &str) -> Result<SocketAddr> {
    s.parse::<SocketAddr>().with_context(|| {
        format!("--listen {s:?}: not an address:port (such as {DEFAULT_LISTEN} or [::1]:9842)")
    })
}

/// Serves `/metrics` from `body` until `stop` is set.
fn http_loop(server: tiny_http::Server, body: Arc<Mutex<String>>, stop: Arc<AtomicBool>) {
    let ctype = tiny_http::Header::from_bytes(
        &b"Content-Type"[..],
        &b"application/openmetrics-text; version=1.0.0; charset=utf-8"[..],
    )
    .expect("static header");
    while !stop.load(Ordering::Relaxed) {
        let req = match server.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!("metrics server: {e}");
                continue;
            }
        };
        let path = req.url().split('?').next().unwrap_or("");
        let resp = match path {
            "/metrics" => {
                let text = body.lock().map(|b| b.clone()).unwrap_or_default();
                if text.is_empty() {
                    tiny_http::Response::from_string("no snapshot yet\n").with_status_code(503)
                } else {
                    tiny_http::Response::from_string(text).with_header(ctype.clone())
                }
            }
            "/" => tiny_http::Response::from_string("md-bitmap: metrics at /metrics\n"),
            _ => tiny_http::Response::from_string("not found\n").with_status_code(404),
        };
        let _ = req.respond(resp);
    }
}

/// Runs `md-bitmap serve` until SIGINT/SIGTERM.
pub fn run(args: &ServeArgs, stop: Arc<AtomicBool>) -> Result<()> {
    crate::alerts::deliver::init_logging();
    let addr = parse_listen(&args.listen)?;
    let reconcile = Duration::from_secs_f64(args.reconcile.max(0.1));
    let mut alerting = Alerting::new(&args.alerts, reconcile)?;
    let server = tiny_http::Server::http(addr)
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let mut agent = match crate::agent::Agent::start(&args.array) {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::warn!("live feed unavailable ({e:#}); serving on-disk state");
            None
        }
    };
    let body = Arc::new(Mutex::new(String::new()));
    let http = {
        let (body, stop) = (body.clone(), stop.clone());
        std::thread::spawn(move || http_loop(server, body, stop))
    };
    tracing::info!("serving metrics on http://{addr}/metrics");
    let interval = Duration::from_secs_f64(args.interval.max(0.05));
    let mut next = Instant::now();
    let mut ready = false;
    let result = (|| -> Result<()> {
        while !stop.load(Ordering::Relaxed) {
            if let Some(a) = agent.as_mut() {
                a.poll()?;
                a.maintain(reconcile)?;
            }
            if Instant::now() >= next {
                next += interval;
                let mut snap = match agent.as_ref() {
                    Some(a) => a.snapshot(),
                    None => crate::agent::ondisk_snapshot(&args.array, "no BPF")?,
                };
                alerting.step(agent.as_mut(), &mut snap);
                let active: Vec<Alert> = alerting.engine.active().cloned().collect();
                *body
                    .lock()
                    .map_err(|_| anyhow::anyhow!("metrics lock poisoned"))? =
                    render(&snap, &active);
                if !ready {
                    ready = true;
                    if let Some(p) = &args.ready_file {
                        std::fs::write(p, b"")?;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    let _ = http.join();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::{AlertEngine, ArrayInput, PendingIo, Thresholds};
    use crate::mirror::snapshot::{ArraySnapshot, Counts, FeedHealth, SCHEMA_VERSION};

    fn snapshot() -> Snapshot {
        let a = ArraySnapshot {
            name: "md0".into(),
            dev: "9:0".into(),
            level: "raid1".into(),
            layout: 0,
            raid_disks: 2,
            chunk_size_bytes: 0,
            metadata_version: "1.2".into(),
            array_state: "active".into(),
            degraded: 0,
            sync_action: "idle".into(),
            members: vec![],
            bitmap: None,
            counts: Counts {
                dirty_on_disk_chunks: 7,
                in_flight_chunks: 2,
                ..Default::default()
            },
            dirty_ranges: vec![],
            in_flight_ranges: vec![],
            needed_ranges: vec![],
            oldest_pending_write_age_secs: Some(12.5),
            oldest_inflight_bio_age_secs: None,
            feed: FeedHealth {
                events: 42,
                drops: 3,
                reseeds: 1,
                ..Default::default()
            },
            alerts: vec![],
            prediction: Some(crate::predict::predict(&crate::predict::Inputs {
                name: "md0".into(),
                level: "raid1".into(),
                raid_disks: 2,
                dev_sectors: 64 * 2048,
                array_state: "active".into(),
                members: ["vda", "vdb"]
                    .iter()
                    .zip(0u32..)
                    .map(|(n, slot)| crate::predict::MemberInput {
                        name: (*n).into(),
                        slot: Some(slot),
                        in_sync: true,
                        ..Default::default()
                    })
                    .collect(),
                bitmap: Some(crate::predict::BitmapInput {
                    chunk_bytes: 65536,
                    sync_size_sectors: 64 * 2048,
                    dirty_on_disk: vec![0..5, 9..11],
                    needed: None,
                    events: 20,
                    events_cleared: 18,
                }),
                sb_events: Some(20),
                sync_action: "idle".into(),
                speed_min_kibs: 1000,
                speed_max_kibs: 2048,
                ..Default::default()
            })),
        };
        Snapshot {
            schema_version: SCHEMA_VERSION,
            kind: "snapshot".into(),
            time_unix_ms: 1,
            source: "live".into(),
            fallback_reason: None,
            arrays: vec![a],
        }
    }

    fn exposition() -> String {
        let snap = snapshot();
        let mut e = AlertEngine::new(Thresholds::default());
        let mut inp = ArrayInput::from_snapshot(snap.arrays[0].clone());
        inp.oldest_write = Some(PendingIo {
            chunks: Some([1, 2]),
            sectors: [128, 136],
            age_secs: 12.5,
        });
        e.evaluate(1, &[inp]);
        let active: Vec<Alert> = e.active().cloned().collect();
        render(&snap, &active)
    }

    #[test]
    fn metrics_carry_the_snapshot_and_the_alerts() {
        let t = exposition();
        assert!(
            t.contains("md_bitmap_dirty_chunks{array=\"md0\"} 7.0"),
            "{t}"
        );
        assert!(t.contains("md_bitmap_in_flight_chunks{array=\"md0\"} 2.0"));
        assert!(t.contains("md_bitmap_oldest_pending_write_age_seconds{array=\"md0\"} 12.5"));
        assert!(t.contains("md_bitmap_feed_events_total{array=\"md0\"} 42"));
        assert!(t.contains("md_bitmap_feed_drops_total{array=\"md0\"} 3"));
        assert!(t.contains(
            "md_bitmap_alerts_firing{array=\"md0\",name=\"StuckWrite\",severity=\"critical\"} 1"
        ));
        assert!(t.contains(
            "md_bitmap_alerts_firing{array=\"md0\",name=\"FeedDrift\",severity=\"warning\"} 0"
        ));
        // 7 dirty 64 KiB chunks to resync per member.
        assert!(t.contains("md_bitmap_predicted_resync_bytes{array=\"md0\"} 458752.0"));
        assert!(!t.contains("md_bitmap_predicted_resync_seconds{array=\"md0\"} 0.0"));
        assert!(t.trim_end().ends_with("# EOF"));
    }

    /// Every metric the shipped Grafana dashboard queries is in the exposition.
    #[test]
    fn the_grafana_dashboard_uses_only_exposed_metrics() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../contrib/grafana/md-bitmap.json");
        let dash: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut exprs = Vec::new();
        fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(m) => {
                    for (k, v) in m {
                        match (k.as_str(), v) {
                            ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                            _ => walk(v, out),
                        }
                    }
                }
                serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        walk(&dash, &mut exprs);
        assert!(exprs.len() >= 6, "the dashboard has its panels");
        let exposed: std::collections::BTreeSet<String> = exposition()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
            .collect();
        let mut used = std::collections::BTreeSet::new();
        for e in &exprs {
            let mut word = String::new();
            for ch in e.chars().chain(std::iter::once(' ')) {
                if ch.is_ascii_alphanumeric() || ch == '_' {
                    word.push(ch);
                } else {
                    if word.starts_with("md_bitmap_") {
                        used.insert(std::mem::take(&mut word));
                    }
                    word.clear();
                }
            }
        }
        assert!(used.len() >= 8, "{used:?}");
        let missing: Vec<_> = used.difference(&exposed).collect();
        assert!(
            missing.is_empty(),
            "dashboard metrics not exposed: {missing:?}"
        );
    }

    #[test]
    fn listen_addresses() {
        assert!(parse_listen(DEFAULT_LISTEN).unwrap().ip().is_loopback());
        assert!(parse_listen("[::1]:1").is_ok());
        let e = parse_listen("localhost").unwrap_err();
        assert!(format!("{e:#}").contains("not an address"));
    }
}
