//! What this test process runs on: where the binaries under test are (the cargo profile dir
//! of this executable) and how many clusters the machine can run at once. Both harnesses —
//! one shard (`cluster`) and the whole cluster (`unified`) — ask it.

use std::path::PathBuf;

/// The cargo profile dir of this executable: `<target>/<profile>` for a test
/// (`<profile>/deps/<test exe>`) or a binary (`<profile>/<bin>`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("executable has a parent dir");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("deps has a parent").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// The cargo target dir this executable was built in; panics unless it is the release
/// profile, where the script looks for the binaries.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = profile_dir();
    assert!(
        profile_dir.file_name().is_some_and(|n| n == "release"),
        "the unified tests run the release binaries: run them with `cargo test --release` (test exe {})",
        exe.display()
    );
    profile_dir
        .parent()
        .expect("profile dir has a parent")
        .to_path_buf()
}

/// How many clusters of one kind may run at once: `$UNIKV_TEST_CLUSTERS` if set and positive,
/// else the CPUs divided by `cpus_per_cluster`, at least `min`.
pub fn concurrent_clusters(cpus_per_cluster: usize, min: usize) -> usize {
    std::env::var("UNIKV_TEST_CLUSTERS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| {
            let cpus = std::thread::available_parallelism().map_or(min, |n| n.get());
            (cpus / cpus_per_cluster).max(min)
        })
}
