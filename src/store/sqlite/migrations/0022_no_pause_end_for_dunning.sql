-- billd schema v22: a pause's end (`pause --until`, schema 15) is an operator's pause only. Before, one could be put on
-- a subscription dunning suspended, and it silently became a reactivation on that date (without the period whose
-- retries ran out); billd now refuses it, and `resume` too, for what dunning suspended (`billd reactivate` restarts
-- it). Such ends already in the book are dropped, each with an event saying so.
INSERT INTO events (at, kind, subscription_id, detail)
SELECT CAST(strftime('%s', 'now') AS INTEGER), 'subscription.resume_dropped', id,
       json_object('resume_at', resume_at, 'reason',
                   'suspended by dunning, not paused: it does not resume by itself; `billd reactivate` restarts it')
FROM subscriptions WHERE stopped_by = 'dunning' AND resume_at IS NOT NULL;
UPDATE subscriptions SET resume_at = NULL, resume_catch_up = 0 WHERE stopped_by = 'dunning' AND resume_at IS NOT NULL;
