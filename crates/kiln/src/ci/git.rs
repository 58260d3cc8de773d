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

/// What `kiln ci run` learns from git before it loads the workflow.
#[derive(Debug)]
pub(super) struct Start {
    /// The full sha of the revision; None when it names no commit.
    pub(super) sha: Option<String>,
    /// The full ref the revision is on (`refs/heads/main`), when it is on one.
    pub(super) git_ref: Option<String>,
    /// Entries `git status` lists in the working tree (kiln's own `.kiln/` aside); asked only
    /// for `HEAD`, the one revision a working tree can differ from unknowingly.
    pub(super) uncommitted: Option<usize>,
    pub(super) branches: Branches,
}

impl Start {
    pub(super) async fn read(dir: &Path, rev: &str) -> Start {
        let commit = format!("{rev}^{{commit}}");
        let verify = ["rev-parse", "--verify", commit.as_str()];
        let (sha, git_ref, uncommitted, branches) = tokio::join!(
            git_async(dir, &verify),
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
        );
        Start {
            sha,
            git_ref,
            uncommitted,
            branches,
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

/// The refs that decide the repository's default branch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Branches {
    /// The branch the clone's `origin/HEAD` points at.
    origin_head: Option<String>,
    main: bool,
    master: bool,
}

impl Branches {
    /// One `git for-each-ref` for all three refs.
    pub(crate) async fn read(dir: &Path) -> Branches {
        let listed = git_async(
            dir,
            &[
                "for-each-ref",
                "--format=%(refname)%00%(symref)",
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
            let (name, target) = line.split_once('\0').unwrap_or((line, ""));
            match name {
                "refs/heads/main" => branches.main = true,
                "refs/heads/master" => branches.master = true,
                "refs/remotes/origin/HEAD" => {
                    branches.origin_head = target
                        .strip_prefix("refs/remotes/origin/")
                        .filter(|b| !b.is_empty())
                        .map(str::to_owned);
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
        if let Some(branch) = &self.origin_head {
            return branch.clone();
        }
        if self.main {
            return "main".to_owned();
        }
        if self.master {
            return "master".to_owned();
        }
        git_ref
            .strip_prefix("refs/heads/")
            .unwrap_or(git_ref)
            .to_owned()
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

/// The files a commit changed against its first parent (all of them, added, for a root
/// commit).
pub(crate) async fn changed_files(dir: &Path, sha: &str) -> Changes {
    let listed = git_async(
        dir,
        &[
            "diff-tree",
            "--no-commit-id",
            "--name-status",
            "--no-renames",
            "-r",
            "--root",
            sha,
        ],
    )
    .await
    .unwrap_or_default();
    Changes::parse(&listed)
}

/// What a push payload needs from git besides what the push itself says.
#[derive(Debug, Default, Clone)]
pub(crate) struct PushFacts {
    pub(crate) head: Commit,
    pub(crate) branches: Branches,
    /// The repository directory's name, GitHub's `repository.name`.
    pub(crate) repo_name: String,
}

impl PushFacts {
    pub(crate) async fn read(dir: &Path, after: &str) -> PushFacts {
        let (head, branches) = tokio::join!(Commit::read(dir, after), Branches::read(dir));
        PushFacts {
            head,
            branches,
            repo_name: repo_name(dir),
        }
    }
}

pub(crate) fn repo_name(dir: &Path) -> String {
    std::fs::canonicalize(dir)
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "repo".to_owned())
}

/// GitHub's push payload for `after` on `git_ref`: the head commit (message, author, time,
/// files), the commit before (zeros for a new branch), the repository and the pusher.
pub(crate) fn push_payload(
    facts: &PushFacts,
    git_ref: &str,
    before: Option<&str>,
    after: &str,
    changed: &Changes,
) -> serde_json::Value {
    let commit = &facts.head;
    let person = serde_json::json!({ "name": commit.author_name, "email": commit.author_email });
    let head = serde_json::json!({
        "id": after,
        "tree_id": commit.tree,
        "message": commit.message,
        "timestamp": commit.timestamp,
        "author": person,
        "committer": person,
        "added": changed.added,
        "removed": changed.removed,
        "modified": changed.modified,
    });
    let branch = facts.branches.default_branch(git_ref);
    let repo_name = &facts.repo_name;
    serde_json::json!({
        "ref": git_ref,
        "before": before.map_or_else(|| "0".repeat(40), str::to_owned),
        "after": after,
        "created": before.is_none(),
        "deleted": false,
        "forced": false,
        "base_ref": null,
        "commits": [head.clone()],
        "head_commit": head,
        "pusher": person,
        "sender": { "login": "kiln" },
        "repository": {
            "name": repo_name,
            "full_name": format!("local/{repo_name}"),
            "owner": { "login": "local", "name": "local" },
            "default_branch": branch,
            "master_branch": branch,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branches_prefer_origin_head_then_main_then_master_then_the_pushed_branch() {
        let listed = "refs/heads/main\0\nrefs/remotes/origin/HEAD\0refs/remotes/origin/trunk";
        let all = Branches::parse(listed);
        assert_eq!(all.default_branch("refs/heads/x"), "trunk");
        let local = Branches::parse("refs/heads/main\0\nrefs/heads/master\0");
        assert_eq!(local.default_branch("refs/heads/x"), "main");
        let old = Branches::parse("refs/heads/master\0");
        assert_eq!(old.default_branch("refs/heads/x"), "master");
        let none = Branches::parse("");
        assert_eq!(none.default_branch("refs/heads/feature/a"), "feature/a");
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
        assert_eq!(changed_files(repo.path(), &head).await.added, ["b"]);
        let root = changed_files(repo.path(), &first).await;
        assert_eq!(
            (root.added, root.removed, root.modified),
            (vec!["a".to_owned()], vec![], vec![])
        );
        std::fs::write(repo.path().join("a"), "changed").expect("write");
        std::fs::rename(repo.path().join("b"), repo.path().join("c")).expect("rename");
        run(&["add", "-A"]);
        run(&["commit", "-qm", "third"]);
        let third = git(repo.path(), &["rev-parse", "HEAD"]).expect("third");
        let changes = changed_files(repo.path(), &third).await;
        assert_eq!(changes.modified, ["a"]);
        assert_eq!(
            (changes.added, changes.removed),
            (vec!["c".to_owned()], vec!["b".to_owned()])
        );
        run(&["reset", "-q", "--hard", &head]);

        let start = Start::read(repo.path(), "HEAD").await;
        assert_eq!(start.sha.as_deref(), Some(head.as_str()));
        assert_eq!(start.git_ref.as_deref(), Some("refs/heads/main"));
        assert_eq!(start.uncommitted, Some(0));
        std::fs::write(repo.path().join("c"), "3").expect("write");
        assert_eq!(Start::read(repo.path(), "HEAD").await.uncommitted, Some(1));
        assert_eq!(Start::read(repo.path(), "nope").await.sha, None);
    }
}
