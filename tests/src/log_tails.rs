//! What a failing cluster test shows of its processes: the tail of each log file.

/// Prints the last `lines` lines of every file in `dir` that `keep` accepts, sorted by name
/// (what a failing cluster test shows of its processes' logs).
pub fn print_log_tails(
    tag: &str,
    dir: &std::path::Path,
    keep: impl Fn(&std::path::Path) -> bool,
    lines: usize,
) {
    let mut files: Vec<std::path::PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| keep(p))
            .collect(),
        Err(e) => {
            eprintln!("[{tag}] cannot list {}: {e}", dir.display());
            return;
        }
    };
    files.sort();
    for f in files {
        let text = match std::fs::read(&f) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) => {
                eprintln!("[{tag}] cannot read {}: {e}", f.display());
                continue;
            }
        };
        let all: Vec<&str> = text.lines().collect();
        let start = all.len().saturating_sub(lines);
        eprintln!(
            "===== {} (last {} of {} lines) =====",
            f.display(),
            all.len() - start,
            all.len()
        );
        for line in &all[start..] {
            eprintln!("{line}");
        }
    }
}
