//! The version files `actions/setup-node` (`node-version-file`) and `actions/setup-python`
//! (`python-version-file`) read a version from, parsed as those actions do. Pure: the caller
//! reads the file.

/// The tool whose version a file names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tool {
    Node,
    Python,
}

/// The version spec `text` (the content of `file_name`) names for `tool`, or None when it
/// names none.
pub(crate) fn version_from_file(tool: Tool, file_name: &str, text: &str) -> Option<String> {
    let base = file_name.rsplit('/').next().unwrap_or(file_name);
    let version = match (tool, base) {
        (_, ".tool-versions") => tool_versions(tool, text),
        (Tool::Node, "package.json") => package_json(text),
        (Tool::Python, "pyproject.toml") => pyproject(text),
        // `.nvmrc`, `.node-version`, `.python-version` and any other plain file: the first
        // line that is not a comment.
        _ => first_line(text).map(|line| match tool {
            Tool::Node => line.trim_start_matches('v').to_owned(),
            Tool::Python => line.to_owned(),
        }),
    };
    version.filter(|v| !v.trim().is_empty())
}

fn first_line(text: &str) -> Option<&str> {
    text.lines()
        .map(|line| line.split('#').next().unwrap_or_default().trim())
        .find(|line| !line.is_empty())
}

/// asdf's `.tool-versions`: `nodejs 20.11.1` (or `node`), `python 3.12.1`.
fn tool_versions(tool: Tool, text: &str) -> Option<String> {
    let names: &[&str] = match tool {
        Tool::Node => &["nodejs", "node"],
        Tool::Python => &["python"],
    };
    text.lines().find_map(|line| {
        let mut words = line
            .split('#')
            .next()
            .unwrap_or_default()
            .split_whitespace();
        let name = words.next()?;
        names
            .contains(&name)
            .then(|| words.next().map(|v| v.trim_start_matches('v').to_owned()))
            .flatten()
    })
}

/// setup-node's order: `volta.node`, then `devEngines.runtime` when it names node, then
/// `engines.node`.
fn package_json(text: &str) -> Option<String> {
    let json: serde_json::Value = serde_json::from_str(text).ok()?;
    let text_at = |pointer: &str| {
        json.pointer(pointer)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    if let Some(volta) = text_at("/volta/node") {
        return Some(volta);
    }
    let runtime = json.pointer("/devEngines/runtime");
    let node_runtime = runtime.and_then(|r| match r {
        serde_json::Value::Array(all) => all.iter().find(|r| r["name"] == "node"),
        one if one["name"] == "node" => Some(one),
        _ => None,
    });
    if let Some(version) = node_runtime.and_then(|r| r["version"].as_str()) {
        return Some(version.to_owned());
    }
    text_at("/engines/node")
}

/// `requires-python` of `[project]` (PEP 621), else Poetry's `python` dependency.
fn pyproject(text: &str) -> Option<String> {
    let mut table = "";
    let mut poetry = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            table = line;
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches(['"', '\'']).trim().to_owned();
        match (table, key.trim()) {
            ("[project]", "requires-python") => return Some(value),
            ("[tool.poetry.dependencies]", "python") => poetry = Some(value.replace(',', " ")),
            _ => {}
        }
    }
    poetry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_version_files_give_their_first_line() {
        assert_eq!(
            version_from_file(Tool::Node, ".nvmrc", "# pinned\nv20.11.1\n").as_deref(),
            Some("20.11.1")
        );
        assert_eq!(
            version_from_file(Tool::Node, "web/.node-version", "18\n").as_deref(),
            Some("18")
        );
        assert_eq!(
            version_from_file(Tool::Python, ".python-version", "3.12.1\n3.11\n").as_deref(),
            Some("3.12.1")
        );
        assert_eq!(version_from_file(Tool::Node, ".nvmrc", "\n# none\n"), None);
    }

    #[test]
    fn tool_versions_name_each_tool() {
        let text = "ruby 3.3.0\nnodejs 20.1.0 # current\npython 3.11.4\n";
        assert_eq!(
            version_from_file(Tool::Node, ".tool-versions", text).as_deref(),
            Some("20.1.0")
        );
        assert_eq!(
            version_from_file(Tool::Python, ".tool-versions", text).as_deref(),
            Some("3.11.4")
        );
        assert_eq!(
            version_from_file(Tool::Python, ".tool-versions", "nodejs 20\n"),
            None
        );
    }

    #[test]
    fn package_json_prefers_volta_then_dev_engines_then_engines() {
        let all = r#"{"volta":{"node":"20.1.0"},"engines":{"node":">=18"}}"#;
        assert_eq!(
            version_from_file(Tool::Node, "package.json", all).as_deref(),
            Some("20.1.0")
        );
        let dev = r#"{"devEngines":{"runtime":[{"name":"bun"},{"name":"node","version":"^22"}]},"engines":{"node":">=18"}}"#;
        assert_eq!(
            version_from_file(Tool::Node, "package.json", dev).as_deref(),
            Some("^22")
        );
        let engines = r#"{"engines":{"node":">=18"}}"#;
        assert_eq!(
            version_from_file(Tool::Node, "package.json", engines).as_deref(),
            Some(">=18")
        );
        assert_eq!(version_from_file(Tool::Node, "package.json", "{}"), None);
        assert_eq!(
            version_from_file(Tool::Node, "package.json", "not json"),
            None
        );
    }

    #[test]
    fn pyproject_gives_requires_python_or_poetrys_python() {
        let pep621 = "[build-system]\nrequires = [\"x\"]\n[project]\nname = \"a\"\nrequires-python = \">=3.9\"\n";
        assert_eq!(
            version_from_file(Tool::Python, "pyproject.toml", pep621).as_deref(),
            Some(">=3.9")
        );
        let poetry = "[tool.poetry.dependencies]\npython = \">=3.10,<4\"\n";
        assert_eq!(
            version_from_file(Tool::Python, "pyproject.toml", poetry).as_deref(),
            Some(">=3.10 <4")
        );
        assert_eq!(
            version_from_file(Tool::Python, "pyproject.toml", "[x]\n"),
            None
        );
    }

    proptest::proptest! {
        /// Any text in any of the files gives a version or none, never a panic, and a
        /// version it gives is never blank.
        #[test]
        fn any_text_parses_without_panicking(text in "(?s).{0,200}", file in 0usize..6) {
            let name = [".nvmrc", "package.json", "pyproject.toml", ".tool-versions", ".python-version", "x/.node-version"][file];
            for tool in [Tool::Node, Tool::Python] {
                if let Some(v) = version_from_file(tool, name, &text) {
                    proptest::prop_assert!(!v.trim().is_empty());
                }
            }
        }
    }
}
