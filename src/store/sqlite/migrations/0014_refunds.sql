-- billd schema v14: refunds (issue 24). One row per refund of a paid charge (a period's paid attempt or a paid one-time
-- charge, by its merchant_uid as stored): a `billd refund` (source billd) committed pending before its request
-- leaves, or a refund found in the payment's cancel history at the gateway (source external). Self-contained: it
-- only adds this table and its indexes.
CREATE TABLE refunds (
    id              INTEGER PRIMARY KEY,
    merchant_uid    TEXT NOT NULL,
    imp_uid         TEXT NOT NULL,
    amount          INTEGER NOT NULL CHECK (amount > 0),
    currency        TEXT NOT NULL,
    -- The refundable balance billd knew when it began the refund (i'mport's checksum); NULL for an external one.
    checksum        INTEGER,
    reason          TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'unknown', 'refunded', 'failed')),
    source          TEXT NOT NULL CHECK (source IN ('billd', 'external')),
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

-- The local guarantee: at most one refund of a charge in doubt at a time, and a gateway refund recorded once.
CREATE UNIQUE INDEX refunds_one_unresolved_per_charge ON refunds (merchant_uid) WHERE status IN ('pending', 'unknown');
CREATE UNIQUE INDEX refunds_cancellation_once ON refunds (imp_uid, cancellation_id) WHERE cancellation_id IS NOT NULL;
CREATE INDEX refunds_by_charge ON refunds (merchant_uid);
CREATE INDEX refunds_unresolved ON refunds (check_at) WHERE status IN ('pending', 'unknown');
CREATE INDEX refunds_by_time ON refunds (created_at);
