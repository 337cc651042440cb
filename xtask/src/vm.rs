//! Boots a real kernel under qemu (TCG) with file-backed virtio disks and runs a payload script.
//!
//! The disks are plain files in a work folder, so a second [`Vm::run`] on the same [`Vm`] sees what
//! the first left on them: crash-and-reboot tests are two runs. The serial console is streamed (and
//! echoed to stderr when `MDB_VM_ECHO=1`), a hung guest is killed at the timeout with its console
//! kept for the error, and files the payload puts in `/out` come back through an extra disk.
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::arrays::ArraySpec;
use crate::initramfs::{self, BOOT_MARKER, CRASH_MARKER, EXIT_MARKER};
use crate::kernels::{self, Kernel, Series};
use crate::paths::target_dir;

/// The static `md-bitmap` for guests: `$MD_BITMAP_GUEST_BIN` if set (the test command builds it
/// once), else built now (once per process).
pub fn guest_binary() -> Result<PathBuf> {
    static BIN: OnceLock<Mutex<Option<PathBuf>>> = OnceLock::new();
    if let Some(p) = std::env::var_os("MD_BITMAP_GUEST_BIN") {
        return Ok(PathBuf::from(p));
    }
    let cell = BIN.get_or_init(|| Mutex::new(None));
    let mut g = cell.lock().unwrap();
    if let Some(p) = &*g {
        return Ok(p.clone());
    }
    let p = crate::guest::build_md_bitmap()?;
    *g = Some(p.clone());
    Ok(p)
}

fn base_initramfs(kernel: &Kernel) -> Result<PathBuf> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap();
    let bin = guest_binary()?;
    let meta = std::fs::metadata(&bin)?;
    let mut h = DefaultHasher::new();
    kernel.release.hash(&mut h);
    meta.len().hash(&mut h);
    meta.modified()?.hash(&mut h);
    include_str!("../guest/init.sh").hash(&mut h);
    include_str!("../guest/mdb.sh").hash(&mut h);
    initramfs::MODULES.hash(&mut h);
    initramfs::HOST_TOOLS.hash(&mut h);
    initramfs::HOST_DATA.hash(&mut h);
    let dir = target_dir().join("vm");
    std::fs::create_dir_all(&dir)?;
    let out = dir.join(format!("base-{}-{:016x}.cpio", kernel.release, h.finish()));
    if !out.is_file() {
        let tmp = out.with_extension(format!("tmp{}", std::process::id()));
        initramfs::build_base(kernel, &bin, &tmp)?;
        std::fs::rename(&tmp, &out)?;
    }
    Ok(out)
}

/// What the guest runs.
#[derive(Clone, Debug)]
pub struct Payload {
    /// Arrays created (in order, on consecutive data disks) before the script runs.
    pub arrays: Vec<ArraySpec>,
    /// The script (busybox sh) run as `/payload/run.sh` after the arrays exist. Its exit status is
    /// the run's. `/lib/mdb.sh` helpers are available (`mdb_result`, `mdb_crash`, ...).
    pub script: String,
    /// Extra files: (absolute guest path, contents, mode).
    pub files: Vec<(String, Vec<u8>, u32)>,
    /// The guest is killed after this long.
    pub timeout: Duration,
    /// Size in MiB of the output disk that brings `/out` back (0: no output disk).
    pub out_mib: u64,
    /// Added to the kernel command line (after a space, when not empty).
    pub kernel_args: String,
}

impl Payload {
    /// A payload running `script`, with a 5-minute timeout and a 64 MiB output disk.
    pub fn script(script: impl Into<String>) -> Self {
        Self {
            arrays: Vec::new(),
            script: script.into(),
            files: Vec::new(),
            timeout: Duration::from_secs(300),
            out_mib: 64,
            kernel_args: String::new(),
        }
    }

    /// Adds an array to create first.
    pub fn array(mut self, a: ArraySpec) -> Self {
        self.arrays.push(a);
        self
    }

    /// Adds a file.
    pub fn file(mut self, path: &str, data: impl Into<Vec<u8>>, mode: u32) -> Self {
        self.files.push((path.to_string(), data.into(), mode));
        self
    }

    /// Sets the timeout.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The payload exited with this status and the guest powered off.
    Exited(i32),
    /// The payload crashed the guest on purpose (`mdb_crash`).
    Crashed,
}

/// Boots of one run, at most: see [`Vm::run_echo`].
pub const BOOT_ATTEMPTS: u32 = 3;

/// The guest kernel crashed while booting, before `/init` ran the payload.
#[derive(Debug)]
pub struct BootCrash {
    release: String,
    log: PathBuf,
    first: String,
}

impl std::fmt::Display for BootCrash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "guest ({}) crashed while booting, before the payload started: {} (console kept in {})",
            self.release,
            self.first,
            self.log.display()
        )
    }
}

impl std::error::Error for BootCrash {}

/// The result of one boot.
#[derive(Debug)]
pub struct RunResult {
    /// How it ended.
    pub outcome: Outcome,
    /// The whole serial console.
    pub console: String,
    /// `@@MDB RESULT ...` lines, without the prefix.
    pub results: Vec<String>,
    /// Where `/out` was unpacked (if the payload wrote any).
    pub out_dir: PathBuf,
    /// Seconds from qemu start to the guest's boot marker.
    pub boot_secs: f64,
    /// Seconds from qemu start to its exit.
    pub total_secs: f64,
    /// The kernel release that ran.
    pub release: String,
}

impl RunResult {
    /// Fails unless the payload exited with status 0, quoting the console's tail.
    pub fn expect_success(&self) -> Result<&Self> {
        if self.outcome != Outcome::Exited(0) {
            bail!(
                "guest payload ended with {:?}; console tail:\n{}",
                self.outcome,
                tail(&self.console, 80)
            );
        }
        Ok(self)
    }

    /// The value of the first result line `KEY value...`.
    pub fn result(&self, key: &str) -> Option<&str> {
        self.results.iter().find_map(|l| {
            let (k, v) = l.split_once(' ').unwrap_or((l.as_str(), ""));
            (k == key).then_some(v)
        })
    }

    /// Reads a file the payload left in `/out`.
    pub fn out_file(&self, name: &str) -> Result<String> {
        let p = self.out_dir.join(name);
        std::fs::read_to_string(&p).with_context(|| format!("guest left no /out/{name}"))
    }
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A VM: a kernel and a set of disk files that persist across runs.
#[derive(Clone, Debug)]
pub struct Vm {
    /// The kernel it boots.
    pub kernel: Kernel,
    /// Work folder (disks, output).
    pub dir: PathBuf,
    /// Data disk files, in guest order (`/dev/vda`, `/dev/vdb`, ...).
    pub disks: Vec<PathBuf>,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// Guest CPUs.
    pub cpus: u32,
    /// How the data disks are attached.
    pub bus: Bus,
    /// Deterministic instruction counting (`-icount shift=N,sleep=off`): the guest's clock
    /// advances 2^N ns per emulated instruction and jumps over idle time, so guest timings
    /// measure emulated work, not the host's load (one host thread runs every vCPU in turn).
    pub icount_shift: Option<u32>,
}

/// How data disks are attached to the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bus {
    /// One virtio-blk PCI device per disk (`/dev/vda`, ...): the simplest, at most ~20 disks.
    Virtio,
    /// All disks as targets of one virtio-scsi controller, for many members at once. The guest
    /// sees them as `/dev/sdX` in probe order, so `/init` links `/dev/mdbdiskN` to target N.
    Scsi,
}

fn disk_name(i: usize) -> String {
    format!("/dev/vd{}", (b'a' + i as u8) as char)
}

/// Data disks beyond this many go on virtio-scsi by default.
const MAX_VIRTIO_DISKS: usize = 20;

impl Vm {
    /// A VM booting `series` with data disks of the given sizes (MiB), created sparse in `dir`
    /// unless they exist already.
    pub fn new(series: Series, dir: &Path, disk_mib: &[u64]) -> Result<Self> {
        let kernel = kernels::get(series)?;
        std::fs::create_dir_all(dir)?;
        let mut disks = Vec::new();
        for (i, mib) in disk_mib.iter().enumerate() {
            let p = dir.join(format!("disk{i}.img"));
            if !p.exists() {
                let f = std::fs::File::create(&p)?;
                f.set_len(mib << 20)?;
            }
            disks.push(p);
        }
        let bus = if disks.len() > MAX_VIRTIO_DISKS {
            Bus::Scsi
        } else {
            Bus::Virtio
        };
        Ok(Self {
            kernel,
            dir: dir.to_path_buf(),
            disks,
            memory_mib: 1024,
            cpus: 2,
            bus,
            icount_shift: None,
        })
    }

    /// Guest device paths of the data disks.
    pub fn disk_names(&self) -> Vec<String> {
        match self.bus {
            Bus::Virtio => (0..self.disks.len()).map(disk_name).collect(),
            Bus::Scsi => (0..self.disks.len())
                .map(|i| format!("/dev/mdbdisk{i}"))
                .collect(),
        }
    }

    /// Guest path of the output disk (after the virtio data disks, or the only virtio disk).
    fn out_disk_name(&self) -> String {
        match self.bus {
            Bus::Virtio => disk_name(self.disks.len()),
            Bus::Scsi => disk_name(0),
        }
    }

    /// Boots, runs `payload`, and returns when the guest is gone. The console is echoed to stderr
    /// when `MDB_VM_ECHO=1`.
    pub fn run(&self, payload: &Payload) -> Result<RunResult> {
        let echo = std::env::var("MDB_VM_ECHO").is_ok_and(|v| v == "1");
        self.run_echo(payload, echo)
    }

    /// As [`Vm::run`], echoing the console to stderr when `echo`.
    ///
    /// A kernel that crashes while it boots, before `/init` announces itself (the boot marker)
    /// and so before the payload ran, is booted again, up to [`BOOT_ATTEMPTS`] times in all:
    /// qemu's TCG now and then runs a stale int3 that the kernel's own code patching (a static
    /// key flipped by a late initcall, `text_poke_bp()`) has already removed, on another vCPU
    /// (6.12: "Oops: int3" in `sched_clock_cpu()` at 2.8 s, about one boot in 15-20). Nothing
    /// of the payload has run then, so nothing the test checks is retried.
    pub fn run_echo(&self, payload: &Payload, echo: bool) -> Result<RunResult> {
        let mut attempt = 1;
        loop {
            match self.run_once(payload, echo) {
                Err(e) if attempt < BOOT_ATTEMPTS && e.downcast_ref::<BootCrash>().is_some() => {
                    eprintln!(
                        "xtask: {e:#}; booting again ({} of {BOOT_ATTEMPTS})",
                        attempt + 1
                    );
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    fn run_once(&self, payload: &Payload, echo: bool) -> Result<RunResult> {
        let Prepared {
            mut cmd,
            initrd,
            out_img,
            run_id,
        } = self.prepare(payload, Console::Piped)?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let t0 = Instant::now();
        let mut child = cmd.spawn().context("cannot start qemu-system-x86_64")?;
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
                let line = String::from_utf8_lossy(&line)
                    .trim_end_matches('\r')
                    .to_string();
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx2.send(format!("[qemu] {line}"));
            }
        });
        let tag = format!("[vm {}]", self.kernel.series.short());
        let deadline = t0 + payload.timeout;
        let mut seen = Seen::default();
        let mut boot_secs = f64::NAN;
        let mut timed_out = false;
        loop {
            let now = Instant::now();
            if now >= deadline {
                timed_out = true;
                let _ = child.kill();
                break;
            }
            match rx.recv_timeout((deadline - now).min(Duration::from_millis(200))) {
                Ok(line) => {
                    seen.line(&line, echo.then_some(tag.as_str()));
                    if line.starts_with(BOOT_MARKER) && boot_secs.is_nan() {
                        boot_secs = t0.elapsed().as_secs_f64();
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(_st) = child.try_wait()? {
                        // Drain what is left.
                        while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
                            seen.line(&line, echo.then_some(tag.as_str()));
                        }
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    child.wait()?;
                    break;
                }
            }
        }
        let _ = child.wait();
        let Seen {
            console,
            results,
            exit,
            crashed,
        } = seen;
        let total_secs = t0.elapsed().as_secs_f64();
        std::fs::remove_file(&initrd).ok();
        let log = self.dir.join(format!("console-{run_id}.log"));
        std::fs::write(&log, &console)?;
        let crash_line =
            || (console.lines()).find(|l| l.contains("Oops:") || l.contains("Kernel panic"));
        if !timed_out
            && boot_secs.is_nan()
            && let Some(first) = crash_line()
        {
            std::fs::remove_file(&out_img).ok();
            return Err(anyhow::Error::new(BootCrash {
                release: self.kernel.release.clone(),
                log: log.clone(),
                first: first.trim().to_string(),
            }));
        }
        if timed_out {
            bail!(
                "guest ({}) timed out after {:?}; console kept in {}; tail:\n{}",
                self.kernel.release,
                payload.timeout,
                log.display(),
                tail(&console, 60)
            );
        }
        let outcome = match (exit, crashed) {
            (_, true) => Outcome::Crashed,
            (Some(rc), false) => Outcome::Exited(rc),
            (None, false) => bail!(
                "guest ({}) stopped without an exit status; console kept in {}; tail:\n{}",
                self.kernel.release,
                log.display(),
                tail(&console, 60)
            ),
        };
        let out_dir = self.dir.join(format!("out-{run_id}"));
        std::fs::create_dir_all(&out_dir)?;
        if payload.out_mib > 0 {
            // The guest wrote a tar archive at the start of the output disk; zeros follow it.
            let st = Command::new("tar")
                .arg("-xf")
                .arg(&out_img)
                .arg("-C")
                .arg(&out_dir)
                .stderr(Stdio::null())
                .status()?;
            if !st.success() && outcome == Outcome::Exited(0) {
                bail!("cannot unpack the guest's /out from {}", out_img.display());
            }
            std::fs::remove_file(&out_img).ok();
        }
        Ok(RunResult {
            outcome,
            console,
            results,
            out_dir,
            boot_secs,
            total_secs,
            release: self.kernel.release.clone(),
        })
    }

    /// Builds the initrd for `payload` and the qemu command line (kernel command line extended
    /// by its `kernel_args`), without starting it.
    fn prepare(&self, payload: &Payload, console: Console) -> Result<Prepared> {
        let base = base_initramfs(&self.kernel)?;
        let names = self.disk_names();
        let out_name = (payload.out_mib > 0).then(|| self.out_disk_name());
        let mut script = String::from(". /payload/env\n. /lib/mdb.sh\nset -u\n");
        let mut next = 0;
        for a in &payload.arrays {
            let members = names.get(next..next + a.disks).with_context(|| {
                format!("not enough disks for array {} ({} needed)", a.name, a.disks)
            })?;
            script += &a.create_script(members);
            next += a.disks;
        }
        script += "set +u\n";
        script += &payload.script;
        let env = format!(
            "MDB_DISKS=\"{}\"\nMDB_BUS=\"{}\"\nMDB_OUT=\"{}\"\nMDB_KERNEL_SERIES=\"{}\"\n",
            names.join(" "),
            match self.bus {
                Bus::Virtio => "virtio",
                Bus::Scsi => "scsi",
            },
            out_name.clone().unwrap_or_default(),
            self.kernel.series.short()
        );
        let mut files = payload.files.clone();
        files.push(("payload/env".into(), env.into_bytes(), 0o644));
        let run_id = format!(
            "{}-{}",
            std::process::id(),
            RUN_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let pay = self.dir.join(format!("payload-{run_id}.cpio"));
        initramfs::build_payload(&script, &files, &pay)?;
        let initrd = self.dir.join(format!("initrd-{run_id}.cpio"));
        {
            let mut out = std::fs::File::create(&initrd)?;
            std::io::copy(&mut std::fs::File::open(&base)?, &mut out)?;
            std::io::copy(&mut std::fs::File::open(&pay)?, &mut out)?;
        }
        std::fs::remove_file(&pay).ok();
        let out_img = self.dir.join(format!("out-{run_id}.img"));
        if payload.out_mib > 0 {
            std::fs::File::create(&out_img)?.set_len(payload.out_mib << 20)?;
        }
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-accel", "tcg", "-cpu", "max", "-nic", "none", "-no-reboot"])
            .args(["-display", "none", "-monitor", "none"])
            .args(["-m", &self.memory_mib.to_string()])
            .args(["-smp", &self.cpus.to_string()]);
        if let Some(shift) = self.icount_shift {
            cmd.args(["-icount", &format!("shift={shift},sleep=off")]);
        }
        cmd.arg("-kernel")
            .arg(self.kernel.vmlinuz())
            .arg("-initrd")
            .arg(&initrd)
            .arg("-append")
            .arg(
                [
                    "console=ttyS0 panic=-1 loglevel=4 rdinit=/init quiet",
                    &payload.kernel_args,
                ]
                .join(" ")
                .trim_end(),
            );
        match console {
            Console::Piped => {
                cmd.args(["-serial", "stdio"]);
            }
            // The user's terminal is the guest's serial console; Ctrl-C goes to the guest.
            Console::Attached => {
                cmd.args([
                    "-chardev",
                    "stdio,id=con0,signal=off",
                    "-serial",
                    "chardev:con0",
                ]);
            }
        }
        let virtio_drive = |cmd: &mut Command, d: &Path| {
            cmd.arg("-drive").arg(format!(
                "file={},format=raw,if=virtio,cache=unsafe",
                d.display()
            ));
        };
        match self.bus {
            Bus::Virtio => {
                for d in &self.disks {
                    virtio_drive(&mut cmd, d);
                }
            }
            Bus::Scsi => {
                cmd.args(["-device", "virtio-scsi-pci,id=scsi0"]);
                for (i, d) in self.disks.iter().enumerate() {
                    cmd.arg("-drive").arg(format!(
                        "file={},format=raw,if=none,id=d{i},cache=unsafe",
                        d.display()
                    ));
                    cmd.arg("-device").arg(format!(
                        "scsi-hd,drive=d{i},bus=scsi0.0,channel=0,scsi-id={i},lun=0"
                    ));
                }
            }
        }
        if payload.out_mib > 0 {
            virtio_drive(&mut cmd, &out_img);
        }
        Ok(Prepared {
            cmd,
            initrd,
            out_img,
            run_id,
        })
    }

    /// Boots with the serial console on this process's terminal (stdin/stdout inherited, qemu
    /// puts the terminal in raw mode), for interactive use. Returns qemu's exit status when the
    /// guest powers off. No timeout.
    pub fn run_attached(&self, payload: &Payload) -> Result<i32> {
        let p = self.prepare(payload, Console::Attached)?;
        let mut cmd = p.cmd;
        let st = cmd
            .stdin(Stdio::inherit())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .status()
            .context("cannot start qemu-system-x86_64")?;
        std::fs::remove_file(&p.initrd).ok();
        std::fs::remove_file(&p.out_img).ok();
        let _ = p.run_id;
        Ok(st.code().unwrap_or(1))
    }
}

/// Where the guest's serial console goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Console {
    /// Piped to the harness, line by line.
    Piped,
    /// This process's terminal.
    Attached,
}

/// A prepared boot.
struct Prepared {
    cmd: Command,
    initrd: PathBuf,
    out_img: PathBuf,
    run_id: String,
}

/// What the console has shown so far.
#[derive(Default)]
struct Seen {
    console: String,
    results: Vec<String>,
    exit: Option<i32>,
    crashed: bool,
}

impl Seen {
    /// Takes one console line (echoed with `echo_tag` when given).
    fn line(&mut self, line: &str, echo_tag: Option<&str>) {
        if let Some(tag) = echo_tag {
            eprintln!("{tag} {line}");
        }
        if let Some(r) = line.strip_prefix("@@MDB RESULT ") {
            self.results.push(r.to_string());
        }
        if let Some(s) = line.strip_prefix(EXIT_MARKER) {
            self.exit = s.trim().parse::<i32>().ok();
        }
        if line.starts_with(CRASH_MARKER) || line.contains("sysrq: Resetting") {
            self.crashed = true;
        }
        self.console.push_str(line);
        self.console.push('\n');
    }
}

static RUN_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
