-- billd's PostgreSQL schema, baseline: the same book as SQLite's schema 23 (src/store/sqlite/migrations/0001..0023
-- applied in order), written at once. Same tables, same columns in the same order, same constraints and index names,
-- so that the SQL of src/store/sql runs on both. Times are UNIX seconds (UTC); money is an integer amount in the
-- currency's minor unit. How SQLite's spelling maps here:
--  * INTEGER is BIGINT (Rust reads i64 everywhere); a rowid key (`INTEGER PRIMARY KEY`) is an identity that still
--    takes an explicit id (a book copied between stores keeps its ids; the copy then moves each sequence past them).
--  * TEXT is TEXT COLLATE "C": SQLite compares text by its bytes (BINARY), and so does "C", whatever the database's
--    own locale: ORDER BY, keyset pages (`(next_due_at, id) > (?3, ?4)`, `merchant_uid > ?2`) and range scans of
--    text keys agree between the stores.
--  * SQLite's `COLLATE NOCASE` (ASCII letters folded; ids that differ only by case are refused, issue 21) is
--    `lower(x)`: on a "C" column lower() folds ASCII letters only, as NOCASE does. Its two indexes are indexes on
--    lower(column), not unique, as in SQLite (uniqueness of merchant_uid stays case-sensitive; the case-blind
--    refusal is the store's check).
--  * The generated `bills` is a stored BOOLEAN (queries say `WHERE bills AND ...`); the other 0/1 flags
--    (resume_catch_up, safety_stop.released, plan_changes.sets_term) stay BIGINT: the SQL compares them with
--    numbers and binds them as integers.
--  * CHECK's scalar max(owed, 0) is GREATEST(owed, 0). The append-only triggers of `events` raise the same message
--    (TRUNCATE too, which SQLite does not have: a DELETE of every row is refused there).
--  * PRAGMA user_version is the one row of schema_version: this baseline is schema 23, SQLite's number, so that one
--    billd build knows one schema version for both stores.

CREATE TABLE subscriptions (
    id              TEXT COLLATE "C" PRIMARY KEY,
    customer_uid    TEXT COLLATE "C" NOT NULL,
    plan_id         TEXT COLLATE "C" NOT NULL,
    plan_name       TEXT COLLATE "C" NOT NULL,
    amount          BIGINT NOT NULL CHECK (amount > 0),
    currency        TEXT COLLATE "C" NOT NULL,
    interval        TEXT COLLATE "C" NOT NULL,
    start_date      TEXT COLLATE "C" NOT NULL,
    -- Period p falls due on anchor_date + (p - anchor_period) x interval (rebased when the interval changes).
    anchor_date     TEXT COLLATE "C" NOT NULL,
    anchor_period   BIGINT NOT NULL DEFAULT 0,
    -- The first period not yet opened, and its due instant (NULL when no period will ever fall due).
    next_period     BIGINT NOT NULL DEFAULT 0,
    next_due_at     BIGINT,
    status          TEXT COLLATE "C" NOT NULL CHECK ((status = 'trialing' OR status = 'active' OR status = 'past_due'
                                      OR status = 'canceling' OR status = 'suspended' OR status = 'canceled'
                                      OR status = 'completed')),
    source          TEXT COLLATE "C" NOT NULL CHECK ((source = 'config' OR source = 'manual')),
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    -- The pauses whose periods are not charged: a JSON array of [from, to) instants.
    skip_windows    TEXT COLLATE "C",
    suspended_at    BIGINT,
    -- JSON `{"percent": 20, "periods": 3}` or `{"amount": 1000, "periods": 3}`; NULL: none.
    discount        TEXT COLLATE "C",
    resume_at       BIGINT,
    resume_catch_up BIGINT NOT NULL DEFAULT 0,
    last_period     BIGINT,
    cancel_at       BIGINT,
    -- Which statuses are billed, in one place for every query (`Status::bills`).
    bills           BOOLEAN GENERATED ALWAYS AS ((status = 'trialing' OR status = 'active' OR status = 'past_due'
                                                 OR status = 'canceling')) STORED,
    credit          BIGINT NOT NULL DEFAULT 0 CHECK (credit >= 0),
    stopped_by      TEXT COLLATE "C" CHECK (stopped_by = 'dunning')
);
CREATE INDEX subscriptions_next_due ON subscriptions (next_due_at, id) WHERE bills;
CREATE INDEX subscriptions_from_config ON subscriptions (id) WHERE source = 'config';
CREATE INDEX subscriptions_id_nocase ON subscriptions (lower(id));
CREATE INDEX subscriptions_resume_at ON subscriptions (resume_at) WHERE resume_at IS NOT NULL;
CREATE INDEX subscriptions_cancel_at ON subscriptions (cancel_at) WHERE cancel_at IS NOT NULL;
CREATE INDEX subscriptions_trialing_due ON subscriptions (next_due_at) WHERE status = 'trialing';

-- One row per billing period that has fallen due; amount and name are fixed when the period opens.
CREATE TABLE periods (
    subscription_id TEXT COLLATE "C" NOT NULL REFERENCES subscriptions (id),
    period          BIGINT NOT NULL,
    due_at          BIGINT NOT NULL,
    merchant_uid    TEXT COLLATE "C" NOT NULL UNIQUE,
    customer_uid    TEXT COLLATE "C" NOT NULL,
    amount          BIGINT NOT NULL CHECK (amount > 0),
    currency        TEXT COLLATE "C" NOT NULL,
    name            TEXT COLLATE "C" NOT NULL,
    state           TEXT COLLATE "C" NOT NULL
                    CHECK ((state = 'open' OR state = 'paid' OR state = 'given_up' OR state = 'skipped')),
    declines        BIGINT NOT NULL DEFAULT 0,
    -- When the next attempt is to be sent; NULL while an attempt is unresolved or once the period is closed.
    next_attempt_at BIGINT,
    opened_at       BIGINT NOT NULL,
    closed_at       BIGINT,
    -- The scheduled retry an operator's retry went ahead of.
    retry_ahead_of  BIGINT,
    credit          BIGINT NOT NULL DEFAULT 0 CHECK (credit >= 0),
    PRIMARY KEY (subscription_id, period)
);
CREATE INDEX periods_next_attempt ON periods (next_attempt_at, due_at, subscription_id)
    WHERE state = 'open' AND next_attempt_at IS NOT NULL;

-- One row per charge attempt. The row is committed (status pending) before its request leaves the process.
CREATE TABLE attempts (
    id              BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    subscription_id TEXT COLLATE "C" NOT NULL,
    period          BIGINT NOT NULL,
    attempt         BIGINT NOT NULL,
    merchant_uid    TEXT COLLATE "C" NOT NULL,
    customer_uid    TEXT COLLATE "C" NOT NULL,
    amount          BIGINT NOT NULL CHECK (amount > 0),
    currency        TEXT COLLATE "C" NOT NULL,
    status          TEXT COLLATE "C" NOT NULL
                    CHECK (status = 'pending' OR status = 'paid' OR status = 'failed' OR status = 'unknown'),
    failure         TEXT COLLATE "C" CHECK (failure = 'declined' OR failure = 'rejected' OR failure = 'abandoned'
                                OR failure = 'mismatch'),
    imp_uid         TEXT COLLATE "C",
    fail_reason     TEXT COLLATE "C",
    -- Unresolved tries (transient errors, unknown outcomes, lookups) and when to look again.
    tries           BIGINT NOT NULL DEFAULT 0,
    check_at        BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    resolved_at     BIGINT,
    timeout_ms      BIGINT,
    refused_resends BIGINT NOT NULL DEFAULT 0,
    -- The latest real instant a request of it may have been in progress (wall ms; boot-clock ms and boot id).
    doubt_wall_ms   BIGINT,
    doubt_boot_ms   BIGINT,
    doubt_boot_id   TEXT COLLATE "C",
    retry_ahead_of  BIGINT,
    UNIQUE (subscription_id, period, attempt),
    FOREIGN KEY (subscription_id, period) REFERENCES periods (subscription_id, period)
);
-- The local guarantee: at most one paid attempt per subscription period, at most one unresolved one.
CREATE UNIQUE INDEX attempts_one_paid_per_period ON attempts (subscription_id, period) WHERE status = 'paid';
CREATE UNIQUE INDEX attempts_one_unresolved_per_period
    ON attempts (subscription_id, period) WHERE status IN ('pending', 'unknown');
CREATE INDEX attempts_failed_by_time ON attempts (updated_at) WHERE status = 'failed';

-- Append-only history. `detail` is JSON.
CREATE TABLE events (
    id              BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    at              BIGINT NOT NULL,
    kind            TEXT COLLATE "C" NOT NULL,
    subscription_id TEXT COLLATE "C",
    detail          TEXT COLLATE "C" NOT NULL
);
CREATE INDEX events_by_subscription ON events (subscription_id, id);

CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only';
END
$$;
CREATE TRIGGER events_no_update BEFORE UPDATE ON events FOR EACH ROW EXECUTE FUNCTION events_append_only();
CREATE TRIGGER events_no_delete BEFORE DELETE ON events FOR EACH ROW EXECUTE FUNCTION events_append_only();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events FOR EACH STATEMENT EXECUTE FUNCTION events_append_only();

-- One-time payments (`charge-once`: a typed card; `charge-key`: a stored billing key; `proration`: a plan change's
-- charge), in the same ledger and under the same exactly-once rules. Only the masked card is kept.
CREATE TABLE one_time_charges (
    id              BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    merchant_uid    TEXT COLLATE "C" NOT NULL UNIQUE,
    customer_uid    TEXT COLLATE "C",
    name            TEXT COLLATE "C" NOT NULL,
    amount          BIGINT NOT NULL CHECK (amount > 0),
    currency        TEXT COLLATE "C" NOT NULL,
    card_masked     TEXT COLLATE "C" NOT NULL,
    status          TEXT COLLATE "C" NOT NULL CHECK ((status = 'pending' OR status = 'paid' OR status = 'failed'
                                      OR status = 'unknown')),
    failure         TEXT COLLATE "C" CHECK ((failure = 'declined' OR failure = 'rejected' OR failure = 'abandoned'
                                 OR failure = 'mismatch')),
    imp_uid         TEXT COLLATE "C",
    fail_reason     TEXT COLLATE "C",
    tries           BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    timeout_ms      BIGINT,
    check_at        BIGINT,
    doubt_wall_ms   BIGINT,
    doubt_boot_ms   BIGINT,
    doubt_boot_id   TEXT COLLATE "C",
    kind            TEXT COLLATE "C" NOT NULL DEFAULT 'card'
                    CHECK ((kind = 'card' OR kind = 'key' OR kind = 'proration')),
    subscription_id TEXT COLLATE "C" REFERENCES subscriptions (id),
    go_wall_ms      BIGINT
);
CREATE INDEX one_time_unresolved ON one_time_charges (updated_at) WHERE status IN ('pending', 'unknown');
CREATE INDEX one_time_charges_merchant_uid_nocase ON one_time_charges (lower(merchant_uid));
CREATE INDEX one_time_charges_by_subscription ON one_time_charges (subscription_id) WHERE subscription_id IS NOT NULL;

-- The safety stop (limits.max_charges_per_pass): one row while billing is stopped; `released` 1 once an operator
-- confirmed (`billd safety release`).
CREATE TABLE safety_stop (
    id                   BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY CHECK (id = 1),
    reason               TEXT COLLATE "C" NOT NULL,
    max_charges_per_pass BIGINT NOT NULL,
    created_at           BIGINT NOT NULL,
    released             BIGINT NOT NULL DEFAULT 0
);

-- The charge clock in force (billing.timezone and charge_time, as of the last sync).
CREATE TABLE book_clock (
    id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY CHECK (id = 1),
    timezone    TEXT COLLATE "C" NOT NULL,
    charge_time TEXT COLLATE "C" NOT NULL
);

-- Refunds: one row per refund of a paid charge (by its merchant_uid as stored), billd's or found at the gateway.
CREATE TABLE refunds (
    id              BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    merchant_uid    TEXT COLLATE "C" NOT NULL,
    imp_uid         TEXT COLLATE "C" NOT NULL,
    amount          BIGINT NOT NULL CHECK (amount > 0),
    currency        TEXT COLLATE "C" NOT NULL,
    -- The refundable balance billd knew when it began the refund (i'mport's checksum); NULL for an external one.
    checksum        BIGINT,
    reason          TEXT COLLATE "C" NOT NULL,
    status          TEXT COLLATE "C" NOT NULL CHECK ((status = 'pending' OR status = 'unknown' OR status = 'refunded'
                                      OR status = 'failed')),
    source          TEXT COLLATE "C" NOT NULL CHECK ((source = 'billd' OR source = 'external')),
    -- The gateway's id of the refund (its cancel history entry), once known.
    cancellation_id TEXT COLLATE "C",
    -- Why it failed, or why its outcome is not known.
    detail          TEXT COLLATE "C",
    timeout_ms      BIGINT,
    check_at        BIGINT,
    doubt_wall_ms   BIGINT,
    doubt_boot_ms   BIGINT,
    doubt_boot_id   TEXT COLLATE "C",
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    CHECK (source = 'external' OR checksum IS NOT NULL)
);
-- The local guarantee: at most one refund of a charge in doubt at a time, and a gateway refund recorded once.
CREATE UNIQUE INDEX refunds_one_unresolved_per_charge ON refunds (merchant_uid) WHERE status IN ('pending', 'unknown');
CREATE UNIQUE INDEX refunds_cancellation_once ON refunds (imp_uid, cancellation_id) WHERE cancellation_id IS NOT NULL;
CREATE INDEX refunds_by_charge ON refunds (merchant_uid);
CREATE INDEX refunds_unresolved ON refunds (check_at) WHERE status IN ('pending', 'unknown');
CREATE INDEX refunds_by_time ON refunds (created_at);

-- Plan changes: one row per change; at most one pending per subscription.
CREATE TABLE plan_changes (
    id              BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    subscription_id TEXT COLLATE "C" NOT NULL REFERENCES subscriptions (id),
    timing          TEXT COLLATE "C" NOT NULL CHECK ((timing = 'now' OR timing = 'period_end')),
    at              BIGINT NOT NULL,
    period          BIGINT NOT NULL,
    from_plan_id    TEXT COLLATE "C" NOT NULL,
    from_amount     BIGINT NOT NULL,
    from_interval   TEXT COLLATE "C" NOT NULL,
    to_plan_id      TEXT COLLATE "C" NOT NULL,
    to_plan_name    TEXT COLLATE "C" NOT NULL,
    to_amount       BIGINT NOT NULL CHECK (to_amount > 0),
    to_interval     TEXT COLLATE "C" NOT NULL,
    rate            BIGINT,
    owed            BIGINT NOT NULL DEFAULT 0,
    merchant_uid    TEXT COLLATE "C" UNIQUE,
    anchor_date     TEXT COLLATE "C" NOT NULL,
    anchor_period   BIGINT NOT NULL,
    next_period     BIGINT NOT NULL,
    next_due_at     BIGINT,
    opens_uid       TEXT COLLATE "C",
    opens_amount    BIGINT,
    state           TEXT COLLATE "C" NOT NULL CHECK ((state = 'pending' OR state = 'applied' OR state = 'failed')),
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    credit_used     BIGINT NOT NULL DEFAULT 0 CHECK (credit_used >= 0 AND credit_used <= GREATEST(owed, 0)),
    -- An amount (the credit this change added that was released when its subscription ended), not a flag.
    released        BIGINT NOT NULL DEFAULT 0 CHECK (released >= 0),
    sets_term       BIGINT NOT NULL DEFAULT 0 CHECK ((sets_term = 0 OR sets_term = 1)),
    to_last_period  BIGINT CHECK (to_last_period >= 0),
    CHECK ((owed - credit_used > 0) = (merchant_uid IS NOT NULL))
);
CREATE UNIQUE INDEX plan_changes_one_pending ON plan_changes (subscription_id) WHERE state = 'pending';
CREATE INDEX plan_changes_by_subscription ON plan_changes (subscription_id, id);

-- The webhook outbox: every public event, written in the transaction of its change, delivered from here. `snapshot`
-- and `body` are JSON.
CREATE TABLE outbox (
    seq             BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    id              TEXT COLLATE "C" NOT NULL UNIQUE,
    type            TEXT COLLATE "C" NOT NULL,
    created_at      BIGINT NOT NULL,
    subscription_id TEXT COLLATE "C",
    stream          TEXT COLLATE "C" NOT NULL,
    sequence        BIGINT NOT NULL,
    snapshot        TEXT COLLATE "C" NOT NULL,
    body            TEXT COLLATE "C",
    state           TEXT COLLATE "C" NOT NULL DEFAULT 'pending'
                    CHECK ((state = 'pending' OR state = 'delivered' OR state = 'failed')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    give_up_at      BIGINT,
    last_attempt_at BIGINT,
    last_error      TEXT COLLATE "C",
    settled_at      BIGINT
);
CREATE INDEX outbox_pending ON outbox (stream, sequence) WHERE state = 'pending';
CREATE INDEX outbox_pending_seq ON outbox (seq) WHERE state = 'pending';
CREATE INDEX outbox_retry_at ON outbox (next_attempt_at) WHERE state = 'pending' AND attempts > 0;
CREATE INDEX outbox_settled ON outbox (settled_at) WHERE state != 'pending';
CREATE INDEX outbox_created ON outbox (created_at);
CREATE INDEX outbox_unsent ON outbox (created_at) WHERE state = 'pending' AND attempts = 0;

-- Each stream's last sequence number (pruning the outbox never reuses one).
CREATE TABLE outbox_streams (
    stream TEXT COLLATE "C" PRIMARY KEY,
    last   BIGINT NOT NULL
);

-- The schema version (SQLite's PRAGMA user_version): one row.
CREATE TABLE schema_version (
    version BIGINT NOT NULL
);
CREATE UNIQUE INDEX schema_version_one_row ON schema_version ((true));
INSERT INTO schema_version (version) VALUES (23);
