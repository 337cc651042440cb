//! md-bitmap's eBPF programs live in `main.rs`; this library exists so that the userspace crate can
//! name this package as a build dependency (which makes cargo rebuild it when the programs change).
#![no_std]
