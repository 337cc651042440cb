//! Shared helpers for md-bitmap's integration tests, real-kernel ones among them.
//!
//! Real-kernel tests boot Debian's 6.1 and 6.12 kernels under qemu through [`xtask::vm`]. They
//! batch many assertions into one boot per kernel; each prints the figures it measured.
use std::path::PathBuf;

use xtask::kernels::Series;
use xtask::paths::target_dir;

pub mod scenario;

pub use xtask::arrays::ArraySpec;
pub use xtask::vm::{Outcome, Payload, RunResult, Vm};

/// A fresh work folder for one test on one kernel (under `target/vm-tests`).
pub fn work_dir(test: &str, series: Series) -> PathBuf {
    let d = target_dir().join("vm-tests").join(format!(
        "{test}-{}-{}",
        series.short(),
        std::process::id()
    ));
    if d.exists() {
        std::fs::remove_dir_all(&d).ok();
    }
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Removes a work folder after a test passed (failed ones are kept for their console logs).
pub fn cleanup(dir: &std::path::Path) {
    std::fs::remove_dir_all(dir).ok();
}

/// Parses NDJSON text into values, failing on a bad line.
pub fn ndjson(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// Shell snippet: start `md-bitmap events` in the background into `/out/<name>.ndjson` and wait
/// until its probes are attached. Stop it with [`stop_events`].
pub fn start_events(name: &str, extra: &str) -> String {
    format!(
        "rm -f /tmp/{name}.ready\n\
         md-bitmap events {extra} --ready-file /tmp/{name}.ready > /out/{name}.ndjson 2>/out/{name}.err &\n\
         EV_{name}=$!\n\
         i=0; while [ ! -e /tmp/{name}.ready ] && [ $i -lt 600 ]; do \
           if ! kill -0 $EV_{name} 2>/dev/null; then cat /out/{name}.err; exit 70; fi; sleep 0.1; i=$((i+1)); done\n\
         [ -e /tmp/{name}.ready ] || {{ echo 'md-bitmap events did not attach'; cat /out/{name}.err; exit 71; }}\n"
    )
}

/// Shell snippet: stop the `md-bitmap events` started by [`start_events`] and wait for it.
pub fn stop_events(name: &str) -> String {
    format!(
        "kill -INT $EV_{name}; wait $EV_{name}; echo \"events {name} exit $?\"; cat /out/{name}.err\n"
    )
}
