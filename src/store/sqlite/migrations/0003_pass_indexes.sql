-- billd schema v3: indexes in the order a pass reads due work, so each page of a billing day (tens of thousands
-- of periods due at the same instant) is read from the front of an index instead of sorting everything due; and
-- the config's own subscriptions found without scanning a large imported book.

DROP INDEX subscriptions_next_due;
CREATE INDEX subscriptions_next_due ON subscriptions (next_due_at, id) WHERE status IN ('active', 'past_due');

DROP INDEX periods_next_attempt;
CREATE INDEX periods_next_attempt ON periods (next_attempt_at, due_at, subscription_id) WHERE state = 'open';

CREATE INDEX subscriptions_from_config ON subscriptions (id) WHERE source = 'config';
