//! `require-fields`: rejects events whose data lacks fields the plugin
//! needs, so handlers never see half an event.
//!
//! Configuration: `fields` (a list of paths, required); a path is keys
//! joined by dots (`author.name`). A field that is present but `null`
//! counts as missing.

use meshplay_filter_sdk::{Input, Value, Verdict, filter};

/// The value at a dotted `path` inside `v`.
pub fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(v, |v, key| v.get(key))
        .filter(|v| !v.is_null())
}

fn require_fields(input: &Input) -> Verdict {
    let Some(Value::Array(fields)) = input.config.get("fields") else {
        return Verdict::error("config.fields (a list of field paths) is required");
    };
    let mut missing = Vec::new();
    for f in fields {
        let Some(path) = f.as_str() else {
            return Verdict::error("config.fields must be a list of strings");
        };
        if lookup(&input.event.data, path).is_none() {
            missing.push(path);
        }
    }
    if missing.is_empty() {
        Verdict::keep()
    } else {
        Verdict::reject(format!("missing fields: {}", missing.join(", ")))
    }
}

filter!(require_fields);

#[cfg(test)]
mod tests {
    use super::*;
    use meshplay_filter_sdk::json;

    #[test]
    fn dotted_paths() {
        let v = json!({"author": {"name": "Ada", "mail": null}, "text": ""});
        assert!(lookup(&v, "author.name").is_some());
        assert!(lookup(&v, "text").is_some());
        assert!(lookup(&v, "author.mail").is_none());
        assert!(lookup(&v, "title").is_none());
    }
}
