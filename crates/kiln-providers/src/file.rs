//! The `file` provider: one local file with a content and a permission mode.
//!
//! Writes are atomic (temporary file in the same directory, fsync, rename) so a reader never
//! sees a half-written file and a crash leaves either the old or the new content. The sha256 of
//! the written content and the mode are kept in `private`, because the recorded `content`
//! attribute may be a digest of a sensitive value rather than the value itself.
//!
//! All filesystem work runs in one `spawn_blocking` call per operation: observing thousands of
//! files concurrently then costs one blocking-pool hop per file instead of one per syscall.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use kiln_engine::provider::{
    Applied, Attributes, Drift, Observation, Provider, ProviderContext, ProviderError,
    ProviderFuture, Recorded,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::attrs::{failed, optional_str, partial, required_str, resolve_path};

/// Mode used when the `mode` attribute is absent.
const DEFAULT_MODE: u32 = 0o644;

/// The permission bits kiln manages (including setuid, setgid and sticky).
const MODE_MASK: u32 = 0o7777;

/// Provider for the `file` kind.
#[derive(Debug, Default, Clone, Copy)]
pub struct FileProvider;

impl FileProvider {
    /// A new `file` provider; it holds no state.
    pub fn new() -> Self {
        Self
    }
}

impl Provider for FileProvider {
    fn kinds(&self) -> &'static [&'static str] {
        &["file"]
    }

    fn observe<'a>(
        &'a self,
        ctx: &'a ProviderContext,
        recorded: &'a Recorded,
    ) -> ProviderFuture<'a, Observation> {
        Box::pin(async move {
            let expected = Expected::from_recorded(ctx, recorded)?;
            blocking(move || expected.observe()).await
        })
    }

    fn create<'a>(
        &'a self,
        ctx: &'a ProviderContext,
        kind: &'a str,
        _address: &'a str,
        desired: &'a Attributes,
    ) -> ProviderFuture<'a, Applied> {
        Box::pin(async move {
            if kind != "file" {
                return Err(ProviderError::UnknownKind { kind: kind.into() });
            }
            let spec = FileSpec::from_attributes(ctx, desired)?;
            blocking(move || spec.write()).await
        })
    }

    fn update<'a>(
        &'a self,
        ctx: &'a ProviderContext,
        _previous: &'a Recorded,
        desired: &'a Attributes,
    ) -> ProviderFuture<'a, Applied> {
        // A changed `path` forces replacement, so the planner never sends one here. If it
        // happens anyway we write the desired file and leave the old one alone: removing it
        // could delete the new file when both paths name the same file via different spellings.
        Box::pin(async move {
            let spec = FileSpec::from_attributes(ctx, desired)?;
            blocking(move || spec.write()).await
        })
    }

    fn delete<'a>(
        &'a self,
        ctx: &'a ProviderContext,
        recorded: &'a Recorded,
    ) -> ProviderFuture<'a, ()> {
        Box::pin(async move {
            let path = resolve_path(&ctx.root, required_str(&recorded.attributes, "path")?);
            blocking(move || remove(&path)).await
        })
    }
}

/// Runs blocking filesystem work off the async runtime.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ProviderError> + Send + 'static,
) -> Result<T, ProviderError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| failed(format!("file operation did not complete: {e}")))?
}

/// The desired state of a file, from its attributes.
#[derive(Debug)]
struct FileSpec {
    path: PathBuf,
    content: String,
    mode: u32,
}

impl FileSpec {
    fn from_attributes(ctx: &ProviderContext, attrs: &Attributes) -> Result<Self, ProviderError> {
        let path = resolve_path(&ctx.root, required_str(attrs, "path")?);
        let content = required_str(attrs, "content")?.to_owned();
        let mode = match optional_str(attrs, "mode")? {
            Some(text) => parse_mode(text)?,
            None => DEFAULT_MODE,
        };
        Ok(Self {
            path,
            content,
            mode,
        })
    }

    /// Writes the file (creating parent directories) and reports what was written.
    fn write(self) -> Result<Applied, ProviderError> {
        if let Some(parent) = self.path.parent() {
            fs::create_dir_all(parent).map_err(|e| {
                failed(format!("cannot create directory {}: {e}", parent.display()))
            })?;
        }
        write_atomically(&self.path, self.content.as_bytes(), self.mode)?;
        let sha256 = hex::encode(Sha256::digest(self.content.as_bytes()));
        let mut outputs = Attributes::new();
        outputs.insert("path".into(), Value::from(self.path.to_string_lossy()));
        outputs.insert("sha256".into(), Value::from(sha256.clone()));
        outputs.insert("size".into(), Value::from(self.content.len()));
        Ok(Applied {
            outputs,
            private: json!({ "sha256": sha256, "mode": format_mode(self.mode) }),
        })
    }
}

/// What a recorded file should look like, for drift detection.
#[derive(Debug)]
struct Expected {
    path: PathBuf,
    /// `None` when the state carries no digest to compare with (then content is not checked).
    sha256: Option<String>,
    mode: u32,
}

impl Expected {
    fn from_recorded(ctx: &ProviderContext, recorded: &Recorded) -> Result<Self, ProviderError> {
        let path = resolve_path(&ctx.root, required_str(&recorded.attributes, "path")?);
        // `private` is authoritative; the `sha256` output is the same value and serves as a
        // fallback for state whose private data was lost.
        let sha256 = private_str(&recorded.private, "sha256")
            .or_else(|| recorded.outputs.get("sha256").and_then(Value::as_str))
            .map(str::to_owned);
        let mode_text = private_str(&recorded.private, "mode")
            .or_else(|| recorded.attributes.get("mode").and_then(Value::as_str));
        let mode = match mode_text {
            Some(text) => parse_mode(text)?,
            None => DEFAULT_MODE,
        };
        Ok(Self { path, sha256, mode })
    }

    /// Compares the file on disk with what was recorded.
    fn observe(self) -> Result<Observation, ProviderError> {
        let metadata = match fs::metadata(&self.path) {
            Ok(metadata) => metadata,
            // A parent that became a plain file also means the file is gone.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                return Ok(Observation::Absent);
            }
            Err(e) => return Err(unreadable(&self.path, &e)),
        };
        if metadata.is_dir() {
            let reason = "path is now a directory, not a file".to_owned();
            let drift = vec![Drift {
                attribute: "content".into(),
                reason,
            }];
            return Ok(Observation::Present { drift });
        }
        let mut drift = Vec::new();
        if let Some(expected) = &self.sha256 {
            let actual = hash_file(&self.path).map_err(|e| unreadable(&self.path, &e))?;
            if !actual.eq_ignore_ascii_case(expected) {
                drift.push(Drift {
                    attribute: "content".into(),
                    reason: "content changed outside kiln".into(),
                });
            }
        }
        let mode = metadata.permissions().mode() & MODE_MASK;
        if mode != self.mode {
            drift.push(Drift {
                attribute: "mode".into(),
                reason: format!("mode changed outside kiln (now {})", format_mode(mode)),
            });
        }
        Ok(Observation::Present { drift })
    }
}

fn private_str<'a>(private: &'a Value, key: &str) -> Option<&'a str> {
    private.get(key).and_then(Value::as_str)
}

fn unreadable(path: &Path, error: &io::Error) -> ProviderError {
    failed(format!("cannot read {}: {error}", path.display()))
}

/// Hex sha256 of a file's bytes, streamed so large files are not loaded whole.
fn hash_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// Parses an octal mode such as `"0644"` or `"755"`.
fn parse_mode(text: &str) -> Result<u32, ProviderError> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|mode| *mode <= MODE_MASK && !digits.is_empty())
        .ok_or_else(|| {
            failed(format!(
                "attribute `mode` must be an octal permission such as \"0644\", not {text:?}"
            ))
        })
}

fn format_mode(mode: u32) -> String {
    format!("{mode:04o}")
}

/// Distinguishes temporary files written by concurrent writes within one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` with `content` so that readers see either the old or the new file.
fn write_atomically(path: &Path, content: &[u8], mode: u32) -> Result<(), ProviderError> {
    let (temp_path, file) = create_temp_beside(path)?;
    let result = fill_temp(file, content, mode)
        .and_then(|()| fs::rename(&temp_path, path))
        .map_err(|e| failed(format!("cannot write {}: {e}", path.display())));
    if result.is_err() {
        // Best effort: the error that matters is the one already being returned.
        let _ = fs::remove_file(&temp_path);
        return result;
    }
    sync_parent(path)
}

/// Opens a new, exclusive temporary file in the same directory as `path`, so the final rename
/// stays within one filesystem and is atomic.
fn create_temp_beside(path: &Path) -> Result<(PathBuf, File), ProviderError> {
    let name = path
        .file_name()
        .ok_or_else(|| failed(format!("{} does not name a file", path.display())))?;
    let mut last_error = None;
    // A leftover from a crashed run may hold a name; a few fresh names get past it.
    for _ in 0..16 {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".kiln-tmp.{}.{n}", std::process::id()));
        let temp_path = path.with_file_name(temp_name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp_path)
        {
            Ok(file) => return Ok((temp_path, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_error = Some(e),
            Err(e) => return Err(failed(format!("cannot write {}: {e}", path.display()))),
        }
    }
    let detail = last_error.map_or_else(String::new, |e| format!(": {e}"));
    Err(failed(format!(
        "cannot create a temporary file beside {}{detail}",
        path.display()
    )))
}

/// Writes the content, sets the final mode and flushes it to disk before the rename.
fn fill_temp(mut file: File, content: &[u8], mode: u32) -> io::Result<()> {
    file.write_all(content)?;
    // Set on the open file (not subject to the umask) so the renamed file appears with its
    // final mode at once.
    file.set_permissions(Permissions::from_mode(mode))?;
    file.sync_all()
}

/// Makes the rename durable by syncing the directory entry.
fn sync_parent(path: &Path) -> Result<(), ProviderError> {
    let Some(parent) = path.parent() else {
        return Ok(());
    };
    match File::open(parent).and_then(|dir| dir.sync_all()) {
        Ok(()) => Ok(()),
        // Some filesystems cannot fsync a directory; the new file is in place regardless.
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => Ok(()),
        Err(e) => Err(partial(format!(
            "wrote {} but could not sync its directory: {e}",
            path.display()
        ))),
    }
}

/// Removes the file; a file that is already gone counts as removed.
fn remove(path: &Path) -> Result<(), ProviderError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(failed(format!("cannot remove {}: {e}", path.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_format() {
        assert_eq!(parse_mode("0644").ok(), Some(0o644));
        assert_eq!(parse_mode("755").ok(), Some(0o755));
        assert_eq!(parse_mode("04755").ok(), Some(0o4755));
        assert!(parse_mode("0999").is_err());
        assert!(parse_mode("").is_err());
        assert!(parse_mode("017777").is_err());
        assert_eq!(format_mode(0o600), "0600");
    }
}
