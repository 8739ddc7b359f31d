//! Pure billing calendar: intervals, period due dates anchored on the start date, local charge time to UTC.

use chrono::{DateTime, Days, LocalResult, Months, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use std::fmt;
use std::str::FromStr;

/// The unit of a billing interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Day,
    Week,
    Month,
    Year,
}

/// A billing interval such as `1 month` or `2 weeks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    pub count: u32,
    pub unit: Unit,
}

impl FromStr for Interval {
    type Err = String;

    /// Parses `N day|week|month|year` (plural allowed), e.g. `1 month`, `2 weeks`, `30 days`.
    fn from_str(text: &str) -> Result<Self, String> {
        let q = crate::text::quote(text);
        let mut words = text.split_whitespace();
        let (Some(n), Some(u), None) = (words.next(), words.next(), words.next()) else {
            return Err(format!("{q} is not an interval: write N day|week|month|year, like \"1 month\""));
        };
        let count: u32 =
            n.parse().map_err(|_| format!("{q}: {} is not a positive whole number", crate::text::quote(n)))?;
        if count == 0 || count > 1000 {
            return Err(format!("{q}: the count must be between 1 and 1000"));
        }
        let unit = match u.to_ascii_lowercase().as_str() {
            "day" | "days" => Unit::Day,
            "week" | "weeks" => Unit::Week,
            "month" | "months" => Unit::Month,
            "year" | "years" => Unit::Year,
            other => {
                let other = crate::text::quote(other);
                return Err(format!("{q}: unknown unit {other} (use day, week, month or year)"));
            }
        };
        Ok(Interval { count, unit })
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.unit {
            Unit::Day => "day",
            Unit::Week => "week",
            Unit::Month => "month",
            Unit::Year => "year",
        };
        let plural = if self.count == 1 { "" } else { "s" };
        write!(f, "{} {unit}{plural}", self.count)
    }
}

impl Interval {
    /// The local date of the `k`-th step after `anchor`: always counted from the anchor, so month ends clamp
    /// (Jan 31 → Feb 28) and come back (→ Mar 31). `None` past the calendar's end.
    pub fn nth_date(&self, anchor: NaiveDate, k: u64) -> Option<NaiveDate> {
        let steps = u64::from(self.count).checked_mul(k)?;
        match self.unit {
            Unit::Day => anchor.checked_add_days(Days::new(steps)),
            Unit::Week => anchor.checked_add_days(Days::new(steps.checked_mul(7)?)),
            Unit::Month => anchor.checked_add_months(Months::new(u32::try_from(steps).ok()?)),
            Unit::Year => anchor.checked_add_months(Months::new(u32::try_from(steps.checked_mul(12)?).ok()?)),
        }
    }
}

/// Where and when in the day periods fall due.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChargeClock {
    pub timezone: Tz,
    pub charge_time: NaiveTime,
}

impl ChargeClock {
    /// The UTC instant of `charge_time` on local `date`. In a DST gap the first valid local time after it is
    /// used; in a repeated hour, the first occurrence.
    pub fn due_at(&self, date: NaiveDate) -> DateTime<Utc> {
        let local = NaiveDateTime::new(date, self.charge_time);
        match self.timezone.from_local_datetime(&local) {
            LocalResult::Single(t) => return t.with_timezone(&Utc),
            LocalResult::Ambiguous(first, _) => return first.with_timezone(&Utc),
            LocalResult::None => {}
        }
        // In a gap: the first valid time after it is where the gap ends, on a whole minute. Step minute by minute
        // (gaps are an hour or less in practice; at most a day is searched).
        let minute = NaiveTime::from_hms_opt(self.charge_time.hour(), self.charge_time.minute(), 0);
        let mut probe = NaiveDateTime::new(date, minute.unwrap_or(self.charge_time));
        for _ in 0..=24 * 60 {
            probe += chrono::Duration::minutes(1);
            match self.timezone.from_local_datetime(&probe) {
                LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => return t.with_timezone(&Utc),
                LocalResult::None => {}
            }
        }
        // Unreachable for real zones; fall back to reading the local time as UTC offset 0.
        local.and_utc()
    }

    /// The UTC instant of local midnight starting `date` (first valid local time in a DST gap).
    pub fn due_at_midnight(&self, date: NaiveDate) -> DateTime<Utc> {
        ChargeClock { timezone: self.timezone, charge_time: NaiveTime::MIN }.due_at(date)
    }

    /// The local date that `instant` falls on.
    pub fn local_date(&self, instant: DateTime<Utc>) -> NaiveDate {
        instant.with_timezone(&self.timezone).date_naive()
    }

    /// The local date of the first charge time at or after `instant`: `instant`'s own date, or the next one when
    /// the charge time of that day is already past. A calendar anchored there starting at `instant` makes a first
    /// period at least one interval long (never a short period charged in full).
    pub fn first_date_from(&self, instant: DateTime<Utc>) -> NaiveDate {
        let date = self.local_date(instant);
        match date.succ_opt() {
            Some(next) if self.due_at(date) < instant => next,
            _ => date,
        }
    }
}

/// A subscription's calendar: period `p` falls due at `anchor + (p - anchor_period) × interval`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calendar {
    pub anchor: NaiveDate,
    pub anchor_period: u64,
    pub interval: Interval,
}

impl Calendar {
    /// The local due date of period `p` (`None` for periods before the anchor or past the calendar's end).
    pub fn date_of(&self, period: u64) -> Option<NaiveDate> {
        let k = period.checked_sub(self.anchor_period)?;
        self.interval.nth_date(self.anchor, k)
    }

    /// The UTC due instant of period `p`.
    pub fn due_at(&self, clock: &ChargeClock, period: u64) -> Option<DateTime<Utc>> {
        self.date_of(period).map(|d| clock.due_at(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn monthly() -> Interval {
        "1 month".parse().unwrap()
    }

    #[test]
    fn the_first_date_from_an_instant_is_never_before_it() {
        let clock =
            ChargeClock { timezone: chrono_tz::Asia::Seoul, charge_time: NaiveTime::from_hms_opt(10, 0, 0).unwrap() };
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        // 09:59 KST: today's 10:00 is ahead; 10:00 exactly: today; 23:59 KST: tomorrow's.
        assert_eq!(clock.first_date_from(t("2025-01-16T00:59:00Z")), d("2025-01-16"));
        assert_eq!(clock.first_date_from(t("2025-01-16T01:00:00Z")), d("2025-01-16"));
        assert_eq!(clock.first_date_from(t("2025-01-16T14:59:00Z")), d("2025-01-17"));
        for at in ["2025-01-16T00:59:00Z", "2025-01-16T01:00:01Z", "2025-01-31T14:59:59Z"] {
            assert!(clock.due_at(clock.first_date_from(t(at))) >= t(at), "{at}");
        }
    }

    #[test]
    fn month_end_anchor_clamps_and_comes_back() {
        let dates: Vec<_> = (0..5).map(|k| monthly().nth_date(d("2025-01-31"), k).unwrap()).collect();
        assert_eq!(dates, [d("2025-01-31"), d("2025-02-28"), d("2025-03-31"), d("2025-04-30"), d("2025-05-31")]);
        assert_eq!(monthly().nth_date(d("2024-01-31"), 1).unwrap(), d("2024-02-29"));
    }

    #[test]
    fn yearly_leap_day_gives_feb_28_then_back() {
        let y: Interval = "1 year".parse().unwrap();
        assert_eq!(y.nth_date(d("2024-02-29"), 1).unwrap(), d("2025-02-28"));
        assert_eq!(y.nth_date(d("2024-02-29"), 4).unwrap(), d("2028-02-29"));
    }

    #[test]
    fn weeks_and_days() {
        let w: Interval = "2 weeks".parse().unwrap();
        assert_eq!(w.nth_date(d("2025-01-01"), 3).unwrap(), d("2025-02-12"));
        let days: Interval = "30 days".parse().unwrap();
        assert_eq!(days.nth_date(d("2025-01-01"), 2).unwrap(), d("2025-03-02"));
    }

    #[test]
    fn interval_parsing() {
        assert_eq!("3 Months".parse::<Interval>().unwrap(), Interval { count: 3, unit: Unit::Month });
        for bad in ["month", "0 months", "1 fortnight", "-1 day", "1.5 month", "1 month 2", ""] {
            assert!(bad.parse::<Interval>().is_err(), "{bad:?}");
        }
        assert_eq!("1 week".parse::<Interval>().unwrap().to_string(), "1 week");
        assert_eq!("2 year".parse::<Interval>().unwrap().to_string(), "2 years");
    }

    #[test]
    fn seoul_ten_am_is_one_am_utc() {
        let c = ChargeClock { timezone: chrono_tz::Asia::Seoul, charge_time: "10:00:00".parse().unwrap() };
        assert_eq!(c.due_at(d("2025-03-01")).to_rfc3339(), "2025-03-01T01:00:00+00:00");
    }

    #[test]
    fn dst_gap_moves_forward_and_overlap_takes_first() {
        let ny = ChargeClock { timezone: chrono_tz::America::New_York, charge_time: "02:30:00".parse().unwrap() };
        // 2025-03-09 02:30 does not exist in New York: 03:00 EDT = 07:00 UTC.
        assert_eq!(ny.due_at(d("2025-03-09")).to_rfc3339(), "2025-03-09T07:00:00+00:00");
        let ny1 = ChargeClock { charge_time: "01:30:00".parse().unwrap(), ..ny };
        // 2025-11-02 01:30 happens twice; the first (EDT) is 05:30 UTC.
        assert_eq!(ny1.due_at(d("2025-11-02")).to_rfc3339(), "2025-11-02T05:30:00+00:00");
    }

    #[test]
    fn calendar_rebased_segment() {
        let cal = Calendar { anchor: d("2025-06-30"), anchor_period: 5, interval: monthly() };
        assert_eq!(cal.date_of(4), None);
        assert_eq!(cal.date_of(5), Some(d("2025-06-30")));
        assert_eq!(cal.date_of(7), Some(d("2025-08-30")));
    }
}
