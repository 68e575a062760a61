//! Plugin and filter names: `[a-z0-9_-]{1,64}`, so that a name is safe as a
//! path segment, a store key and a metric label alike.

/// Whether `name` is a valid plugin or filter name.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// `Ok` for a valid name, else the sentence that says why not.
pub fn check_name(name: &str) -> Result<(), String> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(format!("name {name:?} is not [a-z0-9_-]{{1,64}}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_lowercase_words() {
        assert!(valid_name("keyword-block_2"));
        assert!(!valid_name(""));
        assert!(!valid_name("Caps"));
        assert!(!valid_name("../x"));
        assert!(!valid_name(&"a".repeat(65)));
        assert!(check_name("a b").unwrap_err().contains("[a-z0-9_-]"));
    }
}
