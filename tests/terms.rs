//! A subscription's terms (trial, fixed term, cancel date, price, discount) are the same however it was created or
//! changed (issue 25, an outside review), end to end with the real binary and the sandbox: a plan's `trial` and
//! `periods` reach subscriptions added by command and by import; `subscriptions add` takes the config's keys as
//! flags under the same rules; a plan change never moves a promised trial end, counts a new plan's term, and keeps
//! the interval of a subscription with a cancel date; a change that would bill nothing is refused with its reason.

mod common;

use common::{MONTHLY, Setup, World, cards, sub, text};

/// The amounts the sandbox charged `customer`, in the order it charged them.
fn paid(w: &World, customer: &str) -> Vec<i64> {
    let mut e: Vec<_> = w.ledger().into_iter().filter(|e| e.status == "paid").collect();
    e.retain(|e| e.customer_uid.as_deref() == Some(customer));
    e.into_iter().map(|e| e.amount).collect()
}

/// Runs billd with `args` at `as_of` (`--as-of`), returning its exit code and what it said.
fn run(w: &World, args: &[&str], as_of: &str) -> (Option<i32>, String) {
    let o = w.billd().args(args).args(["--as-of", as_of]).output().unwrap();
    (o.status.code(), text(&o))
}

const TRIAL_TERM: &str = r#"
[[plans]]
id = "t3"
name = "Three months after a trial"
amount = 10000
interval = "1 month"
trial = "14d"
periods = 3
"#;

/// Finding F3 (high): a plan with `trial = "14d"` and `periods = 3` gave its trial and term to a subscription of the
/// file only; one added by `subscriptions add` or `import` was charged on its signup day and then forever. Now all
/// three are trialing until the 15th, charged on the 15th of three months, and completed.
#[test]
fn a_plans_trial_and_term_reach_subscriptions_added_by_command_and_by_import() {
    let w = World::new(Setup {
        body: &format!("{TRIAL_TERM}{}", sub("cfg", "c-cfg", "t3", "2025-03-01")),
        ..Default::default()
    });
    for c in ["c-cfg", "c-cmd", "c-imp"] {
        w.sandbox.register_customer(c, cards::APPROVE).unwrap();
    }
    let signup = "2025-03-01T09:00:00+09:00";
    let add =
        ["subscriptions", "add", "--id", "cmd", "--customer-uid", "c-cmd", "--plan", "t3", "--start", "2025-03-01"];
    let (code, said) = run(&w, &add, signup);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("trialing") && said.contains("first due 2025-03-15 10:00 +09:00"), "{said}");
    let csv = w.dir.path().join("in.csv");
    std::fs::write(&csv, "id,customer_uid,plan,start\nimp,c-imp,t3,2025-03-01\n").unwrap();
    let (code, said) = run(&w, &["import", csv.to_str().unwrap()], signup);
    assert_eq!(code, Some(0), "{said}");
    w.tick(signup);
    for id in ["cfg", "cmd", "imp"] {
        assert_eq!(w.status_of(id), "trialing", "{id}");
    }
    w.tick("2025-03-01T10:00:00+09:00");
    w.tick("2025-03-14T10:00:00+09:00");
    assert!(w.ledger().is_empty(), "charged during the trial: {:?}", w.ledger());
    for day in ["2025-03-15", "2025-04-15", "2025-05-15", "2025-06-15", "2025-07-15"] {
        w.tick(&format!("{day}T10:00:00+09:00"));
    }
    for (id, c) in [("cfg", "c-cfg"), ("cmd", "c-cmd"), ("imp", "c-imp")] {
        assert_eq!(paid(&w, c), [10000, 10000, 10000], "{id}: not three periods");
        assert_eq!(w.status_of(id), "completed", "{id}");
        assert_eq!(w.due_dates(id, chrono_tz::Asia::Seoul)[0], "2025-03-15T10:00:00+09:00", "{id}: the anchor");
    }
    w.assert_consistent();
}

/// `subscriptions add` takes what a `[[subscriptions]]` entry can say: `--trial-ends`, `--amount`, `--periods`,
/// `--end`, `--cancel-at` and a discount, checked by the config's rules with the config's messages, each naming its
/// flag (exit 1, nothing added); accepted, they bill as the entry's keys would.
#[test]
fn subscriptions_add_takes_the_entrys_keys_as_flags_under_the_same_rules() {
    let w = World::new(Setup { body: MONTHLY, ..Default::default() });
    for c in ["c-own", "c-k"] {
        w.sandbox.register_customer(c, cards::APPROVE).unwrap();
    }
    let at = "2025-03-01T09:00:00+09:00";
    let add = |id: &str, c: &str, extra: &[&str]| {
        let mut args = vec!["subscriptions", "add", "--id", id, "--customer-uid", c, "--plan", "monthly"];
        args.extend(["--start", "2025-03-01"]);
        args.extend(extra);
        run(&w, &args, at)
    };
    // Each refusal names its flag, with the message the config key gets.
    let refused: &[(&[&str], &str)] = &[
        (&["--trial-ends", "2025-02-01"], "--trial-ends: 2025-02-01 is before its start 2025-03-01"),
        (&["--trial-ends", "2025-3-10"], "--trial-ends: \"2025-3-10\" is not a valid date (YYYY-MM-DD"),
        (&["--periods", "0"], "--periods: 0 must be 1 to 100000"),
        (&["--periods", "2", "--end", "2025-09-01"], "give --periods or --end, not both"),
        (&["--end", "2025-02-15"], "--end: 2025-02-15 is before its first charge (2025-03-01)"),
        (&["--amount", "0"], "--amount: 0 must be a positive whole number of KRW"),
        (&["--amount", "99999999"], "--amount: 99999999 is above limits.max_amount"),
        (&["--discount-percent", "20"], "--discount-periods: missing"),
        (&["--discount-percent", "100", "--discount-periods", "1"], "--discount-percent: 100 must be 1 to 99"),
        (&["--discount-amount", "9900", "--discount-periods", "1"], "leaves nothing to charge of 9900 KRW"),
        (
            &["--discount-percent", "5", "--discount-amount", "5", "--discount-periods", "1"],
            "give exactly one of --discount-percent or --discount-amount, with --discount-periods",
        ),
    ];
    for (flags, needle) in refused {
        let (code, said) = add("bad", "c-own", flags);
        assert_eq!(code, Some(1), "{flags:?}: {said}");
        assert!(said.contains(needle) && said.contains("nothing was added"), "{flags:?}: {said}");
    }
    // The config says the same of the same values.
    let entry = format!(
        "{MONTHLY}{}trial_ends = \"2025-02-01\"\nperiods = 0\ndiscount = {{ percent = 100, periods = 1 }}\n",
        sub("bad", "c-own", "monthly", "2025-03-01")
    );
    w.write_config(&Setup { body: &entry, ..Default::default() });
    let checked = text(&w.billd().args(["check"]).output().unwrap());
    for needle in ["trial_ends: 2025-02-01 is before its start 2025-03-01", "periods: 0 must be 1 to 100000"] {
        assert!(checked.contains(needle), "{checked}");
    }
    assert!(checked.contains("discount.percent: 100 must be 1 to 99"), "{checked}");
    w.write_config(&Setup { body: MONTHLY, ..Default::default() });
    // Its own trial, price, discount and term; and a cancel date.
    let own =
        ["--trial-ends", "2025-03-05", "--amount", "7000", "--discount-amount", "1000", "--discount-periods", "1"];
    let (code, said) = add("own", "c-own", &[&own[..], &["--periods", "2"]].concat());
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("trial until 2025-03-05") && said.contains("a term of 2 periods"), "{said}");
    let (code, said) = add("k", "c-k", &["--cancel-at", "2025-04-15"]);
    assert!(code == Some(0) && said.contains("cancel_at 2025-04-15"), "{said}");
    assert_eq!((w.status_of("own"), w.status_of("k")), ("trialing".to_string(), "canceling".to_string()));
    let refused_added: i64 =
        w.db().query_row("SELECT count(*) FROM subscriptions WHERE id = 'bad'", [], |r| r.get(0)).unwrap();
    assert_eq!(refused_added, 0, "a refused subscription was added");
    for day in ["2025-03-01", "2025-03-05", "2025-04-01", "2025-04-05", "2025-05-01", "2025-05-05", "2025-06-05"] {
        w.tick(&format!("{day}T10:00:00+09:00"));
    }
    assert_eq!(paid(&w, "c-own"), [6000, 7000], "its trial, price, discount or term");
    assert_eq!(paid(&w, "c-k"), [9900, 9900], "billed past its cancel date");
    assert_eq!((w.status_of("own"), w.status_of("k")), ("completed".to_string(), "canceled".to_string()));
    // With a trial, --charge-now is refused (its first charge falls due when the trial ends).
    let (code, said) = add("now", "c-own", &["--trial-ends", "2025-03-10", "--charge-now"]);
    assert!(code == Some(1) && said.contains("--charge-now") && said.contains("trial"), "{said}");
    w.assert_consistent();
}

/// Finding F3 (high), the change: `subscriptions change --at-period-end` (or `--now`) to a plan with `periods = 2`
/// kept billing forever. The new plan's term (counted from the subscription's first charge, as the config counts
/// it) applies with the change, and the command says so.
#[test]
fn a_change_to_a_plan_with_a_term_ends_the_subscription_with_it() {
    let two = "\n[[plans]]\nid = \"p2\"\nname = \"Two months\"\namount = 9900\ninterval = \"1 month\"\nperiods = 2\n";
    let w = World::new(Setup { body: &format!("{MONTHLY}{two}"), ..Default::default() });
    for c in ["c-x", "c-y"] {
        w.sandbox.register_customer(c, cards::APPROVE).unwrap();
    }
    for (id, c) in [("x", "c-x"), ("y", "c-y")] {
        let add =
            ["subscriptions", "add", "--id", id, "--customer-uid", c, "--plan", "monthly", "--start", "2025-03-01"];
        assert_eq!(run(&w, &add, "2025-03-01T09:00:00+09:00").0, Some(0));
    }
    w.tick("2025-03-01T10:00:00+09:00");
    let (code, said) =
        run(&w, &["subscriptions", "change", "x", "--plan", "p2", "--at-period-end"], "2025-03-05T10:00:00+09:00");
    assert!(code == Some(0) && said.contains("its fixed term is 2 periods"), "{said}");
    let (code, said) = run(&w, &["subscriptions", "change", "y", "--plan", "p2", "--now"], "2025-03-05T10:00:00+09:00");
    assert!(code == Some(0) && said.contains("its fixed term is 2 periods"), "{said}");
    for month in ["04", "05", "06", "07"] {
        w.tick(&format!("2025-{month}-01T10:00:00+09:00"));
    }
    assert_eq!(paid(&w, "c-x"), [9900, 9900], "billed past the new plan's term");
    assert_eq!(paid(&w, "c-y"), [9900, 9900]);
    assert_eq!((w.status_of("x"), w.status_of("y")), ("completed".to_string(), "completed".to_string()));
    w.assert_consistent();
}

/// Finding F7 (high): a subscription with `cancel_at` whose plan was changed in the file to a yearly one was synced
/// with the new interval, and a year's price was charged six weeks before its cancel date; a plan's own `interval`
/// edit was applied to it too. A cancel date keeps the interval, as a fixed term does: the change is not applied,
/// and the sync says so (showing the cancel date as the file writes it).
#[test]
fn a_cancel_date_keeps_its_interval_when_the_plan_changes_in_the_file() {
    let plans = "\n[[plans]]\nid = \"y\"\nname = \"Yearly\"\namount = 100000\ninterval = \"1 year\"\n\n[[plans]]\nid = \"m2\"\nname = \"Monthly 2\"\namount = 10000\ninterval = \"1 month\"\n";
    let subs = format!(
        "{}cancel_at = \"2025-05-15\"\n{}cancel_at = \"2025-05-15\"\n{}",
        sub("k", "c-k", "monthly", "2025-03-01"),
        sub("k2", "c-k2", "m2", "2025-03-01"),
        sub("later", "c-later", "monthly", "2025-03-01")
    );
    let body = format!("{MONTHLY}{plans}{subs}");
    let w = World::new(Setup { body: &body, ..Default::default() });
    for c in ["c-k", "c-k2", "c-later"] {
        w.sandbox.register_customer(c, cards::APPROVE).unwrap();
    }
    w.tick("2025-03-01T10:00:00+09:00");
    // k moves to the yearly plan; plan m2 itself becomes yearly; "later" gets a cancel date.
    let edited = body
        .replacen("plan = \"monthly\"", "plan = \"y\"", 1)
        .replace("amount = 10000\ninterval = \"1 month\"", "amount = 10000\ninterval = \"1 year\"")
        + "cancel_at = \"2025-06-03\"\n";
    w.write_config(&Setup { body: &edited, ..Default::default() });
    let (_, said) = run(&w, &["sync", "--dry-run"], "2025-03-03T12:00:00+09:00");
    assert_eq!(said.matches("keeps its interval").count(), 2, "{said}");
    assert!(said.contains("cancel_at none -> 2025-06-03"), "a cancel date shown as a UTC instant: {said}");
    for day in ["2025-04-01", "2025-05-01", "2025-05-15", "2025-06-01", "2025-07-01"] {
        w.tick(&format!("{day}T10:00:00+09:00"));
    }
    assert_eq!(paid(&w, "c-k"), [9900, 9900, 9900], "another interval, or billed past its cancel date");
    assert_eq!(paid(&w, "c-k2"), [10000, 10000, 10000]);
    assert_eq!((w.status_of("k"), w.status_of("k2")), ("canceled".to_string(), "canceled".to_string()));
    w.assert_consistent();
}

/// Finding F6 (medium): a trialing subscription whose plan changed (the file, then `subscriptions change
/// --at-period-end`, as README says) lost its trial at the next pass, charged 12 days before the trial end the
/// command, `upcoming` and `show` had promised. A plan change never moves a promised trial end: the first charge
/// stays at the trial's end, on the new plan's price, and the sync says why.
#[test]
fn a_plan_change_never_moves_a_promised_trial_end() {
    let plans = "\n[[plans]]\nid = \"t\"\nname = \"Trial monthly\"\namount = 10000\ninterval = \"1 month\"\ntrial = \"14d\"\n\n[[plans]]\nid = \"pro\"\nname = \"Monthly pro\"\namount = 20000\ninterval = \"1 month\"\n";
    let body = format!("{plans}{}{}", sub("tr", "c-tr", "t", "2025-03-01"), sub("file", "c-file", "t", "2025-03-01"));
    let w = World::new(Setup { body: &body, ..Default::default() });
    for c in ["c-tr", "c-file"] {
        w.sandbox.register_customer(c, cards::APPROVE).unwrap();
    }
    assert_eq!(run(&w, &["sync"], "2025-03-01T09:00:00+09:00").0, Some(0));
    // Both entries name plan pro; tr's change is also made by command (README's way), file's by the file alone.
    w.write_config(&Setup { body: &body.replace("plan = \"t\"", "plan = \"pro\""), ..Default::default() });
    let at = "2025-03-03T11:00:00+09:00";
    let (code, said) = run(&w, &["subscriptions", "change", "tr", "--plan", "pro", "--at-period-end"], at);
    assert!(code == Some(0) && said.contains("2025-03-15 10:00 +09:00"), "{said}");
    let (_, upcoming) = run(&w, &["upcoming", "--days", "20"], at);
    assert!(upcoming.contains("trial ends"), "{upcoming}");
    let (_, said) = run(&w, &["sync", "--dry-run"], at);
    assert!(
        !said.contains("first charge (trial end)") && said.contains("its first charge stays on 2025-03-15"),
        "{said}"
    );
    w.tick("2025-03-03T11:05:00+09:00");
    w.tick("2025-03-14T10:00:00+09:00");
    assert!(w.ledger().is_empty(), "charged before the trial end it was promised: {:?}", w.ledger());
    w.tick("2025-03-15T10:00:00+09:00");
    assert_eq!((paid(&w, "c-tr"), paid(&w, "c-file")), (vec![20000], vec![20000]));
    w.assert_consistent();
}

/// Finding F8 (low): `subscriptions change --now` on a canceling subscription was refused with a false reason ("no
/// paid period covering"), and `--at-period-end` was accepted for a period that never opens (past its cancel date),
/// after which `show` reported a plan that never bills. Both are refused with the true reason, nothing changed; and
/// a trialing subscription's `--now` says it has paid nothing yet.
#[test]
fn a_change_that_would_bill_nothing_is_refused_with_its_true_reason() {
    let pro = "\n[[plans]]\nid = \"pro\"\nname = \"Monthly pro\"\namount = 20000\ninterval = \"1 month\"\n";
    let w = World::new(Setup { body: &format!("{MONTHLY}{pro}"), ..Default::default() });
    w.sandbox.register_customer("c-a", cards::APPROVE).unwrap();
    let add =
        ["subscriptions", "add", "--id", "a", "--customer-uid", "c-a", "--plan", "monthly", "--start", "2025-03-01"];
    assert_eq!(run(&w, &add, "2025-03-01T09:00:00+09:00").0, Some(0));
    let trial = ["subscriptions", "add", "--id", "tr", "--customer-uid", "c-a", "--plan", "monthly"];
    let (code, said) = run(
        &w,
        &[&trial[..], &["--start", "2025-03-01", "--trial-ends", "2025-03-20"]].concat(),
        "2025-03-01T09:00:00+09:00",
    );
    assert_eq!(code, Some(0), "{said}");
    w.tick("2025-03-01T10:00:00+09:00");
    assert_eq!(run(&w, &["cancel", "a", "--at-period-end"], "2025-03-05T10:00:00+09:00").0, Some(0));
    let change = |id: &str, when: &str| {
        run(&w, &["subscriptions", "change", id, "--plan", "pro", when], "2025-03-10T10:00:00+09:00")
    };
    let (code, said) = change("a", "--now");
    assert!(code == Some(1) && said.contains("canceling") && !said.contains("no paid period covering"), "{said}");
    let (code, said) = change("a", "--at-period-end");
    assert!(code == Some(1) && said.contains("canceling") && said.contains("never opens"), "{said}");
    let (code, said) = change("tr", "--now");
    assert!(code == Some(1) && said.contains("trialing and has paid nothing yet"), "{said}");
    let shown = text(&w.billd().args(["subscriptions", "show", "a"]).output().unwrap());
    assert!(shown.contains("plan     monthly") && !shown.contains("change "), "{shown}");
    w.assert_consistent();
}

/// Finding F1 (medium-low): before the first sync, `upcoming` and `subscriptions` showed a first charge for an entry
/// whose `cancel_at` comes before it (a charge that never happens); and the sync's `add` line said nothing of a
/// trial, term or cancel date. The preview shows no charge, and the line names them.
#[test]
fn the_preview_and_the_sync_say_what_a_cancel_date_and_a_trial_leave() {
    let plan = "\n[[plans]]\nid = \"t\"\nname = \"Trial\"\namount = 10000\ninterval = \"1 month\"\ntrial = \"14d\"\nperiods = 3\n";
    let body = format!("{plan}{}cancel_at = \"2025-03-10\"\n", sub("s1", "c1", "t", "2025-03-01"));
    let w = World::new(Setup { body: &body, ..Default::default() });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    let before = "2025-02-20T00:00:00+09:00";
    let (_, upcoming) = run(&w, &["upcoming", "--days", "60"], before);
    assert!(upcoming.contains("nothing to charge") && !upcoming.contains("10000 KRW"), "{upcoming}");
    let (_, listed) = run(&w, &["subscriptions"], before);
    assert!(listed.contains("not synced") && !listed.contains("2025-03-15"), "{listed}");
    let (_, synced) = run(&w, &["sync"], before);
    for needle in
        ["trial until 2025-03-15", "a term of 3 periods", "cancel_at 2025-03-10 (at or before its first charge"]
    {
        assert!(synced.contains(needle), "{needle}: {synced}");
    }
    for day in ["2025-03-10", "2025-03-15", "2025-04-15"] {
        w.tick(&format!("{day}T10:00:00+09:00"));
    }
    assert!(w.ledger().is_empty(), "charged after its cancel date");
    assert_eq!(w.status_of("s1"), "canceled");
}

/// Newcomer #7: after `subscriptions change --now` to another interval, `subscriptions show` listed the new plan's
/// first period as paid under a merchant_uid no payment has (the change's charge `…-c1` paid it), and in simulated
/// time the change's charge was made at the real time instead of `--as-of`. The command says how its amount was
/// computed; `show` says what paid the period; `charges` lists the charge at the change's instant.
#[test]
fn a_change_now_says_how_it_was_computed_and_what_paid_the_new_period() {
    let yearly = "\n[[plans]]\nid = \"yearly\"\nname = \"Yearly\"\namount = 99000\ninterval = \"1 year\"\n";
    let w = World::new(Setup { body: &format!("{MONTHLY}{yearly}"), ..Default::default() });
    w.sandbox.register_customer("c-u", cards::APPROVE).unwrap();
    let add =
        ["subscriptions", "add", "--id", "u", "--customer-uid", "c-u", "--plan", "monthly", "--start", "2025-03-01"];
    assert_eq!(run(&w, &add, "2025-03-01T09:00:00+09:00").0, Some(0));
    w.tick("2025-03-01T10:00:00+09:00");
    let (code, said) =
        run(&w, &["subscriptions", "change", "u", "--plan", "yearly", "--now"], "2025-03-11T10:00:00+09:00");
    assert_eq!(code, Some(0), "{said}");
    // 21 of 31 days left of 9900: 6707 credited (rounded up); 99000 - 6707 charged.
    assert!(said.contains("21d of the period's 31d are left") && said.contains("= 6707 KRW (rounded up)"), "{said}");
    assert!(said.contains("99000 - 6707 = 92293 KRW"), "{said}");
    let charges = text(&w.billd().args(["charges"]).output().unwrap());
    let line = charges.lines().find(|l| l.contains("billd-u-0-c1")).unwrap_or_default();
    assert!(line.starts_with("2025-03-11 10:00 +09:00"), "made at the real time: {charges}");
    let shown = text(&w.billd().args(["subscriptions", "show", "u"]).output().unwrap());
    assert!(shown.contains("paid by the change to plan yearly (its charge billd-u-0-c1"), "{shown}");
    assert_eq!(paid(&w, "c-u"), [9900, 92293]);
    w.paid_by_merchant_uid(); // never two payments of one merchant_uid
}

/// Newcomer #5: a plan's new price in the file reached the file's subscriptions but not those added by command or
/// import, silently. Those keep the price they were added with (grandfathering, as Stripe's prices do), and `billd
/// sync` says so.
#[test]
fn a_plans_new_price_reaches_the_files_subscriptions_and_the_sync_names_the_grandfathered() {
    let w = World::new(Setup {
        body: &format!("{MONTHLY}{}", sub("cfg", "c-cfg", "monthly", "2025-03-01")),
        ..Default::default()
    });
    for c in ["c-cfg", "c-cmd"] {
        w.sandbox.register_customer(c, cards::APPROVE).unwrap();
    }
    let add = [
        "subscriptions",
        "add",
        "--id",
        "cmd",
        "--customer-uid",
        "c-cmd",
        "--plan",
        "monthly",
        "--start",
        "2025-03-01",
    ];
    assert_eq!(run(&w, &add, "2025-03-01T09:00:00+09:00").0, Some(0));
    w.tick("2025-03-01T10:00:00+09:00");
    w.write_config(&Setup {
        body: &format!("{}{}", MONTHLY.replace("9900", "12900"), sub("cfg", "c-cfg", "monthly", "2025-03-01")),
        ..Default::default()
    });
    let (code, said) = run(&w, &["sync"], "2025-03-02T10:00:00+09:00");
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("amount 9900 KRW -> 12900 KRW"), "{said}");
    assert!(said.contains("1 subscription added by command or import on plan monthly is charged 9900 KRW"), "{said}");
    w.tick("2025-04-01T10:00:00+09:00");
    assert_eq!((paid(&w, "c-cfg"), paid(&w, "c-cmd")), (vec![9900, 12900], vec![9900, 9900]));
    w.assert_consistent();
}

/// Outside review (low): a subscription whose term was completed after an operator's pause showed the pause's
/// reason ("completed (paused by operator)"); it now says why it completed.
#[test]
fn a_completed_subscription_says_its_term_is_over_not_why_it_last_stopped() {
    const TERM: &str = r#"
[[plans]]
id = "t2"
name = "Two months"
amount = 10000
interval = "1 month"
periods = 2
"#;
    let w = World::new(Setup { body: &format!("{TERM}{}", sub("t", "c-t", "t2", "2025-03-10")), ..Default::default() });
    w.sandbox.register_customer("c-t", cards::APPROVE).unwrap();
    w.tick("2025-03-10T12:00:00+09:00");
    let (code, said) = run(&w, &["pause", "t"], "2025-03-20T12:00:00+09:00");
    assert_eq!(code, Some(0), "{said}");
    let (code, said) = run(&w, &["resume", "t", "--catch-up"], "2025-04-20T12:00:00+09:00");
    assert_eq!(code, Some(0), "{said}");
    w.tick("2025-04-20T12:00:00+09:00");
    assert_eq!(w.status_of("t"), "completed");
    assert_eq!(paid(&w, "c-t"), [10000, 10000]);
    let o = w.billd().args(["subscriptions", "show", "t", "--json"]).output().unwrap();
    let said = text(&o);
    assert!(o.status.success(), "{said}");
    let shown: serde_json::Value = serde_json::from_str(said.trim()).unwrap_or_else(|e| panic!("{e}: {said}"));
    let why = shown["why"].as_str().unwrap_or_default();
    assert!(why.contains("term is over"), "{why:?} in {said}");
    let o = w.billd().args(["subscriptions", "--as-of", "2025-04-20T12:00:00+09:00"]).output().unwrap();
    let listed = text(&o);
    assert!(o.status.success(), "{listed}");
    assert!(!listed.contains("paused by operator") && listed.contains("term is over"), "{listed}");
}
