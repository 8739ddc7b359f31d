//! Text shown to people: input quoted in an error message (cut short, control characters escaped), and what must
//! not reach a terminal as it is (invisible characters, escaped in table cells).

/// How many characters of an input value an error quotes ([`quote`]).
pub const QUOTE_MAX: usize = 200;

/// An input value quoted in an error (an import field, a config value, a command-line argument): `{:?}` quoting of
/// at most [`QUOTE_MAX`] characters, so a 50 MB field is not echoed whole.
pub fn quote(text: &str) -> String {
    excerpt(text, QUOTE_MAX)
}

/// An excerpt of input quoted in an error (an import field, a config value): at most `max` characters, with control
/// characters escaped (`{:?}` quoting) and `…` when cut.
pub fn excerpt(text: &str, max: usize) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(max).collect();
    if chars.next().is_some() { format!("{head:?}…") } else { format!("{head:?}") }
}

/// Characters that must not reach a terminal or a log line as they are: control characters (ESC, CR, LF, NEL, …),
/// line and paragraph separators, and the format characters that show nothing ([`shows_nothing`]).
pub fn invisible(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') || shows_nothing(c)
}

/// Format characters that take no room and show nothing, so that removing one joins what it split: the soft hyphen,
/// zero-width spaces and joiners, direction marks, embeddings, overrides and isolates, invisible operators, the
/// byte-order mark, Hangul fillers, tag characters.
pub fn shows_nothing(c: char) -> bool {
    matches!(c,
        '\u{ad}' | '\u{34f}' | '\u{61c}' | '\u{115f}' | '\u{1160}' | '\u{17b4}' | '\u{17b5}' | '\u{180b}'..='\u{180f}'
        | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{3164}' | '\u{feff}'
        | '\u{ffa0}' | '\u{fff9}'..='\u{fffb}' | '\u{e0000}'..='\u{e007f}')
}

/// The one rule for an order name, what the customer sees on the receipt (a plan's `name`, sent with each of its
/// charges; `--name` of `charge-key` and `charge-once`): why it is refused, if it is (1 to 40 characters, no
/// [`invisible`] character, something visible). Said after the key or flag that holds it.
pub fn order_name_refusal(name: &str) -> Option<String> {
    let n = name.chars().count();
    if n == 0 || n > 40 {
        return Some(format!("is {n} characters; it is sent as the charge's name and must be 1-40"));
    }
    if let Some(c) = name.chars().find(|&c| invisible(c)) {
        return Some(format!(
            "contains the invisible character U+{:04X} (a control character, terminal escape, line break or \
             direction override); it is the order name the customer sees, so it must be plain text",
            c as u32
        ));
    }
    if name.chars().all(char::is_whitespace) {
        return Some("has nothing visible (white space only); it is the order name the customer sees".into());
    }
    None
}

/// Text read back from the database or from outside, made safe for one table cell or message line: every
/// [`invisible`] character written escaped (`\u{1b}`), as the log lines write them; the rest as it is.
pub fn cell(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(invisible) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if invisible(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_excerpt_is_short_and_escaped() {
        assert_eq!(excerpt("ab\ncd", 10), "\"ab\\ncd\"");
        assert_eq!(excerpt(&"x".repeat(50), 3), "\"xxx\"…");
    }

    #[test]
    fn a_cell_shows_invisible_characters_escaped() {
        assert_eq!(cell("evil\u{1b}[2J\rx\u{202e}y\u{ad}"), "evil\\u{1b}[2J\\u{d}x\\u{202e}y\\u{ad}");
        assert_eq!(cell("주문 1"), "주문 1");
    }
}
