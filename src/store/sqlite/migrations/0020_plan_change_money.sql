-- billd schema v20: what a plan change's money did, kept so that no credit is lost or given back twice (issue 25,
-- an outside review of plan changes):
--  * plan_changes.credit_used: the credit the subscription held that paid part of the change's charge (the charge
--    sent is owed - credit_used; a change the credit pays whole sends nothing and has no merchant_uid). The CHECK
--    that ties a merchant_uid to a charge changes with it, so the table is rebuilt (create, copy, drop, rename).
--  * plan_changes.released: how much of the credit this change added was released when its subscription ended
--    (canceled or completed with credit left): refundable from then on, never spent by a period.
--  * one_time_charges.go_wall_ms: the real instant (wall clock, ms) of the "go" that let its request leave; NULL
--    while it has not (a cancel or a pause withdraws a plan change whose charge has not left). Rows already there
--    may have left: they take their last change's instant.
CREATE TABLE plan_changes_v20 (
    id              INTEGER PRIMARY KEY,
    subscription_id TEXT NOT NULL REFERENCES subscriptions (id),
    timing          TEXT NOT NULL CHECK (timing IN ('now', 'period_end')),
    at              INTEGER NOT NULL,
    period          INTEGER NOT NULL,
    from_plan_id    TEXT NOT NULL,
    from_amount     INTEGER NOT NULL,
    from_interval   TEXT NOT NULL,
    to_plan_id      TEXT NOT NULL,
    to_plan_name    TEXT NOT NULL,
    to_amount       INTEGER NOT NULL CHECK (to_amount > 0),
    to_interval     TEXT NOT NULL,
    rate            INTEGER,
    owed            INTEGER NOT NULL DEFAULT 0,
    merchant_uid    TEXT UNIQUE,
    anchor_date     TEXT NOT NULL,
    anchor_period   INTEGER NOT NULL,
    next_period     INTEGER NOT NULL,
    next_due_at     INTEGER,
    opens_uid       TEXT,
    opens_amount    INTEGER,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'applied', 'failed')),
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    credit_used     INTEGER NOT NULL DEFAULT 0 CHECK (credit_used >= 0 AND credit_used <= max(owed, 0)),
    released        INTEGER NOT NULL DEFAULT 0 CHECK (released >= 0),
    CHECK ((owed - credit_used > 0) = (merchant_uid IS NOT NULL))
) STRICT;

INSERT INTO plan_changes_v20 (id, subscription_id, timing, at, period, from_plan_id, from_amount, from_interval,
                              to_plan_id, to_plan_name, to_amount, to_interval, rate, owed, merchant_uid, anchor_date,
                              anchor_period, next_period, next_due_at, opens_uid, opens_amount, state, created_at,
                              updated_at)
SELECT id, subscription_id, timing, at, period, from_plan_id, from_amount, from_interval, to_plan_id, to_plan_name,
       to_amount, to_interval, rate, owed, merchant_uid, anchor_date, anchor_period, next_period, next_due_at,
       opens_uid, opens_amount, state, created_at, updated_at
FROM plan_changes;
DROP TABLE plan_changes;
ALTER TABLE plan_changes_v20 RENAME TO plan_changes;
CREATE UNIQUE INDEX plan_changes_one_pending ON plan_changes (subscription_id) WHERE state = 'pending';
CREATE INDEX plan_changes_by_subscription ON plan_changes (subscription_id, id);

ALTER TABLE one_time_charges ADD COLUMN go_wall_ms INTEGER;
UPDATE one_time_charges SET go_wall_ms = coalesce(doubt_wall_ms, updated_at * 1000);
