//! Ids billd sends to the gateway (customer_uid, merchant_uid): one rule for what they may be, and their encoding as
//! one URL path segment, byte for byte.
//!
//! i'mport looks payments up and keeps billing keys under ids in its URL path (`/payments/find/{merchant_uid}`,
//! `/subscribe/customers/{customer_uid}`). An id that a path cannot carry as it is (a control character, which URL
//! parsers drop; `.` or `..`, which they resolve away; `/` or `\`, which servers split on) would be charged under
//! one id and looked up under another: a lookup that finds nothing, and a charge that seems never to have happened.
//! Such ids are refused before anything is sent, wherever an id enters billd; so are ids holding an invisible
//! character ([`crate::text::invisible`]: a zero-width space or a direction override makes one id print as another).

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Everything but RFC 3986's unreserved characters is percent-encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// The longest customer_uid billd accepts.
pub const CUSTOMER_UID_MAX: usize = 80;
/// The longest merchant_uid an operator may choose (`charge-once`).
pub const MERCHANT_UID_MAX: usize = 40;

/// Why `id` cannot be sent to the gateway as an id of at most `max` characters; `None` when it can.
pub fn refusal(id: &str, max: usize) -> Option<String> {
    let n = id.chars().count();
    if n == 0 || n > max {
        return Some(format!("must be 1-{max} characters (it is {n})"));
    }
    if let Some(c) = id.chars().find(|c| c.is_control()) {
        let hint = if c == '\r' { " (a file saved with Windows line endings?)" } else { "" };
        return Some(format!(
            "contains the control character U+{:04X}, which the gateway's URL path cannot carry{hint}",
            c as u32
        ));
    }
    if let Some(c) = id.chars().find(|&c| crate::text::invisible(c)) {
        return Some(format!(
            "contains the invisible character U+{:04X} (it shows as nothing, or reorders or breaks the line it is \
             printed on: the id would look like another one)",
            c as u32
        ));
    }
    if id == "." || id == ".." {
        return Some("is not a gateway id (a URL path resolves it away)".into());
    }
    if let Some(c) = id.chars().find(|&c| c == '/' || c == '\\') {
        let name = if c == '/' { "a slash (/)" } else { "a backslash (\\)" };
        return Some(format!("contains {name}, which the gateway's URL path cannot carry within one id"));
    }
    if id.trim() != id {
        return Some("starts or ends with white space".into());
    }
    None
}

/// Why `id` cannot be a merchant_uid an operator chooses for a one-time charge (`charge-once`, `charge-key`);
/// `None` when it can. Besides [`refusal`]: printable ASCII only (letters, digits, punctuation, inner spaces).
/// i'mport's order ids are ASCII in practice, and a look-alike letter (a fullwidth `ＢＩＬＬＤ-`) would slip past
/// billd's own prefix, which is compared in ASCII.
pub fn merchant_uid_refusal(id: &str) -> Option<String> {
    refusal(id, MERCHANT_UID_MAX).or_else(|| {
        id.chars().find(|c| !(c.is_ascii_graphic() || *c == ' ')).map(|c| {
            format!(
                "contains {c:?} (U+{:04X}): a merchant_uid billd is given is printable ASCII (letters, digits, \
                 punctuation)",
                c as u32
            )
        })
    })
}

/// `id` as one URL path segment, every byte outside the unreserved characters percent-encoded; `Err` (why) for an
/// id no path can carry as it is ([`refusal`], at any length).
pub fn path_segment(id: &str) -> Result<String, String> {
    match refusal(id, usize::MAX) {
        Some(why) => Err(format!("{id:?} {why}")),
        None => Ok(utf8_percent_encode(id, SEGMENT).to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_one_segment_byte_for_byte() {
        assert_eq!(path_segment("order-77").unwrap(), "order-77");
        assert_eq!(path_segment("a.b_c~d").unwrap(), "a.b_c~d");
        assert_eq!(path_segment("주문 1?#%").unwrap(), "%EC%A3%BC%EB%AC%B8%201%3F%23%25");
        // A literal "%2e%2e" is not a dot segment once encoded.
        assert_eq!(path_segment("%2e%2e").unwrap(), "%252e%252e");
    }

    #[test]
    fn ids_a_path_cannot_carry_are_refused() {
        for id in ["", ".", "..", "order-77\r", "a\nb", "tab\t", "a/b", "a\\b", "del\u{7f}", " x", "x "] {
            assert!(path_segment(id).is_err(), "{id:?} was accepted");
            assert!(refusal(id, 80).is_some(), "{id:?} was accepted");
        }
        assert!(refusal(&"x".repeat(81), 80).unwrap().contains("1-80 characters (it is 81)"));
        assert!(refusal("order-77\r", 40).unwrap().contains("U+000D"));
        assert_eq!(refusal("c1", 80), None);
    }

    /// Issue 24 hardening, F4: invisible and bidirectional characters are refused in every id (they print as
    /// nothing, or reorder a line: `dem\u{200b}o-sub-1-1` looks like one of billd's own merchant_uids).
    #[test]
    fn invisible_characters_are_refused_in_ids() {
        for c in
            ['\u{202e}', '\u{2028}', '\u{2029}', '\u{200b}', '\u{200d}', '\u{feff}', '\u{ad}', '\u{2066}', '\u{61c}']
        {
            let id = format!("dem{c}o-sub-1-1");
            let why = refusal(&id, 80).unwrap_or_else(|| panic!("{id:?} was accepted"));
            assert!(why.contains(&format!("U+{:04X}", c as u32)), "{why}");
            assert!(path_segment(&id).is_err());
        }
        assert_eq!(refusal("주문-1", 80), None, "letters of any script are kept");
        // A merchant_uid an operator gives is printable ASCII.
        assert!(merchant_uid_refusal("ＢＩＬＬＤ-x").unwrap().contains("U+FF22"));
        assert!(merchant_uid_refusal("주문-1").is_some());
        assert_eq!(merchant_uid_refusal("order 77-b"), None);
    }
}
