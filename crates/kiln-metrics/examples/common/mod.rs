//! What the examples share: the process's resident memory.

/// VmRSS of this process in bytes (Linux only; 0 elsewhere).
pub fn rss_bytes() -> u64 {
    status_bytes("VmRSS:")
}

/// VmHWM, the most this process was ever resident, in bytes (Linux only; 0 elsewhere).
#[allow(dead_code)]
pub fn peak_rss_bytes() -> u64 {
    status_bytes("VmHWM:")
}

fn status_bytes(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Store options that never persist on their own, so the head holds every sample measured.
pub fn head_only() -> kiln_metrics::Options {
    kiln_metrics::Options {
        persist_after_samples: usize::MAX,
        persist_interval: std::time::Duration::from_secs(24 * 3600),
        ..kiln_metrics::Options::default()
    }
}
