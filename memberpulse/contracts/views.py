"""Every snapshot view, column by column: what it shows and what each column means.

The SQL lives with the snapshot writer (``memberpulse.flows.snapshot``); the words live here, beside the
tables' (:mod:`memberpulse.contracts.tables`), so the snapshot's ``COMMENT``s, the Postgres comments and
``docs/data-dictionary.md`` all read one definition. A test checks every view returns exactly these columns,
in this order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

#: The column every view leads with; a view that counts, counts per company.
_MEMBER_COMPANY: Final = ("company_id", "The Whop company (biz_…) the membership belongs to.")
_COUNTED_COMPANY: Final = (
    "company_id",
    "The Whop company (biz_…) counted on this row; null for memberships no webhook or API response named one of.",
)


@dataclass(frozen=True, slots=True)
class View:
    name: str
    description: str
    columns: tuple[tuple[str, str], ...]  # (name, what it means), in the order the view returns them

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)


MEMBERS_AT_RISK_NOW: Final = View(
    "members_at_risk_now",
    "Members whose status is at_risk as of the snapshot's run, longest quiet first.",
    (
        _MEMBER_COMPANY,
        ("membership_id", "Whop's membership id (mem_…)."),
        ("member_name", "The member's display name, else their username."),
        ("email", "The member's email address."),
        ("engagement_score", "0-100 engagement score as of the run."),
        ("last_active", "The member's latest access (or join when never seen accessing)."),
        ("days_since_active", "Days from last_active to the run's as-of time, one decimal."),
        ("joined_at", "When the membership became valid."),
        ("total_sessions", "How many distinct access instants were seen for the member."),
        ("membership_status", "Whop's own membership status."),
        ("updated_at", "When a run last changed the member's published row."),
    ),
)

STATUS_COUNTS_PER_DAY: Final = View(
    "status_counts_per_day",
    "One row per UTC day with a run and company: member counts by status as of that day's last run.",
    (
        _COUNTED_COMPANY,
        ("day", "The UTC calendar day."),
        ("as_of", "The as-of time of that day's last run, which the counts describe."),
        ("active", "Members active as of that run."),
        ("at_risk", "Members at risk as of that run."),
        ("inactive", "Members inactive as of that run."),
        ("members", "All members scored by that run."),
    ),
)

NEW_MEMBERS_PER_WEEK: Final = View(
    "new_members_per_week",
    "Memberships by company and the UTC week (Monday start) they became valid, and how many of them still are.",
    (
        _COUNTED_COMPANY,
        ("week_start", "Monday of the UTC week the members joined in."),
        ("new_members", "Members who joined that week."),
        ("still_valid", "Of them, members whose membership is valid as of the run."),
    ),
)

WEEKLY_COHORT_RETENTION: Final = View(
    "weekly_cohort_retention",
    "Weekly join cohorts of each company by weeks since joining: how many members of each were still valid.",
    (
        _COUNTED_COMPANY,
        ("cohort_week", "Monday of the UTC week the members joined in."),
        ("week_number", "Weeks since the cohort week (0 = the join week itself)."),
        ("week_start", "Monday of the week counted (cohort_week + week_number weeks)."),
        ("members", "Members who joined in the cohort week."),
        ("retained", "Of them, members still valid at the end of that week (or now, for the current week)."),
        ("retained_share", "retained / members, 0 to 1."),
    ),
)

STATUS_TRANSITIONS: Final = View(
    "status_transitions",
    "Members whose status changed between consecutive UTC days with a run (each day's last run).",
    (
        _MEMBER_COMPANY,
        ("day", "UTC day of the run the new status comes from (that day's last run)."),
        ("previous_day", "The member's previous UTC day with a run."),
        ("membership_id", "Whop's membership id (mem_…)."),
        ("from_status", "Status on previous_day: active, at_risk or inactive."),
        ("to_status", "Status on day."),
    ),
)

ACCESS_TIME_DISAGREEMENTS: Final = View(
    "access_time_disagreements",
    "Memberships whose last access in Whop's API and in the webhooks differ by over a day, or only one knows one.",
    (
        _MEMBER_COMPANY,
        ("membership_id", "Whop's membership id (mem_…)."),
        ("member_name", "The member's name as published."),
        ("email", "The member's email as published."),
        ("whop_last_accessed_at", "Last access time in Whop's API (latest backfill), or NULL if Whop has none."),
        ("webhook_last_accessed_at", "Time of the latest 'accessed' webhook received, or NULL if none."),
        ("gap_days", "whop_last_accessed_at minus webhook_last_accessed_at, in days (positive: Whop saw later)."),
        ("disagreement", "whop_later, webhooks_later, no_webhook_access or no_whop_access."),
    ),
)

#: Views in every DuckDB snapshot, in creation order.
WEBHOOK_DELIVERY_HEALTH: Final = View(
    "webhook_delivery_health",
    "Whop's side of webhook delivery, per UTC hour and company, from the delivery log the last recovery read.",
    (
        ("company_id", "The Whop company (biz_…) the attempts' bodies name; null for attempts naming none."),
        ("hour", "The UTC hour Whop sent the attempts in."),
        ("attempts", "Delivery attempts Whop made in the hour (replays included)."),
        ("succeeded", "Attempts the landing answered with a 2xx."),
        ("failed", "Attempts that failed: an error status, a timeout or no connection (status 0)."),
        ("success_rate_pct", "succeeded / attempts, in percent, one decimal."),
        ("failures_by_status", "Failed attempts per response code, e.g. '0: 3, 503: 1' (0: landing not reached)."),
        ("p95_seconds", "95th percentile of Whop's delivery time for the hour, in seconds."),
    ),
)

SNAPSHOT_VIEW_DEFINITIONS: Final = (
    MEMBERS_AT_RISK_NOW, STATUS_COUNTS_PER_DAY, NEW_MEMBERS_PER_WEEK, WEEKLY_COHORT_RETENTION, STATUS_TRANSITIONS,
    ACCESS_TIME_DISAGREEMENTS, WEBHOOK_DELIVERY_HEALTH,
)  # fmt: skip
