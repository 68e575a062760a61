//! `keyword-block`: rejects events whose text contains a blocked word.
//!
//! Configuration: `words` (a list of strings, required), matched as whole
//! words, case-insensitively, in every string of the event data.

use meshplay_filter_sdk::{Input, Value, Verdict, filter, find_string};

/// The first blocked word in `text`, if any.
pub fn blocked<'a>(text: &str, words: &'a [String]) -> Option<&'a str> {
    let lower = text.to_lowercase();
    lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .find_map(|w| words.iter().find(|b| b.to_lowercase() == w))
        .map(String::as_str)
}

fn keyword_block(input: &Input) -> Verdict {
    let words: Vec<String> = match input.config.get("words") {
        Some(Value::Array(items)) => match items
            .iter()
            .map(|w| w.as_str().map(str::to_owned))
            .collect()
        {
            Some(words) => words,
            None => return Verdict::error("config.words must be a list of strings"),
        },
        _ => return Verdict::error("config.words (a list of strings) is required"),
    };
    match find_string(&input.event.data, &mut |s| {
        blocked(s, &words).map(str::to_owned)
    }) {
        Some(word) => Verdict::reject(format!("blocked word: {word}")),
        None => Verdict::keep(),
    }
}

filter!(keyword_block);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_words_case_insensitively() {
        let words = vec!["Spam".to_string(), "scam".to_string()];
        assert_eq!(blocked("Buy SPAM now!", &words), Some("Spam"));
        assert_eq!(blocked("a scam.", &words), Some("scam"));
        assert_eq!(blocked("spammer and scampi", &words), None);
    }
}
