//! Card registration, key-in payments and one-step subscriptions against the sandbox; card data never leaks.

mod common;

use common::{MONTHLY, Setup, World, card_json, cards, text, with_card};

fn world() -> World {
    World::new(Setup { body: MONTHLY, ..Default::default() })
}

#[test]
fn register_show_reissue_and_delete_a_billing_key() {
    let w = world();
    let out = with_card(&w, &["customers", "register", "cust-1", "--pg", "kcp"], &card_json("4242-4242-4242-4242"));
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("424242******4242"), "{}", text(&out));
    let show = w.billd().args(["customers", "show", "cust-1"]).output().unwrap();
    assert!(show.status.success(), "{}", text(&show));
    assert!(text(&show).contains("424242******4242"));
    // Times in billing.timezone (Asia/Seoul here), like every listing (issue 23, point 5): not UTC.
    let inserted = text(&show).lines().find(|l| l.starts_with("inserted")).unwrap_or_default().to_string();
    assert!(inserted.ends_with("+09:00") && !inserted.contains('T'), "{}", text(&show));
    // Re-issue for the same customer_uid with another card: refused unless asked (issue 21, point 4), then the key
    // points at the new card.
    let refused = with_card(&w, &["customers", "register", "cust-1"], &card_json(cards::DECLINE_LOST));
    assert!(!refused.status.success() && text(&refused).contains("--replace-key"), "{}", text(&refused));
    let again = with_card(&w, &["customers", "register", "cust-1", "--replace-key"], &card_json(cards::DECLINE_LOST));
    assert!(again.status.success(), "{}", text(&again));
    let show = w.billd().args(["customers", "show", "cust-1"]).output().unwrap();
    assert!(text(&show).contains("400000******9987"), "{}", text(&show));
    let del = w.billd().args(["customers", "delete", "cust-1", "--reason", "customer left"]).output().unwrap();
    assert!(del.status.success(), "{}", text(&del));
    let gone = w.billd().args(["customers", "show", "cust-1"]).output().unwrap();
    assert!(!gone.status.success());
    assert!(text(&gone).contains("no billing key"), "{}", text(&gone));
}

#[test]
fn invalid_cards_are_caught_before_sending() {
    let w = world();
    for (bad, needle) in [
        (card_json("4242424242424241"), "Luhn"),
        (card_json("4242 4242 4242"), "digits"),
        (r#"{"card_number": "4242424242424242", "expiry": "2020-01", "birth": "900101"}"#.to_string(), "expired"),
        (r#"{"card_number": "4242424242424242", "expiry": "2031-01", "birth": "9001"}"#.to_string(), "birth"),
        ("not json".to_string(), "JSON"),
    ] {
        let out = with_card(&w, &["charge-once", "--merchant-uid", "m-1", "--amount", "1000", "--name", "x"], &bad);
        assert!(!out.status.success(), "{bad} accepted");
        assert!(text(&out).contains(needle), "{needle:?} not in {}", text(&out));
        assert!(!text(&out).contains("4242424242424241"), "the number was echoed");
    }
    assert!(w.ledger().is_empty(), "nothing may reach the gateway");
}

#[test]
fn charge_once_paid_declined_and_never_twice() {
    let w = world();
    let ok = with_card(
        &w,
        &["charge-once", "--merchant-uid", "once-1", "--amount", "5000", "--name", "Setup fee"],
        &card_json(cards::APPROVE),
    );
    assert!(ok.status.success(), "{}", text(&ok));
    let again = with_card(
        &w,
        &["charge-once", "--merchant-uid", "once-1", "--amount", "5000", "--name", "Setup fee"],
        &card_json(cards::APPROVE),
    );
    // Issue 23, 2: a rerun of a paid charge exits 0 (paid is what was asked) and sends nothing.
    assert!(again.status.success(), "{}", text(&again));
    assert!(text(&again).contains("already paid") && text(&again).contains("nothing sent"), "{}", text(&again));
    let declined = with_card(
        &w,
        &["charge-once", "--merchant-uid", "once-2", "--amount", "5000", "--name", "Setup fee"],
        &card_json(cards::DECLINE_INSUFFICIENT_FUNDS),
    );
    assert_eq!(declined.status.code(), Some(1));
    assert!(text(&declined).contains("잔액부족"), "{}", text(&declined));
    // The same merchant_uid may be tried again after a decline.
    let retry = with_card(
        &w,
        &["charge-once", "--merchant-uid", "once-2", "--amount", "5000", "--name", "Setup fee"],
        &card_json(cards::APPROVE),
    );
    assert!(retry.status.success(), "{}", text(&retry));
    let paid: Vec<_> = w.ledger().into_iter().filter(|e| e.status == "paid").map(|e| e.merchant_uid).collect();
    assert_eq!(paid, ["once-1", "once-2"]);
    // Recorded in billd's ledger.
    let list = w.billd().args(["charges", "--json"]).output().unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let statuses: Vec<(String, String)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["merchant_uid"].as_str().unwrap().into(), r["status"].as_str().unwrap().into()))
        .collect();
    assert_eq!(statuses, [("once-1".to_string(), "paid".to_string()), ("once-2".to_string(), "paid".to_string())]);
    // One-time charges are not posing as a subscription named `one-time` (issue 23, point 6): their own KIND, no
    // subscription, and their own filter.
    for r in rows.as_array().unwrap() {
        assert_eq!((r["kind"].as_str(), r["subscription_id"].is_null()), (Some("one-time"), true), "{r}");
        // A key-in charge has no billing key: null, not "" (issue 26 review).
        assert!(r["customer_uid"].is_null(), "{r}");
    }
    let table = text(&w.billd().arg("charges").output().unwrap());
    let header = table.lines().next().unwrap_or_default().to_string();
    assert!(header.contains("KIND"), "{table}");
    let line = table.lines().find(|l| l.contains("once-1")).unwrap_or_default().to_string();
    assert!(line.contains("one-time") && !line.contains(" one-time  one-time"), "{table}");
    let only = text(&w.billd().args(["charges", "--one-time"]).output().unwrap());
    assert!(only.contains("once-1") && only.contains("once-2"), "{only}");
    let as_sub = text(&w.billd().args(["charges", "--subscription", "one-time"]).output().unwrap());
    assert!(!as_sub.contains("once-1"), "one-time charges listed as subscription `one-time`: {as_sub}");
}

#[test]
fn a_pass_settles_one_time_charges_left_unresolved_by_lookup_only() {
    let w = world();
    for (uid, card) in [("once-paid", cards::APPROVE), ("once-declined", cards::DECLINE_INSUFFICIENT_FUNDS)] {
        with_card(
            &w,
            &["charge-once", "--merchant-uid", uid, "--amount", "5000", "--name", "Setup fee"],
            &card_json(card),
        );
    }
    let at_gateway = w.ledger();
    assert_eq!(at_gateway.len(), 2);
    // As a `charge-once` that died before recording its outcome would leave them: an hour ago, outcome unknown.
    // Plus one that died before its request left, and one whose command is still waiting for its answer.
    let hour_ago = chrono::Utc::now().timestamp() - 3600;
    let db = w.db();
    db.execute(
        "UPDATE one_time_charges SET status = 'pending', failure = NULL, imp_uid = NULL, fail_reason = NULL,
           updated_at = ?1, check_at = ?1, doubt_wall_ms = 1000 * ?1, doubt_boot_ms = NULL, doubt_boot_id = NULL",
        [hour_ago],
    )
    .unwrap();
    db.execute("UPDATE one_time_charges SET status = 'unknown' WHERE merchant_uid = 'once-declined'", []).unwrap();
    for (uid, at) in [("once-lost", hour_ago), ("once-in-flight", chrono::Utc::now().timestamp())] {
        db.execute(
            "INSERT INTO one_time_charges (merchant_uid, name, amount, currency, card_masked, status, tries,
               created_at, updated_at) VALUES (?1, 'Setup fee', 5000, 'KRW', '424242******4242', 'pending', 1, ?2, ?2)",
            rusqlite::params![uid, at],
        )
        .unwrap();
    }
    drop(db);

    let out = w.tick(&chrono::Utc::now().to_rfc3339());
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(w.ledger().len(), 2, "a lookup only: nothing is sent again\n{log}");
    let state = |uid: &str| -> (String, Option<String>, Option<String>, Option<String>) {
        w.db()
            .query_row(
                "SELECT status, failure, imp_uid, fail_reason FROM one_time_charges WHERE merchant_uid = ?1",
                [uid],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap()
    };
    let imp_of = |uid: &str| at_gateway.iter().find(|e| e.merchant_uid == uid).map(|e| e.imp_uid.clone());
    let paid = state("once-paid");
    assert_eq!((paid.0.as_str(), paid.2), ("paid", imp_of("once-paid")), "{log}");
    let declined = state("once-declined");
    assert_eq!((declined.0.as_str(), declined.1.as_deref()), ("failed", Some("declined")), "{log}");
    assert_eq!(declined.2, imp_of("once-declined"));
    assert!(declined.3.unwrap_or_default().contains("잔액부족"));
    let lost = state("once-lost");
    assert_eq!((lost.0.as_str(), lost.1.as_deref()), ("failed", Some("abandoned")), "{log}");
    assert_eq!(state("once-in-flight").0, "pending", "a charge-once still waiting for its answer is left alone");
    assert!(log.contains("charge.abandoned") && log.contains("once-lost"), "{log}");
    // The abandoned one may be sent again with the same command.
    let again = with_card(
        &w,
        &["charge-once", "--merchant-uid", "once-lost", "--amount", "5000", "--name", "Setup fee"],
        &card_json(cards::APPROVE),
    );
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(w.ledger().len(), 3);
    // Rerunning the command on a charge still pending (its command may still be waiting for the answer) looks it
    // up, finds nothing, and sends nothing: its first request may still be in progress at the gateway.
    let rerun = with_card(
        &w,
        &["charge-once", "--merchant-uid", "once-in-flight", "--amount", "5000", "--name", "Setup fee"],
        &card_json(cards::APPROVE),
    );
    assert!(!rerun.status.success(), "{}", text(&rerun));
    assert!(text(&rerun).contains("outcome unknown: billd will settle it; do not retry before"), "{}", text(&rerun));
    assert_eq!(state("once-in-flight").0, "pending");
    assert_eq!(w.ledger().len(), 3, "nothing sent");
}

#[test]
fn charge_once_with_customer_uid_saves_the_billing_key() {
    let w = world();
    let out = with_card(
        &w,
        &[
            "charge-once",
            "--merchant-uid",
            "first-1",
            "--amount",
            "9900",
            "--name",
            "First month",
            "--customer-uid",
            "cust-9",
        ],
        &card_json(cards::APPROVE),
    );
    assert!(out.status.success(), "{}", text(&out));
    let show = w.billd().args(["customers", "show", "cust-9"]).output().unwrap();
    assert!(show.status.success(), "{}", text(&show));
}

#[test]
fn subscription_set_up_and_first_charged_in_one_command() {
    let w = world();
    let out = with_card(
        &w,
        &[
            "subscriptions",
            "add",
            "--id",
            "web-1",
            "--customer-uid",
            "cust-web",
            "--plan",
            "monthly",
            "--register-card",
            "--charge-now",
        ],
        &card_json(cards::APPROVE),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("first charge paid"), "{}", text(&out));
    assert_eq!(w.paid_for("cust-web"), ["billd-web-1-0"]);
    // A sync never cancels it (the config does not list it), and a second run does not charge it again.
    w.tick(&chrono::Utc::now().to_rfc3339());
    assert_eq!(w.status_of("web-1"), "active");
    assert_eq!(w.paid_for("cust-web").len(), 1);
    // Next month's period is charged as usual.
    w.tick(&(chrono::Utc::now() + chrono::Duration::days(32)).to_rfc3339());
    assert_eq!(w.paid_for("cust-web"), ["billd-web-1-0", "billd-web-1-1"]);
    let dup = w
        .billd()
        .args(["subscriptions", "add", "--id", "web-1", "--customer-uid", "x", "--plan", "monthly"])
        .output()
        .unwrap();
    assert!(!dup.status.success());
    let unknown = w
        .billd()
        .args(["subscriptions", "add", "--id", "web-2", "--customer-uid", "x", "--plan", "gold"])
        .output()
        .unwrap();
    assert!(text(&unknown).contains("unknown plan \"gold\""), "{}", text(&unknown));
}

#[test]
fn card_numbers_never_reach_the_database_or_any_output() {
    let w = world();
    let numbers = [cards::APPROVE, cards::DECLINE_INSUFFICIENT_FUNDS, "5105105105105100"];
    let mut outputs = String::new();
    let mut run = |args: &[&str], card: &str| {
        let o = with_card(&w, args, card);
        outputs += &text(&o);
    };
    run(&["customers", "register", "c-a"], &card_json("4242-4242-4242-4242"));
    run(&["customers", "register", "c-b"], &card_json("5105 1051 0510 5100"));
    run(&["charge-once", "--merchant-uid", "p-1", "--amount", "100", "--name", "n"], &card_json(cards::APPROVE));
    run(
        &["charge-once", "--merchant-uid", "p-2", "--amount", "100", "--name", "n"],
        &card_json(cards::DECLINE_INSUFFICIENT_FUNDS),
    );
    run(
        &["charge-once", "--merchant-uid", "p-3", "--amount", "100", "--name", "n", "--customer-uid", "c-c"],
        &card_json("5105105105105100"),
    );
    run(
        &[
            "subscriptions",
            "add",
            "--id",
            "s-x",
            "--customer-uid",
            "c-x",
            "--plan",
            "monthly",
            "--register-card",
            "--charge-now",
        ],
        &card_json(cards::APPROVE),
    );
    run(&["customers", "register", "c-bad"], &card_json("5105105105105101"));
    // A card typed with JSON numbers instead of strings: the parse error must not quote them.
    run(
        &["customers", "register", "c-num"],
        r#"{"card_number": 4242424242424242, "expiry": "2031-12", "birth": 900101}"#,
    );
    for args in
        [vec!["charges"], vec!["charges", "--json"], vec!["subscriptions", "--json"], vec!["customers", "show", "c-a"]]
    {
        let o = w.billd().args(&args).env("BILLD_LOG", "trace").output().unwrap();
        outputs += &text(&o);
    }
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(w.dir.path()).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().starts_with("billd.sqlite3") {
            stored.extend(std::fs::read(&p).unwrap());
        }
    }
    assert!(!stored.is_empty());
    let stored = String::from_utf8_lossy(&stored);
    assert!(outputs.contains("424242******4242"), "masked numbers are shown: {outputs}");
    for n in numbers.iter().copied().chain(["5105105105105101"]) {
        let dashed: String =
            n.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join("-");
        let spaced = dashed.replace('-', " ");
        for form in [n.to_string(), dashed, spaced] {
            assert!(!outputs.contains(&form), "{form} appears in the output");
            assert!(!stored.contains(&form), "{form} appears in the database");
        }
    }
    for secret in ["900101", "\"12\""] {
        assert!(!stored.contains(secret), "{secret} appears in the database");
    }
}
