-- billd schema v19: the webhook outbox (issue 26). Every public event (charge.paid, subscription.canceled, ...) is
-- written here in the transaction of the change that causes it, and delivered from here (at least once, in order per
-- stream). `stream` is the subscription's id ('' for events of no subscription, such as a one-time charge tied to
-- none); `sequence` counts that stream's events from 1 (outbox_streams keeps the last, so pruning never reuses one).
-- `snapshot` is the charge or subscription as the change left it (store values as JSON); `body` is the payload
-- fixed at its first delivery attempt, so every retry sends the same bytes. Instants are UNIX seconds.
CREATE TABLE outbox (
    seq             INTEGER PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    type            TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    subscription_id TEXT,
    stream          TEXT NOT NULL,
    sequence        INTEGER NOT NULL,
    snapshot        TEXT NOT NULL,
    body            TEXT,
    state           TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    give_up_at      INTEGER,
    last_attempt_at INTEGER,
    last_error      TEXT,
    settled_at      INTEGER,
    UNIQUE (stream, sequence)
) STRICT;

CREATE INDEX outbox_pending ON outbox (stream, sequence) WHERE state = 'pending';
CREATE INDEX outbox_pending_seq ON outbox (seq) WHERE state = 'pending';
CREATE INDEX outbox_retry_at ON outbox (next_attempt_at) WHERE state = 'pending' AND attempts > 0;
CREATE INDEX outbox_settled ON outbox (settled_at) WHERE state != 'pending';
CREATE INDEX outbox_created ON outbox (created_at);

CREATE TABLE outbox_streams (
    stream TEXT PRIMARY KEY,
    last   INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
