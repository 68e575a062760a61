//! `{{name}}`: rejects events whose data holds a string longer than the
//! configuration's `max_len` (default 280).
//!
//! A filter is one function from [`Input`] (the tenant, the event and the
//! plugin's `config` for this filter) to a [`Verdict`]: keep the event,
//! rewrite it (the next filter and the handler see the new one), reject it
//! (the plugin answers `rejected` with the reason), or fail (`filter`).
//! It runs in a fresh instance for each event, with a deadline and a
//! memory cap, so it keeps nothing between calls.

use meshplay_filter_sdk::{Input, Value, Verdict, filter, find_string};

/// The length refused when the configuration says nothing.
const DEFAULT_MAX_LEN: u64 = 280;

fn {{crate}}(input: &Input) -> Verdict {
    let max_len = match input.config.get("max_len") {
        None => DEFAULT_MAX_LEN,
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64().unwrap_or(DEFAULT_MAX_LEN),
        Some(_) => return Verdict::error("config.max_len must be a whole number"),
    };
    let too_long = find_string(&input.event.data, &mut |s| {
        (s.chars().count() as u64 > max_len).then(|| s.chars().count())
    });
    match too_long {
        Some(n) => Verdict::reject(format!("a text of {n} characters (at most {max_len})")),
        None => Verdict::keep(),
    }
}

filter!({{crate}});

// On the host the same code is a plain library: `cargo test`.
#[cfg(test)]
mod tests {
    use super::*;
    use meshplay_filter_sdk::{Event, Tenant, json};

    fn input(data: Value, config: Value) -> Input {
        Input {
            tenant: Tenant { kind: "user".into(), id: "1".into() },
            event: Event { name: "post".into(), data },
            config,
        }
    }

    #[test]
    fn keeps_short_texts_and_rejects_long_ones() {
        let config = json!({ "max_len": 5 });
        assert_eq!({{crate}}(&input(json!({ "text": "hi" }), config.clone())), Verdict::keep());
        assert!(matches!(
            {{crate}}(&input(json!({ "a": ["far too long"] }), config)),
            Verdict::Reject { .. }
        ));
    }
}
