-- billd schema v1. Times are UNIX seconds (UTC); money is an integer amount in the currency's minor unit.

CREATE TABLE subscriptions (
    id            TEXT PRIMARY KEY,
    customer_uid  TEXT NOT NULL,
    plan_id       TEXT NOT NULL,
    plan_name     TEXT NOT NULL,
    amount        INTEGER NOT NULL CHECK (amount > 0),
    currency      TEXT NOT NULL,
    interval      TEXT NOT NULL,
    start_date    TEXT NOT NULL,
    -- Period p falls due on anchor_date + (p - anchor_period) x interval (rebased when the interval changes).
    anchor_date   TEXT NOT NULL,
    anchor_period INTEGER NOT NULL DEFAULT 0,
    -- The first period not yet opened, and its due instant (NULL when no period will ever fall due).
    next_period   INTEGER NOT NULL DEFAULT 0,
    next_due_at   INTEGER,
    status        TEXT NOT NULL CHECK (status IN ('active', 'past_due', 'suspended', 'canceled')),
    source        TEXT NOT NULL CHECK (source IN ('config', 'manual')),
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) STRICT;

CREATE INDEX subscriptions_next_due ON subscriptions (next_due_at) WHERE status IN ('active', 'past_due');

-- One row per billing period that has fallen due; amount and name are fixed when the period opens.
CREATE TABLE periods (
    subscription_id TEXT NOT NULL REFERENCES subscriptions (id),
    period          INTEGER NOT NULL,
    due_at          INTEGER NOT NULL,
    merchant_uid    TEXT NOT NULL UNIQUE,
    customer_uid    TEXT NOT NULL,
    amount          INTEGER NOT NULL CHECK (amount > 0),
    currency        TEXT NOT NULL,
    name            TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('open', 'paid', 'given_up')),
    declines        INTEGER NOT NULL DEFAULT 0,
    -- When the next attempt is to be sent; NULL while an attempt is unresolved or once the period is closed.
    next_attempt_at INTEGER,
    opened_at       INTEGER NOT NULL,
    closed_at       INTEGER,
    PRIMARY KEY (subscription_id, period)
) STRICT;

CREATE INDEX periods_next_attempt ON periods (next_attempt_at) WHERE state = 'open';

-- One row per charge attempt. The row is committed (status pending) before its request leaves the process.
CREATE TABLE attempts (
    id              INTEGER PRIMARY KEY,
    subscription_id TEXT NOT NULL,
    period          INTEGER NOT NULL,
    attempt         INTEGER NOT NULL,
    merchant_uid    TEXT NOT NULL,
    customer_uid    TEXT NOT NULL,
    amount          INTEGER NOT NULL CHECK (amount > 0),
    currency        TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'paid', 'failed', 'unknown')),
    failure         TEXT CHECK (failure IN ('declined', 'rejected', 'abandoned')),
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

-- The local guarantee: at most one paid attempt per subscription period, at most one unresolved one.
CREATE UNIQUE INDEX attempts_one_paid_per_period ON attempts (subscription_id, period) WHERE status = 'paid';
CREATE UNIQUE INDEX attempts_one_unresolved_per_period
    ON attempts (subscription_id, period) WHERE status IN ('pending', 'unknown');
CREATE INDEX attempts_unresolved ON attempts (check_at) WHERE status IN ('pending', 'unknown');
CREATE INDEX attempts_by_time ON attempts (updated_at);

-- Append-only history.
CREATE TABLE events (
    id              INTEGER PRIMARY KEY,
    at              INTEGER NOT NULL,
    kind            TEXT NOT NULL,
    subscription_id TEXT,
    detail          TEXT NOT NULL
) STRICT;

CREATE INDEX events_by_subscription ON events (subscription_id, id);

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
