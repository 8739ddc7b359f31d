-- billd schema v7: the quiet period in real time, and the moment a request leaves (issue 20).
--  * attempts.doubt_*: the latest real instant at which a request of this attempt may have left or been in progress
--    (the "go" write right before a request leaves, then the moment an unresolved outcome is recorded, or a restart
--    finds it pending): the wall clock in ms (doubt_wall_ms), and CLOCK_BOOTTIME in ms with the kernel's boot id
--    (doubt_boot_ms, doubt_boot_id). The quiet period before the next look, and any resend, is counted from it on
--    every clock that applies, never on the billing clock. NULL: no request of it has left (claimed, not sent),
--    the only attempts a cancel or a pause may void.
--  * one_time_charges.doubt_*: the same, for charge-once.
-- A request left unresolved by an older billd is counted from this migration (a later real instant than any it
-- could have left at), so the upgrade never shortens its quiet period.

ALTER TABLE attempts ADD COLUMN doubt_wall_ms INTEGER;
ALTER TABLE attempts ADD COLUMN doubt_boot_ms INTEGER;
ALTER TABLE attempts ADD COLUMN doubt_boot_id TEXT;
UPDATE attempts SET doubt_wall_ms = 1000 * max(updated_at, CAST(strftime('%s', 'now') AS INTEGER))
 WHERE status IN ('pending', 'unknown');
UPDATE attempts SET doubt_wall_ms = 1000 * updated_at WHERE doubt_wall_ms IS NULL;

ALTER TABLE one_time_charges ADD COLUMN doubt_wall_ms INTEGER;
ALTER TABLE one_time_charges ADD COLUMN doubt_boot_ms INTEGER;
ALTER TABLE one_time_charges ADD COLUMN doubt_boot_id TEXT;
UPDATE one_time_charges SET doubt_wall_ms = 1000 * max(updated_at, CAST(strftime('%s', 'now') AS INTEGER))
 WHERE status IN ('pending', 'unknown');
UPDATE one_time_charges SET doubt_wall_ms = 1000 * updated_at WHERE doubt_wall_ms IS NULL;
