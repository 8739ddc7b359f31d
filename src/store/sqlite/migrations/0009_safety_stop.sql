-- billd schema v9: a safety rail that trips (limits.max_charges_per_pass, issue 21) stops billing until an operator
-- acts (raises the limit, or runs `billd safety release`). The stop is kept in the book, so that every process
-- (`run`, `tick` from cron, the commands that charge) sees it, and a restart does not lift it.
CREATE TABLE safety_stop (
    id                   INTEGER PRIMARY KEY CHECK (id = 1),
    reason               TEXT NOT NULL,
    max_charges_per_pass INTEGER NOT NULL,
    created_at           INTEGER NOT NULL,
    -- 1 once an operator confirmed (`billd safety release`): the next pass may send up to the limit, then the stop
    -- is lifted, or it trips again.
    released             INTEGER NOT NULL DEFAULT 0
);

-- The charge clock in force (billing.timezone and charge_time, as of the last sync): a sync with another clock
-- re-times every next charge not yet claimed, and a command whose config has another clock stamps nothing with it
-- (issue 23).
CREATE TABLE book_clock (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    timezone    TEXT NOT NULL,
    charge_time TEXT NOT NULL
);
