//! Parsing of the Prometheus text exposition format and OpenMetrics text, for scraping.
//!
//! The parser is line-based and strict: any malformed line is an [`ExpositionError`] with its
//! 1-based line number; it never panics (a fuzz target and a property test hold it to that).
//! Handled: `# HELP`, `# TYPE`, `# UNIT` (OpenMetrics), other comments, labels with `\\`, `\"`
//! and `\n` escapes, `NaN`/`±Inf` values, timestamps (milliseconds in the Prometheus format,
//! seconds in OpenMetrics), exemplars (skipped), `_bucket` samples needing `le`, and OpenMetrics'
//! mandatory final `# EOF`.
//!
//! [`scan_exposition`] validates everything [`parse_exposition`] does but keeps each sample's
//! series as its raw text (`name{labels}`, borrowed from the input) instead of building
//! [`Labels`]: a scraper that caches series by that text allocates nothing per known series.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::labels::{Labels, METRIC_NAME};

/// Which text format to parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

impl Format {
    /// Picks the format from an HTTP `Content-Type` header.
    pub fn from_content_type(ct: &str) -> Format {
        if ct.contains("application/openmetrics-text") {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }
}

/// A metric family's declared type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    /// `counter`
    Counter,
    /// `gauge`
    Gauge,
    /// `histogram`
    Histogram,
    /// `gaugehistogram` (OpenMetrics)
    GaugeHistogram,
    /// `summary`
    Summary,
    /// `info` (OpenMetrics)
    Info,
    /// `stateset` (OpenMetrics)
    StateSet,
    /// `untyped` / `unknown`
    Unknown,
}

/// Metadata of one family.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// The family name.
    pub name: String,
    /// Its type (`Unknown` when undeclared).
    pub kind: MetricType,
    /// The HELP text, unescaped.
    pub help: Option<String>,
    /// The UNIT (OpenMetrics).
    pub unit: Option<String>,
}

/// One parsed sample.
#[derive(Debug, Clone, PartialEq)]
pub struct ScrapedSample {
    /// Labels including `__name__`.
    pub labels: Labels,
    /// The value.
    pub value: f64,
    /// Timestamp in milliseconds, when the exposition gave one.
    pub timestamp_ms: Option<i64>,
}

/// A parsed exposition.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition {
    /// Families in order of first mention.
    pub families: Vec<Family>,
    /// Samples in input order.
    pub samples: Vec<ScrapedSample>,
}

/// One sample whose series is still its raw text, as [`scan_exposition`] returns it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawSample<'a> {
    /// The series exactly as written: the metric name and its `{...}` label block, if any.
    /// Equal text always means the same series (the reverse need not hold: label order and
    /// spacing may differ).
    pub series: &'a str,
    /// The value.
    pub value: f64,
    /// Timestamp in milliseconds, when the exposition gave one.
    pub timestamp_ms: Option<i64>,
}

impl RawSample<'_> {
    /// The series' labels, including `__name__`.
    pub fn labels(&self) -> Labels {
        series_labels(self.series)
    }
}

/// A scanned exposition: samples keep their series as text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scan<'a> {
    /// Families in order of first mention.
    pub families: Vec<Family>,
    /// Samples in input order.
    pub samples: Vec<RawSample<'a>>,
}

/// A malformed exposition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ExpositionError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Parses a whole exposition.
pub fn parse_exposition(text: &str, format: Format) -> Result<Exposition, ExpositionError> {
    let scan = scan_exposition(text, format)?;
    Ok(Exposition {
        families: scan.families,
        samples: scan
            .samples
            .iter()
            .map(|s| ScrapedSample {
                labels: s.labels(),
                value: s.value,
                timestamp_ms: s.timestamp_ms,
            })
            .collect(),
    })
}

/// Checks a whole exposition like [`parse_exposition`], keeping each series as its raw text.
pub fn scan_exposition(text: &str, format: Format) -> Result<Scan<'_>, ExpositionError> {
    let mut p = Parser {
        format,
        out: Scan::default(),
        family_index: HashMap::new(),
        names: Vec::new(),
    };
    let mut saw_eof = false;
    let mut line_no = 0;
    // The newline ending the last line does not start another line.
    let body = text.strip_suffix('\n').unwrap_or(text);
    let lines = (!body.is_empty())
        .then(|| body.split('\n'))
        .into_iter()
        .flatten();
    for (i, line) in lines.enumerate() {
        line_no = i + 1;
        let err = |message: String| ExpositionError {
            line: line_no,
            message,
        };
        if saw_eof {
            return Err(err("content after # EOF".into()));
        }
        let line = line.strip_suffix('\r').unwrap_or(line);
        if format == Format::OpenMetrics && line == "# EOF" {
            saw_eof = true;
            continue;
        }
        p.line(line).map_err(err)?;
    }
    if format == Format::OpenMetrics && !saw_eof {
        // Reported on the line where `# EOF` was expected.
        return Err(ExpositionError {
            line: line_no + 1,
            message: "missing # EOF".into(),
        });
    }
    Ok(p.out)
}

struct Parser<'a> {
    format: Format,
    out: Scan<'a>,
    family_index: HashMap<String, usize>,
    /// A sample's label names and raw values, reused from line to line.
    names: Vec<(&'a str, &'a str)>,
}

impl<'a> Parser<'a> {
    fn line(&mut self, line: &'a str) -> Result<(), String> {
        if line.trim().is_empty() {
            return if self.format == Format::OpenMetrics && !line.is_empty() {
                Err("blank line with spaces".into())
            } else if self.format == Format::OpenMetrics {
                Err("empty line".into())
            } else {
                Ok(())
            };
        }
        if let Some(rest) = line.strip_prefix('#') {
            return self.comment(rest);
        }
        self.sample(line)
    }

    fn family(&mut self, name: &str) -> &mut Family {
        let i = *self
            .family_index
            .entry(name.to_string())
            .or_insert_with(|| {
                self.out.families.push(Family {
                    name: name.to_string(),
                    kind: MetricType::Unknown,
                    help: None,
                    unit: None,
                });
                self.out.families.len() - 1
            });
        &mut self.out.families[i]
    }

    fn comment(&mut self, rest: &str) -> Result<(), String> {
        let rest = rest.strip_prefix(' ').unwrap_or(rest);
        let mut parts = rest.splitn(3, ' ');
        let keyword = parts.next().unwrap_or("");
        if !matches!(keyword, "HELP" | "TYPE" | "UNIT") {
            return if self.format == Format::OpenMetrics {
                Err(format!("unknown comment # {keyword}"))
            } else {
                Ok(())
            };
        }
        let name = parts.next().unwrap_or("");
        check_metric_name(name)?;
        let arg = parts.next().unwrap_or("");
        match keyword {
            "HELP" => self.family(name).help = Some(unescape(arg, false)?.into_owned()),
            "UNIT" => self.family(name).unit = Some(arg.to_string()),
            _ => {
                let kind = parse_type(arg, self.format)?;
                let f = self.family(name);
                if f.kind != MetricType::Unknown {
                    return Err(format!("second TYPE line for {name}"));
                }
                f.kind = kind;
            }
        }
        Ok(())
    }

    fn sample(&mut self, line: &'a str) -> Result<(), String> {
        let mut c = Cursor {
            s: line.as_bytes(),
            pos: 0,
        };
        let name = c.take_while(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':');
        check_metric_name(name)?;
        let mut names = std::mem::take(&mut self.names);
        names.clear();
        names.push((METRIC_NAME, name));
        if c.peek() == Some(b'{') {
            c.pos += 1;
            scan_labels(&mut c, |n, raw| names.push((n, raw)))?;
        }
        // The cursor stops only after ASCII bytes, so this is always a character boundary.
        let series = line.get(..c.pos).unwrap_or(line);
        for (i, (n, _)) in names.iter().enumerate() {
            if names[..i].iter().any(|(seen, _)| seen == n) {
                return Err(format!("duplicate label {n}"));
            }
        }
        let le = names.iter().find(|(n, _)| *n == "le").map(|(_, raw)| *raw);
        self.names = names;
        if c.peek() != Some(b' ') {
            return Err("expected a space before the value".into());
        }
        c.pos += 1;
        let value_text = c.take_while(|b| b != b' ');
        let value = parse_value(value_text)?;
        let timestamp_ms = self.timestamp(&mut c)?;
        self.check_family_rules(name, le)?;
        self.out.samples.push(RawSample {
            series,
            value,
            timestamp_ms,
        });
        Ok(())
    }

    fn timestamp(&self, c: &mut Cursor<'_>) -> Result<Option<i64>, String> {
        if c.peek() != Some(b' ') {
            return if c.at_end() {
                Ok(None)
            } else {
                Err("unexpected text after the value".into())
            };
        }
        c.pos += 1;
        if c.peek() == Some(b'#') {
            // An OpenMetrics exemplar without a timestamp before it.
            return self.exemplar(c).map(|()| None);
        }
        let text = c.take_while(|b| b != b' ');
        let ts = match self.format {
            Format::Prometheus => text
                .parse::<i64>()
                .map_err(|_| format!("invalid timestamp {text:?}"))?,
            Format::OpenMetrics => {
                let secs: f64 = text
                    .parse()
                    .map_err(|_| format!("invalid timestamp {text:?}"))?;
                if !secs.is_finite() {
                    return Err(format!("invalid timestamp {text:?}"));
                }
                (secs * 1000.0).round() as i64
            }
        };
        if c.peek() == Some(b' ') {
            c.pos += 1;
            self.exemplar(c)?;
        } else if !c.at_end() {
            return Err("unexpected text after the timestamp".into());
        }
        Ok(Some(ts))
    }

    fn exemplar(&self, c: &mut Cursor<'_>) -> Result<(), String> {
        if self.format != Format::OpenMetrics || c.take_while(|b| b != b' ') != "#" {
            return Err("unexpected text after the value".into());
        }
        // Exemplars are validated for shape and dropped: the store keeps no exemplars.
        if c.take(2) != " {" {
            return Err("malformed exemplar".into());
        }
        scan_labels(c, |_, _| {})
    }

    /// `le` is the raw (still escaped) value of the sample's `le` label, if it has one.
    fn check_family_rules(&self, name: &str, le: Option<&str>) -> Result<(), String> {
        if let Some(base) = name.strip_suffix("_bucket") {
            let kind = self
                .family_index
                .get(base)
                .map(|&i| self.out.families[i].kind);
            if matches!(
                kind,
                Some(MetricType::Histogram | MetricType::GaugeHistogram)
            ) {
                let le = unescape(
                    le.ok_or_else(|| format!("{name} without an le label"))?,
                    true,
                )?;
                parse_value(&le).map_err(|_| format!("{name} has an invalid le {le:?}"))?;
            }
        }
        Ok(())
    }
}

fn parse_type(t: &str, format: Format) -> Result<MetricType, String> {
    Ok(match (t, format) {
        ("counter", _) => MetricType::Counter,
        ("gauge", _) => MetricType::Gauge,
        ("histogram", _) => MetricType::Histogram,
        ("summary", _) => MetricType::Summary,
        ("untyped", Format::Prometheus) | ("unknown", Format::OpenMetrics) => MetricType::Unknown,
        ("gaugehistogram", Format::OpenMetrics) => MetricType::GaugeHistogram,
        ("info", Format::OpenMetrics) => MetricType::Info,
        ("stateset", Format::OpenMetrics) => MetricType::StateSet,
        _ => return Err(format!("unknown metric type {t:?}")),
    })
}

fn check_metric_name(name: &str) -> Result<(), String> {
    let ok = name.bytes().enumerate().all(|(i, b)| {
        b.is_ascii_alphabetic() || b == b'_' || b == b':' || (i > 0 && b.is_ascii_digit())
    });
    if name.is_empty() || !ok {
        return Err(format!("invalid metric name {name:?}"));
    }
    Ok(())
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "NaN" | "nan" => Ok(f64::NAN),
        "+Inf" | "Inf" | "+inf" | "inf" => Ok(f64::INFINITY),
        "-Inf" | "-inf" => Ok(f64::NEG_INFINITY),
        // Rust would accept "infinity"; the formats do not.
        _ if text
            .bytes()
            .any(|b| b.is_ascii_alphabetic() && b != b'e' && b != b'E') =>
        {
            Err(format!("invalid value {text:?}"))
        }
        _ => text.parse().map_err(|_| format!("invalid value {text:?}")),
    }
}

/// Unescapes `\\`, `\n` and (in label values) `\"`; text without a backslash is borrowed.
fn unescape(s: &str, quotes: bool) -> Result<Cow<'_, str>, String> {
    if !s.contains('\\') {
        return Ok(Cow::Borrowed(s));
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(ch) = chars.next() {
        if ch != '\\' {
            out.push(ch);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if quotes => out.push('"'),
            // Prometheus's text format tolerates unknown escapes in HELP; keep them verbatim.
            Some(other) if !quotes => {
                out.push('\\');
                out.push(other);
            }
            Some(other) => return Err(format!("invalid escape \\{other}")),
            None => return Err("dangling backslash".into()),
        }
    }
    Ok(Cow::Owned(out))
}

struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    /// Takes bytes while `f` holds. Only ASCII bytes are ever stop points, so the slice stays
    /// on UTF-8 boundaries; a non-UTF-8 slice (impossible from a &str) yields "".
    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        std::str::from_utf8(&self.s[start..self.pos]).unwrap_or("")
    }

    fn take(&mut self, n: usize) -> &'a str {
        let end = (self.pos + n).min(self.s.len());
        let start = self.pos;
        self.pos = end;
        std::str::from_utf8(&self.s[start..end]).unwrap_or("")
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
    }
}

/// The labels of a series' text that [`scan_exposition`] accepted (so it cannot fail; a
/// text it did not accept yields the labels read before the first mistake).
fn series_labels(series: &str) -> Labels {
    let mut c = Cursor {
        s: series.as_bytes(),
        pos: 0,
    };
    let name = c.take_while(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':');
    let mut pairs: Vec<(&str, Cow<'_, str>)> = vec![(METRIC_NAME, Cow::Borrowed(name))];
    if c.peek() == Some(b'{') {
        c.pos += 1;
        let _ = scan_labels(&mut c, |n, raw| {
            pairs.push((n, unescape(raw, true).unwrap_or(Cow::Borrowed(raw))));
        });
    }
    Labels::new(pairs.iter().map(|(n, v)| (*n, v.as_ref())))
}

/// Checks `name="value",...}` (the `{` already consumed), handing each label's name and raw
/// (still escaped, but valid) value to `label`.
fn scan_labels<'a>(
    c: &mut Cursor<'a>,
    mut label: impl FnMut(&'a str, &'a str),
) -> Result<(), String> {
    loop {
        c.skip_spaces();
        if c.peek() == Some(b'}') {
            c.pos += 1;
            return Ok(());
        }
        let name = c.take_while(|b| b.is_ascii_alphanumeric() || b == b'_');
        if name.is_empty() || name.as_bytes()[0].is_ascii_digit() {
            return Err(format!("invalid label name at column {}", c.pos + 1));
        }
        c.skip_spaces();
        if c.take(2) != "=\"" {
            return Err(format!("expected =\" after label {name}"));
        }
        let start = c.pos;
        loop {
            match c.peek() {
                None => return Err(format!("unterminated value of label {name}")),
                Some(b'\\') => c.pos += 2,
                Some(b'"') => break,
                Some(_) => c.pos += 1,
            }
        }
        let raw = std::str::from_utf8(c.s.get(start..c.pos).unwrap_or_default())
            .map_err(|e| e.to_string())?;
        c.pos += 1;
        unescape(raw, true)?;
        label(name, raw);
        c.skip_spaces();
        match c.peek() {
            Some(b',') => c.pos += 1,
            Some(b'}') => {}
            _ => return Err(format!("expected , or }} after label {name}")),
        }
    }
}

#[cfg(test)]
mod tests;
