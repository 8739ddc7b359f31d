//! The contract's cases for several daemons on one book: ownership of attempts, takeover once a lease lapsed or
//! ended, fencing of every write after a claim, leases never revived, the list `billd status` shows.

use super::*;
use crate::store::{DaemonInfo, Daemons};
use std::time::Duration as Std;

const HOUR: Std = Std::from_secs(3600);

fn who(host: &str) -> DaemonInfo {
    DaemonInfo { host: host.into(), pid: 4242, version: "test".into() }
}

/// A daemon on the book, with a lease of `lease` (zero: lapsed at once, as a daemon stopped past its lease).
fn daemon<B: Backend>(b: &B, host: &str, lease: Std) -> B::Store {
    let mut s = b.open();
    s.join(&who(host), lease).expect("join");
    s
}

/// An attempt claimed by a daemon whose lease lives is no one else's: another daemon's sweep leaves it alone, its
/// check time come or not. Once the lease lapsed (or its daemon left), the next sweep takes it over, once, and it
/// is that daemon's from then on.
pub fn a_live_daemons_attempt_is_left_alone_and_taken_over_once_its_lease_ends<B: Backend>(b: &B) {
    let setup = b.open();
    add(&setup, &["a", "b"]);
    let alive = daemon(b, "alive", HOUR);
    let claimed = open_all(&alive, t0());
    assert_eq!(claimed.len(), 2);
    sent(&alive, &claimed, t0());
    let other = daemon(b, "other", HOUR);
    let later = t0() + Duration::days(1);
    assert_eq!(
        other.unresolved_after(later, None, 10).unwrap(),
        vec![],
        "a live daemon's charges in flight were taken"
    );
    // Its owner sees them (a pass of its own after a failed write, say).
    assert_eq!(alive.unresolved_after(later, None, 10).unwrap().len(), 2, "the owner's own sweep");
    // The owner leaves: they are taken over at once, by one daemon.
    alive.leave("stopped").unwrap();
    let third = daemon(b, "third", HOUR);
    let taken = other.unresolved_after(later, None, 10).unwrap();
    assert_eq!(taken.len(), 2, "the charges of a daemon that left were not taken over");
    assert!(taken.iter().all(|a| a.taken_over), "taken over from another daemon, not said so: {taken:?}");
    assert_eq!(third.unresolved_after(later, None, 10).unwrap(), vec![], "taken over twice");
    // A lapsed lease (zero here) is the same as leaving.
    let setup2 = b.open();
    add(&setup2, &["c"]);
    let lapsed = daemon(b, "lapsed", Std::ZERO);
    let c = open_all(&lapsed, t0());
    assert_eq!(c.len(), 1);
    let taken = third.unresolved_after(later, None, 10).unwrap();
    assert_eq!(taken.iter().map(|a| a.subscription_id.as_str()).collect::<Vec<_>>(), ["c"], "a lapsed lease's charge");
}

/// Fencing: once another daemon took an attempt over, every write of its former owner about it writes nothing:
/// its go (nothing may leave), its release, its next look, its resend, its outcome (fenced off, not an error, and
/// the rest of the batch recorded). The new owner's writes are unaffected.
pub fn a_daemon_whose_work_was_taken_over_writes_nothing_about_it<B: Backend>(b: &B) {
    let setup = b.open();
    add(&setup, &["a", "b"]);
    let old = daemon(b, "old", Std::ZERO);
    let claimed = open_all(&old, t0());
    let (a, bb) = (claimed[0].clone(), claimed[1].clone());
    // b's request left before the takeover; a's never did.
    sent(&old, std::slice::from_ref(&bb), t0());
    let new = daemon(b, "new", HOUR);
    let later = t0() + Duration::minutes(5);
    let taken = new.unresolved_after(later, None, 10).unwrap();
    assert_eq!(taken.len(), 2, "the lapsed daemon's charges were not taken over");
    // The old owner wakes up: nothing it writes about them lands.
    assert_eq!(old.begin_send(&[a.id], &real(later), later).unwrap(), Vec::<i64>::new(), "a fenced go let it leave");
    old.release(&[a.id, bb.id], later).unwrap();
    let check = later + Duration::minutes(1);
    old.defer(&[(bb.id, bb.tries, check)]).unwrap();
    assert!(!old.mark_resending(&bb, &real(later), later, TIMEOUT_MS).unwrap(), "a fenced resend");
    let (_, fenced) = old.record_fenced(&[paid(&bb)], later).unwrap();
    assert_eq!(fenced, [bb.id], "the fenced outcome was not reported as fenced");
    assert_eq!(paid_attempts(&setup, "b"), 0, "a fenced outcome was recorded");
    let still = new.unresolved_after(later, None, 10).unwrap();
    assert_eq!(still.len(), 2, "a fenced release or defer changed the new owner's attempts: {still:?}");
    // The new owner records b's outcome (found paid by its lookup) and sends a.
    let (_, fenced) = new.record_fenced(&[paid(&still[1])], later).unwrap();
    assert_eq!(fenced, Vec::<i64>::new());
    assert_eq!(paid_attempts(&setup, "b"), 1);
    assert_eq!(new.begin_send(&[still[0].id], &real(later), later).unwrap(), [still[0].id]);
}

/// A lease is renewed only while it lives: one that lapsed or whose daemon left is never renewed (the daemon must
/// stop); `daemons` lists the running ones with the charges each holds and whether it does the one-at-a-time jobs,
/// and those that left recently, saying why.
pub fn a_lapsed_lease_is_never_renewed_and_the_daemons_are_listed<B: Backend>(b: &B) {
    let setup = b.open();
    add(&setup, &["a"]);
    let mut lapsed = b.open();
    let (lapsed_id, _) = lapsed.join(&who("lapsed"), Std::ZERO).unwrap();
    assert_eq!(lapsed.heartbeat(lapsed_id, HOUR).unwrap(), None, "a lapsed lease was renewed");
    assert_eq!(setup.heartbeat(lapsed_id, HOUR).unwrap(), None, "a lapsed lease was renewed the second time");
    let mut live = b.open();
    let (live_id, _) = live.join(&who("live"), HOUR).unwrap();
    let claimed = open_all(&live, t0());
    assert_eq!(claimed.len(), 1);
    assert!(live.try_jobs(crate::store::Jobs::Billing).unwrap(), "no one did the billing jobs");
    // Renewed from another handle of its process (the heartbeat's own).
    assert!(setup.heartbeat(live_id, HOUR).unwrap().is_some(), "a live lease was not renewed");
    let mut leaving = b.open();
    let (leaving_id, _) = leaving.join(&who("leaving"), HOUR).unwrap();
    leaving.leave("stopped by test").unwrap();
    assert_eq!(leaving.heartbeat(leaving_id, HOUR).unwrap(), None, "a daemon that left was renewed");
    let list = setup.daemons(HOUR).unwrap();
    let row = |host: &str| list.iter().find(|d| d.info.host == host).unwrap_or_else(|| panic!("{host}: {list:?}"));
    assert!(row("live").running() && row("live").jobs && row("live").holds == 1, "{:?}", row("live"));
    assert!(!row("lapsed").running(), "{:?}", row("lapsed"));
    assert_eq!(row("leaving").left.as_ref().map(|l| l.1.as_str()), Some("stopped by test"));
    assert!(row("live").id > row("lapsed").id, "ids are not in join order: {list:?}");
    let clock = setup.clock_ms().unwrap();
    assert!((clock - chrono::Utc::now().timestamp_millis()).abs() < 60_000, "the database's clock is off: {clock}");
}

/// A handle that holds the whole book (`billd store copy`) excludes every scheduler, and a scheduler excludes it;
/// each error names the book. Once the holder is gone, the other may claim.
pub fn the_whole_book_claim_excludes_every_scheduler<B: Backend>(b: &B) {
    let mut whole = b.open();
    whole.claim_book().expect("the whole book");
    let mut scheduler = b.open();
    let err = scheduler.claim_scheduler().expect_err("a scheduler while the book is held whole");
    assert!(format!("{err:#}").contains(&scheduler.location()), "the error does not name the book: {err:#}");
    drop(whole);
    scheduler.claim_scheduler().expect("a scheduler once the holder is gone");
    let mut copy = b.open();
    let err = copy.claim_book().expect_err("the whole book while a scheduler runs");
    assert!(format!("{err:#}").contains(&copy.location()), "the error does not name the book: {err:#}");
    drop(scheduler);
    copy.claim_book().expect("the whole book once the scheduler is gone");
}

/// A daemon whose process is gone (its handle dropped: killed, or its session ended) with its lease still running
/// is taken over at once by the next scheduler, as a crashed process's work always was: on a book with one
/// scheduler because the next one is alone, on a shared book because the gone daemon's session no longer holds it.
pub fn a_daemon_whose_process_is_gone_is_taken_over_at_once<B: Backend>(b: &B) {
    let setup = b.open();
    add(&setup, &["a"]);
    let mut dead = b.open();
    dead.claim_scheduler().expect("the first scheduler");
    dead.join(&who("dead"), HOUR).unwrap();
    let claimed = open_all(&dead, t0());
    sent(&dead, &claimed, t0());
    drop(dead);
    let mut next = b.open();
    next.claim_scheduler().expect("the next scheduler");
    next.join(&who("next"), HOUR).unwrap();
    let taken = next.unresolved_after(t0(), None, 10).unwrap();
    assert_eq!(taken.len(), 1, "the charge of a daemon whose process is gone was not taken over at once");
    // Its process may still run on a shared book (only its session is known gone): its request may be late.
    assert_eq!(taken[0].taken_over, B::SHARED, "{taken:?}");
    let again = next.unresolved_after(t0(), None, 10).unwrap();
    assert!(!again[0].taken_over, "the daemon's own charge is not a takeover: {again:?}");
    let list = setup.daemons(HOUR).unwrap();
    assert!(list.iter().any(|d| d.info.host == "dead" && !d.running()), "{list:?}");
}

/// The one-at-a-time jobs. The billing jobs: one live daemon holds them at a time (another is told no); they pass
/// to another once the holder's lease lapsed (a daemon stopped never keeps them) or it left; a handle that has not
/// joined never holds them. Deliveries: one handle at a time on a shared book, passed on once it is gone.
pub fn each_kind_of_one_at_a_time_jobs_is_held_by_one_at_a_time<B: Backend>(b: &B) {
    use crate::store::Jobs;
    let mut stranger = b.open();
    assert!(!stranger.try_jobs(Jobs::Billing).unwrap(), "a handle that has not joined does the billing jobs");
    let mut first = daemon(b, "first", HOUR);
    assert!(first.try_jobs(Jobs::Billing).unwrap(), "no daemon does the billing jobs");
    assert!(first.try_jobs(Jobs::Billing).unwrap(), "held jobs were lost");
    let mut second = daemon(b, "second", HOUR);
    assert!(!second.try_jobs(Jobs::Billing).unwrap(), "two daemons do the billing jobs at once");
    // The holder stalls past its lease (renewed for nothing: lapsed at once): the jobs pass on.
    let first_id = first.daemons(HOUR).unwrap().iter().find(|d| d.info.host == "first").unwrap().id;
    first.heartbeat(first_id, Std::ZERO).unwrap();
    assert!(second.try_jobs(Jobs::Billing).unwrap(), "a lapsed holder kept the billing jobs");
    assert!(!first.try_jobs(Jobs::Billing).unwrap(), "a lapsed daemon still does the billing jobs");
    let mut third = daemon(b, "third", HOUR);
    assert!(!third.try_jobs(Jobs::Billing).unwrap(), "two daemons do the billing jobs at once");
    second.leave("stopped").unwrap();
    assert!(third.try_jobs(Jobs::Billing).unwrap(), "the billing jobs did not pass on once their holder left");
    let list = third.daemons(HOUR).unwrap();
    assert_eq!(list.iter().filter(|d| d.jobs && d.running()).count(), 1, "{list:?}");

    let mut deliveries = b.open();
    assert!(deliveries.try_jobs(Jobs::Deliveries).unwrap(), "no one delivers");
    if B::SHARED {
        let mut other = b.open();
        assert!(!other.try_jobs(Jobs::Deliveries).unwrap(), "two handles deliver at once");
        drop(deliveries);
        assert!(other.try_jobs(Jobs::Deliveries).unwrap(), "deliveries did not pass on once their holder left");
    }
}
