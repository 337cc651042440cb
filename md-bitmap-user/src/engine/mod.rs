//! The bitmap engine: a model of the kernel's classic write-intent bitmap (drivers/md/md-bitmap.c).
pub mod mapping;
