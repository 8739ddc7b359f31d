-- billd schema v17: plan changes (issue 25, `billd subscriptions change`). Self-contained:
--  * subscriptions.credit: what a downgrade made now left to the customer, carried to the next periods' amounts.
--  * periods.credit: how much of a period's amount that credit paid (the attempts charge amount - credit; a period
--    whose credit is its whole amount was paid by credit, with no request).
--  * plan_changes: one row per change. `now` settles the paid `period` at `at` (owed > 0: charged once as
--    merchant_uid, the change applied when it is paid; owed < 0: credited); `period_end` bills the new plan from
--    `period`, the first period not yet opened. The calendar after it is kept so that the change can be applied by
--    whatever settles its charge (the command, its rerun, or a pass's lookup). At most one pending per subscription.
--  * one_time_charges.kind gains 'proration' (the charge of a change made now): SQLite cannot change a CHECK in
--    place, so the table is rebuilt (create, copy, drop, rename), as in v6.
ALTER TABLE subscriptions ADD COLUMN credit INTEGER NOT NULL DEFAULT 0 CHECK (credit >= 0);
ALTER TABLE periods ADD COLUMN credit INTEGER NOT NULL DEFAULT 0 CHECK (credit >= 0);

CREATE TABLE plan_changes (
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
    -- `now`: what the settled period costs from `at` on (the rate a later change of the same period starts from).
    rate            INTEGER,
    owed            INTEGER NOT NULL DEFAULT 0,
    merchant_uid    TEXT UNIQUE,
    anchor_date     TEXT NOT NULL,
    anchor_period   INTEGER NOT NULL,
    next_period     INTEGER NOT NULL,
    next_due_at     INTEGER,
    -- A new interval made now: the new plan's first period (period + 1), recorded paid at `at` under this uid.
    opens_uid       TEXT,
    opens_amount    INTEGER,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'applied', 'failed')),
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    CHECK ((owed > 0) = (merchant_uid IS NOT NULL))
) STRICT;
CREATE UNIQUE INDEX plan_changes_one_pending ON plan_changes (subscription_id) WHERE state = 'pending';
CREATE INDEX plan_changes_by_subscription ON plan_changes (subscription_id, id);

CREATE TABLE one_time_charges_v15 (
    id              INTEGER PRIMARY KEY,
    merchant_uid    TEXT NOT NULL UNIQUE,
    customer_uid    TEXT,
    name            TEXT NOT NULL,
    amount          INTEGER NOT NULL CHECK (amount > 0),
    currency        TEXT NOT NULL,
    card_masked     TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'paid', 'failed', 'unknown')),
    failure         TEXT CHECK (failure IN ('declined', 'rejected', 'abandoned', 'mismatch')),
    imp_uid         TEXT,
    fail_reason     TEXT,
    tries           INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    timeout_ms      INTEGER,
    check_at        INTEGER,
    doubt_wall_ms   INTEGER,
    doubt_boot_ms   INTEGER,
    doubt_boot_id   TEXT,
    kind            TEXT NOT NULL DEFAULT 'card' CHECK (kind IN ('card', 'key', 'proration')),
    subscription_id TEXT REFERENCES subscriptions (id)
) STRICT;

INSERT INTO one_time_charges_v15 (id, merchant_uid, customer_uid, name, amount, currency, card_masked, status, failure,
                                  imp_uid, fail_reason, tries, created_at, updated_at, timeout_ms, check_at,
                                  doubt_wall_ms, doubt_boot_ms, doubt_boot_id, kind, subscription_id)
SELECT id, merchant_uid, customer_uid, name, amount, currency, card_masked, status, failure,
       imp_uid, fail_reason, tries, created_at, updated_at, timeout_ms, check_at,
       doubt_wall_ms, doubt_boot_ms, doubt_boot_id, kind, subscription_id
FROM one_time_charges;
DROP TABLE one_time_charges;
ALTER TABLE one_time_charges_v15 RENAME TO one_time_charges;

CREATE INDEX one_time_unresolved ON one_time_charges (updated_at) WHERE status IN ('pending', 'unknown');
CREATE INDEX one_time_charges_merchant_uid_nocase ON one_time_charges (merchant_uid COLLATE NOCASE);
CREATE INDEX one_time_charges_by_subscription ON one_time_charges (subscription_id) WHERE subscription_id IS NOT NULL;
