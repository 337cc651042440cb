//! `md-bitmap bpf-stats`: what each of md-bitmap's loaded eBPF programs has cost the kernel.
//!
//! The kernel counts, per program, the runs and the nanoseconds spent in them while
//! `kernel.bpf_stats_enabled` is 1 (`bpf_prog_run()` then wraps each run in two clock reads:
//! `__bpf_prog_run` with `bpf_stats_enabled_key`, include/linux/filter.h). This reads those
//! counters of every loaded program whose name is one of md-bitmap's (`BPF_OBJ_GET_INFO_BY_FD`,
//! names truncated to 15 bytes as the kernel keeps them), whichever process loaded it.
use anyhow::{Context, Result, bail};

/// md-bitmap's eBPF program names (md-bitmap-ebpf), as the kernel stores them
/// (`BPF_OBJ_NAME_LEN` 16, NUL included).
const PROGRAMS: &[&str] = &[
    "md_start_write",
    "md_end_write",
    "md_start_sync",
    "md_end_sync",
    "md_close_sync",
    "md_cond_end_sync",
    "md_unplug",
    "md_daemon_work",
    "md_daemon_work_ret",
    "md_update_sb",
    "block_bio_queue",
    "block_bio_complete",
    "block_bio_remap",
    "btf_bio_queue",
    "btf_bio_complete",
    "peek",
];

fn kernel_name(name: &str) -> &str {
    &name[..name.len().min(15)]
}

/// One loaded program's counters.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ProgStats {
    /// The kernel's program id.
    pub id: u32,
    /// The program's name as the kernel keeps it (at most 15 bytes).
    pub name: String,
    /// Runs counted while stats were enabled.
    pub run_cnt: u64,
    /// Nanoseconds spent in those runs.
    pub run_time_ns: u64,
    /// Runs the kernel skipped (recursion guard; see `Feed::missed`), counted whether or not
    /// stats are enabled (None: unreadable).
    pub recursion_misses: Option<u64>,
}

/// The counters of every loaded md-bitmap program, by program id.
pub fn collect() -> Result<Vec<ProgStats>> {
    let mut out = Vec::new();
    for p in aya::programs::loaded_programs() {
        // A program unloaded while we iterate is simply gone.
        let Ok(p) = p else { continue };
        let Some(name) = p.name_as_str() else {
            continue;
        };
        if !PROGRAMS.iter().any(|n| kernel_name(n) == name) {
            continue;
        }
        out.push(ProgStats {
            id: p.id(),
            name: name.to_string(),
            run_cnt: p.run_count(),
            run_time_ns: p.run_time().as_nanos() as u64,
            recursion_misses: p.fd().ok().and_then(|fd| {
                use std::os::fd::AsFd;
                super::ebpf::recursion_misses(fd.as_fd())
            }),
        });
    }
    out.sort_by_key(|s| s.id);
    Ok(out)
}

/// Whether `kernel.bpf_stats_enabled` is on (None: unreadable).
pub fn stats_enabled() -> Option<bool> {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
        .ok()
        .map(|s| s.trim() != "0")
}

/// Arguments of `md-bitmap bpf-stats`.
#[derive(clap::Args, Debug, Default)]
pub struct BpfStatsArgs {
    /// One JSON object per program, one per line.
    #[arg(long)]
    pub ndjson: bool,
    /// Also print runs and nanoseconds per operation, given how many operations (for example
    /// writes) the counters cover.
    #[arg(long, value_name = "N")]
    pub per: Option<u64>,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Runs `md-bitmap bpf-stats`.
pub fn run(args: &BpfStatsArgs) -> Result<()> {
    use std::io::Write;
    let stats =
        collect().context("cannot list loaded eBPF programs (needs root or CAP_SYS_ADMIN)")?;
    if stats.is_empty() {
        bail!("no md-bitmap eBPF program is loaded (start `md-bitmap watch` first)");
    }
    let enabled = stats_enabled();
    if enabled == Some(false) {
        eprintln!(
            "md-bitmap: kernel.bpf_stats_enabled is 0: run times are not counted (sysctl -w kernel.bpf_stats_enabled=1)"
        );
    }
    let mut out = std::io::stdout().lock();
    if args.ndjson {
        for s in &stats {
            let mut v = serde_json::to_value(s)?;
            v["ns_per_run"] = ratio(s.run_time_ns, s.run_cnt).into();
            if let Some(n) = args.per {
                v["runs_per_op"] = ratio(s.run_cnt, n).into();
                v["ns_per_op"] = ratio(s.run_time_ns, n).into();
            }
            serde_json::to_writer(&mut out, &v)?;
            out.write_all(b"\n")?;
        }
        return Ok(());
    }
    // Which block tracepoint programs are loaded says how bios are read (see
    // `Attached::block_path`): `btf_bio_*` are BTF tracepoints, `block_bio_*` raw ones.
    if stats.iter().any(|s| s.name.starts_with("btf_bio_")) {
        writeln!(out, "block tracepoints: tp_btf (BTF, direct loads)")?;
    } else if stats.iter().any(|s| s.name == "block_bio_queue") {
        writeln!(out, "block tracepoints: raw_tp (bpf_probe_read_kernel)")?;
    }
    let per = |h: &'static str| if args.per.is_some() { h } else { "" };
    writeln!(
        out,
        "{:>6} {:<16} {:>10} {:>14} {:>9} {:>7}{}{}",
        "id",
        "program",
        "runs",
        "run_time_ns",
        "ns/run",
        "misses",
        per("  runs/op"),
        per("    ns/op")
    )?;
    for s in &stats {
        write!(
            out,
            "{:>6} {:<16} {:>10} {:>14} {:>9.0} {:>7}",
            s.id,
            s.name,
            s.run_cnt,
            s.run_time_ns,
            ratio(s.run_time_ns, s.run_cnt),
            s.recursion_misses
                .map_or_else(|| "?".to_string(), |m| m.to_string())
        )?;
        if let Some(n) = args.per {
            write!(
                out,
                " {:>9.3} {:>8.0}",
                ratio(s.run_cnt, n),
                ratio(s.run_time_ns, n)
            )?;
        }
        writeln!(out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_truncated_as_the_kernel_keeps_them() {
        assert_eq!(kernel_name("block_bio_complete"), "block_bio_compl");
        assert_eq!(kernel_name("md_daemon_work_ret"), "md_daemon_work_");
        assert_eq!(kernel_name("md_end_write"), "md_end_write");
    }

    #[test]
    fn ratios_of_zero_runs_are_zero() {
        assert_eq!(ratio(5, 0), 0.0);
        assert_eq!(ratio(6, 3), 2.0);
    }
}
