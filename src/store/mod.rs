//! The storage contract (long: the whole contract in one place, trait by trait, each method with its guarantee): the
//! traits billd's engine and commands use (by concern), each method's transactional guarantee, and the row and
//! value types they exchange. Adapters live in folders of their own (`sqlite/`); the
//! contract test suite every adapter must pass is `contract.rs`.
//!
//! # What every adapter guarantees
//!
//! - **One method, one transaction.** A method that writes does all its writes in one transaction: all of them are
//!   committed, or none is (an error means nothing of the call was written). A write is durable (it survives a
//!   crash of the process and of the machine) before the method returns `Ok`.
//! - **Decisions are taken inside the transaction.** Where a write depends on what is in the book (a status, the
//!   next period, whether a row is still unchanged), the adapter reads it inside the same write transaction, never
//!   from an earlier read, so another process (another daemon on the same book, a command) that committed
//!   meanwhile is never overwritten with a stale value. Several processes may use one book at once: the contract
//!   assumes no single writer.
//! - **Instants are kept in whole seconds.** Every instant is stored rounded down to its second, except the check
//!   times of unresolved charges (`check_at`, "not before" instants), which are rounded up so that rounding never
//!   makes a look at a charge earlier than its quiet period allows (RELIABILITY §13). An instant that must never be
//!   recorded before it happened (a pause) is passed already rounded up, with [`ceil_second`].
//! - **Reads without a write** see committed rows only.
//! - **Every change publishes its events in its own transaction** ([`Outbox`]): a method that records a charge's
//!   outcome (paid, failed with a retry or a final action), a refund, a subscription's creation, status change,
//!   plan change or update, or a period skipped or paid by credit, writes the public event of it into the outbox in
//!   the same transaction. No event without its change, no change without its event.

pub mod contract;
mod notices;
pub mod postgres;
pub mod sql;
pub mod sqlite;
mod values;

pub use notices::{NoticeTarget, Notices};
pub use values::*;

use crate::billing::calendar::ChargeClock;
use crate::billing::model::{Pause, Status, Subscription};
use crate::billing::quiet::RealInstant;
use crate::billing::sync::SyncPlan;
use anyhow::Result;
use chrono::{DateTime, Utc};

/// The schema version the SQLite adapter writes (its migrations; `billd` refuses a newer one).
pub use sqlite::SCHEMA_VERSION;

/// An instant from UNIX seconds (the resolution the book keeps).
pub fn from_ts(t: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(t, 0).unwrap_or_default()
}

/// `t` rounded up to its next whole second (unchanged when it is one): for an instant that must never be recorded
/// earlier than it happened, or a "not before" instant.
pub fn ceil_second(t: DateTime<Utc>) -> DateTime<Utc> {
    from_ts(t.timestamp() + i64::from(t.timestamp_subsec_nanos() > 0))
}

// ---- the contract ----------------------------------------------------------------------------------------------------

/// Subscriptions: the book of what is billed, and the changes the config, commands and imports make to it.
pub trait Book {
    /// The subscriptions that came from the config file, by id.
    fn config_subscriptions(&self) -> Result<Vec<Subscription>>;

    /// One subscription (`None`: no such id).
    fn subscription(&self, id: &str) -> Result<Option<Subscription>>;

    /// Applies the config to the book in one write transaction. `plan` gets the config-sourced subscriptions **as
    /// they are inside that transaction** (never the whole book: a sync costs what the file manages), and returns
    /// the changes (or an error: nothing is written). An update is applied only if the subscription's next period
    /// and status are still those `plan` saw (otherwise an error, and nothing of the plan is applied); a cancel
    /// follows [`crate::billing::status::next_status`] for an operator's cancel. A config entry whose id is in the
    /// book already (added by command or import), or differs from one only by case, is not added (logged). An update
    /// of a subscription with a pending plan change is held (left out of the plan returned, with a warning): the
    /// change settles from the plan it was made from, and a later sync applies the file. Nothing is written when the
    /// plan is empty.
    fn sync_with(
        &self,
        clock: &ChargeClock,
        now: DateTime<Utc>,
        plan: impl FnOnce(&[Subscription]) -> Result<SyncPlan>,
    ) -> Result<SyncPlan>;

    /// An operator's status change (pause, cancel), decided by [`crate::billing::status::next_status`] from the
    /// status read inside the write transaction, recorded with `reason` as a `subscription.<status>` event in the
    /// same transaction. A suspension records `now` as the instant of the pause. Returns the status before, the
    /// claimed charges it voided and those already at the gateway (`None`: no such subscription).
    ///
    /// **Every** status change to a status that does not bill (this one, a sync's cancel, a suspension by
    /// dunning or a taken merchant_uid) voids, in its own transaction, the subscription's claimed attempts whose
    /// requests have not left (no [`Ledger::begin_send`] yet): once it commits, none of them can be sent.
    fn set_status(&self, id: &str, to: Status, now: DateTime<Utc>, reason: &str) -> Result<Option<StatusSet>>;

    /// Resumes a suspended subscription, in one write transaction: `restart` gets the subscription and its pause
    /// (when it began, when it ends by itself, its catch-up) as they are inside it (so a sync that changed its
    /// calendar meanwhile, or a pause given another end, is seen), and returns the period to restart at, its due
    /// instant and the skip windows to keep (or an error: nothing written). The subscription becomes active only if
    /// it is still suspended at the same next period (otherwise an error, nothing written); its open period, if it
    /// has one that is not unresolved or held by a mismatch, is retried at `now`; a scheduled resume
    /// ([`Book::pause`]'s `until`) is cleared; the event says `reason`. Then, in the same transaction, as
    /// [`crate::billing::status::next_status`] decides: one with nothing left to bill is ended at once, as
    /// [`Book::end_canceling`] ends it (canceled once its `cancel_at` came, completed once its term is over), and one
    /// with a `cancel_at` still to come is canceling again. Returns the subscription as it was and the restart
    /// period. An error (nothing written) if there is no such subscription, it is not suspended, or dunning suspended
    /// it (`billd reactivate` restarts that).
    fn resume_with(
        &self,
        id: &str,
        now: DateTime<Utc>,
        reason: &str,
        restart: impl FnOnce(&Subscription, &Pause) -> Result<(u64, Option<DateTime<Utc>>, Vec<(i64, i64)>)>,
    ) -> Result<(Subscription, u64)>;

    /// An operator's pause: [`Book::set_status`] to suspended (same rules, same transaction), and with `until`, the
    /// instant it resumes by itself and whether the periods that fell due while paused are then charged
    /// (`catch_up`), kept only if the subscription is suspended (a canceled one is not). Any later status change
    /// forgets it; [`Book::resume_with`] clears it. With `until`, a subscription dunning suspended is refused (an
    /// error, nothing written): it is not the operator's pause, and only `billd reactivate` restarts it.
    fn pause(
        &self,
        id: &str,
        now: DateTime<Utc>,
        reason: &str,
        until: Option<(DateTime<Utc>, bool)>,
    ) -> Result<Option<StatusSet>>;

    /// A cancel at period end: in one write transaction, a subscription that bills becomes canceling (with its
    /// `subscription.canceling` event), no period due at or after `at` opens (its next period, if due then, never
    /// will), and [`Book::end_canceling`] cancels it at `at`. Returns its status before (`None`: no such
    /// subscription); one that does not bill is left as it is.
    fn cancel_at(&self, id: &str, at: DateTime<Utc>, now: DateTime<Utc>, reason: &str) -> Result<Option<Status>>;

    /// Reactivates a subscription that dunning canceled or suspended (`billd reactivate`), in one write transaction:
    /// an error, nothing written, if it is not canceled or suspended, or an operator or a sync stopped it. It becomes
    /// active (its event in the same transaction), billing continues at the period `restart` names from the
    /// subscription as it is inside the transaction, and with `charge_now` the last period given up is reopened,
    /// due now (charged under its own merchant_uid: the gateway refuses a merchant_uid only once paid). Returns the
    /// period billing continues at and the period reopened. Refused too (nothing written) when it would bill
    /// nothing: no period reopened and none ever due from the restart (its term is over, or its `cancel_at` passed).
    /// Then, as [`Book::resume_with`] does, one with a `cancel_at` still to come is canceling again.
    fn reactivate(
        &self,
        id: &str,
        now: DateTime<Utc>,
        charge_now: bool,
        restart: impl FnOnce(&Subscription) -> (u64, Option<DateTime<Utc>>),
    ) -> Result<(u64, Option<u64>)>;

    /// In one write transaction, each with its event: cancels every subscription that bills whose `cancel_at` is at
    /// or before `now` once nothing due before it is left to open or settle (the reason says "canceled at period
    /// end"), and every one paused by `pause --until` without catch-up whose `cancel_at` is (it never resumes past
    /// it: "while paused"; other pauses, and dunning's suspensions, hold); completes every one whose fixed term has
    /// nothing left to bill; returns those status changes (the status each moved to, and the credit its end
    /// released).
    fn end_canceling(&self, now: DateTime<Utc>) -> Result<Vec<StatusChange>>;

    /// The suspended subscriptions whose pause ends at or before `now` (`pause --until`), with their `catch_up`.
    fn resumes_due(&self, now: DateTime<Utc>) -> Result<Vec<(String, bool)>>;

    /// Adds a subscription created by command (source manual: a config sync never cancels it), with its
    /// `subscription.created` event, in one write transaction: its period 0 next, on its calendar's anchor (its first
    /// charge: its start, or its trial's end), with its status (trialing, active or canceling), term and cancel date
    /// as given. An error (nothing written) if its id is taken, or differs from an existing one only by case (checked
    /// inside the transaction), or its status does not bill.
    fn insert_manual(&self, s: &Subscription, next_due_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Result<()>;

    /// The charge clock in force: `billing.timezone` and `charge_time` as of the last sync (`None`: never synced).
    /// [`Book::sync_with`] with another clock re-times, in its transaction, the next due instant of every
    /// subscription that is not canceled (its next period, not yet claimed) and says so in the plan's `retimed`.
    fn book_clock(&self) -> Result<Option<ChargeClock>>;

    /// The safety stop in force (`None`: billing runs). While one that is not released is in force no pass claims
    /// or sends anything; a released one lets the next pass send up to the limit.
    fn safety_stop(&self) -> Result<Option<SafetyStop>>;

    /// Stops billing until an operator acts, with a `billing.stopped` event, in one write transaction. A stop in
    /// force that is not released is kept as it is (the first reason stands); a released one is replaced.
    fn stop_billing(&self, stop: &SafetyStop) -> Result<()>;

    /// The operator's confirmation: marks the stop in force released, with a `billing.released` event saying
    /// `why`, in one write transaction; returns the stop as it was (`None`: there was none, nothing is written).
    fn release_billing(&self, why: &str, now: DateTime<Utc>) -> Result<Option<SafetyStop>>;

    /// Removes the stop in force (a raised limit, or a released stop whose pass did not trip again), with a
    /// `billing.resumed` event saying `why`; `only_released`: only if it is released. Returns whether one was removed.
    fn lift_safety_stop(&self, why: &str, only_released: bool, now: DateTime<Utc>) -> Result<bool>;

    /// For an import's check: the subscription with this id as the import compares it, and another subscription
    /// whose id equals `id` but for case, if any.
    fn import_lookup(&self, id: &str) -> Result<(Option<ImportedAs>, Option<String>)>;

    /// Inserts a chunk of imported subscriptions in one write transaction, each with its `subscription.created`
    /// event. A row whose id is in the book already is not changed: `existing(i, have)` gets row `i` and that
    /// subscription as it is inside the transaction, and returns an error (nothing of the chunk is written) or Ok
    /// (the row is skipped). Returns how many rows were inserted and how many skipped.
    fn import_chunk(
        &self,
        rows: &[ImportRow],
        now: DateTime<Utc>,
        existing: impl FnMut(usize, &ImportedAs) -> Result<()>,
    ) -> Result<(usize, usize)>;
}

/// Periods and attempts: the exactly-once charging protocol. An attempt row is the intent of a charge request; it
/// is committed before the request may be sent, and at most one attempt of a period is unresolved at a time.
pub trait Ledger {
    /// How many billed subscriptions have their next period due at or before `now` (amount within `max_amount`)
    /// and no open period: what [`Ledger::open_and_claim`] would open without a limit.
    fn subscriptions_to_open_count(&self, now: DateTime<Utc>, max_amount: i64) -> Result<usize> {
        self.subscriptions_to_open_count_within(&Scope::ALL, now, max_amount)
    }

    /// [`Ledger::subscriptions_to_open_count`] within `scope`: what [`Ledger::open_and_claim_within`] would open.
    fn subscriptions_to_open_count_within(&self, scope: &Scope, now: DateTime<Utc>, max_amount: i64) -> Result<usize>;

    /// Claims up to `limit` due attempts of open periods (their next attempt due at or before `now`, amount within
    /// `max_amount`, of billed subscriptions; retries and leftovers by next attempt time), in one write
    /// transaction: each claimed period gets a new attempt (pending, recording `timeout_ms`, the gateway timeout its
    /// request is sent with) and no next attempt time, so no later claim (by this or another process) claims it
    /// again. The intents are durable before it returns: only then may their requests be sent.
    fn claim_due(&self, now: DateTime<Utc>, limit: usize, max_amount: i64, timeout_ms: u64) -> Result<Vec<Attempt>>;

    /// One step of a pass, in one write transaction: claims as [`Ledger::claim_due`] (up to `limit`), then fills
    /// the page by opening up to `open_limit` due periods (of subscriptions as
    /// [`Ledger::subscriptions_to_open_count`] counts them, read inside the transaction, oldest due first; each
    /// built by `make`) and claiming their first attempts. Opening a period advances its subscription to the
    /// following period, only if its next period is still the one `make` saw (otherwise an error, nothing
    /// written). Every intent is durable before it returns.
    ///
    /// A period whose merchant_uid is already taken (by another period, or a one-time charge) is not opened: its
    /// subscription is suspended, in the same transaction, as [`crate::billing::status::Cause::MerchantUidTaken`]
    /// decides and with [`crate::billing::status::merchant_uid_taken_reason`]; it is returned in
    /// [`ClaimStep::refused`], and the rest of the page goes on.
    ///
    /// A subscription's credit ([`Changes::credit`]) pays its period first
    /// ([`crate::billing::proration::apply_credit`], read and spent inside the transaction): its attempts charge
    /// what the credit leaves, and a period the credit covers whole is recorded paid with no attempt (never a
    /// charge of 0), with a `period.paid_by_credit` event. A subscription with a pending plan change opens nothing.
    fn open_and_claim(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        open_limit: usize,
        max_amount: i64,
        timeout_ms: u64,
        make: impl Fn(&DueSubscription) -> NewPeriod,
    ) -> Result<ClaimStep> {
        self.open_and_claim_within(&Scope::ALL, now, limit, open_limit, max_amount, timeout_ms, make)
    }

    /// [`Ledger::open_and_claim`] within `scope`: only the periods of `scope.only` (if set) are claimed or opened,
    /// and no period due before `scope.not_before` is opened (an open period's retry is claimed whatever its due).
    #[allow(clippy::too_many_arguments)]
    fn open_and_claim_within(
        &self,
        scope: &Scope,
        now: DateTime<Utc>,
        limit: usize,
        open_limit: usize,
        max_amount: i64,
        timeout_ms: u64,
        make: impl Fn(&DueSubscription) -> NewPeriod,
    ) -> Result<ClaimStep>;

    /// `billing.catch_up_window`, a read of committed rows: the billed subscriptions (of `only`, if given) with no
    /// open period and no pending plan change whose next period fell due before `cutoff`, in (next due instant, id)
    /// order after the key `after`, at most `limit` (paging by the last key returned yields each once, and a
    /// subscription settled meanwhile whose next period is still due before `cutoff` comes again, later). Their
    /// periods are looked up at the gateway, then settled by [`Ledger::settle_stale`].
    fn stale_due(
        &self,
        cutoff: DateTime<Utc>,
        only: Option<&str>,
        after: Option<(DateTime<Utc>, &str)>,
        limit: usize,
    ) -> Result<Vec<DueSubscription>>;

    /// `billing.catch_up_window`: settles periods older than the window (each built from a [`Ledger::stale_due`] row)
    /// as their lookup at the gateway found them, in one write transaction that decides from the rows inside it. Each
    /// is written only if its subscription still bills, has no open period and its next period is still that one
    /// (otherwise it is left alone, for a later pass):
    /// - [`StaleFound::Paid`]: recorded paid with one paid attempt under its merchant_uid and the gateway's imp_uid
    ///   (a payment the book did not know, as after a backup is restored: refundable as any other), with a
    ///   `charge.paid` event;
    /// - [`StaleFound::NotPaid`]: recorded skipped (never charged; its merchant_uid kept when free), with a
    ///   `period.skipped` event saying its reason;
    ///
    /// and its subscription advances to the period following it; the last period of a fixed term completes it
    /// ([`crate::billing::status::Cause::TermEnded`]). A period whose merchant_uid another charge holds (another
    /// case, a one-time charge) is not recorded paid: skipped, saying so. Returns the indexes of `items` written.
    fn settle_stale(&self, items: &[(NewPeriod, StaleFound)], now: DateTime<Utc>) -> Result<Vec<usize>>;

    /// Takes over the unresolved attempts to reconcile now: every pending one (left by a process that stopped) and
    /// every unknown one whose check time is at or before `now`, of no live daemon but this handle's ([`Daemons`]:
    /// its owner is this handle's daemon, no one, or a daemon whose lease lapsed or ended, on the database's clock),
    /// in (subscription, period) order after the key `after`, at most `limit`, each stamped with this handle's daemon
    /// as its owner in one write transaction (so no other daemon touches it while this one's lease lives), and marked
    /// [`Attempt::taken_over`] if its owner was another daemon that may still run. Paging by the last key returned
    /// yields each such attempt once.
    fn unresolved_after(&self, now: DateTime<Utc>, after: Option<(&str, u64)>, limit: usize) -> Result<Vec<Attempt>>;

    /// [`Ledger::unresolved_after`] from the start.
    fn unresolved(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Attempt>> {
        self.unresolved_after(now, None, limit)
    }

    /// Number of unresolved attempts (pending or unknown), whenever their check is due.
    fn unresolved_count(&self) -> Result<usize>;

    /// imp_uids of the period's attempts (to tell a new decline from an old one in a lookup).
    fn known_imp_uids(&self, subscription_id: &str, period: u64) -> Result<Vec<String>>;

    /// The moment requests leave: in one write transaction, for each claimed attempt, checks that it is still
    /// wanted (pending, never sent, not voided) and its subscription still bills, and if so stamps it as sent at
    /// the real instant `at` (its request may leave from then on); an attempt that fails the check is released
    /// (as [`Ledger::release`]) in the same transaction. Durable before it returns. Returns the ids that may be
    /// sent: no other request may leave. Against a cancel, a pause or a sync (which void unsent attempts in their
    /// own transaction), exactly one of the two wins. Fenced ([`Daemons`]): an attempt this handle's daemon does not
    /// own is neither stamped nor released, and may not be sent.
    fn begin_send(&self, attempt_ids: &[i64], at: &RealInstant, now: DateTime<Utc>) -> Result<Vec<i64>>;

    /// Claims the resend of an unresolved attempt, as `a` was read (its status and tries: compare and set, so that
    /// of several processes that read the same attempt exactly one wins), only if its subscription still bills:
    /// marks it pending, sent at the real instant `at` with a request whose timeout is `timeout_ms`, durably before
    /// it returns (so the quiet period after the resend is never shorter). Returns whether this caller may resend
    /// it; `false`: another process changed it, it no longer bills, or this handle's daemon does not own it (fenced),
    /// and nothing may be sent.
    fn mark_resending(&self, a: &Attempt, at: &RealInstant, now: DateTime<Utc>, timeout_ms: u64) -> Result<bool>;

    /// Puts off the next look at unknown attempts whose real quiet period is not over: `(attempt id, tries as
    /// read, check time)`; a check time is only ever moved later, and only while the attempt is as read and this
    /// handle's daemon owns it (fenced). One write transaction.
    fn defer(&self, items: &[(i64, u32, DateTime<Utc>)]) -> Result<()>;

    /// Removes claimed attempts that were never sent (still pending, no [`Ledger::begin_send`]) and makes their
    /// periods due again at `now`, in one write transaction, of those this handle's daemon owns (fenced). Others
    /// are left as they are.
    fn release(&self, attempt_ids: &[i64], now: DateTime<Utc>) -> Result<()>;

    /// Records outcomes and their decisions in one write transaction (group commit): all of them or none (an error
    /// on any item writes nothing of the batch). A paid outcome pays its attempt and closes its period; a period
    /// never has two paid attempts (paying a second attempt of a paid period is an error). An unresolved outcome
    /// leaves its attempt unknown until the decision's check time (rounded up). Subscription statuses follow
    /// [`crate::billing::status::next_status`], from the status read inside the transaction (for a paid outcome,
    /// only for an attempt claimed while past due: nothing else can be made active by it). A decline counts
    /// against the period's retries unless its decision is [`crate::billing::dunning::Decision::BackToSchedule`].
    /// The last period of a fixed term ([`Attempt::ends_term`]) paid, or given up and skipped, completes its
    /// subscription in the same transaction ([`crate::billing::status::Cause::TermEnded`]). A period given up
    /// (retries exhausted) gives the credit it had taken back to its subscription, with a `period.credit_returned`
    /// event. Returns the status changes.
    ///
    /// Fenced ([`Daemons`]): an outcome of an attempt this handle's daemon does not own (another daemon took it
    /// over after this one's lease lapsed) writes nothing and is not an error; the rest of the batch is recorded.
    fn record(&self, items: &[Recorded], now: DateTime<Utc>) -> Result<Vec<StatusChange>> {
        Ok(self.record_fenced(items, now)?.0)
    }

    /// [`Ledger::record`], also returning the ids of the attempts whose outcomes were fenced off (nothing written).
    fn record_fenced(&self, items: &[Recorded], now: DateTime<Utc>) -> Result<(Vec<StatusChange>, Vec<i64>)>;

    /// The earliest instant at which something becomes due: a period, a retry, a check, or the end of a pause
    /// (`pause --until`: the pass that resumes it).
    fn next_wake(&self) -> Result<Option<DateTime<Utc>>>;

    /// Due charges held back because their amount is above `max_amount`: (subscription, period, amount), sorted,
    /// for subscriptions whose next period has fallen due and for open periods waiting for an attempt.
    fn over_amount_limit(&self, now: DateTime<Utc>, max_amount: i64) -> Result<Vec<(String, u64, i64)>>;

    /// Periods due at or before `now` that are not charged yet: open ones waiting for an attempt, and
    /// subscriptions whose next period has fallen due; those whose amount is above `max_amount` (held back, never
    /// sent) are not counted.
    fn due_backlog(&self, now: DateTime<Utc>, max_amount: i64) -> Result<i64> {
        self.due_backlog_within(&Scope::ALL, now, max_amount)
    }

    /// [`Ledger::due_backlog`] within `scope`: what [`Ledger::open_and_claim_within`] would claim and open.
    fn due_backlog_within(&self, scope: &Scope, now: DateTime<Utc>, max_amount: i64) -> Result<i64>;

    /// Failed attempts recorded at or after `since`.
    fn failed_since(&self, since: DateTime<Utc>) -> Result<i64>;

    /// A subscription's open period held by a mismatch: (period, merchant_uid, reason).
    fn held_period(&self, id: &str) -> Result<Option<(u64, String, String)>>;

    /// Makes a subscription's open period due at `now` (operator `retry`), with its event, in one write
    /// transaction; false if it has none waiting (an attempt in flight, or held). If that is ahead of its scheduled
    /// retry, the attempt claimed next carries the scheduled instant ([`Attempt::ahead_of`]; the same for
    /// [`Book::resume_with`]'s retry) until an outcome other than unresolved is recorded for it.
    fn retry_now(&self, id: &str, now: DateTime<Utc>) -> Result<bool>;
}

/// One-time charges: key-in ones made by `billd charge-once`, those of a stored billing key made by
/// `billd charge-key`; and their settlement.
pub trait OneTime {
    /// A one-time charge by merchant_uid (exactly as spelled).
    fn one_time(&self, merchant_uid: &str) -> Result<Option<OneTimeState>>;

    /// What holds `merchant_uid` compared without case: a subscription period, or a one-time charge (one spelled
    /// exactly so first). `None`: nothing. A read of committed rows; [`OneTime::begin_one_time`] checks it again
    /// inside its transaction.
    fn merchant_uid_holder(&self, merchant_uid: &str) -> Result<Option<MerchantUidHolder>>;

    /// Commits the intent of a one-time charge (pending) before it is sent, durably before it returns; returns its
    /// row id and its number of tries (which names this send). `prev_tries`: the row as the caller found it
    /// (`None`: there was none). A new one is inserted only if its merchant_uid has no row; if a period or another
    /// one-time charge holds it in another case (read inside the transaction), it is an error naming the holder and
    /// nothing is written. Its kind, billing key and subscription are those of the first try. An existing one is sent
    /// again only if its tries are still `prev_tries` and it is not paid (checked inside the transaction);
    /// otherwise `None`, and nothing may be sent. `check_at`: no pass looks at it before then. The charge of a plan
    /// change (kind proration) is begun only while its change is pending (read inside the transaction; otherwise an
    /// error, nothing written).
    /// The request may leave once it returns: the row is stamped as sent at the real instant `at`.
    #[allow(clippy::too_many_arguments)]
    fn begin_one_time(
        &self,
        c: &OneTimeCharge,
        at: &RealInstant,
        now: DateTime<Utc>,
        timeout_ms: u64,
        check_at: DateTime<Utc>,
        prev_tries: Option<i64>,
    ) -> Result<Option<(i64, i64)>>;

    /// The moment a one-time charge's request leaves: stamps it as sent at the real instant `at` (the "go": from then
    /// on it may have left), only if it is still `pending` under `tries` (no pass took it over as unknown or
    /// abandoned meanwhile, no rerun began another send of it), and, for the charge of a plan change, only while
    /// that change is pending and its subscription bills (a cancel or a pause withdraws it in its own transaction:
    /// exactly one of the two wins). Returns whether the request may leave; durable before it returns.
    fn one_time_go(&self, id: i64, tries: i64, at: &RealInstant) -> Result<bool>;

    /// Leaves a one-time charge unknown (no look at it before `check_at`, nor before its quiet period counted from
    /// the real instant `at`), with its event, if it is still unresolved and `tries` unchanged. Returns whether it
    /// did.
    #[allow(clippy::too_many_arguments)]
    fn one_time_unknown(
        &self,
        id: i64,
        tries: i64,
        reason: &str,
        at: &RealInstant,
        check_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool>;

    /// Records a one-time charge's outcome, with its event, if it is still pending or unknown, or was closed as
    /// abandoned (the answer of the `charge-once` that sent it is better evidence), and no other send of it began
    /// since the caller read it (`tries` unchanged, checked inside the transaction: a pass's lookup never
    /// overwrites a rerun's send in progress). A paid outcome also replaces a recorded failure other than a
    /// mismatch (a payment found is proof: the gateway pays a merchant_uid at most once, and billd must know every
    /// payment it caused). A paid one is never replaced. Returns whether it did.
    ///
    /// The charge of a plan change (kind proration): a paid outcome applies the change (as [`Changes::change_plan`]
    /// describes) in the same transaction, if the subscription still has the plan it was changed from; a failed
    /// one fails a pending change (the plan stays as it was), with a `subscription.plan_change_failed` event.
    #[allow(clippy::too_many_arguments)]
    fn finish_one_time(
        &self,
        id: i64,
        tries: i64,
        status: ChargeStatus,
        failure: Option<Failure>,
        imp_uid: Option<&str>,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool>;

    /// One-time charges still pending or unknown whose check time is at or before `now` (older ones first). A row
    /// from before schema 6 has no check time: it is looked at `fallback` after its last change.
    fn unresolved_one_time(
        &self,
        now: DateTime<Utc>,
        fallback: chrono::Duration,
        limit: usize,
    ) -> Result<Vec<UnresolvedOneTime>>;

    /// Puts off a pass's next look at an unresolved one-time charge whose real quiet period is not over, to
    /// `check_at` (only later, and only while its tries are still `tries`).
    fn defer_one_time(&self, id: i64, tries: i64, check_at: DateTime<Utc>) -> Result<()>;
}

/// Refunds of paid charges: the intent of each `billd refund` committed before its request may leave, its settlement
/// by a lookup of the payment (never by sending again), and refunds made outside billd found in a payment's cancel
/// history. A charge is a paid attempt of a period or a paid one-time charge, named by its merchant_uid exactly as
/// stored. At most one refund of a charge is unresolved (pending or unknown) at a time.
pub trait Refunds {
    /// The charge `merchant_uid` as a refund sees it: what was paid, what was refunded, its refund in doubt
    /// (`None`: no charge has it). Committed rows only.
    fn refund_target(&self, merchant_uid: &str) -> Result<Option<RefundTarget>>;

    /// Commits the intent of a refund (pending, with a `refund.pending` event) before its request may leave, in one
    /// write transaction that decides from the rows as they are inside it: the charge exists and is paid, the same
    /// refund (a billd refund of the charge with the same amount and reason; without an amount, one of the whole
    /// balance then with the same reason, once nothing remains) is neither refunded nor in doubt
    /// ([`RefundRefused::Made`]), no other refund of it is unresolved, and the amount (`None`: all that remains) is at most what was paid less every
    /// refund of it not known to have failed, and (issue 25) within what its period may refund beside the credit
    /// the plan changes of that period left ([`RefundRefused::Credited`]), and the charge's subscription has no plan
    /// change whose charge is not settled ([`RefundRefused::ChangePending`]). Otherwise nothing is written and the
    /// reason is returned. The row
    /// records the checksum (what remains, as billd knows it), `timeout_ms`, the real instant `at` and `check_at`
    /// (no pass looks at it before then). So refunds begun at once by several processes never add up to more than
    /// the charge. Durable before it returns.
    fn begin_refund(
        &self,
        r: &NewRefund,
        at: &RealInstant,
        now: DateTime<Utc>,
        timeout_ms: u64,
        check_at: DateTime<Utc>,
    ) -> Result<std::result::Result<RefundRow, RefundRefused>>;

    /// The moment a refund's request leaves: stamps the real instant `at` on it, only if it is still pending (no
    /// pass took it over as unknown meanwhile). Returns whether the request may leave; durable before it returns.
    fn refund_go(&self, id: i64, at: &RealInstant) -> Result<bool>;

    /// Records that the gateway refused a refund (failed: nothing refunded), with a `refund.failed` event, in one
    /// write transaction, if it is still pending or unknown. Returns whether it did.
    fn refund_refused(&self, id: i64, reason: &str, now: DateTime<Utc>) -> Result<bool>;

    /// Leaves a refund unknown, with a `refund.unknown` event, in one write transaction, if it is still pending or
    /// unknown: no look at it before `check_at`, nor before its quiet period counted from the real instant `at`.
    /// Returns whether it did.
    fn refund_unknown(
        &self,
        id: i64,
        reason: &str,
        at: &RealInstant,
        check_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool>;

    /// Settles the refunds of charge `merchant_uid` against the payment's refunds at the gateway (`paid`: its amount;
    /// `seen`: its cancel history, from a lookup or a refund's answer), in one write transaction that decides from
    /// the rows inside it ([`crate::billing::refunds::attribute`]):
    /// - its refund in doubt is refunded if the history holds it (recording the entry's id, with a
    ///   `charge.refunded` event); if not, a pending one is left alone until its check time (the command that began
    ///   it may still be sending it), then becomes unknown, its quiet period counted from `real_now` (its request
    ///   may have left later than recorded); an
    ///   unknown one whose quiet period is over at `real_now` fails (nothing refunded, `refund.failed`); otherwise
    ///   it stays unknown, its next look put off to the end of its quiet period;
    /// - then, if none of its refunds is in doubt, every entry of the history no row records is recorded as a refund
    ///   made outside billd (refunded, source external, with a `charge.refunded` event).
    ///
    /// A charge that is not paid in the book changes nothing.
    fn settle_refunds(
        &self,
        merchant_uid: &str,
        paid: i64,
        seen: &[SeenRefund],
        real_now: &RealInstant,
        now: DateTime<Utc>,
    ) -> Result<RefundsSettled>;

    /// Refunds in doubt whose check time is at or before `now` (the oldest first), at most `limit`.
    fn unresolved_refunds(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<RefundRow>>;

    /// Paid charges (paid at or after `since`, if given) after the merchant_uid `after` in merchant_uid order, at
    /// most `limit`: paging by the last one returned yields each once.
    fn paid_charges(&self, since: Option<DateTime<Utc>>, after: Option<&str>, limit: usize) -> Result<Vec<PaidCharge>>;

    /// Refunds begun (or, for external ones, made) at or after `since`, in the order they were recorded.
    fn list_refunds(&self, since: Option<DateTime<Utc>>) -> Result<Vec<RefundRow>>;
}

/// Plan changes (`billd subscriptions change`, issue 25) and the credit they leave to a subscription.
pub trait Changes {
    /// Records a plan change decided from the subscription as the caller read it, in one write transaction that
    /// decides from the rows inside it. Refused (nothing written; the reason returned) unless the subscription
    /// exists, bills, still has plan `from_plan_id`, has no open period and no pending change, its next period is
    /// still the one the change was decided from (`period` at period end, `period + 1` now) and it has exactly
    /// `seen` plan changes (so a change decided from a stale read, or twice at once, is never applied). A change
    /// now is refused for a period any of whose charges (its own, and the change charges that are its money:
    /// [`crate::billing::credit::ChangeMoney::charge_period`]) has a refund, made, in doubt or failed.
    ///
    /// The credit the subscription holds pays an amount owed first
    /// ([`crate::billing::proration::apply_credit`], read inside the transaction): the row returned says how much
    /// ([`PlanChange::credit_used`], spent when the change applies) and what is charged ([`PlanChange::charge`]);
    /// a change the credit pays whole has no merchant_uid and is applied at once.
    ///
    /// A change that charges is kept pending and the subscription is left as it is until its charge (the one-time
    /// charge `merchant_uid`, kind proration) is settled: [`OneTime::finish_one_time`] settles it in its own
    /// transaction, and fails it if the charge fails; meanwhile no period of the subscription opens (and a sync
    /// does not move it). A charge found paid applies the change only if
    /// [`crate::billing::proration::paid_change_applies`] says it still does to the subscription as it is inside
    /// that transaction (pending, same plan, still billing, same next period, ...); otherwise the change fails and
    /// its charge is credited to the subscription (`subscription.plan_change_credited`), released at once as
    /// refundable if the subscription has ended: never left pending, never applied to a subscription that moved. A
    /// change dated before the subscription's last change not failed is refused. Any other change is applied at
    /// once. Applying one makes the subscription bill the new plan (plan, name, amount, interval; the calendar
    /// given for a change at period end or one that restarts the interval, none for one that keeps the period),
    /// adds a credit (`owed < 0`) to its credit and spends the credit used, records the new plan's first period
    /// paid when the change opens one, with a `subscription.plan_changed` event, in the same transaction.
    fn change_plan(
        &self,
        c: &PlanChange,
        seen: usize,
        now: DateTime<Utc>,
    ) -> Result<std::result::Result<PlanChangeRow, String>>;

    /// Fails the pending change whose charge is `merchant_uid`, with a `subscription.plan_change_failed` event, in one
    /// write transaction, only if no one-time charge holds that merchant_uid (its intent was never committed, so
    /// nothing of it can have been sent). Returns whether it did.
    fn abandon_plan_change(&self, merchant_uid: &str, reason: &str, now: DateTime<Utc>) -> Result<bool>;

    /// Fails, in one write transaction, every pending change recorded (its `created_at`, in billing time) at or
    /// before `recorded_before` whose charge has no intent (no one-time charge holds its merchant_uid, read inside
    /// the transaction: nothing of it can have been sent, and [`OneTime::begin_one_time`] refuses the intent of a
    /// change that is not pending, so of the two exactly one wins), each with a `subscription.plan_change_failed`
    /// event saying `reason`. A pass calls it, so that a change whose command died before its charge's intent (a
    /// kill -9) never holds its subscription forever. Returns the changes failed.
    fn abandon_unbegun_changes(
        &self,
        recorded_before: DateTime<Utc>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<PlanChangeRow>>;

    /// Settles the pending change whose charge `merchant_uid` is already recorded paid, as settling that charge
    /// does now ([`Changes::change_plan`]): applied, or, if the subscription moved to another plan, failed with the
    /// charge credited; in one write transaction. Such a change is left only by an older billd (its charge found
    /// paid after a sync moved the subscription): the change's rerun clears it. Returns whether it did (false for a
    /// change not pending or a charge not paid).
    fn settle_paid_change(&self, merchant_uid: &str, now: DateTime<Utc>) -> Result<bool>;

    /// Every plan change of a subscription, oldest first.
    fn plan_changes(&self, id: &str) -> Result<Vec<PlanChangeRow>>;

    /// Every pending plan change (each holds its subscription: no period of it opens), oldest first.
    fn pending_changes(&self) -> Result<Vec<PlanChangeRow>>;

    /// The credit a subscription holds, in its currency (0: none, or no such subscription).
    fn credit(&self, id: &str) -> Result<i64>;
}

/// The event log (what happened, for people and audits).
pub trait Events {
    /// Appends an event that belongs to no pass (a billing key registered by command, say), durably.
    fn log_event(
        &self,
        kind: &str,
        subscription: Option<&str>,
        detail: serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<()>;
}

/// The outbox: the public events of the book's changes (written by the methods that make them, see the module's
/// guarantees), read and marked by the webhook delivery service. Per stream (a subscription's events; the events of
/// no subscription are one stream), events are delivered in `sequence` order: one is deliverable only once every
/// earlier one of its stream is delivered or given up.
pub trait Outbox {
    /// Up to `limit` deliverable events at `now` after position `after` (an event's [`OutboxEvent::position`]; 0:
    /// from the start), in order of position: each stream's first pending event, if its `next_attempt_at` has come.
    /// A caller pages through with the last one's position (cheap on a large outbox: the scan goes forward).
    fn deliverable(&self, now: DateTime<Utc>, after: i64, limit: usize) -> Result<Vec<OutboxEvent>>;

    /// Whether event `id`, read by [`Outbox::deliverable`] with `attempts` attempts, is deliverable still at `now`:
    /// pending, tried by no one since (the same number of attempts), its `next_attempt_at` come, and no earlier
    /// event of its stream pending. A page read ahead can hold events that a replay (an earlier event pending
    /// again) or another handle's delivery made not deliverable since: checked right before each is sent.
    fn still_deliverable(&self, id: &str, attempts: u32, now: DateTime<Utc>) -> Result<bool>;

    /// Records delivery attempts of pending events, durably and all in one transaction (all or none), each as if
    /// recorded alone, in order: its `body` (what was sent; kept from the event's first attempt on, later values
    /// ignored), one more attempt, and its outcome (delivered, retry at, given up). For each, false (nothing
    /// written for it) if its event is not pending (delivered or given up meanwhile by another handle).
    fn deliveries_attempted(&self, attempts: &[DeliveryAttempt], now: DateTime<Utc>) -> Result<Vec<bool>>;

    /// [`Outbox::deliveries_attempted`] of one attempt.
    fn delivery_attempted(&self, id: &str, body: &str, outcome: &Delivery, now: DateTime<Utc>) -> Result<bool> {
        let attempt = DeliveryAttempt { id: id.to_owned(), body: body.to_owned(), outcome: outcome.clone() };
        Ok(self.deliveries_attempted(std::slice::from_ref(&attempt), now)?.first().copied().unwrap_or(false))
    }

    /// Gives up every pending event created before `before` that was never attempted (webhooks are off, or
    /// were): marked failed with `why`, replayable. Returns how many.
    fn expire_unsent(&self, before: DateTime<Utc>, why: &str, now: DateTime<Utc>) -> Result<usize>;

    /// Deletes events delivered or given up before `before` (pending ones are kept). Returns how many.
    fn prune_outbox(&self, before: DateTime<Utc>) -> Result<usize>;

    /// Events by `filter`, oldest first (at most `limit`).
    fn outbox_events(&self, filter: &OutboxFilter, limit: usize) -> Result<Vec<OutboxEvent>>;

    /// One event by id.
    fn outbox_event(&self, id: &str) -> Result<Option<OutboxEvent>>;

    /// Makes delivered or failed events pending again (attempts start over, due at `now`, given up after
    /// `give_up_at`); pending ones are left as they are. Returns the ids made pending.
    fn replay(&self, which: &Replay, give_up_at: DateTime<Utc>, now: DateTime<Utc>) -> Result<Vec<String>>;

    /// Counts for metrics.
    fn outbox_stats(&self) -> Result<OutboxStats>;

    /// The earliest retry: the earliest `next_attempt_at` of a pending event already tried (a stream's head in its
    /// backoff), if any: the delivery service's next wake for retries. (Events never tried are delivered as soon as
    /// they are deliverable; those behind a head wait for it, whatever their own `next_attempt_at`.)
    fn next_delivery(&self) -> Result<Option<DateTime<Utc>>>;

    /// Publishes `subscription.trial_ending` once in a subscription's life for each trialing subscription whose
    /// trial ends (its first due instant) after `now` and at or before `until`, with its event, in one transaction.
    /// Returns their ids.
    fn announce_trials_ending(&self, until: DateTime<Utc>, now: DateTime<Utc>) -> Result<Vec<String>>;
}

/// Read-only views for the listings and `subscriptions show` (committed rows; no transaction held).
pub trait Views {
    /// Every subscription (or those with `status`) by id, with its derived state.
    fn list_subscriptions(&self, status: Option<Status>) -> Result<Vec<SubscriptionRow>>;

    /// Attempts in the order they were made, after the attempt id `after_id` (for `--follow`), with their ids:
    /// failed ones only, changed at or after `since`, of one subscription, as asked.
    fn list_charges(
        &self,
        failed_only: bool,
        since: Option<DateTime<Utc>>,
        subscription: Option<&str>,
        after_id: i64,
    ) -> Result<Vec<(i64, ChargeRow)>>;

    /// One-time charges as listing rows (kind `one_time`), in the order they were made: failed ones only, changed
    /// at or after `since`, tied to one subscription (`charge-key --subscription`), as asked.
    fn list_one_time(
        &self,
        failed_only: bool,
        since: Option<DateTime<Utc>>,
        subscription: Option<&str>,
    ) -> Result<Vec<ChargeRow>>;

    /// A subscription's next due instant (`None`: none, or no such subscription).
    fn next_due_at(&self, id: &str) -> Result<Option<DateTime<Utc>>>;

    /// Every period of a subscription with its attempts, oldest first; and the reason of its latest cancel or
    /// suspension, if any.
    fn subscription_story(&self, id: &str) -> Result<(Vec<PeriodStory>, Option<String>)>;

    /// Subscriptions that bill and have something to charge by `until` (their next period falls due, or an open
    /// period waits for an attempt), by id, for `upcoming`.
    fn billing_subscriptions(&self, until: DateTime<Utc>) -> Result<Vec<BillingSubscription>>;

    /// One subscription with its derived state, as [`Views::list_subscriptions`] lists it (`None`: no such id).
    fn subscription_row(&self, id: &str) -> Result<Option<SubscriptionRow>>;

    /// The pause of a suspended subscription: when it began, when it ends by itself, its catch-up (`None`: no such
    /// subscription, or it is not suspended).
    fn pause_of(&self, id: &str) -> Result<Option<Pause>>;

    /// The subscriptions paused until a date at or before `until` (`pause --until`; not one dunning suspended), with
    /// their pause and their open period waiting for an attempt, by id, for `upcoming`.
    fn resuming_by(&self, until: DateTime<Utc>) -> Result<Vec<PausedSubscription>>;

    /// The subscriptions of billing key `customer_uid` (compared without case) that dunning canceled or suspended,
    /// what `billd reactivate` restarts, by id with their status.
    fn stopped_by_dunning(&self, customer_uid: &str) -> Result<Vec<(String, Status)>>;

    /// The subscriptions that charge (or will charge again) the billing key `customer_uid`, compared without case
    /// (the gateway may not tell keys apart by case): every one not canceled whose key it is, or whose open period
    /// still charges it (a period keeps the key it opened with), by id, with its status and its own key.
    fn subscriptions_using(&self, customer_uid: &str) -> Result<Vec<(String, Status, String)>>;

    /// The prices the subscriptions added by command or import that still bill are charged, per plan: (plan id,
    /// amount, how many), by plan and amount. A read of committed rows (for `billd sync`'s note on grandfathered
    /// prices: a config sync never changes those subscriptions).
    fn manual_prices(&self) -> Result<Vec<(String, i64, u64)>>;
}

/// The daemons sharing a book (issue 27). Every process that charges (`billd run`, `tick`, a command that runs a
/// pass) joins the book with a lease it renews, measured on the database's clock (one clock for every daemon, so
/// that skew between servers never shortens a lease). An attempt records its owner: the daemon that claimed it or
/// took it over. While its owner's lease lives, no other daemon takes it; once the lease lapsed or ended, the next
/// sweep ([`Ledger::unresolved_after`]) takes it over as a stopped process's. Every write about an attempt after
/// its claim (its go, its release, its next look, its resend, its outcome) is fenced: made only by its owner, so a
/// daemon that lost its lease writes nothing over the daemon that took its work. A daemon's id is never reused and a
/// lapsed lease is never renewed: the owner is the fence.
pub trait Daemons {
    /// Joins the book as a new daemon with a lease of `lease` from the database's clock now: from then on this
    /// handle stamps the attempts it claims or takes over with it, and its fenced writes require it. Returns the
    /// daemon's id and the database's clock (ms).
    fn join(&mut self, who: &DaemonInfo, lease: std::time::Duration) -> Result<(i64, i64)>;

    /// Renews the lease of daemon `daemon` (this process's, joined on any of its handles: the heartbeat runs on a
    /// handle of its own, never queued behind the engine's work) for `lease` from the database's clock now, only if
    /// it has neither lapsed nor ended (never revived: another daemon may have taken its work). Returns the
    /// database's clock (ms) when renewed; `None`: the lease is lost, and the daemon must send nothing more. Never
    /// waits for the book's other writers (a long import holds them): only for the daemons' own writes.
    fn heartbeat(&self, daemon: i64, lease: std::time::Duration) -> Result<Option<i64>>;

    /// Ends this handle's daemon's lease now, saying `why`: its unresolved attempts may be taken over at once.
    /// Nothing if it has not joined.
    fn leave(&self, why: &str) -> Result<()>;

    /// The database's clock, in milliseconds since the UNIX epoch.
    fn clock_ms(&self) -> Result<i64>;

    /// Whether this handle holds the one-at-a-time jobs `which`, taken if free. The billing jobs are a daemon's
    /// (this handle's, once joined): held while its lease lives, taken by another once it lapsed or ended (so a
    /// stopped daemon never keeps them). Webhook deliveries are a handle's, for its life (PostgreSQL: a session
    /// lock); on a book with one scheduler (SQLite), its process's.
    fn try_jobs(&mut self, which: Jobs) -> Result<bool>;

    /// The daemons that run, and those that left or lapsed within `recent` of the database's clock, oldest first.
    fn daemons(&self, recent: std::time::Duration) -> Result<Vec<DaemonRow>>;
}

/// Everything the engine and the commands need from a book. A handle may be moved to another thread; one handle is
/// used by one thread at a time (the engine serializes its calls), but other handles (other processes) may use the
/// same book at once.
pub trait Store:
    Book + Ledger + OneTime + Refunds + Changes + Events + Outbox + Views + Notices + Daemons + Send + 'static
{
    /// What names the book in messages: the database file (SQLite), or the server and database without credentials.
    fn location(&self) -> String;

    /// Makes this handle one of the book's schedulers (`run`, `tick`, or a command that runs a pass), until it is
    /// dropped (or its process dies): an error naming the book if it may not be one, however the other handles named
    /// the book (another path, a link). Enforced by the book itself, not by a file beside it. A SQLite book has one
    /// scheduler at a time (so every daemon lease left in it is ended: their processes are gone); several daemons
    /// share a PostgreSQL book ([`Daemons`]), none while a handle holds it whole.
    fn claim_scheduler(&mut self) -> Result<()>;

    /// Holds the whole book (`billd store copy`): an error naming the book while any scheduler holds it, or (on a
    /// book several daemons share) while a daemon's lease runs; then no scheduler may claim it until this handle is
    /// dropped.
    fn claim_book(&mut self) -> Result<()>;
}
