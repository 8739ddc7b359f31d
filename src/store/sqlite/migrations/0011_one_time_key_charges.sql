-- billd schema v11: one-time charges of a stored billing key (`billd charge-key`, issue 24) beside the key-in ones
-- (`billd charge-once`), in the same ledger and under the same exactly-once rules.
--  * kind: what was charged: 'card' (a card typed by the operator, every row before this version) or 'key' (the
--    billing key customer_uid, already stored at the gateway; card_masked is then the key's card as the gateway
--    showed it before the charge, or '-').
--  * subscription_id: the subscription a key charge is tied to (`--subscription`), listed by `subscriptions show`.
ALTER TABLE one_time_charges ADD COLUMN kind TEXT NOT NULL DEFAULT 'card' CHECK (kind IN ('card', 'key'));
ALTER TABLE one_time_charges ADD COLUMN subscription_id TEXT REFERENCES subscriptions (id);
CREATE INDEX one_time_charges_by_subscription ON one_time_charges (subscription_id)
    WHERE subscription_id IS NOT NULL;
