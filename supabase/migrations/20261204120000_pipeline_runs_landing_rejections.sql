-- memberpulse: each reconcile run also records how many webhooks the landing refused (its quarantine entries)
-- that the run read, beside `rejects` (records it could not parse), so every view of a run shows both counts.
-- Runs recorded before this migration keep NULL: they did not count it.

ALTER TABLE public.pipeline_runs ADD COLUMN IF NOT EXISTS landing_rejections bigint;
