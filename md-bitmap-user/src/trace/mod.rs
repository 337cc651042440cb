//! Write traces of an md array: a compact, versioned, checksummed binary file that
//! `md-bitmap record` writes and `md-bitmap tune` replays.
//!
//! # Format (version 2; version 1 is read too)
//!
//! All integers little-endian.
//!
//! ```text
//! file   := header block*
//! header := "MDBTRACE" u16 version u16 flags(0) u32 len u32 crc32(json) json[len]
//! block  := "MDBB" u32 payload_len u32 events u32 crc32(payload) payload[payload_len]
//! ```
//!
//! The header's JSON is a [`TraceHeader`]: the array's geometry, its bitmap, the kernel and
//! the on-disk dirty chunks when recording started. Each block decodes on its own (its deltas
//! restart at zero), so a reader that meets a damaged block skips to the next `"MDBB"` whose
//! checksum holds and keeps everything intact ([`read_trace`] reports what it lost).
//!
//! A block's payload is a sequence of events, each a tag byte then LEB128 varints:
//!
//! * `0` write: Δtime (ns since the previous event of the block), zigzag Δsector (from the end
//!   of the previous write), sectors, latency + 1 (ns from queue to completion; 0 = unknown);
//! * `1` daemon: Δtime, Δjiffies (zigzag, from the previous daemon event of the block; the
//!   first one is absolute) — an entry into md's bitmap daemon (`md_bitmap_daemon_work()` /
//!   `bitmap_daemon_work()`), which runs only if `daemon_sleep` has passed;
//! * `2` superblock update: Δtime — an entry into `md_bitmap_update_sb()` /
//!   `bitmap_update_sb()` (page 0 of the bitmap written);
//! * `3` unplug: Δtime — an entry into `md_bitmap_unplug()` / `bitmap_unplug()` (the
//!   personality flushing DIRTY bitmap pages before its data writes);
//! * `4` md thread asleep (version 2): Δtime — a return of the array's md thread function
//!   (`raid1d()` / `raid10d()` / `raid5d()`): `md_thread()` then sleeps until woken or until
//!   `thread->timeout` has passed, counted from here (the bitmap daemon's timer). A trace
//!   without any (the probe could not be attached) does not know when the thread slept.
//!
//! Version 1 is version 2 without tag `4`; it reads as such.
//!
//! Times are CLOCK_MONOTONIC nanoseconds; the first event of a block carries its absolute time.
pub mod record;

use std::io::Write;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// File magic.
pub const MAGIC: &[u8; 8] = b"MDBTRACE";
/// Block magic.
pub const BLOCK_MAGIC: &[u8; 4] = b"MDBB";
/// The format version this code writes (it reads this one and [`MIN_VERSION`]).
pub const VERSION: u16 = 2;
/// The oldest format version this code reads.
pub const MIN_VERSION: u16 = 1;
/// Events per block before the writer closes it (a block is also closed by [`TraceWriter::flush`]).
pub const BLOCK_EVENTS: usize = 4096;
/// Largest payload a reader accepts (a corrupt length must not make it allocate gigabytes).
const MAX_PAYLOAD: u32 = 16 << 20;

const TAG_WRITE: u8 = 0;
const TAG_DAEMON: u8 = 1;
const TAG_UPDATE_SB: u8 = 2;
const TAG_UNPLUG: u8 = 3;
const TAG_THREAD_SLEEP: u8 = 4;

/// What a trace knows about the array it was recorded on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceHeader {
    /// Array name (`md0`).
    pub array: String,
    /// `md/level` (raid1, raid4, raid5, raid6, raid10).
    pub level: String,
    /// `md/layout`.
    pub layout: u32,
    /// `md/raid_disks`.
    pub raid_disks: u32,
    /// RAID chunk size in bytes.
    pub chunk_size_bytes: u64,
    /// Per-member data size in KiB (`component_size`).
    pub component_size_kib: u64,
    /// Array size in sectors.
    pub array_sectors: u64,
    /// Bitmap chunk size in use, bytes.
    pub bitmap_chunk_bytes: u64,
    /// Sectors the bitmap covers (superblock `sync_size`).
    pub bitmap_sync_sectors: u64,
    /// Space reserved for the bitmap on each member, sectors (`md/bitmap/space`; 0 unknown).
    pub bitmap_space_sectors: u64,
    /// `md/bitmap/location` (`+8`, ...).
    pub bitmap_location: String,
    /// Daemon sleep (`md/bitmap/time_base`) in seconds.
    pub daemon_sleep_secs: f64,
    /// Members in the array that the kernel writes bitmap pages to.
    pub active_members: u32,
    /// `sync_speed_max` in KiB/s, if known.
    pub sync_speed_max_kibs: Option<u64>,
    /// `uname -r`.
    pub kernel_release: String,
    /// Engine kernel variant name (`6.1`, `6.12`, `6.14`).
    pub kernel_variant: String,
    /// Bitmap accounting: `per-bio` or `per-stripe`.
    pub accounting: String,
    /// On-disk dirty chunk ranges (in `bitmap_chunk_bytes` chunks) when recording started.
    pub initial_dirty: Vec<(u64, u64)>,
    /// `events_cleared` / `events` when recording started (`bitmap->events_cleared` and
    /// `mddev->events` when they could be read from the kernel, else the bitmap superblock's).
    pub initial_events: (u64, u64),
    /// CLOCK_MONOTONIC ns when recording started.
    pub start_ns: u64,
    /// The kernel's `bitmap->daemon_lastrun` (jiffies) when recording started, if it could be
    /// read.
    #[serde(default)]
    pub daemon_lastrun_jiffies: Option<u64>,
    /// `md/array_state` when recording started (`clean` = `mddev->in_sync`).
    #[serde(default)]
    pub initial_array_state: Option<String>,
}

/// One recorded event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceEvent {
    /// A write bio queued on the array.
    Write {
        /// Queue time, ns.
        t_ns: u64,
        /// First sector (array space).
        sector: u64,
        /// Length in sectors.
        sectors: u64,
        /// Queue-to-completion time, ns, if the completion was seen.
        latency_ns: Option<u64>,
    },
    /// An entry into the bitmap daemon.
    Daemon {
        /// Time, ns.
        t_ns: u64,
        /// The kernel's jiffies then; for a pass that ran, the kernel's `daemon_lastrun` (the
        /// jiffies md's time test passed at) when the recorder could read it.
        jiffies: u64,
    },
    /// An entry into the bitmap superblock update.
    UpdateSb {
        /// Time, ns.
        t_ns: u64,
    },
    /// An entry into the bitmap unplug.
    Unplug {
        /// Time, ns.
        t_ns: u64,
    },
    /// The array's md thread went back to sleep (its thread function returned): the thread's
    /// timeout counts from here.
    ThreadSleep {
        /// Time, ns.
        t_ns: u64,
    },
}

impl TraceEvent {
    /// The event's time, ns.
    pub fn t_ns(&self) -> u64 {
        match *self {
            TraceEvent::Write { t_ns, .. }
            | TraceEvent::Daemon { t_ns, .. }
            | TraceEvent::UpdateSb { t_ns }
            | TraceEvent::Unplug { t_ns }
            | TraceEvent::ThreadSleep { t_ns } => t_ns,
        }
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    (v >> 1) as i64 ^ -((v & 1) as i64)
}

/// Encodes one block's events with the deltas starting from zero.
#[derive(Default)]
struct BlockEncoder {
    buf: Vec<u8>,
    events: u32,
    last_t: u64,
    last_end: u64,
    last_jiffies: u64,
}

impl BlockEncoder {
    fn push(&mut self, ev: &TraceEvent) {
        let t = ev.t_ns();
        // Events arrive in time order; a clock step back is stored as 0 rather than rejected.
        let dt = t.saturating_sub(self.last_t);
        self.last_t = self.last_t.max(t);
        match *ev {
            TraceEvent::Write {
                sector,
                sectors,
                latency_ns,
                ..
            } => {
                self.buf.push(TAG_WRITE);
                put_varint(&mut self.buf, dt);
                put_varint(
                    &mut self.buf,
                    zigzag(sector.wrapping_sub(self.last_end) as i64),
                );
                put_varint(&mut self.buf, sectors);
                put_varint(&mut self.buf, latency_ns.map_or(0, |l| l.saturating_add(1)));
                self.last_end = sector.wrapping_add(sectors);
            }
            TraceEvent::Daemon { jiffies, .. } => {
                self.buf.push(TAG_DAEMON);
                put_varint(&mut self.buf, dt);
                put_varint(
                    &mut self.buf,
                    zigzag(jiffies.wrapping_sub(self.last_jiffies) as i64),
                );
                self.last_jiffies = jiffies;
            }
            TraceEvent::UpdateSb { .. } => {
                self.buf.push(TAG_UPDATE_SB);
                put_varint(&mut self.buf, dt);
            }
            TraceEvent::Unplug { .. } => {
                self.buf.push(TAG_UNPLUG);
                put_varint(&mut self.buf, dt);
            }
            TraceEvent::ThreadSleep { .. } => {
                self.buf.push(TAG_THREAD_SLEEP);
                put_varint(&mut self.buf, dt);
            }
        }
        self.events += 1;
    }
}

/// Writes a trace: the header at once, then blocks of events.
///
/// Every [`flush`](Self::flush) closes the current block and writes it through, so a recorder
/// that flushes regularly loses at most the events since its last flush if it is killed.
pub struct TraceWriter<W: Write> {
    out: W,
    block: BlockEncoder,
    /// Events written so far.
    pub events: u64,
    /// Bytes written so far.
    pub bytes: u64,
}

impl<W: Write> TraceWriter<W> {
    /// Writes the header and returns the writer.
    pub fn new(mut out: W, header: &TraceHeader) -> Result<Self> {
        let json = serde_json::to_vec(header)?;
        let mut h = Vec::with_capacity(20 + json.len());
        h.extend_from_slice(MAGIC);
        h.extend_from_slice(&VERSION.to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(&(json.len() as u32).to_le_bytes());
        h.extend_from_slice(&crc32fast::hash(&json).to_le_bytes());
        h.extend_from_slice(&json);
        out.write_all(&h).context("cannot write the trace header")?;
        out.flush()?;
        Ok(Self {
            out,
            block: BlockEncoder::default(),
            events: 0,
            bytes: h.len() as u64,
        })
    }

    /// Appends one event (events must come in time order).
    pub fn push(&mut self, ev: &TraceEvent) -> Result<()> {
        self.block.push(ev);
        self.events += 1;
        if self.block.events as usize >= BLOCK_EVENTS {
            self.flush()?;
        }
        Ok(())
    }

    /// Closes the current block (if it has events) and flushes the output.
    pub fn flush(&mut self) -> Result<()> {
        if self.block.events > 0 {
            let b = std::mem::take(&mut self.block);
            let mut frame = Vec::with_capacity(16 + b.buf.len());
            frame.extend_from_slice(BLOCK_MAGIC);
            frame.extend_from_slice(&(b.buf.len() as u32).to_le_bytes());
            frame.extend_from_slice(&b.events.to_le_bytes());
            frame.extend_from_slice(&crc32fast::hash(&b.buf).to_le_bytes());
            frame.extend_from_slice(&b.buf);
            self.out
                .write_all(&frame)
                .context("cannot write a trace block")?;
            self.bytes += frame.len() as u64;
        }
        self.out.flush().context("cannot flush the trace")?;
        Ok(())
    }

    /// Flushes and returns the output.
    pub fn finish(mut self) -> Result<W> {
        self.flush()?;
        Ok(self.out)
    }
}

/// What a reader could not use.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TraceLoss {
    /// Blocks whose checksum or encoding failed.
    pub bad_blocks: u64,
    /// Bytes skipped (bad blocks, garbage between blocks, a truncated tail).
    pub skipped_bytes: u64,
    /// The file ended inside a block.
    pub truncated: bool,
}

impl TraceLoss {
    /// True when the whole file was usable.
    pub fn is_empty(&self) -> bool {
        *self == TraceLoss::default()
    }
}

impl std::fmt::Display for TraceLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            return write!(f, "intact");
        }
        write!(
            f,
            "{} corrupt block(s), {} byte(s) skipped{}",
            self.bad_blocks,
            self.skipped_bytes,
            if self.truncated {
                ", truncated tail"
            } else {
                ""
            }
        )
    }
}

/// A trace as read back.
#[derive(Clone, Debug)]
pub struct Trace {
    /// The header.
    pub header: TraceHeader,
    /// Every event of every intact block, in file order.
    pub events: Vec<TraceEvent>,
    /// Intact blocks.
    pub blocks: u64,
    /// What could not be used.
    pub loss: TraceLoss,
}

fn get_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn decode_block(payload: &[u8], n: u32, version: u16, out: &mut Vec<TraceEvent>) -> Option<()> {
    let mut pos = 0;
    let (mut t, mut last_end, mut jiffies) = (0u64, 0u64, 0u64);
    let start = out.len();
    for _ in 0..n {
        let tag = *payload.get(pos)?;
        pos += 1;
        t = t.checked_add(get_varint(payload, &mut pos)?)?;
        let ev = match tag {
            TAG_WRITE => {
                let sector = last_end.wrapping_add(unzigzag(get_varint(payload, &mut pos)?) as u64);
                let sectors = get_varint(payload, &mut pos)?;
                let lat = get_varint(payload, &mut pos)?;
                last_end = sector.wrapping_add(sectors);
                TraceEvent::Write {
                    t_ns: t,
                    sector,
                    sectors,
                    latency_ns: lat.checked_sub(1),
                }
            }
            TAG_DAEMON => {
                jiffies = jiffies.wrapping_add(unzigzag(get_varint(payload, &mut pos)?) as u64);
                TraceEvent::Daemon { t_ns: t, jiffies }
            }
            TAG_UPDATE_SB => TraceEvent::UpdateSb { t_ns: t },
            TAG_UNPLUG => TraceEvent::Unplug { t_ns: t },
            TAG_THREAD_SLEEP if version >= 2 => TraceEvent::ThreadSleep { t_ns: t },
            _ => {
                out.truncate(start);
                return None;
            }
        };
        out.push(ev);
    }
    if pos != payload.len() {
        out.truncate(start);
        return None;
    }
    Some(())
}

/// Parses a trace from bytes, keeping every intact block of a damaged file. Fails only when
/// the header itself is unusable (wrong magic, unknown version, bad checksum).
pub fn read_trace(data: &[u8]) -> Result<Trace> {
    if data.len() < 20 || &data[..8] != MAGIC {
        bail!("not an md-bitmap trace (no MDBTRACE magic)");
    }
    let version = u16::from_le_bytes([data[8], data[9]]);
    if !(MIN_VERSION..=VERSION).contains(&version) {
        bail!(
            "trace format version {version} is not supported (this md-bitmap reads versions {MIN_VERSION} to {VERSION})"
        );
    }
    let len = u32::from_le_bytes(data[12..16].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(data[16..20].try_into().expect("4 bytes"));
    let json = data
        .get(20..20 + len)
        .context("trace header is truncated")?;
    if crc32fast::hash(json) != crc {
        bail!("trace header checksum mismatch: the header is corrupt");
    }
    let header: TraceHeader =
        serde_json::from_slice(json).context("trace header does not parse")?;
    let mut events = Vec::new();
    let mut loss = TraceLoss::default();
    let mut blocks = 0u64;
    let mut pos = 20 + len;
    // Bytes skipped since the last good block, counted into `skipped_bytes` once resolved.
    while pos < data.len() {
        let rest = &data[pos..];
        if rest.len() < 16 {
            if rest.starts_with(&BLOCK_MAGIC[..rest.len().min(4)]) {
                loss.truncated = true;
            }
            loss.skipped_bytes += rest.len() as u64;
            break;
        }
        if &rest[..4] != BLOCK_MAGIC {
            // Garbage: resynchronise on the next block magic.
            let skip = find_magic(&rest[1..]).map_or(rest.len(), |i| i + 1);
            loss.skipped_bytes += skip as u64;
            pos += skip;
            continue;
        }
        let plen = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        let n = u32::from_le_bytes(rest[8..12].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(rest[12..16].try_into().expect("4 bytes"));
        let end = 16usize.saturating_add(plen as usize);
        let ok = if plen > MAX_PAYLOAD {
            false
        } else if end > rest.len() {
            // Runs past the end: a truncated last block unless a later magic says otherwise.
            if find_magic(&rest[4..]).is_none() {
                loss.truncated = true;
                loss.bad_blocks += 1;
                loss.skipped_bytes += rest.len() as u64;
                break;
            }
            false
        } else {
            let payload = &rest[16..end];
            crc32fast::hash(payload) == crc
                && decode_block(payload, n, version, &mut events).is_some()
        };
        if ok {
            blocks += 1;
            pos += end;
        } else {
            loss.bad_blocks += 1;
            let skip = find_magic(&rest[4..]).map_or(rest.len(), |i| i + 4);
            loss.skipped_bytes += skip as u64;
            pos += skip;
        }
    }
    Ok(Trace {
        header,
        events,
        blocks,
        loss,
    })
}

fn find_magic(hay: &[u8]) -> Option<usize> {
    hay.windows(4).position(|w| w == BLOCK_MAGIC)
}

/// Reads a trace file (see [`read_trace`]).
pub fn read_trace_file(path: &std::path::Path) -> Result<Trace> {
    let data =
        std::fs::read(path).with_context(|| format!("cannot read trace {}", path.display()))?;
    read_trace(&data).with_context(|| format!("{}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn header() -> TraceHeader {
        TraceHeader {
            array: "md0".into(),
            level: "raid1".into(),
            layout: 0,
            raid_disks: 2,
            chunk_size_bytes: 0,
            component_size_kib: 1 << 20,
            array_sectors: 2 << 20,
            bitmap_chunk_bytes: 64 << 10,
            bitmap_sync_sectors: 2 << 20,
            bitmap_space_sectors: 8,
            bitmap_location: "+8".into(),
            daemon_sleep_secs: 5.0,
            active_members: 2,
            sync_speed_max_kibs: Some(200_000),
            kernel_release: "6.12.0".into(),
            kernel_variant: "6.12".into(),
            accounting: "per-bio".into(),
            initial_dirty: vec![(3, 5)],
            initial_events: (10, 12),
            start_ns: 1_000,
            daemon_lastrun_jiffies: None,
            initial_array_state: Some("clean".into()),
        }
    }

    fn events(n: u64) -> Vec<TraceEvent> {
        (0..n)
            .map(|i| match i % 8 {
                7 => TraceEvent::Unplug {
                    t_ns: 1_000 + i * 1_000,
                },
                5 => TraceEvent::Daemon {
                    t_ns: 1_000 + i * 1_000,
                    jiffies: 4_294_000_000 + i,
                },
                6 => TraceEvent::UpdateSb {
                    t_ns: 1_000 + i * 1_000,
                },
                _ => TraceEvent::Write {
                    t_ns: 1_000 + i * 1_000,
                    sector: (i * 7919) % 100_000,
                    sectors: 8 + i % 3 * 8,
                    latency_ns: (i % 4 != 0).then_some(i * 13),
                },
            })
            .collect()
    }

    fn write(evs: &[TraceEvent]) -> Vec<u8> {
        let mut w = TraceWriter::new(Vec::new(), &header()).unwrap();
        for e in evs {
            w.push(e).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn round_trips_and_is_compact() {
        let evs = events(10_000);
        let bytes = write(&evs);
        let t = read_trace(&bytes).unwrap();
        assert_eq!(t.header, header());
        assert_eq!(t.events, evs);
        assert!(t.loss.is_empty());
        assert_eq!(t.blocks, 3);
        // 10k events with u64 fields would be 320 KB raw; deltas and varints keep it small.
        assert!(bytes.len() < 10_000 * 10, "{} bytes", bytes.len());
    }

    #[test]
    fn truncated_file_keeps_the_intact_blocks() {
        let evs = events(10_000);
        let bytes = write(&evs);
        let t = read_trace(&bytes[..bytes.len() - 100]).unwrap();
        assert!(t.loss.truncated);
        assert_eq!(t.loss.bad_blocks, 1);
        assert_eq!(t.blocks, 2);
        assert_eq!(t.events, evs[..2 * BLOCK_EVENTS]);
    }

    #[test]
    fn corrupt_block_is_skipped_and_reported() {
        let evs = events(10_000);
        let mut bytes = write(&evs);
        // Flip a byte inside the second block's payload.
        let second = bytes
            .windows(4)
            .enumerate()
            .filter(|(_, w)| w == BLOCK_MAGIC)
            .nth(1)
            .unwrap()
            .0;
        bytes[second + 40] ^= 0x55;
        let t = read_trace(&bytes).unwrap();
        assert_eq!(t.loss.bad_blocks, 1);
        assert!(!t.loss.truncated);
        assert_eq!(t.blocks, 2);
        let mut want = evs[..BLOCK_EVENTS].to_vec();
        want.extend_from_slice(&evs[2 * BLOCK_EVENTS..]);
        assert_eq!(t.events, want);
        assert!(t.loss.to_string().contains("1 corrupt block"));
    }

    #[test]
    fn bad_headers_are_clear_errors() {
        let bytes = write(&events(10));
        assert!(
            read_trace(b"hello")
                .unwrap_err()
                .to_string()
                .contains("magic")
        );
        let mut v = bytes.clone();
        v[8] = 9;
        assert!(
            read_trace(&v)
                .unwrap_err()
                .to_string()
                .contains("version 9")
        );
        let mut c = bytes.clone();
        c[25] ^= 1;
        assert!(read_trace(&c).unwrap_err().to_string().contains("checksum"));
        assert!(
            read_trace(&bytes[..30])
                .unwrap_err()
                .to_string()
                .contains("truncated")
        );
    }

    /// Version 2 adds the md thread's run ends (tag 4); a version-1 file still reads, and a
    /// tag 4 in a version-1 file is a corrupt block there.
    #[test]
    fn thread_sleep_round_trips_and_version_1_still_reads() {
        let mut evs = events(100);
        evs.push(TraceEvent::ThreadSleep { t_ns: 200_000 });
        let bytes = write(&evs);
        assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), 2);
        assert_eq!(read_trace(&bytes).unwrap().events, evs);
        let mut v1 = write(&evs[..100]);
        v1[8] = 1;
        let t = read_trace(&v1).unwrap();
        assert_eq!(t.events, evs[..100]);
        assert!(t.loss.is_empty());
        let mut bad = bytes.clone();
        bad[8] = 1;
        let t = read_trace(&bad).unwrap();
        assert_eq!(t.loss.bad_blocks, 1);
        assert!(t.events.is_empty());
    }

    #[test]
    fn varints_and_zigzag_round_trip() {
        for v in [0u64, 1, 127, 128, 300, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            let mut p = 0;
            assert_eq!(get_varint(&b, &mut p), Some(v));
            assert_eq!(p, b.len());
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }
}
