//! Input quoted in an error message: cut short, with control characters escaped.

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
/// line and paragraph separators, bidirectional overrides and other invisible format characters.
pub fn invisible(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_excerpt_is_short_and_escaped() {
        assert_eq!(excerpt("ab\ncd", 10), "\"ab\\ncd\"");
        assert_eq!(excerpt(&"x".repeat(50), 3), "\"xxx\"…");
    }
}
