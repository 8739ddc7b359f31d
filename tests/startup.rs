//! Several billd processes opening a new database at the same instant (a first systemd start while an operator
//! runs a command, or an upgrade that adds a migration): each migrates it or waits for the one that does.

mod common;

use common::{MONTHLY, Setup, World, cards, sub};
use std::process::{Child, Stdio};

/// Issue 15, point 1: 8 processes of mixed commands started at once on a fresh database path, 20 rounds. Each
/// succeeds, except that a second scheduler reports the scheduler lock.
#[test]
fn commands_started_at_once_on_a_new_database_all_work() {
    let body =
        format!("{MONTHLY}{}{}", sub("s1", "c1", "monthly", "2025-01-01"), sub("s2", "c2", "monthly", "2025-01-01"));
    let w = World::new(Setup { body: &body, ..Default::default() });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    w.sandbox.register_customer("c2", cards::APPROVE).unwrap();
    let commands: [&[&str]; 8] = [
        &["tick", "--as-of", "2025-01-01T10:00:00+09:00"],
        &["charges"],
        &["subscriptions"],
        &["upcoming"],
        &["sync"],
        &["tick", "--as-of", "2025-01-01T10:00:00+09:00"],
        &["charges", "--json"],
        &["subscriptions", "--json"],
    ];
    for round in 0..20 {
        let config = std::fs::read_to_string(&w.config).unwrap();
        let config = config
            .lines()
            .filter(|l| !l.starts_with("merchant_uid_prefix = "))
            .map(|l| match l {
                // A database and merchant_uids of its own each round.
                l if l.starts_with("database = ") => {
                    format!("database = \"round{round}.sqlite3\"\nmerchant_uid_prefix = \"r{round}\"")
                }
                l => l.into(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&w.config, config).unwrap();
        let children: Vec<(&[&str], Child)> = commands
            .iter()
            .map(|args| {
                let child = w.billd().args(*args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
                (*args, child)
            })
            .collect();
        for (args, child) in children {
            let out = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            let second_scheduler =
                args[0] == "tick" && stderr.contains("is in use by another `billd run` or `billd tick`");
            assert!(
                out.status.success() || second_scheduler,
                "round {round}: billd {} exited {}: {stderr}",
                args.join(" "),
                out.status
            );
        }
        let db = rusqlite::Connection::open(w.dir.path().join(format!("round{round}.sqlite3"))).unwrap();
        let version: i64 = db.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, billd::store::SCHEMA_VERSION as i64);
        let paid: i64 = db.query_row("SELECT count(*) FROM attempts WHERE status = 'paid'", [], |r| r.get(0)).unwrap();
        assert_eq!(paid, 2, "round {round}: the scheduler that ran charged both periods");
    }
}
