//! `github.event` (and `$GITHUB_EVENT_PATH`'s file) of a local run: GitHub's webhook payload of
//! the event, in the shape its "Webhook events and payloads" documentation gives, filled from
//! what the local repository truthfully says (the commit, its branch and tags, the default
//! branch and the merge base, the `origin` remote). What only GitHub knows (ids, node ids,
//! counts of reviews) is left out rather than made up; a workflow that needs it is run with
//! `--event-file`.

use indexmap::IndexMap;
use kiln_pipelines::workflow::Trigger;
use serde_json::{Value, json};

use super::git::{Changes, Commit, Pointing, PullBase, PushFacts, Repository};

/// `github.server_url` of a local run (kiln-pipelines' runner): the payload's web addresses
/// are on it, so that `format('{0}/{1}', github.server_url, github.repository)` is the
/// repository's `html_url` here as on GitHub.
const SERVER_URL: &str = "http://localhost";
/// `github.api_url` of a local run.
const API_URL: &str = "http://localhost/api";
/// `github.actor` of a local run, and so the payload's `sender`.
const SENDER: &str = "kiln";

/// The pull request number of a local run (there is one pull request: the run's commit).
const PULL_NUMBER: u64 = 1;

/// What a local run's payload is made of.
#[derive(Debug)]
pub(crate) struct Local<'a> {
    pub(crate) event: &'a str,
    /// The revision's ref (`refs/heads/feature`, `refs/tags/v1`).
    pub(crate) git_ref: &'a str,
    pub(crate) sha: &'a str,
    /// The commit, the default branch and the repository.
    pub(crate) facts: &'a PushFacts,
    /// The commit's files against its first parent.
    pub(crate) changes: &'a Changes,
    /// The workflow file, relative to the repository (`.github/workflows/ci.yml`).
    pub(crate) workflow: &'a str,
    /// The workflow's `on.<event>`, when it has one.
    pub(crate) trigger: Option<&'a Trigger>,
    /// `workflow_dispatch`'s inputs, every declared one.
    pub(crate) inputs: &'a IndexMap<String, String>,
    /// The `on.schedule` cron line that fired.
    pub(crate) schedule: Option<&'a str>,
    /// The tags and branches at the commit (asked for the events that use them).
    pub(crate) pointing: Option<&'a Pointing>,
    /// The pull request's base (asked for `pull_request*` and `merge_group`).
    pub(crate) pull: Option<&'a PullBase>,
}

/// `sender` (and a pull request's or release's `user`/`author`): who ran it.
fn sender() -> Value {
    json!({ "login": SENDER, "type": "User", "html_url": format!("{SERVER_URL}/{SENDER}") })
}

/// The repository as every payload names it.
pub(crate) fn repository(repository: &Repository, default_branch: &str) -> Value {
    let full = repository.full_name();
    let owner = &repository.owner;
    let html = format!("{SERVER_URL}/{full}");
    json!({
        "name": repository.name,
        "full_name": full,
        "owner": {
            "login": owner,
            "name": owner,
            "type": "User",
            "html_url": format!("{SERVER_URL}/{owner}"),
        },
        // A local pull request is the repository's own branch (never a fork), so the usual
        // guard `github.event.pull_request.head.repo.full_name == github.repository` holds.
        "private": false,
        "fork": false,
        "archived": false,
        "disabled": false,
        "is_template": false,
        "visibility": "public",
        "html_url": html,
        "url": format!("{API_URL}/repos/{full}"),
        "clone_url": format!("{html}.git"),
        "git_url": format!("git://localhost/{full}.git"),
        "ssh_url": format!("git@localhost:{full}.git"),
        "svn_url": html,
        "description": null,
        "homepage": null,
        "topics": [],
        "default_branch": default_branch,
    })
}

/// A commit as push, merge group and workflow run payloads show it.
fn commit(sha: &str, commit: &Commit, repository: &Repository, changes: &Changes) -> Value {
    let person = json!({ "name": commit.author_name, "email": commit.author_email });
    json!({
        "id": sha,
        "tree_id": commit.tree,
        "distinct": true,
        "message": commit.message,
        "timestamp": commit.timestamp,
        "url": format!("{SERVER_URL}/{}/commit/{sha}", repository.full_name()),
        "author": person,
        "committer": person,
        "added": changes.added,
        "removed": changes.removed,
        "modified": changes.modified,
    })
}

/// GitHub's push payload for `after` on `git_ref`: the head commit (message, author, time,
/// files), the commit before (zeros for a new branch), the repository and the pusher.
pub(crate) fn push_payload(
    facts: &PushFacts,
    git_ref: &str,
    before: Option<&str>,
    after: &str,
    changed: &Changes,
) -> Value {
    let head = commit(after, &facts.head, &facts.repository, changed);
    let branch = facts.branches.default_branch(git_ref);
    let mut repository = repository(&facts.repository, &branch);
    // The push payload's repository alone also names it `master_branch`.
    if let Value::Object(fields) = &mut repository {
        fields.insert("master_branch".to_owned(), Value::String(branch.clone()));
    }
    let before = before.map_or_else(|| "0".repeat(40), str::to_owned);
    let html = format!("{SERVER_URL}/{}", facts.repository.full_name());
    let compare = if before.bytes().all(|b| b == b'0') {
        format!("{html}/compare/{}", ref_name(git_ref).0)
    } else {
        format!(
            "{html}/compare/{}...{}",
            before.get(..12).unwrap_or(&before),
            after.get(..12).unwrap_or(after)
        )
    };
    json!({
        "ref": git_ref,
        "before": before,
        "after": after,
        "created": before.bytes().all(|b| b == b'0'),
        "deleted": false,
        "forced": false,
        "base_ref": null,
        "compare": compare,
        "commits": [head.clone()],
        "head_commit": head,
        "pusher": { "name": facts.head.author_name, "email": facts.head.author_email },
        "sender": sender(),
        "repository": repository,
    })
}

/// A push of a tag, as GitHub sends it: the tag is new (`before` zeros, `created`), it brings
/// no commits of its own (`commits` empty, `head_commit` the tagged one), and `base_ref` is the
/// branch whose head it tags (the default branch first), null when it tags no branch's head.
fn tag_push(mut payload: Value, pointing: Option<&Pointing>, default_branch: &str) -> Value {
    let base_ref = pointing.and_then(|p| {
        let branch = p
            .branches
            .iter()
            .find(|b| *b == default_branch)
            .or_else(|| p.branches.first())?;
        Some(format!("refs/heads/{branch}"))
    });
    if let Value::Object(fields) = &mut payload {
        fields.insert("before".to_owned(), Value::String("0".repeat(40)));
        fields.insert("created".to_owned(), Value::Bool(true));
        fields.insert("commits".to_owned(), json!([]));
        fields.insert("base_ref".to_owned(), json!(base_ref));
        let html = fields
            .get("repository")
            .and_then(|r| r.get("html_url"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let tag = fields
            .get("ref")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let compare = format!("{html}/compare/{}", ref_name(tag).0);
        fields.insert("compare".to_owned(), Value::String(compare));
    }
    payload
}

/// The payload of `local.event`.
pub(crate) fn payload(local: &Local<'_>) -> Value {
    let default_branch = local.facts.branches.default_branch(local.git_ref);
    let repo = repository(&local.facts.repository, &default_branch);
    let mut payload = match local.event {
        "workflow_dispatch" => json!({
            "ref": local.git_ref,
            "inputs": local.inputs,
            "workflow": local.workflow,
        }),
        "pull_request" | "pull_request_target" => pull_request(local, &default_branch, &repo),
        // A review of the pull request, or a comment on its change: the pull request as
        // above, and a review with no text (its state neither approves nor asks for changes).
        "pull_request_review" | "pull_request_review_comment" => {
            let mut payload = pull_request(local, &default_branch, &repo);
            let pr_url = payload
                .pointer("/pull_request/html_url")
                .cloned()
                .unwrap_or(Value::Null);
            if let Value::Object(fields) = &mut payload {
                let (key, action, value) = if local.event == "pull_request_review" {
                    let review = json!({
                        "state": "commented",
                        "body": null,
                        "user": sender(),
                        "author_association": "OWNER",
                        "commit_id": local.sha,
                        "submitted_at": local.facts.head.timestamp,
                        "pull_request_url": pr_url,
                    });
                    ("review", action(local, "submitted"), review)
                } else {
                    let comment = json!({
                        "body": "",
                        "user": sender(),
                        "author_association": "OWNER",
                        "commit_id": local.sha,
                        "path": local.changes.paths().first(),
                        "pull_request_url": pr_url,
                    });
                    ("comment", action(local, "created"), comment)
                };
                fields.insert("action".to_owned(), Value::String(action));
                fields.insert(key.to_owned(), value);
            }
            payload
        }
        // The event type is the first the workflow listens for (`on.repository_dispatch.types`),
        // the client payload empty (`--event-file` for one).
        "repository_dispatch" => json!({
            "action": local.trigger.and_then(|t| t.types.first()),
            "branch": default_branch,
            "client_payload": {},
        }),
        "schedule" => json!({ "schedule": local.schedule, "workflow": local.workflow }),
        "release" => release(local, &default_branch),
        "merge_group" => merge_group(local, &default_branch),
        // The ref's short name and kind; a creation also names the default branch and the
        // repository's description.
        "create" => {
            let (name, kind) = ref_name(local.git_ref);
            json!({
                "ref": name,
                "ref_type": kind,
                "master_branch": default_branch,
                "pusher_type": "user",
                "description": null,
            })
        }
        "delete" => {
            let (name, kind) = ref_name(local.git_ref);
            json!({ "ref": name, "ref_type": kind, "pusher_type": "user" })
        }
        "issues" => json!({ "action": action(local, "opened"), "issue": issue(local) }),
        "issue_comment" => json!({
            "action": action(local, "created"),
            "issue": issue(local),
            "comment": {
                "body": "",
                "user": sender(),
                "author_association": "OWNER",
            },
        }),
        "workflow_run" => workflow_run(local, &repo),
        "deployment" => json!({
            "action": "created",
            "deployment": deployment(local),
        }),
        // A deployment of the commit that succeeded (what `deployment_status` workflows run
        // their checks after), with no address (`--event-file` for a preview's URL).
        "deployment_status" => json!({
            "action": "created",
            "deployment": deployment(local),
            "deployment_status": {
                "state": "success",
                "environment": DEPLOYMENT_ENVIRONMENT,
                "environment_url": "",
                "target_url": "",
                "log_url": "",
                "description": "",
                "creator": sender(),
                "created_at": local.facts.head.timestamp,
            },
        }),
        _ => {
            let before = local.facts.head.parent.as_deref();
            let pushed = push_payload(local.facts, local.git_ref, before, local.sha, local.changes);
            if local.git_ref.starts_with("refs/tags/") {
                tag_push(pushed, local.pointing, &default_branch)
            } else {
                pushed
            }
        }
    };
    if let Value::Object(fields) = &mut payload {
        fields.entry("repository").or_insert(repo);
        fields.entry("sender").or_insert_with(sender);
    }
    payload
}

/// `feature/a`, `branch` for `refs/heads/feature/a`; `v1`, `tag` for `refs/tags/v1`.
fn ref_name(git_ref: &str) -> (&str, &'static str) {
    match git_ref.strip_prefix("refs/tags/") {
        Some(tag) => (tag, "tag"),
        None => (
            git_ref.strip_prefix("refs/heads/").unwrap_or(git_ref),
            "branch",
        ),
    }
}

/// The activity type: `preferred` when the workflow's `types:` allow it (or it has none),
/// else the first type it lists, so that a workflow `on: pull_request: types: [closed]` sees
/// the event it runs for.
fn action(local: &Local<'_>, preferred: &str) -> String {
    let types = local
        .trigger
        .map(|t| t.types.as_slice())
        .unwrap_or_default();
    if types.is_empty() || types.iter().any(|t| t == preferred) {
        preferred.to_owned()
    } else {
        types[0].clone()
    }
}

/// The commit message's first line (a pull request's title, as GitHub proposes it for a
/// branch of one commit) and the rest (its body; null when empty, as GitHub sends it).
fn title_and_body(message: &str) -> (&str, Option<&str>) {
    let (title, body) = message.split_once('\n').unwrap_or((message, ""));
    let body = body.trim();
    (title.trim(), (!body.is_empty()).then_some(body))
}

/// A pull request from the run's branch into the default branch, in the repository itself.
/// `head` is the run's commit; `base` is the default branch, its `sha` the merge base of the
/// two (so `git diff base.sha github.sha` is the pull request's change, as it is on GitHub
/// against the merge commit). Run on the default branch itself, the pull request is its last
/// commit (`base.sha` its parent).
fn pull_request(local: &Local<'_>, default_branch: &str, repo: &Value) -> Value {
    let full = local.facts.repository.full_name();
    let owner = &local.facts.repository.owner;
    let html = format!("{SERVER_URL}/{full}/pull/{PULL_NUMBER}");
    let api = format!("{API_URL}/repos/{full}");
    let head_branch = ref_name(local.git_ref).0;
    let merge_base = local
        .pull
        .and_then(|p| p.sha.as_deref())
        .filter(|base| *base != local.sha);
    let (base_sha, commits) = match merge_base {
        Some(base) => (Some(base), local.pull.map_or(1, |p| p.commits.max(1))),
        None => (local.facts.head.parent.as_deref(), 1),
    };
    let diff = local.pull.map(|p| p.diff).unwrap_or_default();
    let action = action(local, "opened");
    let closed = action == "closed";
    let (title, body) = title_and_body(&local.facts.head.message);
    let side = |branch: &str, sha: Option<&str>| {
        json!({
            "label": format!("{owner}:{branch}"),
            "ref": branch,
            "sha": sha,
            "user": { "login": owner, "type": "User" },
            "repo": repo,
        })
    };
    let mut payload = json!({
        "action": action,
        "number": PULL_NUMBER,
        "pull_request": {
            "url": format!("{api}/pulls/{PULL_NUMBER}"),
            "html_url": html,
            "diff_url": format!("{html}.diff"),
            "patch_url": format!("{html}.patch"),
            "issue_url": format!("{api}/issues/{PULL_NUMBER}"),
            "number": PULL_NUMBER,
            "state": if closed { "closed" } else { "open" },
            "locked": false,
            "title": title,
            "body": body,
            "user": sender(),
            "author_association": "OWNER",
            "labels": [],
            "assignees": [],
            "assignee": null,
            "requested_reviewers": [],
            "requested_teams": [],
            "milestone": null,
            "draft": false,
            "merged": false,
            "mergeable": null,
            "rebaseable": null,
            "mergeable_state": "unknown",
            "merge_commit_sha": null,
            "auto_merge": null,
            "created_at": local.facts.head.timestamp,
            "updated_at": local.facts.head.timestamp,
            "closed_at": closed.then_some(&local.facts.head.timestamp),
            "merged_at": null,
            "commits": commits,
            "changed_files": diff.files,
            "additions": diff.additions,
            "deletions": diff.deletions,
            "head": side(head_branch, Some(local.sha)),
            "base": side(default_branch, base_sha),
        },
    });
    // A push to the pull request's branch: its head moved from the last commit's parent.
    if action == "synchronize"
        && let Value::Object(fields) = &mut payload
    {
        fields.insert("before".to_owned(), json!(local.facts.head.parent));
        fields.insert("after".to_owned(), json!(local.sha));
    }
    payload
}

/// The release of the newest tag at the commit (or the one the revision names): published,
/// named after its tag, its notes the annotated tag's message, a pre-release when its version
/// has a pre-release part (`v2.0.0-rc.1`), as release tools mark them. Without a tag there is
/// no release to describe: the payload has none (the run says so).
fn release(local: &Local<'_>, default_branch: &str) -> Value {
    let Some(tag) = local.pointing.and_then(|p| p.tag(local.git_ref)) else {
        return json!({ "action": action(local, "published") });
    };
    let full = local.facts.repository.full_name();
    let name = &tag.name;
    json!({
        "action": action(local, "published"),
        "release": {
            "url": format!("{API_URL}/repos/{full}/releases/tags/{name}"),
            "html_url": format!("{SERVER_URL}/{full}/releases/tag/{name}"),
            "tarball_url": format!("{API_URL}/repos/{full}/tarball/{name}"),
            "zipball_url": format!("{API_URL}/repos/{full}/zipball/{name}"),
            "tag_name": name,
            "target_commitish": default_branch,
            "name": name,
            "body": tag.message,
            "draft": false,
            "prerelease": is_prerelease(name),
            "created_at": local.facts.head.timestamp,
            "published_at": tag.date,
            "author": sender(),
            "assets": [],
        },
    })
}

/// A version tag with a pre-release part: `v1.2.0-rc.1`, `2.0.0-beta` (a hyphen after the
/// digits of a version), not `release-2024` nor `v1.2.0`.
fn is_prerelease(tag: &str) -> bool {
    let version = tag.trim_start_matches(|c: char| !c.is_ascii_digit());
    let Some((core, pre)) = version.split_once('-') else {
        return false;
    };
    !core.is_empty()
        && !pre.is_empty()
        && core.contains('.')
        && core
            .split('.')
            .all(|n| n.chars().all(|c| c.is_ascii_digit()))
}

/// A merge queue's group: the run's commit as the group's head on GitHub's queue branch for
/// the default branch, its base the merge base.
fn merge_group(local: &Local<'_>, default_branch: &str) -> Value {
    let base_sha = local
        .pull
        .and_then(|p| p.sha.as_deref())
        .filter(|base| *base != local.sha)
        .or(local.facts.head.parent.as_deref());
    json!({
        "action": "checks_requested",
        "merge_group": {
            "head_sha": local.sha,
            "head_ref": merge_group_ref(default_branch, base_sha.unwrap_or(local.sha)),
            "base_sha": base_sha,
            "base_ref": format!("refs/heads/{default_branch}"),
            "head_commit": head_commit(local),
        },
    })
}

/// The environment of a deployment nothing names (GitHub's API's default).
const DEPLOYMENT_ENVIRONMENT: &str = "production";

/// A deployment of the run's commit from its branch, as GitHub's API creates one by default
/// (task `deploy`, environment `production`, no payload).
fn deployment(local: &Local<'_>) -> Value {
    json!({
        "sha": local.sha,
        "ref": ref_name(local.git_ref).0,
        "task": "deploy",
        "payload": {},
        "environment": DEPLOYMENT_ENVIRONMENT,
        "original_environment": DEPLOYMENT_ENVIRONMENT,
        "description": null,
        "creator": sender(),
        "created_at": local.facts.head.timestamp,
        "updated_at": local.facts.head.timestamp,
        "transient_environment": false,
        "production_environment": true,
    })
}

/// The run's commit as a merge group's or workflow run's `head_commit`.
fn head_commit(local: &Local<'_>) -> Value {
    let facts = local.facts;
    commit(local.sha, &facts.head, &facts.repository, local.changes)
}

/// The branch GitHub's merge queue runs a group on (`github.ref` of a `merge_group` run).
pub(crate) fn merge_group_ref(default_branch: &str, base_sha: &str) -> String {
    format!("refs/heads/gh-readonly-queue/{default_branch}/pr-{PULL_NUMBER}-{base_sha}")
}

/// The issue of an `issues` or `issue_comment` event: a local repository has none, so it is
/// issue 1, open, with no title, text or labels (give `--event-file` for a real one).
fn issue(local: &Local<'_>) -> Value {
    let full = local.facts.repository.full_name();
    json!({
        "number": PULL_NUMBER,
        "title": "",
        "body": null,
        "state": "open",
        "locked": false,
        "user": sender(),
        "author_association": "OWNER",
        "labels": [],
        "assignees": [],
        "comments": 0,
        "html_url": format!("{SERVER_URL}/{full}/issues/{PULL_NUMBER}"),
        "url": format!("{API_URL}/repos/{full}/issues/{PULL_NUMBER}"),
    })
}

/// A `workflow_run` event: a run of the workflow the trigger names, for a push of the
/// commit, completed successfully (what `types: [completed]` workflows usually wait for;
/// `--event-file` for another conclusion). kiln-pipelines keeps `workflows:` and `types:` in one
/// field (the later written replacing the other), so activity types are told apart by name,
/// and the workflow's name is known only when no `types:` replaced it.
fn workflow_run(local: &Local<'_>, repo: &Value) -> Value {
    const ACTIVITIES: [&str; 3] = ["completed", "requested", "in_progress"];
    let listed = local
        .trigger
        .map(|t| t.types.as_slice())
        .unwrap_or_default();
    let activities: Vec<&String> = listed
        .iter()
        .filter(|t| ACTIVITIES.contains(&t.as_str()))
        .collect();
    let action = if activities.is_empty() || activities.iter().any(|t| *t == "completed") {
        "completed"
    } else {
        activities[0].as_str()
    };
    let (status, conclusion) = match action {
        "completed" => ("completed", Some("success")),
        "requested" => ("queued", None),
        _ => ("in_progress", None),
    };
    // The first workflow `on.workflow_run.workflows` names (GitHub sends the one that ran).
    let name = local.trigger.and_then(|t| t.workflows.first());
    let full = local.facts.repository.full_name();
    let head_branch = ref_name(local.git_ref).0;
    json!({
        "action": action,
        "workflow_run": {
            "name": name,
            "display_title": title_and_body(&local.facts.head.message).0,
            "event": "push",
            "status": status,
            "conclusion": conclusion,
            "head_branch": head_branch,
            "head_sha": local.sha,
            "head_commit": head_commit(local),
            "run_attempt": 1,
            "html_url": format!("{SERVER_URL}/{full}/actions"),
            "pull_requests": [],
            "repository": repo,
            "head_repository": repo,
            "actor": sender(),
            "triggering_actor": sender(),
        },
        "workflow": { "name": name },
    })
}

#[cfg(test)]
mod tests {
    use super::super::git::Branches;
    use super::*;

    #[test]
    fn a_prerelease_is_a_version_with_a_prerelease_part() {
        for tag in ["v1.2.0-rc.1", "2.0.0-beta", "release/v3.1-alpha.2"] {
            assert!(is_prerelease(tag), "{tag}");
        }
        for tag in ["v1.2.0", "release-2024", "v1", "nightly", "v1.2.0-", "1-2"] {
            assert!(!is_prerelease(tag), "{tag}");
        }
    }

    #[test]
    fn a_title_is_the_first_line_and_an_empty_body_is_null() {
        assert_eq!(
            title_and_body("Add login\n\nFixes the form.\n"),
            ("Add login", Some("Fixes the form."))
        );
        assert_eq!(title_and_body("Add login"), ("Add login", None));
        assert_eq!(title_and_body("Add login\n\n"), ("Add login", None));
    }

    #[test]
    fn a_workflow_limited_to_other_activity_types_sees_its_first() {
        let facts = PushFacts {
            head: Commit::default(),
            branches: Branches::default(),
            repository: Repository {
                owner: "acme".to_owned(),
                name: "widgets".to_owned(),
            },
        };
        let changes = Changes::default();
        let inputs = IndexMap::new();
        let closed = Trigger {
            types: vec!["closed".to_owned(), "labeled".to_owned()],
            ..Trigger::default()
        };
        let any = Trigger::default();
        let local = |trigger| Local {
            event: "pull_request",
            git_ref: "refs/heads/feature",
            sha: "abc",
            facts: &facts,
            changes: &changes,
            workflow: ".github/workflows/ci.yml",
            trigger,
            inputs: &inputs,
            schedule: None,
            pointing: None,
            pull: None,
        };
        let closed = payload(&local(Some(&closed)));
        assert_eq!(closed["action"], "closed");
        assert_eq!(closed["pull_request"]["state"], "closed");
        assert_eq!(closed["pull_request"]["closed_at"], "");
        let synchronize = Trigger {
            types: vec!["synchronize".to_owned()],
            ..Trigger::default()
        };
        let pushed = payload(&local(Some(&synchronize)));
        assert_eq!(
            (&pushed["before"], &pushed["after"]),
            (&Value::Null, &json!("abc")),
            "a root commit has no parent"
        );
        assert_eq!(payload(&local(Some(&any)))["action"], "opened");
        assert_eq!(payload(&local(Some(&any))).get("before"), None);
        assert_eq!(payload(&local(None))["pull_request"]["state"], "open");
    }
}
