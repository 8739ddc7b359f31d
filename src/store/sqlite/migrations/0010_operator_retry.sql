-- billd schema v10: an operator's extra attempt (`billd retry`, or a `resume`, ahead of the scheduled retry) costs
-- the customer none of the scheduled dunning retries (issue 23, point 4). While a period's next attempt was made
-- due by an operator ahead of its scheduled retry, the period's `retry_ahead_of` keeps that scheduled instant. An
-- attempt claimed before that instant is the operator's extra one and keeps it too (decided when it is made, not
-- when its outcome is settled): a decline of it is not counted and the scheduled retry stays. NULL: scheduled.
ALTER TABLE periods ADD COLUMN retry_ahead_of INTEGER;
ALTER TABLE attempts ADD COLUMN retry_ahead_of INTEGER;
