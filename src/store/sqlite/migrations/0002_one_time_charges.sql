-- billd schema v2: key-in (one-time) payments made with `billd charge-once`, in billd's ledger beside the
-- subscription attempts. Only the masked card is kept.

CREATE TABLE one_time_charges (
    id           INTEGER PRIMARY KEY,
    merchant_uid TEXT NOT NULL UNIQUE,
    customer_uid TEXT,
    name         TEXT NOT NULL,
    amount       INTEGER NOT NULL CHECK (amount > 0),
    currency     TEXT NOT NULL,
    card_masked  TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('pending', 'paid', 'failed', 'unknown')),
    failure      TEXT CHECK (failure IN ('declined', 'rejected', 'abandoned')),
    imp_uid      TEXT,
    fail_reason  TEXT,
    tries        INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
) STRICT;
