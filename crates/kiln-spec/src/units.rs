//! Units written in stack files: durations (`1s`, `5m`, `1h30m`), sizes (`256Mi`, `1G`) and
//! percentages (`99.99%`). Each parser returns a plain number or a sentence saying what was wrong.

/// Milliseconds per unit suffix accepted in durations.
const DURATION_UNITS: &[(&str, u64)] = &[
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
    ("w", 604_800_000),
];

/// Parses a duration such as `500ms`, `5m` or `1h30m` into milliseconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("`{text}` must start with a number, like `30s`"));
        }
        let (number, after) = rest.split_at(digits);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(format!(
                "`{text}` has no unit; write `{number}s` or `{number}ms`"
            ));
        }
        let Some(&(_, factor)) = DURATION_UNITS.iter().find(|(u, _)| *u == unit) else {
            return Err(format!(
                "unknown duration unit `{unit}` in `{text}`; use ms, s, m, h, d or w"
            ));
        };
        let value: f64 = number
            .parse()
            .map_err(|_| format!("`{number}` is not a number"))?;
        let ms = value * factor as f64;
        if !ms.is_finite() || ms > u64::MAX as f64 / 2.0 {
            return Err(format!("`{text}` is too long"));
        }
        total = total.saturating_add(ms.round() as u64);
        rest = next;
    }
    Ok(total)
}

/// Bytes per unit suffix accepted in sizes (Kubernetes quantities).
const SIZE_UNITS: &[(&str, u64)] = &[
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("k", 1_000),
    ("K", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
    ("B", 1),
    ("", 1),
];

/// A duration in its largest whole unit, as [`parse_duration`] reads it back: `1h`, `30m`,
/// `45s`, `1500ms`.
pub fn format_duration(ms: u64) -> String {
    if ms > 0 && ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms > 0 && ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    }
}

/// Parses a size such as `256Mi`, `1G` or `512` (bytes) into bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(format!("`{text}` must start with a number, like `256Mi`"));
    }
    let Some(&(_, factor)) = SIZE_UNITS.iter().find(|(u, _)| *u == unit) else {
        return Err(format!(
            "unknown size unit `{unit}` in `{text}`; use Ki, Mi, Gi, Ti, k, M, G or T"
        ));
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{number}` is not a number"))?;
    let bytes = value * factor as f64;
    if !bytes.is_finite() || bytes > u64::MAX as f64 / 2.0 {
        return Err(format!("`{text}` is too large"));
    }
    Ok(bytes.round() as u64)
}

/// Parses a percentage such as `99.99%` into a fraction in `0.0..=1.0`.
pub fn parse_percent(text: &str) -> Result<f64, String> {
    let text = text.trim();
    let Some(number) = text.strip_suffix('%') else {
        return Err(format!(
            "`{text}` is not a percentage; write it with a `%`, like `99.9%`"
        ));
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{number}` is not a number"))?;
    if !(0.0..=100.0).contains(&value) {
        return Err(format!("`{text}` is outside 0%..100%"));
    }
    Ok(value / 100.0)
}

/// Parses canary traffic steps: whole percentages strictly between 0 and 100, each larger
/// than the one before, written `10%` or `10`; returns them as numbers.
pub fn parse_traffic_steps(value: &serde_json::Value) -> Result<Vec<u64>, String> {
    let serde_json::Value::Array(items) = value else {
        return Err("steps must be a list of percentages".into());
    };
    let mut steps: Vec<u64> = Vec::with_capacity(items.len());
    for item in items {
        let percent = match item {
            serde_json::Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
            serde_json::Value::String(s) => parse_percent(s)? * 100.0,
            other => return Err(format!("`{other}` is not a percentage")),
        };
        if !(percent > 0.0 && percent < 100.0) {
            return Err(format!(
                "a step of {percent}% sends {} traffic to the canary; steps lie strictly between 0% and 100% (100% is the promotion that follows them)",
                if percent <= 0.0 { "no" } else { "all" }
            ));
        }
        if (percent - percent.round()).abs() > 1e-9 {
            return Err(format!("{percent}% is not a whole percentage"));
        }
        let percent = percent.round() as u64;
        if steps.last().is_some_and(|&last| percent <= last) {
            return Err(format!(
                "{percent}% after {}%: each step must send more traffic than the one before",
                steps.last().copied().unwrap_or_default()
            ));
        }
        steps.push(percent);
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1s"), Ok(1_000));
        assert_eq!(parse_duration("500ms"), Ok(500));
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration("1.5s"), Ok(1_500));
        assert!(parse_duration("5").unwrap_err().contains("no unit"));
        assert!(
            parse_duration("5x")
                .unwrap_err()
                .contains("unknown duration unit")
        );
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256Mi"), Ok(256 << 20));
        assert_eq!(parse_size("1G"), Ok(1_000_000_000));
        assert_eq!(parse_size("512"), Ok(512));
        assert!(parse_size("12Zi").is_err());
    }

    #[test]
    fn traffic_steps() {
        use serde_json::json;
        assert_eq!(
            parse_traffic_steps(&json!(["10%", 50, "90%"])),
            Ok(vec![10, 50, 90])
        );
        for bad in [
            json!([150]),
            json!(["0%"]),
            json!([50, 10]),
            json!(["12.5%"]),
            json!(["ten"]),
            json!(true),
            json!([100]),
        ] {
            assert!(parse_traffic_steps(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn percents() {
        assert_eq!(parse_percent("50%"), Ok(0.5));
        assert!(parse_percent("99.99").is_err());
        assert!(parse_percent("101%").is_err());
    }

    proptest::proptest! {
        #[test]
        fn units_never_panic(s in "\\PC{0,30}") {
            let _ = parse_duration(&s);
            let _ = parse_size(&s);
            let _ = parse_percent(&s);
        }

        #[test]
        fn whole_seconds_round_trip(n in 0u64..1_000_000) {
            proptest::prop_assert_eq!(parse_duration(&format!("{n}s")), Ok(n * 1000));
        }
    }
}
