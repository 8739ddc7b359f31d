-- billd schema v4: fewer B-tree writes per charge, so a billing day drains at the gateway's speed (issue 7; the
-- figures are in BENCHMARKS.md). Same columns, same guarantees:
--  * periods is keyed by its primary key alone (WITHOUT ROWID: one B-tree instead of a table plus its key index);
--  * CHECK constraints spelled `x = 'a' OR x = 'b'` instead of `x IN ('a', 'b', 'c')` (the same constraint; SQLite
--    builds a temporary table for an IN list of three or more values on every row it writes);
--  * the due-attempt index holds only periods waiting for an attempt (not those with one in flight or closed);
--  * unresolved attempts are found through the one-unresolved-per-period index (it holds exactly them), and the
--    time index holds only failed attempts (the STATUS line's "failed today"); listings page by id.
-- Tables are rebuilt by SQLite's documented procedure (foreign keys are off around this migration and checked
-- before it commits; see Store::migrate).

CREATE TABLE periods_v4 (
    subscription_id TEXT NOT NULL REFERENCES subscriptions (id),
    period          INTEGER NOT NULL,
    due_at          INTEGER NOT NULL,
    merchant_uid    TEXT NOT NULL UNIQUE,
    customer_uid    TEXT NOT NULL,
    amount          INTEGER NOT NULL CHECK (amount > 0),
    currency        TEXT NOT NULL,
    name            TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state = 'open' OR state = 'paid' OR state = 'given_up'),
    declines        INTEGER NOT NULL DEFAULT 0,
    -- When the next attempt is to be sent; NULL while an attempt is unresolved or once the period is closed.
    next_attempt_at INTEGER,
    opened_at       INTEGER NOT NULL,
    closed_at       INTEGER,
    PRIMARY KEY (subscription_id, period)
) STRICT, WITHOUT ROWID;

INSERT INTO periods_v4 (subscription_id, period, due_at, merchant_uid, customer_uid, amount, currency, name, state,
                        declines, next_attempt_at, opened_at, closed_at)
SELECT subscription_id, period, due_at, merchant_uid, customer_uid, amount, currency, name, state,
       declines, next_attempt_at, opened_at, closed_at
FROM periods;
DROP TABLE periods;
ALTER TABLE periods_v4 RENAME TO periods;

CREATE INDEX periods_next_attempt ON periods (next_attempt_at, due_at, subscription_id)
    WHERE state = 'open' AND next_attempt_at IS NOT NULL;

CREATE TABLE attempts_v4 (
    id              INTEGER PRIMARY KEY,
    subscription_id TEXT NOT NULL,
    period          INTEGER NOT NULL,
    attempt         INTEGER NOT NULL,
    merchant_uid    TEXT NOT NULL,
    customer_uid    TEXT NOT NULL,
    amount          INTEGER NOT NULL CHECK (amount > 0),
    currency        TEXT NOT NULL,
    status          TEXT NOT NULL
                    CHECK (status = 'pending' OR status = 'paid' OR status = 'failed' OR status = 'unknown'),
    failure         TEXT CHECK (failure = 'declined' OR failure = 'rejected' OR failure = 'abandoned'),
    imp_uid         TEXT,
    fail_reason     TEXT,
    -- Unresolved tries (transient errors, unknown outcomes, lookups) and when to look again.
    tries           INTEGER NOT NULL DEFAULT 0,
    check_at        INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    resolved_at     INTEGER,
    UNIQUE (subscription_id, period, attempt),
    FOREIGN KEY (subscription_id, period) REFERENCES periods (subscription_id, period)
) STRICT;

INSERT INTO attempts_v4 (id, subscription_id, period, attempt, merchant_uid, customer_uid, amount, currency, status,
                         failure, imp_uid, fail_reason, tries, check_at, created_at, updated_at, resolved_at)
SELECT id, subscription_id, period, attempt, merchant_uid, customer_uid, amount, currency, status,
       failure, imp_uid, fail_reason, tries, check_at, created_at, updated_at, resolved_at
FROM attempts;
DROP TABLE attempts;
ALTER TABLE attempts_v4 RENAME TO attempts;

-- The local guarantee: at most one paid attempt per subscription period, at most one unresolved one.
CREATE UNIQUE INDEX attempts_one_paid_per_period ON attempts (subscription_id, period) WHERE status = 'paid';
CREATE UNIQUE INDEX attempts_one_unresolved_per_period
    ON attempts (subscription_id, period) WHERE status IN ('pending', 'unknown');
CREATE INDEX attempts_failed_by_time ON attempts (updated_at) WHERE status = 'failed';
