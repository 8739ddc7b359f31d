//! The money plan changes move, pure (issue 25): which period's money each change's charge is, what each change took
//! out of its period's money for the customer (whatever form it took), where a subscription's credit left at its end
//! is released, and how much a refund of a period's charges may take beside those credits.

/// How a plan change ended, as its money sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Its charge is not settled yet: nothing of it is in force.
    Pending,
    /// In force.
    Applied,
    /// Not applied, but its charge was paid: that money is the customer's, as a credit.
    Credited,
    /// Not applied, nothing paid.
    Failed,
}

/// A plan change as its money sees it (the caller reads it from the book inside its transaction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeMoney {
    /// Its row id: a newer change has a higher one.
    pub id: i64,
    /// Made now (settling `period` pro rata); a change at period end moves no money.
    pub now: bool,
    /// The paid period it settled.
    pub period: u64,
    pub outcome: Outcome,
    /// The settlement, before any held credit paid part of it: > 0 owed by the customer, < 0 owed to them.
    pub owed: i64,
    /// The amount of the new plan's first period it opened (a change of interval made now: period `period + 1`,
    /// paid by the change: its charge and the old period's unused part).
    pub opens: Option<i64>,
    /// Its charge (merchant_uid) and what that charge was paid (0: not paid).
    pub charge: Option<(String, i64)>,
    /// How much of the credit it added was released when its subscription ended (refundable since).
    pub released: i64,
}

impl ChangeMoney {
    /// The period whose money its charge is: the new plan's first period for a change of interval in force (its
    /// charge pays that period, with the old period's unused part), else the period it settled.
    pub fn charge_period(&self) -> u64 {
        match (self.outcome, self.opens) {
            (Outcome::Applied, Some(_)) => self.period + 1,
            _ => self.period,
        }
    }

    /// What it took out of the money paid for its period (`period`) and gave the customer, whatever form it
    /// took: a credit carried to the next periods; the unused part of the old period netted into a new interval's
    /// first period (with or without a charge, and with or without a credit left over); or its own paid charge,
    /// credited because the change could not apply.
    pub fn credit_taken(&self) -> i64 {
        if !self.now {
            return 0;
        }
        match (self.outcome, self.opens) {
            (Outcome::Applied, Some(first)) => (first - self.owed).max(0),
            (Outcome::Applied, None) => (-self.owed).max(0),
            (Outcome::Credited, _) => self.charge.as_ref().map_or(0, |c| c.1),
            (Outcome::Pending | Outcome::Failed, _) => 0,
        }
    }

    /// What it added to the subscription's credit (what a release at the subscription's end can give back).
    pub fn credit_added(&self) -> i64 {
        match self.outcome {
            Outcome::Applied if self.now => (-self.owed).max(0),
            Outcome::Credited => self.charge.as_ref().map_or(0, |c| c.1),
            _ => 0,
        }
    }
}

/// Where the credit `left` of a subscription that ends is released from: the changes that added it, newest first
/// (credit is spent oldest first), each up to what it added and was not released before. Returns (change id,
/// amount released) for each change that releases some; they add up to `left` whenever the changes added at least
/// that much (a credit is only ever added by them: see [`ChangeMoney::credit_added`]).
pub fn release(changes: &[ChangeMoney], left: i64) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut rest = left.max(0);
    let mut newest: Vec<&ChangeMoney> = changes.iter().collect();
    newest.sort_by_key(|c| std::cmp::Reverse(c.id));
    for c in newest {
        if rest == 0 {
            break;
        }
        let free = (c.credit_added() - c.released).max(0);
        let n = free.min(rest);
        if n > 0 {
            out.push((c.id, n));
            rest -= n;
        }
    }
    out
}

/// The charges of plan changes that are period `period`'s money (besides the period's own charge), by merchant_uid.
pub fn change_charges_of(period: u64, changes: &[ChangeMoney]) -> Vec<&str> {
    changes
        .iter()
        .filter(|c| c.charge_period() == period)
        .filter_map(|c| c.charge.as_ref().map(|(m, _)| m.as_str()))
        .collect()
}

/// The refund rule of credits. Period `period` is paid by its own charge (`own_paid`: its paid attempts) and by the
/// change charges that are its money ([`ChangeMoney::charge_period`]); what the changes made in it took for the
/// customer ([`ChangeMoney::credit_taken`], less what was released when the subscription ended: refundable again)
/// is the customer's already. So refunds of those charges may take at most what they were paid, less their refunds
/// not known to have failed (`spent`), less that credit. `None`: the period's changes left no credit (no limit
/// here); else (what may still be refunded, what stays credited).
pub fn refund_cap(period: u64, changes: &[ChangeMoney], own_paid: i64, spent: i64) -> Option<(i64, i64)> {
    let credited: i64 = changes.iter().filter(|c| c.period == period).map(|c| c.credit_taken() - c.released).sum();
    if credited <= 0 {
        return None;
    }
    let paid = own_paid
        + changes
            .iter()
            .filter(|c| c.charge_period() == period)
            .filter_map(|c| c.charge.as_ref().map(|x| x.1))
            .sum::<i64>();
    Some(((paid - spent - credited).max(0), credited))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn change(id: i64, period: u64, outcome: Outcome, owed: i64, opens: Option<i64>, paid: i64) -> ChangeMoney {
        let charge = (owed > 0).then(|| (format!("m-s-{period}-c{id}"), paid));
        ChangeMoney { id, now: true, period, outcome, owed, opens, charge, released: 0 }
    }

    #[test]
    fn a_change_of_interval_takes_the_old_periods_unused_part_whatever_it_charges() {
        // Monthly 10 000 -> yearly 100 000 halfway: 5 000 unused, 95 000 charged; the charge is the year's money.
        let up = change(1, 0, Outcome::Applied, 95_000, Some(100_000), 95_000);
        assert_eq!((up.charge_period(), up.credit_taken(), up.credit_added()), (1, 5_000, 0));
        // January (10 000 paid) may give back only what was not netted into the year.
        assert_eq!(refund_cap(0, std::slice::from_ref(&up), 10_000, 0), Some((5_000, 5_000)));
        assert_eq!(refund_cap(1, std::slice::from_ref(&up), 0, 0), None, "the year's charge is refundable");
        assert_eq!(change_charges_of(1, std::slice::from_ref(&up)), ["m-s-0-c1"]);
        assert!(change_charges_of(0, std::slice::from_ref(&up)).is_empty());
        // Yearly 100 000 -> monthly 10 000 at once: all of the year is taken (10 000 pay the month, 90 000 credited).
        let down = change(2, 0, Outcome::Applied, -90_000, Some(10_000), 0);
        assert_eq!((down.credit_taken(), down.credit_added()), (100_000, 90_000));
        assert_eq!(refund_cap(0, &[down], 100_000, 10_000), Some((0, 100_000)));
    }

    #[test]
    fn a_change_keeping_the_period_takes_its_credit_and_a_credited_charge_takes_itself() {
        let same = change(1, 0, Outcome::Applied, -4_500, None, 0);
        assert_eq!(refund_cap(0, std::slice::from_ref(&same), 10_000, 0), Some((5_500, 4_500)));
        let upgrade = change(2, 0, Outcome::Applied, 10_000, None, 10_000);
        assert_eq!(refund_cap(0, std::slice::from_ref(&upgrade), 10_000, 0), None, "an upgrade credits nothing");
        // An upgrade then a downgrade of the same period: both charges are the period's money.
        assert_eq!(refund_cap(0, &[upgrade, same], 10_000, 0), Some((15_500, 4_500)));
        // A change whose charge was paid but which could not apply: the charge is credited, so it is not refundable
        // beside the period's own.
        let credited = change(3, 0, Outcome::Credited, 2_500, None, 2_500);
        assert_eq!((credited.credit_taken(), credited.credit_added(), credited.charge_period()), (2_500, 2_500, 0));
        assert_eq!(refund_cap(0, &[credited], 9_900, 0), Some((9_900, 2_500)));
        // Pending and failed changes move nothing; nor does a change at period end.
        let pending = change(4, 0, Outcome::Pending, 2_500, None, 0);
        let failed = change(5, 0, Outcome::Failed, 2_500, None, 0);
        let later = ChangeMoney { now: false, ..change(6, 0, Outcome::Applied, 0, None, 0) };
        assert_eq!(refund_cap(0, &[pending, failed, later], 9_900, 0), None);
    }

    #[test]
    fn credit_left_at_the_end_is_released_newest_first_and_becomes_refundable() {
        // 28 065 credited on day 2 of a 30 000 period; 2 000 spent since; 26 065 left when the term ends.
        let mut c = change(1, 0, Outcome::Applied, -28_065, None, 0);
        assert_eq!(release(std::slice::from_ref(&c), 26_065), [(1, 26_065)]);
        c.released = 26_065;
        assert_eq!(refund_cap(0, std::slice::from_ref(&c), 30_000, 0), Some((28_000, 2_000)));
        // Two credits: the newest is released first, never more than each added (less what it released before).
        let old = change(1, 0, Outcome::Applied, -4_000, None, 0);
        let new = ChangeMoney { released: 500, ..change(2, 3, Outcome::Applied, -3_000, None, 0) };
        assert_eq!(release(&[old.clone(), new.clone()], 4_000), [(2, 2_500), (1, 1_500)]);
        assert_eq!(release(&[old, new], 100_000), [(2, 2_500), (1, 4_000)]);
        assert!(release(&[], 10).is_empty());
    }

    proptest! {
        /// Over random changes of one period (any outcome, kept or restarting, with or without a charge), the
        /// period's refundable money plus everything its changes gave the customer (what they took, released or
        /// not) is never more than its charges were paid: no credit is given back twice.
        #[test]
        fn a_period_never_gives_back_more_than_it_was_paid(
            own in 0i64..1_000_000,
            spec in proptest::collection::vec((0u8..4, -2_000_000i64..2_000_000, proptest::option::of(1i64..2_000_000), 0i64..100), 0..6),
        ) {
            let outcomes = [Outcome::Pending, Outcome::Applied, Outcome::Credited, Outcome::Failed];
            let changes: Vec<ChangeMoney> = spec.iter().enumerate().map(|(i, (o, owed, opens, rel))| {
                let outcome = outcomes[*o as usize];
                let paid = if matches!(outcome, Outcome::Applied | Outcome::Credited) { (*owed).max(0) } else { 0 };
                let opens = opens.filter(|_| outcome == Outcome::Applied);
                let mut c = change(i as i64, 0, outcome, *owed, opens, paid);
                c.released = c.credit_added() * rel / 100;
                c
            }).collect();
            let paid: i64 = own + changes.iter().filter(|c| c.charge_period() == 0)
                .filter_map(|c| c.charge.as_ref().map(|x| x.1)).sum::<i64>();
            let taken: i64 = changes.iter().map(|c| c.credit_taken() - c.released).sum();
            match refund_cap(0, &changes, own, 0) {
                None => prop_assert!(taken <= 0),
                Some((refundable, credited)) => {
                    prop_assert_eq!(credited, taken);
                    prop_assert!(refundable >= 0 && refundable <= paid);
                    prop_assert!(refundable + credited <= paid || refundable == 0);
                }
            }
        }
    }
}
