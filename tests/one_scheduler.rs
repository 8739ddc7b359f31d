//! Issue 20, 3: one scheduler per book, enforced by the book itself. Two ticks on one database, one through a
//! symlink to the file (or a hard link, or after deleting the old `.lock` side file), both resent an unresolved
//! charge in the same millisecond: two payments. The scheduler claim is now a lock on the database file itself, so
//! every path to it meets the same lock; a hard-linked database is refused outright (SQLite keeps a log per path:
//! a cancel through one link was unseen by a daemon on the other); and a resend is a compare and set (the store
//! contract's `of_two_handles_racing_a_resend_exactly_one_wins`).

mod common;

use common::{MONTHLY, Setup, World, cards, sub, text, wait_for};
use std::path::Path;
use std::process::{Child, Stdio};

/// A second config, in its own folder, whose `billing.database` is `db` (another path to the same book).
fn second_config(w: &World, db: &Path) -> std::path::PathBuf {
    let dir = w.dir.path().join("other");
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(&w.config)
        .unwrap()
        .replace("database = \"billd.sqlite3\"", &format!("database = {:?}", db.display().to_string()));
    let path = dir.join("schedules.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A daemon holding the book (its first pass done).
fn running(w: &World) -> Child {
    let child = w.billd().arg("run").stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_for("the daemon's first charge", || w.paid_for("c1").len() == 1);
    child
}

/// `billd --config CONFIG tick`, with the world's environment.
fn tick_with(w: &World, config: &Path) -> std::process::Output {
    let base = w.billd();
    let mut c = std::process::Command::new(base.get_program());
    for (k, v) in base.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.arg("--config").arg(config).arg("tick").output().unwrap()
}

fn assert_refused(out: &std::process::Output, how: &str) {
    assert!(!out.status.success(), "a second scheduler through {how} was let in: {}", text(out));
    assert!(text(out).contains("in use by another"), "{how}: {}", text(out));
}

fn world() -> World {
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(1)).date_naive();
    let w = World::new(Setup {
        body: &format!("{MONTHLY}{}", sub("s1", "c1", "monthly", &yesterday.to_string())),
        ..Default::default()
    });
    w.sandbox.register_customer("c1", cards::APPROVE).unwrap();
    w
}

#[test]
fn a_second_scheduler_through_another_path_a_symlink_a_hard_link_or_without_the_side_file_is_refused() {
    let w = world();
    let mut daemon = running(&w);
    let db = w.dir.path().join("billd.sqlite3");
    // Another path to the same file: a path through `..`, a symlink (refused outright since issue 22, point 12: a
    // database is never opened through a symlink), and a hard link.
    let roundabout = w.dir.path().join("other").join("..").join("billd.sqlite3");
    assert_refused(&tick_with(&w, &second_config(&w, &roundabout)), "a path through ..");
    let symlink = w.dir.path().join("link.sqlite3");
    std::os::unix::fs::symlink(&db, &symlink).unwrap();
    let out = tick_with(&w, &second_config(&w, &symlink));
    assert!(!out.status.success() && text(&out).contains("is a symlink"), "{}", text(&out));
    // A hard link: refused outright (SQLite would keep a second log beside it: a second book).
    let hard = w.dir.path().join("hard.sqlite3");
    std::fs::hard_link(&db, &hard).unwrap();
    let out = tick_with(&w, &second_config(&w, &hard));
    assert!(!out.status.success() && text(&out).contains("hard links"), "{}", text(&out));
    let cancel = w.billd().args(["cancel", "s1"]).output().unwrap();
    assert!(!cancel.status.success() && text(&cancel).contains("hard links"), "{}", text(&cancel));
    std::fs::remove_file(&hard).unwrap();
    // The lock an older billd kept beside the database, deleted: the same path is refused all the same.
    let _ = std::fs::remove_file(w.dir.path().join("billd.sqlite3.lock"));
    assert_refused(&w.billd().arg("tick").output().unwrap(), "the same path, its side file deleted");
    assert!(std::process::Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status().unwrap().success());
    assert!(daemon.wait().unwrap().success());
    // Once the daemon is gone, a tick through the other path is the one scheduler.
    let out = tick_with(&w, &second_config(&w, &roundabout));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(w.sent("billd-s1-0"), 1);
    w.assert_consistent();
}
