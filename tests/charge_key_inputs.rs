//! Issue 24 hardening: what an outside reviewer sent into `billd charge-key` (and `charge-once`, which checks its
//! arguments the same way), against the real binary and the sandbox: ids with invisible or look-alike characters,
//! a customer-facing name with terminal escapes, an amount above any ceiling, a book other users could write, and
//! rows planted in the book with terminal escapes, printed by the listings.

mod common;

use billd_sandbox::Endpoint;
use common::{MONTHLY, Setup, World, cards, sub_catch_up as sub, text};
use std::os::unix::fs::PermissionsExt;
use std::process::Output;

fn world(body: &str) -> World {
    let w = World::new(Setup { body, timeout: "1s", ..Default::default() });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    w
}

fn charge_key(w: &World, args: &[&str]) -> Output {
    w.billd().arg("charge-key").args(args).output().unwrap()
}

/// Charge requests that reached the gateway (`again` and `onetime`).
fn charges_sent(w: &World) -> usize {
    w.requests().iter().filter(|r| matches!(r.endpoint, Endpoint::Again | Endpoint::Onetime)).count()
}

/// One-time charges recorded (none when nothing opened the book).
fn one_time_rows(w: &World) -> i64 {
    if !w.dir.path().join("billd.sqlite3").exists() {
        return 0;
    }
    w.db().query_row("SELECT count(*) FROM one_time_charges", [], |r| r.get(0)).unwrap()
}

/// F4: invisible, bidirectional and look-alike characters in the ids an operator gives are refused before anything
/// is sent (a zero-width space made `dem\u{200b}o-sub-1-1` look like one of billd's own merchant_uids, and a
/// fullwidth `ＢＩＬＬＤ-` slipped past the reserved prefix).
#[test]
fn ids_with_invisible_or_look_alike_characters_are_refused() {
    let w = world(MONTHLY);
    for m in [
        "bil\u{200b}ld-s1-0",
        "addon\u{202e}1",
        "addon\u{2028}1",
        "\u{feff}addon-1",
        "add\u{ad}on-1",
        "ＢＩＬＬＤ-s1-0",
        "주문-1",
    ] {
        let out = charge_key(&w, &["c1", "--merchant-uid", m, "--amount", "100", "--name", "x"]);
        assert_eq!(out.status.code(), Some(1), "{m:?}: {}", text(&out));
        assert!(text(&out).contains("--merchant-uid"), "{m:?}: {}", text(&out));
        let once = common::with_card(
            &w,
            &["charge-once", "--merchant-uid", m, "--amount", "100", "--name", "x"],
            &common::card_json(cards::APPROVE),
        );
        assert_eq!(once.status.code(), Some(1), "charge-once {m:?}: {}", text(&once));
    }
    for key in ["c\u{200b}1", "c1\u{202e}", "c\u{ad}1"] {
        let out = charge_key(&w, &[key, "--merchant-uid", "addon-1", "--amount", "100", "--name", "x"]);
        assert_eq!(out.status.code(), Some(1), "{key:?}: {}", text(&out));
        assert!(text(&out).contains("CUSTOMER_UID"), "{key:?}: {}", text(&out));
    }
    assert_eq!(charges_sent(&w), 0, "a refused charge was sent: {:?}", w.requests());
    assert_eq!(one_time_rows(&w), 0);
}

/// F5: the name is shown to the customer (a receipt's order name): control characters, terminal escapes, line
/// breaks, bidirectional overrides and a name of white space only are refused, naming --name.
#[test]
fn a_name_with_escapes_or_nothing_visible_is_refused() {
    let w = world(MONTHLY);
    for name in ["Add-on\u{1b}[2J", "Add-on\rPAID IN FULL", "Add-on\nline 2", "\u{202e}no-dda", "   ", "\u{200b}"] {
        let out = charge_key(&w, &["c1", "--merchant-uid", "addon-1", "--amount", "100", "--name", name]);
        assert_eq!(out.status.code(), Some(1), "{name:?}: {}", text(&out));
        assert!(text(&out).contains("--name"), "{name:?}: {}", text(&out));
        assert!(!text(&out).contains('\u{1b}'), "the escape reached the terminal: {}", text(&out));
        let once = common::with_card(
            &w,
            &["charge-once", "--merchant-uid", "once-1", "--amount", "100", "--name", name],
            &common::card_json(cards::APPROVE),
        );
        assert_eq!(once.status.code(), Some(1), "charge-once {name:?}: {}", text(&once));
        assert!(text(&once).contains("--name"), "{name:?}: {}", text(&once));
    }
    assert_eq!(charges_sent(&w), 0, "a refused charge was sent: {:?}", w.requests());
    // A name in any script, with inner spaces, is fine.
    let out = charge_key(&w, &["c1", "--merchant-uid", "addon-1", "--amount", "100", "--name", "추가 요금 1"]);
    assert!(out.status.success(), "{}", text(&out));
}

/// Point i: no amount above config::MAX_AMOUNT (10^12) is ever sent, whatever the flags.
#[test]
fn no_amount_above_the_ceiling_is_sent_even_with_above_max_amount() {
    let w = world(MONTHLY);
    for amount in ["1000000000001", "9223372036854775807"] {
        let out =
            charge_key(&w, &["c1", "--merchant-uid", "big-1", "--amount", amount, "--name", "x", "--above-max-amount"]);
        assert_eq!(out.status.code(), Some(1), "{amount}: {}", text(&out));
        assert!(text(&out).contains("1000000000000"), "{amount}: {}", text(&out));
    }
    assert_eq!(charges_sent(&w), 0, "an amount above the ceiling was sent: {:?}", w.requests());
    assert_eq!(one_time_rows(&w), 0);
}

/// F6a: a book other users could write is refused (a row they planted would be believed), saying why and how to
/// fix it; it is not narrowed and used.
#[test]
fn a_book_others_could_write_is_refused() {
    let w = world(MONTHLY);
    let out = charge_key(&w, &["c1", "--merchant-uid", "addon-1", "--amount", "100", "--name", "x"]);
    assert!(out.status.success(), "{}", text(&out));
    let db = w.dir.path().join("billd.sqlite3");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o666)).unwrap();
    for args in [&["charges"][..], &["charge-key", "c1", "--merchant-uid", "addon-2", "--amount", "100", "--name", "x"]]
    {
        let out = w.billd().args(args).output().unwrap();
        assert_ne!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
        assert!(text(&out).contains("0666") && text(&out).contains("chmod 600"), "{args:?}: {}", text(&out));
    }
    let mode = std::fs::metadata(&db).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o666, "the file was narrowed and used");
    assert_eq!(charges_sent(&w), 1);
}

/// F4: the listings escape what they read from the book: a row planted with ESC, CR or a bidirectional override
/// in its ids or reason is shown escaped, never raw (one rule for every table cell).
#[test]
fn listings_escape_what_the_book_holds() {
    let body = format!("{MONTHLY}{}", sub("s1", "c1", "monthly", "2025-01-01"));
    let w = world(&body);
    assert!(w.billd().arg("sync").output().unwrap().status.success());
    let out =
        charge_key(&w, &["c1", "--merchant-uid", "addon-1", "--amount", "100", "--name", "x", "--subscription", "s1"]);
    assert!(out.status.success(), "{}", text(&out));
    w.db()
        .execute(
            "UPDATE one_time_charges SET merchant_uid = ?1, imp_uid = NULL, fail_reason = ?2, status = 'failed', \
             failure = 'declined'",
            ["evil\u{1b}[2J\rbilld-s1-0", "no\u{202e}tiap\u{1b}]0;title\u{7}"],
        )
        .unwrap();
    for args in
        [&["charges"][..], &["charges", "--one-time"], &["charges", "--failed"], &["subscriptions", "show", "s1"]]
    {
        let out = w.billd().args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        let shown = String::from_utf8_lossy(&out.stdout);
        for raw in ['\u{1b}', '\r', '\u{202e}', '\u{7}'] {
            assert!(!shown.contains(raw), "{args:?}: {raw:?} printed raw: {shown:?}");
        }
        assert!(shown.contains("evil\\u{1b}[2J\\u{d}billd-s1-0"), "{args:?}: {shown}");
    }
}
