//! `billd import FILE.csv` and `gateway.rate_limit`, end to end with the real binary.

mod common;

use billd_sandbox::SandboxConfig;
use common::{MONTHLY, Setup, World, cards, sub};

/// `text` with `{y}` replaced by a year that is always at least a year ahead of the wall clock (and `{y-1}` by the
/// year before): `billd import` checks start dates against today, so fixed years would start failing once reached.
fn ahead(text: &str) -> String {
    let y = chrono::Datelike::year(&chrono::Utc::now()) + 2;
    text.replace("{y}", &y.to_string()).replace("{y-1}", &(y - 1).to_string())
}

fn world() -> World {
    World::new(Setup { body: MONTHLY, ..Setup::default() })
}

fn write(w: &World, name: &str, text: &str) -> std::path::PathBuf {
    let p = w.dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn count(w: &World, sql: &str) -> i64 {
    w.db().query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn imports_then_bills_each_period_once_and_sync_leaves_them_alone() {
    let w = world();
    for c in ["c1", "c2", "c3"] {
        w.sandbox.register_customer(c, cards::APPROVE).unwrap();
    }
    // A BOM, spaces around fields, quoting, a blank line and the columns in another order are all fine.
    let csv = write(
        &w,
        "book.csv",
        &ahead(
            "\u{feff}customer_uid, id ,plan,start\nc1,s1,monthly,{y}-01-31\n\"c2\",\"s2\",monthly,{y}-02-15\n\nc3,s3,monthly,{y}-03-01\n",
        ),
    );
    let out = w.billd().arg("import").arg(&csv).output().unwrap();
    assert!(out.status.success(), "{}", World::stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("imported 3 subscriptions") && stdout.contains("0 already"), "{stdout}");
    assert_eq!(count(&w, "SELECT count(*) FROM subscriptions WHERE source = 'manual' AND status = 'active'"), 3);
    assert_eq!(count(&w, "SELECT count(*) FROM events WHERE kind = 'subscription.created'"), 3);
    // Each with its public event, as a subscription added any other way (webhooks).
    assert_eq!(count(&w, "SELECT count(*) FROM outbox WHERE type = 'subscription.created' AND sequence = 1"), 3);
    // next_due_at follows the calendar: the start date at charge_time (10:00 in Seoul = 01:00 UTC).
    let due: i64 = w.db().query_row("SELECT next_due_at FROM subscriptions WHERE id = 's1'", [], |r| r.get(0)).unwrap();
    assert_eq!(chrono::DateTime::from_timestamp(due, 0).unwrap().to_rfc3339(), ahead("{y}-01-31T01:00:00+00:00"));

    // Importing the same file again changes nothing.
    let out = w.billd().arg("import").arg(&csv).output().unwrap();
    assert!(out.status.success(), "{}", World::stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("imported 0 subscriptions"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 already in the database, skipped"));

    // The config lists no subscription: ticks never cancel imported ones, and bill each period once.
    w.tick_daily(&ahead("{y}-01-30"), &ahead("{y}-03-01"), "10:30:00+09:00");
    w.tick(&ahead("{y}-03-01T10:30:00+09:00"));
    assert_eq!(count(&w, "SELECT count(*) FROM subscriptions WHERE status = 'active'"), 3);
    let mut paid: Vec<String> = w.paid_by_merchant_uid().into_keys().collect();
    paid.sort();
    assert_eq!(paid, ["billd-s1-0", "billd-s1-1", "billd-s2-0", "billd-s3-0"]);
    w.assert_consistent();
}

#[test]
fn a_bad_file_is_refused_whole_with_every_problem_located() {
    let w = world();
    let csv = write(
        &w,
        "bad.csv",
        &ahead(
            "id,customer_uid,plan,start\n\
         ok1,c1,monthly,{y}-01-01\n\
         bad id,c2,monthly,{y}-01-01\n\
         s3,c3,weekly,{y}-01-01\n\
         s4,c4,monthly,{y}-02-30\n\
         ok1,c5,monthly,{y}-01-01\n\
         s6,,monthly,{y}-01-01\n\
         s7,c7,monthly\n",
        ),
    );
    let out = w.billd().arg("import").arg(&csv).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = World::stderr(&out);
    for want in [
        "bad.csv:3: column 1 (id): \"bad id\"",
        "bad.csv:4: column 3 (plan): unknown plan \"weekly\"",
        "bad.csv:5: column 4 (start): \"{y}-02-30\" is not a valid date",
        "bad.csv:6: column 1 (id): duplicate id \"ok1\" (also on line 2)",
        "bad.csv:7: column 2 (customer_uid): must be 1-80 characters",
        "bad.csv:8: 3 fields, but the header has 4",
        "6 problems found; nothing was imported",
    ] {
        let want = ahead(want);
        assert!(err.contains(&want), "missing {want:?} in:\n{err}");
    }
    assert_eq!(count(&w, "SELECT count(*) FROM subscriptions"), 0);

    let no_header = write(&w, "nohdr.csv", &ahead("s1,c1,monthly,{y}-01-01\n"));
    let out = w.billd().arg("import").arg(&no_header).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(World::stderr(&out).contains("nohdr.csv:1: the first line must be the header row"));
}

#[test]
fn an_id_already_used_differently_is_refused_and_backdated_starts_need_catch_up() {
    let w = World::new(Setup {
        body: &format!("{MONTHLY}{}", sub("from-config", "cx", "monthly", &ahead("{y}-01-01"))),
        ..Setup::default()
    });
    w.tick(&ahead("{y-1}-12-01T10:00:00+09:00")); // syncs the config entry
    let first = write(&w, "a.csv", &ahead("id,customer_uid,plan,start\nm1,c1,monthly,{y}-01-01\n"));
    assert!(w.billd().arg("import").arg(&first).status().unwrap().success());
    let clash = write(
        &w,
        "b.csv",
        &ahead(
            "id,customer_uid,plan,start\nm2,c2,monthly,{y}-01-01\nm1,OTHER,monthly,{y}-01-01\nfrom-config,cx,monthly,{y}-01-01\n",
        ),
    );
    let out = w.billd().arg("import").arg(&clash).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = World::stderr(&out);
    assert!(
        err.contains("b.csv:3: column 1 (id): subscription \"m1\" is already in the database with customer_uid \"c1\""),
        "{err}"
    );
    assert!(
        err.contains("b.csv:4: column 1 (id): subscription \"from-config\" is already in the database from config"),
        "{err}"
    );
    assert_eq!(
        count(&w, "SELECT count(*) FROM subscriptions WHERE id = 'm2'"),
        0,
        "nothing of a refused file is written"
    );

    // Starting more than one interval ago would charge every period since: refused unless --catch-up.
    let old = write(&w, "old.csv", "id,customer_uid,plan,start\nold1,c1,monthly,2020-01-15\n");
    let out = w.billd().arg("import").arg(&old).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        World::stderr(&out)
            .contains("old.csv:2: column 4 (start): its start 2020-01-15 is more than one period (1 month) back"),
        "{}",
        World::stderr(&out)
    );
    assert!(w.billd().args(["import", "--catch-up"]).arg(&old).status().unwrap().success());
    assert_eq!(count(&w, "SELECT count(*) FROM subscriptions WHERE id = 'old1'"), 1);
}

#[test]
fn rate_limit_keeps_every_request_under_the_gateways_limit() {
    // The sandbox answers HTTP 429 above 5 requests in a second; billd sends at most 4 per second.
    let w = World::new(Setup {
        sandbox: SandboxConfig { rate_limit: Some(5), ..SandboxConfig::default() },
        concurrency: 8,
        body: MONTHLY,
        ..Setup::default()
    });
    let mut csv = String::from("id,customer_uid,plan,start\n");
    for i in 0..10 {
        w.sandbox.register_customer(&format!("c{i}"), cards::APPROVE).unwrap();
        csv.push_str(&ahead(&format!("r{i},c{i},monthly,{{y}}-01-01\n")));
    }
    let path = write(&w, "r.csv", &csv);
    assert!(w.billd().arg("import").arg(&path).status().unwrap().success());
    let out = w
        .billd()
        .env("BILLD_GATEWAY__RATE_LIMIT", "4")
        .args(["tick", "--simulate", "--as-of", ahead("{y}-01-01T10:00:30+09:00").as_str()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", World::stderr(&out));
    assert_eq!(w.paid_by_merchant_uid().len(), 10);
    assert_eq!(count(&w, "SELECT count(*) FROM attempts WHERE fail_reason LIKE '%429%'"), 0);
    w.assert_consistent();
}

#[test]
fn rate_limit_must_be_positive() {
    let w = world();
    for bad in ["0", "-3", "\"fast\""] {
        let out = w.billd().env("BILLD_GATEWAY__RATE_LIMIT", bad).arg("check").output().unwrap();
        assert_eq!(out.status.code(), Some(1), "rate_limit = {bad}");
        assert!(World::stderr(&out).contains("gateway.rate_limit"), "{bad}: {}", World::stderr(&out));
    }
    let out = w.billd().env("BILLD_GATEWAY__RATE_LIMIT", "2.5").arg("check").output().unwrap();
    assert!(out.status.success(), "{}", World::stderr(&out));
}

/// A 50 MB field is quoted in the error by its first 200 characters only (the whole field was echoed), and a start
/// date past the year 9999 (`+10000-01-01`, which the date parser accepts) is refused.
#[test]
fn errors_quote_a_huge_field_briefly_and_refuse_years_past_9999() {
    let w = world();
    let big = "x".repeat(50 << 20);
    let csv = format!(
        "id,customer_uid,plan,start\n{big},c1,monthly,2030-01-01\nok2,c2,{big},2030-01-01\nok3,c3,monthly,{big}\n\
         ok4,c4,monthly,+10000-01-01\nok5,c5,monthly,1969-12-31\n"
    );
    let path = write(&w, "huge.csv", &csv);
    drop((big, csv));
    let out = w.billd().arg("import").arg(&path).output().unwrap();
    let stderr = World::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{}", &stderr[..stderr.len().min(2000)]);
    assert!(stderr.len() < 10_000, "the error is {} bytes long: the field was echoed", stderr.len());
    for line in ["huge.csv:2: column 1 (id)", "huge.csv:3: column 3 (plan)", "huge.csv:4: column 4 (start)"] {
        assert!(stderr.contains(line), "{line} missing: {stderr}");
    }
    assert!(
        stderr.contains("huge.csv:5: column 4 (start): \"+10000-01-01\" is outside the years 1970 to 9999"),
        "{stderr}"
    );
    assert!(
        stderr.contains("huge.csv:6: column 4 (start): \"1969-12-31\" is outside the years 1970 to 9999"),
        "{stderr}"
    );
    assert_eq!(count(&w, "SELECT count(*) FROM subscriptions"), 0);
}

/// `tick --as-of` outside the years 1970-9999 is refused with a clear error.
#[test]
fn as_of_outside_the_supported_years_is_refused() {
    let w = world();
    for (as_of, simulate) in
        [("0001-01-01T00:00:00Z", false), ("1969-12-31T23:59:59Z", false), ("9999-12-31T23:59:59-01:00", true)]
    {
        let mut tick = w.billd();
        tick.args(["tick", "--as-of", as_of]);
        if simulate {
            tick.arg("--simulate");
        }
        let out = tick.output().unwrap();
        let stderr = World::stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{as_of}: {stderr}");
        assert!(stderr.contains("outside the years 1970 to 9999"), "{as_of}: {stderr}");
    }
}

/// A new operator's finding: importing the same file again months later failed ("its start is more than one period
/// back ... pass --catch-up to charge them all"), although every row was already imported. A row already in the
/// database is skipped whatever the date; the backdated-start rule is for what an import adds.
#[test]
fn a_file_imported_before_imports_again_later_whatever_the_date() {
    let w = world();
    let csv = write(&w, "again.csv", "id,customer_uid,plan,start\nt1,c1,monthly,2025-01-10\n");
    let first = w.billd().args(["import"]).arg(&csv).args(["--as-of", "2025-01-05T00:00:00+09:00"]).output().unwrap();
    assert!(first.status.success(), "{}", common::text(&first));
    let later = w.billd().args(["import"]).arg(&csv).args(["--as-of", "2025-05-01T00:00:00+09:00"]).output().unwrap();
    assert!(later.status.success(), "{}", common::text(&later));
    assert!(common::text(&later).contains("1 already in the database"), "{}", common::text(&later));
    assert_eq!(count(&w, "SELECT count(*) FROM subscriptions"), 1);
}
