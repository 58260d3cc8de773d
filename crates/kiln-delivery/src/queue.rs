//! Pushes waiting for their pipelines. While a branch's pipeline runs, newer pushes of that
//! branch wait; they collapse to the newest head, since running an intermediate commit whose
//! result nobody would deploy only delays the one that matters. Branches are served in the
//! order their first waiting push arrived.

use std::collections::VecDeque;

use crate::Push;

/// The waiting pushes, at most one per branch. The delivery actor owns it.
#[derive(Debug, Default)]
pub struct PushQueue {
    waiting: VecDeque<Waiting>,
}

/// One branch's waiting push and the heads it replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// The push to run: `before` is the oldest replaced push's, so the changed files cover every
    /// collapsed commit; `after` is the newest head.
    pub push: Push,
    /// The heads it replaced, oldest first.
    pub superseded: Vec<String>,
}

impl PushQueue {
    /// Adds a push; a push of a branch already waiting replaces it (keeping the older `before`
    /// and the union of known changed files). Returns the head it replaced, if any.
    pub fn offer(&mut self, push: Push) -> Option<String> {
        let Some(waiting) = self
            .waiting
            .iter_mut()
            .find(|w| w.push.git_ref == push.git_ref)
        else {
            self.waiting.push_back(Waiting {
                push,
                superseded: Vec::new(),
            });
            return None;
        };
        if waiting.push.after == push.after {
            return None;
        }
        let replaced = std::mem::replace(&mut waiting.push.after, push.after);
        waiting.superseded.push(replaced.clone());
        waiting.push.changed = match (waiting.push.changed.take(), push.changed) {
            (Some(mut old), Some(new)) => {
                old.extend(new);
                old.sort();
                old.dedup();
                Some(old)
            }
            // One side does not know its files: let git compute them over the whole range.
            _ => None,
        };
        if waiting.push.source != push.source {
            waiting.push.source = push.source;
        }
        Some(replaced)
    }

    /// The next push to run, oldest branch first.
    pub fn take(&mut self) -> Option<Waiting> {
        self.waiting.pop_front()
    }

    /// How many branches wait.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(branch: &str, before: &str, after: &str, changed: Option<&[&str]>) -> Push {
        Push {
            git_ref: format!("refs/heads/{branch}"),
            before: Some(before.into()),
            after: after.into(),
            changed: changed.map(|c| c.iter().map(|s| (*s).to_owned()).collect()),
            source: "poll".into(),
        }
    }

    #[test]
    fn pushes_of_one_branch_collapse_to_the_newest() {
        let mut queue = PushQueue::default();
        assert_eq!(queue.offer(push("main", "a", "b", Some(&["x"]))), None);
        assert_eq!(queue.offer(push("dev", "d", "e", None)), None);
        assert_eq!(
            queue.offer(push("main", "b", "c", Some(&["y", "x"]))),
            Some("b".into())
        );
        assert_eq!(
            queue.offer(push("main", "c", "f", Some(&["z"]))),
            Some("c".into())
        );
        assert_eq!(queue.len(), 2);
        let main = queue.take();
        assert_eq!(
            main,
            Some(Waiting {
                push: push("main", "a", "f", Some(&["x", "y", "z"])),
                superseded: vec!["b".into(), "c".into()],
            })
        );
        assert_eq!(queue.take().map(|w| w.push.after), Some("e".to_owned()));
        assert!(queue.is_empty());
    }

    #[test]
    fn the_same_head_twice_is_one_push_and_unknown_files_stay_unknown() {
        let mut queue = PushQueue::default();
        queue.offer(push("main", "a", "b", Some(&["x"])));
        assert_eq!(queue.offer(push("main", "a", "b", Some(&["x"]))), None);
        queue.offer(push("main", "b", "c", None));
        let waiting = queue.take();
        assert_eq!(
            waiting.map(|w| (w.push.before, w.push.after, w.push.changed)),
            Some((Some("a".into()), "c".into(), None))
        );
    }
}
