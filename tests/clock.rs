//! The wall clock jumping: back an hour after a pass, forward a day, back again, through a DST transition.
//! billd's passes run at `tick --as-of` instants; after every pass the gateway holds exactly one paid charge for
//! every period due up to the latest instant seen so far, none for a later one, and never two for one period.

mod common;

use billd::billing::calendar::{Calendar, ChargeClock, Interval};
use chrono::{DateTime, Utc};
// Entries here replay history or catch up on purpose: `catch_up = true` (issue 21, 2).
use common::{Rng, Setup, World, cards, sub_catch_up as sub};
use std::collections::BTreeSet;

const PLANS: &str = r#"
[[plans]]
id = "daily"
name = "Daily"
amount = 1000
interval = "1 day"

[[plans]]
id = "weekly"
name = "Weekly"
amount = 5000
interval = "1 week"

[[plans]]
id = "monthly"
name = "Monthly"
amount = 9900
interval = "1 month"
"#;

struct Book {
    subs: Vec<(&'static str, &'static str, &'static str)>,
    clock: ChargeClock,
}

impl Book {
    fn world(&self, timezone: &str, charge_time: &str) -> World {
        let mut body = PLANS.to_string();
        for (id, interval, start) in &self.subs {
            let plan = match *interval {
                "1 day" => "daily",
                "1 week" => "weekly",
                _ => "monthly",
            };
            body += &sub(id, &format!("c-{id}"), plan, start);
        }
        let w = World::new(Setup { timezone, charge_time, body: &body, ..Default::default() });
        for (id, _, _) in &self.subs {
            w.sandbox.register_customer(&format!("c-{id}"), cards::APPROVE).unwrap();
        }
        w
    }

    /// merchant_uids of every period due at or before `t`.
    fn due_by(&self, t: DateTime<Utc>) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for (id, interval, start) in &self.subs {
            let cal = Calendar {
                anchor: start.parse().unwrap(),
                anchor_period: 0,
                interval: interval.parse::<Interval>().unwrap(),
            };
            let mut p = 0;
            while cal.due_at(&self.clock, p).unwrap() <= t {
                out.insert(format!("billd-{id}-{p}"));
                p += 1;
            }
        }
        out
    }
}

fn paid(w: &World) -> BTreeSet<String> {
    w.paid_by_merchant_uid().into_keys().collect()
}

/// Runs the passes in order, checking after each one: paid = due up to the latest instant seen.
fn run(book: &Book, w: &World, instants: &[DateTime<Utc>]) {
    let mut latest = instants[0];
    for (i, t) in instants.iter().enumerate() {
        w.tick(&t.to_rfc3339());
        latest = latest.max(*t);
        let want = book.due_by(latest);
        assert_eq!(paid(w), want, "after pass {i} at {t} (latest instant seen {latest})");
    }
    w.assert_consistent();
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

#[test]
fn back_an_hour_and_forward_a_day_never_double_charges_or_skips() {
    let book = Book {
        subs: vec![("d", "1 day", "2025-01-30"), ("m", "1 month", "2025-01-31"), ("w", "1 week", "2025-01-31")],
        clock: ChargeClock { timezone: chrono_tz::Asia::Seoul, charge_time: "10:00:00".parse().unwrap() },
    };
    let w = book.world("Asia/Seoul", "10:00");
    let h = chrono::Duration::hours(1);
    let d = chrono::Duration::days(1);
    let due = at("2025-01-31T10:00:00+09:00");
    let instants = [
        due,
        due - h,          // back an hour right after charging: nothing again
        due,              // the same instant again
        due + d,          // forward a day
        due + d - h,      // back an hour
        due + d * 2 - h,  // just before the next due time
        due + d * 3,      // forward past two due times: both charged, oldest first
        due + d * 2,      // back a day
        due + d * 29,     // forward four weeks: Feb 28 for the monthly period of Jan 31
        due + d * 28 - h, // back a day and an hour
        due + d * 29 + h,
    ];
    run(&book, &w, &instants);
    assert!(paid(&w).contains("billd-m-1"), "the month-end period of February");
}

/// A seeded random walk of the clock (back 30 minutes or an hour, forward an hour to a day and a bit) through
/// New York's spring-forward night, with the charge time inside the skipped hour.
#[test]
fn a_random_walk_of_the_clock_through_dst_charges_each_period_once() {
    let mut rng = Rng::from_env();
    let mut rand = move |n: u64| rng.below(n);
    let book = Book {
        subs: vec![("d", "1 day", "2025-03-05"), ("w", "1 week", "2025-03-02"), ("m", "1 month", "2025-02-09")],
        clock: ChargeClock { timezone: chrono_tz::America::New_York, charge_time: "02:30:00".parse().unwrap() },
    };
    let w = book.world("America/New_York", "02:30");
    let mut t = at("2025-03-05T02:30:00-05:00");
    let mut instants = vec![t];
    for _ in 0..30 {
        let minutes: i64 = match rand(8) {
            0 => -60,
            1 => -30,
            2 => 60,
            3 => 6 * 60,
            4 | 5 => 24 * 60,
            6 => 25 * 60,
            _ => 12 * 60,
        };
        t += chrono::Duration::minutes(minutes);
        instants.push(t);
    }
    // However the walk went, the clock ends past the spring-forward night, so its period is always checked.
    let past_dst = at("2025-03-09T12:00:00-04:00");
    if instants.iter().all(|i| *i < past_dst) {
        instants.push(past_dst);
    }
    run(&book, &w, &instants);
    // The night of 2025-03-09 has no 02:30: its period fell due at 03:00 EDT.
    let d4: i64 = w
        .db()
        .query_row("SELECT due_at FROM periods WHERE subscription_id = 'd' AND period = 4", [], |r| r.get(0))
        .expect("the period of 2025-03-09 was opened");
    assert_eq!(DateTime::from_timestamp(d4, 0).unwrap(), at("2025-03-09T03:00:00-04:00"));
}
