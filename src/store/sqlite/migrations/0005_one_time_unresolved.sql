-- billd schema v5: one-time charges left pending or unknown (a `billd charge-once` that died or lost its answer)
-- are found by every pass without scanning the whole ledger of one-time charges.

CREATE INDEX one_time_unresolved ON one_time_charges (updated_at) WHERE status IN ('pending', 'unknown');
