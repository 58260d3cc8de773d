//! A structural check of PEM text (RFC 7468): which blocks a file holds and whether each is
//! well formed. No cryptography: whether a key belongs to a certificate is checked by the
//! binary, which links rustls (see ARCHITECTURE.md).

/// A PEM file's blocks, by label (`CERTIFICATE`, `PRIVATE KEY`, ...), in file order.
pub(crate) fn labels(text: &str) -> Result<Vec<String>, String> {
    let mut labels = Vec::new();
    let mut open: Option<(String, usize, usize)> = None;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let number = index + 1;
        if let Some(label) = marker(line, "BEGIN") {
            if let Some((label, start, _)) = &open {
                return Err(format!(
                    "the `{label}` block that starts on line {start} has no END line"
                ));
            }
            open = Some((label.to_owned(), number, 0));
        } else if let Some(label) = marker(line, "END") {
            let Some((begun, start, chars)) = open.take() else {
                return Err(format!("line {number} ends a block that was never begun"));
            };
            if label != begun {
                return Err(format!(
                    "the `{begun}` block that starts on line {start} ends as `{label}` on line {number}"
                ));
            }
            if chars == 0 || chars % 4 != 0 {
                return Err(format!(
                    "the `{begun}` block that starts on line {start} is not whole base64"
                ));
            }
            labels.push(begun);
        } else if let Some((label, start, chars)) = &mut open {
            // RFC 1421 headers (`Proc-Type: 4,ENCRYPTED`) mark legacy encrypted keys.
            if line.contains(':') {
                return Err(format!(
                    "the `{label}` block that starts on line {start} is encrypted (a passphrase-protected key)"
                ));
            }
            let valid = line
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
            if !valid {
                return Err(format!("line {number} is not base64"));
            }
            *chars += line.len();
        }
    }
    if let Some((label, start, _)) = open {
        return Err(format!(
            "the `{label}` block that starts on line {start} has no END line"
        ));
    }
    Ok(labels)
}

fn marker<'a>(line: &'a str, kind: &str) -> Option<&'a str> {
    line.strip_prefix("-----")?
        .strip_prefix(kind)?
        .strip_prefix(' ')?
        .strip_suffix("-----")
}

/// Private key labels rustls reads: PKCS#8, PKCS#1 (RSA) and SEC1 (EC).
pub(crate) fn is_private_key(label: &str) -> bool {
    matches!(label, "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_listed_and_checked() {
        let cert =
            "junk before\n-----BEGIN CERTIFICATE-----\nQUJD\nREVG\n-----END CERTIFICATE-----\n";
        assert_eq!(labels(cert).unwrap(), ["CERTIFICATE"]);
        assert_eq!(labels("hello").unwrap(), Vec::<String>::new());
        let unterminated = "-----BEGIN PRIVATE KEY-----\nQUJD\n";
        assert!(labels(unterminated).unwrap_err().contains("no END"));
        let mismatched = "-----BEGIN PRIVATE KEY-----\nQUJD\n-----END CERTIFICATE-----\n";
        assert!(labels(mismatched).unwrap_err().contains("ends as"));
        let bad = "-----BEGIN CERTIFICATE-----\nQU*D\n-----END CERTIFICATE-----\n";
        assert!(labels(bad).unwrap_err().contains("not base64"));
        let short = "-----BEGIN CERTIFICATE-----\nQUJ\n-----END CERTIFICATE-----\n";
        assert!(labels(short).unwrap_err().contains("whole base64"));
        let legacy = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nQUJD\n-----END RSA PRIVATE KEY-----\n";
        assert!(labels(legacy).unwrap_err().contains("encrypted"));
    }
}
