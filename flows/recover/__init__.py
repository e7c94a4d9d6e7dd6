"""Recovery from Whop's delivery log: the events the landing never stored, brought back through the API.

When the landing is down, unreachable or answers 503, Whop retries for a while and then gives up. Whop keeps
every delivery attempt (30 days) with its payload; :func:`recover` reads that log for the company's webhook
and writes each event whose webhook id the raw store lacks as a raw record of scheme ``delivery_log``, which
the reconcile reads like a landed webhook and dedupes by webhook id. ``replay=True`` instead asks Whop to
re-send the failed deliveries through the normal signed path. The attempts read also become the snapshot's
``webhook_deliveries`` (delivery health from Whop's side).

``memberpulse recover`` calls :func:`recover` (reporting pages and retries to the callbacks it gives); ``send-test
--via-whop`` calls :func:`send_whop_sample`. The backfill flow runs :func:`recover` as its last step when
``WHOP_WEBHOOK_ID`` or ``MEMBERPULSE_PUBLIC_WEBHOOK_URL`` is set.
"""

from memberpulse.flows.recover._recover import RecoveryResult, deliveries_frame, recover
from memberpulse.flows.recover._send_test import WHOP_TEST_EVENTS, WhopSample, WhopWebhook, send_whop_sample
from memberpulse.flows.recover._store import RecoveryStore
from memberpulse.flows.recover._webhook import find_webhook, recovery_skip_reason, require_recovery_settings
from memberpulse.flows.state_codec import RecoveryState

__all__ = [
    "WHOP_TEST_EVENTS",
    "RecoveryResult",
    "RecoveryState",
    "RecoveryStore",
    "WhopSample",
    "WhopWebhook",
    "deliveries_frame",
    "find_webhook",
    "recover",
    "recovery_skip_reason",
    "require_recovery_settings",
    "send_whop_sample",
]
