//! Refund rules, pure: what remains refundable, and which entries of a payment's cancel history are billd's refund in doubt and which were made outside billd.

/// What can still be refunded of a charge of `paid` after refunds of `spent` in total (those done and those whose
/// outcome is not known: an unknown refund counts as spent until it is settled).
pub fn refundable(paid: i64, spent: i64) -> i64 {
    paid.saturating_sub(spent).max(0)
}

/// The cancel history of a payment, read against billd's rows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attributed {
    /// The entry (its index) that is billd's refund in doubt, if the gateway made it.
    pub ours: Option<usize>,
    /// The entries no row records and that are not billd's refund in doubt: refunds made outside billd. Empty
    /// while billd's refund in doubt is not found (one of them could be it).
    pub external: Vec<usize>,
}

/// One entry of a payment's cancel history as [`attribute`] reads it: its id, amount and reason (`None`: the
/// gateway's reason was changed by cleaning it, so it is not one billd sent).
pub type Cancel<'a> = (&'a str, i64, Option<&'a str>);

/// Reads a payment's cancel history (`cancels`, in the gateway's order) for a charge of `paid`. `recorded(id)`: a
/// row records that entry already. `doubt`: the amount, checksum and reason (as the gateway lists it) of billd's
/// refund whose outcome is not known, if any.
///
/// The refund in doubt was made if, and only if, the history holds an entry no row records, of its amount and
/// reason, whose earlier entries add up to `paid - checksum`: the gateway makes a refund only when its own refundable
/// balance is the checksum sent with it, so that is the only place the refund can be, and it keeps the reason billd
/// sent, exactly (billd sends only reasons that come back unchanged: an entry whose reason was cleaned is not it). (Another refund of the same amount made outside billd at another balance, or at that balance with another
/// reason, is not it.)
pub fn attribute(
    paid: i64,
    cancels: &[Cancel<'_>],
    recorded: impl Fn(&str) -> bool,
    doubt: Option<(i64, i64, &str)>,
) -> Attributed {
    let mut before = 0i64;
    let mut ours = None;
    for (i, (id, amount, reason)) in cancels.iter().enumerate() {
        if ours.is_none()
            && !recorded(id)
            && doubt.is_some_and(|(a, checksum, why)| {
                *amount == a && before == paid.saturating_sub(checksum) && *reason == Some(why)
            })
        {
            ours = Some(i);
        }
        before = before.saturating_add(*amount);
    }
    let external = if doubt.is_some() && ours.is_none() {
        Vec::new()
    } else {
        (0..cancels.len()).filter(|&i| Some(i) != ours && !recorded(cancels[i].0)).collect()
    };
    Attributed { ours, external }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refund_in_doubt_is_the_entry_at_its_checksum() {
        // 10000 paid; 3000 refunded by billd (c1); then an outside refund of 2000 (c2); billd's refund of 2000 was
        // sent against a balance of 5000 (c3).
        let h = [("c1", 3000, Some("b")), ("c2", 2000, Some("b")), ("c3", 2000, Some("b"))];
        let rec = |id: &str| id == "c1";
        assert_eq!(attribute(10000, &h, rec, Some((2000, 5000, "b"))), Attributed { ours: Some(2), external: vec![1] });
        // Sent against 7000 (before the outside refund): the entry at that balance, c2.
        assert_eq!(attribute(10000, &h, rec, Some((2000, 7000, "b"))), Attributed { ours: Some(1), external: vec![2] });
        // Not made (no entry at its balance of that amount): nothing taken as external meanwhile.
        assert_eq!(attribute(10000, &h, rec, Some((1000, 7000, "b"))), Attributed { ours: None, external: vec![] });
        assert_eq!(attribute(10000, &h, rec, Some((2000, 4000, "b"))), Attributed { ours: None, external: vec![] });
        // Nothing in doubt: every entry no row records is external.
        assert_eq!(attribute(10000, &h, rec, None), Attributed { ours: None, external: vec![1, 2] });
        // An entry a row records already is never taken again.
        let all = |_: &str| true;
        assert_eq!(attribute(10000, &h, all, Some((3000, 10000, "b"))), Attributed::default());
    }

    #[test]
    fn an_entry_at_the_checksum_with_another_reason_is_not_billds() {
        // billd's refund of 2000 (reason "late") in doubt, never sent; an operator refunded 2000 in the console at
        // the same balance: not billd's.
        let h = [("x1", 2000, Some("console goodwill"))];
        let none = |_: &str| false;
        assert_eq!(attribute(10000, &h, none, Some((2000, 10000, "late"))), Attributed::default());
        assert_eq!(attribute(10000, &h, none, Some((2000, 10000, "console goodwill"))).ours, Some(0));
    }

    /// Issue 24, second review, F2: an entry whose reason the gateway client had to clean (digits blanked,
    /// invisible characters dropped) is never billd's, even if what is left equals billd's reason.
    #[test]
    fn an_entry_whose_reason_was_cleaned_is_not_billds() {
        let none = |_: &str| false;
        let h = [("x1", 2000, None)];
        assert_eq!(attribute(10000, &h, none, Some((2000, 10000, "goodwill"))), Attributed::default());
        assert_eq!(attribute(10000, &h, none, None).external, [0]);
    }

    #[test]
    fn what_remains_is_never_negative() {
        assert_eq!(refundable(10000, 3000), 7000);
        assert_eq!(refundable(10000, 12000), 0);
    }
}
