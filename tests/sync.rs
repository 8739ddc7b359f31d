//! Applying schedules.toml to the database: inserts, plan changes from the next unpaid period, cancels, guards.

mod common;

use common::{MONTHLY, Setup, World, cards, sub};

fn plan(amount: i64, interval: &str) -> String {
    format!("\n[[plans]]\nid = \"monthly\"\nname = \"Monthly plan\"\namount = {amount}\ninterval = \"{interval}\"\n")
}

fn rewrite(w: &World, body: &str) {
    w.write_config(&Setup { body, ..Default::default() });
}

fn amounts(w: &World, customer: &str) -> Vec<i64> {
    w.attempts_for(customer).iter().map(|e| e.amount).collect()
}

#[test]
fn amount_change_applies_from_the_next_unpaid_period() {
    let w = World::new(Setup {
        body: &format!("{}{}", plan(9900, "1 month"), sub("s1", "c1", "monthly", "2025-01-05")),
        ..Default::default()
    });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    w.tick("2025-01-05T10:00:00+09:00");
    rewrite(&w, &format!("{}{}", plan(12000, "1 month"), sub("s1", "c1", "monthly", "2025-01-05")));
    w.tick("2025-02-05T10:00:00+09:00");
    assert_eq!(amounts(&w, "c1"), [9900, 12000]);
}

#[test]
fn a_period_in_dunning_keeps_the_amount_it_opened_with() {
    let w = World::new(Setup {
        body: &format!("{}{}", plan(9900, "1 month"), sub("s1", "c1", "monthly", "2025-01-05")),
        ..Default::default()
    });
    w.sandbox.register_customer("c1", &cards::decline_first(1)).unwrap();
    w.tick("2025-01-05T10:00:00+09:00");
    rewrite(&w, &format!("{}{}", plan(12000, "1 month"), sub("s1", "c1", "monthly", "2025-01-05")));
    w.tick("2025-01-06T10:00:00+09:00");
    w.tick("2025-02-05T10:00:00+09:00");
    assert_eq!(amounts(&w, "c1"), [9900, 9900, 12000]);
    assert_eq!(w.paid_for("c1"), ["billd-s1-0", "billd-s1-1"]);
}

#[test]
fn interval_change_keeps_the_next_due_date() {
    let w = World::new(Setup {
        body: &format!("{}{}", plan(9900, "1 month"), sub("s1", "c1", "monthly", "2025-01-31")),
        ..Default::default()
    });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    w.tick("2025-01-31T10:00:00+09:00");
    rewrite(&w, &format!("{}{}", plan(9900, "2 weeks"), sub("s1", "c1", "monthly", "2025-01-31")));
    w.tick_daily("2025-02-01", "2025-03-15", "10:00:00+09:00");
    let dates: Vec<String> = w.due_dates("s1", chrono_tz::Asia::Seoul).iter().map(|d| d[..10].to_string()).collect();
    assert_eq!(dates, ["2025-01-31", "2025-02-28", "2025-03-14"]);
}

#[test]
fn removed_or_canceled_entries_are_canceled_and_history_kept() {
    let both = format!(
        "{MONTHLY}{}{}{}",
        sub("s1", "c1", "monthly", "2025-01-05"),
        sub("s2", "c2", "monthly", "2025-01-05"),
        sub("s3", "c3", "monthly", "2025-01-05")
    );
    let w = World::new(Setup { body: &both, ..Default::default() });
    for c in ["c1", "c2", "c3"] {
        w.sandbox.register_customer(c, cards::APPROVE).unwrap();
    }
    w.tick("2025-01-05T10:00:00+09:00");
    let body = format!(
        "{MONTHLY}{}{}\nstatus = \"canceled\"\n",
        sub("s1", "c1", "monthly", "2025-01-05"),
        sub("s3", "c3", "monthly", "2025-01-05").trim_end()
    );
    // Two cancels of three: above 10%, so the pass refuses the sync, and a pass whose config was refused charges
    // nothing (issue 21, 1): it exits non-zero.
    rewrite(&w, &body);
    let out = w.billd().args(["tick", "--as-of", "2025-02-05T10:00:00+09:00"]).output().unwrap();
    assert!(!out.status.success(), "a refused config's tick exited 0");
    assert!(World::stderr(&out).contains("refusing"), "{}", World::stderr(&out));
    assert!(World::stderr(&out).contains("config refused, nothing"), "{}", World::stderr(&out));
    assert_eq!(w.paid_for("c1").len() + w.paid_for("c2").len(), 2, "charged under a refused config");
    assert_eq!(w.status_of("s2"), "active");
    let sync = w.billd().arg("sync").output().unwrap();
    assert_eq!(sync.status.code(), Some(1), "billd sync refuses too");
    // A dry run says so too (a new operator's dry run said "nothing changed" and exited 0, then the sync refused).
    let dry = w.billd().args(["sync", "--dry-run"]).output().unwrap();
    assert_eq!(dry.status.code(), Some(1), "{}", World::stderr(&dry));
    assert!(
        World::stderr(&dry).contains("refused") && World::stderr(&dry).contains("--force"),
        "{}",
        World::stderr(&dry)
    );
    let dry = w.billd().args(["sync", "--dry-run", "--force"]).output().unwrap();
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(text.contains("cancel  s2") && text.contains("cancel  s3"), "{text}");
    assert_eq!(w.status_of("s2"), "active", "a dry run changes nothing");
    assert!(w.billd().args(["sync", "--force"]).status().unwrap().success());
    assert_eq!(w.status_of("s2"), "canceled");
    assert_eq!(w.status_of("s3"), "canceled");
    w.tick("2025-03-05T10:00:00+09:00");
    assert_eq!(w.paid_for("c1").len(), 3, "February (missed while refused) and March");
    assert_eq!(w.paid_for("c2").len(), 1, "history kept, no new charges");
    let kept: i64 =
        w.db().query_row("SELECT count(*) FROM attempts WHERE subscription_id = 's2'", [], |r| r.get(0)).unwrap();
    assert_eq!(kept, 1);
    // Listing it again does not bring a canceled subscription back.
    rewrite(&w, &both);
    w.tick("2025-04-05T10:00:00+09:00");
    assert_eq!(w.status_of("s2"), "canceled");
}

#[test]
fn one_removed_subscription_is_canceled_by_the_pass() {
    let mut body = MONTHLY.to_string();
    for i in 0..3 {
        body += &sub(&format!("s{i}"), "c1", "monthly", "2025-01-05");
    }
    let w = World::new(Setup { body: &body, ..Default::default() });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    w.tick("2025-01-05T10:00:00+09:00");
    let fewer =
        format!("{MONTHLY}{}{}", sub("s0", "c1", "monthly", "2025-01-05"), sub("s1", "c1", "monthly", "2025-01-05"));
    rewrite(&w, &fewer);
    w.tick("2025-02-05T10:00:00+09:00");
    assert_eq!(w.status_of("s2"), "canceled");
    assert_eq!(w.paid_for("c1").len(), 5);
    // The reason, kept and sent to the merchant's app with the event, names the file, not where it lives on the
    // server (issue 26 review).
    let reason: String = w
        .db()
        .query_row(
            "SELECT snapshot FROM outbox
              WHERE type = 'subscription.canceled' AND subscription_id = 's2'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let dir = w.config.parent().unwrap().display().to_string();
    assert!(reason.contains("removed from") && !reason.contains(&dir), "{reason}");
}

#[test]
fn a_config_entry_with_the_id_of_a_manual_subscription_does_not_block_the_sync() {
    let w = World::new(Setup { body: MONTHLY, ..Default::default() });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    let add = w
        .billd()
        .args([
            "subscriptions",
            "add",
            "--id",
            "s1",
            "--customer-uid",
            "c1",
            "--plan",
            "monthly",
            "--start",
            "2025-01-05",
            "--catch-up",
        ])
        .output()
        .unwrap();
    assert!(add.status.success(), "{}", String::from_utf8_lossy(&add.stderr));
    let body =
        format!("{MONTHLY}{}{}", sub("s1", "c9", "monthly", "2025-01-05"), sub("s2", "c1", "monthly", "2025-01-05"));
    rewrite(&w, &body);
    let out = w.tick("2025-01-05T10:00:00+09:00");
    assert!(World::stderr(&out).contains("already exists in the database"), "{}", World::stderr(&out));
    // The manual subscription keeps its own customer; the new config entry is still applied.
    let mut paid = w.paid_for("c1");
    paid.sort();
    assert_eq!(paid, ["billd-s1-0", "billd-s2-0"]);
}

/// Issue 23, point 3: after `charge_time` changed from 09:30 to 11:00, `sync` said "nothing to change", the next
/// charge stayed at 09:30 and later ones moved; a `resume` with another `--config` re-stamped a next charge with
/// its own charge_time. Now a sync shows the change and re-times every next charge not yet claimed, and a command
/// whose config has another clock than the one in force stamps nothing.
#[test]
fn a_new_charge_time_is_applied_by_sync_and_never_by_another_config() {
    let start = (chrono::Utc::now() + chrono::Duration::days(3)).date_naive();
    let body = format!("{MONTHLY}{}", sub("s1", "c1", "monthly", &start.to_string()));
    let w = World::new(Setup { body: &body, charge_time: "09:30", ..Default::default() });
    let text = |o: std::process::Output| {
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    };
    assert!(w.billd().arg("sync").status().unwrap().success());
    let due = || -> String {
        let t: i64 =
            w.db().query_row("SELECT next_due_at FROM subscriptions WHERE id = 's1'", [], |r| r.get(0)).unwrap();
        chrono::DateTime::from_timestamp(t, 0)
            .unwrap()
            .with_timezone(&chrono_tz::Asia::Seoul)
            .format("%Y-%m-%d %H:%M")
            .to_string()
    };
    assert_eq!(due(), format!("{start} 09:30"));
    w.write_config(&Setup { body: &body, charge_time: "11:00", ..Default::default() });
    let dry = text(w.billd().args(["sync", "--dry-run"]).output().unwrap());
    assert!(dry.contains("09:30") && dry.contains("11:00") && !dry.contains("nothing to change"), "{dry}");
    assert_eq!(due(), format!("{start} 09:30"), "a dry run changed something");
    let out = text(w.billd().arg("sync").output().unwrap());
    assert!(out.contains("re-timed") && !out.contains("nothing to change"), "{out}");
    assert_eq!(due(), format!("{start} 11:00"));
    // A pause, then a resume with a config of another charge_time: refused, nothing re-stamped.
    assert!(w.billd().args(["pause", "s1"]).status().unwrap().success());
    w.write_config(&Setup { body: &body, charge_time: "10:00", ..Default::default() });
    let out = w.billd().args(["resume", "s1"]).output().unwrap();
    let said = text(out.clone());
    assert!(!out.status.success() && said.contains("billd sync"), "{said}");
    assert_eq!(due(), format!("{start} 11:00"));
}
