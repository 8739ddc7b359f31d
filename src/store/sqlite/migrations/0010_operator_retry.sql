-- billd schema v10: an operator's extra attempt (`billd retry`, or a `resume`, ahead of the scheduled retry) costs
-- the customer none of the scheduled dunning retries (issue 23, point 4). While a period's next attempt was made
-- due by an operator ahead of its scheduled retry, `retry_ahead_of` keeps that scheduled instant: a decline of the
-- operator's attempt is not counted and the scheduled retry stays there. NULL: the next attempt is a scheduled one.
ALTER TABLE periods ADD COLUMN retry_ahead_of INTEGER;
