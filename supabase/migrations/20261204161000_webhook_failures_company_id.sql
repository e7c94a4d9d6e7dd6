-- memberpulse: the Whop company a failing webhook belongs to, so row level security can show each company its
-- own failures (20261204161100_company_row_level_security.sql). The flows fill it from a body the landing
-- verified (or recovery fetched from Whop) when it names its company. It stays NULL for a webhook the landing
-- refused (its signature did not check out, so its body could name any company), for a body that names none,
-- and for failures recorded before this migration: such rows are visible to the service role only.

ALTER TABLE public.webhook_failures ADD COLUMN IF NOT EXISTS company_id text;
