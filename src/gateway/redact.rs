//! Text from the gateway made safe to log, print and store: what billd sent removed, card-like digits blanked, control characters stripped, length cut (long: one cleaning pipeline, its decoders and its tests, kept together so that every step is read in order).
//!
//! Every string that comes from the gateway (a refusal's message, a fail reason, a payment's status, merchant_uid or
//! imp_uid, a key's card name, a quoted answer) goes through [`Redactor::clean`] in the gateway client before it
//! reaches a log line, an error, stdout or the database. A gateway, or a proxy in front of it, may echo the request:
//! a key-in request carries the card number, birth date and PIN digits, a token request the `imp_secret`, every
//! request the access token. It may also send terminal escapes, line breaks that forge log lines, or a megabyte of
//! text, or hide what it echoes in an encoding. [`Redactor::clean`]:
//!
//! 0. decodes percent-encoding (`%22%3A`) and JSON's `\uXXXX` escapes (a few layers deep) and removes the characters
//!    that show nothing (a soft hyphen, a zero-width space: [`crate::text::shows_nothing`]), so that the steps below
//!    see what an encoded or split echo hides, and replaces each run of base64 text whose decoded text would be
//!    cleaned (it holds a value billd sent, a secret field or card-like digits) with `[redacted]`;
//! 1. blanks the value of any field named like card data or a secret (`"pwd_2digit":"…"`, `birth=…`, …);
//! 2. removes the values billd itself sent (the [`Redactor`] holds them) wherever else they are: a card number, birth
//!    date or PIN digits in any grouping (digits with any separators between them), the `imp_secret`, access
//!    tokens, a channel key (in any case, and the secrets also written in hex);
//! 3. blanks every other number that could be card data: a card number whatever separates its digit groups, runs of
//!    6 or more digits (as [`crate::gateway::card::redact_numbers`]);
//! 4. replaces control characters (ESC, CR, LF, …) and invisible format characters with spaces;
//! 5. cuts the text to [`MAX_CHARS`] characters, ending it with `…`.
//!
//! An identifier the gateway gives back (an imp_uid) is not cleaned but checked with [`Redactor::plain_id`]: one
//! with odd characters, one holding a value billd sent, or one holding what could be a card number, is refused
//! (the outcome stays unknown).

use std::collections::VecDeque;
use std::fmt;

/// The most characters of one gateway string billd keeps (an excerpt ends with `…`).
pub const MAX_CHARS: usize = 300;

/// Text beyond the final cut that is still searched for sent values, so that one straddling the cut is removed
/// whole before the cut (a sent value is far shorter than this).
const SLACK: usize = 512;

/// Field names whose values are blanked wherever the text quotes them (`"key":"value"`, `key=value`), whoever sent
/// them: card data and credentials.
const SECRET_KEYS: [&str; 9] =
    ["card_number", "birth", "pwd_2digit", "expiry", "imp_secret", "access_token", "channel_key", "password", "secret"];

/// How many access tokens are remembered (a daemon fetches a new one every half hour or so; an answer can only echo
/// a recent one).
const TOKENS_KEPT: usize = 8;

/// Digits of one sent value may be separated by at most this many characters that are not letters or digits
/// (`4242-4242`, `4242 4242`, `"4242","4242"`).
const MAX_GAP: usize = 5;

/// The values billd sent to the gateway, which must never come back out of it; and the one function that cleans
/// gateway text ([`Redactor::clean`]).
#[derive(Clone, Default)]
pub struct Redactor {
    /// Card number, birth date, PIN digits: digits only, matched in any grouping.
    digits: Vec<String>,
    /// imp_secret, channel key (and their JSON-escaped and hex forms): matched in any case.
    words: Vec<String>,
    /// Recent access tokens: matched in any case.
    tokens: VecDeque<String>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Redactor({} digit values, {} words, {} tokens)",
            self.digits.len(),
            self.words.len(),
            self.tokens.len()
        )
    }
}

impl Redactor {
    /// A number billd sent (card number, birth date, PIN digits): its digits are removed wherever they appear,
    /// whatever separates them.
    pub fn sent_digits(&mut self, value: &str) {
        let d: String = value.chars().filter(char::is_ascii_digit).collect();
        if !d.is_empty() && !self.digits.contains(&d) {
            self.digits.push(d);
        }
    }

    /// A secret billd sent (imp_secret, channel key): removed in any case, as it is, JSON-escaped, and in hex.
    pub fn sent_word(&mut self, value: &str) {
        let v = value.trim();
        let escaped = serde_json::to_string(v).unwrap_or_default();
        let hex: String = v.bytes().map(|b| format!("{b:02x}")).collect();
        for form in [v, escaped.trim_matches('"'), &hex] {
            if !form.is_empty() && !self.words.iter().any(|w| w == form) {
                self.words.push(form.to_owned());
            }
        }
    }

    /// An access token billd sent (the last few are remembered).
    pub fn sent_token(&mut self, value: &str) {
        let v = value.trim();
        if v.is_empty() || self.tokens.iter().any(|t| t == v) {
            return;
        }
        if self.tokens.len() == TOKENS_KEPT {
            self.tokens.pop_front();
        }
        self.tokens.push_back(v.to_owned());
    }

    /// Gateway text made safe: see the module documentation. At most [`MAX_CHARS`] characters (plus `…`).
    pub fn clean(&self, text: &str) -> String {
        self.clean_to(text, MAX_CHARS)
    }

    /// [`Redactor::clean`], cut to `max` characters.
    pub fn clean_to(&self, text: &str, max: usize) -> String {
        let mut chars = text.chars();
        // An encoded character takes up to ENCODED_WIDTH characters: the head keeps as much as it decodes to.
        let head: String = chars.by_ref().take((max + SLACK) * ENCODED_WIDTH).collect();
        let mut cut = chars.next().is_some();
        let s = decode_escapes(&head);
        let s = self.blank_base64(&s);
        let s = self.scrub(&s);
        let mut out = String::with_capacity(s.len().min(max * 4));
        for (i, c) in s.chars().enumerate() {
            if i == max {
                cut = true;
                break;
            }
            out.push(if crate::text::invisible(c) { ' ' } else { c });
        }
        if cut {
            out.push('…');
        }
        out
    }

    /// Whether `text` holds a value billd sent (in any of the forms [`Redactor::clean`] removes, encoded ones
    /// included).
    pub fn holds_sent(&self, text: &str) -> bool {
        let text = decode_escapes(text);
        self.remove_words(&text) != text || self.remove_digits(&text) != text || self.blank_base64(&text) != text
    }

    /// Steps 1 to 3 of [`Redactor::clean`] on decoded text: secret fields blanked, sent values removed, card-like
    /// digits blanked.
    fn scrub(&self, text: &str) -> String {
        let s = blank_keyed(text);
        let s = self.remove_words(&s);
        let s = self.remove_digits(&s);
        crate::gateway::card::redact_numbers(&s)
    }

    /// Replaces each run of base64 text (at least [`MIN_BASE64`] characters, standard or URL-safe alphabet, padded
    /// or not) that decodes to text [`Redactor::scrub`] would change with `[redacted]`.
    fn blank_base64(&self, text: &str) -> String {
        let bytes = text.as_bytes();
        let is_b64 = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_');
        let mut out = String::with_capacity(text.len());
        let (mut at, mut copied) = (0, 0);
        while at < bytes.len() {
            if !is_b64(bytes[at]) {
                at += 1;
                continue;
            }
            let start = at;
            while at < bytes.len() && is_b64(bytes[at]) {
                at += 1;
            }
            let run = &text[start..at];
            while at < bytes.len() && at - start < run.len() + 2 && bytes[at] == b'=' {
                at += 1;
            }
            // Read from each of its first four characters: base64 glued to letters before it is found at one of them.
            let hides = (0..4)
                .filter(|&skip| run.len() >= skip + MIN_BASE64)
                .any(|skip| base64_text(&run[skip..]).is_some_and(|t| self.scrub(&t) != t));
            if hides {
                out.push_str(&text[copied..start]);
                out.push_str("[redacted]");
                copied = at;
            }
        }
        out.push_str(&text[copied..]);
        out
    }

    /// Whether an identifier from the gateway (an imp_uid) can be stored and printed as it is: 1-80 letters, digits,
    /// `_`, `-` or `.`, holding no value billd sent and nothing that could be a card number (13 or more digits in
    /// groups, Luhn-valid or not: a Luhn check would pass the number with one digit changed, and no gateway id
    /// needs that many digits; i'mport's are `imp_` and 12).
    pub fn plain_id(&self, id: &str) -> bool {
        (1..=80).contains(&id.len())
            && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            && !crate::gateway::card::holds_card_number(id)
            && !self.holds_sent(id)
    }

    /// Removes every sent secret and token, in any (ASCII) case: a short one only where it stands alone.
    fn remove_words(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for w in self.words.iter().chain(self.tokens.iter()) {
            out = replace_token(&out, w, w.chars().count() >= 4);
        }
        out
    }

    /// Blanks the digits of every sent number: long ones (6+ digits) in any grouping, short ones (PIN digits) where
    /// they stand alone.
    fn remove_digits(&self, text: &str) -> String {
        if self.digits.is_empty() || !text.bytes().any(|b| b.is_ascii_digit()) {
            return text.to_owned();
        }
        let mut chars: Vec<char> = text.chars().collect();
        let mut blank = vec![false; chars.len()];
        // Chains of digits, each pair separated by at most MAX_GAP characters that are not letters or digits.
        let mut chains: Vec<Vec<usize>> = Vec::new();
        let mut chain: Vec<usize> = Vec::new();
        for (i, c) in chars.iter().enumerate() {
            if c.is_ascii_digit() {
                chain.push(i);
            } else if (c.is_alphanumeric() || chain.last().is_some_and(|&l| i - l > MAX_GAP)) && !chain.is_empty() {
                chains.push(std::mem::take(&mut chain));
            }
        }
        if !chain.is_empty() {
            chains.push(chain);
        }
        for chain in &chains {
            let digits: String = chain.iter().map(|&i| chars[i]).collect();
            for d in self.digits.iter().filter(|d| d.len() >= 6) {
                let mut from = 0;
                while let Some(at) = digits[from..].find(d.as_str()) {
                    for &i in &chain[from + at..from + at + d.len()] {
                        blank[i] = true;
                    }
                    from += at + 1;
                }
            }
            // Short values: a run of adjacent digits equal to one.
            let mut start = 0;
            while start < chain.len() {
                let mut end = start + 1;
                while end < chain.len() && chain[end] == chain[end - 1] + 1 {
                    end += 1;
                }
                let run: String = chain[start..end].iter().map(|&i| chars[i]).collect();
                if self.digits.iter().any(|d| d.len() < 6 && *d == run) {
                    for &i in &chain[start..end] {
                        blank[i] = true;
                    }
                }
                start = end;
            }
        }
        for (c, b) in chars.iter_mut().zip(&blank) {
            if *b {
                *c = '*';
            }
        }
        chars.into_iter().collect()
    }
}

/// The most characters one character takes encoded (`\u0034`; a percent-encoded one takes 3 per byte).
const ENCODED_WIDTH: usize = 6;

/// The most layers of percent-encoding and JSON escapes decoded (a review got the PIN through 4 layers when 3 were).
const DECODE_LAYERS: usize = 16;

/// The shortest base64 text looked into: 6 bytes, a birth date's length (a card number takes 20 characters).
const MIN_BASE64: usize = 8;

/// Decodes percent-encoding and JSON's `\uXXXX` escapes, repeatedly (an echo may be encoded more than once), until
/// nothing changes (at most [`DECODE_LAYERS`] layers: each layer shortens the text), and removes the characters that
/// show nothing ([`crate::text::shows_nothing`]: a soft hyphen inside a secret hides it from a plain search).
/// Invalid sequences are kept as they are.
fn decode_escapes(text: &str) -> std::borrow::Cow<'_, str> {
    let mut out = std::borrow::Cow::Borrowed(text);
    for _ in 0..DECODE_LAYERS {
        let decoded = unescape_json_u(&percent_encoding::percent_decode_str(&out).decode_utf8_lossy()).into_owned();
        if decoded == *out {
            break;
        }
        out = std::borrow::Cow::Owned(decoded);
    }
    if out.chars().any(crate::text::shows_nothing) {
        out = std::borrow::Cow::Owned(out.chars().filter(|&c| !crate::text::shows_nothing(c)).collect());
    }
    out
}

/// Decodes JSON's `\uXXXX` escapes (surrogate pairs joined; a lone surrogate becomes U+FFFD).
fn unescape_json_u(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains("\\u") {
        return std::borrow::Cow::Borrowed(text);
    }
    let hex4 = |s: &str| {
        s.get(..4).filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit())).and_then(|h| u32::from_str_radix(h, 16).ok())
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("\\u") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let Some(c) = hex4(after) else {
            out.push_str("\\u");
            rest = after;
            continue;
        };
        let low = after.get(4..).and_then(|r| r.strip_prefix("\\u")).and_then(hex4);
        match low {
            Some(lo) if (0xD800..0xDC00).contains(&c) && (0xDC00..0xE000).contains(&lo) => {
                out.push(char::from_u32(0x10000 + ((c - 0xD800) << 10) + (lo - 0xDC00)).unwrap_or('\u{fffd}'));
                rest = &after[10..];
            }
            _ => {
                out.push(char::from_u32(c).unwrap_or('\u{fffd}'));
                rest = &after[4..];
            }
        }
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// The text a run of base64 characters decodes to, read leniently (invalid UTF-8 as U+FFFD, control characters as
/// spaces: an echo behind a few binary bytes is still read). A run whose length is not a base64 length is read
/// without its last characters.
fn base64_text(run: &str) -> Option<String> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);
    let run = if run.len() % 4 == 1 { &run[..run.len() - 1] } else { run };
    let url_safe = run.contains(['-', '_']);
    if url_safe && run.contains(['+', '/']) {
        return None;
    }
    let bytes = base64::Engine::decode(if url_safe { &URL_SAFE } else { &STANDARD }, run).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    Some(text.chars().map(|c| if c.is_control() && !matches!(c, '\n' | '\r' | '\t') { ' ' } else { c }).collect())
}

/// Replaces `word`, in any ASCII case, with `[redacted]`: everywhere (`anywhere`), or only where it stands alone
/// (not inside a longer run of letters and digits).
fn replace_token(text: &str, word: &str, anywhere: bool) -> String {
    // ASCII case folding keeps every byte offset.
    let (lower, word) = (text.to_ascii_lowercase(), word.to_ascii_lowercase());
    if word.is_empty() || !lower.contains(&word) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    while let Some(found) = lower[at..].find(&word) {
        let (start, end) = (at + found, at + found + word.len());
        let before = text[..start].chars().next_back();
        let after = text[end..].chars().next();
        let alone = !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric);
        out.push_str(&text[at..start]);
        out.push_str(if anywhere || alone { "[redacted]" } else { &text[start..end] });
        at = end;
    }
    out.push_str(&text[at..]);
    out
}

/// Blanks the value after any [`SECRET_KEYS`] name followed by `:` or `=` (quotes, backslashes and spaces around
/// them allowed): `"pwd_2digit":"73"` becomes `"pwd_2digit":"***"`.
fn blank_keyed(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let bytes = text.as_bytes();
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for key in SECRET_KEYS {
        let mut from = 0;
        while let Some(at) = lower[from..].find(key) {
            let start = from + at;
            from = start + key.len();
            if start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
                continue;
            }
            let mut j = from;
            while j < bytes.len() && j < from + 4 && matches!(bytes[j], b'"' | b'\'' | b'\\' | b' ') {
                j += 1;
            }
            if j >= bytes.len() || !matches!(bytes[j], b':' | b'=') {
                continue;
            }
            j += 1;
            let skip = j;
            while j < bytes.len() && j < skip + 4 && matches!(bytes[j], b'"' | b'\'' | b'\\' | b' ') {
                j += 1;
            }
            let value = j;
            while j < bytes.len()
                && j < value + 200
                && !matches!(bytes[j], b'"' | b'\'' | b'\\' | b'&' | b',' | b'}' | b']' | b';')
                && !bytes[j].is_ascii_whitespace()
            {
                j += 1;
            }
            // Only whole characters (the value ends at an ASCII byte or at the 200-byte bound, moved back to one).
            while j > value && !text.is_char_boundary(j) {
                j -= 1;
            }
            if j > value {
                spans.push((value, j));
            }
        }
    }
    if spans.is_empty() {
        return text.to_owned();
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (s, e) in spans {
        if s < at {
            continue;
        }
        out.push_str(&text[at..s]);
        out.push_str("***");
        at = e;
    }
    out.push_str(&text[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CARD: &str = "4532015112830366";

    fn sent() -> Redactor {
        let mut r = Redactor::default();
        r.sent_digits("4532-0151-1283-0366");
        r.sent_digits("870215");
        r.sent_digits("73");
        r.sent_word("S3cr3t-echo-imp-secret");
        r.sent_token("tokEchoAccess9");
        r
    }

    fn digits_of(s: &str) -> String {
        s.chars().filter(char::is_ascii_digit).collect()
    }

    #[test]
    fn an_echoed_request_keeps_none_of_what_was_sent() {
        let echo = r#"bad request: {"birth":"870215","card_number":"4532-0151-1283-0366","expiry":"2031-12","pwd_2digit":"73"} Authorization: Bearer tokEchoAccess9 imp_secret S3cr3t-echo-imp-secret"#;
        let out = sent().clean(echo);
        for secret in ["870215", "S3cr3t-echo-imp-secret", "tokEchoAccess9", "\"73\"", "2031-12"] {
            assert!(!out.contains(secret), "{secret} in {out}");
        }
        assert!(!digits_of(&out).contains(CARD), "{out}");
        assert!(out.contains(r#""pwd_2digit":"***""#), "{out}");
        assert!(out.contains("Authorization: Bearer [redacted]"), "{out}");
    }

    #[test]
    fn a_sent_card_number_is_removed_in_any_grouping() {
        let r = sent();
        for grouped in [
            "4532015112830366",
            "4532 0151 1283 0366",
            "4532.0151.1283.0366",
            "4532/0151/1283/0366",
            "4532\",\"0151\",\"1283\",\"0366",
            "45 32 01 51 12 83 03 66",
            "453201 5112830366",
        ] {
            let out = r.clean(&format!("card [{grouped}] refused"));
            assert!(!digits_of(&out).contains(CARD), "{grouped}: {out}");
            assert!(out.starts_with("card [") && out.ends_with("] refused"), "{out}");
        }
        // The PIN digits, standing alone, whatever surrounds them; not inside another number.
        assert_eq!(r.clean("PIN digits [73] wrong"), "PIN digits [**] wrong");
        assert_eq!(r.clean("HTTP 573, amount 7300"), "HTTP 573, amount 7300");
        // The birth date with separators.
        assert_eq!(r.clean("born 87-02-15"), "born **-**-**");
        assert_eq!(r.clean("born 87.02.15"), "born **.**.**");
    }

    #[test]
    fn secret_fields_are_blanked_whoever_sent_them() {
        let r = Redactor::default();
        let echo = r#"{"birth":"900101","card_number":"4242424242424242","expiry":"2031-12","pwd_2digit":"12"}"#;
        assert_eq!(r.clean(echo), r#"{"birth":"***","card_number":"***","expiry":"***","pwd_2digit":"***"}"#);
        assert_eq!(r.clean("imp_key=k&imp_secret=hunter2&x=1"), "imp_key=k&imp_secret=***&x=1");
        assert_eq!(r.clean(r#"{\"access_token\": \"abc\"}"#), r#"{\"access_token\": \"***\"}"#);
        // Card-like numbers in free text are blanked too.
        assert_eq!(r.clean("card 4242-4242-4242-4242 ok"), "card 4242-42**-****-4242 ok");
        assert_eq!(r.clean("HTTP 502 at 10:00, code -1, amount 9900"), "HTTP 502 at 10:00, code -1, amount 9900");
    }

    #[test]
    fn control_characters_cannot_forge_lines_or_reach_the_terminal() {
        let text =
            "declined\n2099-01-01T00:00:00Z  INFO charge.paid subscription=FORGED\x1b[2J\r\u{85}\u{2028}\u{202e}x";
        let out = Redactor::default().clean(text);
        assert!(!out.chars().any(crate::text::invisible), "{out:?}");
        assert!(out.starts_with("declined ") && out.contains("INFO charge.paid subscription=FORGED [2J"), "{out:?}");
    }

    #[test]
    fn long_text_is_cut_and_a_secret_across_the_cut_is_still_removed() {
        let r = sent();
        let huge = "x".repeat(1_000_000);
        let out = r.clean(&huge);
        assert_eq!(out.chars().count(), MAX_CHARS + 1);
        assert!(out.ends_with('…'));
        // The card number starts just before the cut: no digit of it is shown.
        let text = format!("{}4532 0151 1283 0366{}", "x".repeat(MAX_CHARS - 3), "y".repeat(100));
        let out = r.clean(&text);
        assert!(out.ends_with("***…"), "{out}");
        let text = format!("{}S3cr3t-echo-imp-secret", "x".repeat(MAX_CHARS - 5));
        assert!(!r.clean(&text).contains("S3cr"), "{}", r.clean(&text));
    }

    #[test]
    fn identifiers_are_plain_or_refused() {
        let r = sent();
        assert!(r.plain_id("imp_123456789012"));
        assert!(r.plain_id("billd-sub-0001.x_7"));
        for bad in ["", "imp 1", "imp_1\n", "imp_1\x1b[2J", "imp_\"1", &"x".repeat(81), "imp_4532015112830366"] {
            assert!(!r.plain_id(bad), "{bad:?}");
        }
        assert!(!r.plain_id("imp-tokEchoAccess9"), "a sent token");
    }

    #[test]
    fn encoded_echoes_keep_nothing_that_was_sent() {
        use base64::Engine as _;
        let r = sent();
        let body = r#"{"birth":"870215","card_number":"4532-0151-1283-0366","pwd_2digit":"73","imp_secret":"S3cr3t-echo-imp-secret"}"#;
        let percent: String = body.bytes().map(|b| format!("%{b:02X}")).collect();
        let json: String = body.chars().map(|c| format!("\\u{:04x}", c as u32)).collect();
        let twice = percent.replace('%', "%25");
        let b64 = base64::engine::general_purpose::STANDARD.encode(body);
        let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(body);
        let cut = &b64[..b64.len() - 7];
        for echo in [&percent, &json, &twice, &b64, &b64url, cut] {
            let out = r.clean(&format!("refused: {echo} (bad request)"));
            for secret in ["870215", "4532", "S3cr3t", "\"73\"", "%2273", "0037", "eyJ"] {
                assert!(!out.contains(secret), "{secret} in {out}");
            }
            assert!(out.starts_with("refused: ") && out.ends_with("(bad request)"), "{out}");
            assert!(r.holds_sent(echo), "{echo}");
        }
        // What a review still got through: base64 behind binary bytes, of text that is not UTF-8, glued to letters;
        // percent-encoding four layers deep.
        let mut binary = vec![0u8, 1];
        binary.extend(body.as_bytes());
        let mut latin1 = vec![0xe9u8];
        latin1.extend(body.as_bytes());
        let four = (0..3).fold(percent.clone(), |p, _| p.replace('%', "%25"));
        for echo in [
            base64::engine::general_purpose::STANDARD.encode(&binary),
            base64::engine::general_purpose::STANDARD.encode(&latin1),
            format!("Req{b64}"),
            format!("X{}", base64::engine::general_purpose::STANDARD.encode(format!("::{body}"))),
            four,
        ] {
            let out = r.clean(&format!("refused: {echo}"));
            // Nothing of the echo is left (its end would carry card data), and decoding what is left shows none.
            assert!(!out.contains(&echo[echo.len() - 16..]), "{out} (from {echo})");
            let decoded = (0..8)
                .fold(out.clone(), |t, _| percent_encoding::percent_decode_str(&t).decode_utf8_lossy().into_owned());
            for secret in ["870215", "4532", "S3cr3t", "\"73\""] {
                assert!(!decoded.contains(secret), "{secret} in {decoded} (from {echo})");
            }
        }
        // The issue's echo: the PIN after a percent-encoded key.
        assert_eq!(r.clean("pwd_2digit%22%3A%2273%22"), r#"pwd_2digit":"***""#);
        // Plain text that only looks encoded is left alone.
        for plain in ["100% sure", "declined: insufficient funds", "a \\u00zz b", "Base64Text", "billd-s1-0"] {
            assert_eq!(r.clean(plain), plain);
            assert!(!r.holds_sent(plain), "{plain}");
        }
        assert!(r.plain_id("imp_123456789012"));
    }

    /// Issue 24 hardening, F2: an id from the gateway holding a card-number-like digit run (13 or more digits,
    /// whatever separates them, Luhn-valid or not) is not an id: never stored or printed.
    #[test]
    fn an_id_holding_a_card_number_is_refused() {
        let r = Redactor::default();
        for bad in [
            "4242424242424242",
            "imp_4242424242424242",
            "4242424242424241",
            "imp_4242-4242-4242-4242",
            "imp_4242.4242.4242.4242",
            "imp_4242_4242_4242_4242",
            "1234567890123",
        ] {
            assert!(!r.plain_id(bad), "{bad:?} was taken as an id");
        }
        // i'mport's own (imp_ and 12 digits) and other short digit runs are ids.
        for good in ["imp_123456789012", "imp_448280090638", "imp-2025-01-01", "pay_12345678_9012"] {
            assert!(r.plain_id(good), "{good:?} was refused");
        }
    }

    /// Issue 24 hardening, point ii: a secret billd sent, echoed in upper case, in hex, or with invisible
    /// characters inside, is removed as well.
    #[test]
    fn a_sent_secret_is_removed_in_any_case_in_hex_and_through_invisible_characters() {
        let mut r = Redactor::default();
        r.sent_word("imp_sandbox_secret");
        let hex: String = "imp_sandbox_secret".bytes().map(|b| format!("{b:02x}")).collect();
        for echo in [
            "IMP_SANDBOX_SECRET".to_string(),
            "Imp_Sandbox_Secret".to_string(),
            hex.clone(),
            hex.to_uppercase(),
            "imp_sand\u{ad}box_secret".to_string(),
            "imp\u{200b}_sandbox_se\u{feff}cret".to_string(),
        ] {
            let out = r.clean(&format!("bad key: {echo} (refused)"));
            assert_eq!(out, "bad key: [redacted] (refused)", "{echo:?}");
            assert!(r.holds_sent(&echo), "{echo:?}");
        }
        // Text around it is kept as it was.
        assert_eq!(r.clean("imp_sandbox_public is fine"), "imp_sandbox_public is fine");
    }

    #[test]
    fn short_secrets_are_removed_only_where_they_stand_alone() {
        let mut r = Redactor::default();
        r.sent_word("ab1");
        assert_eq!(r.clean("x ab1 yab1z"), "x [redacted] yab1z");
    }
}
