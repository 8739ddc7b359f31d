-- billd schema v8: a period is never opened under a merchant_uid that a one-time charge holds in any case (the
-- gateway may not tell merchant_uids apart by case, issue 21): the check compares without case, and this index
-- keeps it a lookup.
CREATE INDEX one_time_charges_merchant_uid_nocase ON one_time_charges (merchant_uid COLLATE NOCASE);
