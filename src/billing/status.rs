//! Subscription status rules: what a charge outcome or an operator's action does to a subscription's status, and
//! the reasons recorded with it. Pure: a store reads the current status inside its transaction and asks here.

use crate::billing::dunning::OnExhausted;
use crate::billing::model::Status;

/// Why a subscription's status may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A period of it was paid.
    Paid,
    /// A charge failed (declined) and its period is retried later.
    FailedWillRetry,
    /// A period was given up (retries exhausted, or the charge was rejected): the dunning policy's action.
    Exhausted(OnExhausted),
    /// Its next period could not be opened: the period's merchant_uid is taken (by another period or a one-time
    /// charge), so no payment may be booked to it.
    MerchantUidTaken,
    /// An operator's command (pause, cancel) or a config sync sets this status.
    Operator(Status),
    /// An operator resumes it (`billd resume`): only a suspended subscription resumes, and it bills again.
    Resume,
    /// Its fixed term ended: the last period was paid, or given up and skipped.
    TermEnded,
    /// Its `cancel_at` came (a cancel at period end, or `cancel_at` in the config).
    CancelAtReached,
    /// An operator reactivates it (`billd reactivate`): only one that dunning canceled or suspended (the store
    /// checks who stopped it), once the customer has a card that pays.
    Reactivate,
}

/// The status a subscription in status `from` moves to for `cause`, or `None` when it stays as it is.
///
/// - canceled and completed are final: nothing moves them;
/// - a paid charge makes a past-due or trialing subscription active (canceling stays canceling);
/// - a failure with a retry makes an active or trialing subscription past due (canceling stays canceling);
/// - exhaustion applies the policy to a subscription that bills: cancel, suspend, or skip (a past-due or trialing
///   one becomes active again, for the next period; canceling stays canceling);
/// - an outcome never undoes an operator's decision: a suspended subscription stays suspended;
/// - a taken merchant_uid suspends a subscription that bills;
/// - an operator sets any status;
/// - a resume makes a suspended subscription active, and nothing else;
/// - the end of a term completes a subscription that is not suspended; `cancel_at` cancels one that bills (a
///   canceling one, or one a resume or a reactivation made active again before it);
/// - the same status is no change.
pub fn next_status(from: Status, cause: Cause) -> Option<Status> {
    use Status::*;
    // The one way out of canceled: dunning's cancel, reactivated by an operator.
    if cause == Cause::Reactivate {
        return matches!(from, Canceled | Suspended).then_some(Active);
    }
    if from.is_final() {
        return None;
    }
    let to = match cause {
        Cause::Operator(to) => to,
        Cause::Resume if from == Suspended => Active,
        Cause::Paid | Cause::Exhausted(OnExhausted::Skip) if matches!(from, PastDue | Trialing) => Active,
        Cause::FailedWillRetry if matches!(from, Active | Trialing) => PastDue,
        Cause::Exhausted(OnExhausted::Cancel) if from.bills() => Canceled,
        Cause::Exhausted(OnExhausted::Suspend) | Cause::MerchantUidTaken if from.bills() => Suspended,
        Cause::TermEnded if from != Suspended => Completed,
        // A paused one too: the store ends only a pause with an end that skips what falls due meanwhile (`pause
        // --until` without --catch-up) at its cancel date; other pauses and a dunning suspension hold until restarted
        // (what they may charge then is due before the cancel date).
        Cause::CancelAtReached if from.bills() || from == Suspended => Canceled,
        _ => return None,
    };
    (to != from).then_some(to)
}

/// The reason recorded with the policy's action when a period is given up: `rejected` for a charge the gateway
/// refused, otherwise the last decline's reason.
pub fn exhausted_reason(rejected: bool, reason: &str) -> String {
    if rejected { format!("rejected: {reason}") } else { format!("retries exhausted (last decline: {reason})") }
}

/// A period whose merchant_uid is already taken is not opened: its subscription is suspended
/// ([`Cause::MerchantUidTaken`]) with this reason, and the rest of the page goes on. `owner` names who holds it
/// (`subscription "s" period 3`, `a one-time charge`).
pub fn merchant_uid_taken_reason(merchant_uid: &str, period: u64, owner: &str) -> String {
    format!(
        "merchant_uid {merchant_uid} of period {period} is already used by {owner}; suspended so that no payment is \
         mistaken for another (check billing.merchant_uid_prefix)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::*;

    const ALL: [Status; 7] = Status::ALL;

    #[test]
    fn a_paid_charge_makes_a_past_due_subscription_active_and_nothing_else() {
        assert_eq!(next_status(PastDue, Cause::Paid), Some(Active));
        assert_eq!(next_status(Active, Cause::Paid), None);
        assert_eq!(next_status(Suspended, Cause::Paid), None, "a payment never undoes a pause");
        assert_eq!(next_status(Canceled, Cause::Paid), None);
    }

    #[test]
    fn a_failure_with_a_retry_makes_an_active_subscription_past_due() {
        assert_eq!(next_status(Active, Cause::FailedWillRetry), Some(PastDue));
        assert_eq!(next_status(PastDue, Cause::FailedWillRetry), None, "same status: no change");
        assert_eq!(next_status(Suspended, Cause::FailedWillRetry), None);
        assert_eq!(next_status(Canceled, Cause::FailedWillRetry), None);
    }

    #[test]
    fn exhaustion_applies_the_policy_to_a_subscription_that_bills() {
        for from in [Active, PastDue] {
            assert_eq!(next_status(from, Cause::Exhausted(OnExhausted::Cancel)), Some(Canceled));
            assert_eq!(next_status(from, Cause::Exhausted(OnExhausted::Suspend)), Some(Suspended));
        }
        assert_eq!(next_status(PastDue, Cause::Exhausted(OnExhausted::Skip)), Some(Active));
        assert_eq!(next_status(Active, Cause::Exhausted(OnExhausted::Skip)), None);
    }

    #[test]
    fn an_outcome_never_undoes_an_operator_s_suspend_or_cancel() {
        let outcomes = [
            Cause::Paid,
            Cause::FailedWillRetry,
            Cause::Exhausted(OnExhausted::Cancel),
            Cause::Exhausted(OnExhausted::Suspend),
            Cause::Exhausted(OnExhausted::Skip),
            Cause::MerchantUidTaken,
        ];
        for cause in outcomes {
            assert_eq!(next_status(Suspended, cause), None, "{cause:?}");
            assert_eq!(next_status(Canceled, cause), None, "{cause:?}");
        }
    }

    #[test]
    fn canceled_and_completed_are_final_even_for_an_operator() {
        for to in ALL {
            assert_eq!(next_status(Canceled, Cause::Operator(to)), None, "{to:?}");
            assert_eq!(next_status(Completed, Cause::Operator(to)), None, "{to:?}");
        }
    }

    #[test]
    fn a_trial_ends_with_its_first_outcome_and_canceling_stays_until_its_time() {
        assert_eq!(next_status(Trialing, Cause::Paid), Some(Active));
        assert_eq!(next_status(Trialing, Cause::FailedWillRetry), Some(PastDue));
        assert_eq!(next_status(Trialing, Cause::Exhausted(OnExhausted::Skip)), Some(Active));
        assert_eq!(next_status(Trialing, Cause::Exhausted(OnExhausted::Cancel)), Some(Canceled));
        for outcome in [Cause::Paid, Cause::FailedWillRetry, Cause::Exhausted(OnExhausted::Skip)] {
            assert_eq!(next_status(Canceling, outcome), None, "{outcome:?}: canceling stays until cancel_at");
        }
        assert_eq!(next_status(Canceling, Cause::Exhausted(OnExhausted::Suspend)), Some(Suspended));
        assert_eq!(next_status(Canceling, Cause::CancelAtReached), Some(Canceled));
        for from in [Trialing, Active, PastDue] {
            assert_eq!(next_status(from, Cause::CancelAtReached), Some(Canceled), "{from:?}: its cancel_at stands");
        }
        assert_eq!(next_status(Suspended, Cause::CancelAtReached), Some(Canceled), "its cancel date ends a pause");
    }

    #[test]
    fn only_canceled_or_suspended_is_reactivated() {
        assert_eq!(next_status(Canceled, Cause::Reactivate), Some(Active));
        assert_eq!(next_status(Suspended, Cause::Reactivate), Some(Active));
        for from in [Trialing, Active, PastDue, Canceling, Completed] {
            assert_eq!(next_status(from, Cause::Reactivate), None, "{from:?}");
        }
    }

    #[test]
    fn a_term_ends_completed_unless_suspended() {
        for from in [Trialing, Active, PastDue, Canceling] {
            assert_eq!(next_status(from, Cause::TermEnded), Some(Completed), "{from:?}");
        }
        assert_eq!(next_status(Suspended, Cause::TermEnded), None);
        for from in ALL {
            assert_eq!(from.bills(), matches!(from, Trialing | Active | PastDue | Canceling), "{from:?}");
            assert_eq!(Status::parse(from.as_str()), Some(from));
        }
    }

    #[test]
    fn an_operator_sets_any_other_status_and_the_same_status_is_no_change() {
        for from in [Trialing, Active, PastDue, Canceling, Suspended] {
            for to in ALL {
                let expected = (from != to).then_some(to);
                assert_eq!(next_status(from, Cause::Operator(to)), expected, "{from:?} -> {to:?}");
            }
        }
    }

    #[test]
    fn only_a_suspended_subscription_resumes() {
        assert_eq!(next_status(Suspended, Cause::Resume), Some(Active));
        for from in [Trialing, Active, PastDue, Canceling, Canceled, Completed] {
            assert_eq!(next_status(from, Cause::Resume), None, "{from:?}");
        }
    }

    #[test]
    fn a_taken_merchant_uid_suspends_a_subscription_that_bills() {
        assert_eq!(next_status(Active, Cause::MerchantUidTaken), Some(Suspended));
        assert_eq!(next_status(PastDue, Cause::MerchantUidTaken), Some(Suspended));
        let why = merchant_uid_taken_reason("billd-s1-0", 0, "a one-time charge");
        assert_eq!(
            why,
            "merchant_uid billd-s1-0 of period 0 is already used by a one-time charge; suspended so that no payment \
             is mistaken for another (check billing.merchant_uid_prefix)"
        );
    }

    #[test]
    fn the_reason_of_a_given_up_period_names_the_rejection_or_the_last_decline() {
        assert_eq!(exhausted_reason(true, "code 1: no key"), "rejected: code 1: no key");
        assert_eq!(
            exhausted_reason(false, "insufficient funds"),
            "retries exhausted (last decline: insufficient funds)"
        );
    }
}
