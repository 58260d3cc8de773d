//! Label matchers (`=`, `!=`, `=~`, `!~`), with Prometheus's fully anchored regexes.

use regex::Regex;

use crate::labels::Labels;

/// How a matcher compares a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `=~` (anchored at both ends)
    Re,
    /// `!~` (anchored at both ends)
    Nre,
}

/// `name op "value"`; an absent label matches as the empty string, as in Prometheus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    /// The label name.
    pub name: String,
    /// The comparison.
    pub op: MatchOp,
    /// The value or regex source.
    pub value: String,
}

/// A regex matcher whose pattern does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid regex {pattern:?} in matcher on {name}: {reason}")]
pub struct BadRegex {
    /// The label name.
    pub name: String,
    /// The pattern.
    pub pattern: String,
    /// The regex crate's message.
    pub reason: String,
}

impl Matcher {
    /// A matcher.
    pub fn new(name: impl Into<String>, op: MatchOp, value: impl Into<String>) -> Self {
        Matcher {
            name: name.into(),
            op,
            value: value.into(),
        }
    }

    /// Shorthand for `name="value"`.
    pub fn eq(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self::new(name, MatchOp::Eq, value)
    }

    /// Compiles the regex (if any) so matching many values is cheap.
    pub fn compile(&self) -> Result<CompiledMatcher, BadRegex> {
        let re = match self.op {
            MatchOp::Eq | MatchOp::Ne => None,
            MatchOp::Re | MatchOp::Nre => Some(
                // Anchored like Prometheus: `=~"a"` must not match "ab".
                Regex::new(&format!("^(?s:{})$", self.value)).map_err(|e| BadRegex {
                    name: self.name.clone(),
                    pattern: self.value.clone(),
                    reason: e.to_string(),
                })?,
            ),
        };
        Ok(CompiledMatcher {
            m: self.clone(),
            re,
        })
    }
}

/// A matcher ready to test values.
#[derive(Debug, Clone)]
pub struct CompiledMatcher {
    m: Matcher,
    re: Option<Regex>,
}

impl CompiledMatcher {
    /// The source matcher.
    pub fn matcher(&self) -> &Matcher {
        &self.m
    }

    /// Tests one value ("" for an absent label).
    pub fn matches(&self, value: &str) -> bool {
        match (self.m.op, &self.re) {
            (MatchOp::Eq, _) => value == self.m.value,
            (MatchOp::Ne, _) => value != self.m.value,
            (MatchOp::Re, Some(re)) => re.is_match(value),
            (MatchOp::Nre, Some(re)) => !re.is_match(value),
            // compile() always sets the regex for Re/Nre.
            (MatchOp::Re | MatchOp::Nre, None) => false,
        }
    }

    /// Tests a label set.
    pub fn matches_labels(&self, labels: &Labels) -> bool {
        self.matches(labels.get(&self.m.name).unwrap_or(""))
    }

    /// The label name.
    pub fn name(&self) -> &str {
        &self.m.name
    }
}

/// Compiles all matchers.
pub fn compile_all(matchers: &[Matcher]) -> Result<Vec<CompiledMatcher>, BadRegex> {
    matchers.iter().map(Matcher::compile).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_is_anchored_and_absent_is_empty() {
        let m = Matcher::new("job", MatchOp::Re, "api|web")
            .compile()
            .unwrap();
        assert!(m.matches("api"));
        assert!(!m.matches("apix"));
        assert!(!m.matches("xapi"));
        let absent = Matcher::new("x", MatchOp::Re, ".*").compile().unwrap();
        assert!(absent.matches_labels(&Labels::default()));
        let ne = Matcher::new("x", MatchOp::Ne, "1").compile().unwrap();
        assert!(ne.matches_labels(&Labels::default()));
        assert!(Matcher::new("x", MatchOp::Re, "(").compile().is_err());
    }
}
