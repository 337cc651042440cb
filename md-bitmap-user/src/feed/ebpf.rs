//! Loading md-bitmap's eBPF programs into the running kernel and reading their ring buffer.
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use aya::Ebpf;
use aya::maps::{Array as BpfArray, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::{KProbe, TracePoint};
use md_bitmap_common::{Counter, PEEK_MAX, PeekReply, PeekRequest, Record};

use super::record::DevNum;
use super::symbols::BitmapAbi;

/// The eBPF object built by build.rs (empty when built with `AYA_BUILD_SKIP=1`).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/md-bitmap"));

/// Block tracepoint fields the eBPF programs read at fixed offsets: checked against the running
/// kernel's format files before attaching, so a kernel that moved them fails loudly.
const TRACEPOINT_LAYOUT: &[(&str, &[(&str, usize)])] = &[
    (
        "block_bio_queue",
        &[("dev", 8), ("sector", 16), ("nr_sector", 24), ("rwbs", 28)],
    ),
    (
        "block_bio_complete",
        &[
            ("dev", 8),
            ("sector", 16),
            ("nr_sector", 24),
            ("error", 28),
            ("rwbs", 32),
        ],
    ),
    (
        "block_bio_remap",
        &[
            ("dev", 8),
            ("sector", 16),
            ("nr_sector", 24),
            ("old_dev", 28),
            ("old_sector", 32),
            ("rwbs", 40),
        ],
    ),
];

/// What [`Feed::attach`] attached.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Attached {
    /// `program -> kernel function` for kprobes.
    pub kprobes: BTreeMap<String, String>,
    /// `block/<name>` tracepoints.
    pub tracepoints: Vec<String>,
}

/// Feed statistics summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FeedCounters {
    /// Records written to the ring buffer.
    pub emitted: u64,
    /// Records lost because the ring buffer was full.
    pub dropped: u64,
    /// Block events on devices that are not watched.
    pub filtered: u64,
}

/// md-bitmap's eBPF programs, loaded and attached.
pub struct Feed {
    ebpf: Ebpf,
    ring: Option<RingBuf<MapData>>,
    /// What got attached.
    pub attached: Attached,
    peek_seq: u64,
    peek_attached: bool,
}

fn tracefs_dir() -> Option<&'static Path> {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.join("events").is_dir())
}

/// Parses a tracepoint `format` file into `field name -> offset`.
pub fn parse_format(text: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let mut decl = None;
        let mut offset = None;
        for part in rest.split(';') {
            let part = part.trim();
            if let Some(o) = part.strip_prefix("offset:") {
                offset = o.trim().parse().ok();
            } else if decl.is_none() && !part.is_empty() {
                decl = Some(part.to_string());
            }
        }
        if let (Some(decl), Some(offset)) = (decl, offset) {
            // "char rwbs[8]" -> "rwbs"; "dev_t dev" -> "dev"
            let name = decl.rsplit(' ').next().unwrap_or(&decl);
            let name = name.split('[').next().unwrap_or(name);
            out.insert(name.to_string(), offset);
        }
    }
    out
}

fn check_tracepoint(name: &str, fields: &[(&str, usize)]) -> Result<()> {
    let Some(dir) = tracefs_dir() else {
        // Without tracefs we cannot check; the attach itself will fail if tracepoints are absent.
        return Ok(());
    };
    let path = dir.join("events/block").join(name).join("format");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let have = parse_format(&text);
    for (field, off) in fields {
        match have.get(*field) {
            Some(o) if o == off => {}
            other => bail!(
                "tracepoint block/{name}: field {field} is at {other:?}, md-bitmap expects offset {off}"
            ),
        }
    }
    Ok(())
}

impl Feed {
    /// Loads the embedded programs into the kernel (needs CAP_BPF and CAP_PERFMON, or root).
    pub fn load() -> Result<Self> {
        if OBJECT.is_empty() {
            bail!(
                "this md-bitmap was built without its eBPF programs (AYA_BUILD_SKIP=1); rebuild it normally"
            );
        }
        let ebpf = Ebpf::load(OBJECT).map_err(|e| {
            let hint = if unsafe { libc::geteuid() } != 0 {
                " (md-bitmap needs root, or CAP_BPF and CAP_PERFMON)"
            } else {
                ""
            };
            anyhow!("cannot load md-bitmap's eBPF programs: {e}{hint}")
        })?;
        Ok(Self {
            ebpf,
            ring: None,
            attached: Attached::default(),
            peek_seq: 0,
            peek_attached: false,
        })
    }

    /// Attaches kprobes to the bitmap functions named by `abi`, and the block tracepoints.
    pub fn attach(&mut self, abi: &BitmapAbi) -> Result<()> {
        let mut probes: Vec<(&str, &str)> = vec![
            ("md_start_write", abi.start_write.as_str()),
            ("md_end_write", abi.end_write.as_str()),
        ];
        for (prog, f) in [
            ("md_start_sync", &abi.start_sync),
            ("md_end_sync", &abi.end_sync),
            ("md_close_sync", &abi.close_sync),
            ("md_cond_end_sync", &abi.cond_end_sync),
            ("md_daemon_work", &abi.daemon_work),
            ("md_unplug", &abi.unplug),
        ] {
            if let Some(f) = f {
                probes.push((prog, f.as_str()));
            }
        }
        for (prog, func) in probes {
            let p: &mut KProbe = self
                .ebpf
                .program_mut(prog)
                .ok_or_else(|| anyhow!("eBPF program {prog} missing from the object"))?
                .try_into()?;
            p.load()
                .with_context(|| format!("cannot load eBPF program {prog}"))?;
            p.attach(func, 0)
                .with_context(|| format!("cannot attach kprobe {prog} to {func}"))?;
            self.attached
                .kprobes
                .insert(prog.to_string(), func.to_string());
        }
        for (tp, fields) in TRACEPOINT_LAYOUT {
            check_tracepoint(tp, fields)?;
            let p: &mut TracePoint = self
                .ebpf
                .program_mut(tp)
                .ok_or_else(|| anyhow!("eBPF program {tp} missing from the object"))?
                .try_into()?;
            p.load()
                .with_context(|| format!("cannot load eBPF program {tp}"))?;
            p.attach("block", tp)
                .with_context(|| format!("cannot attach tracepoint block/{tp}"))?;
            self.attached.tracepoints.push(format!("block/{tp}"));
        }
        Ok(())
    }

    /// Makes the block tracepoints report bios of `dev`.
    pub fn watch_dev(&mut self, dev: DevNum) -> Result<()> {
        let mut map: BpfHashMap<_, u32, u8> = BpfHashMap::try_from(
            self.ebpf
                .map_mut("WATCHED_DEVS")
                .context("no WATCHED_DEVS")?,
        )?;
        map.insert(dev.to_kernel(), 1, 0)?;
        Ok(())
    }

    /// Stops reporting bios of `dev`.
    pub fn unwatch_dev(&mut self, dev: DevNum) -> Result<()> {
        let mut map: BpfHashMap<_, u32, u8> = BpfHashMap::try_from(
            self.ebpf
                .map_mut("WATCHED_DEVS")
                .context("no WATCHED_DEVS")?,
        )?;
        let _ = map.remove(&dev.to_kernel());
        Ok(())
    }

    /// The ring buffer (taken from the object on first use).
    pub fn ring(&mut self) -> Result<&mut RingBuf<MapData>> {
        if self.ring.is_none() {
            let map = self.ebpf.take_map("EVENTS").context("no EVENTS map")?;
            self.ring = Some(RingBuf::try_from(map)?);
        }
        Ok(self.ring.as_mut().unwrap())
    }

    /// Calls `f` on every record waiting in the ring buffer; returns how many there were.
    pub fn drain(&mut self, mut f: impl FnMut(&Record)) -> Result<usize> {
        let ring = self.ring()?;
        let mut n = 0;
        while let Some(item) = ring.next() {
            if item.len() >= Record::SIZE {
                // SAFETY: the eBPF side reserves exactly `size_of::<Record>()` bytes per entry and
                // ring-buffer entries are 8-byte aligned; `Record` is `Pod` (any bytes are valid),
                // and `read_unaligned` makes no alignment assumption anyway.
                let rec: Record = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                f(&rec);
                n += 1;
            }
        }
        Ok(n)
    }

    /// Attaches the kernel-memory reader (tracepoint `syscalls/sys_enter_getppid`, serving this
    /// process only). Used by the kernel-state oracle, never by the live mirror.
    pub fn attach_peek(&mut self) -> Result<()> {
        if self.peek_attached {
            return Ok(());
        }
        let p: &mut TracePoint = self
            .ebpf
            .program_mut("peek")
            .context("eBPF program peek missing from the object")?
            .try_into()?;
        p.load().context("cannot load eBPF program peek")?;
        p.attach("syscalls", "sys_enter_getppid").context(
            "cannot attach tracepoint syscalls/sys_enter_getppid (CONFIG_FTRACE_SYSCALLS?)",
        )?;
        self.peek_attached = true;
        Ok(())
    }

    /// Copies `len` (at most 4096) bytes of kernel memory at `addr` (needs [`Feed::attach_peek`]).
    pub fn peek(&mut self, addr: u64, len: usize) -> Result<Vec<u8>> {
        if len > PEEK_MAX {
            bail!("peek of {len} bytes: at most {PEEK_MAX}");
        }
        self.peek_seq += 1;
        let req = PeekRequest {
            tgid: std::process::id(),
            len: len as u32,
            addr,
            seq: self.peek_seq,
        };
        {
            let mut m: BpfArray<_, PeekRequest> =
                BpfArray::try_from(self.ebpf.map_mut("PEEK_REQ").context("no PEEK_REQ")?)?;
            m.set(0, req, 0)?;
        }
        // SAFETY: getppid has no arguments and no side effects; it triggers the peek program.
        unsafe { libc::getppid() };
        let m: BpfArray<_, PeekReply> =
            BpfArray::try_from(self.ebpf.map("PEEK_BUF").context("no PEEK_BUF")?)?;
        let reply = m.get(&0, 0)?;
        if reply.seq != self.peek_seq {
            bail!("kernel memory read at {addr:#x} was not served");
        }
        if reply.ret != 0 {
            bail!("kernel memory read at {addr:#x} failed ({})", reply.ret);
        }
        Ok(reply.data[..len].to_vec())
    }

    /// Reads a little-endian u64 of kernel memory.
    pub fn peek_u64(&mut self, addr: u64) -> Result<u64> {
        Ok(u64::from_le_bytes(self.peek(addr, 8)?.try_into().unwrap()))
    }

    /// Feed statistics summed over CPUs.
    pub fn counters(&self) -> Result<FeedCounters> {
        let map: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map("COUNTERS").context("no COUNTERS map")?)?;
        let sum =
            |c: Counter| -> Result<u64> { Ok(map.get(&(c as u32), 0)?.iter().copied().sum()) };
        Ok(FeedCounters {
            emitted: sum(Counter::Emitted)?,
            dropped: sum(Counter::Dropped)?,
            filtered: sum(Counter::Filtered)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUEUE_FORMAT_6_1: &str = "name: block_bio_queue
ID: 1234
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:dev_t dev;\toffset:8;\tsize:4;\tsigned:0;
\tfield:sector_t sector;\toffset:16;\tsize:8;\tsigned:0;
\tfield:unsigned int nr_sector;\toffset:24;\tsize:4;\tsigned:0;
\tfield:char rwbs[8];\toffset:28;\tsize:8;\tsigned:0;
\tfield:char comm[16];\toffset:36;\tsize:16;\tsigned:0;
";

    #[test]
    fn parses_tracepoint_format_offsets() {
        let f = parse_format(QUEUE_FORMAT_6_1);
        assert_eq!(f["dev"], 8);
        assert_eq!(f["sector"], 16);
        assert_eq!(f["nr_sector"], 24);
        assert_eq!(f["rwbs"], 28);
        assert_eq!(f["comm"], 36);
    }
}
