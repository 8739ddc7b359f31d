//! Fault injection: the active fault rules with their remaining counts, and the requests-per-second limiter.

use std::time::Duration;

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

    /// Picks the faults for a request on `customer_uid` and counts them against their `times`.
    pub(crate) fn take(&mut self, customer_uid: Option<&str>) -> Applied {
        let mut applied = Applied::default();
        if self.rules.is_empty() {
            return applied;
        }
        for rule in &mut self.rules {
            let matches = match &rule.customer_uid {
                None => true,
                Some(c) => customer_uid == Some(c.as_str()),
            };
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
    fn zero_times_is_never_applied() {
        let mut book = FaultBook::new([rule(None, Fault::Http500, Some(0))]);
        assert_eq!(book.take(None).outcome, None);
    }

    #[test]
    fn rate_window_resets_each_second() {
        let mut w = RateWindow::new(2);
        assert!(w.admit(1) && w.admit(1));
        assert!(!w.admit(1));
        assert!(w.admit(2));
    }
}
