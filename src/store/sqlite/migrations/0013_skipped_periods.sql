-- billd schema v13: a period can be `skipped` (issue 25, `billing.catch_up_window`): due longer ago than the window
-- when a pass got to it, it was recorded and never charged (its merchant_uid stays reserved). SQLite cannot change a
-- CHECK in place: the table is rebuilt (create, copy, drop, rename), as in v4.
CREATE TABLE periods_v13 (
    subscription_id TEXT NOT NULL REFERENCES subscriptions (id),
    period          INTEGER NOT NULL,
    due_at          INTEGER NOT NULL,
    merchant_uid    TEXT NOT NULL UNIQUE,
    customer_uid    TEXT NOT NULL,
    amount          INTEGER NOT NULL CHECK (amount > 0),
    currency        TEXT NOT NULL,
    name            TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('open', 'paid', 'given_up', 'skipped')),
    declines        INTEGER NOT NULL DEFAULT 0,
    -- When the next attempt is to be sent; NULL while an attempt is unresolved or once the period is closed.
    next_attempt_at INTEGER,
    opened_at       INTEGER NOT NULL,
    closed_at       INTEGER,
    -- The scheduled retry an operator's retry went ahead of (v10).
    retry_ahead_of  INTEGER,
    PRIMARY KEY (subscription_id, period)
) STRICT, WITHOUT ROWID;

INSERT INTO periods_v13 (subscription_id, period, due_at, merchant_uid, customer_uid, amount, currency, name, state,
                         declines, next_attempt_at, opened_at, closed_at, retry_ahead_of)
SELECT subscription_id, period, due_at, merchant_uid, customer_uid, amount, currency, name, state,
       declines, next_attempt_at, opened_at, closed_at, retry_ahead_of
FROM periods;
DROP TABLE periods;
ALTER TABLE periods_v13 RENAME TO periods;

CREATE INDEX periods_next_attempt ON periods (next_attempt_at, due_at, subscription_id)
    WHERE state = 'open' AND next_attempt_at IS NOT NULL;
