//! Reading files for a load: the only way this crate sees the file system is the
//! [`FileSystem`] trait, which the binary implements over `std::fs` and tests over a map.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// What loading a stack needs from the outside world.
pub trait FileSystem {
    /// The whole text of a UTF-8 file.
    fn read_to_string(&self, path: &Path) -> std::io::Result<String>;
    /// True when `path` is a directory.
    fn is_dir(&self, path: &Path) -> bool;
    /// True when `program` can be run from `dir`: a path (with a `/`) to an executable file, or a
    /// name found on `PATH`. The default says yes, for trees that hold no programs.
    fn program_exists(&self, program: &str, dir: &Path) -> bool {
        let _ = (program, dir);
        true
    }
    /// True when a user of this name exists on the machine. The default says yes.
    fn user_exists(&self, name: &str) -> bool {
        let _ = name;
        true
    }
    /// The content digest (`sha256:...`) of the tree under `dir`, which becomes a service's
    /// `release_id` attribute so that a change of its code is a change of the declared state.
    /// `None` when the file system cannot tell (the default, and in-memory trees).
    fn tree_digest(&self, dir: &Path) -> Option<std::io::Result<String>> {
        let _ = dir;
        None
    }
    /// The release (`sha256:...`) made of `artifact` from the newest successful run of
    /// `pipeline` recorded for the stack in `stack_dir`; `None` when the file system cannot
    /// tell (the default, and in-memory trees).
    fn artifact_release(
        &self,
        stack_dir: &Path,
        pipeline: &str,
        artifact: &str,
    ) -> Option<std::io::Result<String>> {
        let _ = (stack_dir, pipeline, artifact);
        None
    }
    /// The release (`sha256:...`) recorded as promoted to `environment` for the service at
    /// `address` (`environments.ENV.services.NAME`) in the stack in `stack_dir`: `Some(Ok(None))`
    /// when none has been promoted yet; `None` when the file system cannot tell (the default,
    /// and in-memory trees).
    fn promoted_release(
        &self,
        stack_dir: &Path,
        environment: &str,
        address: &str,
    ) -> Option<std::io::Result<Option<String>>> {
        let _ = (stack_dir, environment, address);
        None
    }
}

/// An in-memory file tree, for tests and for tools that hold files already.
#[derive(Debug, Default, Clone)]
pub struct MemoryFs {
    files: BTreeMap<PathBuf, String>,
}

impl MemoryFs {
    /// An empty tree.
    pub fn new() -> MemoryFs {
        MemoryFs::default()
    }

    /// Adds (or replaces) a file.
    pub fn add(&mut self, path: impl Into<PathBuf>, text: impl Into<String>) -> &mut MemoryFs {
        self.files.insert(normalize(&path.into()), text.into());
        self
    }
}

impl FileSystem for MemoryFs {
    fn read_to_string(&self, path: &Path) -> std::io::Result<String> {
        self.files.get(&normalize(path)).cloned().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory")
        })
    }

    fn is_dir(&self, path: &Path) -> bool {
        let dir = normalize(path);
        self.files.keys().any(|f| f.starts_with(&dir) && *f != dir)
    }
}

/// Lexically removes `.` and `..` so that the same file has one name (no I/O: symlinks are not
/// resolved, which is what a user reading the paths would expect).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}
