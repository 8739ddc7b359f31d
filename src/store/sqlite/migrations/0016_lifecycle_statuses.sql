-- billd schema v16: a subscription's life (issue 25). New statuses: `trialing` (its first period falls due when its
-- trial ends), `canceling` (billed until `cancel_at`, canceled then) and `completed` (its fixed term is over; final).
-- `bills` says, in one place for every query, which statuses are billed (`Status::bills`). `last_period`: the last
-- period of a fixed term (NULL: none); `cancel_at`: no period due at or after it opens (NULL: none). SQLite cannot
-- change a CHECK in place: the table is rebuilt (create, copy, drop, rename), as in v4.
CREATE TABLE subscriptions_v16 (
    id              TEXT PRIMARY KEY,
    customer_uid    TEXT NOT NULL,
    plan_id         TEXT NOT NULL,
    plan_name       TEXT NOT NULL,
    amount          INTEGER NOT NULL CHECK (amount > 0),
    currency        TEXT NOT NULL,
    interval        TEXT NOT NULL,
    start_date      TEXT NOT NULL,
    -- Period p falls due on anchor_date + (p - anchor_period) x interval (rebased when the interval changes).
    anchor_date     TEXT NOT NULL,
    anchor_period   INTEGER NOT NULL DEFAULT 0,
    -- The first period not yet opened, and its due instant (NULL when no period will ever fall due).
    next_period     INTEGER NOT NULL DEFAULT 0,
    next_due_at     INTEGER,
    status          TEXT NOT NULL CHECK (status IN ('trialing', 'active', 'past_due', 'canceling', 'suspended',
                                                    'canceled', 'completed')),
    source          TEXT NOT NULL CHECK (source IN ('config', 'manual')),
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    skip_windows    TEXT,
    suspended_at    INTEGER,
    discount        TEXT,
    resume_at       INTEGER,
    resume_catch_up INTEGER NOT NULL DEFAULT 0,
    last_period     INTEGER,
    cancel_at       INTEGER,
    bills           INTEGER GENERATED ALWAYS AS (status IN ('trialing', 'active', 'past_due', 'canceling')) VIRTUAL
) STRICT;

INSERT INTO subscriptions_v16 (id, customer_uid, plan_id, plan_name, amount, currency, interval, start_date,
                               anchor_date, anchor_period, next_period, next_due_at, status, source, created_at,
                               updated_at, skip_windows, suspended_at, discount, resume_at, resume_catch_up)
SELECT id, customer_uid, plan_id, plan_name, amount, currency, interval, start_date, anchor_date, anchor_period,
       next_period, next_due_at, status, source, created_at, updated_at, skip_windows, suspended_at, discount,
       resume_at, resume_catch_up
FROM subscriptions;
DROP TABLE subscriptions;
ALTER TABLE subscriptions_v16 RENAME TO subscriptions;

CREATE INDEX subscriptions_next_due ON subscriptions (next_due_at, id) WHERE bills;
CREATE INDEX subscriptions_from_config ON subscriptions (id) WHERE source = 'config';
CREATE INDEX subscriptions_id_nocase ON subscriptions (id COLLATE NOCASE);
CREATE INDEX subscriptions_resume_at ON subscriptions (resume_at) WHERE resume_at IS NOT NULL;
CREATE INDEX subscriptions_cancel_at ON subscriptions (cancel_at) WHERE cancel_at IS NOT NULL;
