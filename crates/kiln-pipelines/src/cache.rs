//! The content-addressed stores behind `actions/cache` and the artifact actions.
//!
//! Caches: each saved path is a tarball named by its SHA-256 under `blobs/`; an entry
//! (`entries/<sha256(key)>.json`) lists the key, the paths as written and their blobs. Restore
//! tries the exact key, then each restore key as a prefix (newest entry first), and only
//! entries saved for the same `path` list match, as GitHub's cache version does.
//! Artifacts: files are blobs under `blobs/`; `runs/<run>/<name>.json` maps relative paths to
//! blobs, and `runs/<run>/ids/<n>` holds the name of the run's artifact number `n`. Writes go to a temporary name and are renamed, so a reader never sees half a file.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::glob;

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    key: String,
    created: u128,
    paths: Vec<String>,
    blobs: Vec<Option<String>>,
}

fn sha_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn io(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// `~/x` against `home`, relative paths against `workspace`.
pub(crate) fn resolve(path: &str, workspace: &Path, home: &Path) -> PathBuf {
    if let Some(rest) = path.strip_prefix("~/") {
        home.join(rest)
    } else if path == "~" {
        home.to_path_buf()
    } else {
        workspace.join(path)
    }
}

/// Stores `bytes` under `blobs/<sha>` (once) and returns the sha.
fn put_blob(dir: &Path, bytes: &[u8]) -> Result<String, String> {
    let sha = sha_hex(bytes);
    let blobs = dir.join("blobs");
    std::fs::create_dir_all(&blobs).map_err(io)?;
    let target = blobs.join(&sha);
    if !target.exists() {
        write_atomic(&target, bytes)?;
    }
    Ok(sha)
}

/// A name no other write of this process uses: jobs of one run write at once (uploads of
/// identical files, matrix legs saving the same cache path), and a shared temporary name lets
/// one job's write or rename take the file from under another's.
fn unique_suffix() -> String {
    static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let serial = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{serial}", std::process::id())
}

fn write_atomic(target: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = target.with_extension(format!("tmp{}", unique_suffix()));
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, target).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

fn tar(args: &[&std::ffi::OsStr]) -> Result<(), String> {
    let out = Command::new("tar").args(args).output().map_err(io)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "tar failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Restores the best entry for `key`/`restore_keys`; returns the matched key.
pub(crate) fn restore(
    dir: &Path,
    key: &str,
    restore_keys: &[String],
    paths: &[String],
    workspace: &Path,
    home: &Path,
) -> Result<Option<String>, String> {
    let entries = dir.join("entries");
    let exact = std::fs::read(entries.join(format!("{}.json", sha_hex(key.as_bytes()))))
        .ok()
        .and_then(|b| serde_json::from_slice::<Entry>(&b).ok())
        .filter(|e| e.paths == paths);
    let found = match exact {
        Some(e) => Some(e),
        None => {
            let all: Vec<Entry> = std::fs::read_dir(&entries)
                .map(|rd| {
                    rd.flatten()
                        .filter_map(|f| std::fs::read(f.path()).ok())
                        .filter_map(|b| serde_json::from_slice::<Entry>(&b).ok())
                        .filter(|e| e.paths == paths)
                        .collect()
                })
                .unwrap_or_default();
            restore_keys.iter().find_map(|prefix| {
                all.iter()
                    .filter(|e| e.key.starts_with(prefix.as_str()))
                    .max_by_key(|e| e.created)
                    .map(|e| Entry {
                        key: e.key.clone(),
                        created: e.created,
                        paths: e.paths.clone(),
                        blobs: e.blobs.clone(),
                    })
            })
        }
    };
    let Some(entry) = found else { return Ok(None) };
    for (path, blob) in entry.paths.iter().zip(&entry.blobs) {
        let Some(blob) = blob else { continue };
        let target = resolve(path, workspace, home);
        let parent = target.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(parent).map_err(io)?;
        let blob = dir.join("blobs").join(blob);
        tar(&[
            "-xf".as_ref(),
            blob.as_os_str(),
            "-C".as_ref(),
            parent.as_os_str(),
        ])?;
    }
    Ok(Some(entry.key))
}

/// Saves `paths` under `key` unless an entry already exists (caches are immutable, as on GitHub).
pub(crate) fn save(
    dir: &Path,
    key: &str,
    paths: &[String],
    workspace: &Path,
    home: &Path,
) -> Result<bool, String> {
    let entries = dir.join("entries");
    let entry_file = entries.join(format!("{}.json", sha_hex(key.as_bytes())));
    if entry_file.exists() {
        return Ok(false);
    }
    std::fs::create_dir_all(&entries).map_err(io)?;
    let mut blobs = Vec::new();
    for path in paths {
        let source = resolve(path, workspace, home);
        let (Some(parent), Some(name)) = (source.parent(), source.file_name()) else {
            blobs.push(None);
            continue;
        };
        if !source.exists() {
            blobs.push(None);
            continue;
        }
        let tmp = dir.join(format!("pack-{}.tar", unique_suffix()));
        tar(&[
            "-cf".as_ref(),
            tmp.as_os_str(),
            "-C".as_ref(),
            parent.as_os_str(),
            name,
        ])?;
        let bytes = std::fs::read(&tmp).map_err(io)?;
        let _ = std::fs::remove_file(&tmp);
        blobs.push(Some(put_blob(dir, &bytes)?));
    }
    if blobs.iter().all(Option::is_none) {
        return Err("none of the cache paths exist; nothing saved".to_owned());
    }
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let entry = Entry {
        key: key.to_owned(),
        created,
        paths: paths.to_vec(),
        blobs,
    };
    write_atomic(&entry_file, &serde_json::to_vec(&entry).map_err(io)?)?;
    Ok(true)
}

/// Where a run's artifact manifests live.
fn manifest_dir(dir: &Path, run_id: u64) -> PathBuf {
    dir.join("runs").join(run_id.to_string())
}

/// upload-artifact's inputs that change what an upload does.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Upload {
    /// `include-hidden-files: true`: files and directories named `.…` go too (v4.4 on,
    /// they are left out by default).
    pub include_hidden: bool,
    /// `overwrite: true`: an artifact of the same name in the run is replaced, not an error.
    pub overwrite: bool,
}

/// What an upload stored: upload-artifact's outputs are made of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Uploaded {
    pub files: usize,
    /// The artifact's number in the run (`artifact-id`), unique among the run's uploads.
    pub id: u64,
    /// The SHA-256 of what was stored (`artifact-digest`): the artifact's manifest, which
    /// names every file and its content's own SHA-256 (GitHub hashes its zip, which kiln
    /// does not make).
    pub digest: String,
}

/// How many numbers an upload tries past the ones taken when it looked (uploads of other
/// jobs may take some meanwhile); more than a run's jobs could upload at one moment.
const ID_ATTEMPTS: u64 = 10_000;

/// Uploads the files matched by `patterns` as artifact `name`; `None` when none matched.
pub(crate) fn upload(
    dir: &Path,
    run_id: u64,
    name: &str,
    patterns: &[String],
    workspace: &Path,
    how: Upload,
) -> Result<Option<Uploaded>, String> {
    // Files are named relative to the least common ancestor of the patterns' search paths,
    // which may lie outside the workspace (`path: ${{ runner.temp }}/digests/*`): the files
    // are then looked for below it, with every pattern made absolute, and hidden ones judged
    // from the directory above it (the search path's own name counts).
    let root = artifact_root(patterns, workspace);
    let mut manifest = IndexMap::new();
    if root.starts_with(workspace) {
        let mut files = glob::select(workspace, patterns);
        if !how.include_hidden {
            files.retain(|f| !glob::hidden_from_search_paths(workspace, patterns, f));
        }
        let prefix = root.strip_prefix(workspace).unwrap_or(Path::new(""));
        for file in &files {
            let bytes = std::fs::read(workspace.join(file)).map_err(io)?;
            let rel = Path::new(file)
                .strip_prefix(prefix)
                .unwrap_or(Path::new(file));
            manifest.insert(rel.to_string_lossy().into_owned(), put_blob(dir, &bytes)?);
        }
    } else {
        let absolute: Vec<String> = patterns
            .iter()
            .map(|p| {
                let p = p.trim();
                let (bang, rest) = p.strip_prefix('!').map_or(("", p), |r| ("!", r));
                format!("{bang}{}", workspace.join(rest).to_string_lossy())
            })
            .collect();
        let parent = root.parent().unwrap_or(&root);
        let own_name = root.strip_prefix(parent).unwrap_or(Path::new(""));
        for file in glob::select(&root, &absolute) {
            let from_parent = own_name.join(&file);
            if !how.include_hidden
                && glob::hidden_from_search_paths(parent, &absolute, &from_parent.to_string_lossy())
            {
                continue;
            }
            let bytes = std::fs::read(root.join(&file)).map_err(io)?;
            manifest.insert(file, put_blob(dir, &bytes)?);
        }
    }
    if manifest.is_empty() {
        return Ok(None);
    }
    let mdir = manifest_dir(dir, run_id);
    std::fs::create_dir_all(&mdir).map_err(io)?;
    let target = mdir.join(format!("{name}.json"));
    if target.exists() && !how.overwrite {
        return Err(format!(
            "an artifact named `{name}` already exists in this run (upload-artifact's \
             `overwrite: true` replaces it)"
        ));
    }
    let bytes = serde_json::to_vec(&manifest).map_err(io)?;
    write_atomic(&target, &bytes)?;
    Ok(Some(Uploaded {
        files: manifest.len(),
        id: next_artifact_id(&mdir, name)?,
        digest: sha_hex(&bytes),
    }))
}

/// The run's next artifact number, recorded as `ids/<n>` holding the artifact's name. The
/// file is created exclusively, so jobs uploading at once never get the same number; GitHub
/// numbers a replaced (`overwrite: true`) artifact anew too.
fn next_artifact_id(mdir: &Path, name: &str) -> Result<u64, String> {
    use std::io::Write;
    let ids = mdir.join("ids");
    std::fs::create_dir_all(&ids).map_err(io)?;
    let taken = std::fs::read_dir(&ids).map_err(io)?.count() as u64;
    for id in taken + 1..=taken + ID_ATTEMPTS {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(ids.join(id.to_string()))
        {
            Ok(mut file) => {
                file.write_all(name.as_bytes()).map_err(io)?;
                return Ok(id);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(e)),
        }
    }
    Err(format!(
        "no artifact number left for `{name}` after {ID_ATTEMPTS} attempts"
    ))
}

/// The least common ancestor of the patterns' search roots (the part before any wildcard),
/// each resolved against the workspace (an absolute pattern stays as written); a plain
/// file's root is its directory.
fn artifact_root(patterns: &[String], workspace: &Path) -> PathBuf {
    let roots: Vec<PathBuf> = patterns
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty() && !p.starts_with('!'))
        .map(|p| {
            let p = workspace.join(p.trim_start_matches("./"));
            let text = p.to_string_lossy();
            let literal: Vec<&str> = text
                .split('/')
                .take_while(|s| !s.contains(['*', '?', '[']))
                .collect();
            let path = PathBuf::from(literal.join("/"));
            if literal.len() == text.split('/').count() && path.is_file() {
                path.parent().map(Path::to_path_buf).unwrap_or_default()
            } else {
                path
            }
        })
        .collect();
    let Some(first) = roots.first() else {
        return workspace.to_path_buf();
    };
    let mut common: Vec<_> = first.components().collect();
    for r in &roots[1..] {
        let comps: Vec<_> = r.components().collect();
        let n = common
            .iter()
            .zip(&comps)
            .take_while(|(a, b)| a == b)
            .count();
        common.truncate(n);
    }
    common.iter().collect()
}

/// Downloads artifact `name`, the artifacts numbered `ids`, or every artifact (matching
/// `pattern`), each into `<dest>/<name>` unless it is the only one asked for or they are merged;
/// returns the names and, for `ids`, a warning naming those not found.
pub(crate) fn download(
    dir: &Path,
    run_id: u64,
    which: &Download<'_>,
    dest: &Path,
) -> Result<Downloaded, String> {
    let mdir = manifest_dir(dir, run_id);
    let mut warning = None;
    let names: Vec<String> = match (which.name, which.ids) {
        (Some(n), _) => vec![n.to_owned()],
        (None, Some(ids)) => {
            let (names, missing) = names_of_ids(&mdir, ids)?;
            if names.is_empty() {
                return Err("None of the provided artifact IDs were found".to_owned());
            }
            if !missing.is_empty() {
                let missing: Vec<String> = missing.iter().map(u64::to_string).collect();
                warning = Some(format!(
                    "Could not find the following artifact IDs: {}",
                    missing.join(", ")
                ));
            }
            names
        }
        (None, None) => {
            let mut all: Vec<String> = std::fs::read_dir(&mdir)
                .map(|rd| {
                    rd.flatten()
                        .filter_map(|e| {
                            e.file_name()
                                .to_string_lossy()
                                .strip_suffix(".json")
                                .map(str::to_owned)
                        })
                        .filter(|n| which.pattern.is_none_or(|p| crate::glob::matches(p, n)))
                        .collect()
                })
                .unwrap_or_default();
            all.sort();
            all
        }
    };
    for n in &names {
        let bytes = std::fs::read(mdir.join(format!("{n}.json")))
            .map_err(|_| format!("Artifact '{n}' not found"))?;
        let manifest: IndexMap<String, String> = serde_json::from_slice(&bytes).map_err(io)?;
        // download-artifact v5: one artifact asked for by its number goes into the path
        // itself, as one asked for by name does.
        let alone = which.name.is_some() || (which.ids.is_some() && names.len() == 1);
        let base = if alone || which.merge_multiple {
            dest.to_path_buf()
        } else {
            dest.join(n)
        };
        for (rel, blob) in manifest {
            let target = base.join(rel);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            std::fs::copy(dir.join("blobs").join(blob), &target).map_err(io)?;
        }
    }
    Ok(Downloaded { names, warning })
}

/// What [`download`] downloaded.
#[derive(Debug)]
pub(crate) struct Downloaded {
    pub(crate) names: Vec<String>,
    /// Artifact numbers asked for and not found (when others were).
    pub(crate) warning: Option<String>,
}

/// The names of the run's artifacts numbered `ids` (in the order asked, each once), and the
/// numbers that name no current artifact: never given, or given to an upload since replaced
/// (`overwrite: true` numbers the new one anew, and GitHub deletes the old).
fn names_of_ids(mdir: &Path, ids: &[u64]) -> Result<(Vec<String>, Vec<u64>), String> {
    let numbered = mdir.join("ids");
    let mut newest: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let mut name_of: std::collections::HashMap<u64, String> = std::collections::HashMap::new();
    if let Ok(entries) = std::fs::read_dir(&numbered) {
        for entry in entries.flatten() {
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let name = std::fs::read_to_string(entry.path()).map_err(io)?;
            let latest = newest.entry(name.clone()).or_insert(id);
            *latest = (*latest).max(id);
            name_of.insert(id, name);
        }
    }
    let (mut names, mut missing) = (Vec::new(), Vec::new());
    for id in ids {
        match name_of.get(id) {
            Some(name) if newest.get(name) == Some(id) => {
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
            _ => missing.push(*id),
        }
    }
    Ok((names, missing))
}

/// Which artifacts `actions/download-artifact` downloads, and where each goes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Download<'a> {
    /// One artifact, into the destination itself.
    pub(crate) name: Option<&'a str>,
    /// Without a name: the artifacts with these numbers (`artifact-ids`; a single one goes
    /// into the destination itself).
    pub(crate) ids: Option<&'a [u64]>,
    /// Without a name: the artifacts whose names match (all when absent).
    pub(crate) pattern: Option<&'a str>,
    /// Without a name: every artifact into the destination itself rather than into a
    /// directory named after it.
    pub(crate) merge_multiple: bool,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// The jobs of a matrix upload at once, and their files are often the same bytes (one
    /// blob): every upload must succeed and every artifact must download whole.
    #[test]
    fn concurrent_uploads_of_identical_files_all_succeed() {
        let store = tempfile::tempdir().unwrap();
        let workspace = tempfile::tempdir().unwrap();
        for n in 0..300 {
            std::fs::write(workspace.path().join(format!("f{n}.txt")), format!("{n}\n")).unwrap();
        }
        let uploads: Vec<_> = (0..6)
            .map(|job| {
                let (store, workspace) = (store.path().to_owned(), workspace.path().to_owned());
                std::thread::spawn(move || {
                    upload(
                        &store,
                        7,
                        &format!("job{job}"),
                        &["*.txt".to_owned()],
                        &workspace,
                        Upload {
                            include_hidden: false,
                            overwrite: false,
                        },
                    )
                })
            })
            .collect();
        let mut ids: Vec<u64> = uploads
            .into_iter()
            .map(|upload| {
                let uploaded = upload.join().unwrap().unwrap().expect("files matched");
                assert_eq!(uploaded.files, 300);
                uploaded.id
            })
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, [1, 2, 3, 4, 5, 6], "each upload has its own number");
        let dest = tempfile::tempdir().unwrap();
        let names = download(store.path(), 7, &Download::default(), dest.path())
            .unwrap()
            .names;
        assert_eq!(names.len(), 6);
        for name in names {
            let text = std::fs::read_to_string(dest.path().join(name).join("f299.txt")).unwrap();
            assert_eq!(text, "299\n");
        }
    }

    /// Matrix legs save the same cache path (`node_modules`) under their own keys at once: each
    /// key restores its own leg's files, not a mix of two packs written to one temporary file.
    #[test]
    fn legs_saving_the_same_path_at_once_keep_their_own_files() {
        let store = tempfile::tempdir().unwrap();
        let legs: Vec<_> = (0..6)
            .map(|leg| {
                let store = store.path().to_owned();
                std::thread::spawn(move || {
                    let workspace = tempfile::tempdir().unwrap();
                    let modules = workspace.path().join("node_modules");
                    std::fs::create_dir_all(&modules).unwrap();
                    for n in 0..200 {
                        std::fs::write(modules.join(format!("m{n}.js")), format!("leg {leg}\n"))
                            .unwrap();
                    }
                    let paths = ["node_modules".to_owned()];
                    save(
                        &store,
                        &format!("deps-{leg}"),
                        &paths,
                        workspace.path(),
                        workspace.path(),
                    )
                })
            })
            .collect();
        for leg in legs {
            assert_eq!(leg.join().unwrap(), Ok(true));
        }
        for leg in 0..6 {
            let workspace = tempfile::tempdir().unwrap();
            let key = format!("deps-{leg}");
            let paths = ["node_modules".to_owned()];
            let hit = restore(
                store.path(),
                &key,
                &[],
                &paths,
                workspace.path(),
                workspace.path(),
            );
            assert_eq!(hit, Ok(Some(key)));
            for n in [0, 199] {
                let text =
                    std::fs::read_to_string(workspace.path().join(format!("node_modules/m{n}.js")));
                assert_eq!(text.unwrap(), format!("leg {leg}\n"));
            }
        }
    }
}
