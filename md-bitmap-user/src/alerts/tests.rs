use super::config::{AlertArgs, ConfigFile};
use super::deliver::program_args;
use super::*;
use crate::mirror::snapshot::{BitmapGeometrySnapshot, Counts, FeedHealth, MemberSnapshot};

fn snap(name: &str) -> ArraySnapshot {
    ArraySnapshot {
        name: name.into(),
        dev: "9:0".into(),
        level: "raid1".into(),
        layout: 0,
        raid_disks: 2,
        chunk_size_bytes: 0,
        metadata_version: "1.2".into(),
        array_state: "active".into(),
        degraded: 0,
        sync_action: "idle".into(),
        members: vec![
            MemberSnapshot {
                name: "dm-0".into(),
                slot: Some(0),
                state: vec!["in_sync".into()],
            },
            MemberSnapshot {
                name: "vdb".into(),
                slot: Some(1),
                state: vec!["in_sync".into()],
            },
        ],
        bitmap: Some(BitmapGeometrySnapshot {
            chunk_size_bytes: 65536,
            chunks: 64,
            sync_size_sectors: 8192,
            time_base_secs: 5.0,
            location: "+8".into(),
            metadata: "internal".into(),
            backlog: 0,
        }),
        counts: Counts::default(),
        dirty_ranges: vec![],
        in_flight_ranges: vec![],
        needed_ranges: vec![],
        oldest_pending_write_age_secs: None,
        oldest_inflight_bio_age_secs: None,
        feed: FeedHealth::default(),
        alerts: vec![],
        prediction: None,
    }
}

fn write(age: f64) -> PendingIo {
    PendingIo {
        chunks: Some([3, 4]),
        sectors: [384, 392],
        age_secs: age,
    }
}

fn names(evs: &[AlertEvent]) -> Vec<(String, String)> {
    evs.iter()
        .map(|e| (e.state.clone(), e.alert.id.clone()))
        .collect()
}

#[test]
fn a_stuck_write_fires_once_and_resolves_when_it_ends() {
    let mut e = AlertEngine::new(Thresholds {
        stuck_write_secs: 5.0,
        ..Default::default()
    });
    let mut inp = ArrayInput::from_snapshot(snap("md0"));
    inp.oldest_write = Some(write(4.9));
    assert!(e.evaluate(1000, &[inp.clone()]).is_empty(), "below T");
    inp.oldest_write = Some(write(5.1));
    inp.member_writes_in_flight = vec![("dm-0".into(), 3), ("vdb".into(), 0)];
    let evs = e.evaluate(2000, &[inp.clone()]);
    assert_eq!(names(&evs), vec![("fired".into(), "md0/StuckWrite".into())]);
    let a = &evs[0].alert;
    assert_eq!(a.severity, Severity::Critical);
    assert_eq!(a.chunks, Some([3, 4]));
    assert_eq!(a.member.as_deref(), Some("dm-0"), "the one busy member");
    assert_eq!(a.age_secs, Some(5.1));
    assert!(a.message.contains("chunk 3"), "{}", a.message);
    // Still stuck: no new event, the active alert ages and keeps its fired time.
    inp.oldest_write = Some(write(9.0));
    assert!(e.evaluate(6000, &[inp.clone()]).is_empty());
    let active: Vec<_> = e.active().cloned().collect();
    assert_eq!(active.len(), 1);
    assert_eq!(
        (active[0].age_secs, active[0].fired_unix_ms),
        (Some(9.0), 2000)
    );
    assert_eq!(e.active_for("md0").len(), 1);
    assert!(e.active_for("md1").is_empty());
    inp.oldest_write = None;
    let evs = e.evaluate(7000, &[inp.clone()]);
    assert_eq!(
        names(&evs),
        vec![("resolved".into(), "md0/StuckWrite".into())]
    );
    assert_eq!(evs[0].program_event(), "StuckWriteResolved");
    assert!(e.evaluate(8000, &[inp]).is_empty(), "resolves once");
}

#[test]
fn a_stuck_bio_names_the_member_only_when_one_is_busy() {
    let mut e = AlertEngine::new(Thresholds::default());
    let mut inp = ArrayInput::from_snapshot(snap("md0"));
    inp.oldest_bio = Some(PendingIo {
        chunks: Some([0, 2]),
        sectors: [0, 256],
        age_secs: 11.0,
    });
    inp.member_writes_in_flight = vec![("dm-0".into(), 1), ("vdb".into(), 1)];
    // The block layer sees no write in flight on the array: a lost completion event.
    inp.array_writes_in_flight = Some(0);
    assert!(e.evaluate(1, &[inp.clone()]).is_empty());
    inp.array_writes_in_flight = Some(1);
    let evs = e.evaluate(1, &[inp]);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].alert.name, AlertName::StuckBio);
    assert_eq!(evs[0].alert.member, None, "both busy: unknown");
    assert!(evs[0].alert.message.contains("chunks 0-1"));
}

#[test]
fn a_stuck_write_names_the_one_suspended_dm_member() {
    let mut e = AlertEngine::new(Thresholds::default());
    let mut inp = ArrayInput::from_snapshot(snap("md0"));
    inp.oldest_write = Some(write(11.0));
    // A suspended dm device defers bios before the block layer counts them.
    inp.member_writes_in_flight = vec![("dm-0".into(), 0), ("dm-1".into(), 0)];
    let dm = |n: &str, suspended| DmMember {
        name: n.into(),
        mapper: Some(format!("d{}", &n[3..])),
        suspended,
    };
    inp.member_dm = vec![dm("dm-0", false), dm("dm-1", true)];
    let evs = e.evaluate(1, &[inp.clone()]);
    assert_eq!(evs[0].alert.member.as_deref(), Some("dm-1"));
    assert!(
        evs[0]
            .alert
            .message
            .contains("(member dm-1 = /dev/mapper/d1, suspended)"),
        "{}",
        evs[0].alert.message
    );
    // Two suspended: unknown.
    let mut e = AlertEngine::new(Thresholds::default());
    inp.member_dm = vec![dm("dm-0", true), dm("dm-1", true)];
    assert_eq!(e.evaluate(1, &[inp]).first().unwrap().alert.member, None);
}

#[test]
fn counter_max_member_failure_and_kernel_flags() {
    let mut e = AlertEngine::new(Thresholds::default());
    let mut s = snap("md0");
    s.counts.blocked_writers = 2;
    s.members[1].state = vec!["faulty".into()];
    let mut inp = ArrayInput::from_snapshot(s);
    inp.counter_max_ranges = vec![[7, 8]];
    inp.kernel_bitmap_flags = Some(BITMAP_STALE | BITMAP_WRITE_ERROR);
    let evs = e.evaluate(1, &[inp.clone()]);
    let ids: Vec<_> = evs.iter().map(|e| e.alert.id.as_str()).collect();
    assert_eq!(
        ids,
        vec![
            "md0/BitmapWriteError",
            "md0/CounterMax",
            "md0/MemberFailed/vdb",
            "md0/StaleBitmap"
        ]
    );
    let cm = evs
        .iter()
        .find(|e| e.alert.name == AlertName::CounterMax)
        .unwrap();
    assert_eq!(cm.alert.chunks, Some([7, 8]));
    let mf = evs
        .iter()
        .find(|e| e.alert.name == AlertName::MemberFailed)
        .unwrap();
    assert_eq!(
        program_args(mf),
        vec!["MemberFailed", "/dev/md0", "/dev/vdb"]
    );
    // The array stops: everything resolves.
    let evs = e.evaluate(2, &[]);
    assert_eq!(evs.len(), 4);
    assert!(evs.iter().all(|e| e.state == "resolved"));
}

#[test]
fn degraded_accumulation_is_informational_and_never_stuck() {
    let mut e = AlertEngine::new(Thresholds::default());
    let mut s = snap("md0");
    s.degraded = 1;
    assert!(
        e.evaluate(1000, &[ArrayInput::from_snapshot(s.clone())])
            .is_empty()
    );
    s.counts.dirty_on_disk_chunks = 3;
    s.dirty_ranges = vec![[0, 2], [9, 10]];
    let evs = e.evaluate(4000, &[ArrayInput::from_snapshot(s.clone())]);
    assert_eq!(evs.len(), 1);
    let a = &evs[0].alert;
    assert_eq!(
        (a.name, a.severity),
        (AlertName::DegradedAccumulation, Severity::Info)
    );
    assert_eq!(a.chunks, Some([0, 10]));
    assert_eq!(a.age_secs, Some(3.0), "degraded since the first look");
    assert!(a.message.contains("3 more since degraded"), "{}", a.message);
    s.degraded = 0;
    let evs = e.evaluate(5000, &[ArrayInput::from_snapshot(s)]);
    assert_eq!(evs[0].state, "resolved");
}

#[test]
fn feed_drops_hold_until_quiet_and_reseeded_drift_follows_reconcile() {
    let mut e = AlertEngine::new(Thresholds {
        drops_clear_secs: 10.0,
        ..Default::default()
    });
    let mut s = snap("md0");
    assert!(
        e.evaluate(0, &[ArrayInput::from_snapshot(s.clone())])
            .is_empty()
    );
    s.feed.drops = 5;
    let evs = e.evaluate(1000, &[ArrayInput::from_snapshot(s.clone())]);
    assert_eq!(names(&evs), vec![("fired".into(), "md0/FeedDrops".into())]);
    // Quiet long enough but not re-seeded yet: still firing.
    assert!(
        e.evaluate(20_000, &[ArrayInput::from_snapshot(s.clone())])
            .is_empty()
    );
    s.feed.reseeds = 1;
    let evs = e.evaluate(21_000, &[ArrayInput::from_snapshot(s.clone())]);
    assert_eq!(
        names(&evs),
        vec![("resolved".into(), "md0/FeedDrops".into())]
    );
    // Drops and the re-seed they caused both land between two evaluations.
    s.feed.drops = 9;
    s.feed.reseeds = 2;
    let evs = e.evaluate(21_500, &[ArrayInput::from_snapshot(s.clone())]);
    assert_eq!(names(&evs), vec![("fired".into(), "md0/FeedDrops".into())]);
    assert!(evs[0].alert.message.contains("the mirror re-seeded"));
    let evs = e.evaluate(32_000, &[ArrayInput::from_snapshot(s.clone())]);
    assert_eq!(
        names(&evs),
        vec![("resolved".into(), "md0/FeedDrops".into())]
    );
    // Drift at one reconciliation is not enough; at two in a row it fires.
    let mut at = |e: &mut AlertEngine, ms: u64, age: f64, drift: u64| {
        s.feed.drift_chunks = drift;
        s.feed.last_reconcile_age_secs = Some(age);
        e.evaluate(ms, &[ArrayInput::from_snapshot(s.clone())])
    };
    assert!(at(&mut e, 22_000, 0.1, 2).is_empty());
    assert!(at(&mut e, 22_500, 0.6, 2).is_empty(), "same reconciliation");
    assert!(at(&mut e, 23_000, 0.1, 0).is_empty(), "cleared");
    assert!(at(&mut e, 24_000, 0.05, 3).is_empty());
    assert!(
        at(&mut e, 24_500, 0.55, 3).is_empty(),
        "same reconciliation"
    );
    let evs = at(&mut e, 25_000, 0.05, 3);
    assert_eq!(names(&evs), vec![("fired".into(), "md0/FeedDrift".into())]);
    assert!(evs[0].alert.message.contains("2 reconciliations in a row"));
    assert_eq!(at(&mut e, 26_000, 0.02, 0)[0].state, "resolved");
}

#[test]
fn disabled_rules_never_fire() {
    let mut e = AlertEngine::new(Thresholds {
        disabled: vec![AlertName::StuckWrite],
        ..Default::default()
    });
    let mut inp = ArrayInput::from_snapshot(snap("md0"));
    inp.oldest_write = Some(write(100.0));
    assert!(e.evaluate(1, &[inp]).is_empty());
}

#[test]
fn config_file_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("alerts.toml");
    std::fs::write(
        &p,
        "stuck_write_secs = 3\nstuck_bio_secs = 2.5\ndisabled = [\"FeedDrift\"]\nprogram = \"/bin/true\"\n",
    )
    .unwrap();
    let args = AlertArgs {
        config: Some(p.clone()),
        stuck_bio_secs: Some(7.0),
        disable: vec!["CounterMax".into()],
        ..Default::default()
    };
    let (t, prog) = args.resolve().unwrap();
    assert_eq!(t.stuck_write_secs, 3.0);
    assert_eq!(t.stuck_bio_secs, 7.0, "the flag wins");
    assert_eq!(t.drift_chunks, 1, "default");
    assert_eq!(
        t.disabled,
        vec![AlertName::FeedDrift, AlertName::CounterMax]
    );
    assert_eq!(prog.as_deref(), Some(std::path::Path::new("/bin/true")));
    // Bad input: one clear line.
    let e = ConfigFile::parse("stuck_write_sec = 3").unwrap_err();
    assert!(format!("{e:#}").contains("unknown field"), "{e:#}");
    let e = ConfigFile::parse("disabled = [\"Nope\"]")
        .map(|f| {
            AlertArgs {
                disable: f.disabled,
                ..Default::default()
            }
            .resolve()
        })
        .unwrap()
        .unwrap_err();
    assert!(format!("{e:#}").contains("unknown alert name"), "{e:#}");
    let bad = AlertArgs {
        stuck_write_secs: Some(-1.0),
        ..Default::default()
    };
    assert!(bad.resolve().is_err());
    let missing = AlertArgs {
        config: Some(dir.path().join("none.toml")),
        ..Default::default()
    };
    assert!(format!("{:#}", missing.resolve().unwrap_err()).contains("cannot read"));
}

/// The documented example in docs/alerts.md parses and sets every threshold.
#[test]
fn the_documented_example_config_parses() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/alerts.md"),
    )
    .unwrap();
    let start = doc.find("```toml\n").expect("a toml block") + 8;
    let end = start + doc[start..].find("```").unwrap();
    let f = ConfigFile::parse(&doc[start..end]).unwrap();
    assert!(f.stuck_write_secs.is_some() && f.stuck_bio_secs.is_some());
    assert!(f.degraded_dirty_chunks.is_some() && f.drift_chunks.is_some());
    assert!(f.drops_clear_secs.is_some());
}

#[test]
fn the_alert_program_gets_mdadm_style_args_and_json_on_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let prog = dir.path().join("prog.sh");
    std::fs::write(
        &prog,
        format!(
            "#!/bin/sh\necho \"$@\" > {0}.args\ncat > {0}.json\n",
            out.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut e = AlertEngine::new(Thresholds::default());
    let mut inp = ArrayInput::from_snapshot(snap("md0"));
    inp.oldest_write = Some(write(30.0));
    inp.member_writes_in_flight = vec![("dm-0".into(), 1)];
    let ev = e.evaluate(1, &[inp]).remove(0);
    deliver::spawn_program(&prog, &ev).join().unwrap();
    let args = std::fs::read_to_string(format!("{}.args", out.display())).unwrap();
    assert_eq!(args.trim(), "StuckWrite /dev/md0 /dev/dm-0");
    let json = std::fs::read_to_string(format!("{}.json", out.display())).unwrap();
    let back: AlertEvent = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(back, ev);
    // A program that cannot start is logged, not fatal.
    deliver::spawn_program(&dir.path().join("missing"), &ev)
        .join()
        .unwrap();
}

#[test]
fn committed_alert_schema_matches_and_validates_an_event() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/schema/alert.schema.json");
    let want = serde_json::to_string_pretty(&json_schema()).unwrap() + "\n";
    if std::env::var("MDB_UPDATE_SCHEMA").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &want).unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(&path).unwrap_or_default(),
        want,
        "docs/schema/alert.schema.json is stale (MDB_UPDATE_SCHEMA=1 cargo test -p md-bitmap-user alerts)"
    );
    let mut e = AlertEngine::new(Thresholds::default());
    let mut inp = ArrayInput::from_snapshot(snap("md0"));
    inp.oldest_write = Some(write(30.0));
    let ev = e.evaluate(1, &[inp]).remove(0);
    let v = jsonschema::validator_for(&json_schema()).unwrap();
    assert!(v.is_valid(&serde_json::to_value(&ev).unwrap()));
    assert!(!v.is_valid(&serde_json::json!({"type": "alert"})));
}

#[test]
fn no_stuck_alert_between_drops_and_the_reseed() {
    // Pending writes may have lost their ends in the drops: no stuck alert until the re-seed.
    let mut e = AlertEngine::new(Thresholds::default());
    let mut stuck = ArrayInput::from_snapshot(snap("md0"));
    stuck.snap.feed.drops = 7;
    stuck.oldest_write = Some(write(60.0));
    let evs = e.evaluate(1_000, &[stuck.clone()]);
    assert_eq!(names(&evs), vec![("fired".into(), "md0/FeedDrops".into())]);
    assert!(e.evaluate(1_500, &[stuck.clone()]).is_empty());
    stuck.snap.feed.reseeds = 1;
    let evs = e.evaluate(2_000, &[stuck.clone()]);
    assert_eq!(names(&evs), vec![("fired".into(), "md0/StuckWrite".into())]);
    stuck.oldest_write = None;
    let evs = e.evaluate(2_500, &[stuck]);
    assert_eq!(
        names(&evs),
        vec![("resolved".into(), "md0/StuckWrite".into())]
    );
}
