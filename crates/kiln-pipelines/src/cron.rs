//! `on.schedule`'s cron expressions, checked as GitHub documents them: five fields (minute
//! 0-59, hour 0-23, day of the month 1-31, month 1-12 or `JAN`-`DEC`, day of the week 0-6 or
//! `SUN`-`SAT`), each a list of `*`, values or ranges, each with an optional `/step`. Pure.

/// One field of the expression: its name, bounds and the names its values may take.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    /// Names of the values from `min` up (`JAN` is 1, `SUN` is 0).
    names: &'static [&'static str],
}

const FIELDS: [Field; 5] = [
    Field {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
    },
    Field {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
    },
    Field {
        name: "day of the month",
        min: 1,
        max: 31,
        names: &[],
    },
    Field {
        name: "month",
        min: 1,
        max: 12,
        names: &[
            "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
        ],
    },
    // 7 is Sunday too in most crons; accepted rather than refuse a schedule GitHub may run.
    Field {
        name: "day of the week",
        min: 0,
        max: 7,
        names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
    },
];

/// Checks a cron expression; the error says which field and value is wrong.
pub(crate) fn check(expression: &str) -> Result<(), String> {
    let fields: Vec<&str> = expression.split_whitespace().collect();
    if fields.len() != FIELDS.len() {
        return Err(format!(
            "a cron expression has five fields (minute, hour, day of the month, month, day of the week), not {}",
            fields.len()
        ));
    }
    for (text, field) in fields.iter().zip(&FIELDS) {
        for item in text.split(',') {
            check_item(item, field).map_err(|why| format!("{} `{item}` {why}", field.name))?;
        }
    }
    Ok(())
}

fn check_item(item: &str, field: &Field) -> Result<(), String> {
    let (range, step) = match item.split_once('/') {
        Some((range, step)) => (range, Some(step)),
        None => (item, None),
    };
    if let Some(step) = step {
        match step.parse::<u32>() {
            Ok(n) if n > 0 => {}
            _ => return Err(format!("has a step `{step}` that is not a positive number")),
        }
    }
    if range == "*" {
        return Ok(());
    }
    let (low, high) = match range.split_once('-') {
        Some((low, high)) => (value(low, field)?, value(high, field)?),
        None => {
            let v = value(range, field)?;
            (v, v)
        }
    };
    if low > high {
        return Err(format!("is a range that runs backwards ({low} > {high})"));
    }
    Ok(())
}

fn value(text: &str, field: &Field) -> Result<u32, String> {
    if let Some(i) = field
        .names
        .iter()
        .position(|n| n.eq_ignore_ascii_case(text))
    {
        // Names count from the field's lowest value: JAN is 1, SUN is 0.
        return Ok(field.min + u32::try_from(i).unwrap_or(u32::MAX));
    }
    match text.parse::<u32>() {
        Ok(n) if (field.min..=field.max).contains(&n) => Ok(n),
        Ok(_) => Err(format!("is out of range {}-{}", field.min, field.max)),
        Err(_) => Err(if text.is_empty() {
            "is empty".to_owned()
        } else {
            "is not a number".to_owned()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_documented_forms_are_accepted() {
        for ok in [
            "* * * * *",
            "30 5,17 * * *",
            "*/15 * * * *",
            "0 0 1 JAN,jul MON-FRI",
            "0 9-17/2 * * 1-5",
            "5 4 * * sun",
            "0 0 * * 7",
            "15/10 * * * *",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn mistakes_name_the_field_and_value() {
        let cases = [
            ("61 * * * *", "minute `61` is out of range 0-59"),
            ("* 24 * * *", "hour `24` is out of range 0-23"),
            ("* * 0 * *", "day of the month `0` is out of range 1-31"),
            ("* * * 13 *", "month `13` is out of range 1-12"),
            (
                "* * * * MON-SUNDAY",
                "day of the week `MON-SUNDAY` is not a number",
            ),
            (
                "*/0 * * * *",
                "minute `*/0` has a step `0` that is not a positive number",
            ),
            (
                "5-1 * * * *",
                "minute `5-1` is a range that runs backwards (5 > 1)",
            ),
            ("1,,2 * * * *", "minute `` is empty"),
            ("@daily", "a cron expression has five fields"),
        ];
        for (expression, want) in cases {
            let got = check(expression).unwrap_err();
            assert!(got.contains(want), "{expression}: {got}");
        }
    }

    proptest::proptest! {
        /// Any text is accepted or refused with a reason, never a panic.
        #[test]
        fn any_text_is_checked_without_panicking(text in "[0-9A-Za-z*/,\\- ]{0,40}") {
            let _ = check(&text);
        }
    }
}
