//! Splitting a command line into words the way a POSIX shell does for simple commands: spaces
//! separate words, single quotes keep everything, double quotes keep spaces and honour `\`
//! escapes, a backslash outside quotes escapes the next character. No expansion of any kind:
//! a command that needs the shell says `shell: true`.

/// The words of `line`, or why it cannot be split (an unterminated quote).
pub fn split_command(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(ch) => word.push(ch),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(ch @ ('"' | '\\' | '$' | '`')) => word.push(ch),
                            Some(ch) => {
                                word.push('\\');
                                word.push(ch);
                            }
                            None => return Err("unterminated double quote".into()),
                        },
                        Some(ch) => word.push(ch),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(ch) = chars.next() {
                    word.push(ch);
                }
            }
            other => {
                in_word = true;
                word.push(other);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_a_shell() {
        assert_eq!(
            split_command("node api/server.js --port 80").unwrap(),
            ["node", "api/server.js", "--port", "80"]
        );
        assert_eq!(
            split_command(r#"echo 'a b' "c \"d\"" e\ f"#).unwrap(),
            ["echo", "a b", "c \"d\"", "e f"]
        );
        assert!(split_command("echo 'oops").is_err());
        assert_eq!(split_command("  ").unwrap(), Vec::<String>::new());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,80}") {
            let _ = split_command(&s);
        }
    }
}
