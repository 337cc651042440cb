//! `cargo xtask`: md-bitmap's developer and test flows.
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use xtask::arrays::ArraySpec;
use xtask::kernels::Series;
use xtask::vm::{Outcome, Payload, Vm};
use xtask::{paths, setup};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "md-bitmap's developer and test flows")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the project needs (Debian packages, nightly rust-src, bpf-linker, the 6.1 and
    /// 6.12 test kernels). Idempotent.
    Setup,
    /// Build the static md-bitmap that guests run and print its path.
    GuestBin,
    /// Boot a test kernel with disks and optional arrays, run a script inside, power off.
    Vm(VmArgs),
    /// Run the md-bitmap TUI: on this machine's md arrays if it has any, else in a VM on a real
    /// RAID5 with a mixed write workload, in this terminal (quitting the TUI powers the VM off).
    /// Without a terminal: prints a few rendered frames and exits.
    Demo {
        /// Kernel series for the VM.
        #[arg(long, default_value = "6.12")]
        kernel: String,
        /// Frames printed when stdout is not a terminal (one every 2 s).
        #[arg(long, default_value_t = 8)]
        frames: u64,
    },
    /// Run every test, the real-kernel ones included (runs setup first when something is missing).
    Test {
        /// Extra arguments for `cargo test` (after `--`), e.g. a test name filter.
        #[arg(last = true)]
        args: Vec<String>,
    },
}

#[derive(clap::Args)]
struct VmArgs {
    /// Kernel series: 6.1 or 6.12.
    #[arg(long, default_value = "6.1")]
    kernel: String,
    /// Data disks as COUNTxMIB.
    #[arg(long, default_value = "2x256")]
    disks: String,
    /// Create an md array first: LEVEL:DISKS[:METADATA[:BITMAP_CHUNK_KIB]] (e.g. 1:2, 5:4:1.2:1024).
    #[arg(long)]
    array: Vec<String>,
    /// Work folder for disks (kept, so a second run sees the same disks). Default: a new one under target/vm.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Timeout in seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Shell commands to run in the guest (default: print /proc/mdstat).
    #[arg(short = 'c', long)]
    command: Option<String>,
    /// Script file to run in the guest.
    #[arg(long)]
    script: Option<PathBuf>,
}

fn parse_array(s: &str) -> Result<ArraySpec> {
    let parts: Vec<&str> = s.split(':').collect();
    let level: u32 = parts[0].parse().context("array level")?;
    let disks: usize = parts
        .get(1)
        .context("array needs LEVEL:DISKS")?
        .parse()
        .context("array disks")?;
    let mut a = ArraySpec::new(level, disks);
    if let Some(m) = parts.get(2) {
        a = a.metadata(m);
    }
    if let Some(c) = parts.get(3) {
        a = a.bitmap_chunk_kib(c.parse().context("bitmap chunk")?);
    }
    Ok(a)
}

fn run_vm(a: &VmArgs) -> Result<i32> {
    let series = Series::parse(&a.kernel)?;
    let (n, mib) = a.disks.split_once('x').context("--disks is COUNTxMIB")?;
    let sizes = vec![mib.parse::<u64>()?; n.parse::<usize>()?];
    let dir = a.dir.clone().unwrap_or_else(|| {
        paths::target_dir()
            .join("vm")
            .join(format!("run-{}", std::process::id()))
    });
    let vm = Vm::new(series, &dir, &sizes)?;
    let script = match (&a.script, &a.command) {
        (Some(p), _) => std::fs::read_to_string(p)?,
        (None, Some(c)) => c.clone(),
        (None, None) => "cat /proc/mdstat".into(),
    };
    let mut p = Payload::script(script).timeout(Duration::from_secs(a.timeout));
    for s in &a.array {
        let mut spec = parse_array(s)?;
        spec.name = format!("md{}", p.arrays.len());
        p = p.array(spec);
    }
    let r = vm.run(&p)?;
    eprintln!(
        "xtask vm: {} booted in {:.1}s, ran {:.1}s, {:?}; disks in {}",
        r.release,
        r.boot_secs,
        r.total_secs,
        r.outcome,
        dir.display()
    );
    print!("{}", r.console);
    Ok(match r.outcome {
        Outcome::Exited(rc) => rc,
        Outcome::Crashed => 0,
    })
}

fn host_has_md_arrays() -> bool {
    std::fs::read_dir("/sys/block")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .any(|e| e.path().join("md").is_dir())
        })
        .unwrap_or(false)
}

/// The demo's mixed workload on md0: random 4 KiB writes, a sequential 512 KiB stream, and
/// bursts into a hot region, with idle gaps so the bitmap daemon clears bits in between.
const DEMO_WORKLOAD: &str = r#"
( while true; do
    for i in $(seq 1 40); do dd if=/dev/urandom of=/dev/md0 bs=4096 count=1 seek=$((RANDOM * 7 % 190000)) oflag=direct 2>/dev/null; done
    sleep 3
  done ) &
( off=0; while true; do
    dd if=/dev/zero of=/dev/md0 bs=512K count=8 seek=$((off % 1400)) oflag=direct 2>/dev/null
    off=$((off + 8)); sleep 1
  done ) &
( while true; do
    sleep 9
    for i in $(seq 1 60); do dd if=/dev/urandom of=/dev/md0 bs=4096 count=2 seek=$((120000 + RANDOM % 2048)) oflag=direct 2>/dev/null & done; wait
  done ) &
"#;

/// Host terminal size (rows, cols) of stdin's terminal.
fn terminal_size() -> Option<(u16, u16)> {
    // SAFETY: TIOCGWINSZ fills a winsize struct we own; fd 0 is only queried.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        (libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 && ws.ws_row > 0 && ws.ws_col > 0)
            .then_some((ws.ws_row, ws.ws_col))
    }
}

fn run_demo(kernel: &str, frames: u64) -> Result<i32> {
    use std::io::IsTerminal;
    if !setup::is_complete() {
        setup::run()?;
    }
    let interactive = std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
    if host_has_md_arrays() {
        let mut c = cargo();
        c.current_dir(paths::repo_root()).args([
            "run",
            "--quiet",
            "--release",
            "--bin",
            "md-bitmap",
            "--",
            "tui",
        ]);
        if !interactive {
            c.args(["--frames", &frames.to_string(), "--interval", "2"]);
        }
        return Ok(c.status()?.code().unwrap_or(1));
    }
    let series = Series::parse(kernel)?;
    let dir = paths::target_dir().join("vm").join("demo");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let vm = Vm::new(series, &dir, &[256, 256, 256, 256])?;
    let array = ArraySpec::new(5, 4)
        .chunk_kib(64)
        .bitmap_chunk_kib(256)
        .delay_secs(2);
    eprintln!(
        "xtask demo: no md arrays on this machine; booting {} with a RAID5 of 4 disks (internal bitmap, 256 KiB chunks) and a mixed write workload",
        vm.kernel.release
    );
    if !interactive {
        let script = format!(
            "{DEMO_WORKLOAD}\nmd-bitmap tui --frames {frames} --interval 2 --size 110x36\n"
        );
        let payload = Payload::script(script)
            .array(array)
            .timeout(Duration::from_secs(frames * 2 + 240));
        let r = vm.run_echo(&payload, true)?;
        eprintln!("xtask demo: guest finished ({:?})", r.outcome);
        return Ok(match r.outcome {
            Outcome::Exited(rc) => rc,
            Outcome::Crashed => 1,
        });
    }
    let (rows, cols) = terminal_size().unwrap_or((24, 80));
    eprintln!(
        "xtask demo: the TUI starts in your terminal ({cols}x{rows}) once the guest has booted; q quits and powers the VM off"
    );
    // The console is the user's terminal: size it, keep kernel messages off it, run the TUI.
    let script = format!(
        "dmesg -n 1\nstty rows {rows} cols {cols} 2>/dev/null\nexport TERM=xterm-256color\n{DEMO_WORKLOAD}\nmd-bitmap tui --interval 0.5 --snapshot-dir /tmp\nrc=$?\nclear\necho \"md-bitmap tui exited ($rc); powering off\"\n"
    );
    let payload = Payload::script(script).array(array);
    let rc = vm.run_attached(&payload)?;
    eprintln!("xtask demo: VM stopped");
    Ok(rc)
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// The test command builds the host crates, the eBPF object and a static guest binary (about 4 GiB
/// of target/ on a clean clone). A full disk fails deep inside rustc, so say up front how much room there is.
fn report_free_disk(repo: &std::path::Path) {
    let out = Command::new("df").args(["-Pk"]).arg(repo).output();
    let free_kib = out.ok().and_then(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .nth(1)
            .and_then(|l| {
                l.split_whitespace()
                    .nth(3)
                    .and_then(|v| v.parse::<u64>().ok())
            })
    });
    match free_kib {
        Some(k) if k < 5 << 20 => eprintln!(
            "xtask test: warning: only {:.1} GiB free on the build disk; the test command needs about 4 GiB",
            k as f64 / (1 << 20) as f64
        ),
        Some(k) => eprintln!(
            "xtask test: {:.1} GiB free on the build disk",
            k as f64 / (1 << 20) as f64
        ),
        None => {}
    }
}

fn run_tests(args: &[String]) -> Result<i32> {
    let t = Instant::now();
    if !setup::is_complete() {
        setup::run()?;
    }
    let repo = paths::repo_root();
    report_free_disk(&repo);
    let check = |what: &str, args: &[&str]| -> Result<()> {
        let st = cargo().current_dir(&repo).args(args).status()?;
        if !st.success() {
            bail!("{what} failed");
        }
        Ok(())
    };
    check("cargo fmt --check", &["fmt", "--all", "--check"])?;
    check(
        "cargo clippy",
        &["clippy", "--quiet", "--all-targets", "--", "-D", "warnings"],
    )?;
    let bin = xtask::guest::build_md_bitmap()?;
    eprintln!(
        "xtask test: guest md-bitmap built ({:.0}s since start)",
        t.elapsed().as_secs_f64()
    );
    let st = cargo()
        .current_dir(paths::repo_root())
        .env("MD_BITMAP_GUEST_BIN", &bin)
        // The default members: the eBPF crate is built by md-bitmap-user's build.rs, not for the host.
        .args(["test", "--no-fail-fast"])
        .args(args)
        .status()?;
    eprintln!(
        "xtask test: whole test command took {:.0}s",
        t.elapsed().as_secs_f64()
    );
    if !st.success() {
        bail!("tests failed");
    }
    Ok(0)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Setup => setup::run().map(|_| 0),
        Cmd::GuestBin => xtask::guest::build_md_bitmap().map(|p| {
            println!("{}", p.display());
            0
        }),
        Cmd::Vm(a) => run_vm(&a),
        Cmd::Test { args } => run_tests(&args),
        Cmd::Demo { kernel, frames } => run_demo(&kernel, frames),
    };
    match r {
        Ok(rc) => ExitCode::from(rc as u8),
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
