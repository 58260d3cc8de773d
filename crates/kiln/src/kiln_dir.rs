//! The permissions of a stack's `.kiln` directory.
//!
//! Security invariant: `.kiln` is 0711 (others may pass through it, not list it) so that a
//! service run as another user (`user:`) can reach its release under `.kiln/releases/<hex>/`,
//! which is as readable as the files it was snapshotted from. Everything else in `.kiln` (the
//! state database, the control socket, logs, pidfiles, metrics, tokens) is owner-only, so
//! passing through gives that user nothing but the releases. The control plane enforces this
//! at start and once its parts have created their files.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// `.kiln` and `.kiln/releases`: traverse, but neither list nor read.
pub const TRAVERSE_ONLY: u32 = 0o711;

/// The one entry of `.kiln` others may pass into.
pub const RELEASES: &str = "releases";

/// Directories kiln fills while it runs, made owner-only up front so that what is written in
/// them later is private whatever its own mode.
const PRIVATE_DIRS: &[&str] = &[
    "artifacts",
    "cache",
    "ci",
    "delivery",
    "logs",
    "metrics",
    "runs",
    "services",
];

/// Creates `.kiln` and `.kiln/releases` traverse-only and takes group and other permissions
/// away from every other entry of `.kiln`. Returns the entries it tightened.
pub fn secure(kiln_dir: &Path) -> std::io::Result<Vec<String>> {
    let releases = kiln_dir.join(RELEASES);
    std::fs::create_dir_all(&releases)?;
    for name in PRIVATE_DIRS {
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(kiln_dir.join(name))?;
    }
    for dir in [kiln_dir, releases.as_path()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(TRAVERSE_ONLY))?;
    }
    let mut tightened = Vec::new();
    for entry in std::fs::read_dir(kiln_dir)? {
        let entry = entry?;
        if entry.file_name() == RELEASES {
            continue;
        }
        // A symbolic link's own mode means nothing; what it points to is not ours to change.
        let meta = entry.path().symlink_metadata()?;
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode() & 0o7777;
        let private = mode & 0o700;
        if private != mode {
            std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(private))?;
            tightened.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    tightened.sort();
    Ok(tightened)
}

/// Writes `bytes` to `path` through a temporary file renamed over it (a reader never sees half
/// a file), created owner-only: for files kiln rewrites in `.kiln` while it runs.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let temp = path.with_file_name(name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)?;
    // An existing temporary file keeps its mode through `open`; make sure.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)?;
    drop(file);
    std::fs::rename(temp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn only_the_releases_are_reachable_by_others() {
        let dir = tempfile::tempdir().unwrap();
        let kiln = dir.path().join(".kiln");
        std::fs::create_dir_all(kiln.join("logs")).unwrap();
        std::fs::create_dir_all(kiln.join("releases/abc")).unwrap();
        std::fs::write(kiln.join("state.db"), "").unwrap();
        std::fs::set_permissions(
            kiln.join("state.db"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        std::fs::set_permissions(kiln.join("logs"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::fs::set_permissions(
            kiln.join("releases/abc"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();

        assert_eq!(secure(&kiln).unwrap(), ["logs", "state.db"]);
        assert_eq!(mode(&kiln), 0o711);
        assert_eq!(mode(&kiln.join("releases")), 0o711);
        assert_eq!(
            mode(&kiln.join("releases/abc")),
            0o755,
            "a release keeps its mode"
        );
        assert_eq!(mode(&kiln.join("state.db")), 0o600);
        assert_eq!(mode(&kiln.join("logs")), 0o700);
        assert_eq!(
            mode(&kiln.join("ci")),
            0o700,
            "made before anything is written in it"
        );
        assert!(secure(&kiln).unwrap().is_empty(), "idempotent");
    }

    #[test]
    fn rewritten_files_are_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ports.json");
        std::fs::write(&path, "old").unwrap();
        write_private(&path, b"{}").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{}");
        assert_eq!(mode(&path), 0o600);
    }
}
