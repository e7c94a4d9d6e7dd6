"""The views analysts ask for after the basics: cohort retention, status transitions, access-time disagreements.

Each view's columns are described in :mod:`memberpulse.contracts.views` (also :data:`VIEW_COLUMNS` here), in the
order the view returns them.
Weeks are ISO weeks (Monday start) and days are calendar days, both in UTC, like the other snapshot views.
"""

from __future__ import annotations

from memberpulse.contracts.views import SNAPSHOT_VIEW_DEFINITIONS

# A member who is not valid now left at their latest "went invalid" webhook; without one (the webhook went
# missing, or only Whop's API said so) at their last activity, else at their join. Valid members never left.
_LIFETIMES = """
    SELECT m.company_id, m.membership_id,
           CAST(date_trunc('week', timezone('UTC', m.joined_at)) AS DATE) AS cohort_week,
           CASE WHEN NOT coalesce(m.valid, false)
                THEN greatest(coalesce(l.left_at, m.last_active, m.joined_at), m.joined_at) END AS left_at
    FROM member_activity AS m
    LEFT JOIN (SELECT membership_id, max(event_at) AS left_at FROM events WHERE kind = 'left' GROUP BY ALL) AS l
        USING (membership_id)
    WHERE m.joined_at IS NOT NULL
"""

# Like the views in _schema, each leads with company_id and counts per company.
ANALYST_VIEWS: dict[str, str] = {
    # Counted per (company, cohort, weeks lasted) first, so the cost is one pass over members whatever their number.
    "weekly_cohort_retention": f"""
        WITH lifetimes AS ({_LIFETIMES}),
        run_week AS (SELECT CAST(date_trunc('week', timezone('UTC', run_at)) AS DATE) AS week FROM snapshot_info),
        cohorts AS (SELECT company_id, cohort_week, count(*) AS members FROM lifetimes GROUP BY ALL),
        departures AS (
            SELECT company_id, cohort_week,
                   CAST(floor(date_diff('day', cohort_week, CAST(timezone('UTC', left_at) AS DATE)) / 7) AS INTEGER)
                       AS weeks_lasted,
                   count(*) AS departed
            FROM lifetimes WHERE left_at IS NOT NULL GROUP BY ALL
        ),
        grid AS (
            SELECT c.company_id, c.cohort_week, c.members, CAST(k.week_number AS INTEGER) AS week_number
            FROM cohorts AS c CROSS JOIN run_week AS r,
                 range(0, CAST(date_diff('week', c.cohort_week, r.week) AS BIGINT) + 1) AS k(week_number)
        )
        SELECT g.company_id,
               g.cohort_week,
               g.week_number,
               CAST(g.cohort_week + INTERVAL (g.week_number) WEEK AS DATE) AS week_start,
               g.members,
               CAST(g.members - coalesce(sum(d.departed), 0) AS BIGINT) AS retained,
               round((g.members - coalesce(sum(d.departed), 0)) / g.members, 4) AS retained_share
        FROM grid AS g
        LEFT JOIN departures AS d
            ON d.company_id IS NOT DISTINCT FROM g.company_id AND d.cohort_week = g.cohort_week
               AND d.weeks_lasted <= g.week_number
        GROUP BY g.company_id, g.cohort_week, g.week_number, g.members
        ORDER BY g.company_id, g.cohort_week, g.week_number
    """,
    # Each member's status on each UTC day with a run (that day's last run), against their previous such day.
    "status_transitions": """
        WITH last_run AS (
            SELECT CAST(timezone('UTC', run_at) AS DATE) AS day, max(run_at) AS run_at
            FROM member_activity_history GROUP BY ALL
        ),
        daily AS (
            SELECT l.day, h.company_id, h.membership_id, h.status
            FROM last_run AS l JOIN member_activity_history AS h ON h.run_at = l.run_at
        ),
        paired AS (
            SELECT day, company_id, membership_id, status,
                   lag(day) OVER w AS previous_day, lag(status) OVER w AS previous_status
            FROM daily
            WINDOW w AS (PARTITION BY membership_id ORDER BY day)
        )
        SELECT company_id, day, previous_day, membership_id, previous_status AS from_status, status AS to_status
        FROM paired
        WHERE previous_day IS NOT NULL AND previous_status IS DISTINCT FROM status
        ORDER BY day, membership_id
    """,
    # Memberships Whop's API lists, where its last access time and the last "accessed" webhook differ by over
    # a day, or only one of the two knows of any access.
    "access_time_disagreements": """
        WITH webhook_access AS (
            SELECT membership_id, max(event_at) AS last_accessed_at
            FROM events WHERE kind = 'accessed' GROUP BY ALL
        ),
        compared AS (
            SELECT coalesce(w.company_id, m.company_id) AS company_id, w.membership_id, m.member_name, m.email,
                   w.last_accessed_at AS whop_last_accessed_at,
                   a.last_accessed_at AS webhook_last_accessed_at,
                   round(date_diff('second', a.last_accessed_at, w.last_accessed_at) / 86400.0, 1) AS gap_days
            FROM whop_member_access AS w
            LEFT JOIN webhook_access AS a USING (membership_id)
            LEFT JOIN member_activity AS m USING (membership_id)
        )
        SELECT *,
               CASE WHEN webhook_last_accessed_at IS NULL THEN 'no_webhook_access'
                    WHEN whop_last_accessed_at IS NULL THEN 'no_whop_access'
                    WHEN gap_days > 0 THEN 'whop_later'
                    ELSE 'webhooks_later' END AS disagreement
        FROM compared
        WHERE (whop_last_accessed_at IS NULL) <> (webhook_last_accessed_at IS NULL)
           OR abs(date_diff('second', webhook_last_accessed_at, whop_last_accessed_at)) > 86400
        ORDER BY abs(gap_days) DESC NULLS FIRST, membership_id
    """,
}

# What each view's columns mean, in the order it returns them (the words live in memberpulse.contracts.views).
VIEW_COLUMNS: dict[str, dict[str, str]] = {view.name: dict(view.columns) for view in SNAPSHOT_VIEW_DEFINITIONS}
