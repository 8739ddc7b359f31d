-- billd schema v21: a plan change carries the fixed term it gives (issue 25, a review: `subscriptions change` to a
-- plan with `periods` billed forever). `sets_term` 1: once applied, the subscription's last_period is
-- `to_last_period` (NULL: no term; counted from its first period, as the config counts it); 0: left as it is (the
-- changes recorded before v20).
ALTER TABLE plan_changes ADD COLUMN sets_term INTEGER NOT NULL DEFAULT 0 CHECK (sets_term IN (0, 1));
ALTER TABLE plan_changes ADD COLUMN to_last_period INTEGER CHECK (to_last_period >= 0);
