//! Clock-rate faults: a node whose clocks (wall and monotonic) run faster or slower than real
//! time, through Debian's libfaketime (package `faketime`, installed by `scripts/setup.sh`). It
//! is preloaded into the node itself (not through the `faketime` wrapper, which forks, so the
//! pid a test signals would be the wrapper's); it fakes `clock_gettime` for every clock, so
//! Rust's `Instant` and tokio's timers follow (checked: a node at x2 reports `uptime_ms`
//! advancing 4,036 ms in 2,020 real ms, at x0.5 1,009 ms).

use std::path::PathBuf;

/// The multi-threaded libfaketime, wherever this machine's multiarch puts it.
pub fn preload_lib() -> Option<PathBuf> {
    let dirs = std::fs::read_dir("/usr/lib").ok()?;
    dirs.flatten()
        .map(|d| d.path().join("faketime/libfaketimeMT.so.1"))
        .find(|p| p.is_file())
}

/// The environment that runs a process's clocks at `rate` from its start.
pub fn env(rate: f64) -> Vec<(String, String)> {
    let lib = preload_lib().expect("libfaketime not found: scripts/setup.sh installs faketime");
    vec![
        ("LD_PRELOAD".into(), lib.display().to_string()),
        ("FAKETIME".into(), format!("+0 x{rate}")),
    ]
}
