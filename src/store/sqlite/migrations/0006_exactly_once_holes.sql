-- billd schema v6: what closing issue 12's holes needs recorded (same guarantees as v5, and these added):
--  * attempts.timeout_ms: the gateway timeout the attempt's latest request was sent with. The quiet period before
--    any later look (and so any resend) is twice that, whatever the config says by then (a reload or a restart
--    with a shorter timeout must not shorten it).
--  * attempts.refused_resends: how many resends the gateway refused while no lookup found the first request (a
--    refusal becomes final only after a few of these, whatever else went wrong in between).
--  * failure 'mismatch': a lookup found a paid payment under the merchant_uid whose amount, currency or customer
--    differs from what was sent; it is never taken as paid: the attempt is held for an operator.
--  * one_time_charges gets the same timeout_ms and 'mismatch', and check_at: an unknown one-time charge is looked
--    up again (by a pass or a rerun of charge-once) no sooner than this.
--  * subscriptions are found by id whatever its case (ids that differ only by case are refused).
--  * subscriptions.skip_windows: the pauses whose periods are not charged, as a JSON array of [from, to) instants
--    (UNIX s): a period whose due instant lies in one is skipped when billing gets to it. A resume skips only what
--    fell due inside the pause, never a period that fell due before it (still owed); instants, not period numbers,
--    so that a later interval change or a second pause keeps the meaning. subscriptions.suspended_at: when it was
--    paused (filled from the events for those suspended now).
-- The two tables are rebuilt by SQLite's documented procedure (foreign keys are off around it; see Store::migrate).

CREATE TABLE attempts_v6 (
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
    failure         TEXT CHECK (failure = 'declined' OR failure = 'rejected' OR failure = 'abandoned'
                                OR failure = 'mismatch'),
    imp_uid         TEXT,
    fail_reason     TEXT,
    -- Unresolved tries (transient errors, unknown outcomes, lookups) and when to look again.
    tries           INTEGER NOT NULL DEFAULT 0,
    check_at        INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    resolved_at     INTEGER,
    timeout_ms      INTEGER,
    refused_resends INTEGER NOT NULL DEFAULT 0,
    UNIQUE (subscription_id, period, attempt),
    FOREIGN KEY (subscription_id, period) REFERENCES periods (subscription_id, period)
) STRICT;

INSERT INTO attempts_v6 (id, subscription_id, period, attempt, merchant_uid, customer_uid, amount, currency, status,
                         failure, imp_uid, fail_reason, tries, check_at, created_at, updated_at, resolved_at)
SELECT id, subscription_id, period, attempt, merchant_uid, customer_uid, amount, currency, status,
       failure, imp_uid, fail_reason, tries, check_at, created_at, updated_at, resolved_at
FROM attempts;
DROP TABLE attempts;
ALTER TABLE attempts_v6 RENAME TO attempts;

-- An attempt left unresolved by an older billd was sent with a timeout nobody recorded: assume a generous one (the
-- quiet period before it is resent is twice it), never this release's possibly shorter setting.
UPDATE attempts SET timeout_ms = 300000 WHERE status IN ('pending', 'unknown');

CREATE UNIQUE INDEX attempts_one_paid_per_period ON attempts (subscription_id, period) WHERE status = 'paid';
CREATE UNIQUE INDEX attempts_one_unresolved_per_period
    ON attempts (subscription_id, period) WHERE status IN ('pending', 'unknown');
CREATE INDEX attempts_failed_by_time ON attempts (updated_at) WHERE status = 'failed';

CREATE TABLE one_time_charges_v6 (
    id           INTEGER PRIMARY KEY,
    merchant_uid TEXT NOT NULL UNIQUE,
    customer_uid TEXT,
    name         TEXT NOT NULL,
    amount       INTEGER NOT NULL CHECK (amount > 0),
    currency     TEXT NOT NULL,
    card_masked  TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('pending', 'paid', 'failed', 'unknown')),
    failure      TEXT CHECK (failure IN ('declined', 'rejected', 'abandoned', 'mismatch')),
    imp_uid      TEXT,
    fail_reason  TEXT,
    tries        INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    timeout_ms   INTEGER,
    check_at     INTEGER
) STRICT;

INSERT INTO one_time_charges_v6 (id, merchant_uid, customer_uid, name, amount, currency, card_masked, status,
                                 failure, imp_uid, fail_reason, tries, created_at, updated_at)
SELECT id, merchant_uid, customer_uid, name, amount, currency, card_masked, status,
       failure, imp_uid, fail_reason, tries, created_at, updated_at
FROM one_time_charges;
DROP TABLE one_time_charges;
ALTER TABLE one_time_charges_v6 RENAME TO one_time_charges;

CREATE INDEX one_time_unresolved ON one_time_charges (updated_at) WHERE status IN ('pending', 'unknown');

CREATE INDEX subscriptions_id_nocase ON subscriptions (id COLLATE NOCASE);

ALTER TABLE subscriptions ADD COLUMN skip_windows TEXT;
ALTER TABLE subscriptions ADD COLUMN suspended_at INTEGER;
UPDATE subscriptions SET suspended_at = (SELECT max(at) FROM events e WHERE e.subscription_id = subscriptions.id
                                          AND e.kind = 'subscription.suspended')
 WHERE status = 'suspended';
