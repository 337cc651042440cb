//! Where things are: the repository, the cache, build outputs.
use std::path::PathBuf;

/// The workspace root (this crate's parent directory).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// The cache folder for kernels and images: `$MD_BITMAP_CACHE`, else `<repo>/.cache` (git-ignored).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("MD_BITMAP_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".cache"))
}

/// Cargo's target directory for this workspace.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}
