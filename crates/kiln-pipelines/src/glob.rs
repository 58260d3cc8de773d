//! Glob patterns over a directory tree (`*`, `?`, `**`, `!` negation), as `hashFiles`,
//! `upload-artifact` and `cache` use them, and `hashFiles` itself.
//!
//! `hashFiles` follows GitHub's implementation: the matched files (regular files under the
//! workspace) in sorted order, each hashed with SHA-256, and those digests hashed again; no
//! match gives the empty string.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Whether `path` (relative, `/`-separated) matches the `pattern` (relative, `/`-separated).
pub fn matches(pattern: &str, path: &str) -> bool {
    let pat: Vec<&str> = pattern
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match_segments(&pat, &segs)
}

fn match_segments(pat: &[&str], segs: &[&str]) -> bool {
    match pat.split_first() {
        None => segs.is_empty(),
        Some((&"**", rest)) => (0..=segs.len()).any(|i| match_segments(rest, &segs[i..])),
        Some((p, rest)) => match segs.split_first() {
            Some((s, srest)) => {
                match_segment(p.as_bytes(), s.as_bytes()) && match_segments(rest, srest)
            }
            None => false,
        },
    }
}

fn match_segment(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| match_segment(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && match_segment(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && match_segment(rest, &s[1..]),
    }
}

/// Every regular file under `root` (relative paths, `/`-separated), skipping `.git`.
pub fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(root.join(&rel)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name == ".git" {
                continue;
            }
            let child = rel.join(&name);
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(child),
                Ok(t) if t.is_file() || t.is_symlink() => {
                    out.push(child.to_string_lossy().replace('\\', "/"));
                }
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// Files under `root` selected by `patterns` (later patterns win; `!p` excludes), sorted.
pub fn select(root: &Path, patterns: &[String]) -> Vec<String> {
    let patterns: Vec<(bool, String)> = patterns
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .map(|p| match p.strip_prefix('!') {
            Some(rest) => (false, normalise(root, rest)),
            None => (true, normalise(root, p)),
        })
        .collect();
    walk(root)
        .into_iter()
        .filter(|file| {
            let mut selected = false;
            for (include, pat) in &patterns {
                // A pattern naming a directory selects everything below it, as GitHub's globber does.
                if matches(pat, file) || matches(&format!("{pat}/**"), file) {
                    selected = *include;
                }
            }
            selected
        })
        .collect()
}

/// Patterns may be absolute paths under the root; make them relative.
fn normalise(root: &Path, pattern: &str) -> String {
    let root = root.to_string_lossy();
    pattern
        .strip_prefix(root.as_ref())
        .unwrap_or(pattern)
        .trim_start_matches("./")
        .trim_start_matches('/')
        .to_owned()
}

/// Whether `@actions/glob` with `excludeHiddenFiles` (upload-artifact's default since v4.4)
/// skips `file`, selected under `root` by `patterns`: its globber walks from each include
/// pattern's search path (the literal segments before the first wildcard) and skips an item
/// whose name starts with `.`, the search path itself included, never the directories above
/// it. So `dist/` skips `dist/.env` and `dist/.cache/x`, `.env` skips itself, and
/// `.github/workflows/ci.yml` keeps the file (only its own name is looked at).
pub fn hidden_from_search_paths(root: &Path, patterns: &[String], file: &str) -> bool {
    let segs: Vec<&str> = file.split('/').filter(|s| !s.is_empty()).collect();
    let mut found = false;
    for p in patterns.iter().map(|p| p.trim()) {
        if p.is_empty() || p.starts_with('!') {
            continue;
        }
        let pat = normalise(root, p);
        if !(matches(&pat, file) || matches(&format!("{pat}/**"), file)) {
            continue;
        }
        found = true;
        let literal = pat
            .split('/')
            .filter(|s| !s.is_empty() && *s != ".")
            .take_while(|s| !s.contains(['*', '?', '[']))
            .count();
        // Components above the search path's own name are not looked at.
        let unchecked = literal.saturating_sub(1).min(segs.len());
        if !segs[unchecked..].iter().any(|s| s.starts_with('.')) {
            return false;
        }
    }
    found
}

/// GitHub's `hashFiles`.
pub fn hash_files(root: &Path, patterns: &[String]) -> std::io::Result<String> {
    let files = select(root, patterns);
    if files.is_empty() {
        return Ok(String::new());
    }
    let mut all = Sha256::new();
    for file in files {
        let bytes = std::fs::read(root.join(&file))?;
        all.update(Sha256::digest(&bytes));
    }
    Ok(hex::encode(all.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_files_from_the_search_path_down() {
        let root = Path::new("/w");
        let hidden = |pats: &[&str], f: &str| {
            let pats: Vec<String> = pats.iter().map(|p| (*p).to_owned()).collect();
            hidden_from_search_paths(root, &pats, f)
        };
        assert!(hidden(&["dist/"], "dist/.env"));
        assert!(hidden(&["dist"], "dist/.cache/x"));
        assert!(!hidden(&["dist/"], "dist/a.txt"));
        assert!(hidden(&[".env"], ".env"));
        assert!(hidden(&[".hidden/**"], ".hidden/x"));
        assert!(!hidden(
            &[".github/workflows/ci.yml"],
            ".github/workflows/ci.yml"
        ));
        assert!(hidden(&["**/*.txt"], ".a/b.txt"));
        assert!(!hidden(&["/w/out/*.txt"], "out/b.txt"));
        // Kept when any include pattern reaches it without a hidden name on the way.
        assert!(!hidden(&["**/*.txt", ".a/b.txt"], ".a/b.txt"));
    }

    #[test]
    fn patterns() {
        assert!(matches("**/*.rs", "src/lib.rs"));
        assert!(matches("**/*.rs", "lib.rs"));
        assert!(matches("src/*.rs", "src/a.rs"));
        assert!(!matches("src/*.rs", "src/x/a.rs"));
        assert!(matches("a?c", "abc"));
        assert!(matches("dist/**", "dist/x/y"));
    }
}
