//! Ids billd sends to the gateway (customer_uid, merchant_uid): one rule for what they may be, and their encoding as
//! one URL path segment, byte for byte.
//!
//! i'mport looks payments up and keeps billing keys under ids in its URL path (`/payments/find/{merchant_uid}`,
//! `/subscribe/customers/{customer_uid}`). An id that a path cannot carry as it is (a control character, which URL
//! parsers drop; `.` or `..`, which they resolve away; `/` or `\`, which servers split on) would be charged under
//! one id and looked up under another: a lookup that finds nothing, and a charge that seems never to have happened.
//! Such ids are refused before anything is sent, wherever an id enters billd.

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
}
