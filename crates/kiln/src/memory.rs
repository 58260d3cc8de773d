//! How the control plane's allocator hands memory back (glibc only; a no-op elsewhere).
//!
//! glibc gives each thread that meets contention its own arena, up to eight per core, and
//! keeps freed memory in each. The control plane's many short-lived blocking tasks (scrapes,
//! persists, queries) spread across those arenas, and a scraping control plane's RSS was mostly
//! freed-but-kept memory: with 10,000 series, 64 MiB with the default arenas, 51 MiB with two,
//! and a further 7 MiB returned by `malloc_trim` (docs/benchmarks.md).
//!
//! glibc also raises its mmap threshold each time a block it had mapped is freed, up to 32 MiB:
//! after the metrics store's first persist (whose buffers and sorted lists run to megabytes),
//! every such buffer came from the heap instead, and the long-lived series allocated between
//! them kept the freed space from being handed back (50,000 series: 44 MiB resident for 18 MiB
//! in use). A fixed threshold keeps big, short-lived buffers in their own mappings, returned
//! whole when freed. These are the only `unsafe` calls in kiln; ARCHITECTURE.md says why.

use std::time::Duration;

/// How often freed memory is handed back to the kernel.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(30);

/// Allocations at least this big get a mapping of their own (glibc's starting value, kept).
pub const MMAP_THRESHOLD: i32 = 128 * 1024;

/// Caps glibc's arenas at two and fixes its mmap threshold. Call first thing in `main`, before
/// any thread starts.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn tune_allocator() {
    // A user's own settings win.
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: `mallopt` takes two integers and touches only the allocator's own settings;
        // glibc documents it as thread-safe, and it runs here before any other thread exists.
        let _ = unsafe { nix::libc::mallopt(nix::libc::M_ARENA_MAX, 2) };
    }
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: as above; setting the threshold also turns off its dynamic adjustment.
        let _ = unsafe { nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
    }
}

/// Tunes glibc's allocator (nothing to do on other allocators).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune_allocator() {}

/// Returns free memory at the top and inside every arena to the kernel.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn return_free_memory() {
    // SAFETY: `malloc_trim` only releases pages the allocator holds free; glibc locks each
    // arena while it trims it, so it is safe to call while other threads allocate.
    let _ = unsafe { nix::libc::malloc_trim(0) };
}

/// Returns free memory (nothing to do on other allocators).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn return_free_memory() {}

/// Hands freed memory back every [`TRIM_INTERVAL`], off the async workers, until dropped.
pub async fn trim_periodically() {
    let mut tick = tokio::time::interval(TRIM_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let _ = tokio::task::spawn_blocking(return_free_memory).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resident anonymous memory of this process (nextest runs each test in its own).
    fn resident_anonymous_bytes() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
    }

    /// Big short-lived buffers freed between long-lived small allocations go back to the
    /// kernel even after a bigger mapped block was freed (which, left to glibc, raises the
    /// threshold, and the buffers then stay resident inside the heap).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn big_buffers_are_returned_when_freed_after_a_bigger_one_was() {
        const BUFFER: usize = 256 * 1024;
        const BUFFERS: usize = 64;
        tune_allocator();
        for _ in 0..3 {
            drop(std::hint::black_box(vec![1u8; 8 << 20]));
        }
        let mut kept = Vec::with_capacity(BUFFERS);
        let mut buffers = Vec::with_capacity(BUFFERS);
        for i in 0..BUFFERS {
            buffers.push(std::hint::black_box(vec![i as u8; BUFFER]));
            kept.push(std::hint::black_box(Box::new([i as u8; 64])));
        }
        let before = resident_anonymous_bytes();
        drop(buffers);
        let after = resident_anonymous_bytes();
        let returned = before.saturating_sub(after);
        assert!(
            returned >= (BUFFER * BUFFERS / 2) as u64,
            "only {returned} of {} bytes returned",
            BUFFER * BUFFERS
        );
        assert_eq!(kept.len(), BUFFERS);
    }

    #[test]
    fn the_calls_are_harmless_to_repeat_while_allocating() {
        tune_allocator();
        let threads: Vec<_> = (0..4)
            .map(|i| {
                std::thread::spawn(move || {
                    let mut kept = Vec::new();
                    for n in 0..2_000 {
                        kept.push(vec![i as u8; 64 + n % 512]);
                        if n % 500 == 0 {
                            return_free_memory();
                        }
                    }
                    kept.iter().map(Vec::len).sum::<usize>()
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().unwrap() > 0);
        }
    }
}
