-- billd schema v12: a subscription's discount on its first periods (issue 25, prices): JSON
-- `{"percent": 20, "periods": 3}` or `{"amount": 1000, "periods": 3}`; NULL: none. Period p (counted from 0) is
-- charged less while p < periods, never below 1. (A subscription's own `amount` needs no column: it is its amount.)
ALTER TABLE subscriptions ADD COLUMN discount TEXT;
