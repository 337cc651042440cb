//! md-bitmap's developer and test flows, as a library so that integration tests drive the same
//! code as `cargo xtask`.
//!
//! - [`setup`]: installs what the project needs (Debian packages, nightly rust-src, bpf-linker,
//!   Debian's 6.1 and 6.12 cloud kernels) into the machine and the git-ignored cache; idempotent.
//! - [`kernels`]: the kernels tests boot, and where their files are.
//! - [`initramfs`] and [`cpio`]: the guest's root file system (busybox, mdadm, modules, md-bitmap).
//! - [`vm`]: boots a kernel under qemu (TCG) with file-backed virtio disks, runs a payload script,
//!   streams the serial console and returns the payload's exit status and output files.
//! - [`arrays`]: md arrays to create in the guest, one call each.
pub mod arrays;
pub mod cpio;
pub mod guest;
pub mod initramfs;
pub mod kernels;
pub mod paths;
pub mod setup;
pub mod vm;
