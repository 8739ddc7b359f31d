-- billd schema v23: the charge path's speed back (the webhook benchmark found the store's cost a charge 3 to 4 times
-- that of November's benchmark). A CHECK spelled `x IN ('a', 'b', 'c')` builds a temporary index of its list each
-- time a statement that checks it runs (about 2 µs an INSERT or UPDATE; two values or fewer are compared directly),
-- and the rebuilds of v13, v16, v17, v19 and v20 had brought such lists back after v4 removed them. Every table with
-- one is rebuilt with the same rule spelled `x = 'a' OR x = 'b' OR ...` (create, copy, drop, rename, as in v4), and
-- `bills` too (its list is evaluated by every write of `subscriptions_next_due`); a test keeps lists of three values
-- or more out of the schema. The outbox loses its UNIQUE (stream, sequence): an event's sequence number is taken from
-- `outbox_streams` in its own transaction, unique by construction, and that index cost every event a write to a
-- random page of it (pending events keep their index). Also: an index of trialing subscriptions by due instant (the
-- trial-ending announcement read every billed subscription due within 3 days on every pass), and one of the events
-- never tried by creation (with webhooks off, each tick's housekeeping read every pending event to give up the old).
CREATE TABLE subscriptions_v23 (
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
    status          TEXT NOT NULL CHECK ((status = 'trialing' OR status = 'active' OR status = 'past_due'
                                      OR status = 'canceling' OR status = 'suspended' OR status = 'canceled'
                                      OR status = 'completed')),
    source          TEXT NOT NULL CHECK ((source = 'config' OR source = 'manual')),
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    skip_windows    TEXT,
    suspended_at    INTEGER,
    discount        TEXT,
    resume_at       INTEGER,
    resume_catch_up INTEGER NOT NULL DEFAULT 0,
    last_period     INTEGER,
    cancel_at       INTEGER,
    bills           INTEGER GENERATED ALWAYS AS ((status = 'trialing' OR status = 'active' OR status = 'past_due'
                                                 OR status = 'canceling')) VIRTUAL
,
    credit          INTEGER NOT NULL DEFAULT 0 CHECK (credit >= 0),
    stopped_by      TEXT CHECK (stopped_by = 'dunning')
) STRICT;
INSERT INTO subscriptions_v23 (id, customer_uid, plan_id, plan_name, amount, currency, interval, start_date,
    anchor_date, anchor_period, next_period, next_due_at, status, source, created_at, updated_at, skip_windows,
    suspended_at, discount, resume_at, resume_catch_up, last_period, cancel_at, credit, stopped_by)
SELECT id, customer_uid, plan_id, plan_name, amount, currency, interval, start_date, anchor_date, anchor_period,
    next_period, next_due_at, status, source, created_at, updated_at, skip_windows, suspended_at, discount,
    resume_at, resume_catch_up, last_period, cancel_at, credit, stopped_by FROM subscriptions;
DROP TABLE subscriptions;
ALTER TABLE subscriptions_v23 RENAME TO subscriptions;
CREATE INDEX subscriptions_next_due ON subscriptions (next_due_at, id) WHERE bills;
CREATE INDEX subscriptions_from_config ON subscriptions (id) WHERE source = 'config';
CREATE INDEX subscriptions_id_nocase ON subscriptions (id COLLATE NOCASE);
CREATE INDEX subscriptions_resume_at ON subscriptions (resume_at) WHERE resume_at IS NOT NULL;
CREATE INDEX subscriptions_cancel_at ON subscriptions (cancel_at) WHERE cancel_at IS NOT NULL;

CREATE TABLE periods_v23 (
    subscription_id TEXT NOT NULL REFERENCES subscriptions (id),
    period          INTEGER NOT NULL,
    due_at          INTEGER NOT NULL,
    merchant_uid    TEXT NOT NULL UNIQUE,
    customer_uid    TEXT NOT NULL,
    amount          INTEGER NOT NULL CHECK (amount > 0),
    currency        TEXT NOT NULL,
    name            TEXT NOT NULL,
    state           TEXT NOT NULL CHECK ((state = 'open' OR state = 'paid' OR state = 'given_up' OR state = 'skipped')),
    declines        INTEGER NOT NULL DEFAULT 0,
    -- When the next attempt is to be sent; NULL while an attempt is unresolved or once the period is closed.
    next_attempt_at INTEGER,
    opened_at       INTEGER NOT NULL,
    closed_at       INTEGER,
    -- The scheduled retry an operator's retry went ahead of (v10).
    retry_ahead_of  INTEGER,
    credit          INTEGER NOT NULL DEFAULT 0 CHECK (credit >= 0),
    PRIMARY KEY (subscription_id, period)
) STRICT, WITHOUT ROWID;
INSERT INTO periods_v23 (subscription_id, period, due_at, merchant_uid, customer_uid, amount, currency, name, state,
    declines, next_attempt_at, opened_at, closed_at, retry_ahead_of, credit)
SELECT subscription_id, period, due_at, merchant_uid, customer_uid, amount, currency, name, state, declines,
    next_attempt_at, opened_at, closed_at, retry_ahead_of, credit FROM periods;
DROP TABLE periods;
ALTER TABLE periods_v23 RENAME TO periods;
CREATE INDEX periods_next_attempt ON periods (next_attempt_at, due_at, subscription_id)
    WHERE state = 'open' AND next_attempt_at IS NOT NULL;

CREATE TABLE one_time_charges_v23 (
    id              INTEGER PRIMARY KEY,
    merchant_uid    TEXT NOT NULL UNIQUE,
    customer_uid    TEXT,
    name            TEXT NOT NULL,
    amount          INTEGER NOT NULL CHECK (amount > 0),
    currency        TEXT NOT NULL,
    card_masked     TEXT NOT NULL,
    status          TEXT NOT NULL CHECK ((status = 'pending' OR status = 'paid' OR status = 'failed'
                                      OR status = 'unknown')),
    failure         TEXT CHECK ((failure = 'declined' OR failure = 'rejected' OR failure = 'abandoned'
                                 OR failure = 'mismatch')),
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
    kind            TEXT NOT NULL DEFAULT 'card' CHECK ((kind = 'card' OR kind = 'key' OR kind = 'proration')),
    subscription_id TEXT REFERENCES subscriptions (id),
    go_wall_ms      INTEGER
) STRICT;
INSERT INTO one_time_charges_v23 (id, merchant_uid, customer_uid, name, amount, currency, card_masked, status,
    failure, imp_uid, fail_reason, tries, created_at, updated_at, timeout_ms, check_at, doubt_wall_ms, doubt_boot_ms,
    doubt_boot_id, kind, subscription_id, go_wall_ms)
SELECT id, merchant_uid, customer_uid, name, amount, currency, card_masked, status, failure, imp_uid, fail_reason,
    tries, created_at, updated_at, timeout_ms, check_at, doubt_wall_ms, doubt_boot_ms, doubt_boot_id, kind,
    subscription_id, go_wall_ms FROM one_time_charges;
DROP TABLE one_time_charges;
ALTER TABLE one_time_charges_v23 RENAME TO one_time_charges;
CREATE INDEX one_time_unresolved ON one_time_charges (updated_at) WHERE status IN ('pending', 'unknown');
CREATE INDEX one_time_charges_merchant_uid_nocase ON one_time_charges (merchant_uid COLLATE NOCASE);
CREATE INDEX one_time_charges_by_subscription ON one_time_charges (subscription_id) WHERE subscription_id IS NOT NULL;

CREATE TABLE refunds_v23 (
    id              INTEGER PRIMARY KEY,
    merchant_uid    TEXT NOT NULL,
    imp_uid         TEXT NOT NULL,
    amount          INTEGER NOT NULL CHECK (amount > 0),
    currency        TEXT NOT NULL,
    -- The refundable balance billd knew when it began the refund (i'mport's checksum); NULL for an external one.
    checksum        INTEGER,
    reason          TEXT NOT NULL,
    status          TEXT NOT NULL CHECK ((status = 'pending' OR status = 'unknown' OR status = 'refunded'
                                      OR status = 'failed')),
    source          TEXT NOT NULL CHECK ((source = 'billd' OR source = 'external')),
    -- The gateway's id of the refund (its cancel history entry), once known.
    cancellation_id TEXT,
    -- Why it failed, or why its outcome is not known.
    detail          TEXT,
    -- As for one-time charges: no look before check_at, nor before the quiet period (2 x timeout_ms) counted from
    -- the real instant doubt_* at which its request may last have been in progress.
    timeout_ms      INTEGER,
    check_at        INTEGER,
    doubt_wall_ms   INTEGER,
    doubt_boot_ms   INTEGER,
    doubt_boot_id   TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    CHECK (source = 'external' OR checksum IS NOT NULL)
) STRICT;
INSERT INTO refunds_v23 (id, merchant_uid, imp_uid, amount, currency, checksum, reason, status, source,
    cancellation_id, detail, timeout_ms, check_at, doubt_wall_ms, doubt_boot_ms, doubt_boot_id, created_at,
    updated_at)
SELECT id, merchant_uid, imp_uid, amount, currency, checksum, reason, status, source, cancellation_id, detail,
    timeout_ms, check_at, doubt_wall_ms, doubt_boot_ms, doubt_boot_id, created_at, updated_at FROM refunds;
DROP TABLE refunds;
ALTER TABLE refunds_v23 RENAME TO refunds;
CREATE UNIQUE INDEX refunds_one_unresolved_per_charge ON refunds (merchant_uid) WHERE status IN ('pending', 'unknown');
CREATE UNIQUE INDEX refunds_cancellation_once ON refunds (imp_uid, cancellation_id) WHERE cancellation_id IS NOT NULL;
CREATE INDEX refunds_by_charge ON refunds (merchant_uid);
CREATE INDEX refunds_unresolved ON refunds (check_at) WHERE status IN ('pending', 'unknown');
CREATE INDEX refunds_by_time ON refunds (created_at);

CREATE TABLE plan_changes_v23 (
    id              INTEGER PRIMARY KEY,
    subscription_id TEXT NOT NULL REFERENCES subscriptions (id),
    timing          TEXT NOT NULL CHECK ((timing = 'now' OR timing = 'period_end')),
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
    state           TEXT NOT NULL CHECK ((state = 'pending' OR state = 'applied' OR state = 'failed')),
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    credit_used     INTEGER NOT NULL DEFAULT 0 CHECK (credit_used >= 0 AND credit_used <= max(owed, 0)),
    released        INTEGER NOT NULL DEFAULT 0 CHECK (released >= 0),
    sets_term       INTEGER NOT NULL DEFAULT 0 CHECK ((sets_term = 0 OR sets_term = 1)),
    to_last_period  INTEGER CHECK (to_last_period >= 0),
    CHECK ((owed - credit_used > 0) = (merchant_uid IS NOT NULL))
) STRICT;
INSERT INTO plan_changes_v23 (id, subscription_id, timing, at, period, from_plan_id, from_amount, from_interval,
    to_plan_id, to_plan_name, to_amount, to_interval, rate, owed, merchant_uid, anchor_date, anchor_period,
    next_period, next_due_at, opens_uid, opens_amount, state, created_at, updated_at, credit_used, released,
    sets_term, to_last_period)
SELECT id, subscription_id, timing, at, period, from_plan_id, from_amount, from_interval, to_plan_id, to_plan_name,
    to_amount, to_interval, rate, owed, merchant_uid, anchor_date, anchor_period, next_period, next_due_at,
    opens_uid, opens_amount, state, created_at, updated_at, credit_used, released, sets_term,
    to_last_period FROM plan_changes;
DROP TABLE plan_changes;
ALTER TABLE plan_changes_v23 RENAME TO plan_changes;
CREATE UNIQUE INDEX plan_changes_one_pending ON plan_changes (subscription_id) WHERE state = 'pending';
CREATE INDEX plan_changes_by_subscription ON plan_changes (subscription_id, id);

CREATE TABLE outbox_v23 (
    seq             INTEGER PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    type            TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    subscription_id TEXT,
    stream          TEXT NOT NULL,
    sequence        INTEGER NOT NULL,
    snapshot        TEXT NOT NULL,
    body            TEXT,
    state           TEXT NOT NULL DEFAULT 'pending'
                    CHECK ((state = 'pending' OR state = 'delivered' OR state = 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    give_up_at      INTEGER,
    last_attempt_at INTEGER,
    last_error      TEXT,
    settled_at      INTEGER
) STRICT;
INSERT INTO outbox_v23 (seq, id, type, created_at, subscription_id, stream, sequence, snapshot, body, state,
    attempts, next_attempt_at, give_up_at, last_attempt_at, last_error, settled_at)
SELECT seq, id, type, created_at, subscription_id, stream, sequence, snapshot, body, state, attempts,
    next_attempt_at, give_up_at, last_attempt_at, last_error, settled_at FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_v23 RENAME TO outbox;
CREATE INDEX outbox_pending ON outbox (stream, sequence) WHERE state = 'pending';
CREATE INDEX outbox_pending_seq ON outbox (seq) WHERE state = 'pending';
CREATE INDEX outbox_retry_at ON outbox (next_attempt_at) WHERE state = 'pending' AND attempts > 0;
CREATE INDEX outbox_settled ON outbox (settled_at) WHERE state != 'pending';
CREATE INDEX outbox_created ON outbox (created_at);

CREATE INDEX subscriptions_trialing_due ON subscriptions (next_due_at) WHERE status = 'trialing';
CREATE INDEX outbox_unsent ON outbox (created_at) WHERE state = 'pending' AND attempts = 0;
