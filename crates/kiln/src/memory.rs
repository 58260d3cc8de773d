//! How the control plane's allocator hands memory back (glibc only; a no-op elsewhere).
//!
//! glibc gives each thread that meets contention its own arena, up to eight per core, and
//! keeps freed memory in each. The control plane's many short-lived blocking tasks (scrapes,
//! persists, queries) spread across those arenas, and a scraping control plane's RSS was mostly
//! freed-but-kept memory: with 10,000 series, 64 MiB with the default arenas, 51 MiB with two,
//! and a further 7 MiB returned by `malloc_trim` (docs/benchmarks.md). These are the only
//! `unsafe` calls in kiln; ARCHITECTURE.md says why.

use std::time::Duration;

/// How often freed memory is handed back to the kernel.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(30);

/// Caps glibc's arenas at two. Call first thing in `main`, before any thread starts.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn limit_arenas() {
    // A user's own `MALLOC_ARENA_MAX` wins.
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    // SAFETY: `mallopt` takes two integers and touches only the allocator's own settings; glibc
    // documents it as thread-safe, and it runs here before any other thread exists.
    let _ = unsafe { nix::libc::mallopt(nix::libc::M_ARENA_MAX, 2) };
}

/// Caps glibc's arenas (nothing to do on other allocators).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn limit_arenas() {}

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

    #[test]
    fn the_calls_are_harmless_to_repeat_while_allocating() {
        limit_arenas();
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
