//! Fault injection: the active fault rules with their remaining counts, and the requests-per-second limiter.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::{Fault, FaultRule};

/// What the active rules say about one `again` / `onetime` request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Applied {
    /// Sum of every matching `Fault::Latency`.
    pub extra_latency: Duration,
    /// The first matching fault that is not `Latency`.
    pub outcome: Option<Fault>,
}

/// Active fault rules, in the order they were added.
#[derive(Debug, Default)]
pub(crate) struct FaultBook {
    rules: Vec<FaultRule>,
}

impl FaultBook {
    pub(crate) fn new(rules: impl IntoIterator<Item = FaultRule>) -> FaultBook {
        let mut book = FaultBook::default();
        for r in rules {
            book.add(r);
        }
        book
    }

    pub(crate) fn add(&mut self, rule: FaultRule) {
        if rule.times != Some(0) {
            self.rules.push(rule);
        }
    }

    pub(crate) fn clear(&mut self) {
        self.rules.clear();
    }

    pub(crate) fn rules(&self) -> &[FaultRule] {
        &self.rules
    }

    /// Picks the faults for a charge request on `customer_uid` and counts them against their `times` (the faults of
    /// cancels are left alone).
    pub(crate) fn take(&mut self, customer_uid: Option<&str>) -> Applied {
        self.take_for(customer_uid, false)
    }

    /// Picks the faults for a cancel of a payment made with `customer_uid` (only the faults of cancels, see
    /// [`Fault::on_cancel`]) and counts them against their `times`.
    pub(crate) fn take_cancel(&mut self, customer_uid: Option<&str>) -> Applied {
        self.take_for(customer_uid, true)
    }

    fn take_for(&mut self, customer_uid: Option<&str>, cancel: bool) -> Applied {
        let mut applied = Applied::default();
        if self.rules.is_empty() {
            return applied;
        }
        for rule in &mut self.rules {
            let matches = match &rule.customer_uid {
                None => true,
                Some(c) => customer_uid == Some(c.as_str()),
            } && rule.fault.on_cancel() == cancel;
            if !matches {
                continue;
            }
            let used = match &rule.fault {
                Fault::Latency(d) => {
                    applied.extra_latency += *d;
                    true
                }
                other if applied.outcome.is_none() => {
                    applied.outcome = Some(other.clone());
                    true
                }
                _ => false,
            };
            if used && let Some(t) = rule.times.as_mut() {
                *t = t.saturating_sub(1);
            }
        }
        self.rules.retain(|r| r.times != Some(0));
        applied
    }
}

/// The seeded random delays of `Fault::ChargeLaterRandom`.
#[derive(Debug)]
pub(crate) struct Delays {
    seed: u64,
    rng: StdRng,
}

impl Delays {
    /// `None`: a seed of its own.
    pub(crate) fn new(seed: Option<u64>) -> Delays {
        let seed = seed.unwrap_or_else(rand::random);
        Delays { seed, rng: StdRng::seed_from_u64(seed) }
    }

    /// The next delay, uniformly in `0..=max` (to the microsecond).
    pub(crate) fn draw(&mut self, max: Duration) -> Duration {
        let span = u64::try_from(max.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(self.rng.random_range(0..=span))
    }

    /// Back to the first delay of the same seed.
    pub(crate) fn restart(&mut self) {
        self.rng = StdRng::seed_from_u64(self.seed);
    }
}

/// A fixed one-second window counter.
#[derive(Debug)]
pub(crate) struct RateWindow {
    limit: u32,
    second: u64,
    count: u32,
}

impl RateWindow {
    pub(crate) fn new(limit: u32) -> RateWindow {
        RateWindow { limit, second: 0, count: 0 }
    }

    /// Counts a request made during `second` (any monotonic second number); false = over the limit.
    pub(crate) fn admit(&mut self, second: u64) -> bool {
        if second != self.second {
            self.second = second;
            self.count = 0;
        }
        if self.count >= self.limit {
            return false;
        }
        self.count += 1;
        true
    }

    pub(crate) fn limit(&self) -> u32 {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(customer: Option<&str>, fault: Fault, times: Option<u32>) -> FaultRule {
        FaultRule { customer_uid: customer.map(str::to_string), fault, times }
    }

    #[test]
    fn times_limits_a_rule_then_it_is_gone() {
        let mut book = FaultBook::new([rule(None, Fault::Http500, Some(2))]);
        assert_eq!(book.take(Some("a")).outcome, Some(Fault::Http500));
        assert_eq!(book.take(None).outcome, Some(Fault::Http500));
        assert_eq!(book.take(Some("a")), Applied::default());
        assert!(book.rules().is_empty());
    }

    #[test]
    fn customer_rules_only_hit_their_customer() {
        let mut book = FaultBook::new([rule(Some("slow"), Fault::Garbage, None)]);
        assert_eq!(book.take(Some("other")).outcome, None);
        assert_eq!(book.take(None).outcome, None);
        assert_eq!(book.take(Some("slow")).outcome, Some(Fault::Garbage));
        assert_eq!(book.take(Some("slow")).outcome, Some(Fault::Garbage));
    }

    #[test]
    fn latencies_add_up_and_only_the_first_outcome_is_used() {
        let mut book = FaultBook::new([
            rule(None, Fault::Latency(Duration::from_millis(10)), None),
            rule(Some("c"), Fault::DropAfterCharge, Some(1)),
            rule(None, Fault::Http500, Some(1)),
            rule(Some("c"), Fault::Latency(Duration::from_millis(5)), None),
        ]);
        let first = book.take(Some("c"));
        assert_eq!(first.extra_latency, Duration::from_millis(15));
        assert_eq!(first.outcome, Some(Fault::DropAfterCharge));
        // The Http500 rule was not consumed by the first request.
        assert_eq!(book.take(Some("c")).outcome, Some(Fault::Http500));
        assert_eq!(book.take(Some("c")).outcome, None);
    }

    #[test]
    fn cancel_faults_hit_cancels_only_and_charge_faults_charges_only() {
        let mut book =
            FaultBook::new([rule(None, Fault::DropAfterCancel, Some(1)), rule(None, Fault::Http500, Some(1))]);
        assert_eq!(book.take(Some("c")).outcome, Some(Fault::Http500));
        assert_eq!(book.take(Some("c")).outcome, None, "a charge took the cancel's fault");
        assert_eq!(book.take_cancel(Some("c")).outcome, Some(Fault::DropAfterCancel));
        assert_eq!(book.take_cancel(Some("c")).outcome, None);
        assert!(book.rules().is_empty());
    }

    #[test]
    fn zero_times_is_never_applied() {
        let mut book = FaultBook::new([rule(None, Fault::Http500, Some(0))]);
        assert_eq!(book.take(None).outcome, None);
    }

    #[test]
    fn delays_are_in_bounds_and_the_same_for_the_same_seed() {
        let max = Duration::from_millis(2000);
        let draws = |d: &mut Delays| (0..50).map(|_| d.draw(max)).collect::<Vec<_>>();
        let (mut a, mut b, mut c) = (Delays::new(Some(7)), Delays::new(Some(7)), Delays::new(Some(8)));
        let first = draws(&mut a);
        assert!(first.iter().all(|d| *d <= max));
        assert!(first.iter().any(|d| *d > max / 2) && first.iter().any(|d| *d < max / 2), "{first:?}");
        assert_eq!(first, draws(&mut b));
        assert_ne!(first, draws(&mut c));
        a.restart();
        assert_eq!(draws(&mut a), first);
        assert_eq!(Delays::new(None).draw(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn rate_window_resets_each_second() {
        let mut w = RateWindow::new(2);
        assert!(w.admit(1) && w.admit(1));
        assert!(!w.admit(1));
        assert!(w.admit(2));
    }
}
