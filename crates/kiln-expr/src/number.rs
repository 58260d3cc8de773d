//! Number conversions that must match GitHub byte for byte.
//!
//! Two directions matter:
//! - text to number, used by the lexer for numeric literals and by the `==`/`<` coercion of
//!   strings. GitHub follows JavaScript's `Number(text)`: surrounding whitespace is ignored, the
//!   empty string is 0, `0x`/`0o`/`0b` prefixes are allowed (without a sign), `Infinity` may be
//!   signed, and anything else that is not a plain decimal is NaN.
//! - number to text, used whenever a number becomes a string. GitHub's runner formats with .NET's
//!   `G15`: at most 15 significant digits, trailing zeros dropped, scientific notation (`1E+15`,
//!   `1E-05`) outside the exponent range -4..=14, and zero (including -0) is `"0"`.

/// Significant digits kept when formatting, as GitHub's `G15`.
const SIGNIFICANT_DIGITS: usize = 15;

/// Parses `text` the way JavaScript's `Number(text)` does; NaN when it is not a number.
pub(crate) fn parse_number(text: &str) -> f64 {
    let trimmed = text.trim_matches(is_js_whitespace);
    if trimmed.is_empty() {
        return 0.0;
    }
    if let Some(value) = parse_prefixed_integer(trimmed) {
        return value;
    }
    parse_decimal(trimmed).unwrap_or(f64::NAN)
}

/// JavaScript's whitespace set for `Number()` trimming: Unicode white space plus the BOM.
pub(crate) fn is_js_whitespace(c: char) -> bool {
    c.is_whitespace() || c == '\u{feff}'
}

/// `0x1F`, `0o17`, `0b101` (no sign allowed, at least one digit). `None` when there is no such
/// prefix; NaN when there is a prefix but the digits are invalid.
fn parse_prefixed_integer(text: &str) -> Option<f64> {
    let bytes = text.as_bytes();
    if bytes.len() < 2 || bytes[0] != b'0' {
        return None;
    }
    let radix = match bytes[1] {
        b'x' | b'X' => 16,
        b'o' | b'O' => 8,
        b'b' | b'B' => 2,
        _ => return None,
    };
    let digits = &text[2..];
    if digits.is_empty() {
        return Some(f64::NAN);
    }
    let mut value = 0.0_f64;
    for c in digits.chars() {
        match c.to_digit(radix) {
            Some(d) => value = value * f64::from(radix) + f64::from(d),
            None => return Some(f64::NAN),
        }
    }
    Some(value)
}

/// A signed decimal: `Infinity`, or digits with an optional fraction and exponent. The shape is
/// checked by hand because Rust's `f64::from_str` also accepts `inf`, `nan` and friends.
fn parse_decimal(text: &str) -> Option<f64> {
    let (negative, unsigned) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let magnitude = if unsigned == "Infinity" {
        f64::INFINITY
    } else if is_decimal_shape(unsigned) {
        unsigned.parse::<f64>().ok()?
    } else {
        return None;
    };
    Some(if negative { -magnitude } else { magnitude })
}

/// `digits [. digits] [e [sign] digits]` or `. digits [...]`, with at least one mantissa digit.
fn is_decimal_shape(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut i = 0;
    let int_digits = count_digits(&bytes[i..]);
    i += int_digits;
    let mut frac_digits = 0;
    if bytes.get(i) == Some(&b'.') {
        i += 1;
        frac_digits = count_digits(&bytes[i..]);
        i += frac_digits;
    }
    if int_digits + frac_digits == 0 {
        return false;
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(bytes.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let exp_digits = count_digits(&bytes[i..]);
        if exp_digits == 0 {
            return false;
        }
        i += exp_digits;
    }
    i == bytes.len()
}

fn count_digits(bytes: &[u8]) -> usize {
    bytes.iter().take_while(|b| b.is_ascii_digit()).count()
}

/// Formats `value` as GitHub does when a number becomes a string (.NET `G15`, zero as `"0"`).
pub(crate) fn format_number(value: f64) -> String {
    if value.is_nan() {
        return "NaN".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    if value == 0.0 {
        // Covers -0 too: GitHub never prints a negative zero.
        return "0".to_owned();
    }
    let (negative, digits, exponent) = significant_digits(value);
    // .NET uses fixed notation when -5 < exponent < precision.
    let body = if (-4..SIGNIFICANT_DIGITS as i32).contains(&exponent) {
        fixed_notation(&digits, exponent)
    } else {
        scientific_notation(&digits, exponent)
    };
    if negative { format!("-{body}") } else { body }
}

/// Rounds to 15 significant digits. Returns the sign, the digits without trailing zeros
/// (at least one) and the decimal exponent of the first digit.
fn significant_digits(value: f64) -> (bool, String, i32) {
    // `{:.14e}` rounds correctly to 15 significant digits: "d.dddddddddddddde<exp>".
    let text = format!("{:.*e}", SIGNIFICANT_DIGITS - 1, value.abs());
    let (mantissa, exponent) = text.split_once('e').unwrap_or((text.as_str(), "0"));
    let exponent = exponent.parse::<i32>().unwrap_or(0);
    let mut digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    while digits.len() > 1 && digits.ends_with('0') {
        digits.pop();
    }
    (value.is_sign_negative(), digits, exponent)
}

fn fixed_notation(digits: &str, exponent: i32) -> String {
    if exponent < 0 {
        let zeros = "0".repeat(exponent.unsigned_abs() as usize - 1);
        return format!("0.{zeros}{digits}");
    }
    let int_len = exponent as usize + 1;
    if digits.len() <= int_len {
        let zeros = "0".repeat(int_len - digits.len());
        format!("{digits}{zeros}")
    } else {
        format!("{}.{}", &digits[..int_len], &digits[int_len..])
    }
}

fn scientific_notation(digits: &str, exponent: i32) -> String {
    let (first, rest) = digits.split_at(1);
    let sign = if exponent < 0 { '-' } else { '+' };
    let mantissa = if rest.is_empty() {
        first.to_owned()
    } else {
        format!("{first}.{rest}")
    };
    format!("{mantissa}E{sign}{:02}", exponent.unsigned_abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_javascript_number() {
        assert_eq!(parse_number(""), 0.0);
        assert_eq!(parse_number("  12 "), 12.0);
        assert_eq!(parse_number("0xfF"), 255.0);
        assert_eq!(parse_number("0o10"), 8.0);
        assert_eq!(parse_number("0b11"), 3.0);
        assert_eq!(parse_number("-.5"), -0.5);
        assert_eq!(parse_number("1."), 1.0);
        assert_eq!(parse_number("1E+1"), 10.0);
        assert_eq!(parse_number("-Infinity"), f64::NEG_INFINITY);
        for bad in [
            "-0xFF", "0x", "0xFZ", "0x01p2", "abc", ".", "1e", "inf", "nan", "NaN", "-Inf",
        ] {
            assert!(parse_number(bad).is_nan(), "{bad}");
        }
    }

    #[test]
    fn formats_like_github() {
        let cases: &[(f64, &str)] = &[
            (1.0, "1"),
            (-0.0, "0"),
            (0.5, "0.5"),
            (-123456.789, "-123456.789"),
            (0.845_512_408_225_570_1, "0.84551240822557"),
            (1.2e-2, "0.012"),
            (123_456_789.0, "123456789"),
            (1e14, "100000000000000"),
            (1e15, "1E+15"),
            (1.5e20, "1.5E+20"),
            (0.0001, "0.0001"),
            (0.00001, "1E-05"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Infinity"),
        ];
        for (value, expected) in cases {
            assert_eq!(format_number(*value), *expected, "{value}");
        }
    }
}
