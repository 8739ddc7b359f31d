//! Test card numbers, the Luhn check, masking, and how each card behaves when charged.
//!
//! The sandbox never keeps a full card number: a card is reduced to its mask
//! ([`mask`]) and its [`CardClass`] at the moment it is presented.

/// Approves every charge (any other Luhn-valid number that is not listed here approves too).
pub const APPROVE: &str = "4242424242424242";
/// Soft decline: every charge fails with `잔액부족 (insufficient funds)`.
pub const DECLINE_INSUFFICIENT_FUNDS: &str = "4000000000009995";
/// Hard decline: every charge fails with `분실신고카드 (lost card)`.
pub const DECLINE_LOST: &str = "4000000000009987";
/// Hard decline: every charge fails with `도난신고카드 (stolen card)`.
pub const DECLINE_STOLEN: &str = "4000000000009979";

/// `fail_reason` of a soft (insufficient funds) decline, also used by [`decline_first`] cards.
pub const REASON_INSUFFICIENT_FUNDS: &str = "잔액부족 (insufficient funds)";
/// `fail_reason` of [`DECLINE_LOST`].
pub const REASON_LOST: &str = "분실신고카드 (lost card)";
/// `fail_reason` of [`DECLINE_STOLEN`].
pub const REASON_STOLEN: &str = "도난신고카드 (stolen card)";

/// The first 13 digits shared by every [`decline_first`] card.
const DECLINE_FIRST_PREFIX: &str = "4000000000001";

/// A Luhn-valid 16-digit card number that declines (softly, insufficient funds) its first `n`
/// charges and approves from then on.
///
/// The pattern is `4000000000001` + `n` + `0` + a Luhn check digit, so
/// `decline_first(2) == "4000000000001208"`. Charges are counted per billing key
/// (`customer_uid`); re-issuing the key restarts the count. A key-in `onetime` payment without
/// a `customer_uid` counts against a sandbox-wide counter for that `n`.
///
/// # Panics
/// When `n` is not in `1..=9`.
pub fn decline_first(n: u32) -> String {
    assert!((1..=9).contains(&n), "decline_first(n) supports n in 1..=9, got {n}");
    let body = format!("{DECLINE_FIRST_PREFIX}{n}0");
    let check = luhn_check_digit(&body);
    format!("{body}{check}")
}

/// True when `digits` is made only of ASCII digits (at least two) and passes the Luhn checksum.
pub fn luhn_valid(digits: &str) -> bool {
    if digits.len() < 2 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    luhn_sum(digits.bytes().rev(), false).is_multiple_of(10)
}

/// The first 6 digits, `*` for the middle ones and the last 4: `424242******4242`.
/// Spaces and dashes are removed first; anything shorter than 11 digits is fully masked.
pub fn mask(card_number: &str) -> String {
    let digits: Vec<char> = card_number.chars().filter(|c| *c != ' ' && *c != '-').collect();
    let n = digits.len();
    if n < 11 {
        return "*".repeat(n);
    }
    digits.iter().enumerate().map(|(i, c)| if i < 6 || i >= n - 4 { *c } else { '*' }).collect()
}

/// How a card (and a billing key issued for it) answers charges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CardClass {
    /// Every charge is approved.
    Approve,
    /// Every charge fails softly (insufficient funds).
    InsufficientFunds,
    /// Every charge fails hard (lost card).
    Lost,
    /// Every charge fails hard (stolen card).
    Stolen,
    /// The first `n` charges fail softly, the following ones are approved.
    DeclineFirst(u32),
}

impl CardClass {
    /// The `fail_reason` of a declined charge, or `None` when this class approves
    /// (`DeclineFirst` reports the soft reason; whether it declines depends on its counter).
    pub fn decline_reason(self) -> Option<&'static str> {
        match self {
            CardClass::Approve => None,
            CardClass::InsufficientFunds | CardClass::DeclineFirst(_) => Some(REASON_INSUFFICIENT_FUNDS),
            CardClass::Lost => Some(REASON_LOST),
            CardClass::Stolen => Some(REASON_STOLEN),
        }
    }
}

/// A card number that passed validation: digits only, its mask and its class.
/// It is dropped as soon as the mask and class are taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CardFacts {
    pub class: CardClass,
    pub company: Company,
}

/// Card company shown as `card_code` / `card_name` (금융결제원 codes), chosen by the first digit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Company {
    pub code: &'static str,
    pub name: &'static str,
}

/// Why a card number was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CardError {
    /// Not 13–19 digits after removing spaces and dashes.
    Format,
    /// Fails the Luhn check.
    Luhn,
}

/// Strips spaces and dashes, checks length and Luhn, and classifies the card.
/// Returns the digits-only number (for masking) and its facts.
pub(crate) fn inspect(card_number: &str) -> Result<(String, CardFacts), CardError> {
    let digits: String = card_number.chars().filter(|c| *c != ' ' && *c != '-').collect();
    if !(13..=19).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CardError::Format);
    }
    if !luhn_valid(&digits) {
        return Err(CardError::Luhn);
    }
    let facts = CardFacts { class: classify(&digits), company: company(&digits) };
    Ok((digits, facts))
}

/// The behaviour of a valid, digits-only card number.
pub(crate) fn classify(digits: &str) -> CardClass {
    match digits {
        DECLINE_INSUFFICIENT_FUNDS => CardClass::InsufficientFunds,
        DECLINE_LOST => CardClass::Lost,
        DECLINE_STOLEN => CardClass::Stolen,
        _ => match decline_first_count(digits) {
            Some(n) => CardClass::DeclineFirst(n),
            None => CardClass::Approve,
        },
    }
}

fn decline_first_count(digits: &str) -> Option<u32> {
    let rest = digits.strip_prefix(DECLINE_FIRST_PREFIX)?;
    if rest.len() != 3 {
        return None;
    }
    let n = rest.chars().next()?.to_digit(10)?;
    (1..=9).contains(&n).then_some(n)
}

fn company(digits: &str) -> Company {
    let (code, name) = match digits.as_bytes().first() {
        Some(b'3') => ("365", "삼성카드"),
        Some(b'4') => ("366", "신한카드"),
        Some(b'5') => ("367", "현대카드"),
        Some(b'9') => ("361", "BC카드"),
        _ => ("381", "KB국민카드"),
    };
    Company { code, name }
}

fn luhn_sum(rev_digits: impl Iterator<Item = u8>, start_doubled: bool) -> u32 {
    let mut sum = 0;
    let mut double = start_doubled;
    for b in rev_digits {
        let mut d = u32::from(b - b'0');
        if double {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
        double = !double;
    }
    sum
}

fn luhn_check_digit(body: &str) -> u32 {
    // The check digit will be appended, so the body's last digit is the first one doubled.
    let sum = luhn_sum(body.bytes().rev(), true);
    (10 - sum % 10) % 10
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_test_cards_pass_luhn_and_are_classified() {
        for (card, class) in [
            (APPROVE, CardClass::Approve),
            (DECLINE_INSUFFICIENT_FUNDS, CardClass::InsufficientFunds),
            (DECLINE_LOST, CardClass::Lost),
            (DECLINE_STOLEN, CardClass::Stolen),
        ] {
            assert!(luhn_valid(card), "{card} must be Luhn-valid");
            assert_eq!(classify(card), class, "{card}");
        }
    }

    #[test]
    fn decline_first_cards_are_luhn_valid_and_carry_their_count() {
        for n in 1..=9 {
            let card = decline_first(n);
            assert_eq!(card.len(), 16);
            assert!(luhn_valid(&card), "{card}");
            assert_eq!(classify(&card), CardClass::DeclineFirst(n));
        }
        assert_eq!(decline_first(2), "4000000000001208");
    }

    #[test]
    #[should_panic(expected = "1..=9")]
    fn decline_first_rejects_zero() {
        decline_first(0);
    }

    #[test]
    fn luhn_rejects_altered_numbers_and_non_digits() {
        assert!(!luhn_valid("4242424242424241"));
        assert!(!luhn_valid("4242-4242-4242-4242"));
        assert!(!luhn_valid(""));
        assert!(!luhn_valid("0"));
        assert!(luhn_valid("79927398713"));
    }

    #[test]
    fn mask_keeps_first_six_and_last_four() {
        assert_eq!(mask(APPROVE), "424242******4242");
        assert_eq!(mask("4242-4242-4242-4242"), "424242******4242");
        assert_eq!(mask("1234"), "****");
    }

    #[test]
    fn inspect_strips_separators_and_refuses_bad_numbers() {
        let (digits, facts) = inspect("4242 4242-4242 4242").expect("valid");
        assert_eq!(digits, APPROVE);
        assert_eq!(facts.class, CardClass::Approve);
        assert_eq!(facts.company.name, "신한카드");
        assert_eq!(inspect("4242424242424241"), Err(CardError::Luhn));
        assert_eq!(inspect("42424242"), Err(CardError::Format));
        assert_eq!(inspect("4242abcd42424242"), Err(CardError::Format));
    }

    #[test]
    fn other_luhn_valid_numbers_approve() {
        assert_eq!(classify("5555555555554444"), CardClass::Approve);
        // Same prefix as decline_first but the wrong length.
        assert_eq!(classify("40000000000012"), CardClass::Approve);
    }
}
