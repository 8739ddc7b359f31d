-- billd schema v15: `billd pause ID --until DATE [--catch-up]` (issue 25): the instant a paused subscription resumes
-- by itself, and whether the periods that fell due while it was paused are charged then. NULL: it stays paused until
-- an operator resumes it. Any status change clears it (a pause sets it again in the same transaction).
ALTER TABLE subscriptions ADD COLUMN resume_at INTEGER;
ALTER TABLE subscriptions ADD COLUMN resume_catch_up INTEGER NOT NULL DEFAULT 0;
CREATE INDEX subscriptions_resume_at ON subscriptions (resume_at) WHERE resume_at IS NOT NULL;
