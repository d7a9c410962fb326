//! Strangers' text (a file's values, a command's arguments) as messages show it: at most 60
//! characters, so that a hash column or a pasted blob does not fill the screen.

/// How many characters of a value a message shows.
const SHOWN: usize = 60;

/// `text` as it is, or its first 60 characters and its length.
pub fn clipped(text: &str) -> String {
    match text.char_indices().nth(SHOWN) {
        None => text.to_string(),
        Some((cut, _)) => format!("{}... ({} bytes)", &text[..cut], text.len()),
    }
}

/// `text` quoted (as Rust's `{:?}` escapes it), clipped as [`clipped`].
pub fn quoted(text: &str) -> String {
    match text.char_indices().nth(SHOWN) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes)", &text[..cut], text.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_clipped_and_measured() {
        assert_eq!(quoted("a\"b"), "\"a\\\"b\"");
        assert_eq!(clipped("12345"), "12345");
        let long = "9".repeat(70);
        assert_eq!(clipped(&long), format!("{}... (70 bytes)", "9".repeat(60)));
        assert_eq!(
            quoted(&long),
            format!("\"{}\"... (70 bytes)", "9".repeat(60))
        );
    }
}
