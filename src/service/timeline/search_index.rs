//! The words the full-text index keeps of an event (written on the append path, read by
//! `service::search`).
//!
//! Text is lowercased and cut into words at anything that is not a letter or digit. Scripts
//! written without spaces (Chinese, Japanese, Korean) are cut into overlapping pairs of
//! characters, so that a search for any two or more characters of a sentence finds it. Only
//! what clients show as text is indexed: a message's `body`, a room's `name` and `topic`.
//! Encrypted events carry no text the server could read, so encrypted rooms are not
//! searchable on the server (as on every server).

use std::collections::BTreeSet;

use serde_json::Value as JsonValue;

/// Words of one event at most (the rest is not searchable).
const MAX_WORDS: usize = 256;

/// Bytes of one word at most.
const MAX_WORD_BYTES: usize = 64;

/// The indexed text of an event, if it has any.
pub fn searchable_text(kind: &str, content: &JsonValue) -> Option<String> {
    let field = match kind {
        "m.room.message" => "body",
        "m.room.name" => "name",
        "m.room.topic" => "topic",
        _ => return None,
    };
    content.get(field)?.as_str().map(str::to_owned)
}

/// Characters of scripts written without spaces between words.
fn unspaced(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF   // Hiragana, Katakana
        | 0x3400..=0x4DBF // CJK extension A
        | 0x4E00..=0x9FFF // CJK unified ideographs
        | 0xAC00..=0xD7AF // Hangul syllables
        | 0xF900..=0xFAFF // CJK compatibility ideographs
        | 0xFF66..=0xFF9F // halfwidth Katakana
    )
}

/// The words of a text: lowercase words, and pairs of characters for unspaced scripts.
pub fn words(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut word = String::new();
    let mut run: Vec<char> = Vec::new();
    let flush_word = |word: &mut String, out: &mut BTreeSet<String>| {
        if !word.is_empty() && word.len() <= MAX_WORD_BYTES {
            out.insert(std::mem::take(word));
        }
        word.clear();
    };
    let flush_run = |run: &mut Vec<char>, out: &mut BTreeSet<String>| {
        match run.len() {
            0 => {}
            1 => {
                out.insert(run[0].to_string());
            }
            _ => {
                for pair in run.windows(2) {
                    out.insert(pair.iter().collect());
                }
            }
        }
        run.clear();
    };
    for c in text.chars() {
        if unspaced(c) {
            flush_word(&mut word, &mut out);
            run.push(c);
        } else if c.is_alphanumeric() {
            flush_run(&mut run, &mut out);
            word.extend(c.to_lowercase());
        } else {
            flush_word(&mut word, &mut out);
            flush_run(&mut run, &mut out);
        }
        if out.len() >= MAX_WORDS {
            return out;
        }
    }
    flush_word(&mut word, &mut out);
    flush_run(&mut run, &mut out);
    out.into_iter().take(MAX_WORDS).collect()
}

/// The words of an event, if it is searchable.
pub fn event_words(kind: &str, content: &JsonValue) -> BTreeSet<String> {
    searchable_text(kind, content)
        .map(|t| words(&t))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_lowercase_and_split_at_punctuation() {
        let w = words("Hello, World! Café au-lait 42");
        let want: BTreeSet<String> = ["hello", "world", "café", "au", "lait", "42"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(w, want);
    }

    #[test]
    fn japanese_is_cut_into_pairs() {
        let w = words("つなぐ会");
        for pair in ["つな", "なぐ", "ぐ会"] {
            assert!(w.contains(pair), "{pair} in {w:?}");
        }
        // A query's pairs are a subset of the sentence's pairs.
        let query = words("なぐ");
        assert!(query.is_subset(&w));
    }

    #[test]
    fn only_text_clients_show_is_indexed() {
        let c = serde_json::json!({ "body": "hi", "ciphertext": "secret" });
        assert!(event_words("m.room.encrypted", &c).is_empty());
        assert_eq!(event_words("m.room.message", &c).len(), 1);
    }
}
