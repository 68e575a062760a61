//! Percent-encoding of one URI component (a path segment or a query value),
//! shared by the REST client and the worker's DB client: everything but
//! RFC 3986's unreserved characters becomes `%XX`.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Every byte but `A-Z a-z 0-9 - . _ ~`.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `s` with every byte outside `A-Z a-z 0-9 - . _ ~` percent-encoded.
pub(crate) fn encode_component(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unreserved_bytes_pass_as_they_are() {
        assert_eq!(encode_component("a-Z_0.9~"), "a-Z_0.9~");
        assert_eq!(encode_component("a b/c?d&é"), "a%20b%2Fc%3Fd%26%C3%A9");
    }
}
