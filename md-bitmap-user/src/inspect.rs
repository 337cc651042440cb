//! `md-bitmap inspect`: the on-disk bitmap of members, as `mdadm -X` prints it and more.
//!
//! * Text (default): the same lines and values as `mdadm -X` (mdadm's `ExamineBitmap`), one block
//!   per member with no separator, including clustered node slots. Lockless (version 6) bitmaps,
//!   which mdadm cannot show, get the same header plus per-state chunk counts.
//! * `--map`: after each block, a dirty map with one character per group of chunks.
//! * `--json`: NDJSON, one object per member and line, `{"type":"inspect","schema_version":1,...}`,
//!   described by `docs/schema/inspect.schema.json` (see [`InspectRecord`]).
//!
//! [`mdadm_parity`] runs the real `mdadm -X` on the same member and diffs it against
//! [`render_text`], for golden tests.
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::ondisk::{
    BitmapContent, ClusterSlot, DeviceKind, MemberBitmap, MemberDevice, examine_member,
};

/// Arguments of `md-bitmap inspect`.
#[derive(clap::Args, Debug, Clone)]
pub struct InspectArgs {
    /// Member block devices or images of members (works without root on image files).
    #[arg(required = true, value_name = "MEMBER")]
    pub members: Vec<PathBuf>,
    /// Print NDJSON instead of text: one JSON object per member, one per line, with
    /// "type":"inspect" and "schema_version":1 (schema: docs/schema/inspect.schema.json).
    #[arg(long, conflicts_with = "map")]
    pub json: bool,
    /// After each member, draw its dirty map: one character per group of chunks, with a
    /// legend and a scale.
    #[arg(long)]
    pub map: bool,
    /// Width of the map in columns (default: the terminal's width, else 80).
    #[arg(long, value_name = "COLUMNS", requires = "map")]
    pub width: Option<u16>,
}

/// Runs `inspect`: prints each member, then fails with a one-line message if any member could
/// not be read (after printing the others).
pub fn run(args: &InspectArgs) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    run_to(args, terminal_width(), &mut out)
}

/// [`run`] writing to `out` instead of stdout; maps are `args.width` wide, else `default_width`
/// (warnings and the errors of all but the last failing member still go to stderr).
pub fn run_to(
    args: &InspectArgs,
    default_width: usize,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    let width = args.width.map_or(default_width, usize::from);
    let mut failures = Vec::new();
    for path in &args.members {
        let shown = path.display().to_string();
        let read = MemberDevice::open(path).and_then(|dev| {
            let m = examine_member(&dev)?;
            Ok((dev.kind(), m))
        });
        let (kind, m) = match read {
            Ok(x) => x,
            Err(e) => {
                failures.push(format!("{shown}: {e}"));
                continue;
            }
        };
        for w in &m.warnings {
            eprintln!("md-bitmap: {shown}: warning: {w}");
        }
        if args.json {
            let rec = InspectRecord::new(path, kind, &m);
            serde_json::to_writer(&mut *out, &rec).context("cannot write JSON")?;
            out.write_all(b"\n").context("cannot write to stdout")?;
        } else {
            out.write_all(render_text(&shown, &m).as_bytes())
                .context("cannot write to stdout")?;
            if args.map {
                out.write_all(render_map(&m, width).as_bytes())
                    .context("cannot write to stdout")?;
            }
        }
    }
    out.flush().context("cannot write to stdout")?;
    match failures.len() {
        0 => Ok(()),
        1 => bail!("{}", failures[0]),
        n => {
            for f in &failures {
                eprintln!("md-bitmap: {f}");
            }
            bail!(
                "{n} of {} members could not be inspected",
                args.members.len()
            )
        }
    }
}

fn terminal_width() -> usize {
    if let Some((terminal_size::Width(w), _)) = terminal_size::terminal_size() {
        return usize::from(w);
    }
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse().ok())
        .filter(|&c: &usize| c > 0)
        .unwrap_or(80)
}

/// mdadm's `human_chunksize`: divides by 1024 while possible, integer division, "B" to "TB".
pub fn human_chunksize(bytes: u64) -> String {
    const SUFFIXES: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut b = bytes;
    let mut i = 0;
    while b >> 10 != 0 {
        b >>= 10;
        i += 1;
    }
    // mdadm indexes past its table for >= 1 PiB and printf shows the NULL as "(null)".
    format!("{b} {}", SUFFIXES.get(i).copied().unwrap_or("(null)"))
}

/// mdadm's `human_size` (util.c): "" below 5000 KiB, else " (x.yy MiB x.yy MB)", GiB/GB from
/// 2 GiB, TiB/TB from 2 TiB, with mdadm's rounding and its `long long` arithmetic (wrapping).
pub fn human_size(bytes: i64) -> String {
    const GIB: i64 = 1 << 30;
    if bytes < 5000 * 1024 {
        return String::new();
    }
    let (bin, dec, bu, du) = if bytes < 2 * GIB {
        (
            (bytes.wrapping_mul(200) / (1 << 20) + 1) / 2,
            (bytes / 5000 + 1) / 2,
            "MiB",
            "MB",
        )
    } else if bytes < 2 * GIB * 1024 {
        (
            (bytes.wrapping_mul(200) / (1 << 30) + 1) / 2,
            (bytes / 5_000_000 + 1) / 2,
            "GiB",
            "GB",
        )
    } else {
        (
            (bytes.wrapping_mul(200) / (1 << 40) + 1) / 2,
            (bytes / 5_000_000_000 + 1) / 2,
            "TiB",
            "TB",
        )
    };
    format!(
        " ({}.{:02} {bu} {}.{:02} {du})",
        bin / 100,
        bin % 100,
        dec / 100,
        dec % 100
    )
}

/// mdadm's `bitmap_state`: 0 "OK", 2 (stale) "Out of date", anything else "Unknown".
pub fn mdadm_state_text(state: u32) -> &'static str {
    match state {
        0 => "OK",
        2 => "Out of date",
        _ => "Unknown",
    }
}

fn line(s: &mut String, label: &str, value: impl std::fmt::Display) {
    let _ = writeln!(s, "{label:>16} : {value}");
}

fn bitmap_line(chunks: u64, dirty: u64) -> String {
    format!(
        "{chunks} bits (chunks), {dirty} dirty ({:2.1}%)",
        100.0 * dirty as f64 / chunks.max(1) as f64
    )
}

/// Renders a member as `mdadm -X` does, with `filename` on the Filename line.
///
/// Values follow mdadm's printf conversions (e.g. `%d` of unsigned fields). A lockless bitmap,
/// which mdadm does not display, gets chunk counts and a "Chunk States" line instead of the bit
/// count, and its flag names as State.
pub fn render_text(filename: &str, m: &MemberBitmap) -> String {
    let b = &m.bitmap;
    let mut s = String::new();
    line(&mut s, "Filename", filename);
    line(&mut s, "Magic", format_args!("{:08x}", b.magic));
    line(&mut s, "Version", b.version as i32);
    line(&mut s, "UUID", m.superblock.uuid_string_for(&b.uuid));
    if b.nodes == 0 {
        line(&mut s, "Events", b.events);
        line(&mut s, "Events Cleared", b.events_cleared);
        line(&mut s, "State", state_text(m));
    }
    line(&mut s, "Chunksize", human_chunksize(b.chunk_size_bytes()));
    line(
        &mut s,
        "Daemon",
        format_args!("{}s flush period", b.daemon_sleep_secs as i32),
    );
    if b.write_behind != 0 {
        line(
            &mut s,
            "Write Mode",
            format_args!("Allow write behind, max {}", b.write_behind as i32),
        );
    } else {
        line(&mut s, "Write Mode", "Normal");
    }
    line(
        &mut s,
        "Sync Size",
        format_args!(
            "{}{}",
            b.sync_size_sectors / 2,
            human_size(b.sync_size_sectors.wrapping_mul(512) as i64)
        ),
    );
    if b.nodes == 0 {
        match &m.content {
            BitmapContent::Bits(d) => line(&mut s, "Bitmap", bitmap_line(d.chunks, d.dirty_chunks)),
            BitmapContent::Lockless(l) => {
                line(
                    &mut s,
                    "Bitmap",
                    format_args!(
                        "{} chunks (one state byte each), {} need sync ({:2.1}%)",
                        l.dirty.chunks,
                        l.dirty.dirty_chunks,
                        l.dirty.dirty_percent()
                    ),
                );
                let states: Vec<String> = l
                    .counts
                    .named()
                    .iter()
                    .enumerate()
                    .filter(|(i, (_, n))| *i < 5 || *n > 0)
                    .map(|(_, (name, n))| format!("{n} {}", name.replace('_', " ")))
                    .collect();
                line(&mut s, "Chunk States", states.join(", "));
            }
            BitmapContent::LocklessUninitialized => line(
                &mut s,
                "Bitmap",
                "not yet initialised by the kernel (first use)",
            ),
        }
    } else {
        line(&mut s, "Cluster nodes", b.nodes as i32);
        line(
            &mut s,
            "Cluster name",
            format_args!("{:<64}", b.cluster_name()),
        );
        for slot in &m.cluster_slots {
            render_slot(&mut s, slot);
        }
    }
    s
}

fn render_slot(s: &mut String, slot: &ClusterSlot) {
    match &slot.result {
        Ok(sl) => {
            line(s, "Node Slot", slot.slot);
            line(s, "Events", sl.bitmap.events);
            line(s, "Events Cleared", sl.bitmap.events_cleared);
            line(s, "State", mdadm_state_text(sl.bitmap.state));
            line(
                s,
                "Bitmap",
                bitmap_line(sl.scan.chunks, sl.scan.dirty_chunks),
            );
        }
        Err(_) => {
            let _ = writeln!(s, "   Unable to read bitmap on node: {}", slot.slot);
        }
    }
}

/// The State text: mdadm's for versions 3-5; for the lockless bitmap "OK" or its flag names.
fn state_text(m: &MemberBitmap) -> String {
    if m.bitmap.is_lockless() && m.bitmap.state != 0 {
        m.bitmap.state_flags().join(", ")
    } else {
        mdadm_state_text(m.bitmap.state).to_string()
    }
}

/// Draws the dirty map of a member (node slot 0 for a clustered bitmap) in `width` columns:
/// one character per group of chunks (`#` all dirty, `+` some dirty, `.` clean), rows labelled
/// with their first chunk, at most 16 rows of at most 4096 columns, then the scale and a legend.
pub fn render_map(m: &MemberBitmap, width: usize) -> String {
    const MAX_ROWS: u64 = 16;
    let mut s = String::new();
    let Some(d) = m.content.dirty_ref() else {
        let _ = writeln!(
            s,
            "(no dirty map: the lockless bitmap is not initialised yet)"
        );
        return s;
    };
    let chunks = d.chunks;
    if chunks == 0 {
        let _ = writeln!(s, "(no dirty map: the bitmap covers no chunks)");
        return s;
    }
    let label_w = (chunks - 1).to_string().len().max(1);
    let cols = width.saturating_sub(label_w + 3).clamp(8, 4096) as u64;
    let per_cell = chunks.div_ceil(cols * MAX_ROWS).max(1);
    let cells = chunks.div_ceil(per_cell);
    // Dirty chunks per cell, from the ranges (O(ranges + cells)).
    let mut dirty = vec![0u64; cells as usize];
    for r in &d.dirty_ranges {
        let mut c = r.start / per_cell;
        while c * per_cell < r.end && c < cells {
            let lo = r.start.max(c * per_cell);
            let hi = r.end.min((c + 1) * per_cell);
            dirty[c as usize] += hi - lo;
            c += 1;
        }
    }
    for (row, cell_row) in dirty.chunks(cols as usize).enumerate() {
        let first_chunk = row as u64 * cols * per_cell;
        let _ = write!(s, "{first_chunk:>label_w$} |");
        for (i, &n) in cell_row.iter().enumerate() {
            let c = row as u64 * cols + i as u64;
            let size = per_cell.min(chunks - c * per_cell);
            s.push(if n == 0 {
                '.'
            } else if n >= size {
                '#'
            } else {
                '+'
            });
        }
        s.push_str("|\n");
    }
    let chunk = m.bitmap.chunk_size_bytes();
    let _ = writeln!(
        s,
        "{:>label_w$}  scale: 1 column = {per_cell} chunk{} ({}); {} of {chunks} chunks dirty",
        "",
        if per_cell == 1 { "" } else { "s" },
        scale_bytes(per_cell.saturating_mul(chunk)),
        d.dirty_chunks,
    );
    let _ = writeln!(
        s,
        "{:>label_w$}  legend: '#' all dirty, '+' partly dirty, '.' clean{}",
        "",
        if m.bitmap.nodes > 0 {
            " (node slot 0)"
        } else if m.bitmap.is_lockless() {
            " (lockless: dirty = needs a resync)"
        } else {
            ""
        }
    );
    s
}

/// A byte count for the map's scale: exact in the largest binary unit that divides it, else with
/// two decimals (e.g. "64 MiB", "1.50 GiB").
fn scale_bytes(b: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut i = 0;
    while i + 1 < UNITS.len() && b >> (10 * (i + 1)) != 0 {
        i += 1;
    }
    let unit = 1u64 << (10 * i);
    if b.is_multiple_of(unit) {
        format!("{} {}", b / unit, UNITS[i])
    } else {
        format!("{:.2} {}", b as f64 / unit as f64, UNITS[i])
    }
}

/// One line of `inspect --json` (NDJSON): everything known about one member's bitmap.
///
/// Units are in the field names; ranges are half-open `[start, end)` chunk numbers. For a
/// clustered bitmap the top-level bitmap fields are node slot 0's; every slot is in `cluster`.
/// For a lockless bitmap `dirty_chunks`/`dirty_ranges` count chunks whose state needs a resync
/// (dirty, need-sync, syncing, or an invalid byte).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct InspectRecord {
    /// Always "inspect".
    #[serde(rename = "type")]
    pub kind: String,
    /// Always 1 for this layout.
    pub schema_version: u32,
    /// The member path as given.
    pub path: String,
    /// "block_device" or "regular_file".
    pub device_kind: String,
    /// Size of the member in bytes.
    pub device_size_bytes: u64,
    /// The md superblock.
    pub superblock: SuperblockRecord,
    /// Where the bitmap superblock is on the member, in bytes.
    pub bitmap_offset_bytes: u64,
    /// Bitmap superblock version (3 host-endian, 4, 5 clustered, 6 lockless).
    pub version: u32,
    /// "host_endian", "classic", "clustered" or "lockless".
    pub bitmap_kind: String,
    /// Bitmap UUID, formatted as mdadm prints it for this metadata.
    pub uuid: String,
    /// Bitmap event count.
    pub events: u64,
    /// Event count at the last bit clear.
    pub events_cleared: u64,
    /// State as `mdadm -X` words it ("OK", "Out of date", "Unknown"; lockless: flag names).
    pub state: String,
    /// Names of the set state bits.
    pub state_flags: Vec<String>,
    /// Bitmap chunk size in bytes.
    pub chunk_size_bytes: u64,
    /// Daemon period in seconds.
    pub daemon_sleep_secs: u32,
    /// Write-behind limit (0 = normal writes).
    pub write_behind: u32,
    /// Sectors covered by the bitmap.
    pub sync_size_sectors: u64,
    /// Sectors reserved for the bitmap (0 = not recorded).
    pub sectors_reserved: u32,
    /// Number of chunks.
    pub chunks: u64,
    /// Dirty chunks.
    pub dirty_chunks: u64,
    /// Dirty share in percent.
    pub dirty_percent: f64,
    /// Dirty chunk ranges `[start, end)`, ascending and maximal.
    pub dirty_ranges: Vec<[u64; 2]>,
    /// Lockless bitmap details (version 6), else null.
    pub lockless: Option<LocklessRecord>,
    /// Cluster node slots (nodes > 0), else null.
    pub cluster: Option<ClusterRecord>,
    /// Caveats: things the kernel would refuse, or decoding limits.
    pub warnings: Vec<String>,
}

/// md superblock facts in [`InspectRecord`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SuperblockRecord {
    /// "0.90" (or "0.91"), "1.0", "1.1", "1.2".
    pub metadata_version: String,
    /// "little" or "big" (only 0.90 can be big).
    pub byte_order: String,
    /// Where the md superblock is, in bytes.
    pub superblock_offset_bytes: u64,
    /// Array UUID as mdadm prints it.
    pub array_uuid: String,
    /// Array name (1.x), else null.
    pub array_name: Option<String>,
    /// Level name ("raid1", ...), null if unknown.
    pub level: Option<String>,
    /// Level number as stored.
    pub level_number: i32,
    /// Layout word.
    pub layout: u32,
    /// Member slots of the complete array.
    pub raid_disks: u32,
    /// RAID chunk size in bytes.
    pub raid_chunk_size_bytes: u64,
    /// Space used per member, sectors.
    pub component_size_sectors: u64,
    /// Data start on the member, sectors.
    pub data_offset_sectors: u64,
    /// Usable data sectors (1.x), else null.
    pub data_size_sectors: Option<u64>,
    /// Superblock event count.
    pub events: u64,
    /// Creation time, Unix seconds.
    pub creation_time_unix_secs: u64,
    /// 1.x feature map (0 for 0.90).
    pub feature_map: u32,
    /// Permanent device number.
    pub device_number: u32,
    /// "active", "spare", "faulty", "journal" or "unknown".
    pub device_role: String,
    /// Slot of an active member, else null.
    pub device_slot: Option<u32>,
    /// Device UUID (1.x), else null.
    pub device_uuid: Option<String>,
    /// Whether the kernel would accept the superblock checksum.
    pub checksum_valid: bool,
}

/// Lockless bitmap details in [`InspectRecord`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LocklessRecord {
    /// False while the kernel has not yet set the bitmap up (`BITMAP_FIRST_USE`).
    pub initialized: bool,
    /// Chunks per state, null when not initialised.
    pub state_counts: Option<std::collections::BTreeMap<String, u64>>,
}

/// Cluster slots in [`InspectRecord`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ClusterRecord {
    /// `nodes` from the bitmap superblock.
    pub nodes: u32,
    /// Cluster name.
    pub name: String,
    /// Every node's slot.
    pub slots: Vec<ClusterSlotRecord>,
}

/// One node slot in [`ClusterRecord`]; on a read error only `slot`, `bitmap_offset_bytes` and
/// `error` are set.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ClusterSlotRecord {
    /// Node slot number.
    pub slot: u32,
    /// Where the slot's bitmap superblock is, in bytes.
    pub bitmap_offset_bytes: u64,
    /// Why the slot could not be read, else null.
    pub error: Option<String>,
    /// Slot event count.
    pub events: Option<u64>,
    /// Slot events at the last clear.
    pub events_cleared: Option<u64>,
    /// Slot state as mdadm words it.
    pub state: Option<String>,
    /// Chunks of the slot.
    pub chunks: Option<u64>,
    /// Dirty chunks of the slot.
    pub dirty_chunks: Option<u64>,
    /// Dirty ranges of the slot.
    pub dirty_ranges: Option<Vec<[u64; 2]>>,
}

fn ranges(r: &[std::ops::Range<u64>]) -> Vec<[u64; 2]> {
    r.iter().map(|r| [r.start, r.end]).collect()
}

impl InspectRecord {
    /// Builds the record of member `path` of `kind`.
    pub fn new(path: &Path, kind: DeviceKind, m: &MemberBitmap) -> Self {
        let sb = &m.superblock;
        let b = &m.bitmap;
        let d = m.dirty();
        let lockless = match &m.content {
            BitmapContent::Bits(_) => None,
            BitmapContent::Lockless(l) => Some(LocklessRecord {
                initialized: true,
                state_counts: Some(
                    l.counts
                        .named()
                        .iter()
                        .map(|(n, c)| ((*n).to_string(), *c))
                        .collect(),
                ),
            }),
            BitmapContent::LocklessUninitialized => Some(LocklessRecord {
                initialized: false,
                state_counts: None,
            }),
        };
        let cluster = (b.nodes > 0).then(|| ClusterRecord {
            nodes: b.nodes,
            name: b.cluster_name(),
            slots: m
                .cluster_slots
                .iter()
                .map(|s| match &s.result {
                    Ok(sl) => ClusterSlotRecord {
                        slot: s.slot,
                        bitmap_offset_bytes: s.offset_bytes,
                        error: None,
                        events: Some(sl.bitmap.events),
                        events_cleared: Some(sl.bitmap.events_cleared),
                        state: Some(mdadm_state_text(sl.bitmap.state).to_string()),
                        chunks: Some(sl.scan.chunks),
                        dirty_chunks: Some(sl.scan.dirty_chunks),
                        dirty_ranges: Some(ranges(&sl.scan.dirty_ranges)),
                    },
                    Err(e) => ClusterSlotRecord {
                        slot: s.slot,
                        bitmap_offset_bytes: s.offset_bytes,
                        error: Some(e.clone()),
                        events: None,
                        events_cleared: None,
                        state: None,
                        chunks: None,
                        dirty_chunks: None,
                        dirty_ranges: None,
                    },
                })
                .collect(),
        });
        Self {
            kind: "inspect".into(),
            schema_version: 1,
            path: path.display().to_string(),
            device_kind: kind.as_str().into(),
            device_size_bytes: m.device_size_bytes,
            superblock: SuperblockRecord {
                metadata_version: sb.version_string(),
                byte_order: sb.byte_order.as_str().into(),
                superblock_offset_bytes: sb.offset_bytes,
                array_uuid: sb.array_uuid_string(),
                array_name: sb.array_name.clone(),
                level: sb.level_name().map(str::to_string),
                level_number: sb.level,
                layout: sb.layout,
                raid_disks: sb.raid_disks,
                raid_chunk_size_bytes: sb.raid_chunk_size_bytes,
                component_size_sectors: sb.component_size_sectors,
                data_offset_sectors: sb.data_offset_sectors,
                data_size_sectors: sb.data_size_sectors,
                events: sb.events,
                creation_time_unix_secs: sb.ctime_secs,
                feature_map: sb.feature_map,
                device_number: sb.device_number,
                device_role: sb.role.as_str().into(),
                device_slot: sb.role.slot(),
                device_uuid: sb.device_uuid.as_ref().map(crate::ondisk::uuid_string),
                checksum_valid: sb.checksum_valid,
            },
            bitmap_offset_bytes: m.bitmap_offset_bytes,
            version: b.version,
            bitmap_kind: b.kind().map_or("unknown", |k| k.as_str()).into(),
            uuid: sb.uuid_string_for(&b.uuid),
            events: b.events,
            events_cleared: b.events_cleared,
            state: state_text(m),
            state_flags: b.state_flags(),
            chunk_size_bytes: b.chunk_size_bytes(),
            daemon_sleep_secs: b.daemon_sleep_secs,
            write_behind: b.write_behind,
            sync_size_sectors: b.sync_size_sectors,
            sectors_reserved: b.sectors_reserved,
            chunks: d.chunks,
            dirty_chunks: d.dirty_chunks,
            dirty_percent: d.dirty_percent(),
            dirty_ranges: ranges(&d.dirty_ranges),
            lockless,
            cluster,
            warnings: m.warnings.clone(),
        }
    }
}

/// The result of comparing `mdadm -X` with [`render_text`] on one member.
#[derive(Clone, Debug)]
pub struct ParityReport {
    /// The member compared.
    pub path: PathBuf,
    /// The block device mdadm read (a read-only loop device for an image file).
    pub device: String,
    /// mdadm's exit status.
    pub mdadm_status: Option<i32>,
    /// mdadm's stdout, with the Filename value replaced by `path` as given.
    pub mdadm_stdout: String,
    /// mdadm's stderr (warnings).
    pub mdadm_stderr: String,
    /// Our rendering, or "md-bitmap error: ..." if we could not read the member.
    pub ours: String,
    /// Differing lines as "line N: mdadm `...` | md-bitmap `...`"; empty when identical.
    pub diff: Vec<String>,
}

impl ParityReport {
    /// True when both outputs are identical line by line.
    pub fn matches(&self) -> bool {
        self.diff.is_empty()
    }
}

impl std::fmt::Display for ParityReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} (mdadm read {}, exit {:?}):",
            self.path.display(),
            self.device,
            self.mdadm_status
        )?;
        for d in &self.diff {
            writeln!(f, "  {d}")?;
        }
        if !self.mdadm_stderr.is_empty() {
            writeln!(f, "  mdadm stderr: {}", self.mdadm_stderr.trim_end())?;
        }
        Ok(())
    }
}

/// Detaches a loop device when dropped.
struct LoopGuard(String);

impl Drop for LoopGuard {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

/// Runs the real `mdadm -X` on `path` and diffs its output with [`render_text`] line by line.
///
/// mdadm reads only block devices as members (it takes a regular file for a bitmap file), so an
/// image file is attached to a read-only loop device first (`losetup --find --show --read-only`,
/// which needs root) and detached afterwards; the loop device's name on mdadm's Filename line is
/// replaced by `path`. Fails only if mdadm or losetup cannot be run.
pub fn mdadm_parity(path: &Path) -> anyhow::Result<ParityReport> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot stat {}", path.display()))?;
    use std::os::unix::fs::FileTypeExt;
    let mut _guard = None;
    let device = if meta.file_type().is_block_device() {
        path.display().to_string()
    } else {
        let o = Command::new("losetup")
            .args(["--find", "--show", "--read-only"])
            .arg(path)
            .output()
            .context("cannot run losetup")?;
        if !o.status.success() {
            bail!(
                "losetup failed on {}: {}",
                path.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        let dev = String::from_utf8_lossy(&o.stdout).trim().to_string();
        _guard = Some(LoopGuard(dev.clone()));
        dev
    };
    let o = Command::new("mdadm")
        .arg("-X")
        .arg(&device)
        .output()
        .context("cannot run mdadm")?;
    let shown = path.display().to_string();
    let mdadm_stdout: String = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("Filename :") {
                format!("{:>16} : {shown}\n", "Filename")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let ours = match crate::ondisk::read_member(path) {
        Ok((_, m)) => render_text(&shown, &m),
        Err(e) => format!("md-bitmap error: {e}\n"),
    };
    let a: Vec<&str> = mdadm_stdout.lines().collect();
    let b: Vec<&str> = ours.lines().collect();
    let diff = (0..a.len().max(b.len()))
        .filter_map(|i| {
            let x = a.get(i).copied();
            let y = b.get(i).copied();
            (x != y).then(|| {
                format!(
                    "line {}: mdadm `{}` | md-bitmap `{}`",
                    i + 1,
                    x.unwrap_or("<none>"),
                    y.unwrap_or("<none>")
                )
            })
        })
        .collect();
    Ok(ParityReport {
        path: path.to_path_buf(),
        device,
        mdadm_status: o.status.code(),
        mdadm_stdout,
        mdadm_stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        ours,
        diff,
    })
}
