//! The safety rails' pure rules: when the rejections of a pass are the gateway's or the config's problem, not the
//! customers'.

/// The mass-rejection threshold (`limits.mass_rejection_count` and `limits.mass_rejection_percent`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MassRejection {
    /// At least this many rejections in one pass…
    pub count: u32,
    /// …that are at least this share (in percent) of the pass's answers.
    pub percent: u32,
}

impl Default for MassRejection {
    fn default() -> Self {
        MassRejection { count: 5, percent: 20 }
    }
}

impl MassRejection {
    /// Whether `rejected` rejections among `answers` answers (paid, declined and rejected charges of a whole pass)
    /// are a mass rejection: then none of them is taken as the customer's (no subscription changes status for them,
    /// their periods stay open). Below the threshold a rejection is the customer's. Judged on the whole pass: the
    /// answers that came first are not a sample (the oldest periods, the same few keys, come first every time).
    pub fn tripped(&self, rejected: usize, answers: usize) -> bool {
        let answers = answers.max(rejected) as u128;
        rejected >= self.count as usize && (rejected as u128) * 100 >= self.percent as u128 * answers
    }

    /// Whether the answers so far of a pass still running leave no doubt: every one a rejection, and at least
    /// [`EARLY_STOP_FACTOR`] times the count of them. Then the pass stops sending at once (the rest would be
    /// rejected too); otherwise it is judged when it ends ([`MassRejection::tripped`]).
    pub fn beyond_doubt(&self, rejected: usize, answers: usize) -> bool {
        answers <= rejected && rejected as u64 >= EARLY_STOP_FACTOR * u64::from(self.count)
    }
}

/// How many times `limits.mass_rejection_count` rejections, with nothing else answered, stop a pass before it ends.
pub const EARLY_STOP_FACTOR: u64 = 4;

impl MassRejection {}

#[cfg(test)]
mod tests {
    use super::MassRejection;

    #[test]
    fn both_the_count_and_the_share_must_be_reached() {
        let t = MassRejection::default();
        // The wrong gateway account: everything is rejected.
        assert!(t.tripped(5, 5));
        assert!(t.tripped(1000, 1000));
        // Fewer than the count, even if all of them.
        assert!(!t.tripped(4, 4));
        // The count, but a small share of a big pass: the customers' own rejections.
        assert!(!t.tripped(5, 26));
        assert!(t.tripped(5, 25));
        assert!(!t.tripped(199, 1000));
        assert!(t.tripped(200, 1000));
        // Answers are never fewer than rejections (a caller's count that lags).
        assert!(t.tripped(6, 0));
    }

    #[test]
    fn a_pass_stops_early_only_beyond_doubt() {
        let t = MassRejection::default();
        // The five stale keys that sort first: 5 of the first 5 answers, but no more.
        assert!(!t.beyond_doubt(5, 5));
        assert!(!t.beyond_doubt(19, 19));
        assert!(t.beyond_doubt(20, 20));
        // One paid answer among them: judged at the end.
        assert!(!t.beyond_doubt(40, 41));
    }

    #[test]
    fn the_bounds_of_the_settings() {
        // percent 100: only when every answer is a rejection; count 1: the first one.
        let all = MassRejection { count: 1, percent: 100 };
        assert!(all.tripped(1, 1));
        assert!(!all.tripped(3, 4));
        let huge = MassRejection { count: u32::MAX, percent: 100 };
        assert!(!huge.tripped(u32::MAX as usize - 1, u32::MAX as usize - 1));
        // No overflow at the extremes.
        assert!(huge.tripped(usize::MAX, usize::MAX));
    }
}
