//! The JSON snapshot: an immutable view of every array's mirrored bitmap, as `md-bitmap
//! snapshot --json` prints it and `md-bitmap watch --ndjson` streams it. Schema:
//! `docs/schema/snapshot.schema.json` (generated from these types; a test keeps it current).
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Version of the snapshot format; bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// One snapshot of every watched array.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Snapshot {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Always `"snapshot"` (NDJSON streams mix types).
    #[serde(rename = "type")]
    pub kind: String,
    /// Wall-clock time of the snapshot, Unix milliseconds.
    pub time_unix_ms: u64,
    /// Where the state comes from: `"live"` (eBPF feed mirror) or `"ondisk"` (no BPF: on-disk
    /// bitmap and sysfs only; nothing about writes in flight).
    pub source: String,
    /// Why the source is `ondisk`, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
    /// The arrays.
    pub arrays: Vec<ArraySnapshot>,
}

/// A member as sysfs shows it.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct MemberSnapshot {
    /// Kernel device name (`sdb`).
    pub name: String,
    /// Role in the array, absent for spares and failed members.
    pub slot: Option<u32>,
    /// sysfs state flags (`in_sync`, `faulty`, `writemostly`, ...).
    pub state: Vec<String>,
}

/// Bitmap geometry.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct BitmapGeometrySnapshot {
    /// Bitmap chunk size in bytes.
    pub chunk_size_bytes: u64,
    /// Number of chunks (bits).
    pub chunks: u64,
    /// Sectors the bitmap covers (`sync_size`).
    pub sync_size_sectors: u64,
    /// Daemon period (`time_base`) in seconds.
    pub time_base_secs: f64,
    /// `location` (`+8`, ...).
    pub location: String,
    /// `metadata` (`internal`, ...).
    pub metadata: String,
    /// Write-behind limit (`backlog`).
    pub backlog: u32,
}

/// Chunk counts of the mirrored bitmap.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Counts {
    /// Chunks with writes in flight (counter above its two "on-disk" ticks).
    pub in_flight_chunks: u64,
    /// (write, chunk) pairs in flight.
    pub in_flight_writes: u64,
    /// Chunks whose bit is set on disk (what `mdadm -X` counts as dirty).
    pub dirty_on_disk_chunks: u64,
    /// Chunks whose bit is set in the kernel's cached bitmap page.
    pub dirty_cached_chunks: u64,
    /// Chunks marked NEEDED (must be resynced).
    pub needed_chunks: u64,
    /// Chunks marked RESYNC (being synced).
    pub resync_chunks: u64,
    /// Writers blocked on a counter at COUNTER_MAX.
    pub blocked_writers: u64,
    /// Counter pages allocated (`/proc/mdstat`'s first `pages` number).
    pub allocated_counter_pages: u64,
    /// Counter pages in all.
    pub counter_pages: u64,
}

/// Health of the live feed for one array.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct FeedHealth {
    /// Bitmap events applied to this array's mirror.
    pub events: u64,
    /// Records the kernel could not queue (ring buffer full), all arrays.
    pub drops: u64,
    /// Chunks whose mirrored on-disk bit differed from the real on-disk bitmap at the last
    /// reconciliation (0 = in step).
    pub drift_chunks: u64,
    /// Seconds since the last reconciliation with the on-disk bitmap.
    pub last_reconcile_age_secs: Option<f64>,
    /// Times the mirror was re-seeded (after drops or drift).
    pub reseeds: u64,
    /// End-writes without a matching start-write and similar inconsistencies.
    pub anomalies: u64,
    /// End-write events the kernel lost (kprobe dropped) that the mirror applied when the
    /// array bio completed (raid1/raid10).
    pub repaired_end_writes: u64,
    /// Daemon passes the kernel ran on a later jiffy than its entry probe saw, applied when
    /// the daemon returned (its `daemon_lastrun` changed).
    pub late_daemon_passes: u64,
    /// Lag from the kernel event (BPF `ktime`) to its application in the mirror
    /// (CLOCK_MONOTONIC), median, microseconds; `None` before any event.
    pub lag_p50_us: Option<u64>,
    /// The same, 99th percentile.
    pub lag_p99_us: Option<u64>,
}

/// One array.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct ArraySnapshot {
    /// Kernel name (`md0`).
    pub name: String,
    /// `major:minor`.
    pub dev: String,
    /// `raid1`, `raid5`, ...
    pub level: String,
    /// Layout number as sysfs shows it.
    pub layout: u32,
    /// Member count.
    pub raid_disks: u32,
    /// RAID chunk size in bytes (0 for raid1).
    pub chunk_size_bytes: u64,
    /// md metadata version.
    pub metadata_version: String,
    /// `array_state` (`clean`, `active`, ...).
    pub array_state: String,
    /// Missing members.
    pub degraded: u32,
    /// `sync_action`.
    pub sync_action: String,
    /// Members.
    pub members: Vec<MemberSnapshot>,
    /// The bitmap, absent when the array has none.
    pub bitmap: Option<BitmapGeometrySnapshot>,
    /// Counts (zero when there is no bitmap).
    pub counts: Counts,
    /// Chunks dirty on disk, half-open `[start, end)` ranges.
    pub dirty_ranges: Vec<[u64; 2]>,
    /// Chunks with writes in flight, half-open ranges.
    pub in_flight_ranges: Vec<[u64; 2]>,
    /// NEEDED chunks, half-open ranges.
    pub needed_ranges: Vec<[u64; 2]>,
    /// Age in seconds of the oldest bitmap write still pending (start-write without its
    /// end-write); absent when none is pending or the source is on-disk.
    pub oldest_pending_write_age_secs: Option<f64>,
    /// Age in seconds of the oldest write bio queued on the array and not completed.
    pub oldest_inflight_bio_age_secs: Option<f64>,
    /// Feed health.
    pub feed: FeedHealth,
    /// Resync/recovery cost prediction from this snapshot's state (sysfs limits only: no
    /// throughput measurement; see `md-bitmap predict`). Absent in older producers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<crate::predict::Prediction>,
    /// Alerts active on this array (see `crate::alerts`); empty where no rules run.
    #[serde(default)]
    pub alerts: Vec<crate::alerts::Alert>,
}

/// Half-open ranges as JSON pairs.
pub fn ranges(r: &[std::ops::Range<u64>]) -> Vec<[u64; 2]> {
    r.iter().map(|r| [r.start, r.end]).collect()
}

/// The JSON Schema of [`Snapshot`] (draft 2020-12), as committed in
/// `docs/schema/snapshot.schema.json`.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Snapshot)).expect("schema serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed_path() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/schema/snapshot.schema.json")
    }

    /// The committed schema is the one generated from the types (regenerate with
    /// `MDB_UPDATE_SCHEMA=1 cargo test -p md-bitmap-user snapshot`).
    #[test]
    fn committed_schema_matches_the_types() {
        let want = serde_json::to_string_pretty(&json_schema()).unwrap() + "\n";
        if std::env::var("MDB_UPDATE_SCHEMA").is_ok_and(|v| v == "1") {
            std::fs::write(committed_path(), &want).unwrap();
        }
        let have = std::fs::read_to_string(committed_path()).unwrap_or_default();
        assert_eq!(have, want, "docs/schema/snapshot.schema.json is stale");
    }

    #[test]
    fn a_snapshot_validates_against_the_schema() {
        let s = Snapshot {
            schema_version: SCHEMA_VERSION,
            kind: "snapshot".into(),
            time_unix_ms: 1,
            source: "ondisk".into(),
            fallback_reason: Some("no BPF".into()),
            arrays: vec![],
        };
        let v = jsonschema::validator_for(&json_schema()).unwrap();
        assert!(v.is_valid(&serde_json::to_value(&s).unwrap()));
        let mut bad = serde_json::to_value(&s).unwrap();
        bad["arrays"] = serde_json::json!("nope");
        assert!(!v.is_valid(&bad));
    }
}
