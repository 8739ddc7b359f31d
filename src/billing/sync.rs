//! Pure sync planning: what applying `schedules.toml` changes in the database, before anything is written.

use crate::billing::calendar::Interval;
use crate::billing::model::{Source, Status, Subscription};
use crate::billing::terms;
use chrono::NaiveDate;
use std::collections::HashMap;
use std::path::Path;

/// One change to the database.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A subscription new to the database.
    Insert(Subscription),
    /// Plan, amount, name, currency or customer changes; they apply to periods not yet opened.
    Update { before: Box<Subscription>, after: Box<Subscription>, what: Vec<String> },
    /// Canceled because the file says so or no longer lists it (history is kept).
    Cancel { id: String, reason: String },
}

/// The changes a sync would make, and what it would leave alone with a warning.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncPlan {
    pub changes: Vec<Change>,
    /// Config entries the sync leaves alone on purpose, or changes worth a warning.
    pub warnings: Vec<String>,
    /// Remarks shown by `billd sync` only (e.g. entries canceled by dunning that the file still lists).
    pub notes: Vec<String>,
    /// New entries not added, with why (a start more than one period back without `catch_up`): errors.
    pub refused: Vec<String>,
    /// Set by the store when it applied the plan: `billing.timezone` or `charge_time` changed since the last sync,
    /// and every next charge not yet claimed was re-timed; says from what to what, and how many.
    pub retimed: Option<String>,
}

impl SyncPlan {
    pub fn cancels(&self) -> usize {
        self.changes.iter().filter(|c| matches!(c, Change::Cancel { .. })).count()
    }
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.retimed.is_none()
    }
}

/// What a subscription's entry in the file says beyond what [`Subscription`] holds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EntryKeys {
    /// `catch_up = true`: a start more than one period back is meant.
    pub catch_up: bool,
    /// `trial_ends`: its own trial end (the first charge), if it has one.
    pub trial_ends: Option<NaiveDate>,
}

/// Compares the subscriptions the config file wants (`wanted`, from `file`, whose billing time zone is `tz`; a
/// `canceled` entry has that status; `keys`: what each entry says beyond them) with the config-sourced subscriptions
/// in the database.
pub fn plan(
    wanted: &[Subscription],
    keys: &dyn Fn(&str) -> EntryKeys,
    (file, tz): (&Path, chrono_tz::Tz),
    db: &[Subscription],
    today: NaiveDate,
) -> SyncPlan {
    let catch_up = |id: &str| keys(id).catch_up;
    let mut out = SyncPlan::default();
    let by_id: HashMap<&str, &Subscription> = db.iter().map(|s| (s.id.as_str(), s)).collect();
    for wanted in wanted {
        let canceled = wanted.status == Status::Canceled;
        let Some(have) = by_id.get(wanted.id.as_str()) else {
            if canceled {
                out.changes.push(Change::Insert(wanted.clone())); // kept as canceled: nothing is ever charged
                continue;
            }
            // The first charge falls due at the anchor (the end of a trial, or the start).
            match backdated(wanted.interval, wanted.anchor_date, today) {
                Some(why) if !catch_up(&wanted.id) => out.refused.push(format!(
                    "subscription {:?} not added: {why}; set start to the next due date, or add `catch_up = true` \
                     to its entry in {} to charge them all",
                    wanted.id,
                    file.display()
                )),
                Some(why) => {
                    out.warnings.push(format!("subscription {:?} (catch_up = true): {why}", wanted.id));
                    out.changes.push(Change::Insert(wanted.clone()));
                }
                None => out.changes.push(Change::Insert(wanted.clone())),
            }
            continue;
        };
        if have.status.is_final() {
            if !canceled {
                let s = have.status;
                out.notes.push(format!(
                    "subscription {:?} is {s} in the database and stays {s}; add it under a new id to bill it again",
                    wanted.id
                ));
            }
            continue;
        }
        if canceled {
            out.changes
                .push(Change::Cancel { id: wanted.id.clone(), reason: "status = \"canceled\" in the config".into() });
            continue;
        }
        if have.source != Source::Config {
            out.warnings.push(format!(
                "subscription {:?} exists in the database (added by command); the config entry is ignored",
                wanted.id
            ));
            continue;
        }
        // A fixed term is counted in the periods of its interval, and a cancel date ends a period of it: a
        // subscription with either keeps its interval, and a change of its plan's interval is not applied at all (an
        // outsider's `end` was recounted with a new interval, billing weeks past it, or skipping a month before it;
        // another's was moved to a yearly plan and charged a year's price six weeks before its cancel date). The
        // rule of `subscriptions change`.
        let bounded = |s: &Subscription| s.last_period.is_some() || s.cancel_at.is_some();
        if have.interval != wanted.interval && (bounded(have) || bounded(wanted)) {
            out.warnings.push(format!(
                "subscription {:?}: its plan's interval {} -> {} is not applied, nor the rest of the change: a \
                 subscription with a fixed term or a cancel date keeps its interval (cancel it and add a new \
                 subscription)",
                wanted.id, have.interval, wanted.interval
            ));
            continue;
        }
        let mut after = (*have).clone();
        let mut what = Vec::new();
        if have.plan_id != wanted.plan_id {
            what.push(format!("plan {} -> {}", have.plan_id, wanted.plan_id));
        }
        if have.plan_name != wanted.plan_name {
            what.push(format!("name {:?} -> {:?}", have.plan_name, wanted.plan_name));
        }
        if have.amount != wanted.amount || have.currency != wanted.currency {
            what.push(format!("amount {} {} -> {} {}", have.amount, have.currency, wanted.amount, wanted.currency));
        }
        if have.customer_uid != wanted.customer_uid {
            what.push(format!("customer_uid {} -> {}", have.customer_uid, wanted.customer_uid));
        }
        after.plan_id = wanted.plan_id.clone();
        after.plan_name = wanted.plan_name.clone();
        after.amount = wanted.amount;
        after.currency = wanted.currency.clone();
        after.customer_uid = wanted.customer_uid.clone();
        // Before its first charge, a new start, or a new `trial_ends` of its own, moves the first due date (the
        // anchor), under the rule of a new subscription: one more than a period back is refused unless `catch_up` (an
        // outsider moved a start months back and one pass charged every period since). Its plan's trial is given when
        // it is added: another plan, or the plan's `trial` edited, never moves a trial end already promised (an
        // outsider's trialing subscription, moved to a plan without a trial, was charged 12 days before the trial
        // end `upcoming` and `subscriptions show` had said).
        let own_trial = keys(&wanted.id).trial_ends;
        let moves = have.next_period == 0
            && have.anchor_date != wanted.anchor_date
            && (have.start_date != wanted.start_date || own_trial.is_some());
        let moved_back = moves
            .then(|| backdated(wanted.interval, wanted.anchor_date, today))
            .flatten()
            .filter(|_| !catch_up(&wanted.id));
        if let Some(why) = &moved_back {
            out.refused.push(format!(
                "subscription {:?}: its first charge not moved to {}: {why}; set a later start, or add `catch_up = \
                 true` to its entry in {} to charge them all",
                wanted.id,
                wanted.anchor_date,
                file.display()
            ));
        } else if moves {
            after.anchor_date = wanted.anchor_date;
            if have.start_date == wanted.start_date {
                what.push(format!("first charge (trial end) {} -> {}", have.anchor_date, wanted.anchor_date));
            }
        } else if have.next_period == 0 && have.anchor_date != wanted.anchor_date {
            out.notes.push(format!(
                "subscription {:?}: its first charge stays on {} (its trial end when it was added), where its plan's \
                 trial would put it on {}: a plan's trial is given when a subscription is added, and another plan or \
                 an edited `trial` never moves a trial end already promised (set `trial_ends` on its entry to move \
                 it)",
                wanted.id, have.anchor_date, wanted.anchor_date
            ));
        }
        if have.start_date != wanted.start_date && moved_back.is_none() {
            if have.next_period == 0 {
                after.start_date = wanted.start_date;
                what.push(format!("start {} -> {}", have.start_date, wanted.start_date));
            } else {
                out.warnings.push(format!(
                    "subscription {:?}: start changed from {} to {} after billing began; ignored \
                     (cancel it and add a new subscription to bill on a new anchor)",
                    wanted.id, have.start_date, wanted.start_date
                ));
            }
        }
        if have.last_period != wanted.last_period {
            let show = |p: Option<u64>| p.map_or("no end".to_string(), |p| format!("{} periods", p + 1));
            let over = terms::term_over(wanted.last_period, have.next_period);
            let over = over.map(|w| format!(" ({w})")).unwrap_or_default();
            what.push(format!("term {} -> {}{over}", show(have.last_period), show(wanted.last_period)));
            after.last_period = wanted.last_period;
        }
        if have.cancel_at != wanted.cancel_at {
            what.push(format!(
                "cancel_at {} -> {}",
                terms::cancel_date(have.cancel_at, tz),
                terms::cancel_date(wanted.cancel_at, tz)
            ));
            after.cancel_at = wanted.cancel_at;
        }
        if have.discount != wanted.discount {
            let show = |d: Option<crate::billing::proration::Discount>| d.map_or("none".to_string(), |d| d.to_string());
            what.push(format!("discount {} -> {}", show(have.discount), show(wanted.discount)));
            after.discount = wanted.discount;
        }
        if have.interval != wanted.interval {
            // Keep the next due date and continue from it with the new interval.
            let (anchor, at) = rebase(have);
            after.interval = wanted.interval;
            after.anchor_date = anchor;
            after.anchor_period = at;
            what.push(format!("interval {} -> {} from period {at} ({anchor})", have.interval, wanted.interval));
        }
        if !what.is_empty() {
            out.changes.push(Change::Update { before: Box::new((*have).clone()), after: Box::new(after), what });
        }
    }
    let in_file: std::collections::HashSet<&str> = wanted.iter().map(|s| s.id.as_str()).collect();
    for have in db {
        if have.source == Source::Config && !have.status.is_final() && !in_file.contains(have.id.as_str()) {
            // The file's name, not its path: the reason is kept, and sent with the event to the merchant's app.
            let name = file.file_name().map_or_else(|| "the config".into(), |n| n.to_string_lossy());
            out.changes.push(Change::Cancel { id: have.id.clone(), reason: format!("removed from {name}") });
        }
    }
    out
}

fn rebase(s: &Subscription) -> (NaiveDate, u64) {
    match s.calendar().date_of(s.next_period) {
        Some(d) => (d, s.next_period),
        None => (s.anchor_date, s.anchor_period),
    }
}

/// Why a subscription starting `start` would have more than one period due at once on `today` (its second
/// period's date is already here): every period since the start would be charged in one pass. `None`: at most one
/// is due. One rule for every way a subscription enters (config, `subscriptions add`, `import`); each lets it in
/// only when told to catch up.
pub fn backdated(interval: Interval, start: NaiveDate, today: NaiveDate) -> Option<String> {
    let second = interval.nth_date(start, 1).filter(|d| *d <= today)?;
    Some(format!(
        "its start {start} is more than one period ({interval}) back (the period of {second} is already due too): \
         every period since then would be charged at once"
    ))
}

/// Whether a sync may cancel this many of the `active` billing subscriptions without `--force`:
/// at most 10% of them (always at least one), so a truncated file cannot cancel the book.
pub fn cancel_allowed(cancels: usize, active: usize) -> bool {
    cancels <= 1 || cancels * 10 <= active
}

/// Why `plan` may not be applied without `--force` (`None`: it may): it would cancel more than 10% (and more than
/// one) of the subscriptions the sync manages, the config's own that still bill (`managed`: the config-sourced
/// subscriptions as they are), so a truncated or wrong file cannot cancel them. Subscriptions added by command or
/// import, which a sync never cancels, do not dilute the count.
pub fn refusal(plan: &SyncPlan, managed: &[Subscription], file: &Path) -> Option<String> {
    let billed = managed.iter().filter(|s| s.status.bills()).count();
    (!plan.is_empty() && !cancel_allowed(plan.cancels(), billed)).then(|| {
        format!(
            "{}: applying it would cancel {} of the {billed} billed subscriptions it manages (more than 10%); \
             refusing, and nothing is charged until it is fixed or applied with `billd sync --force`",
            file.display(),
            plan.cancels()
        )
    })
}
