//! `source:` — the git repository the control plane follows for continuous delivery:
//!
//! ```yaml
//! source:
//!   repo: .                 # the stack's own repository (default), a local path, or a URL
//!   branches: [main]        # branches whose new heads run the pipelines (default: [main])
//!   poll: 10s               # how often `git ls-remote` asks for new heads; `off` disables
//!   webhook:
//!     secret: ${{ secrets.hook }}   # GitHub push webhooks verified with this shared secret
//! ```
//!
//! A child module of `compile`, so it reuses the compiler's typed readers and diagnostics.

use crate::diag::{Code, Diagnostic};
use crate::model::ChangeSource;
use crate::units;
use crate::yaml::{Key, Node, Value as Y};

use super::Compiler;

const SOURCE_KEYS: &[&str] = &["repo", "branches", "poll", "webhook"];
const WEBHOOK_KEYS: &[&str] = &["secret"];
const EXPECTED: &str = "`{ repo: ., branches: [main], poll: 10s }`";

/// Polling below this would spend the machine on `git ls-remote`.
const MIN_POLL_MS: u64 = 1_000;
/// When `poll:` is absent.
const DEFAULT_POLL_MS: u64 = 10_000;

impl Compiler<'_> {
    /// Reads `source:` of the root file, when present.
    pub(super) fn change_source(&mut self, entries: &[(Key, Node)]) {
        let Some((_, node)) = entries.iter().find(|(k, _)| k.text == "source") else {
            return;
        };
        let Some(fields) = self.map(node, "source", EXPECTED) else {
            return;
        };
        self.check_keys(fields, SOURCE_KEYS, "source", "`source`");
        let field = |name: &str| fields.iter().find(|(k, _)| k.text == name).map(|(_, v)| v);
        let mut ok = true;
        let repo = match field("repo") {
            None => ".".to_owned(),
            Some(v) => {
                match self.string(v, "source.repo") {
                    Some(text) if !text.trim().is_empty() => text,
                    Some(_) => {
                        self.emit(
                        Diagnostic::new(
                            Code::InvalidValue,
                            v.span,
                            "source.repo",
                            "`source.repo` is empty",
                        )
                        .label("expected a repository")
                        .help("`.` (this stack's repository), a path such as `../app.git`, or a URL"),
                    );
                        ok = false;
                        String::new()
                    }
                    None => {
                        ok = false;
                        String::new()
                    }
                }
            }
        };
        let branches = match field("branches") {
            None => vec!["main".to_owned()],
            Some(v) => self.branches(v).unwrap_or_else(|| {
                ok = false;
                Vec::new()
            }),
        };
        let poll_ms = match field("poll") {
            None => Some(DEFAULT_POLL_MS),
            Some(v) => match self.poll(v) {
                Ok(poll) => poll,
                Err(()) => {
                    ok = false;
                    None
                }
            },
        };
        let webhook_secret = match field("webhook") {
            None => None,
            Some(v) => {
                let secret = self.webhook(v);
                ok &= secret.is_some();
                secret
            }
        };
        if ok {
            self.change_source = Some(ChangeSource {
                repo,
                branches,
                poll_ms,
                webhook_secret,
                span: node.span,
            });
        }
    }

    fn branches(&mut self, node: &Node) -> Option<Vec<String>> {
        let Y::Seq(items) = &node.value else {
            self.wrong_type(node, "source.branches", "a list of branch names: `[main]`");
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let path = format!("source.branches[{i}]");
            let Some(name) = self.string(item, &path) else {
                ok = false;
                continue;
            };
            let problem = if name.starts_with("refs/") {
                Some("is a full ref; write the branch's short name".to_owned())
            } else if name.is_empty()
                || name.contains(|c: char| c.is_whitespace() || c.is_control())
                || name.contains("..")
                || name.starts_with('-')
            {
                Some("is not a branch name".to_owned())
            } else {
                None
            };
            match problem {
                Some(why) => {
                    let help = match name.strip_prefix("refs/heads/") {
                        Some(short) => format!("write `{short}`"),
                        None => "e.g. `main`, `release/1.x`".to_owned(),
                    };
                    self.emit(
                        Diagnostic::new(
                            Code::InvalidValue,
                            item.span,
                            &path,
                            format!("`{name}` {why}"),
                        )
                        .label("expected a branch name")
                        .help(help),
                    );
                    ok = false;
                }
                None => out.push(name),
            }
        }
        if ok && out.is_empty() {
            self.emit(
                Diagnostic::new(
                    Code::InvalidValue,
                    node.span,
                    "source.branches",
                    "`source.branches` is empty, so no push would ever be followed",
                )
                .label("expected at least one branch")
                .help("name the branches to follow, e.g. `[main]`, or remove `source:`"),
            );
            ok = false;
        }
        ok.then_some(out)
    }

    /// `poll: 10s` → Some(ms); `poll: off` → None.
    fn poll(&mut self, node: &Node) -> Result<Option<u64>, ()> {
        let text = match &node.value {
            Y::String { text, .. } => text.clone(),
            Y::Bool(false) => return Ok(None),
            _ => {
                self.wrong_type(node, "source.poll", "a duration such as `10s`, or `off`");
                return Err(());
            }
        };
        if text == "off" {
            return Ok(None);
        }
        let problem = match units::parse_duration(&text) {
            Ok(ms) if ms >= MIN_POLL_MS => return Ok(Some(ms)),
            Ok(_) => format!("`{text}` is shorter than the 1s minimum"),
            Err(why) => why,
        };
        self.emit(
            Diagnostic::new(Code::BadUnit, node.span, "source.poll", problem)
                .label("expected a duration of at least 1s, or `off`")
                .help("e.g. `10s`, `1m`; `off` follows pushes only through the hook and webhooks"),
        );
        Err(())
    }

    /// `webhook: { secret: ${{ secrets.NAME }} }` → the secret's name.
    fn webhook(&mut self, node: &Node) -> Option<String> {
        let expected = "`{ secret: ${{ secrets.hook }} }`";
        let fields = self.map(node, "source.webhook", expected)?;
        self.check_keys(fields, WEBHOOK_KEYS, "source.webhook", "`source.webhook`");
        let Some((_, value)) = fields.iter().find(|(k, _)| k.text == "secret") else {
            self.emit(
                Diagnostic::new(
                    Code::MissingKey,
                    node.span,
                    "source.webhook.secret",
                    "`source.webhook` has no `secret`",
                )
                .label("expected a `secret:` key in this mapping")
                .help(format!(
                    "webhooks are only accepted when signed with a shared secret: {expected}"
                )),
            );
            return None;
        };
        let text = self.string(value, "source.webhook.secret")?;
        let name = secret_reference(&text);
        let help = |declared: &[&String]| {
            if declared.is_empty() {
                "declare it under `secrets:` (e.g. `hook: { env: KILN_HOOK_SECRET }`) and write `${{ secrets.hook }}`".to_owned()
            } else {
                format!(
                    "write `${{{{ secrets.NAME }}}}` with one of: {}",
                    declared
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        };
        let declared: Vec<&String> = self.secrets.keys().collect();
        let message = match name {
            Some(name) if self.secrets.contains_key(name) => return Some(name.to_owned()),
            Some(name) => format!("the stack declares no secret `{name}`"),
            None => "the webhook secret must come from `secrets:`, never be written in the file"
                .to_owned(),
        };
        let help = help(&declared);
        self.emit(
            Diagnostic::new(
                Code::InvalidValue,
                value.span,
                "source.webhook.secret",
                message,
            )
            .label("expected `${{ secrets.NAME }}`")
            .help(help),
        );
        None
    }
}

/// `${{ secrets.NAME }}` (spaces optional) → `NAME`.
fn secret_reference(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("${{")?.strip_suffix("}}")?.trim();
    let name = inner.strip_prefix("secrets.")?;
    (!name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
    .then_some(name)
}

#[cfg(test)]
mod tests {
    use super::secret_reference;

    #[test]
    fn only_a_bare_secret_reference_names_a_secret() {
        assert_eq!(secret_reference("${{ secrets.hook }}"), Some("hook"));
        assert_eq!(secret_reference("${{secrets.hook_2}}"), Some("hook_2"));
        assert_eq!(secret_reference("hunter2"), None);
        assert_eq!(secret_reference("${{ vars.hook }}"), None);
        assert_eq!(secret_reference("${{ secrets.a || 'x' }}"), None);
    }
}
