//! An outside review of issue 25's lifecycle (pause until a date, reactivation, cancel at period end, the catch-up
//! window after a restored backup, the commands that charge one subscription now), end to end with the real binary
//! and the sandbox. Each test reproduces what the reviewers found.

mod common;

use common::{MONTHLY as PLANS, Setup, World, cards, sub};
use serde_json::Value;

/// The merchant_uids paid at the sandbox by `customer`, sorted.
fn paid(w: &World, customer: &str) -> Vec<String> {
    let paid = w.paid_by_merchant_uid().into_values().filter(|e| e.customer_uid.as_deref() == Some(customer));
    let mut m: Vec<String> = paid.map(|e| e.merchant_uid).collect();
    m.sort();
    m
}

/// Runs billd with `args` and returns its exit code and what it said (stdout and stderr).
fn run(w: &World, args: &[&str]) -> (Option<i32>, String) {
    let o = w.billd().args(args).output().unwrap();
    (o.status.code(), common::text(&o))
}

/// The states of a subscription's periods, in order.
fn states(w: &World, id: &str) -> Vec<(i64, String)> {
    let db = w.db();
    let mut st = db.prepare("SELECT period, state FROM periods WHERE subscription_id = ?1 ORDER BY period").unwrap();
    st.query_map([id], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
}

/// `pause --until D` when no pass runs on D (billd down, or the daemon asleep): the pause ends on D all the same.
/// Only the periods due while paused (before D) are skipped; those due at or after D are charged as any period
/// missed while billd was down. Before, the restart was counted from the pass's instant and every period due
/// after D was silently dropped. The pause's end shows everywhere (`subscriptions show`, the listing and its JSON,
/// `upcoming` with what it charges after it), and a pass wakes for it (`next_wake`).
#[test]
fn a_pause_ends_on_its_date_even_when_no_pass_runs_that_day() {
    let text = format!("{PLANS}{}", sub("p", "c-p", "monthly", "2025-01-01"));
    let w = World::new(Setup { body: &text, ..Default::default() });
    w.sandbox.register_customer("c-p", cards::APPROVE).unwrap();
    w.tick("2025-01-01T10:00:00+09:00");
    let (code, said) = run(&w, &["pause", "p", "--until", "2025-02-15", "--as-of", "2025-01-20T00:00:00+09:00"]);
    assert!(code == Some(0) && said.contains("resumes by itself at 2025-02-15 00:00 +09:00"), "{said}");

    // Shown: the end of the pause, and what follows it.
    let (_, show) = run(&w, &["subscriptions", "show", "p"]);
    assert!(show.contains("2025-02-15 00:00 +09:00"), "the pause's end is not shown: {show}");
    assert!(show.contains("period 2") && show.contains("2025-03-01 10:00 +09:00"), "what follows: {show}");
    let (_, listed) = run(&w, &["subscriptions", "--as-of", "2025-01-20T12:00:00+09:00"]);
    let row = listed.lines().find(|l| l.starts_with("p ")).unwrap_or_default();
    assert!(row.contains("2025-02-15"), "WHY without the pause's end: {listed}");
    let (_, json) = run(&w, &["subscriptions", "--json", "--as-of", "2025-01-20T12:00:00+09:00"]);
    let rows: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(rows[0]["resume_at"], "2025-02-15T00:00:00+09:00", "{json}");
    let (_, up) = run(&w, &["upcoming", "--days", "120", "--json", "--as-of", "2025-01-20T12:00:00+09:00"]);
    let items: Value = serde_json::from_str(&up).unwrap();
    let periods: Vec<u64> = items.as_array().unwrap().iter().map(|i| i["period"].as_u64().unwrap()).collect();
    assert_eq!(periods, [2, 3, 4], "upcoming leaves out what follows the pause (or lists February's): {up}");

    // A pass while paused wakes for the pause's end (the only subscription is paused).
    let out = w.tick("2025-01-21T10:00:00+09:00");
    let said = World::stderr(&out);
    assert!(said.contains("next_wake=2025-02-14T15:00:00+00:00"), "{said}");

    // billd is down from then until April 5: March 1 and April 1 fell due after the pause ended.
    let out = w.tick("2025-04-05T10:00:00+09:00");
    assert!(World::stderr(&out).contains("subscription.resumed"), "{}", World::stderr(&out));
    assert_eq!(paid(&w, "c-p"), ["billd-p-0", "billd-p-2", "billd-p-3"], "periods due after the pause dropped");
    w.tick("2025-05-01T10:00:00+09:00");
    assert_eq!(paid(&w, "c-p"), ["billd-p-0", "billd-p-2", "billd-p-3", "billd-p-4"]);
    w.assert_consistent();
}

/// A subscription dunning suspended is restarted by `billd reactivate`, never by `resume` or a pause's end:
/// `subscriptions show` says so, `resume` and `pause --until` refuse it (before, `resume` restarted it without its
/// overdue period, after which `reactivate --charge-now` was refused, and `pause --until` became a reactivation on
/// that date), `customers register --replace-key` names the command. `reactivate --charge-now` charges that one
/// subscription, not every other one due (before, it ran a full pass), and says which periods it does not charge.
#[test]
fn a_subscription_dunning_suspended_is_restarted_by_reactivate_only() {
    let text =
        format!("{PLANS}{}{}", sub("s", "c-s", "monthly", "2025-01-10"), sub("o", "c-o", "monthly", "2025-01-10"));
    let dunning = "retry_after = [\"1d\"]\non_exhausted = \"suspend\"";
    let w = World::new(Setup { body: &text, dunning, ..Default::default() });
    w.sandbox.register_customer("c-s", cards::DECLINE_INSUFFICIENT_FUNDS).unwrap();
    w.sandbox.register_customer("c-o", cards::APPROVE).unwrap();
    w.tick("2025-01-10T10:00:00+09:00");
    w.tick("2025-01-11T10:00:00+09:00");
    assert_eq!(w.status_of("s"), "suspended");

    let (_, show) = run(&w, &["subscriptions", "show", "s"]);
    assert!(show.contains("billd reactivate s") && !show.contains("billd resume s"), "{show}");
    let (code, said) = run(&w, &["pause", "s", "--until", "2025-03-01", "--as-of", "2025-01-12T00:00:00+09:00"]);
    assert!(code == Some(1) && said.contains("billd reactivate s"), "{said}");
    let (code, said) = run(&w, &["resume", "s", "--as-of", "2025-01-12T00:00:00+09:00"]);
    assert!(code == Some(1) && said.contains("billd reactivate s"), "{said}");
    let (code, said) = run(&w, &["retry", "s", "--as-of", "2025-01-12T00:00:00+09:00"]);
    assert!(code == Some(1) && said.contains("billd reactivate s"), "not `resume it first`: {said}");
    assert_eq!(w.status_of("s"), "suspended");

    // The customer registers a card that pays.
    let card = common::card_json(cards::APPROVE);
    let o = common::with_card(&w, &["customers", "register", "c-s", "--replace-key"], &card);
    let said = common::text(&o);
    assert!(o.status.success() && said.contains("billd reactivate s --charge-now"), "{said}");

    // February 10, noon: "o" is due (10:00) but not charged by this command; "s"'s overdue period is, and its
    // period due this morning is said not to be.
    let (code, said) = run(&w, &["reactivate", "s", "--charge-now", "--as-of", "2025-02-10T12:00:00+09:00"]);
    assert!(code == Some(0) && said.contains("period 0 (billd-s-0) paid"), "{said}");
    assert!(said.contains("not charged") && said.contains("2025-02-10 10:00 +09:00"), "{said}");
    assert_eq!(paid(&w, "c-o"), ["billd-o-0"], "reactivate charged another subscription");
    w.tick("2025-02-10T12:00:00+09:00");
    assert_eq!(paid(&w, "c-o"), ["billd-o-0", "billd-o-1"]);
    assert_eq!(paid(&w, "c-s"), ["billd-s-0"]);
    w.tick("2025-03-10T10:00:00+09:00");
    assert_eq!(paid(&w, "c-s"), ["billd-s-0", "billd-s-2"]);
    w.assert_consistent();
}

/// `resume` and `reactivate` tell the truth about what is left to bill: a subscription canceled at period end stays
/// canceling after a pause (before: "next charge 2025-04-01", never made, and `active`); one whose fixed term ran out
/// while paused is completed at once (before: `active`, announcing a charge); one dunning canceled with nothing left
/// in its term is not reactivated without `--charge-now`. `cancel --at-period-end` names the end of the period in
/// force and the listings show the cancel date; afterwards WHY says "canceled at period end".
#[test]
fn resume_and_reactivate_never_announce_a_charge_past_the_end() {
    let text = format!(
        "{PLANS}{}periods = 2\n{}periods = 1\n",
        sub("fx", "c-fx", "monthly", "2025-03-01"),
        sub("k", "c-k", "monthly", "2025-03-01")
    );
    let dunning = "retry_after = [\"1d\"]\non_exhausted = \"cancel\"";
    let w = World::new(Setup { body: &text, dunning, ..Default::default() });
    for c in ["c-fx", "c-d"] {
        w.sandbox.register_customer(c, cards::APPROVE).unwrap();
    }
    w.sandbox.register_customer("c-k", cards::DECLINE_INSUFFICIENT_FUNDS).unwrap();
    let add = ["subscriptions", "add", "--id", "d", "--customer-uid", "c-d", "--plan", "monthly"];
    let (code, said) =
        run(&w, &[&add[..], &["--start", "2025-03-01", "--as-of", "2025-03-01T09:00:00+09:00"]].concat());
    assert_eq!(code, Some(0), "{said}");
    w.tick("2025-03-01T10:00:00+09:00");
    w.tick("2025-03-02T10:00:00+09:00");
    assert_eq!(w.status_of("k"), "canceled");

    let (code, said) = run(&w, &["cancel", "d", "--at-period-end", "--as-of", "2025-03-02T10:00:00+09:00"]);
    assert!(code == Some(0) && said.contains("2025-04-01 10:00 +09:00"), "not the period's end: {said}");
    let (_, listed) = run(&w, &["subscriptions", "--as-of", "2025-03-02T11:00:00+09:00"]);
    let row = listed.lines().find(|l| l.starts_with("d ")).unwrap_or_default();
    assert!(row.contains("canceling") && row.contains("2025-04-01"), "no cancel date: {listed}");
    let (_, show) = run(&w, &["subscriptions", "show", "d"]);
    assert!(show.contains("2025-04-01"), "no cancel date: {show}");

    // Paused and resumed before its end: it is still canceling, and nothing more is charged.
    run(&w, &["pause", "d", "--as-of", "2025-03-03T10:00:00+09:00"]);
    let (code, said) = run(&w, &["resume", "d", "--as-of", "2025-03-04T10:00:00+09:00"]);
    assert!(code == Some(0) && !said.contains("next charge 2025-04-01"), "a charge that never comes: {said}");
    assert_eq!(w.status_of("d"), "canceling");

    // A term that ran out while paused: completed at once.
    run(&w, &["pause", "fx", "--as-of", "2025-03-10T10:00:00+09:00"]);
    let (code, said) = run(&w, &["resume", "fx", "--as-of", "2025-04-05T10:00:00+09:00"]);
    assert!(code == Some(0) && said.contains("completed") && !said.contains("next charge"), "{said}");
    assert_eq!(w.status_of("fx"), "completed");

    // Dunning canceled, nothing left in its term: reactivating would bill nothing.
    let (code, said) = run(&w, &["resume", "k", "--as-of", "2025-03-10T10:00:00+09:00"]);
    assert!(code == Some(1) && said.contains("billd reactivate k"), "{said}");
    let (code, said) = run(&w, &["reactivate", "k", "--as-of", "2025-03-10T10:00:00+09:00"]);
    assert!(code == Some(1) && said.contains("--charge-now"), "{said}");
    assert_eq!(w.status_of("k"), "canceled");
    w.sandbox.register_customer("c-k", cards::APPROVE).unwrap();
    let (code, said) = run(&w, &["reactivate", "k", "--charge-now", "--as-of", "2025-03-10T10:00:00+09:00"]);
    assert!(code == Some(0) && said.contains("period 0 (billd-k-0) paid"), "{said}");
    assert!(!said.contains("WARN subscription.completed"), "a term's end is no warning: {said}");
    assert_eq!(w.status_of("k"), "completed");

    for day in ["2025-04-06", "2025-05-02"] {
        w.tick(&format!("{day}T10:00:00+09:00"));
    }
    assert_eq!(paid(&w, "c-d"), ["billd-d-0"]);
    assert_eq!(paid(&w, "c-fx"), ["billd-fx-0"]);
    assert_eq!(w.status_of("d"), "canceled");
    let (_, listed) = run(&w, &["subscriptions"]);
    let row = listed.lines().find(|l| l.starts_with("d ")).unwrap_or_default();
    assert!(row.contains("canceled at period end") && !row.contains("its cancel_at"), "{listed}");
    w.assert_consistent();
}

/// `catch_up_window` after a backup is restored: the periods the gateway paid after the backup was taken are not
/// in the restored book. A period older than the window is looked up by its merchant_uid before it is skipped:
/// one the gateway paid is recorded paid (and can be refunded through billd); one it did not is skipped. Before,
/// every one was recorded skipped, "never charged", without a lookup.
#[test]
fn a_restored_book_records_the_periods_the_gateway_paid_instead_of_skipping_them() {
    let weekly = "\n[[plans]]\nid = \"weekly\"\nname = \"Weekly plan\"\namount = 1000\ninterval = \"1 week\"\n";
    let text = format!("{weekly}{}", sub("s1", "c1", "weekly", "2025-01-06"));
    let w = World::new(Setup { body: &text, ..Default::default() });
    std::fs::write(
        &w.config,
        std::fs::read_to_string(&w.config).unwrap().replace("[billing]\n", "[billing]\ncatch_up_window = \"10d\"\n"),
    )
    .unwrap();
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    w.tick("2025-01-06T10:00:00+09:00");
    let backup = w.dir.path().join("backup.sqlite3");
    w.db().execute("VACUUM INTO ?1", [backup.to_str().unwrap()]).unwrap();
    w.tick("2025-01-13T10:00:00+09:00");
    w.tick("2025-01-20T10:00:00+09:00");
    // The book is restored from the backup (periods 1 and 2, paid at the gateway, are not in it).
    let db = w.dir.path().join("billd.sqlite3");
    for side in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{side}", db.display()));
    }
    std::fs::rename(&backup, &db).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // February 10: periods 1-3 (January 13, 20, 27) are older than 10 days; 4 and 5 are inside the window.
    let out = w.tick("2025-02-10T10:00:00+09:00");
    let said = World::stderr(&out);
    let got = states(&w, "s1");
    let want: Vec<(i64, String)> = [(0, "paid"), (1, "paid"), (2, "paid"), (3, "skipped"), (4, "paid"), (5, "paid")]
        .iter()
        .map(|(p, s)| (*p, s.to_string()))
        .collect();
    assert_eq!(got, want, "{said}");
    assert_eq!(said.matches("event=\"period.skipped\"").count(), 1, "{said}");
    w.assert_consistent();
    // A period found paid is billd's charge like any other: refundable.
    let (code, refund) = run(&w, &["refund", "billd-s1-1", "--reason", "restored book"]);
    assert_eq!(code, Some(0), "{refund}");
}

/// `retry` and `subscriptions add --charge-now` charge their one subscription now, not every other one due (before,
/// each ran a full pass and charged every subscription due at that instant). A term's end is logged at INFO.
#[test]
fn a_command_that_charges_one_subscription_charges_no_other() {
    let text = format!(
        "{PLANS}{}{}{}periods = 1\n",
        sub("a", "c-a", "monthly", "2025-01-10"),
        sub("b", "c-b", "monthly", "2025-01-12"),
        sub("t", "c-t", "monthly", "2025-01-10")
    );
    let w = World::new(Setup { body: &text, ..Default::default() });
    w.sandbox.register_customer("c-a", cards::DECLINE_INSUFFICIENT_FUNDS).unwrap();
    for c in ["c-b", "c-t", "c-n"] {
        w.sandbox.register_customer(c, cards::APPROVE).unwrap();
    }
    let out = w.tick("2025-01-10T10:00:00+09:00");
    let said = World::stderr(&out);
    assert!(said.contains("INFO subscription.completed") && !said.contains("WARN subscription.completed"), "{said}");
    assert_eq!(w.status_of("a"), "past_due");
    w.sandbox.register_customer("c-a", cards::APPROVE).unwrap();
    // January 12, noon: b's first period is due (10:00) and billd has not run since.
    let (code, said) = run(&w, &["retry", "a", "--as-of", "2025-01-12T12:00:00+09:00"]);
    assert!(code == Some(0) && said.contains("paid"), "{said}");
    assert!(paid(&w, "c-b").is_empty(), "retry charged another subscription");
    let add = ["subscriptions", "add", "--id", "n", "--customer-uid", "c-n", "--plan", "monthly", "--charge-now"];
    let (code, said) = run(&w, &[&add[..], &["--as-of", "2025-01-12T13:00:00+09:00"]].concat());
    assert!(code == Some(0) && said.contains("first charge paid"), "{said}");
    assert!(paid(&w, "c-b").is_empty(), "subscriptions add --charge-now charged another subscription");
    w.tick("2025-01-12T14:00:00+09:00");
    assert_eq!(paid(&w, "c-b"), ["billd-b-0"]);
    assert_eq!(paid(&w, "c-a"), ["billd-a-0"]);
    w.assert_consistent();
}

/// README review, 5: `pause --until` past the subscription's cancel date (without --catch-up: what falls due while
/// paused is skipped). The pause said it "resumes by itself" on a date after the cancel, the listings said so after
/// the cancel date, and at the pause's end the app got `subscription.resumed` (active) and `subscription.canceled`
/// at the same instant. Now the command says the cancel date comes first, a pass on the cancel date cancels it
/// while paused (the daemon wakes for it), and it is never resumed; a pass only at the pause's end (billd down
/// meanwhile) cancels it too, without a resume.
#[test]
fn a_pause_past_its_cancel_date_ends_at_the_cancel_date_and_never_resumes() {
    for pass_on_the_cancel_date in [true, false] {
        let text = format!("{PLANS}{}cancel_at = \"2025-02-01\"\n", sub("p", "c-p", "monthly", "2025-01-01"));
        let w = World::new(Setup { body: &text, ..Default::default() });
        w.sandbox.register_customer("c-p", cards::APPROVE).unwrap();
        w.tick("2025-01-01T10:00:00+09:00");
        let (code, said) = run(&w, &["pause", "p", "--until", "2025-03-15", "--as-of", "2025-01-20T00:00:00+09:00"]);
        assert!(code == Some(0) && said.contains("comes first") && !said.contains("resumes by itself"), "{said}");
        // The daemon's next wake is the cancel date (2025-02-01 00:00 KST), not the pause's end.
        let out = w.tick("2025-01-21T10:00:00+09:00");
        assert!(World::stderr(&out).contains("next_wake=2025-01-31T15:00:00+00:00"), "{}", World::stderr(&out));
        if pass_on_the_cancel_date {
            w.tick("2025-02-01T10:00:00+09:00");
            assert_eq!(w.status_of("p"), "canceled");
        }
        w.tick("2025-03-15T10:00:00+09:00");
        assert_eq!(w.status_of("p"), "canceled");
        let resumed: i64 = w
            .db()
            .query_row("SELECT count(*) FROM outbox WHERE type = 'subscription.resumed'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(resumed, 0, "canceled at its cancel date, and announced resumed ({pass_on_the_cancel_date})");
        w.tick("2025-04-01T10:00:00+09:00");
        assert_eq!(paid(&w, "c-p"), ["billd-p-0"], "charged past the cancel date");
    }
}
