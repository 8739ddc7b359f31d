//! A subscription's life beyond "a fixed plan forever" (issue 25), end to end with the real binary and the sandbox:
//! prices of its own and discounts.

mod common;

use common::{MONTHLY as PLANS, Setup, World, cards, sub};

/// The amounts paid at the sandbox by `customer`, oldest first.
fn paid_amounts(w: &World, customer: &str) -> Vec<i64> {
    let mut paid: Vec<_> = w.ledger().into_iter().filter(|e| e.status == "paid").collect();
    paid.retain(|e| e.customer_uid.as_deref() == Some(customer));
    paid.sort_by(|a, b| a.merchant_uid.cmp(&b.merchant_uid));
    paid.into_iter().map(|e| e.amount).collect()
}

/// The merchant_uids paid at the sandbox by `customer`, sorted.
fn paid_merchant_uids(w: &World, customer: &str) -> Vec<String> {
    let paid = w.paid_by_merchant_uid().into_values().filter(|e| e.customer_uid.as_deref() == Some(customer));
    let mut m: Vec<String> = paid.map(|e| e.merchant_uid).collect();
    m.sort();
    m
}

fn body(plan_amount: i64, extra: &str) -> String {
    let plans = PLANS.replace("amount = 9900", &format!("amount = {plan_amount}"));
    format!(
        "{plans}{}{}{extra}",
        sub("grandfathered", "c-own", "monthly", "2025-01-10") + "amount = 7900\n",
        sub("plain", "c-plain", "monthly", "2025-01-10")
    )
}

/// The ids `billd subscriptions --status STATUS` lists, sorted.
fn listed_with_status(w: &World, status: &str) -> Vec<String> {
    let o = w.billd().args(["subscriptions", "--json", "--status", status]).output().unwrap();
    assert!(o.status.success(), "--status {status}: {}", common::text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut ids: Vec<String> = v.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids
}

/// `amount` on a subscription is its own price: a later change of the plan's price leaves it alone, while the
/// plan's other subscriptions bill the new price from their next period.
#[test]
fn a_subscriptions_own_price_survives_a_change_of_its_plans_price() {
    let w = World::new(Setup { body: &body(9900, ""), ..Default::default() });
    for c in ["c-own", "c-plain"] {
        w.sandbox.register_customer(c, cards::APPROVE).unwrap();
    }
    w.tick("2025-01-10T10:00:00+09:00");
    w.write_config(&Setup { body: &body(12900, ""), ..Default::default() });
    w.tick("2025-02-10T10:00:00+09:00");
    assert_eq!(paid_amounts(&w, "c-own"), [7900, 7900]);
    assert_eq!(paid_amounts(&w, "c-plain"), [9900, 12900]);
    w.assert_consistent();
}

/// `discount` charges the first N periods less (percent rounded in the customer's favour, or an amount off), then
/// the full price; `subscriptions show` and `upcoming` say what the next periods charge.
#[test]
fn a_discount_applies_to_the_first_periods_only() {
    let text = format!(
        "{PLANS}{}discount = {{ percent = 33, periods = 2 }}\n{}discount = {{ amount = 1000, periods = 1 }}\n",
        sub("pct", "c-pct", "monthly", "2025-01-10"),
        sub("off", "c-off", "monthly", "2025-01-10")
    );
    let w = World::new(Setup { body: &text, ..Default::default() });
    for c in ["c-pct", "c-off"] {
        w.sandbox.register_customer(c, cards::APPROVE).unwrap();
    }
    w.tick("2025-01-10T10:00:00+09:00");
    let show = w.billd().args(["subscriptions", "show", "pct"]).output().unwrap();
    let said = common::text(&show);
    assert!(said.contains("33% off the first 2 periods") && said.contains("period 1 charges 6633 KRW"), "{said}");
    let as_of = ["upcoming", "--days", "40", "--json", "--as-of", "2025-01-11T00:00:00+09:00"];
    let listed = common::text(&w.billd().args(as_of).output().unwrap());
    assert!(
        listed.contains("6633") && listed.contains("9900"),
        "upcoming shows the discounted and full amounts: {listed}"
    );
    for month in ["02", "03"] {
        w.tick(&format!("2025-{month}-10T10:00:00+09:00"));
    }
    // 9900 × 0.67 = 6633 (rounded down: the customer's favour).
    assert_eq!(paid_amounts(&w, "c-pct"), [6633, 6633, 9900]);
    assert_eq!(paid_amounts(&w, "c-off"), [8900, 9900, 9900]);
    w.assert_consistent();
}

/// A discount added to the config later applies to the periods not yet opened (counted from the subscription's
/// first period), and `sync` says so.
#[test]
fn a_discount_added_later_applies_from_the_next_period() {
    let plain = format!("{PLANS}{}", sub("s1", "c1", "monthly", "2025-01-10"));
    let w = World::new(Setup { body: &plain, ..Default::default() });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    w.tick("2025-01-10T10:00:00+09:00");
    let discounted = format!("{plain}discount = {{ percent = 50, periods = 2 }}\n");
    w.write_config(&Setup { body: &discounted, ..Default::default() });
    let o = w.billd().args(["sync", "--dry-run"]).output().unwrap();
    assert!(common::text(&o).contains("discount none -> 50% off the first 2 periods"), "{}", common::text(&o));
    for month in ["02", "03"] {
        w.tick(&format!("2025-{month}-10T10:00:00+09:00"));
    }
    assert_eq!(paid_amounts(&w, "c1"), [9900, 4950, 9900], "period 1 is the last discounted one");
}

/// `billing.catch_up_window` (issue 25, stale backlog): billd offline for two months on a weekly plan; the pass that
/// follows skips, never charges, every period due longer ago than the window (recorded `skipped`, with a
/// `period.skipped` line), charges the ones inside it, and billing goes on.
#[test]
fn periods_older_than_the_catch_up_window_are_skipped_not_charged() {
    let body = r#"
[[plans]]
id = "weekly"
name = "Weekly plan"
amount = 1000
interval = "1 week"
"#;
    let text = format!("{body}{}", sub("s1", "c1", "weekly", "2025-01-06"));
    let w = World::new(Setup { body: &text, ..Default::default() });
    std::fs::write(
        &w.config,
        std::fs::read_to_string(&w.config).unwrap().replace("[billing]\n", "[billing]\ncatch_up_window = \"10d\"\n"),
    )
    .unwrap();
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    w.tick("2025-01-06T10:00:00+09:00");
    // Back two months later (2025-03-10 is a Monday): 2025-01-13 .. 2025-02-24 are older than 10 days; 03-03 and
    // 03-10 are inside the window. `upcoming` says so before the pass: the backlog first, the skipped apart and
    // not in the total.
    let ahead = ["upcoming", "--days", "3", "--as-of", "2025-03-10T09:00:00+09:00"];
    let listed = common::text(&w.billd().args(ahead).output().unwrap());
    assert!(listed.contains("overdue at 2025-03-10 09:00 +09:00") && listed.contains("1 charge, 1000 KRW"), "{listed}");
    assert!(listed.contains("skipped (due more than 10d before") && listed.contains("7 periods, 7000 KRW"), "{listed}");
    assert!(listed.contains("next 3 days: 2 charges, 2000 KRW"), "the skipped counted as charges: {listed}");
    let dry = w.billd().args(["sync", "--dry-run", "--as-of", "2025-03-10T09:00:00+09:00"]).output().unwrap();
    let said = common::text(&dry);
    assert_eq!(said.matches("older than catch_up_window (10d), never charged").count(), 7, "{said}");
    assert!(said.contains("skip    s1 period 1 (due 2025-01-13 10:00 +09:00)"), "{said}");
    let json: serde_json::Value =
        serde_json::from_slice(&w.billd().args(ahead).arg("--json").output().unwrap().stdout).unwrap();
    let kinds: Vec<&str> = json.as_array().unwrap().iter().map(|i| i["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, [vec!["skipped"; 7], vec!["overdue", "due"]].concat());
    let out = w.tick("2025-03-10T10:00:00+09:00");
    let said = World::stderr(&out);
    assert_eq!(said.matches("event=\"period.skipped\"").count(), 7, "{said}");
    assert!(said.contains("older than catch_up_window (10d)"), "{said}");
    let states: Vec<(i64, String)> = {
        let db = w.db();
        let mut st =
            db.prepare("SELECT period, state FROM periods WHERE subscription_id = 's1' ORDER BY period").unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
    };
    let skipped: Vec<i64> = states.iter().filter(|(_, s)| s == "skipped").map(|(p, _)| *p).collect();
    let paid: Vec<i64> = states.iter().filter(|(_, s)| s == "paid").map(|(p, _)| *p).collect();
    assert_eq!((skipped, paid), ((1..=7).collect::<Vec<_>>(), vec![0, 8, 9]));
    assert_eq!(paid_amounts(&w, "c1"), [1000, 1000, 1000], "only the periods inside the window were charged");
    let show = common::text(&w.billd().args(["subscriptions", "show", "s1"]).output().unwrap());
    assert!(show.contains("skipped"), "{show}");
    w.tick("2025-03-17T10:00:00+09:00");
    assert_eq!(paid_amounts(&w, "c1").len(), 4, "billing goes on");
    w.assert_consistent();
}

/// `billd pause ID --until DATE [--catch-up]` (issue 25): the subscription resumes by itself on that day (the first
/// pass from then on); the periods that fell due while paused are skipped, or with `--catch-up` charged then.
#[test]
fn a_pause_until_a_date_resumes_by_itself() {
    let text = format!(
        "{PLANS}{}{}",
        sub("skip", "c-skip", "monthly", "2025-01-10"),
        sub("catch", "c-catch", "monthly", "2025-01-10")
    );
    let w = World::new(Setup { body: &text, ..Default::default() });
    for c in ["c-skip", "c-catch"] {
        w.sandbox.register_customer(c, cards::APPROVE).unwrap();
    }
    w.tick("2025-01-10T10:00:00+09:00");
    let pause = |id: &str, extra: &[&str]| {
        let mut c = w.billd();
        c.args(["pause", id, "--until", "2025-03-15", "--as-of", "2025-01-20T00:00:00+09:00"]).args(extra);
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", common::text(&o));
        common::text(&o)
    };
    assert!(pause("skip", &[]).contains("resumes by itself at 2025-03-15 00:00 +09:00"));
    assert!(pause("catch", &["--catch-up"]).contains("charged then"));
    w.tick("2025-02-10T10:00:00+09:00");
    assert_eq!(w.status_of("skip"), "suspended");
    let out = w.tick("2025-03-15T00:00:00+09:00");
    assert!(World::stderr(&out).contains("subscription.resumed"), "{}", World::stderr(&out));
    assert_eq!((w.status_of("skip"), w.status_of("catch")), ("active".to_string(), "active".to_string()));
    w.tick("2025-04-10T10:00:00+09:00");
    let periods = |c: &str| paid_merchant_uids(&w, c);
    assert_eq!(periods("c-skip"), ["billd-skip-0", "billd-skip-3"], "February and March skipped");
    assert_eq!(periods("c-catch"), ["billd-catch-0", "billd-catch-1", "billd-catch-2", "billd-catch-3"]);
    // A date not after now is refused.
    let o = w
        .billd()
        .args(["pause", "skip", "--until", "2025-04-01", "--as-of", "2025-04-10T11:00:00+09:00"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", common::text(&o));
    w.assert_consistent();
}

/// Trials (issue 25): `trial = "14d"` on a plan, `trial_ends` on a subscription. `start` is the signup; the first
/// charge falls due when the trial ends, later periods keep that anchor; the subscription is `trialing` until its
/// first charge is paid (a declined one makes it past due, as for any charge).
#[test]
fn a_trial_puts_the_first_charge_at_its_end_and_the_anchor_with_it() {
    let plans = r#"
[[plans]]
id = "trial"
name = "Monthly with a trial"
amount = 9900
interval = "1 month"
trial = "14d"
"#;
    let text = format!(
        "{plans}{}{}{}trial_ends = \"2025-02-01\"\n",
        sub("t1", "c1", "trial", "2025-01-01"),
        sub("t2", "c2", "trial", "2025-01-01"),
        sub("t3", "c3", "trial", "2025-01-01")
    );
    let w = World::new(Setup { body: &text, ..Default::default() });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    w.sandbox.register_customer("c2", cards::DECLINE_INSUFFICIENT_FUNDS).unwrap();
    w.sandbox.register_customer("c3", cards::APPROVE).unwrap();
    assert!(w.billd().args(["sync", "--as-of", "2025-01-01T09:00:00+09:00"]).status().unwrap().success());
    assert_eq!(w.status_of("t1"), "trialing");
    assert_eq!(listed_with_status(&w, "trialing"), ["t1", "t2", "t3"]);
    let listed = common::text(
        &w.billd().args(["upcoming", "--days", "40", "--as-of", "2025-01-01T09:00:00+09:00"]).output().unwrap(),
    );
    assert!(listed.contains("trial ends"), "{listed}");
    w.tick("2025-01-14T10:00:00+09:00");
    assert!(w.ledger().is_empty(), "charged during the trial");
    w.tick("2025-01-15T10:00:00+09:00");
    assert_eq!(paid_amounts(&w, "c1"), [9900]);
    assert_eq!((w.status_of("t1"), w.status_of("t2")), ("active".to_string(), "past_due".to_string()));
    assert_eq!(w.status_of("t3"), "trialing", "its own trial_ends");
    w.tick("2025-02-01T10:00:00+09:00");
    assert_eq!(paid_amounts(&w, "c3"), [9900]);
    assert_eq!(
        w.due_dates("t1", chrono_tz::Asia::Seoul),
        ["2025-01-15T10:00:00+09:00"],
        "the anchor is the trial's end"
    );
    w.tick("2025-02-15T10:00:00+09:00");
    assert_eq!(paid_amounts(&w, "c1"), [9900, 9900]);
    w.assert_consistent();
}

/// Cancel at period end (issue 25): `billd cancel ID --at-period-end` and `cancel_at` in the config. The subscription
/// is `canceling` and billed until then; no period due at or after that moment is charged; it is `canceled` after.
#[test]
fn a_cancel_at_period_end_bills_until_then_and_cancels_then() {
    let text = format!("{PLANS}{}cancel_at = \"2025-03-01\"\n", sub("cfg", "c-cfg", "monthly", "2025-01-10"));
    let w = World::new(Setup { body: &text, ..Default::default() });
    for c in ["c-cmd", "c-cfg"] {
        w.sandbox.register_customer(c, cards::APPROVE).unwrap();
    }
    let add = ["subscriptions", "add", "--id", "cmd", "--customer-uid", "c-cmd", "--plan", "monthly"];
    let o = w.billd().args(add).args(["--start", "2025-01-10", "--as-of", "2025-01-09T00:00:00+09:00"]).output();
    assert!(o.as_ref().unwrap().status.success(), "{}", common::text(&o.unwrap()));
    w.tick("2025-01-10T10:00:00+09:00");
    assert_eq!(w.status_of("cfg"), "canceling");
    // A config subscription's end is the file's: the command says so and changes nothing.
    let o = w.billd().args(["cancel", "cfg", "--at-period-end", "--as-of", "2025-01-20T00:00:00+09:00"]).output();
    assert!(common::text(&o.unwrap()).contains("set `cancel_at"));
    let o =
        w.billd().args(["cancel", "cmd", "--at-period-end", "--as-of", "2025-01-20T00:00:00+09:00"]).output().unwrap();
    assert!(
        o.status.success()
            && common::text(&o).contains("the end of its period in force, 2025-02-10 10:00 +09:00")
            && common::text(&o).contains("canceled from 2025-02-10 00:00 +09:00"),
        "{}",
        common::text(&o)
    );
    assert_eq!(w.status_of("cmd"), "canceling");
    assert_eq!(listed_with_status(&w, "canceling"), ["cfg", "cmd"]);
    let listed = common::text(
        &w.billd().args(["upcoming", "--days", "60", "--as-of", "2025-01-20T00:00:00+09:00"]).output().unwrap(),
    );
    assert!(!listed.contains("cmd "), "a period at or after its end is listed: {listed}");
    let tick = w.tick("2025-02-10T10:00:00+09:00");
    assert_eq!((w.status_of("cmd"), w.status_of("cfg")), ("canceled".to_string(), "canceling".to_string()));
    // Its end is logged as its status, as the README says (it was `subscription.ended`).
    let log = World::stderr(&tick);
    let ended = |l: &&str| l.contains("subscription=cmd") && l.contains("event=subscription.canceled");
    assert!(log.lines().any(|l| ended(&l)), "{log}");
    assert!(!log.contains("subscription.ended"), "{log}");
    w.tick("2025-03-10T10:00:00+09:00");
    assert_eq!(w.status_of("cfg"), "canceled");
    assert_eq!(paid_amounts(&w, "c-cmd"), [9900], "charged at or after its end");
    assert_eq!(paid_amounts(&w, "c-cfg"), [9900, 9900]);
    w.assert_consistent();
}

/// Fixed terms (issue 25): `periods = 3` on a plan, `end` on a subscription: no period opens after the last one, and
/// when the last period is paid the subscription is `completed`, a final status a sync never reopens.
#[test]
fn a_fixed_term_completes_after_its_last_period() {
    let plans = r#"
[[plans]]
id = "three"
name = "Three months"
amount = 9900
interval = "1 month"
periods = 3
"#;
    let text = format!(
        "{plans}{PLANS}{}{}end = \"2025-02-15\"\n",
        sub("p3", "c1", "three", "2025-01-10"),
        sub("e2", "c2", "monthly", "2025-01-10")
    );
    let w = World::new(Setup { body: &text, ..Default::default() });
    for c in ["c1", "c2"] {
        w.sandbox.register_customer(c, cards::APPROVE).unwrap();
    }
    for month in ["01", "02", "03", "04", "05"] {
        w.tick(&format!("2025-{month}-10T10:00:00+09:00"));
        if month == "02" {
            assert_eq!(w.status_of("e2"), "completed", "its last period (due before its end) is paid");
        }
    }
    assert_eq!(paid_amounts(&w, "c1"), [9900, 9900, 9900]);
    assert_eq!(paid_amounts(&w, "c2"), [9900, 9900]);
    assert_eq!((w.status_of("p3"), w.status_of("e2")), ("completed".to_string(), "completed".to_string()));
    assert_eq!(listed_with_status(&w, "completed"), ["e2", "p3"]);
    let sync = common::text(&w.billd().args(["sync", "--as-of", "2025-05-10T11:00:00+09:00"]).output().unwrap());
    assert!(sync.contains("completed in the database and stays completed"), "{sync}");
    w.assert_consistent();
}

/// A term the file shortens to the periods already paid ends at the next pass, logged as its status
/// (`subscription.completed`, INFO), as every other status change is (it was `subscription.ended`).
#[test]
fn a_term_ended_by_a_pass_is_logged_as_completed() {
    let text = format!("{PLANS}{}periods = 3\n", sub("s", "c1", "monthly", "2025-01-10"));
    let w = World::new(Setup { body: &text, ..Default::default() });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    w.tick("2025-01-10T10:00:00+09:00");
    w.tick("2025-02-10T10:00:00+09:00");
    assert_eq!(w.status_of("s"), "active");
    w.write_config(&Setup { body: &text.replace("periods = 3", "periods = 2"), ..Default::default() });
    let log = World::stderr(&w.tick("2025-02-11T10:00:00+09:00"));
    assert_eq!(w.status_of("s"), "completed");
    let ended = |l: &str| l.contains("subscription=s ") && l.contains("event=subscription.completed");
    assert!(log.lines().any(|l| ended(l) && l.contains("INFO")), "{log}");
    assert!(!log.contains("subscription.ended"), "{log}");
}

/// `billd reactivate ID [--charge-now]` (issue 25): a subscription dunning canceled, once its customer has a card
/// that pays, bills again: from the next period due after now (the missed ones not charged), or with --charge-now
/// first the period whose retries ran out, under its own merchant_uid. One an operator canceled is not reactivated.
#[test]
fn a_subscription_dunning_canceled_is_reactivated_and_one_an_operator_canceled_is_not() {
    let text = format!(
        "{PLANS}{}{}{}",
        sub("later", "c-later", "monthly", "2025-01-10"),
        sub("now", "c-now", "monthly", "2025-01-10"),
        sub("op", "c-op", "monthly", "2025-01-10")
    );
    let dunning = "retry_after = [\"1d\"]\non_exhausted = \"cancel\"";
    let w = World::new(Setup { body: &text, dunning, ..Default::default() });
    for c in ["c-later", "c-now"] {
        w.sandbox.register_customer(c, cards::DECLINE_INSUFFICIENT_FUNDS).unwrap();
    }
    w.sandbox.register_customer("c-op", cards::APPROVE).unwrap();
    w.tick("2025-01-10T10:00:00+09:00");
    w.tick("2025-01-11T10:00:00+09:00");
    assert_eq!((w.status_of("later"), w.status_of("now")), ("canceled".to_string(), "canceled".to_string()));
    // The customers register cards that pay; an operator cancels "op".
    for c in ["c-later", "c-now"] {
        w.sandbox.register_customer(c, cards::APPROVE).unwrap();
    }
    assert!(w.billd().args(["cancel", "op", "--as-of", "2025-01-12T00:00:00+09:00"]).status().unwrap().success());
    let run = |args: &[&str]| {
        let o = w.billd().arg("reactivate").args(args).output().unwrap();
        (o.status.code(), common::text(&o))
    };
    let (code, said) = run(&["op", "--as-of", "2025-01-20T12:00:00+09:00"]);
    assert!(code == Some(1) && said.contains("not by dunning"), "{said}");
    let (code, said) = run(&["later", "--as-of", "2025-01-20T12:00:00+09:00"]);
    assert!(code == Some(0) && said.contains("period 1 (2025-02-10 10:00 +09:00)"), "{said}");
    let (code, said) = run(&["now", "--charge-now", "--as-of", "2025-01-20T12:00:00+09:00"]);
    assert!(code == Some(0) && said.contains("period 0 (billd-now-0) paid"), "{said}");
    w.tick("2025-02-10T10:00:00+09:00");
    let paid = |c: &str| paid_merchant_uids(&w, c);
    assert_eq!(paid("c-later"), ["billd-later-1"], "the missed period charged, or billing did not continue");
    assert_eq!(paid("c-now"), ["billd-now-0", "billd-now-1"]);
    assert_eq!((w.status_of("later"), w.status_of("op")), ("active".to_string(), "canceled".to_string()));
    w.assert_consistent();
}

/// An outsider's findings on the lifecycle (each reproduced here): a charge time moved earlier re-timed a period
/// canceled at period end before its cancel_at, and it was charged; adding `cancel_at` to a paused subscription
/// un-paused it; a period due before `cancel_at` missed while billd was down was never charged; a term shortened by
/// the config never completed; a start moved months back charged every period since in one pass.
#[test]
fn the_lifecycle_edges_an_outsider_found_hold() {
    let text = format!(
        "{PLANS}{}{}cancel_at = \"2025-03-01\"\n{}periods = 6\n{}",
        sub("paused", "c-paused", "monthly", "2025-01-05"),
        sub("down", "c-down", "monthly", "2025-01-05"),
        sub("short", "c-short", "monthly", "2025-01-05"),
        sub("later", "c-later", "monthly", "2025-06-01")
    );
    let w = World::new(Setup { body: &text, ..Default::default() });
    for c in ["c-cmd", "c-paused", "c-down", "c-short", "c-later"] {
        w.sandbox.register_customer(c, cards::APPROVE).unwrap();
    }
    let add = ["subscriptions", "add", "--id", "cmd", "--customer-uid", "c-cmd", "--plan", "monthly"];
    let o = w.billd().args(add).args(["--start", "2025-01-05", "--as-of", "2025-01-01T00:00:00+09:00"]).output();
    assert!(o.as_ref().unwrap().status.success(), "{}", common::text(&o.unwrap()));
    w.tick("2025-01-05T10:00:00+09:00");
    let ok = |args: &[&str]| {
        let o = w.billd().args(args).output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", common::text(&o));
    };
    ok(&["cancel", "cmd", "--at-period-end", "--as-of", "2025-01-10T00:00:00+09:00"]);
    ok(&["pause", "paused", "--as-of", "2025-01-10T00:00:00+09:00"]);
    // The file: charge time 09:00, cancel_at on the paused one, a term of 2 for "short", a start months back.
    let edited = text
        .replace(
            "start = \"2025-01-05\"\n\n[[subscriptions]]\nid = \"down\"",
            "start = \"2025-01-05\"\ncancel_at = \"2025-06-01\"\n\n[[subscriptions]]\nid = \"down\"",
        )
        .replace("periods = 6", "periods = 2")
        .replace("start = \"2025-06-01\"", "start = \"2024-10-01\"");
    assert_eq!(edited.matches("cancel_at").count(), 2, "the edit put cancel_at on the paused one: {edited}");
    assert!(edited.contains("periods = 2") && edited.contains("2024-10-01"), "{edited}");
    w.write_config(&Setup { body: &edited, charge_time: "09:00", ..Default::default() });
    let said = common::text(&w.billd().args(["sync", "--as-of", "2025-01-10T00:00:00+09:00"]).output().unwrap());
    assert!(said.contains("first charge not moved") || said.contains("not moved"), "{said}");
    assert_eq!(w.status_of("paused"), "suspended", "cancel_at un-paused it");
    // billd is down from February 4 until March 10.
    w.tick("2025-02-04T10:00:00+09:00");
    w.tick("2025-03-10T10:00:00+09:00");
    w.tick("2025-03-11T10:00:00+09:00");
    assert_eq!(paid_merchant_uids(&w, "c-cmd"), ["billd-cmd-0"], "charged at or after its cancel at period end");
    assert!(paid_merchant_uids(&w, "c-paused").len() == 1, "charged while paused");
    assert_eq!(paid_merchant_uids(&w, "c-down"), ["billd-down-0", "billd-down-1"], "the missed February period");
    assert_eq!(w.status_of("down"), "canceled");
    assert_eq!(paid_merchant_uids(&w, "c-short"), ["billd-short-0", "billd-short-1"]);
    assert_eq!(w.status_of("short"), "completed", "a shortened term");
    assert!(paid_merchant_uids(&w, "c-later").len() <= 1, "a start moved back charged every period since at once");
    w.assert_consistent();
}

/// A third review's finding: `end` was recounted with a new interval when the plan's interval changed in the file,
/// billing weeks past it (or skipping a month before it). A subscription with a fixed term keeps its interval: the
/// change of its plan is not applied, and the sync says so.
#[test]
fn a_fixed_term_keeps_its_interval_when_its_plan_changes_in_the_file() {
    let weekly = "\n[[plans]]\nid = \"weekly\"\nname = \"Weekly\"\namount = 2000\ninterval = \"1 week\"\n";
    let text = format!("{PLANS}{weekly}{}end = \"2025-03-15\"\n", sub("w", "c-w", "monthly", "2025-01-10"));
    let w = World::new(Setup { body: &text, ..Default::default() });
    w.sandbox.register_customer("c-w", cards::APPROVE).unwrap();
    w.tick("2025-01-10T10:00:00+09:00");
    w.tick("2025-02-10T10:00:00+09:00");
    let edited = text.replace("plan = \"monthly\"", "plan = \"weekly\"");
    w.write_config(&Setup { body: &edited, ..Default::default() });
    let said = common::text(&w.billd().args(["sync", "--as-of", "2025-02-12T00:00:00+09:00"]).output().unwrap());
    assert!(said.contains("keeps its interval"), "{said}");
    for day in ["2025-03-10", "2025-03-17", "2025-03-24", "2025-04-30"] {
        w.tick(&format!("{day}T10:00:00+09:00"));
    }
    assert_eq!(paid_amounts(&w, "c-w"), [9900, 9900, 9900], "billed past its end, or at another interval");
    assert_eq!(w.status_of("w"), "completed");
}
