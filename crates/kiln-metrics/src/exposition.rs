//! Parsing of the Prometheus text exposition format and OpenMetrics text, for scraping.
//!
//! The parser is line-based and strict: any malformed line is an [`ExpositionError`] with its
//! 1-based line number; it never panics (a fuzz target and a property test hold it to that).
//! Handled: `# HELP`, `# TYPE`, `# UNIT` (OpenMetrics), other comments, labels with `\\`, `\"`
//! and `\n` escapes, `NaN`/`±Inf` values, timestamps (milliseconds in the Prometheus format,
//! seconds in OpenMetrics), exemplars (skipped), `_bucket` samples needing `le`, and OpenMetrics'
//! mandatory final `# EOF`.

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
    let mut p = Parser {
        format,
        out: Exposition::default(),
        family_index: HashMap::new(),
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

struct Parser {
    format: Format,
    out: Exposition,
    family_index: HashMap<String, usize>,
}

impl Parser {
    fn line(&mut self, line: &str) -> Result<(), String> {
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
            "HELP" => self.family(name).help = Some(unescape(arg, false)?),
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

    fn sample(&mut self, line: &str) -> Result<(), String> {
        let mut c = Cursor {
            s: line.as_bytes(),
            pos: 0,
        };
        let name = c.take_while(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':');
        check_metric_name(name)?;
        let mut pairs = vec![(METRIC_NAME.to_string(), name.to_string())];
        if c.peek() == Some(b'{') {
            c.pos += 1;
            pairs.extend(parse_labels(&mut c)?);
        }
        let mut seen = std::collections::HashSet::new();
        for (n, _) in &pairs {
            if !seen.insert(n.as_str()) {
                return Err(format!("duplicate label {n}"));
            }
        }
        if c.peek() != Some(b' ') {
            return Err("expected a space before the value".into());
        }
        c.pos += 1;
        let value_text = c.take_while(|b| b != b' ');
        let value = parse_value(value_text)?;
        let timestamp_ms = self.timestamp(&mut c)?;
        let labels = Labels::new(pairs);
        self.check_family_rules(name, &labels)?;
        self.out.samples.push(ScrapedSample {
            labels,
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
        parse_labels(c)?;
        Ok(())
    }

    fn check_family_rules(&self, name: &str, labels: &Labels) -> Result<(), String> {
        if let Some(base) = name.strip_suffix("_bucket") {
            let kind = self
                .family_index
                .get(base)
                .map(|&i| self.out.families[i].kind);
            if matches!(
                kind,
                Some(MetricType::Histogram | MetricType::GaugeHistogram)
            ) {
                let le = labels
                    .get("le")
                    .ok_or_else(|| format!("{name} without an le label"))?;
                parse_value(le).map_err(|_| format!("{name} has an invalid le {le:?}"))?;
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

/// Unescapes `\\`, `\n` and (in label values) `\"`.
fn unescape(s: &str, quotes: bool) -> Result<String, String> {
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
    Ok(out)
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

/// Parses `name="value",...}` (the `{` already consumed).
fn parse_labels(c: &mut Cursor<'_>) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    loop {
        c.skip_spaces();
        if c.peek() == Some(b'}') {
            c.pos += 1;
            return Ok(out);
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
        out.push((name.to_string(), unescape(raw, true)?));
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
