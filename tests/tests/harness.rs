//! The VM harness itself: a second boot sees the disks the first left (crash-and-reboot tests
//! are two runs), and a hung guest is killed at its timeout with its console kept.
use std::time::Duration;

use tests::*;
use xtask::kernels::Series;

#[test]
fn second_boot_sees_the_first_boots_disks_after_a_crash() {
    let dir = work_dir("harness-reboot", Series::V6_1);
    let vm = Vm::new(Series::V6_1, &dir, &[64, 64]).unwrap();
    let first = Payload::script(
        "dd if=/dev/urandom of=/dev/md0 bs=64k count=16 oflag=direct 2>/dev/null || exit 2\n\
         dd if=/dev/md0 bs=64k count=16 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1 > /out/sum\n\
         mdb_crash\n",
    )
    .array(ArraySpec::new(1, 2))
    .timeout(Duration::from_secs(180));
    let r1 = vm.run(&first).unwrap();
    assert_eq!(
        r1.outcome,
        Outcome::Crashed,
        "{}",
        xtask::vm::tail(&r1.console, 30)
    );
    let sum = r1.out_file("sum").unwrap();
    let second = Payload::script(
        "mdadm --assemble --run /dev/md0 /dev/vda /dev/vdb >/dev/null 2>&1 || exit 3\n\
         dd if=/dev/md0 bs=64k count=16 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1 > /out/sum\n",
    )
    .timeout(Duration::from_secs(180));
    let r2 = vm.run(&second).unwrap();
    r2.expect_success().unwrap();
    assert_eq!(
        r2.out_file("sum").unwrap(),
        sum,
        "data written before the crash"
    );
    cleanup(&dir);
}

#[test]
fn a_kernel_that_crashes_while_booting_is_booted_again_then_reported() {
    // A kernel panic before /init (its init does not exist): every boot crashes before the
    // payload, so the harness boots it BOOT_ATTEMPTS times and then reports the crash.
    let dir = work_dir("harness-bootcrash", Series::V6_1);
    let vm = Vm::new(Series::V6_1, &dir, &[16]).unwrap();
    let mut p = Payload::script("echo payload-ran\n").timeout(Duration::from_secs(120));
    p.kernel_args = "rdinit=/no-such-init init=/no-such-init".into();
    let err = vm.run(&p).unwrap_err();
    assert!(
        err.downcast_ref::<xtask::vm::BootCrash>().is_some(),
        "a boot crash is reported as one: {err:#}"
    );
    let msg = format!("{err:#}");
    assert!(msg.contains("Kernel panic"), "{msg}");
    let logs = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("console-"))
        .count();
    assert_eq!(
        logs,
        xtask::vm::BOOT_ATTEMPTS as usize,
        "one console log per boot"
    );
    cleanup(&dir);
}

#[test]
fn a_hung_guest_is_killed_at_its_timeout_with_its_console_kept() {
    let dir = work_dir("harness-hang", Series::V6_1);
    let vm = Vm::new(Series::V6_1, &dir, &[16]).unwrap();
    let p = Payload::script("echo about-to-hang\nsleep 100000\n").timeout(Duration::from_secs(25));
    let err = vm.run(&p).unwrap_err().to_string();
    assert!(err.contains("timed out"), "{err}");
    assert!(
        err.contains("about-to-hang"),
        "the console tail is in the error: {err}"
    );
    let logs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("console-"))
        .collect();
    assert_eq!(logs.len(), 1, "console log kept");
    cleanup(&dir);
}
