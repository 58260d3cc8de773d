//! The runner's text protocols, exactly as GitHub's runner reads them: environment files
//! (`GITHUB_ENV`, `GITHUB_OUTPUT`, with the multiline `name<<DELIMITER` form), `GITHUB_PATH`,
//! workflow commands (`::error file=a::message`) and secret masking.

use indexmap::IndexMap;

/// A malformed environment file, worded as the runner's `FileCommandManager` words it (its
/// exceptions, which it logs after "Unable to process file command '<name>' successfully.").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvFileError {
    /// A line is neither `name=value` nor `name<<DELIMITER`.
    #[error("Invalid format '{0}'")]
    BadLine(String),
    /// `=value`: a line with no name.
    #[error("Invalid format '{0}'. Name must not be empty")]
    EmptyName(String),
    /// `name<<` or `<<DELIMITER`.
    #[error("Invalid format '{0}'. Name must not be empty and delimiter must not be empty")]
    EmptyHeredoc(String),
    /// A `name<<DELIMITER` block whose file ends, after a newline, before the delimiter.
    #[error("Invalid value. Matching delimiter not found '{0}'")]
    Unterminated(String),
    /// A `name<<DELIMITER` block whose last line has no newline and is not the delimiter.
    #[error("Invalid value. EOF marker missing new line.")]
    MissingNewline,
}

/// The runner's first error line for an environment file it could not read: `name` is the
/// file's context name (`env`, `output`, `state`, `path`).
pub fn file_command_failed(name: &str) -> String {
    format!("Unable to process file command '{name}' successfully.")
}

/// The runner's warning for the deprecated `set-output` and `save-state` commands
/// (`Constants.Runner.UnsupportedCommandMessage` in actions/runner's `Constants.cs`).
pub fn deprecated_command(name: &str) -> String {
    format!(
        "The `{name}` command is deprecated and will be disabled soon. Please upgrade to using \
         Environment Files. For more information see: \
         https://github.blog/changelog/2022-10-11-github-actions-deprecating-save-state-and-set-output-commands/"
    )
}

/// Parses a `GITHUB_ENV`/`GITHUB_OUTPUT`/`GITHUB_STATE` file: `name=value` lines and
/// `name<<DELIM` blocks, as the runner's `EnvFileKeyValuePairs` reads them.
pub fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, EnvFileError> {
    let mut out = Vec::new();
    // Each line with whether a newline ended it (the last one may have none). Only `\n` ends a
    // line: the runner reads `\r\n` as a line end on Windows alone, so on Linux a `\r` before
    // it stays in the name, the value or the delimiter line (`printf 'v=1\r\n'` sets "1\r").
    let mut lines = text
        .split_inclusive('\n')
        .map(|l| match l.strip_suffix('\n') {
            Some(l) => (l, true),
            None => (l, false),
        });
    while let Some((line, _)) = lines.next() {
        if line.is_empty() {
            continue;
        }
        let eq = line.find('=');
        let heredoc = line.find("<<");
        let use_heredoc = match (eq, heredoc) {
            (Some(e), Some(h)) => h < e,
            (None, Some(_)) => true,
            (_, None) => false,
        };
        if let Some(h) = heredoc.filter(|_| use_heredoc) {
            let (name, delimiter) = (&line[..h], &line[h + 2..]);
            if name.is_empty() || delimiter.is_empty() {
                return Err(EnvFileError::EmptyHeredoc(line.to_owned()));
            }
            let mut value: Vec<&str> = Vec::new();
            loop {
                match lines.next() {
                    None => return Err(EnvFileError::Unterminated(delimiter.to_owned())),
                    Some((l, _)) if l == delimiter => break,
                    Some((_, false)) => return Err(EnvFileError::MissingNewline),
                    Some((l, true)) => value.push(l),
                }
            }
            out.push((name.to_owned(), value.join("\n")));
        } else if let Some(e) = eq {
            let name = &line[..e];
            if name.is_empty() {
                return Err(EnvFileError::EmptyName(line.to_owned()));
            }
            out.push((name.to_owned(), line[e + 1..].to_owned()));
        } else {
            return Err(EnvFileError::BadLine(line.to_owned()));
        }
    }
    Ok(out)
}

/// A workflow command found in a line of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The command name, e.g. `error`.
    pub name: String,
    /// `key=value` properties, unescaped.
    pub properties: IndexMap<String, String>,
    /// The message after `::`, unescaped.
    pub data: String,
}

/// The workflow commands GitHub's runner carries out (its registered command extensions); a
/// line naming any other command is ordinary output. Names compare without case, as the
/// runner's do.
pub const COMMANDS: &[&str] = &[
    "add-mask",
    "add-matcher",
    "add-path",
    "debug",
    "echo",
    "endgroup",
    "error",
    "group",
    "notice",
    "remove-matcher",
    "save-state",
    "set-env",
    "set-output",
    "stop-commands",
    "warning",
];

/// Whether `name` is one of [`COMMANDS`].
pub fn is_command(name: &str) -> bool {
    COMMANDS.iter().any(|c| c.eq_ignore_ascii_case(name))
}

/// Parses `::name k=v,k2=v2::data` (leading blanks allowed); `None` for an ordinary line.
/// Property names are kept in lower case: the runner looks them up without case. A property
/// with an empty name or value is dropped, as the runner drops it.
pub fn parse_command(line: &str) -> Option<Command> {
    let rest = line.trim_start().strip_prefix("::")?;
    let end = rest.find("::")?;
    let (head, data) = (&rest[..end], &rest[end + 2..]);
    // The runner trims the property list of this form (not of the older one).
    let (name, props) = head
        .split_once(' ')
        .map_or((head, ""), |(n, p)| (n, p.trim()));
    command(
        name,
        properties(props, ',', unescape_property),
        unescape_data(data),
    )
}

/// Parses the runner's older form, `##[name k=v;k2=v2]data`, which it still accepts anywhere
/// in a line (`echo "##[group]Build"`, `##[add-matcher]path` from older actions).
pub fn parse_legacy_command(line: &str) -> Option<Command> {
    let start = line.find("##[")? + 3;
    let close = start + line[start..].find(']')?;
    let (head, data) = (&line[start..close], &line[close + 1..]);
    let (name, props) = head.split_once(' ').unwrap_or((head, ""));
    command(
        name,
        properties(props, ';', unescape_legacy),
        unescape_legacy(data),
    )
}

/// A command named `name`, unless the name is empty or has blanks in it.
fn command(name: &str, properties: IndexMap<String, String>, data: String) -> Option<Command> {
    if name.is_empty() || name.contains(char::is_whitespace) {
        return None;
    }
    Some(Command {
        name: name.to_owned(),
        properties,
        data,
    })
}

fn properties(
    text: &str,
    separator: char,
    unescape: fn(&str) -> String,
) -> IndexMap<String, String> {
    let mut properties = IndexMap::new();
    for prop in text.split(separator) {
        if let Some((k, v)) = prop.split_once('=')
            && !k.is_empty()
            && !v.is_empty()
        {
            properties.insert(k.to_lowercase(), unescape(v));
        }
    }
    properties
}

fn unescape_data(s: &str) -> String {
    s.replace("%0D", "\r")
        .replace("%0A", "\n")
        .replace("%25", "%")
}

fn unescape_property(s: &str) -> String {
    s.replace("%0D", "\r")
        .replace("%0A", "\n")
        .replace("%3A", ":")
        .replace("%2C", ",")
        .replace("%25", "%")
}

fn unescape_legacy(s: &str) -> String {
    s.replace("%3B", ";")
        .replace("%0D", "\r")
        .replace("%0A", "\n")
        .replace("%5D", "]")
        .replace("%25", "%")
}

/// Replaces every registered secret in a line with `***`.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    /// Longest first, so a secret containing another is masked whole.
    secrets: Vec<String>,
}

impl Masker {
    /// Registers a value; multiline values are also masked line by line, as GitHub does.
    pub fn add(&mut self, value: &str) {
        let value = value.trim_end_matches(['\r', '\n']);
        if value.is_empty() {
            return;
        }
        let mut new = vec![value.to_owned()];
        if value.contains('\n') {
            new.extend(
                value
                    .lines()
                    .map(|l| l.trim_end_matches('\r'))
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_owned),
            );
        }
        for v in new {
            // The runner's secret masker also masks each value as its value encoders write it
            // (registered in its `HostContext`), so a secret printed in base64 or inside JSON or
            // a URL is hidden too.
            let encoded = encodings(&v);
            for e in std::iter::once(v).chain(encoded) {
                if !e.is_empty() && !self.secrets.contains(&e) {
                    self.secrets.push(e);
                }
            }
        }
        self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }

    /// The line with every secret replaced.
    pub fn mask(&self, line: &str) -> String {
        let mut out = line.to_owned();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "***");
            }
        }
        out
    }
}

/// A secret as the runner's value encoders write it (`ValueEncoders`, in the order its
/// `HostContext` registers them); an encoder that does not apply gives ''.
fn encodings(value: &str) -> Vec<String> {
    let bytes = value.as_bytes();
    // Base64 of the value and of the value without its first one or two bytes: a secret after
    // a prefix (`base64("user:" + password)`) starts at any of three places in a 3-byte group.
    let shifted = |n: usize| base64(bytes.get(n..).filter(|b| !b.is_empty()).unwrap_or(bytes));
    // `Uri.EscapeDataString`: all but RFC 3986's unreserved characters percent-encoded.
    let uri = bytes
        .iter()
        .map(|&b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    // `SecurityElement.Escape`.
    let xml = value
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;");
    // `TrimDoubleQuotes`: a quoted value longer than eight characters, without its quotes.
    let unquoted = match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) if value.chars().count() > 8 => inner.to_owned(),
        _ => String::new(),
    };
    // PowerShell prints a command it fails to run in two parts around an `&` (after `&+` it
    // also drops the next character); each part of six characters or more is masked.
    let (before, after) = match (value.find("&+"), value.rfind('&')) {
        (Some(i), _) => (&value[..i + 2], value.get(i + 3..).unwrap_or_default()),
        (None, Some(i)) => (&value[..=i], &value[i + 1..]),
        (None, None) => ("", ""),
    };
    let part = |p: &str| {
        if p.len() >= 6 {
            p.to_owned()
        } else {
            String::new()
        }
    };
    vec![
        shifted(0),
        shifted(1),
        shifted(2),
        value.replace('"', "\\\""),
        value.replace('\'', "''"),
        json_escape(value),
        uri,
        xml,
        unquoted,
        part(before),
        part(after),
    ]
}

/// A JSON string's inside, as `JsonConvert.ToString` writes it without the quotes.
fn json_escape(value: &str) -> String {
    let quoted = serde_json::Value::String(value.to_owned()).to_string();
    quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or(&quoted)
        .to_owned()
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_carriage_return_is_part_of_the_line_as_on_a_linux_runner() {
        assert_eq!(
            parse_env_file("A=1\r\nB<<EOF\r\nx\r\nEOF\r\n").unwrap(),
            vec![("A".into(), "1\r".into()), ("B".into(), "x\r".into())]
        );
        // `EOF\r` is not the delimiter `EOF`.
        assert_eq!(
            parse_env_file("B<<EOF\nx\r\nEOF\r\n").unwrap_err(),
            EnvFileError::Unterminated("EOF".into())
        );
    }

    #[test]
    fn env_files() {
        let parsed = parse_env_file("A=1\n\nB<<EOF\nx\ny=z\nEOF\nC=a=b\n").unwrap();
        assert_eq!(
            parsed,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "x\ny=z".into()),
                ("C".into(), "a=b".into())
            ]
        );
    }

    /// The runner's own words for each malformed file (actions/runner `FileCommandManager.cs`,
    /// `EnvFileKeyValuePairs`, and its tests `..._Heredoc_MissingNewLine...`).
    #[test]
    fn env_file_errors_are_the_runners() {
        let error = |text: &str| parse_env_file(text).unwrap_err().to_string();
        assert_eq!(
            error("X<<E\nnever\n"),
            "Invalid value. Matching delimiter not found 'E'"
        );
        assert_eq!(
            error("X<<E\nnever"),
            "Invalid value. EOF marker missing new line."
        );
        assert_eq!(error("justtext"), "Invalid format 'justtext'");
        assert_eq!(
            error("<<EOF\nx\nEOF\n"),
            "Invalid format '<<EOF'. Name must not be empty and delimiter must not be empty"
        );
        assert_eq!(error("=v"), "Invalid format '=v'. Name must not be empty");
        // A delimiter ending the file without a newline still closes its block.
        assert_eq!(
            parse_env_file("X<<E\nv\nE").unwrap(),
            vec![("X".into(), "v".into())]
        );
        assert_eq!(
            deprecated_command("set-output"),
            "The `set-output` command is deprecated and will be disabled soon. Please upgrade to using Environment Files. For more information see: https://github.blog/changelog/2022-10-11-github-actions-deprecating-save-state-and-set-output-commands/"
        );
    }

    #[test]
    fn commands() {
        let c = parse_command("::error file=a.rs,line=3::bad%0Athing").unwrap();
        assert_eq!(c.name, "error");
        assert_eq!(c.properties["file"], "a.rs");
        assert_eq!(c.data, "bad\nthing");
        assert_eq!(parse_command("::add-mask::s3cret").unwrap().data, "s3cret");
        assert!(parse_command("plain :: text").is_none());
    }

    #[test]
    fn property_names_have_no_case_and_empty_ones_are_dropped() {
        let c = parse_command("::Warning  File=a.rs,LINE=3,endLine=4,=x,title=::m").unwrap();
        assert!(is_command(&c.name));
        let keys: Vec<_> = c.properties.keys().map(String::as_str).collect();
        assert_eq!(keys, ["file", "line", "endline"]);
        // The runner trims the list, not each name: ` line` is another property.
        let c = parse_command("::error file=a.rs, line=3::m").unwrap();
        assert_eq!(c.properties.get("line"), None);
        assert!(!is_command("section"));
    }

    #[test]
    fn the_older_form_anywhere_in_a_line() {
        let c = parse_legacy_command("12:00 ##[error file=a.rs;line=3]bad%5D%3B%0Athing").unwrap();
        assert_eq!(c.name, "error");
        assert_eq!(c.properties["file"], "a.rs");
        assert_eq!(c.properties["line"], "3");
        assert_eq!(c.data, "bad];\nthing");
        assert_eq!(
            parse_legacy_command("##[group]Build").unwrap().data,
            "Build"
        );
        assert!(parse_legacy_command("##[unclosed").is_none());
        assert!(parse_legacy_command("no marker ]").is_none());
    }

    proptest::proptest! {
        /// Any line parses or not without a panic, and a parsed command's name is never empty.
        #[test]
        fn command_parsers_are_total(line in ".{0,60}") {
            for parsed in [parse_command(&line), parse_legacy_command(&line)].into_iter().flatten() {
                proptest::prop_assert!(!parsed.name.is_empty());
            }
        }
    }

    #[test]
    fn base64_is_the_standard_alphabet_with_padding() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
            ("\u{ff}\u{fe}", "w7/Dvg=="),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
    }

    /// The runner's value encoders: a secret printed encoded is masked as well.
    #[test]
    fn secrets_are_masked_as_the_runners_encoders_write_them() {
        let mut m = Masker::default();
        m.add("p4ss\"w'rd&+ab/cdefg");
        for (line, masked) in [
            // base64 of the secret, and after a prefix of one or two bytes ("u:", "us:").
            ("cDRzcyJ3J3JkJithYi9jZGVmZw==", "***"),
            ("dTpwNHNzIncncmQmK2FiL2NkZWZn", "dTpw***"),
            (
                "JSON {\"k\":\"p4ss\\\"w'rd&+ab/cdefg\"}",
                "JSON {\"k\":\"***\"}",
            ),
            ("url=p4ss%22w%27rd%26%2Bab%2Fcdefg", "url=***"),
            ("<a>p4ss&quot;w&apos;rd&amp;+ab/cdefg</a>", "<a>***</a>"),
            ("expr 'p4ss\"w''rd&+ab/cdefg'", "expr '***'"),
            ("ps p4ss\"w'rd&+ and b/cdefg", "ps *** and ***"),
        ] {
            assert_eq!(m.mask(line), masked, "{line}");
        }
        let mut quoted = Masker::default();
        quoted.add("\"long-secret\"");
        assert_eq!(quoted.mask("v=long-secret"), "v=***");
    }

    #[test]
    fn masking() {
        let mut m = Masker::default();
        m.add("abc");
        m.add("abcdef");
        m.add("l1\nl2");
        assert_eq!(m.mask("x abcdef abc l2"), "x *** *** ***");
    }
}
