//! How errors are worded for people: an error and every cause behind it.
//!
//! Network libraries wrap the useful part: hyper's own message for a refused
//! connection is "client error (Connect)", and the "Connection refused" is
//! two sources down. Clients show the whole chain.

/// `error: cause: cause...`, one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn every_cause_is_shown() {
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(super::chain(&e), "outer: inner");
    }
}
