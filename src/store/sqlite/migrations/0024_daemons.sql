-- billd schema v24: several daemons on one book (issue 27). Each process that charges joins the book as a daemon
-- with a lease it renews (instants in milliseconds on the database's clock: one clock for every daemon); an attempt
-- records the daemon that claimed or took it over (`owner`, never reused: AUTOINCREMENT). No one else touches an
-- attempt while its owner's lease is alive, and every write of its outcome, its go, its release or its next look
-- requires its owner to be the writer (the fence): a daemon that lost its lease writes nothing.
CREATE TABLE daemons (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    host            TEXT NOT NULL,
    pid             INTEGER NOT NULL,
    version         TEXT NOT NULL,
    started_ms      INTEGER NOT NULL,
    heartbeat_ms    INTEGER NOT NULL,
    lease_until_ms  INTEGER NOT NULL,
    -- When it left (or its lease was ended), and why; NULL while it runs.
    left_ms         INTEGER,
    left_why        TEXT,
    -- It held the one-at-a-time jobs (config sync, sweeps, pruning) at its last heartbeat.
    jobs            INTEGER NOT NULL DEFAULT 0 CHECK (jobs = 0 OR jobs = 1)
);
CREATE INDEX daemons_running ON daemons (lease_until_ms) WHERE left_ms IS NULL;
ALTER TABLE attempts ADD COLUMN owner INTEGER;
