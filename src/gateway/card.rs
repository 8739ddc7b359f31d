//! Card data typed by an operator: read from stdin (JSON) or a no-echo prompt, validated, and only ever shown masked.

use chrono::NaiveDate;
use serde::Deserialize;
use std::fmt;
use std::io::{IsTerminal, Read};

/// A validated card. It never prints its number, birth date or PIN digits; only a gateway client reads them, to
/// send them.
pub struct Card {
    pub(in crate::gateway) number: String,
    pub expiry: String,
    pub(in crate::gateway) birth: String,
    pub(in crate::gateway) pwd_2digit: Option<String>,
}

impl fmt::Debug for Card {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Card({}, expiry {})", self.masked(), self.expiry)
    }
}

/// What the operator typed, before validation.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawCard {
    pub card_number: String,
    pub expiry: String,
    pub birth: String,
    #[serde(default)]
    pub pwd_2digit: Option<String>,
}

impl fmt::Debug for RawCard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RawCard([redacted])")
    }
}

/// Masks a card number: at most the first 6 and last 4 digits, the rest `*` (shorter numbers: last 4 only).
pub fn mask(number: &str) -> String {
    let digits: Vec<char> = number.chars().filter(char::is_ascii_digit).collect();
    let n = digits.len();
    if n >= 13 {
        let head: String = digits[..6].iter().collect();
        let tail: String = digits[n - 4..].iter().collect();
        format!("{head}{}{tail}", "*".repeat(n - 10))
    } else if n > 4 {
        format!("{}{}", "*".repeat(n - 4), digits[n - 4..].iter().collect::<String>())
    } else {
        "*".repeat(n)
    }
}

/// The most characters that are neither letters nor digits between two digit groups of one number (`4242  4242`,
/// `4242","4242`, `4242 - 4242`).
const MAX_SEPARATOR: usize = 3;

/// The most digits of a card number (ISO/IEC 7812).
const CARD_DIGITS_MAX: usize = 19;

/// A digit, as card data could be written: ASCII, or any other decimal digit (fullwidth `４２４２`, other scripts'),
/// which a reader takes for the same number.
fn is_digit(c: char) -> bool {
    c.is_ascii_digit() || (!c.is_ascii() && c.is_numeric())
}

/// The digit chains of `chars`, as ranges of positions from the first digit to the last: groups of digits,
/// each two separated by 1 to [`MAX_SEPARATOR`] characters that are neither letters nor digits (whatever they are:
/// `*`, `.`, `,`, `/`, `_`, spaces).
fn chains(chars: &[char]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if !is_digit(chars[i]) {
            i += 1;
            continue;
        }
        let start = i;
        let mut end = i;
        while end < chars.len() && is_digit(chars[end]) {
            end += 1;
        }
        loop {
            let mut k = end;
            while k < chars.len() && k - end <= MAX_SEPARATOR && !chars[k].is_alphanumeric() {
                k += 1;
            }
            if k == end || k - end > MAX_SEPARATOR || !chars.get(k).is_some_and(|c| is_digit(*c)) {
                break;
            }
            end = k;
            while end < chars.len() && is_digit(chars[end]) {
                end += 1;
            }
        }
        out.push(start..end);
        i = end;
    }
    out
}

/// Whether `text` holds what could be a card number: a chain of 13 or more digits (see [`redact_numbers`]).
pub fn holds_card_number(text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    chains(&chars).into_iter().any(|r| chars[r].iter().filter(|c| is_digit(**c)).count() >= 13)
}

/// Blanks what could be card data in free text. A chain of digit groups separated by short runs of characters
/// that are neither letters nor digits (any of them: `4242*4242…`, `4242.4242…`, `4242  4242…`) holding 13 to 19
/// digits is a card number: it keeps its first 6 and last 4 digits, as [`mask`] does; one holding more (several
/// numbers billd cannot tell apart, a card among them perhaps) keeps none. In a shorter chain, every run of 6 or
/// more digits with single spaces or dashes between them (a birth date, an expiry) is all `*`; amounts, times and
/// codes (`9,900`, `10:00`, `-1`) stay as they are. One step of [`crate::gateway::redact::Redactor::clean`], which
/// gateway text goes through (it also blanks what billd sent, such as the 2 PIN digits this leaves).
pub fn redact_numbers(text: &str) -> String {
    if !text.chars().any(is_digit) {
        return text.to_owned();
    }
    let mut chars: Vec<char> = text.chars().collect();
    let digit = |c: &char| is_digit(*c);
    for chain in chains(&chars) {
        let n = chars[chain.clone()].iter().filter(|c| digit(c)).count();
        if n >= 13 {
            let mut seen = 0;
            for c in &mut chars[chain] {
                if is_digit(*c) {
                    seen += 1;
                    if n > CARD_DIGITS_MAX || (seen > 6 && seen <= n - 4) {
                        *c = '*';
                    }
                }
            }
            continue;
        }
        // Runs with single spaces or dashes between digits.
        let mut at = chain.start;
        while at < chain.end {
            let mut end = at + 1;
            while end < chain.end && (digit(&chars[end]) || (matches!(chars[end], ' ' | '-') && digit(&chars[end + 1])))
            {
                end += 1;
            }
            if chars[at..end].iter().filter(|c| digit(c)).count() >= 6 {
                chars[at..end].iter_mut().filter(|c| is_digit(**c)).for_each(|c| *c = '*');
            }
            at = end;
            while at < chain.end && !digit(&chars[at]) {
                at += 1;
            }
        }
    }
    chars.into_iter().collect()
}

fn luhn(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

impl Card {
    /// Validates before anything is sent: digits only (spaces and dashes removed), 13-19 long, Luhn, expiry
    /// `YYYY-MM` not before `today`'s month, birth `YYMMDD` or a 10-digit business number, `pwd_2digit` 2 digits.
    /// Errors show the number masked.
    pub fn validate(raw: RawCard, today: NaiveDate) -> Result<Card, String> {
        let cleaned: String = raw.card_number.chars().filter(|c| *c != ' ' && *c != '-').collect();
        if cleaned.is_empty() {
            return Err("card_number is empty".into());
        }
        if !cleaned.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!("card_number {} has characters other than digits, spaces and dashes", mask(&cleaned)));
        }
        let masked = mask(&cleaned);
        if !(13..=19).contains(&cleaned.len()) {
            return Err(format!("card_number {masked} has {} digits; a card has 13 to 19", cleaned.len()));
        }
        if !luhn(&cleaned) {
            return Err(format!("card_number {masked} fails the Luhn check: a digit is mistyped"));
        }
        let exp = raw.expiry.trim();
        let month = NaiveDate::parse_from_str(&format!("{exp}-01"), "%Y-%m-%d")
            .map_err(|_| "expiry is not YYYY-MM".to_string())?;
        let this_month = NaiveDate::from_ymd_opt(today.year_ce().1 as i32, today.month0() + 1, 1).unwrap_or(today);
        if month < this_month {
            return Err("expiry is in the past: the card has expired".into());
        }
        let birth = raw.birth.trim();
        if !(birth.len() == 6 || birth.len() == 10) || !birth.chars().all(|c| c.is_ascii_digit()) {
            return Err("birth must be YYMMDD (6 digits) or a 10-digit business registration number".into());
        }
        if birth.len() == 6 {
            let ok = NaiveDate::parse_from_str(&format!("20{birth}"), "%Y%m%d").is_ok()
                || NaiveDate::parse_from_str(&format!("19{birth}"), "%Y%m%d").is_ok();
            if !ok {
                return Err("birth is not a valid YYMMDD date".into());
            }
        }
        let pwd = raw.pwd_2digit.map(|p| p.trim().to_owned()).filter(|p| !p.is_empty());
        if pwd.as_ref().is_some_and(|p| p.len() != 2 || !p.chars().all(|c| c.is_ascii_digit())) {
            return Err("pwd_2digit must be the first 2 digits of the card PIN".into());
        }
        Ok(Card { number: cleaned, expiry: exp.to_owned(), birth: birth.to_owned(), pwd_2digit: pwd })
    }

    pub fn masked(&self) -> String {
        mask(&self.number)
    }
}

use chrono::Datelike;

/// Reads the card: JSON on stdin (`{"card_number", "expiry", "birth", "pwd_2digit"}`) when stdin is not a
/// terminal, else prompts without echoing the number, birth date or PIN digits. Never from argv.
pub fn read_card() -> Result<RawCard, String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let ask = |prompt: &str| {
            rpassword::prompt_password(prompt).map_err(|e| format!("cannot read from the terminal: {e}"))
        };
        let card_number = ask("card number (not shown): ")?;
        eprint!("expiry (YYYY-MM): ");
        let mut expiry = String::new();
        stdin.read_line(&mut expiry).map_err(|e| format!("cannot read expiry: {e}"))?;
        let birth = ask("birth date YYMMDD or business number (not shown): ")?;
        let pwd = ask("first 2 PIN digits (not shown, Enter to skip): ")?;
        Ok(RawCard { card_number, expiry, birth, pwd_2digit: Some(pwd) })
    } else {
        let mut text = String::new();
        stdin.lock().read_to_string(&mut text).map_err(|e| format!("cannot read the card from stdin: {e}"))?;
        serde_json::from_str(&text).map_err(|e| json_error(&e))
    }
}

/// What was wrong with the card JSON, by position only: serde_json's own messages quote values (a card number
/// typed as a JSON number would be printed whole).
fn json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Syntax | Category::Eof => "is not valid JSON",
        Category::Data => "has a missing field or a field of the wrong type (every value is a string)",
        Category::Io => "could not be read",
    };
    format!(
        "stdin: the card {what} at line {} column {}; expected {{\"card_number\": \"…\", \"expiry\": \"YYYY-MM\", \
         \"birth\": \"YYMMDD\", \"pwd_2digit\": \"..\"}}",
        e.line(),
        e.column()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_free_text_are_redacted() {
        let echo = r#"{"birth":"900101","card_number":"4242424242424242","expiry":"2031-12","pwd_2digit":"12"}"#;
        assert_eq!(
            redact_numbers(echo),
            r#"{"birth":"******","card_number":"424242******4242","expiry":"****-**","pwd_2digit":"12"}"#
        );
        // Digit runs alone leave the PIN digits: gateway text goes through `Redactor::clean`, which blanks them too
        // (redact's `secret_fields_are_blanked_whoever_sent_them`).
        assert_eq!(redact_numbers("card 4242-4242-4242-4242 ok"), "card 4242-42**-****-4242 ok");
        assert_eq!(
            redact_numbers("HTTP 502 at 10:00, code -1, amount 9900"),
            "HTTP 502 at 10:00, code -1, amount 9900"
        );
    }

    /// A card number in fullwidth (or another script's) digits is the same number to a reader: an unsigned
    /// notification's merchant_uid of `４２４２４２４２４２４２４２４２` was logged whole.
    #[test]
    fn a_card_number_in_fullwidth_digits_is_masked_too() {
        let wide = "４２４２４２４２４２４２４２４２";
        assert!(holds_card_number(wide));
        assert_eq!(redact_numbers(&format!("uid {wide}")), "uid ４２４２４２******４２４２");
        assert_eq!(redact_numbers("uid 4242４２４２4242４２４２"), "uid 4242４２******４２４２");
        // Korean text and amounts stay as they are.
        assert_eq!(redact_numbers("잔액부족 9,900원"), "잔액부족 9,900원");
    }

    /// Issue 24 hardening, F1: a card number whose digit groups are separated by anything but one space or dash
    /// was kept whole in gateway text (and so in stderr, logs, `fail_reason` and `billd charges`).
    #[test]
    fn a_card_number_is_masked_whatever_separates_its_groups() {
        for sep in ["*", ".", ",", "  ", "/", "_", "\",\"", ":", " - ", "~"] {
            let grouped = ["4242", "4242", "4242", "4242"].join(sep);
            let out = redact_numbers(&format!("card {grouped} declined"));
            let digits: String = out.chars().filter(char::is_ascii_digit).collect();
            assert_eq!(digits, "4242424242", "{sep:?}: {out}");
            assert!(out.starts_with("card 4242") && out.ends_with("4242 declined"), "{sep:?}: {out}");
        }
        assert_eq!(redact_numbers("card 4242*4242*4242*4242 declined"), "card 4242*42********4242 declined");
        assert_eq!(redact_numbers("4242.4242.4242.4242"), "4242.42**.****.4242");
        // 13 and 19 digits, in groups of any size.
        assert_eq!(redact_numbers("3782.822463.10005"), "3782.82****.*0005");
        assert_eq!(redact_numbers("6011/0009/9013/9424/123"), "6011/00**/****/***4/123");
        // Longer chains hold numbers billd cannot tell apart: nothing of them is shown.
        assert_eq!(redact_numbers("ids 900101,4242424242424242"), "ids ******,****************");
        // Amounts, times and codes stay readable.
        for plain in [
            "HTTP 502 at 10:00, code -1, amount 9900",
            "amount 9,900 KRW, 1,000,000 KRW max",
            "paid 2 of 3 (9900 / 19800)",
            "retry at 10:00:00",
        ] {
            assert_eq!(redact_numbers(plain), plain);
        }
    }

    fn raw(n: &str, exp: &str, birth: &str) -> RawCard {
        RawCard { card_number: n.into(), expiry: exp.into(), birth: birth.into(), pwd_2digit: Some("12".into()) }
    }

    fn today() -> NaiveDate {
        "2026-11-24".parse().unwrap()
    }

    #[test]
    fn accepts_a_good_card_and_masks_it() {
        let c = Card::validate(raw("4242-4242 4242-4242", "2030-12", "900101"), today()).unwrap();
        assert_eq!(c.masked(), "424242******4242");
        assert!(!format!("{c:?}").contains("4242424242424242"));
    }

    #[test]
    fn rejects_bad_cards_without_echoing_the_number() {
        let cases = [
            raw("4242424242424241", "2030-12", "900101"),
            raw("4242a24242424242", "2030-12", "900101"),
            raw("424242424242", "2030-12", "900101"),
            raw("4242424242424242", "2026-10", "900101"),
            raw("4242424242424242", "2030-13", "900101"),
            raw("4242424242424242", "2030-12", "901301"),
            raw("4242424242424242", "2030-12", "12345"),
        ];
        for r in cases {
            let n = r.card_number.clone();
            let e = Card::validate(r, today()).unwrap_err();
            assert!(!e.contains(&n), "{e}");
        }
        assert!(Card::validate(raw("4242424242424242", "2026-11", "1234567890"), today()).is_ok());
    }
}
