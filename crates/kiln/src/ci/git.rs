//! What a run asks git before it starts: the commit, its ref, the working tree's state and
//! the facts of GitHub's push payload. Each question is one `git` process, and the questions
//! that do not wait on each other's answers are asked side by side: a `kiln ci run` of one
//! trivial step used to spend most of its time starting twelve `git` processes one after
//! another.

use std::path::Path;

/// Runs `git` in the repository and returns its trimmed stdout, or None when it fails.
pub(crate) fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// [`git`] without blocking the task, so that several run at once.
pub(crate) async fn git_async(dir: &Path, args: &[&str]) -> Option<String> {
    let out = tokio::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .await
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// What `kiln ci run` learns from git besides the commit itself (which [`Objects`] resolves
/// while it reads the workflows): none of these questions waits on another's answer, nor on
/// the commit's sha, so all are asked at once.
#[derive(Debug)]
pub(super) struct Start {
    /// The full ref the revision is on (`refs/heads/main`), when it is on one.
    pub(super) git_ref: Option<String>,
    /// Entries `git status` lists in the working tree (kiln's own `.kiln/` aside); asked only
    /// for `HEAD`, the one revision a working tree can differ from unknowingly.
    pub(super) uncommitted: Option<usize>,
    pub(super) branches: Branches,
    /// `github.repository`, from the `origin` remote's URL.
    pub(super) repository: Repository,
}

impl Start {
    pub(super) async fn read(dir: &Path, rev: &str) -> Start {
        let (git_ref, uncommitted, branches, repository) = tokio::join!(
            ref_of(dir, rev),
            async {
                if rev != "HEAD" {
                    return None;
                }
                let status = git_async(
                    dir,
                    &["status", "--porcelain", "--", ".", ":(exclude).kiln"],
                )
                .await?;
                Some(status.lines().count())
            },
            Branches::read(dir),
            Repository::read(dir),
        );
        Start {
            git_ref,
            uncommitted,
            branches,
            repository,
        }
    }
}

/// One `git cat-file --batch --follow-symlinks` process, asked for objects by name one after
/// another: the commit a revision names, then the files of that commit a load reads. One
/// process for what took a `git rev-parse`, a `git archive` and a `tar` writing the files
/// into a scratch directory to be read back and removed.
pub(crate) struct Objects {
    child: std::process::Child,
    input: Option<std::process::ChildStdin>,
    output: std::io::BufReader<std::process::ChildStdout>,
}

impl Objects {
    pub(crate) fn open(dir: &Path) -> std::io::Result<Objects> {
        use std::process::Stdio;
        let mut child = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["cat-file", "--batch", "--follow-symlinks"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let (Some(input), Some(output)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            child.wait()?;
            return Err(std::io::Error::other(
                "git cat-file started without its pipes",
            ));
        };
        Ok(Objects {
            child,
            input: Some(input),
            output: std::io::BufReader::new(output),
        })
    }

    /// The full sha of the commit `rev` names (`git rev-parse --verify REV^{commit}`'s
    /// answer); None when it names none.
    pub(crate) fn commit(&mut self, rev: &str) -> std::io::Result<Option<String>> {
        let found = self.get(&format!("{rev}^{{commit}}"))?;
        Ok(found.filter(|o| o.kind == "commit").map(|o| o.oid))
    }

    /// The contents of file `path` in commit `sha`, a symbolic link inside the tree followed;
    /// None when the commit has no such file (or the link leads out of the tree).
    pub(crate) fn file(&mut self, sha: &str, path: &str) -> std::io::Result<Option<Vec<u8>>> {
        let path = path.strip_prefix("./").unwrap_or(path);
        let found = self.get(&format!("{sha}:{path}"))?;
        Ok(found.filter(|o| o.kind == "blob").map(|o| o.data))
    }

    /// One question and its answer. Names are lines on git's stdin, so one with a line break
    /// names nothing.
    fn get(&mut self, name: &str) -> std::io::Result<Option<Object>> {
        use std::io::{BufRead, Read, Write};
        if name.contains(['\n', '\r']) {
            return Ok(None);
        }
        let Some(input) = self.input.as_mut() else {
            return Err(std::io::Error::other("git cat-file was closed"));
        };
        input.write_all(format!("{name}\n").as_bytes())?;
        input.flush()?;
        let mut header = String::new();
        if self.output.read_line(&mut header)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "git cat-file ended",
            ));
        }
        let answer = Answer::parse(header.trim_end_matches('\n'));
        let Some(size) = answer.payload() else {
            return Ok(None);
        };
        // The payload, then a line break.
        let mut data = Vec::new();
        let read = (&mut self.output).take(size + 1).read_to_end(&mut data)?;
        if u64::try_from(read).ok() != Some(size + 1) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "git cat-file's answer was cut short",
            ));
        }
        data.pop();
        Ok(match answer {
            Answer::Object { oid, kind, .. } => Some(Object { oid, kind, data }),
            Answer::Unusable { .. } | Answer::Missing => None,
        })
    }
}

impl Drop for Objects {
    fn drop(&mut self) {
        // Its stdin closed, git ends at once.
        drop(self.input.take());
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
struct Object {
    oid: String,
    kind: String,
    data: Vec<u8>,
}

/// The header line of a `git cat-file --batch --follow-symlinks` answer.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// `<oid> <type> <size>`, the object's contents follow.
    Object {
        oid: String,
        kind: String,
        size: u64,
    },
    /// `symlink`, `dangling`, `loop` or `notdir` `<size>`: a path that leads nowhere in the
    /// tree; what follows says where.
    Unusable { size: u64 },
    /// `<name> missing` or `<name> ambiguous`, or anything else: nothing follows.
    Missing,
}

impl Answer {
    fn parse(header: &str) -> Answer {
        let fields: Vec<&str> = header.split(' ').collect();
        match fields.as_slice() {
            [.., "missing" | "ambiguous"] => Answer::Missing,
            ["symlink" | "dangling" | "loop" | "notdir", size] => match size.parse() {
                Ok(size) => Answer::Unusable { size },
                Err(_) => Answer::Missing,
            },
            [oid, kind, size] => match size.parse() {
                Ok(size) => Answer::Object {
                    oid: (*oid).to_owned(),
                    kind: (*kind).to_owned(),
                    size,
                },
                Err(_) => Answer::Missing,
            },
            _ => Answer::Missing,
        }
    }

    /// How many bytes follow the header (before the closing line break).
    fn payload(&self) -> Option<u64> {
        match self {
            Answer::Object { size, .. } | Answer::Unusable { size } => Some(*size),
            Answer::Missing => None,
        }
    }
}

/// The pushed commit's facts and files from one `git log`, asked with the revision's name so
/// that it runs beside the question that resolves it; `sha` is the commit it showed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Pushed {
    pub(crate) sha: String,
    pub(crate) commit: Commit,
    pub(crate) changes: Changes,
}

impl Pushed {
    /// What [`Commit::read`] and `git diff-tree --root -r` say of `rev`, from one process: the
    /// message ends at a NUL, then come the files against the first parent (every file,
    /// added, for a root commit; none for a merge, as `git diff-tree` without `-m`).
    pub(crate) async fn read(dir: &Path, rev: &str) -> Pushed {
        let commit = format!("{rev}^{{commit}}");
        let listed = git_async(
            dir,
            &[
                "log",
                "-1",
                "--no-walk",
                "--no-color",
                "--root",
                "--no-renames",
                "--name-status",
                "--format=%H%n%cI%n%an%n%ae%n%T%n%P%n%B%x00",
                commit.as_str(),
                "--",
            ],
        )
        .await
        .unwrap_or_default();
        Pushed::parse(&listed)
    }

    fn parse(listed: &str) -> Pushed {
        let (shown, files) = listed.split_once('\0').unwrap_or((listed, ""));
        let (sha, shown) = shown.trim().split_once('\n').unwrap_or((shown.trim(), ""));
        Pushed {
            sha: sha.to_owned(),
            commit: Commit::parse(shown.trim()),
            changes: Changes::parse(files),
        }
    }
}

/// The full ref `rev` is on: the branch `HEAD` points at, or the full name of a branch or tag.
async fn ref_of(dir: &Path, rev: &str) -> Option<String> {
    if rev == "HEAD" {
        git_async(dir, &["symbolic-ref", "-q", "HEAD"]).await
    } else {
        git_async(dir, &["rev-parse", "--symbolic-full-name", rev])
            .await
            .filter(|r| !r.is_empty())
    }
}

/// The refs that decide the repository's default branch, each with the commit it names.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Branches {
    /// The branch the clone's `origin/HEAD` points at, and its commit.
    origin_head: Option<(String, String)>,
    /// The commit of `main`, when there is one.
    main: Option<String>,
    master: Option<String>,
}

impl Branches {
    /// One `git for-each-ref` for all three refs.
    pub(crate) async fn read(dir: &Path) -> Branches {
        let listed = git_async(
            dir,
            &[
                "for-each-ref",
                "--format=%(refname)%00%(symref)%00%(objectname)",
                "refs/remotes/origin/HEAD",
                "refs/heads/main",
                "refs/heads/master",
            ],
        )
        .await
        .unwrap_or_default();
        Branches::parse(&listed)
    }

    fn parse(listed: &str) -> Branches {
        let mut branches = Branches::default();
        for line in listed.lines() {
            let mut fields = line.split('\0');
            let name = fields.next().unwrap_or_default();
            let target = fields.next().unwrap_or_default();
            let commit = fields.next().unwrap_or_default().to_owned();
            match name {
                "refs/heads/main" => branches.main = Some(commit),
                "refs/heads/master" => branches.master = Some(commit),
                "refs/remotes/origin/HEAD" => {
                    branches.origin_head = target
                        .strip_prefix("refs/remotes/origin/")
                        .filter(|b| !b.is_empty())
                        .map(|b| (b.to_owned(), commit));
                }
                _ => {}
            }
        }
        branches
    }

    /// The repository's default branch, for `github.event.repository.default_branch`: what the
    /// clone's `origin/HEAD` names, else `main` or `master` when the repository has one, else
    /// the pushed branch. Workflows compare it with `github.ref` to deploy only from that
    /// branch, so guessing the pushed branch first would make every branch look like the
    /// default one.
    pub(crate) fn default_branch(&self, git_ref: &str) -> String {
        if let Some((branch, _)) = &self.origin_head {
            return branch.clone();
        }
        if self.main.is_some() {
            return "main".to_owned();
        }
        if self.master.is_some() {
            return "master".to_owned();
        }
        git_ref
            .strip_prefix("refs/heads/")
            .unwrap_or(git_ref)
            .to_owned()
    }

    /// The commit of the default branch (`origin/HEAD`'s, else `main`'s or `master`'s): the
    /// base a local pull request is opened against. None when the repository has none of them.
    pub(crate) fn default_commit(&self) -> Option<&str> {
        let commit = match &self.origin_head {
            Some((_, commit)) => Some(commit),
            None => self.main.as_ref().or(self.master.as_ref()),
        };
        commit.map(String::as_str).filter(|c| !c.is_empty())
    }
}

/// The tags and branches that point at the run's commit, from one `git for-each-ref`: a
/// `release` is the newest tag's, a tag push's `base_ref` the branch whose head it tags.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Pointing {
    /// Newest first.
    pub(crate) tags: Vec<Tag>,
    /// Branch names, local ones and the `origin` remote's (`main`, not `refs/heads/main`).
    pub(crate) branches: Vec<String>,
}

/// A tag of the run's commit.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Tag {
    pub(crate) name: String,
    /// When it was made: an annotated tag's own date, else its commit's.
    pub(crate) date: String,
    /// An annotated tag's message; empty for a lightweight tag.
    pub(crate) message: String,
}

impl Pointing {
    pub(crate) async fn read(dir: &Path, rev: &str) -> Pointing {
        let points_at = format!("--points-at={rev}^{{commit}}");
        let listed = git_async(
            dir,
            &[
                "for-each-ref",
                "--sort=-creatordate",
                points_at.as_str(),
                "--format=%(refname)%1f%(objecttype)%1f%(creatordate:iso-strict)%1f%(contents)%1e",
                "refs/tags",
                "refs/heads",
                "refs/remotes/origin",
            ],
        )
        .await
        .unwrap_or_default();
        Pointing::parse(&listed)
    }

    fn parse(listed: &str) -> Pointing {
        let mut pointing = Pointing::default();
        for record in listed.split('\x1e') {
            let mut fields = record.trim_start_matches('\n').split('\x1f');
            let name = fields.next().unwrap_or_default();
            let kind = fields.next().unwrap_or_default();
            let date = fields.next().unwrap_or_default();
            let contents = fields.next().unwrap_or_default();
            if let Some(tag) = name.strip_prefix("refs/tags/") {
                pointing.tags.push(Tag {
                    name: tag.to_owned(),
                    date: date.to_owned(),
                    message: if kind == "tag" {
                        contents.trim_end().to_owned()
                    } else {
                        String::new()
                    },
                });
                continue;
            }
            let branch = name
                .strip_prefix("refs/heads/")
                .or_else(|| name.strip_prefix("refs/remotes/origin/"))
                .filter(|b| *b != "HEAD");
            if let Some(branch) = branch
                && !pointing.branches.iter().any(|b| b == branch)
            {
                pointing.branches.push(branch.to_owned());
            }
        }
        pointing
    }

    /// The tag a run at `git_ref` is for: the one the ref names, else the newest.
    pub(crate) fn tag(&self, git_ref: &str) -> Option<&Tag> {
        let named = git_ref.strip_prefix("refs/tags/");
        named
            .and_then(|n| self.tags.iter().find(|t| t.name == n))
            .or_else(|| self.tags.first())
    }
}

/// Where a local pull request from the run's commit starts: the merge base with the default
/// branch, how many commits the head has past it and what they change, from three `git`
/// processes run together.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct PullBase {
    /// The merge base of the head and the default branch's commit.
    pub(crate) sha: Option<String>,
    /// Commits on the head that the default branch lacks.
    pub(crate) commits: u64,
    /// What the pull request changes (`git diff --shortstat`).
    pub(crate) diff: DiffStat,
}

/// `git diff --shortstat`'s figures.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DiffStat {
    pub(crate) files: u64,
    pub(crate) additions: u64,
    pub(crate) deletions: u64,
}

impl DiffStat {
    /// ` 2 files changed, 18 insertions(+), 3 deletions(-)`; a part with nothing is left out,
    /// and nothing at all for no change.
    fn parse(shortstat: &str) -> DiffStat {
        let mut stat = DiffStat::default();
        for part in shortstat.split(',') {
            let mut words = part.split_whitespace();
            let (Some(n), Some(what)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse() else { continue };
            if what.starts_with("file") {
                stat.files = n;
            } else if what.starts_with("insertion") {
                stat.additions = n;
            } else if what.starts_with("deletion") {
                stat.deletions = n;
            }
        }
        stat
    }
}

impl PullBase {
    pub(crate) async fn read(dir: &Path, base: &str, head: &str) -> PullBase {
        let (range, both) = (format!("{base}..{head}"), format!("{base}...{head}"));
        let (merge_base, count, stat) = (
            ["merge-base", base, head],
            ["rev-list", "--count", range.as_str()],
            ["diff", "--shortstat", both.as_str()],
        );
        let (sha, count, stat) = tokio::join!(
            git_async(dir, &merge_base),
            git_async(dir, &count),
            git_async(dir, &stat)
        );
        let sha = sha.filter(|s| !s.is_empty());
        // On the default branch itself, the pull request is its last commit.
        let stat = if sha.as_deref() == Some(head) {
            let parent = format!("{head}^");
            git_async(dir, &["diff", "--shortstat", parent.as_str(), head]).await
        } else {
            stat
        };
        PullBase {
            sha,
            commits: count.and_then(|c| c.parse().ok()).unwrap_or(0),
            diff: DiffStat::parse(&stat.unwrap_or_default()),
        }
    }
}

/// One commit as the push payload shows it, from one `git show`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Commit {
    pub(crate) timestamp: String,
    pub(crate) author_name: String,
    pub(crate) author_email: String,
    pub(crate) tree: String,
    /// The first parent; None for a root commit.
    pub(crate) parent: Option<String>,
    pub(crate) message: String,
}

impl Commit {
    pub(crate) async fn read(dir: &Path, sha: &str) -> Commit {
        let shown = git_async(
            dir,
            &["show", "-s", "--format=%cI%n%an%n%ae%n%T%n%P%n%B", sha],
        )
        .await
        .unwrap_or_default();
        Commit::parse(&shown)
    }

    fn parse(shown: &str) -> Commit {
        let mut lines = shown.lines();
        let mut next = || lines.next().unwrap_or_default().to_owned();
        let timestamp = next();
        let author_name = next();
        let author_email = next();
        let tree = next();
        let parent = next().split_whitespace().next().map(str::to_owned);
        let message = lines.collect::<Vec<_>>().join("\n");
        Commit {
            timestamp,
            author_name,
            author_email,
            tree,
            parent,
            message,
        }
    }
}

/// The files a push changed, as GitHub's push payload sorts them (`added`, `removed`,
/// `modified`). A rename is the old path removed and the new one added.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Changes {
    pub(crate) added: Vec<String>,
    pub(crate) removed: Vec<String>,
    pub(crate) modified: Vec<String>,
}

impl Changes {
    /// Reads `git diff --name-status --no-renames` output: `A`, `D`, and anything else
    /// (`M`, a type change `T`) as modified.
    pub(crate) fn parse(listed: &str) -> Changes {
        let mut changes = Changes::default();
        for line in listed.lines() {
            let Some((status, path)) = line.split_once('\t') else {
                continue;
            };
            let list = match status {
                "A" => &mut changes.added,
                "D" => &mut changes.removed,
                _ => &mut changes.modified,
            };
            list.push(path.to_owned());
        }
        changes
    }

    /// A push that names its files without saying what happened to them.
    pub(crate) fn modified(files: Vec<String>) -> Changes {
        Changes {
            modified: files,
            ..Changes::default()
        }
    }

    /// Every changed path: what `on.push.paths` filters look at.
    pub(crate) fn paths(&self) -> Vec<String> {
        let all = self.added.iter().chain(&self.removed).chain(&self.modified);
        all.cloned().collect()
    }
}

/// What a push payload needs from git besides what the push itself says.
#[derive(Debug, Clone)]
pub(crate) struct PushFacts {
    pub(crate) head: Commit,
    pub(crate) branches: Branches,
    pub(crate) repository: Repository,
}

impl PushFacts {
    pub(crate) async fn read(dir: &Path, after: &str) -> PushFacts {
        let (head, branches, repository) = tokio::join!(
            Commit::read(dir, after),
            Branches::read(dir),
            Repository::read(dir)
        );
        PushFacts {
            head,
            branches,
            repository,
        }
    }
}

/// GitHub's `owner/name` of the repository a run is in (`github.repository`,
/// `github.repository_owner`, the payload's `repository`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Repository {
    pub(crate) owner: String,
    pub(crate) name: String,
}

impl Repository {
    /// From the `origin` remote's URL, as nektos/act does: a workflow that guards its
    /// publishing jobs with `if: github.repository == 'owner/name'` runs them in a clone of
    /// that repository. Without such a remote, `local/<directory name>`.
    pub(crate) async fn read(dir: &Path) -> Repository {
        let url = git_async(dir, &["config", "--get", "remote.origin.url"]).await;
        url.as_deref()
            .and_then(Repository::of_url)
            .unwrap_or_else(|| Repository::local(dir))
    }

    /// `local/<directory name>`: a repository with no hosted origin.
    pub(crate) fn local(dir: &Path) -> Repository {
        let name = std::fs::canonicalize(dir)
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "repo".to_owned());
        Repository {
            owner: "local".to_owned(),
            name,
        }
    }

    /// The last two segments of a hosted remote's path: `https://github.com/o/n.git`,
    /// `git@github.com:o/n.git`, `ssh://git@host:22/o/n`. None for a path on this machine
    /// (`/srv/git/n.git`, `../n`, `file://...`), which names no owner.
    pub(crate) fn of_url(url: &str) -> Option<Repository> {
        let url = url.trim();
        let path = match url.split_once("://") {
            Some(("file", _)) => return None,
            Some((_, rest)) => rest.split_once('/')?.1,
            // scp-like `[user@]host:path`; a colon after a slash is part of a local path.
            None => match url.split_once(':') {
                Some((host, path)) if !host.is_empty() && !host.contains('/') => path,
                _ => return None,
            },
        };
        let path = path.trim_end_matches('/');
        let path = path.strip_suffix(".git").unwrap_or(path);
        let mut segments = path.rsplit('/').filter(|s| !s.is_empty());
        let name = segments.next()?;
        let owner = segments.next()?;
        Some(Repository {
            owner: owner.to_owned(),
            name: name.to_owned(),
        })
    }

    /// `owner/name`.
    pub(crate) fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branches_prefer_origin_head_then_main_then_master_then_the_pushed_branch() {
        let listed =
            "refs/heads/main\0\0a1\nrefs/remotes/origin/HEAD\0refs/remotes/origin/trunk\0b2";
        let all = Branches::parse(listed);
        assert_eq!(all.default_branch("refs/heads/x"), "trunk");
        assert_eq!(all.default_commit(), Some("b2"));
        let local = Branches::parse("refs/heads/main\0\0a1\nrefs/heads/master\0\0c3");
        assert_eq!(local.default_branch("refs/heads/x"), "main");
        assert_eq!(local.default_commit(), Some("a1"));
        let old = Branches::parse("refs/heads/master\0\0c3");
        assert_eq!(old.default_branch("refs/heads/x"), "master");
        assert_eq!(old.default_commit(), Some("c3"));
        let none = Branches::parse("");
        assert_eq!(none.default_branch("refs/heads/feature/a"), "feature/a");
        assert_eq!(none.default_commit(), None);
    }

    #[test]
    fn a_hosted_remote_names_owner_and_repository() {
        let of = |url: &str| Repository::of_url(url).map(|r| r.full_name());
        for url in [
            "https://github.com/acme/widgets.git",
            "https://github.com/acme/widgets",
            "https://github.com/acme/widgets/",
            "git@github.com:acme/widgets.git",
            "github.com:acme/widgets",
            "ssh://git@github.example.com:2222/acme/widgets.git",
            "https://gitlab.example.com/group/acme/widgets.git",
        ] {
            assert_eq!(of(url).as_deref(), Some("acme/widgets"), "{url}");
        }
        for url in [
            "/srv/git/widgets.git",
            "../widgets",
            "file:///srv/git/acme/widgets.git",
            "https://github.com/widgets",
            "git@github.com:widgets.git",
            "",
        ] {
            assert_eq!(of(url), None, "{url}");
        }
    }

    #[test]
    fn a_commit_is_read_from_one_show() {
        let shown = "2026-11-27T09:55:27Z\nAda\nada@example.com\n4b825dc6\np1 p2\nsubject\n\nbody";
        let commit = Commit::parse(shown);
        assert_eq!(commit.timestamp, "2026-11-27T09:55:27Z");
        assert_eq!(commit.author_name, "Ada");
        assert_eq!(commit.author_email, "ada@example.com");
        assert_eq!(commit.tree, "4b825dc6");
        assert_eq!(commit.parent.as_deref(), Some("p1"), "the first parent");
        assert_eq!(commit.message, "subject\n\nbody");
        // A root commit with an empty message: git's output ends at the tree once trimmed.
        let root = Commit::parse("2026-11-27T09:55:27Z\nAda\nada@example.com\n4b825dc6");
        assert_eq!(root.parent, None);
        assert_eq!(root.message, "");
    }

    /// The facts read from a real repository: a root commit, then a second one on `main`.
    #[tokio::test]
    async fn push_facts_come_from_the_repository() {
        let repo = tempfile::tempdir().expect("temp dir");
        let run = |args: &[&str]| {
            let ok = std::process::Command::new("git")
                .arg("-C")
                .arg(repo.path())
                .args(args)
                .env("GIT_AUTHOR_NAME", "Ada")
                .env("GIT_AUTHOR_EMAIL", "ada@example.com")
                .env("GIT_COMMITTER_NAME", "Ada")
                .env("GIT_COMMITTER_EMAIL", "ada@example.com")
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "git {args:?}");
        };
        run(&["init", "-q", "-b", "main"]);
        std::fs::write(repo.path().join("a"), "1").expect("write");
        run(&["add", "-A"]);
        run(&["commit", "-qm", "first"]);
        std::fs::write(repo.path().join("b"), "2").expect("write");
        run(&["add", "-A"]);
        run(&["commit", "-qm", "second\n\nwith a body"]);
        let head = git(repo.path(), &["rev-parse", "HEAD"]).expect("head");
        let first = git(repo.path(), &["rev-parse", "HEAD^"]).expect("parent");
        let tree = git(repo.path(), &["rev-parse", "HEAD^{tree}"]).expect("tree");

        let facts = PushFacts::read(repo.path(), &head).await;
        assert_eq!(facts.head.parent.as_deref(), Some(first.as_str()));
        assert_eq!(facts.head.tree, tree);
        assert_eq!(facts.head.message, "second\n\nwith a body");
        assert_eq!(facts.head.author_name, "Ada");
        assert_eq!(facts.branches.default_branch("refs/heads/other"), "main");
        // The root commit's files are added, as are a later commit's new ones.
        assert_eq!(Pushed::read(repo.path(), &head).await.changes.added, ["b"]);
        let root = Pushed::read(repo.path(), &first).await.changes;
        assert_eq!(
            (root.added, root.removed, root.modified),
            (vec!["a".to_owned()], vec![], vec![])
        );
        std::fs::write(repo.path().join("a"), "changed").expect("write");
        std::fs::rename(repo.path().join("b"), repo.path().join("c")).expect("rename");
        run(&["add", "-A"]);
        run(&["commit", "-qm", "third"]);
        let third = git(repo.path(), &["rev-parse", "HEAD"]).expect("third");
        let changes = Pushed::read(repo.path(), &third).await.changes;
        assert_eq!(changes.modified, ["a"]);
        assert_eq!(
            (changes.added, changes.removed),
            (vec!["c".to_owned()], vec!["b".to_owned()])
        );
        run(&["reset", "-q", "--hard", &head]);

        let start = Start::read(repo.path(), "HEAD").await;
        assert_eq!(start.git_ref.as_deref(), Some("refs/heads/main"));
        assert_eq!(start.uncommitted, Some(0));
        std::fs::write(repo.path().join("c"), "3").expect("write");
        assert_eq!(Start::read(repo.path(), "HEAD").await.uncommitted, Some(1));
    }

    /// A scratch repository and a `git` that must succeed in it.
    fn scratch() -> (tempfile::TempDir, impl Fn(&[&str]) -> String) {
        let repo = tempfile::tempdir().expect("temp dir");
        let dir = repo.path().to_owned();
        let run = move |args: &[&str]| {
            let out = std::process::Command::new("git")
                .arg("-C")
                .arg(&dir)
                .args(["-c", "user.name=Ada", "-c", "user.email=ada@example.com"])
                .args(args)
                .output()
                .expect("git");
            assert!(out.status.success(), "git {args:?}: {out:?}");
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        (repo, run)
    }

    #[test]
    fn cat_file_answers_are_read_whatever_follows_them() {
        assert_eq!(
            Answer::parse("4b825dc6 blob 12"),
            Answer::Object {
                oid: "4b825dc6".to_owned(),
                kind: "blob".to_owned(),
                size: 12
            }
        );
        assert_eq!(Answer::parse("HEAD:a b missing"), Answer::Missing);
        assert_eq!(Answer::parse("abc ambiguous"), Answer::Missing);
        assert_eq!(Answer::parse("symlink 7"), Answer::Unusable { size: 7 });
        assert_eq!(Answer::parse("dangling 3"), Answer::Unusable { size: 3 });
        assert_eq!(Answer::parse(""), Answer::Missing);
    }

    /// One `git cat-file` answers every question of a load in turn, a miss or an unusable
    /// link included, and gives what `git rev-parse --verify REV^{commit}` gives.
    #[test]
    fn objects_resolve_commits_and_read_committed_files() {
        let (repo, git) = scratch();
        git(&["init", "-q", "-b", "main"]);
        let dir = repo.path();
        std::fs::create_dir_all(dir.join("w")).expect("mkdir");
        std::fs::write(dir.join("w/a.yml"), "a: 1\n").expect("write");
        std::fs::write(dir.join("w/empty"), "").expect("write");
        std::os::unix::fs::symlink("a.yml", dir.join("w/link.yml")).expect("link");
        std::os::unix::fs::symlink("/etc/hostname", dir.join("w/out.yml")).expect("link");
        std::os::unix::fs::symlink("gone", dir.join("w/dangling.yml")).expect("link");
        git(&["add", "-A"]);
        git(&["commit", "-qm", "files"]);
        git(&["tag", "-a", "-m", "t", "v1"]);
        let head = git(&["rev-parse", "HEAD"]);

        let mut objects = Objects::open(dir).expect("cat-file");
        assert_eq!(
            objects.commit("HEAD").expect("ask").as_deref(),
            Some(head.as_str())
        );
        // An annotated tag is peeled to its commit, as `rev-parse --verify v1^{commit}` does.
        assert_eq!(
            objects.commit("v1").expect("ask").as_deref(),
            Some(head.as_str())
        );
        assert_eq!(objects.commit("nope").expect("ask"), None);
        // A tree is not a commit.
        let tree = format!("{head}^{{tree}}");
        assert_eq!(objects.commit(&tree).expect("ask"), None);
        let file = |o: &mut Objects, path: &str| o.file(&head, path).expect("ask");
        assert_eq!(
            file(&mut objects, "w/a.yml").as_deref(),
            Some(&b"a: 1\n"[..])
        );
        assert_eq!(
            file(&mut objects, "./w/a.yml").as_deref(),
            Some(&b"a: 1\n"[..])
        );
        assert_eq!(file(&mut objects, "w/empty").as_deref(), Some(&b""[..]));
        assert_eq!(
            file(&mut objects, "w/link.yml").as_deref(),
            Some(&b"a: 1\n"[..])
        );
        assert_eq!(
            file(&mut objects, "w/out.yml"),
            None,
            "a link out of the tree"
        );
        assert_eq!(file(&mut objects, "w/dangling.yml"), None);
        assert_eq!(file(&mut objects, "w"), None, "a directory");
        assert_eq!(file(&mut objects, "w/none"), None);
        assert_eq!(file(&mut objects, "w/a.yml\nHEAD"), None, "a line break");
        // Still in step after all of that.
        assert_eq!(
            file(&mut objects, "w/a.yml").as_deref(),
            Some(&b"a: 1\n"[..])
        );
        assert_eq!(
            objects.commit(&head).expect("ask").as_deref(),
            Some(head.as_str())
        );
    }

    /// `Pushed` gives from one `git log` what `git show -s` and `git diff-tree` gave: the
    /// commit's facts, its files against the first parent, none for a merge, all for a root.
    #[tokio::test]
    async fn the_pushed_commit_is_what_show_and_diff_tree_say() {
        let (repo, git) = scratch();
        let dir = repo.path();
        git(&["init", "-q", "-b", "main"]);
        std::fs::write(dir.join("a"), "1").expect("write");
        git(&["add", "-A"]);
        git(&["commit", "-qm", "root"]);
        git(&["checkout", "-qb", "side"]);
        std::fs::write(dir.join("b"), "2").expect("write");
        git(&["add", "-A"]);
        git(&["commit", "-qm", "side\n\nwith a body\n\n"]);
        git(&["checkout", "-q", "main"]);
        std::fs::write(dir.join("a"), "changed").expect("write");
        std::fs::write(dir.join("c d"), "3").expect("write");
        git(&["add", "-A"]);
        git(&["commit", "-qm", "main"]);
        git(&["merge", "-q", "--no-edit", "side"]);
        for rev in ["HEAD", "HEAD^1", "HEAD^2", "HEAD~2", "side"] {
            let sha = git(&["rev-parse", rev]);
            let pushed = Pushed::read(dir, rev).await;
            assert_eq!(pushed.sha, sha, "{rev}");
            assert_eq!(pushed.commit, Commit::read(dir, &sha).await, "{rev}");
            let listed = git(&[
                "diff-tree",
                "--no-commit-id",
                "--name-status",
                "--no-renames",
                "-r",
                "--root",
                &sha,
            ]);
            assert_eq!(pushed.changes, Changes::parse(&listed), "{rev}");
        }
        let merge = Pushed::read(dir, "HEAD").await;
        assert_eq!(merge.changes, Changes::default(), "a merge lists no files");
        let main = Pushed::read(dir, "HEAD^1").await.changes;
        assert_eq!(
            (main.added, main.modified),
            (vec!["c d".to_owned()], vec!["a".to_owned()])
        );
        assert_eq!(Pushed::read(dir, "HEAD~2").await.changes.added, ["a"]);
        assert_eq!(
            Pushed::read(dir, "side").await.commit.message,
            "side\n\nwith a body"
        );
        assert_eq!(Pushed::read(dir, "nope").await, Pushed::default());
    }

    /// The tags at a commit, newest first, an annotated one with its message, and the branches
    /// whose head it is, local or the origin's, each once.
    #[tokio::test]
    async fn the_tags_and_branches_at_a_commit() {
        let (repo, git) = scratch();
        let dir = repo.path();
        git(&["init", "-q", "-b", "main"]);
        git(&["commit", "-q", "--allow-empty", "-m", "one"]);
        git(&["tag", "old"]);
        git(&["commit", "-q", "--allow-empty", "-m", "two"]);
        let head = git(&["rev-parse", "HEAD"]);
        git(&["tag", "light"]);
        git(&["tag", "-a", "v1", "-m", "Release one\n\nNotes."]);
        git(&["update-ref", "refs/remotes/origin/main", &head]);
        git(&["branch", "other"]);
        let pointing = Pointing::read(dir, "v1").await;
        let mut tags: Vec<(&str, &str)> = pointing
            .tags
            .iter()
            .map(|t| (t.name.as_str(), t.message.as_str()))
            .collect();
        tags.sort_unstable();
        assert_eq!(tags, [("light", ""), ("v1", "Release one\n\nNotes.")]);
        let mut branches = pointing.branches.clone();
        branches.sort_unstable();
        assert_eq!(branches, ["main", "other"]);
        assert_eq!(
            pointing.tag("refs/tags/light").map(|t| t.name.as_str()),
            Some("light")
        );
        assert!(pointing.tags.iter().all(|t| !t.date.is_empty()));
        assert_eq!(
            Pointing::read(dir, "old").await.branches,
            Vec::<String>::new()
        );
        assert_eq!(Pointing::read(dir, "nope").await, Pointing::default());
    }

    #[test]
    fn a_shortstat_gives_files_additions_and_deletions() {
        let stat = DiffStat::parse(" 2 files changed, 18 insertions(+), 3 deletions(-)");
        assert_eq!((stat.files, stat.additions, stat.deletions), (2, 18, 3));
        let stat = DiffStat::parse(" 1 file changed, 1 deletion(-)");
        assert_eq!((stat.files, stat.additions, stat.deletions), (1, 0, 1));
        assert_eq!(DiffStat::parse(""), DiffStat::default());
    }

    /// The ref of a branch, a tag and a detached `HEAD`.
    #[tokio::test]
    async fn the_ref_of_a_branch_a_tag_and_a_detached_head() {
        let (repo, git) = scratch();
        let dir = repo.path();
        git(&["init", "-q", "-b", "main"]);
        git(&["commit", "-q", "--allow-empty", "-m", "one"]);
        git(&["tag", "v1"]);
        git(&["branch", "other"]);
        let of = |rev: &'static str| async move { Start::read(dir, rev).await.git_ref };
        assert_eq!(of("HEAD").await.as_deref(), Some("refs/heads/main"));
        assert_eq!(of("other").await.as_deref(), Some("refs/heads/other"));
        assert_eq!(of("v1").await.as_deref(), Some("refs/tags/v1"));
        git(&["checkout", "-q", "--detach"]);
        assert_eq!(of("HEAD").await, None);
        assert_eq!(Start::read(dir, "HEAD").await.uncommitted, Some(0));
        assert_eq!(Start::read(dir, "v1").await.uncommitted, None);
    }
}
