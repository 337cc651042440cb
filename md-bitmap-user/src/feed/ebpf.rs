//! Loading md-bitmap's eBPF programs into the running kernel and reading their ring buffer.
use std::collections::BTreeMap;

use anyhow::{Context, Result, anyhow, bail};
use aya::Ebpf;
use aya::maps::{Array as BpfArray, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::{BtfTracePoint, KProbe, RawTracePoint, RawTracePointRunOptions, TestRun};
use md_bitmap_common::{BioLayout, Counter, MdLayout, PEEK_MAX, PeekReply, Record};

use super::record::DevNum;
use super::symbols::BitmapAbi;

/// The eBPF object built by build.rs (empty when built with `AYA_BUILD_SKIP=1`).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/md-bitmap"));

/// What [`Feed::attach`] attached.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Attached {
    /// `program -> kernel function` for kprobes.
    pub kprobes: BTreeMap<String, String>,
    /// `block/<name>` tracepoints.
    pub tracepoints: Vec<String>,
    /// How the block tracepoints are attached: `tp_btf` (BTF tracepoints, `struct bio` read by
    /// verifier-checked loads) or `raw_tp` (raw tracepoints, `bpf_probe_read_kernel`; the
    /// fallback when the BTF ones cannot load); empty before [`Feed::attach`].
    pub block_path: &'static str,
    /// Why the BTF tracepoints were not used, when they were not.
    pub btf_fallback: Option<String>,
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
    /// Program runs the kernel skipped (see [`Feed::missed`]).
    pub missed: u64,
    /// Bitmap daemon calls that ran no pass, not reported (see `MdLayout::daemon_passes_only`).
    pub idle_daemon: u64,
}

/// md-bitmap's eBPF programs, loaded and attached.
pub struct Feed {
    ebpf: Ebpf,
    ring: Option<RingBuf<MapData>>,
    /// What got attached.
    pub attached: Attached,
    peek_seq: u64,
    peek_loaded: bool,
    peek_ts_ns: u64,
    /// `struct bio` layout from vmlinux BTF, computed at load (also set into the BTF
    /// tracepoint programs' read-only globals); the error when it could not be.
    bio_layout: std::result::Result<BioLayout, String>,
    /// Watched devices per major (mirrors `WATCHED_MAJORS`).
    majors: BTreeMap<u32, u32>,
}

/// `struct bio` offsets for the raw block tracepoint programs, from vmlinux BTF.
pub fn bio_layout(btf: &super::btf::Btf) -> Result<BioLayout> {
    let off = |s: &str, p: &str| btf.offset_of(s, p).map(|(o, _)| o);
    Ok(BioLayout {
        bi_bdev: off("bio", "bi_bdev")?,
        bi_opf: off("bio", "bi_opf")?,
        bi_sector: off("bio", "bi_iter.bi_sector")?,
        bi_size: off("bio", "bi_iter.bi_size")?,
        bi_status: off("bio", "bi_status")?,
        bd_dev: off("block_device", "bd_dev")?,
    })
}

impl Feed {
    /// Loads the embedded programs into the kernel (needs CAP_BPF and CAP_PERFMON, or root).
    pub fn load() -> Result<Self> {
        if OBJECT.is_empty() {
            bail!(
                "this md-bitmap was built without its eBPF programs (AYA_BUILD_SKIP=1); rebuild it normally"
            );
        }
        // MD_BITMAP_RING_BYTES (a power of two, at least a page) shrinks the ring buffer; the
        // fault tests use it to force overflows.
        let mut loader = aya::EbpfLoader::new();
        let bio_layout = super::btf::Btf::load_vmlinux()
            .and_then(|btf| bio_layout(&btf))
            .map_err(|e| format!("vmlinux BTF: struct bio layout: {e:#}"));
        if let Ok(l) = &bio_layout {
            loader.override_global("BTF_BIO", l, true);
        }
        if let Some(n) = std::env::var("MD_BITMAP_RING_BYTES")
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|n| n.is_power_of_two() && *n >= 4096)
        {
            loader.map_max_entries("EVENTS", n);
        }
        let ebpf = loader.load(OBJECT).map_err(|e| {
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
            peek_loaded: false,
            peek_ts_ns: 0,
            bio_layout,
            majors: BTreeMap::new(),
        })
    }

    /// Attaches kprobes to the bitmap functions named by `abi`, and the block tracepoints.
    pub fn attach(&mut self, abi: &BitmapAbi) -> Result<()> {
        self.attach_with(abi, true)
    }

    /// As [`Feed::attach`] without `block_bio_remap`: the live mirror has no use for remaps
    /// (member bios of md's writes, two per raid1 write), and every program run on the write
    /// path is time taken from the writes.
    pub fn attach_mirror(&mut self, abi: &BitmapAbi) -> Result<()> {
        self.attach_with(abi, false)
    }

    fn attach_with(&mut self, abi: &BitmapAbi, remaps: bool) -> Result<()> {
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
            ("md_update_sb", &abi.update_sb),
            // The daemon's return probe (a kretprobe: aya's KProbe serves both kinds).
            ("md_daemon_work_ret", &abi.daemon_work),
        ] {
            if let Some(f) = f {
                probes.push((prog, f.as_str()));
            }
        }
        for (prog, func) in probes {
            self.attach_kprobe(prog, func)?;
        }
        let layout = self.bio_layout.clone().map_err(|e| anyhow!(e))?;
        {
            let mut m: BpfArray<_, BioLayout> =
                BpfArray::try_from(self.ebpf.map_mut("BIO_LAYOUT").context("no BIO_LAYOUT")?)?;
            m.set(0, layout, 0)?;
        }
        // BTF tracepoints first: they read `struct bio` without helper calls. `block_bio_remap`
        // has no BTF variant (only `md-bitmap record`/`events` attach it).
        match self.attach_btf_block() {
            Ok(()) => self.attached.block_path = "tp_btf",
            Err(e) => {
                tracing::info!("BTF block tracepoints unavailable, using raw tracepoints: {e:#}");
                self.attached.btf_fallback = Some(format!("{e:#}"));
                self.attached.block_path = "raw_tp";
            }
        }
        let tps: &[&str] = match (self.attached.block_path, remaps) {
            ("tp_btf", true) => &["block_bio_remap"],
            ("tp_btf", false) => &[],
            (_, true) => &["block_bio_queue", "block_bio_complete", "block_bio_remap"],
            (_, false) => &["block_bio_queue", "block_bio_complete"],
        };
        for &tp in tps {
            let p: &mut RawTracePoint = self
                .ebpf
                .program_mut(tp)
                .ok_or_else(|| anyhow!("eBPF program {tp} missing from the object"))?
                .try_into()?;
            p.load()
                .with_context(|| format!("cannot load eBPF program {tp}"))?;
            p.attach(tp)
                .with_context(|| format!("cannot attach raw tracepoint {tp}"))?;
            self.attached.tracepoints.push(format!("block/{tp}"));
        }
        Ok(())
    }

    /// Loads and attaches `btf_bio_queue`/`btf_bio_complete` (all or nothing: on an error the
    /// one already attached is detached again, so the raw fallback does not report bios twice).
    fn attach_btf_block(&mut self) -> Result<()> {
        if std::env::var_os("MD_BITMAP_NO_TP_BTF").is_some() {
            bail!("MD_BITMAP_NO_TP_BTF is set");
        }
        if let Err(e) = &self.bio_layout {
            bail!("{e}");
        }
        let btf = aya::Btf::from_sys_fs().context("cannot read /sys/kernel/btf/vmlinux")?;
        let mut links = Vec::new();
        let mut result = Ok(());
        for (prog, tp) in [
            ("btf_bio_queue", "block_bio_queue"),
            ("btf_bio_complete", "block_bio_complete"),
        ] {
            let r = (|| -> Result<_> {
                let p: &mut BtfTracePoint = self
                    .ebpf
                    .program_mut(prog)
                    .ok_or_else(|| anyhow!("eBPF program {prog} missing from the object"))?
                    .try_into()?;
                p.load(tp, &btf)
                    .with_context(|| format!("cannot load eBPF program {prog}"))?;
                p.attach()
                    .with_context(|| format!("cannot attach BTF tracepoint {tp}"))
            })();
            match r {
                Ok(link) => links.push((prog, link)),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if result.is_err() {
            for (prog, link) in links {
                if let Some(p) = self.ebpf.program_mut(prog) {
                    let p: Result<&mut BtfTracePoint, _> = p.try_into();
                    if let Ok(p) = p {
                        let _ = p.detach(link);
                    }
                }
            }
            return result;
        }
        for (_, tp) in [
            ("btf_bio_queue", "block_bio_queue"),
            ("btf_bio_complete", "block_bio_complete"),
        ] {
            self.attached.tracepoints.push(format!("block/{tp}"));
        }
        Ok(())
    }

    /// Attaches the md thread's run-end probe (`RecordKind::ThreadRunEnd`, a kretprobe) to the
    /// personality's thread function `func` (`raid1d`, `raid10d`, `raid5d`). Only
    /// `md-bitmap record` uses it; the mirror has no use for it.
    pub fn attach_thread_run_end(&mut self, func: &str) -> Result<()> {
        self.attach_kprobe("md_thread_run_ret", func)
    }

    /// Loads the kprobe (or kretprobe) program `prog` and attaches it to kernel function
    /// `func`, noting it in [`Attached::kprobes`].
    fn attach_kprobe(&mut self, prog: &str, func: &str) -> Result<()> {
        let p: &mut KProbe = self
            .ebpf
            .program_mut(prog)
            .ok_or_else(|| anyhow!("eBPF program {prog} missing from the object"))?
            .try_into()?;
        p.load()
            .with_context(|| format!("cannot load eBPF program {prog}"))?;
        p.attach(func, 0)
            .with_context(|| format!("cannot attach {prog} to {func}"))?;
        self.attached
            .kprobes
            .insert(prog.to_string(), func.to_string());
        Ok(())
    }

    /// Gives the programs md's structure offsets (see [`MdLayout`]): the update-sb probe then
    /// reports `mddev->events` and the daemon's return probe `bitmap->daemon_lastrun`.
    pub fn set_md_layout(&mut self, layout: MdLayout) -> Result<()> {
        let mut m: BpfArray<_, MdLayout> =
            BpfArray::try_from(self.ebpf.map_mut("MD_LAYOUT").context("no MD_LAYOUT")?)?;
        m.set(0, layout, 0)?;
        Ok(())
    }

    /// Makes the block tracepoints report bios of `dev`.
    pub fn watch_dev(&mut self, dev: DevNum) -> Result<()> {
        let mut map: BpfHashMap<_, u32, u8> = BpfHashMap::try_from(
            self.ebpf
                .map_mut("WATCHED_DEVS")
                .context("no WATCHED_DEVS")?,
        )?;
        let fresh = map.get(&dev.to_kernel(), 0).is_err();
        map.insert(dev.to_kernel(), 1, 0)?;
        if !fresh {
            return Ok(());
        }
        let major = dev.to_kernel() >> 20;
        *self.majors.entry(major).or_insert(0) += 1;
        self.set_major(major, 1)
    }

    fn set_major(&mut self, major: u32, on: u8) -> Result<()> {
        let mut m: BpfArray<_, u8> = BpfArray::try_from(
            self.ebpf
                .map_mut("WATCHED_MAJORS")
                .context("no WATCHED_MAJORS")?,
        )?;
        m.set(major, on, 0)?;
        Ok(())
    }

    /// Stops reporting bios of `dev`.
    pub fn unwatch_dev(&mut self, dev: DevNum) -> Result<()> {
        let mut map: BpfHashMap<_, u32, u8> = BpfHashMap::try_from(
            self.ebpf
                .map_mut("WATCHED_DEVS")
                .context("no WATCHED_DEVS")?,
        )?;
        if map.remove(&dev.to_kernel()).is_err() {
            return Ok(());
        }
        let major = dev.to_kernel() >> 20;
        if let Some(n) = self.majors.get_mut(&major) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.majors.remove(&major);
                self.set_major(major, 0)?;
            }
        }
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

    /// Waits until the ring buffer has records or `timeout` passes (poll(2) on its fd, which the
    /// kernel wakes on submit); returns at once when records are already waiting.
    pub fn wait(&mut self, timeout: std::time::Duration) -> Result<()> {
        use std::os::fd::AsRawFd;
        let fd = self.ring()?.as_raw_fd();
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: `pfd` is one valid pollfd that outlives the call; nfds is 1.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e).context("poll on the ring buffer");
            }
        }
        Ok(())
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

    /// Loads the kernel-memory reader (the `peek` program), which is never attached: [`Feed::peek`]
    /// runs it on demand (`BPF_PROG_TEST_RUN`, kernel 5.10+), in this process only. Used by the
    /// kernel-state oracle, and by the live agent to seed its mirror from md's counters and to
    /// read `mddev->degraded`; the mirror's events never come from it.
    pub fn load_peek(&mut self) -> Result<()> {
        if self.peek_loaded {
            return Ok(());
        }
        let p: &mut RawTracePoint = self
            .ebpf
            .program_mut("peek")
            .context("eBPF program peek missing from the object")?
            .try_into()?;
        p.load().context("cannot load eBPF program peek")?;
        self.peek_loaded = true;
        Ok(())
    }

    /// Copies `len` (at most 4096) bytes of kernel memory at `addr` (needs [`Feed::load_peek`]).
    pub fn peek(&mut self, addr: u64, len: usize) -> Result<Vec<u8>> {
        if len > PEEK_MAX {
            bail!("peek of {len} bytes: at most {PEEK_MAX}");
        }
        self.peek_seq += 1;
        let mut args = [0u64; 12];
        args[..3].copy_from_slice(&[addr, len as u64, self.peek_seq]);
        let p: &RawTracePoint = self
            .ebpf
            .program("peek")
            .context("eBPF program peek missing from the object")?
            .try_into()?;
        let run = p
            .test_run(RawTracePointRunOptions { args, cpu: None })
            .context("cannot run eBPF program peek (BPF_PROG_TEST_RUN of raw tracepoints needs kernel 5.10+)")?;
        if run.return_value != 0 {
            bail!("kernel memory read at {addr:#x} was refused by the peek program");
        }
        let m: BpfArray<_, PeekReply> =
            BpfArray::try_from(self.ebpf.map("PEEK_BUF").context("no PEEK_BUF")?)?;
        let reply = m.get(&0, 0)?;
        if reply.seq != self.peek_seq {
            bail!("kernel memory read at {addr:#x} was not served");
        }
        if reply.ret != 0 {
            bail!("kernel memory read at {addr:#x} failed ({})", reply.ret);
        }
        self.peek_ts_ns = reply.ts_ns;
        Ok(reply.data[..len].to_vec())
    }

    /// CLOCK_MONOTONIC time of the last successful [`Feed::peek`], in the kernel.
    pub fn last_peek_ts_ns(&self) -> u64 {
        self.peek_ts_ns
    }

    /// Reads a little-endian u64 of kernel memory.
    pub fn peek_u64(&mut self, addr: u64) -> Result<u64> {
        Ok(u64::from_le_bytes(self.peek(addr, 8)?.try_into().unwrap()))
    }

    /// Events the kernel did not deliver to our programs because another BPF program was
    /// running on the same CPU (`bpf_prog_info.recursion_misses`, kernel 5.12+), summed over
    /// the attached programs. A kprobe on md's end-write fires in interrupt context and is
    /// skipped when it interrupts one of our programs; the agent re-seeds when this grows.
    pub fn missed(&self) -> Result<u64> {
        let mut total = 0;
        for (name, prog) in self.ebpf.programs() {
            if name == "peek" {
                continue;
            }
            let Ok(fd) = prog.fd() else { continue };
            use std::os::fd::AsFd;
            total += recursion_misses(fd.as_fd()).unwrap_or(0);
        }
        Ok(total)
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
            idle_daemon: sum(Counter::IdleDaemon)?,
            missed: self.missed().unwrap_or(0),
        })
    }
}

/// `bpf_prog_info.recursion_misses` (kernel 5.12+) of the program `fd`: runs the kernel skipped
/// because the program (or, for kprobes, any kprobe/tracepoint program) was already running on
/// that CPU. None when the kernel does not answer.
pub fn recursion_misses(fd: std::os::fd::BorrowedFd<'_>) -> Option<u64> {
    use std::os::fd::AsRawFd;
    // SAFETY: an all-zero bpf_prog_info is a valid value (plain integers and pointers the kernel
    // fills in; we pass no buffers for it to write through).
    let mut info: aya_obj::generated::bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = [0u64; 16];
    attr[0] = fd.as_raw_fd() as u32 as u64 | ((std::mem::size_of_val(&info) as u64) << 32);
    attr[1] = &mut info as *mut _ as u64;
    // SAFETY: BPF_OBJ_GET_INFO_BY_FD reads `attr` (bpf_fd, info_len, info pointer) and writes at
    // most info_len bytes to `info`, which outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            aya_obj::generated::bpf_cmd::BPF_OBJ_GET_INFO_BY_FD as libc::c_long,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr) as libc::c_long,
        )
    };
    (r == 0).then_some(info.recursion_misses)
}
