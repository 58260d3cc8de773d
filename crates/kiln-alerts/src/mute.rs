//! What keeps a firing alert from being notified: **silences** (matchers with a start, an end,
//! who made it and why) and **inhibition** (while an alert matching a rule's source matchers
//! fires, alerts matching its target matchers with equal values of its `equal` labels are
//! muted). Matchers follow Alertmanager: regexes are anchored, and a missing label is the
//! empty string.

use kiln_spec::alerting::{InhibitDecl, MatchOp, Matcher, parse_matcher};
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::LabelSet;

/// A matcher with its regex compiled.
#[derive(Debug, Clone)]
pub struct CompiledMatcher {
    matcher: Matcher,
    regex: Option<Regex>,
}

impl CompiledMatcher {
    /// Compiles a matcher; fails on a bad regex.
    pub fn new(matcher: Matcher) -> Result<CompiledMatcher, String> {
        let regex = match matcher.op {
            MatchOp::Regex | MatchOp::NotRegex => Some(
                Regex::new(&format!("^(?:{})$", matcher.value))
                    .map_err(|e| format!("`{matcher}`: invalid regex: {e}"))?,
            ),
            MatchOp::Equal | MatchOp::NotEqual => None,
        };
        Ok(CompiledMatcher { matcher, regex })
    }

    /// Parses and compiles `name="value"` and friends.
    pub fn parse(text: &str) -> Result<CompiledMatcher, String> {
        CompiledMatcher::new(parse_matcher(text)?)
    }

    /// The matcher as declared.
    pub fn matcher(&self) -> &Matcher {
        &self.matcher
    }

    /// Whether the labels satisfy the matcher.
    pub fn matches(&self, labels: &LabelSet) -> bool {
        let value = labels.get(&self.matcher.name).map_or("", String::as_str);
        match (&self.matcher.op, &self.regex) {
            (MatchOp::Equal, _) => value == self.matcher.value,
            (MatchOp::NotEqual, _) => value != self.matcher.value,
            (MatchOp::Regex, Some(re)) => re.is_match(value),
            (MatchOp::NotRegex, Some(re)) => !re.is_match(value),
            (MatchOp::Regex | MatchOp::NotRegex, None) => false,
        }
    }
}

/// Whether every matcher matches.
pub fn matches_all(matchers: &[CompiledMatcher], labels: &LabelSet) -> bool {
    matchers.iter().all(|m| m.matches(labels))
}

/// A silence: alerts matching all its matchers are not notified between `starts_at` and
/// `ends_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silence {
    /// Its id (a UUID).
    pub id: String,
    /// Matchers as written (`severity="page"`).
    pub matchers: Vec<String>,
    /// ms since the epoch.
    pub starts_at: i64,
    /// ms since the epoch; expiring a silence moves it to now.
    pub ends_at: i64,
    /// Who made it.
    pub created_by: String,
    /// Why.
    pub comment: String,
}

impl Silence {
    /// Whether the silence is in force at `now`.
    pub fn active(&self, now: i64) -> bool {
        self.starts_at <= now && now < self.ends_at
    }

    /// Its matchers, compiled.
    pub fn compiled(&self) -> Result<Vec<CompiledMatcher>, String> {
        self.matchers
            .iter()
            .map(|m| CompiledMatcher::parse(m))
            .collect()
    }

    /// Whether it mutes an alert with these labels at `now`.
    pub fn mutes(&self, labels: &LabelSet, now: i64) -> bool {
        self.active(now)
            && !self.matchers.is_empty()
            && self.compiled().is_ok_and(|m| matches_all(&m, labels))
    }
}

/// The stack's inhibit rules, compiled.
#[derive(Debug, Clone, Default)]
pub struct Inhibitor {
    rules: Vec<(Vec<CompiledMatcher>, Vec<CompiledMatcher>, Vec<String>)>,
}

impl Inhibitor {
    /// Compiles the rules (their regexes were checked at load time; a rule that fails to
    /// compile is left out).
    pub fn new(decls: &[InhibitDecl]) -> Inhibitor {
        let compile = |ms: &[Matcher]| -> Option<Vec<CompiledMatcher>> {
            ms.iter()
                .cloned()
                .map(|m| CompiledMatcher::new(m).ok())
                .collect()
        };
        Inhibitor {
            rules: decls
                .iter()
                .filter_map(|d| Some((compile(&d.source)?, compile(&d.target)?, d.equal.clone())))
                .collect(),
        }
    }

    /// Whether `target` is muted by one of `firing` (an alert never inhibits itself).
    pub fn inhibits(&self, target: &LabelSet, firing: &[&LabelSet]) -> bool {
        self.rules.iter().any(|(source, target_matchers, equal)| {
            matches_all(target_matchers, target)
                && firing.iter().any(|s| {
                    *s != target
                        && matches_all(source, s)
                        && equal.iter().all(|l| s.get(l) == target.get(l))
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> LabelSet {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn silence(matchers: &[&str], starts_at: i64, ends_at: i64) -> Silence {
        Silence {
            id: "s".into(),
            matchers: matchers.iter().map(|m| (*m).to_owned()).collect(),
            starts_at,
            ends_at,
            created_by: "ann".into(),
            comment: "deploying".into(),
        }
    }

    #[test]
    fn matchers_are_anchored_and_missing_labels_are_empty() {
        let api = labels(&[("service", "api-v2")]);
        let m = |t: &str| CompiledMatcher::parse(t).unwrap_or_else(|e| panic!("{e}"));
        assert!(!m("service=~\"api\"").matches(&api));
        assert!(m("service=~\"api.*\"").matches(&api));
        assert!(m("service!~\"web.*\"").matches(&api));
        assert!(m("team=\"\"").matches(&api));
        assert!(m("team!=\"web\"").matches(&api));
        assert!(!m("service!=\"api-v2\"").matches(&api));
        assert!(CompiledMatcher::parse("a=~\"(\"").is_err());
    }

    #[test]
    fn silences_mute_matching_alerts_within_their_time() {
        let page = labels(&[("alertname", "errors"), ("severity", "page")]);
        let ticket = labels(&[("alertname", "errors"), ("severity", "ticket")]);
        let s = silence(&["alertname=errors", "severity=\"page\""], 100, 200);
        assert!(s.mutes(&page, 100));
        assert!(s.mutes(&page, 199));
        assert!(!s.mutes(&page, 200), "ends_at is exclusive");
        assert!(!s.mutes(&page, 99));
        assert!(!s.mutes(&ticket, 150), "only what matches");
        assert!(
            !silence(&[], 0, 1_000).mutes(&page, 10),
            "no matchers mutes nothing"
        );
    }

    #[test]
    fn inhibition_needs_a_firing_source_with_equal_labels() {
        let m = |t: &str| parse_matcher(t).unwrap_or_else(|e| panic!("{e}"));
        let inhibitor = Inhibitor::new(&[InhibitDecl {
            source: vec![m("severity=page")],
            target: vec![m("severity=ticket")],
            equal: vec!["service".into()],
        }]);
        let page_api = labels(&[("severity", "page"), ("service", "api")]);
        let ticket_api = labels(&[("severity", "ticket"), ("service", "api")]);
        let ticket_web = labels(&[("severity", "ticket"), ("service", "web")]);
        let page_web = labels(&[("severity", "page"), ("service", "web")]);
        assert!(inhibitor.inhibits(&ticket_api, &[&page_api]));
        assert!(
            !inhibitor.inhibits(&ticket_web, &[&page_api]),
            "equal labels differ"
        );
        assert!(!inhibitor.inhibits(&page_web, &[&page_api]), "not a target");
        assert!(!inhibitor.inhibits(&ticket_api, &[]), "nothing fires");
        let both = Inhibitor::new(&[InhibitDecl {
            source: vec![m("service=api")],
            target: vec![m("service=api")],
            equal: vec![],
        }]);
        assert!(!both.inhibits(&page_api, &[&page_api]), "never itself");
    }
}
