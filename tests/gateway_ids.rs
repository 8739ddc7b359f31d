//! Issue 20, 4: a lookup asks for exactly the id that was charged. Every id billd sends to the gateway is one URL
//! path segment, byte for byte; an id a path cannot carry (a control character such as the CR of a file saved with
//! Windows line endings, `.` or `..`, a slash) is refused wherever it enters, before anything is sent.

mod common;

use common::{MONTHLY, Setup, World, card_json, cards, text, with_card};

/// `charge-once --merchant-uid $'order-77\r'` and `--merchant-uid ..` used to be charged and then looked up under
/// another path (`/payments/find/order-77/paid`, `/payments/find/paid`), found nothing, and were recorded
/// "abandoned: nothing was charged (rerun charge-once to send it)". Now they are refused before sending.
#[test]
fn ids_a_url_path_cannot_carry_are_refused_before_anything_is_sent() {
    let w = World::new(Setup { body: MONTHLY, ..Default::default() });
    for (id, why) in [
        ("order-77\r", "U+000D"),
        ("..", "is not a gateway id"),
        (".", "is not a gateway id"),
        ("a/b", "a slash (/)"),
        ("tab\there", "U+0009"),
    ] {
        let out = with_card(
            &w,
            &["charge-once", "--merchant-uid", id, "--amount", "5000", "--name", "Setup fee"],
            &card_json(cards::APPROVE),
        );
        assert!(!out.status.success(), "{id:?} was accepted: {}", text(&out));
        assert!(text(&out).contains(why) && text(&out).contains("nothing was sent"), "{id:?}: {}", text(&out));
    }
    let out = with_card(&w, &["customers", "register", "cust-1\r"], &card_json(cards::APPROVE));
    assert!(!out.status.success() && text(&out).contains("U+000D"), "{}", text(&out));
    assert!(w.requests().is_empty(), "sent: {:?}", w.requests());
    assert!(w.ledger().is_empty());
    let rows: i64 = w.db().query_row("SELECT count(*) FROM one_time_charges", [], |r| r.get(0)).unwrap_or(0);
    assert_eq!(rows, 0, "nothing recorded for a refused id");
}

/// The same rule for the config: a customer_uid with a CR is named by `check`, with the key and why.
#[test]
fn a_customer_uid_with_a_control_character_is_refused_by_check() {
    let body = format!(
        "{MONTHLY}\n[[subscriptions]]\nid = \"s1\"\ncustomer_uid = \"c1\\r\"\nplan = \"monthly\"\nstart = \"2025-01-01\"\n"
    );
    let w = World::new(Setup { body: &body, ..Default::default() });
    let out = w.billd().arg("check").output().unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("customer_uid") && text(&out).contains("U+000D"), "{}", text(&out));
}

/// An id with characters a URL must escape (a space, `?`, `#`, `%`) is charged and then found by a lookup under
/// exactly that id: a rerun of the command looks it up first, finds it paid, and sends nothing. (A merchant_uid an
/// operator gives is printable ASCII since the issue 24 hardening; a customer_uid in Hangul is percent-encoded byte
/// for byte by the same `ids::path_segment`, see its unit tests.)
#[test]
fn an_id_with_reserved_characters_is_looked_up_byte_for_byte() {
    let w = World::new(Setup { body: MONTHLY, ..Default::default() });
    let id = "order 77?#%2e%2e";
    let args = ["charge-once", "--merchant-uid", id, "--amount", "5000", "--name", "Setup fee"];
    let first = with_card(&w, &args, &card_json(cards::APPROVE));
    assert!(first.status.success(), "{}", text(&first));
    assert_eq!(w.ledger().len(), 1);
    assert_eq!(w.ledger()[0].merchant_uid, id, "charged under another id");
    let rerun = with_card(&w, &args, &card_json(cards::APPROVE));
    assert!(text(&rerun).contains("already paid"), "the lookup did not find it: {}", text(&rerun));
    assert_eq!(w.sent(id), 1, "sent again: {:?}", w.requests());
}

/// `import` used to trim fields, so a customer_uid with a CR (a CSV saved with Windows line endings inside a
/// quoted field) or a space at either end was imported as another id. It is refused, like everywhere ids enter.
#[test]
fn import_refuses_a_customer_uid_with_a_cr_or_outer_white_space() {
    let w = World::new(Setup { body: MONTHLY, ..Default::default() });
    let csv = w.dir.path().join("import.csv");
    std::fs::write(
        &csv,
        "id,customer_uid,plan,start\nimp-3,\"cust-a\r\",monthly,2030-01-01\nimp-4, cust-b,monthly,2030-01-01\n",
    )
    .unwrap();
    let out = w.billd().arg("import").arg(&csv).output().unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("U+000D") && text(&out).contains("white space"), "{}", text(&out));
    let n: i64 = w.db().query_row("SELECT count(*) FROM subscriptions", [], |r| r.get(0)).unwrap_or(0);
    assert_eq!(n, 0, "imported despite the refusal");
}
