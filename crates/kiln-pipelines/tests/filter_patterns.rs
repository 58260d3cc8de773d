//! The `on.push` filter matcher against an oracle: each random pattern is also written as the
//! regular expression GitHub's cheat sheet describes, and both must agree on random paths.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use kiln_pipelines::filter::{Pattern, selected};
use proptest::prelude::*;

/// One piece of a pattern: its filter text and the equivalent regular expression.
fn token() -> impl Strategy<Value = (String, String)> {
    let atom = prop_oneof![
        Just(("a".to_owned(), "a".to_owned())),
        Just(("b".to_owned(), "b".to_owned())),
        Just(("/".to_owned(), "/".to_owned())),
        Just((".".to_owned(), r"\.".to_owned())),
        Just(("[ab]".to_owned(), "[ab]".to_owned())),
        Just(("[a-c]".to_owned(), "[a-c]".to_owned())),
        Just((r"\*".to_owned(), r"\*".to_owned())),
    ];
    let quantified = (atom, prop_oneof![Just(""), Just("?"), Just("+")])
        .prop_map(|((p, r), q)| (format!("{p}{q}"), format!("(?:{r}){q}")));
    prop_oneof![
        4 => quantified,
        1 => Just(("*".to_owned(), "[^/]*".to_owned())),
        1 => Just(("**".to_owned(), ".*".to_owned())),
        1 => Just(("**/".to_owned(), "(?:.*/)?".to_owned())),
    ]
}

fn pattern() -> impl Strategy<Value = (String, regex::Regex)> {
    prop::collection::vec(token(), 0..7).prop_map(|tokens| {
        // `*` then `*` would read as `**`: keep single stars apart with a literal.
        let mut text = String::new();
        let mut re = String::from("^");
        for (t, r) in tokens {
            // `**` then `/` would read as `**/`, which may also match nothing.
            if (text.ends_with('*') && t.starts_with('*'))
                || (text.ends_with("**") && t.starts_with('/'))
            {
                text.push('a');
                re.push('a');
            }
            text.push_str(&t);
            re.push_str(&r);
        }
        re.push('$');
        (text, regex::Regex::new(&re).unwrap())
    })
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just('a'),
            Just('b'),
            Just('c'),
            Just('/'),
            Just('.'),
            Just('*')
        ],
        0..12,
    )
    .prop_map(|c| c.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn agrees_with_the_regex_oracle((text, re) in pattern(), paths in prop::collection::vec(path(), 1..8)) {
        let p = Pattern::new(&text);
        for s in &paths {
            prop_assert_eq!(p.matches(s), re.is_match(s), "pattern `{}` (regex `{}`) on `{}`", text, re.as_str(), s);
        }
    }

    #[test]
    fn escaped_text_matches_itself_only(s in "[a-z/*?+\\[\\]!.-]{0,12}", other in "[a-z/.]{0,12}") {
        let escaped: String = s.chars().flat_map(|c| ['\\', c]).collect();
        let p = Pattern::new(&escaped);
        prop_assert!(p.matches(&s));
        prop_assert_eq!(p.matches(&other), other == s);
    }

    #[test]
    fn last_matching_pattern_decides(name in "[ab/]{0,6}", a in "[ab*/]{1,4}", b in "[ab*/]{1,4}") {
        let (pa, pb) = (Pattern::new(&a), Pattern::new(&b));
        let list = [pa.clone(), Pattern::new(&format!("!{b}"))];
        prop_assert_eq!(selected(&list, &name), pa.matches(&name) && !pb.matches(&name));
        let list = [Pattern::new(&format!("!{a}")), pb.clone()];
        prop_assert_eq!(selected(&list, &name), pb.matches(&name));
    }

    #[test]
    fn any_text_compiles_and_matches_quickly(p in ".{0,64}", s in ".{0,256}") {
        let _ = Pattern::new(&p).matches(&s);
    }
}
