//! Releases: immutable, content-addressed versions of a service's code.
//!
//! A release's identity is the sha256 of its *manifest*: one line per entry of the tree, sorted
//! by path, giving the entry's type, mode, size and content digest. The same files give the same
//! digest on any machine; any change of content, name, mode or symlink target gives another.
//! `.git` and `.kiln` directories are never part of a release (history and kiln's own state are
//! not code). Snapshots are copied into `<releases>/<hex>/` while hashing and renamed into place
//! only when the digest is the one expected, so a release directory is complete or absent.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Directories never copied into a release.
pub const EXCLUDED_DIRS: &[&str] = &[".git", ".kiln"];
/// A tree with more entries is refused (a release of a whole home directory is a mistake).
pub const MAX_ENTRIES: usize = 200_000;
/// A tree larger than this is refused.
pub const MAX_BYTES: u64 = 4 << 30;

/// What a release's tree holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeDigest {
    /// `sha256:<64 hex>`.
    pub digest: String,
    pub files: u64,
    pub bytes: u64,
}

impl TreeDigest {
    /// The hex part of the digest, used as a directory name.
    pub fn hex(&self) -> &str {
        hex_of(&self.digest)
    }
}

/// The hex part of a `sha256:` digest.
pub fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// Twelve hex digits: how releases are shown.
pub fn short(digest: &str) -> &str {
    let hex = hex_of(digest);
    &hex[..hex.len().min(12)]
}

/// Why a tree could not be digested or snapshotted.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "{root} holds more than {MAX_ENTRIES} entries; point `path:` at the service's own directory"
    )]
    TooManyEntries { root: PathBuf },
    #[error("{root} holds more than {} GiB; point `path:` at the service's own directory", MAX_BYTES >> 30)]
    TooLarge { root: PathBuf },
    #[error("{path} is neither a file, a directory nor a symlink; a release can only hold those")]
    Special { path: PathBuf },
    #[error(
        "the code under {root} changed while it was being released (expected {expected}, found {found}); apply again"
    )]
    Changed {
        root: PathBuf,
        expected: String,
        found: String,
    },
    #[error("release {digest} is not on this machine (looked in {dir})")]
    Missing { digest: String, dir: PathBuf },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ReleaseError + '_ {
    move |source| ReleaseError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One entry of a tree, in manifest order.
#[derive(Debug)]
enum Entry {
    Dir { rel: String, mode: u32 },
    File { rel: String, mode: u32 },
    Link { rel: String, target: PathBuf },
}

impl Entry {
    fn rel(&self) -> &str {
        match self {
            Entry::Dir { rel, .. } | Entry::File { rel, .. } | Entry::Link { rel, .. } => rel,
        }
    }
}

/// Lists `root`'s entries sorted by relative path, without the excluded directories.
fn walk(root: &Path) -> Result<Vec<Entry>, ReleaseError> {
    let mut entries = Vec::new();
    let mut pending = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = pending.pop() {
        let listing = fs::read_dir(&dir).map_err(io_err(&dir))?;
        for item in listing {
            let item = item.map_err(io_err(&dir))?;
            let name = item.file_name();
            let name = name.to_string_lossy();
            let path = item.path();
            let child = if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            };
            let meta = fs::symlink_metadata(&path).map_err(io_err(&path))?;
            let kind = meta.file_type();
            if kind.is_dir() {
                if EXCLUDED_DIRS.contains(&name.as_ref()) {
                    continue;
                }
                entries.push(Entry::Dir {
                    rel: child.clone(),
                    mode: meta.permissions().mode() & 0o7777,
                });
                pending.push((path, child));
            } else if kind.is_file() {
                entries.push(Entry::File {
                    rel: child,
                    mode: meta.permissions().mode() & 0o7777,
                });
            } else if kind.is_symlink() {
                let target = fs::read_link(&path).map_err(io_err(&path))?;
                entries.push(Entry::Link { rel: child, target });
            } else {
                return Err(ReleaseError::Special { path });
            }
            if entries.len() > MAX_ENTRIES {
                return Err(ReleaseError::TooManyEntries {
                    root: root.to_owned(),
                });
            }
        }
    }
    entries.sort_by(|a, b| a.rel().cmp(b.rel()));
    Ok(entries)
}

/// Streams `path` into the hasher (and into `copy` when given); returns the byte count.
fn hash_file(path: &Path, copy: Option<&Path>) -> Result<(String, u64), ReleaseError> {
    let mut input = fs::File::open(path).map_err(io_err(path))?;
    let mut output = match copy {
        Some(to) => Some(fs::File::create(to).map_err(io_err(to))?),
        None => None,
    };
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = input.read(&mut buffer).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        if let (Some(out), Some(to)) = (output.as_mut(), copy) {
            io::Write::write_all(out, &buffer[..n]).map_err(io_err(to))?;
        }
        total += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), total))
}

/// Hashes (and with `into`, copies) the tree under `root`.
fn process(root: &Path, into: Option<&Path>) -> Result<TreeDigest, ReleaseError> {
    let entries = walk(root)?;
    let mut manifest = Sha256::new();
    let (mut files, mut bytes) = (0u64, 0u64);
    for entry in &entries {
        let source = root.join(entry.rel());
        let target = into.map(|dir| dir.join(entry.rel()));
        let line = match entry {
            Entry::Dir { rel, mode } => {
                if let Some(t) = &target {
                    fs::create_dir_all(t).map_err(io_err(t))?;
                }
                format!("d {mode:o} {rel}\n")
            }
            Entry::File { rel, mode } => {
                let (digest, size) = hash_file(&source, target.as_deref())?;
                if let Some(t) = &target {
                    fs::set_permissions(t, fs::Permissions::from_mode(*mode)).map_err(io_err(t))?;
                }
                files += 1;
                bytes += size;
                if bytes > MAX_BYTES {
                    return Err(ReleaseError::TooLarge {
                        root: root.to_owned(),
                    });
                }
                format!("f {mode:o} {size} {digest} {rel}\n")
            }
            Entry::Link { rel, target: link } => {
                if let Some(t) = &target {
                    std::os::unix::fs::symlink(link, t).map_err(io_err(t))?;
                }
                format!("l {} {rel}\n", link.display())
            }
        };
        manifest.update(line.as_bytes());
    }
    Ok(TreeDigest {
        digest: format!("sha256:{}", hex::encode(manifest.finalize())),
        files,
        bytes,
    })
}

/// The digest of the tree under `root`, without copying anything.
pub fn digest_tree(root: &Path) -> Result<TreeDigest, ReleaseError> {
    process(root, None)
}

/// A release on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub tree: TreeDigest,
    /// `<releases>/<hex>`: where the release's files are.
    pub dir: PathBuf,
    /// False when the release was already on disk.
    pub created: bool,
}

/// Copies the tree under `root` into `releases/<hex>/` unless that release is already there.
/// With `expected`, the tree must still have that digest (the one the plan showed).
pub fn snapshot(
    root: &Path,
    releases: &Path,
    expected: Option<&str>,
) -> Result<Snapshot, ReleaseError> {
    if let Some(digest) = expected {
        let dir = releases.join(hex_of(digest));
        if dir.is_dir() {
            // Complete by construction: release directories appear by rename only.
            let tree = digest_tree(&dir)?;
            if tree.digest == digest {
                return Ok(Snapshot {
                    tree,
                    dir,
                    created: false,
                });
            }
        }
    }
    fs::create_dir_all(releases).map_err(io_err(releases))?;
    let staging = releases.join(format!(".staging-{}-{}", std::process::id(), unique()));
    let result = copy_into(root, releases, &staging, expected);
    if staging.exists() {
        let _ = fs::remove_dir_all(&staging);
    }
    result
}

fn copy_into(
    root: &Path,
    releases: &Path,
    staging: &Path,
    expected: Option<&str>,
) -> Result<Snapshot, ReleaseError> {
    fs::create_dir(staging).map_err(io_err(staging))?;
    let tree = process(root, Some(staging))?;
    if let Some(expected) = expected
        && expected != tree.digest
    {
        return Err(ReleaseError::Changed {
            root: root.to_owned(),
            expected: expected.to_owned(),
            found: tree.digest,
        });
    }
    let root_mode = fs::metadata(root).map_err(io_err(root))?.mode() & 0o7777;
    fs::set_permissions(staging, fs::Permissions::from_mode(root_mode)).map_err(io_err(staging))?;
    let dir = releases.join(tree.hex());
    match fs::rename(staging, &dir) {
        Ok(()) => Ok(Snapshot {
            tree,
            dir,
            created: true,
        }),
        // Another process released the same tree first: theirs is identical.
        Err(_) if dir.is_dir() => Ok(Snapshot {
            tree,
            dir,
            created: false,
        }),
        Err(e) => Err(io_err(&dir)(e)),
    }
}

/// The directory of a release already on disk.
pub fn existing(releases: &Path, digest: &str) -> Result<PathBuf, ReleaseError> {
    let dir = releases.join(hex_of(digest));
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(ReleaseError::Missing {
            digest: digest.to_owned(),
            dir: releases.to_owned(),
        })
    }
}

/// How many releases of each service stay on disk, counting by when each was last deployed:
/// enough to roll back a few times (Kamal keeps five containers the same way).
pub const KEEP_PER_SERVICE: usize = 5;

/// One recorded release and when it was last deployed (or recorded, if never deployed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseUse {
    pub service: String,
    pub digest: String,
    /// RFC 3339 UTC; compares in time order as text.
    pub last_used: String,
}

/// The digests whose files may go: those no service keeps. A service keeps the release it
/// runs and its `keep` most recently used ones; a digest two services share stays while either
/// keeps it.
pub fn prunable(
    usage: &[ReleaseUse],
    running: &std::collections::BTreeSet<String>,
    keep: usize,
) -> std::collections::BTreeSet<String> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut by_service: BTreeMap<&str, Vec<&ReleaseUse>> = BTreeMap::new();
    for u in usage {
        by_service.entry(&u.service).or_default().push(u);
    }
    let mut kept: BTreeSet<&str> = running.iter().map(String::as_str).collect();
    for uses in by_service.values_mut() {
        uses.sort_by(|a, b| b.last_used.cmp(&a.last_used).then(a.digest.cmp(&b.digest)));
        kept.extend(uses.iter().take(keep).map(|u| u.digest.as_str()));
    }
    usage
        .iter()
        .map(|u| u.digest.as_str())
        .filter(|d| !kept.contains(d))
        .map(str::to_owned)
        .collect()
}

/// Removes the files of `digests` under `releases` (and their `<hex>.source.json`); returns
/// the ones that were on disk. A directory is first renamed aside, so a release is complete
/// or absent at every moment.
pub fn prune(
    releases: &Path,
    digests: &std::collections::BTreeSet<String>,
) -> Result<Vec<String>, ReleaseError> {
    let mut removed = Vec::new();
    for digest in digests {
        let hex = hex_of(digest);
        let dir = releases.join(hex);
        let sidecar = releases.join(format!("{hex}.source.json"));
        if sidecar.exists() {
            fs::remove_file(&sidecar).map_err(io_err(&sidecar))?;
        }
        if !dir.is_dir() {
            continue;
        }
        let aside = releases.join(format!(".pruning-{hex}-{}", unique()));
        fs::rename(&dir, &aside).map_err(io_err(&dir))?;
        fs::remove_dir_all(&aside).map_err(io_err(&aside))?;
        removed.push(digest.clone());
    }
    Ok(removed)
}

fn unique() -> String {
    // Time alone repeats between threads of one process; the serial does not.
    static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{nanos}-{}",
        SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("lib")).unwrap();
        fs::create_dir_all(dir.path().join(".git")).unwrap();
        fs::create_dir_all(dir.path().join("sub/.kiln")).unwrap();
        fs::write(dir.path().join("server.js"), "console.log(1)\n").unwrap();
        fs::write(dir.path().join("lib/util.js"), "module.exports = 2\n").unwrap();
        fs::write(dir.path().join(".git/HEAD"), "ref: x\n").unwrap();
        fs::write(dir.path().join("sub/.kiln/state.db"), "state").unwrap();
        std::os::unix::fs::symlink("server.js", dir.path().join("main.js")).unwrap();
        dir
    }

    #[test]
    fn the_digest_covers_content_names_modes_and_links_but_not_git_or_kiln() {
        let dir = tree();
        let first = digest_tree(dir.path()).unwrap();
        assert_eq!(first.files, 2);
        assert!(first.digest.starts_with("sha256:") && first.digest.len() == 71);
        // Excluded directories do not count.
        fs::write(dir.path().join(".git/HEAD"), "ref: y\n").unwrap();
        fs::write(dir.path().join("sub/.kiln/state.db"), "other").unwrap();
        assert_eq!(digest_tree(dir.path()).unwrap(), first);
        // Content, mode, name and link target do.
        let mut seen = vec![first.digest.clone()];
        fs::write(dir.path().join("server.js"), "console.log(2)\n").unwrap();
        seen.push(digest_tree(dir.path()).unwrap().digest);
        fs::set_permissions(
            dir.path().join("server.js"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        seen.push(digest_tree(dir.path()).unwrap().digest);
        fs::rename(dir.path().join("lib/util.js"), dir.path().join("lib/u.js")).unwrap();
        seen.push(digest_tree(dir.path()).unwrap().digest);
        fs::remove_file(dir.path().join("main.js")).unwrap();
        std::os::unix::fs::symlink("lib/u.js", dir.path().join("main.js")).unwrap();
        seen.push(digest_tree(dir.path()).unwrap().digest);
        let distinct: std::collections::BTreeSet<_> = seen.iter().collect();
        assert_eq!(distinct.len(), seen.len(), "{seen:#?}");
    }

    #[test]
    fn a_snapshot_is_an_identical_copy_under_its_digest_and_is_made_once() {
        let dir = tree();
        let releases = tempfile::tempdir().unwrap();
        let planned = digest_tree(dir.path()).unwrap();
        let snap = snapshot(dir.path(), releases.path(), Some(&planned.digest)).unwrap();
        assert!(snap.created);
        assert_eq!(snap.dir, releases.path().join(planned.hex()));
        assert_eq!(digest_tree(&snap.dir).unwrap(), planned);
        assert!(!snap.dir.join(".git").exists());
        assert_eq!(
            fs::read_link(snap.dir.join("main.js")).unwrap(),
            Path::new("server.js")
        );
        let again = snapshot(dir.path(), releases.path(), Some(&planned.digest)).unwrap();
        assert!(!again.created);
        // The source changes afterwards: the release does not.
        fs::write(dir.path().join("server.js"), "changed").unwrap();
        assert_eq!(digest_tree(&snap.dir).unwrap(), planned);
        // Nothing half-made is left behind.
        let names: Vec<_> = fs::read_dir(releases.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn a_tree_that_changed_since_the_plan_is_refused_and_leaves_nothing() {
        let dir = tree();
        let releases = tempfile::tempdir().unwrap();
        let planned = digest_tree(dir.path()).unwrap();
        fs::write(dir.path().join("server.js"), "edited after the plan").unwrap();
        let err = snapshot(dir.path(), releases.path(), Some(&planned.digest)).unwrap_err();
        assert!(matches!(err, ReleaseError::Changed { .. }), "{err}");
        assert_eq!(fs::read_dir(releases.path()).unwrap().count(), 0);
        assert!(matches!(
            existing(releases.path(), &planned.digest),
            Err(ReleaseError::Missing { .. })
        ));
    }

    fn used(service: &str, digest: &str, at: &str) -> ReleaseUse {
        ReleaseUse {
            service: service.into(),
            digest: digest.into(),
            last_used: at.into(),
        }
    }

    #[test]
    fn each_service_keeps_its_running_and_most_recently_used_releases() {
        let usage = [
            used("services.api", "sha256:a1", "2026-01-01T00:00:01Z"),
            used("services.api", "sha256:a2", "2026-01-01T00:00:02Z"),
            used("services.api", "sha256:a3", "2026-01-01T00:00:03Z"),
            // Rolled back to: used again, so kept though created first.
            used("services.api", "sha256:a0", "2026-01-01T00:00:09Z"),
            used("services.web", "sha256:w1", "2026-01-01T00:00:01Z"),
            // Shared by both services: web keeps it.
            used("services.api", "sha256:s", "2026-01-01T00:00:00Z"),
            used("services.web", "sha256:s", "2026-01-01T00:00:05Z"),
        ];
        let running = std::collections::BTreeSet::from(["sha256:a1".to_owned()]);
        let gone = prunable(&usage, &running, 2);
        assert_eq!(
            gone.into_iter().collect::<Vec<_>>(),
            ["sha256:a2".to_owned()],
            "a0 and a3 are api's newest two, a1 runs, s is web's"
        );
        assert!(prunable(&usage, &running, 5).is_empty());
    }

    #[test]
    fn pruning_removes_the_files_and_sidecar_and_skips_what_is_gone() {
        let dir = tree();
        let releases = tempfile::tempdir().unwrap();
        let kept = snapshot(dir.path(), releases.path(), None).unwrap();
        fs::write(dir.path().join("server.js"), "console.log(2)\n").unwrap();
        let old = snapshot(dir.path(), releases.path(), None).unwrap();
        let sidecar = releases
            .path()
            .join(format!("{}.source.json", old.tree.hex()));
        fs::write(&sidecar, "{}").unwrap();
        let digests =
            std::collections::BTreeSet::from([old.tree.digest.clone(), "sha256:0000".to_owned()]);
        let removed = prune(releases.path(), &digests).unwrap();
        assert_eq!(removed, std::slice::from_ref(&old.tree.digest));
        assert!(!old.dir.exists() && !sidecar.exists());
        assert!(kept.dir.is_dir());
        let left: Vec<_> = fs::read_dir(releases.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "nothing set aside is left behind");
    }
}
