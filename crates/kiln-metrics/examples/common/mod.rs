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

/// Series `i` of the ingestion examples: 50 metric names, 10 jobs, an `instance` of its own,
/// two methods.
#[allow(dead_code)]
pub fn series_labels(i: usize) -> kiln_metrics::Labels {
    kiln_metrics::Labels::new([
        ("__name__", format!("http_requests_total_{}", i % 50)),
        ("job", format!("job{}", i % 10)),
        ("instance", format!("10.0.{}.{}:9100", i / 250, i % 250)),
        ("method", ["GET", "POST"][i % 2].to_string()),
    ])
}

/// The values of the ingestion examples' series, scrape after scrape: half counters with
/// small increments, half gauges that mostly hold still. A xorshift generator, so runs
/// compare.
#[allow(dead_code)]
pub struct Values {
    values: Vec<f64>,
    rng: u64,
}

#[allow(dead_code)]
impl Values {
    pub fn new(series: usize) -> Self {
        Values {
            values: vec![0.0; series],
            rng: 0x9e37_79b9_7f4a_7c15,
        }
    }

    /// Every series' next value.
    pub fn next_scrape(&mut self) -> &[f64] {
        for (i, v) in self.values.iter_mut().enumerate() {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            if i % 2 == 0 {
                *v += (self.rng % 10) as f64
            } else if self.rng.is_multiple_of(4) {
                *v = (self.rng % 1000) as f64
            }
        }
        &self.values
    }
}

/// The child side of [`reopened`]: when this process was started as `EXAMPLE --open DIR`,
/// opens the store in `DIR`, prints its RSS growth and segment count, and returns true (the
/// example then exits).
#[allow(dead_code)]
pub fn open_if_asked() -> Result<bool, Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [flag, dir] = args.as_slice() else {
        return Ok(false);
    };
    if flag != "--open" {
        return Ok(false);
    }
    let before = rss_bytes();
    let store = kiln_metrics::Store::open(std::path::Path::new(dir), head_only())?;
    println!(
        "{} {}",
        rss_bytes().saturating_sub(before),
        store.stats().segments
    );
    Ok(true)
}

/// What a persisted store holds in memory, measured in a fresh process (this one's allocator
/// keeps what it freed): the RSS growth of opening the store in `dir`, and its segments.
#[allow(dead_code)]
pub fn reopened(dir: &std::path::Path) -> Result<(u64, usize), Box<dyn std::error::Error>> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .arg("--open")
        .arg(dir)
        .output()?;
    let out = String::from_utf8_lossy(&out.stdout);
    let mut fields = out.split_whitespace();
    let grown = fields.next().unwrap_or("0").parse()?;
    let segments = fields.next().unwrap_or("0").parse()?;
    Ok((grown, segments))
}
