//! `redact`: masks e-mail addresses and long digit runs (card numbers,
//! phone numbers, account ids) in every string of the event data.
//!
//! Configuration (all optional):
//! - `min_digits` (default 6): digit runs at least this long are masked;
//! - `email` (default `"[email]"`): what an address becomes;
//! - `digit` (default `"#"`): what each masked digit becomes.

use meshplay_filter_sdk::{Input, Value, Verdict, filter, map_strings};

fn is_local(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._%+-".contains(c)
}

fn is_domain(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '.' || c == '-'
}

/// Replaces every `local@domain.tld` in `s`.
pub fn mask_emails(s: &str, with: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let mut copied = 0;
    while i < chars.len() {
        if chars[i] == '@' {
            let mut start = i;
            while start > copied && is_local(chars[start - 1]) {
                start -= 1;
            }
            let mut end = i + 1;
            while end < chars.len() && is_domain(chars[end]) {
                end += 1;
            }
            // The domain must hold a dot that is neither first nor last.
            while end > i + 1 && chars[end - 1] == '.' {
                end -= 1;
            }
            let domain: String = chars[i + 1..end].iter().collect();
            let dotted = domain.contains('.') && !domain.starts_with('.');
            if start < i && dotted {
                out.extend(&chars[copied..start]);
                out.push_str(with);
                copied = end;
                i = end;
                continue;
            }
        }
        i += 1;
    }
    out.extend(&chars[copied..]);
    out
}

/// Masks every run of at least `min` ASCII digits.
pub fn mask_digits(s: &str, min: usize, with: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= min {
            out.push_str(&with.repeat(run.len()));
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in s.chars() {
        if c.is_ascii_digit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

fn redact(input: &Input) -> Verdict {
    let cfg = &input.config;
    let min = match cfg.get("min_digits") {
        None | Some(Value::Null) => 6,
        Some(v) => match v.as_u64() {
            Some(n) if n > 0 => n as usize,
            _ => return Verdict::error("min_digits must be a positive integer"),
        },
    };
    let email = cfg
        .get("email")
        .and_then(Value::as_str)
        .unwrap_or("[email]");
    let digit = cfg.get("digit").and_then(Value::as_str).unwrap_or("#");
    let mut event = input.event.clone();
    map_strings(&mut event.data, &mut |s| {
        *s = mask_digits(&mask_emails(s, email), min, digit);
    });
    Verdict::rewrite(event)
}

filter!(redact);

#[cfg(test)]
mod tests {
    use super::*;
    use meshplay_filter_sdk::{Event, Tenant, json};

    #[test]
    fn emails_are_masked() {
        assert_eq!(
            mask_emails("mail ada@example.org now", "[e]"),
            "mail [e] now"
        );
        assert_eq!(mask_emails("a@b.c, x.y+z@mail.co.uk.", "[e]"), "[e], [e].");
        assert_eq!(
            mask_emails("no @ here, me@localhost", "[e]"),
            "no @ here, me@localhost"
        );
    }

    #[test]
    fn long_digit_runs_are_masked() {
        assert_eq!(
            mask_digits("card 4111111111111111 ok", 6, "#"),
            "card ################ ok"
        );
        assert_eq!(
            mask_digits("year 2026, code 12345", 6, "#"),
            "year 2026, code 12345"
        );
    }

    #[test]
    fn every_string_of_the_data_is_scrubbed() {
        let input = Input {
            tenant: Tenant {
                kind: "u".into(),
                id: "1".into(),
            },
            event: Event {
                name: "msg".into(),
                data: json!({"text": "call 0612345678", "to": ["bob@example.com"], "n": 1234567}),
            },
            config: json!({"min_digits": 8}),
        };
        match redact(&input) {
            Verdict::Continue { event: Some(e) } => assert_eq!(
                e.data,
                json!({"text": "call ##########", "to": ["[email]"], "n": 1234567})
            ),
            other => panic!("{other:?}"),
        }
    }
}
