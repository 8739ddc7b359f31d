-- billd schema v18: who stopped a canceled or suspended subscription: 'dunning' (its retries ran out, or a charge was
-- rejected: the policy's action), NULL otherwise (an operator, a sync, a pause). `billd reactivate` (issue 25)
-- restarts only what dunning stopped. Every status change sets it.
ALTER TABLE subscriptions ADD COLUMN stopped_by TEXT CHECK (stopped_by IN ('dunning'));
