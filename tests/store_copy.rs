//! Issue 27: `billd store copy` moves a whole book between SQLite and PostgreSQL (a throwaway cluster the test
//! starts: `tests/common/pg.rs`), with the real binary and the sandbox: what the copies list is what the original
//! lists, billing goes on from a copy without charging anyone twice, and a copy is refused onto a book that holds
//! anything or while a daemon uses the source.

mod common;
#[path = "common/pg.rs"]
mod pg;

use common::{MONTHLY, Setup, World, cards, sub, text, wait_for};
use std::process::{Output, Stdio};

/// A book with a few months of history: charges paid, declines retried and a subscription canceled by dunning.
fn world() -> World {
    let body = format!(
        "{MONTHLY}{}{}{}",
        sub("s1", "c1", "monthly", "2025-01-10"),
        sub("s2", "c2", "monthly", "2025-01-15"),
        sub("s3", "c3", "monthly", "2025-02-01"),
    );
    let w = World::new(Setup { body: &body, ..Default::default() });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    w.sandbox.register_customer("c2", cards::DECLINE_INSUFFICIENT_FUNDS).unwrap();
    w.sandbox.register_customer("c3", cards::APPROVE).unwrap();
    w.tick_daily("2025-01-10", "2025-03-20", "10:00:00+09:00");
    w
}

/// `billd ARGS` on the book `database` (the world's config otherwise).
fn on(w: &World, database: &str, args: &[&str]) -> Output {
    w.billd().env("BILLD_BILLING__DATABASE", database).args(args).output().unwrap()
}

/// What a book lists, as JSON: its charges, subscriptions and webhook events.
fn listed(w: &World, database: &str) -> Vec<String> {
    ["charges", "subscriptions", "webhooks"]
        .iter()
        .map(|cmd| {
            let out = on(w, database, &[cmd, "--json"]);
            assert!(out.status.success(), "{cmd} on {database}: {}", text(&out));
            String::from_utf8(out.stdout).unwrap()
        })
        .collect()
}

fn copy(w: &World, from: &str, to: &str) -> Output {
    w.billd().current_dir(w.dir.path()).args(["store", "copy", "--from", from, "--to", to]).output().unwrap()
}

#[test]
fn a_book_copied_to_postgresql_and_back_lists_the_same_and_bills_on_from_the_copy() {
    let Some(db) = pg::database() else { return };
    let w = world();
    let sqlite = w.dir.path().join("billd.sqlite3").display().to_string();
    let back = w.dir.path().join("back.sqlite3").display().to_string();
    let before = listed(&w, &sqlite);
    assert!(before[0].contains("\"paid\"") && before[0].contains("\"failed\""), "a history to copy: {}", before[0]);

    let out = copy(&w, &sqlite, db.url());
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("attempts"), "the counts are shown: {}", text(&out));
    assert_eq!(listed(&w, db.url()), before, "PostgreSQL lists what SQLite did");
    let out = copy(&w, db.url(), &back);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(listed(&w, &back), before, "the copy back lists the same");

    // Billing goes on from the copy (its new rows take ids after the copied ones), charging each due period once.
    let paid_before = w.paid_for("c1").len();
    for day in ["2025-04-10", "2025-05-10"] {
        let out = on(&w, db.url(), &["tick", "--simulate", "--as-of", &format!("{day}T10:00:00+09:00")]);
        assert!(out.status.success(), "tick on the copy: {}", text(&out));
    }
    assert_eq!(w.paid_for("c1").len(), paid_before + 2, "April and May charged once each from the copy");
    let after = listed(&w, db.url());
    assert!(after[0].matches("\"paid\"").count() > before[0].matches("\"paid\"").count());
}

#[test]
fn a_copy_is_refused_onto_a_book_that_holds_anything_and_while_a_daemon_uses_the_source() {
    let Some(db) = pg::database() else { return };
    let w = world();
    let sqlite = w.dir.path().join("billd.sqlite3").display().to_string();
    assert!(copy(&w, &sqlite, db.url()).status.success());
    let out = copy(&w, &sqlite, db.url());
    assert!(!out.status.success(), "copied again onto a full book: {}", text(&out));
    assert!(text(&out).contains("is not empty") && text(&out).contains("nothing was copied"), "{}", text(&out));
    let out = copy(&w, &sqlite, &sqlite);
    assert!(!out.status.success() && text(&out).contains("same book"), "{}", text(&out));

    // A daemon on the source: nothing is copied (the target stays empty and can take the copy later).
    let Some(empty) = pg::database() else { return };
    let mut daemon = w
        .billd()
        .env("BILLD_BILLING__DATABASE", db.url())
        .args(["run", "--as-of", "2025-03-20T10:00:00+09:00", "--simulate"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the daemon to join the book", || {
        let out = on(&w, db.url(), &["status", "--json"]);
        text(&out).contains("\"running\": true")
    });
    let out = copy(&w, db.url(), empty.url());
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    assert!(!out.status.success(), "copied from a book a daemon uses: {}", text(&out));
    assert!(text(&out).contains("in use by a `billd run`"), "{}", text(&out));
    assert_eq!(
        empty.sql("SELECT to_regclass('subscriptions') IS NULL OR (SELECT count(*) FROM subscriptions) = 0"),
        "t"
    );
}
