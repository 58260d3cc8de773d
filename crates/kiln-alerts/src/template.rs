//! Annotation templates: `{{ $labels.NAME }}` and `{{ $value }}` rendered as Prometheus renders
//! them (Go's `%v` for the value, so `1e+06` and `0.5` read the same in kiln and Prometheus).

use kiln_spec::alerting::{TemplatePiece, parse_template};

use crate::LabelSet;

/// Renders a template (checked at load time; a template that no longer parses is shown as
/// written).
pub fn render(template: &str, labels: &LabelSet, value: f64) -> String {
    let Ok(pieces) = parse_template(template) else {
        return template.to_owned();
    };
    let mut out = String::new();
    for piece in pieces {
        match piece {
            TemplatePiece::Text(text) => out.push_str(&text),
            TemplatePiece::Value => out.push_str(&format_value(value)),
            TemplatePiece::Label(name) => {
                out.push_str(labels.get(&name).map_or("", String::as_str));
            }
        }
    }
    out
}

/// A float as Go's `fmt` prints `%v` (`strconv.FormatFloat(v, 'g', -1, 64)`): the shortest
/// representation, in exponent form when the exponent is below -4 or at least 6.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.into();
    }
    // Rust's `{:e}` is the shortest round-tripping mantissa with its exponent: `1.5e6`.
    let sci = format!("{v:e}");
    let Some((mantissa, exp)) = sci.split_once('e') else {
        return sci;
    };
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..6).contains(&exp) {
        return format!("{v}");
    }
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_print_as_go_prints_them() {
        assert_eq!(format_value(0.5), "0.5");
        assert_eq!(format_value(3.0), "3");
        assert_eq!(format_value(0.0144), "0.0144");
        assert_eq!(format_value(0.00001), "1e-05");
        assert_eq!(format_value(123456.0), "123456");
        assert_eq!(format_value(1e6), "1e+06");
        assert_eq!(format_value(1234567.0), "1.234567e+06");
        assert_eq!(format_value(1e21), "1e+21");
        assert_eq!(format_value(1.5e22), "1.5e+22");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
    }

    #[test]
    fn labels_and_value() {
        let labels: LabelSet = [("route".to_owned(), "routes.api".to_owned())].into();
        assert_eq!(
            render(
                "{{ $labels.route }} at {{ $value }}, {{ $labels.none }}.",
                &labels,
                0.25
            ),
            "routes.api at 0.25, ."
        );
    }
}
