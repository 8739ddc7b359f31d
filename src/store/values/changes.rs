//! The values of plan changes (issue 25, `billd subscriptions change`): a change as the command decides it, and as
//! the book keeps it.

use crate::billing::calendar::Interval;
use chrono::{DateTime, NaiveDate, Utc};

spelled! {
    /// When a plan change takes effect.
    ChangeTiming {
        /// At once: the current paid period is settled pro rata (a charge or a credit).
        Now = "now",
        /// From the next period not yet opened: nothing is settled.
        PeriodEnd = "period_end",
    }
}

spelled! {
    /// Where a plan change stands.
    ChangeState {
        /// Its charge is not settled yet: the subscription still bills the old plan, and no period opens.
        Pending = "pending",
        /// In force.
        Applied = "applied",
        /// Its charge was not paid: the plan is unchanged.
        Failed = "failed",
    }
}

/// A plan change, decided by the command from the subscription as it read it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanChange {
    pub subscription_id: String,
    pub timing: ChangeTiming,
    /// The instant of the change.
    pub at: DateTime<Utc>,
    /// `Now`: the paid period it settles; `PeriodEnd`: the first period billed on the new plan.
    pub period: u64,
    pub from_plan_id: String,
    pub from_amount: i64,
    pub from_interval: Interval,
    pub to_plan_id: String,
    pub to_plan_name: String,
    pub to_amount: i64,
    pub to_interval: Interval,
    /// `Now`: what the settled period costs from `at` on (a later change of the same period starts from it).
    pub rate: Option<i64>,
    /// What the customer owes for it: > 0 charged (less the credit they hold, [`PlanChange::credit_used`]) once
    /// under `merchant_uid`, < 0 credited (carried to the next periods' amounts), 0 nothing.
    pub owed: i64,
    /// The credit the subscription held that pays part of `owed` (decided by the store inside the transaction that
    /// records the change: the command passes 0). Spent when the change is applied.
    pub credit_used: i64,
    /// The charge's merchant_uid (`{prefix}-{subscription}-{period}-c{n}`), exactly when [`PlanChange::charge`] is
    /// more than 0.
    pub merchant_uid: Option<String>,
    /// The subscription's calendar once it is applied.
    pub anchor_date: NaiveDate,
    pub anchor_period: u64,
    pub next_period: u64,
    /// `None`: the next due instant is kept as it is (a change at period end, or one that keeps the period).
    pub next_due_at: Option<DateTime<Utc>>,
    /// A new interval made now: the new plan's first period (`period + 1`, from `at`), recorded paid by the change
    /// under this merchant_uid, and its amount.
    pub opens: Option<(String, i64)>,
    /// The subscription's fixed term once it is applied (`billing::terms::term_on_plan`): `Some(last)`, its last
    /// period (`Some(None)`: no term); `None`: left as it is (a change recorded before schema 20).
    pub last_period: Option<Option<u64>>,
}

impl PlanChange {
    /// What is charged for it: what is owed, less the held credit that pays part of it (0: nothing is charged).
    pub fn charge(&self) -> i64 {
        (self.owed - self.credit_used).max(0)
    }
}

/// A plan change as the book keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanChangeRow {
    pub id: i64,
    pub state: ChangeState,
    pub change: PlanChange,
    pub created_at: DateTime<Utc>,
    /// How much of the credit it added was released when the subscription ended (refundable since).
    pub released: i64,
}
