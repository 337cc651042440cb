//! The guest's root file system: busybox, mdadm with its libraries, the kernel's md/dm/block
//! modules, the `md-bitmap` binary, an `/init` that mounts the usual file systems, loads the
//! modules, runs the payload, saves its outputs and powers off.
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::cpio::CpioWriter;
use crate::kernels::Kernel;

/// Modules the guest loads at boot (with their dependencies). Missing ones (built in, or absent on
/// a kernel) are skipped.
pub const MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "sd_mod",
    "md_mod",
    "raid0",
    "raid1",
    "raid10",
    "raid456",
    "dm_mod",
    "dm_delay",
    "dm_flakey",
    "brd",
    "loop",
];

/// Console line the guest prints when the payload ends: `@@MDB EXIT <status>`.
pub const EXIT_MARKER: &str = "@@MDB EXIT ";
/// Console line the guest prints right after boot: `@@MDB BOOTED <release> <uptime>`.
pub const BOOT_MARKER: &str = "@@MDB BOOTED ";
/// Console line the guest prints before it crashes itself on purpose.
pub const CRASH_MARKER: &str = "@@MDB CRASHING";

/// Host programs copied into the guest (with their libraries), as (host path, guest path).
/// GNU dd: busybox's ignores `oflag=direct`, and tests need exact direct writes. tmux: the TUI
/// test runs `md-bitmap tui` on a pty and captures its screens.
pub const HOST_TOOLS: &[(&str, &str)] = &[
    ("/bin/dd", "usr/local/bin/dd"),
    ("/usr/bin/tmux", "usr/local/bin/tmux"),
];

/// Data files copied into the guest when the host has them: terminal descriptions (tmux needs
/// its own and the outer terminal's) and the C.UTF-8 character map (tmux needs a UTF-8 locale).
pub const HOST_DATA: &[&str] = &[
    "/lib/terminfo/s/screen",
    "/lib/terminfo/s/screen-256color",
    "/lib/terminfo/x/xterm",
    "/lib/terminfo/x/xterm-256color",
    "/lib/terminfo/l/linux",
    "/lib/terminfo/v/vt100",
    "/usr/lib/terminfo/t/tmux-256color",
    "/usr/lib/locale/C.utf8/LC_CTYPE",
];

const INIT: &str = include_str!("../guest/init.sh");
const MDB_LIB: &str = include_str!("../guest/mdb.sh");

fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.split(".ko").next().unwrap_or(base).replace('-', "_")
}

/// `modules.dep` of a kernel as `name -> (path, deps)`.
fn read_modules_dep(moddir: &Path) -> Result<HashMap<String, (String, Vec<String>)>> {
    let text = std::fs::read_to_string(moddir.join("modules.dep"))
        .with_context(|| format!("cannot read modules.dep in {}", moddir.display()))?;
    let mut out = HashMap::new();
    for line in text.lines() {
        let Some((path, deps)) = line.split_once(':') else {
            continue;
        };
        let deps = deps.split_whitespace().map(str::to_string).collect();
        out.insert(module_name(path), (path.to_string(), deps));
    }
    Ok(out)
}

/// The module files (relative paths) for [`MODULES`] and everything they depend on.
pub fn module_closure(moddir: &Path) -> Result<BTreeSet<String>> {
    let dep = read_modules_dep(moddir)?;
    let by_path: HashMap<&str, &Vec<String>> = dep.values().map(|(p, d)| (p.as_str(), d)).collect();
    let mut out = BTreeSet::new();
    for m in MODULES {
        if let Some((path, deps)) = dep.get(*m) {
            out.insert(path.clone());
            for d in deps {
                out.insert(d.clone());
                // modules.dep lists the full transitive closure already; this is a safety net.
                if let Some(dd) = by_path.get(d.as_str()) {
                    out.extend(dd.iter().cloned());
                }
            }
        }
    }
    Ok(out)
}

fn shared_libs(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .context("cannot run ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    for line in text.lines() {
        // "libudev.so.1 => /lib/x86_64-linux-gnu/libudev.so.1 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

fn add_file_from(
    w: &mut CpioWriter<impl std::io::Write>,
    dst: &str,
    src: &Path,
    perm: u32,
) -> Result<()> {
    let data = std::fs::read(src).with_context(|| format!("cannot read {}", src.display()))?;
    w.file(dst, perm, &data)?;
    Ok(())
}

fn add_parents(
    w: &mut CpioWriter<impl std::io::Write>,
    made: &mut BTreeSet<String>,
    path: &str,
) -> Result<()> {
    let mut acc = String::new();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        if !acc.is_empty() {
            acc.push('/');
        }
        acc.push_str(part);
        if made.insert(acc.clone()) {
            w.dir(&acc)?;
        }
    }
    Ok(())
}

/// Builds the base initramfs for `kernel` with `md_bitmap` as `/bin/md-bitmap`, into `out`.
pub fn build_base(kernel: &Kernel, md_bitmap: &Path, out: &Path) -> Result<()> {
    let busybox = Path::new("/bin/busybox");
    let mdadm = ["/sbin/mdadm", "/usr/sbin/mdadm"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .context("mdadm not installed: run `cargo xtask setup`")?;
    if !busybox.is_file() {
        bail!("/bin/busybox missing: run `cargo xtask setup`");
    }
    let dmsetup = ["/sbin/dmsetup", "/usr/sbin/dmsetup"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file());
    let file = std::fs::File::create(out)?;
    let mut w = CpioWriter::new(std::io::BufWriter::new(file));
    let mut made = BTreeSet::new();
    for d in [
        "bin",
        "sbin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "run",
        "etc",
        "lib",
        "lib64",
        "usr",
        "out",
        "payload",
        "mnt",
        "var",
        "usr/local",
        "usr/local/bin",
    ] {
        made.insert(d.to_string());
        w.dir(d)?;
    }
    add_file_from(&mut w, "bin/busybox", busybox, 0o755)?;
    w.symlink("bin/sh", "busybox")?;
    w.file("init", 0o755, INIT.as_bytes())?;
    w.file("lib/mdb.sh", 0o644, MDB_LIB.as_bytes())?;
    w.file("etc/mdadm.conf", 0o644, b"HOMEHOST <ignore>\n")?;
    add_file_from(&mut w, "bin/md-bitmap", md_bitmap, 0o755)?;
    let mut bins = vec![(mdadm, "sbin/mdadm")];
    for (src, dst) in HOST_TOOLS {
        let src = Path::new(src);
        if src.is_file() {
            bins.push((src, dst));
        }
    }
    if let Some(d) = dmsetup {
        bins.push((d, "sbin/dmsetup"));
    }
    let mut libs = BTreeSet::new();
    for (src, dst) in &bins {
        add_file_from(&mut w, dst, src, 0o755)?;
        libs.extend(shared_libs(src)?);
    }
    for t in HOST_DATA {
        let src = Path::new(t);
        if src.is_file() {
            let dst = t.trim_start_matches('/');
            add_parents(&mut w, &mut made, dst)?;
            add_file_from(&mut w, dst, &std::fs::canonicalize(src)?, 0o644)?;
        }
    }
    for lib in libs {
        let real = std::fs::canonicalize(&lib)?;
        let dst = lib.to_string_lossy().trim_start_matches('/').to_string();
        add_parents(&mut w, &mut made, &dst)?;
        add_file_from(&mut w, &dst, &real, 0o755)?;
    }
    let moddir = kernel.modules_dir();
    let rel = format!("lib/modules/{}", kernel.release);
    add_parents(&mut w, &mut made, &format!("{rel}/x"))?;
    let closure = module_closure(&moddir)?;
    let dep = read_modules_dep(&moddir)?;
    let mut dep_lines = String::new();
    for (path, deps) in dep.values() {
        if closure.contains(path) {
            dep_lines.push_str(&format!("{path}: {}\n", deps.join(" ")));
        }
    }
    w.file(&format!("{rel}/modules.dep"), 0o644, dep_lines.as_bytes())?;
    for p in &closure {
        let dst = format!("{rel}/{p}");
        add_parents(&mut w, &mut made, &dst)?;
        add_file_from(&mut w, &dst, &moddir.join(p), 0o644)?;
    }
    w.finish()?;
    Ok(())
}

/// Builds a payload archive: `/payload/run.sh` plus extra files, appended to the base by the VM.
pub fn build_payload(script: &str, files: &[(String, Vec<u8>, u32)], out: &Path) -> Result<()> {
    let file = std::fs::File::create(out)?;
    let mut w = CpioWriter::new(std::io::BufWriter::new(file));
    let mut made: BTreeSet<String> = ["payload".to_string()].into_iter().collect();
    w.dir("payload")?;
    w.file("payload/run.sh", 0o755, script.as_bytes())?;
    for (name, data, perm) in files {
        let name = name.trim_start_matches('/');
        add_parents(&mut w, &mut made, name)?;
        w.file(name, *perm, data)?;
    }
    w.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_fold_dashes() {
        assert_eq!(module_name("kernel/drivers/md/md-mod.ko"), "md_mod");
        assert_eq!(module_name("kernel/drivers/md/dm-delay.ko"), "dm_delay");
    }
}
