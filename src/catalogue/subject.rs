//! NATS subjects and the patterns a manifest's `publishes` grants:
//! dot-separated tokens; in a pattern `*` matches one token and a final
//! `>` one or more.

/// The most bytes of a subject or pattern.
pub const MAX_SUBJECT_BYTES: usize = 256;

fn tokens_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SUBJECT_BYTES
        && s.split('.').all(|t| {
            !t.is_empty()
                && !t
                    .bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        })
}

/// Why `subject` cannot be published to, if it cannot: empty tokens,
/// spaces, wildcards, over [`MAX_SUBJECT_BYTES`].
pub fn check_subject(subject: &str) -> Result<(), String> {
    if !tokens_ok(subject) || subject.split('.').any(|t| t == "*" || t == ">") {
        return Err(format!(
            "{subject:?} is not a subject to publish to (dot-separated tokens, no spaces or wildcards, at most {MAX_SUBJECT_BYTES} bytes)"
        ));
    }
    Ok(())
}

/// Why `pattern` is not a valid grant, if it is not.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    let tokens: Vec<&str> = pattern.split('.').collect();
    let misplaced = tokens
        .iter()
        .enumerate()
        .any(|(i, t)| *t == ">" && i + 1 != tokens.len());
    if !tokens_ok(pattern) || misplaced {
        return Err(format!(
            "{pattern:?} is not a subject pattern (dot-separated tokens, `*` for one, a final `>` for the rest)"
        ));
    }
    Ok(())
}

/// Whether `pattern` matches `subject`.
pub fn matches(pattern: &str, subject: &str) -> bool {
    let mut subject = subject.split('.');
    for p in pattern.split('.') {
        match (p, subject.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (p, Some(s)) if p == s => {}
            _ => return false,
        }
    }
    subject.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_as_nats_does() {
        assert!(matches("orders.>", "orders.created"));
        assert!(matches("orders.>", "orders.eu.created"));
        assert!(!matches("orders.>", "orders"));
        assert!(matches("orders.*.created", "orders.eu.created"));
        assert!(!matches("orders.*", "orders.eu.created"));
        assert!(!matches("orders", "orders.eu"));
        assert!(!matches("orders.eu", "orders"));
    }

    #[test]
    fn subjects_and_patterns_are_checked() {
        assert!(check_subject("orders.created").is_ok());
        for bad in ["", "orders.", ".x", "a b", "orders.*", "orders.>"] {
            assert!(check_subject(bad).is_err(), "{bad:?}");
        }
        assert!(check_pattern("orders.>").is_ok());
        assert!(check_pattern("a.*.c").is_ok());
        assert!(check_pattern("a.>.c").is_err());
        assert!(check_pattern("a..c").is_err());
    }
}
