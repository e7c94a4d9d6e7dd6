"""What a snapshot contains: table definitions, the analyst views, and the columns inputs must carry."""

from __future__ import annotations

from memberpulse.contracts.tables import MEMBER_ACTIVITY, SNAPSHOT_TABLES

# Declared (memberpulse.contracts.tables) rather than inferred, so that an empty run still yields the right types
# and a snapshot always matches what Supabase holds.
MEMBER_ACTIVITY_REQUIRED = frozenset(MEMBER_ACTIVITY.names) - {"activity_score"}

# History rows are whatever the flow scored in each run (read from its parquet files) plus the run's time.
HISTORY_REQUIRED = frozenset({"membership_id", "status"})

TABLES: tuple[str, ...] = tuple(table.name for table in SNAPSHOT_TABLES)

# Days and weeks are UTC calendar days and ISO weeks (Monday start), whatever the analyst's session time zone.
# Every view leads with company_id, and a view that counts counts per company: one company's figures are a
# WHERE away, the deployment's a sum.
VIEWS: dict[str, str] = {
    "members_at_risk_now": """
        SELECT m.company_id, m.membership_id, m.member_name, m.email, m.engagement_score, m.last_active,
               round(date_diff('second', m.last_active, i.run_at) / 86400.0, 1) AS days_since_active,
               m.joined_at, m.total_sessions, m.membership_status, m.updated_at
        FROM member_activity AS m CROSS JOIN snapshot_info AS i
        WHERE m.status = 'at_risk'
        ORDER BY m.last_active, m.membership_id
    """,
    # One row per UTC day and company: member counts by status as of that day's last run.
    "status_counts_per_day": """
        WITH last_run AS (
            SELECT CAST(timezone('UTC', run_at) AS DATE) AS day, max(run_at) AS run_at
            FROM member_activity_history
            GROUP BY ALL
        )
        SELECT h.company_id,
               l.day,
               l.run_at AS as_of,
               count(*) FILTER (WHERE h.status = 'active') AS active,
               count(*) FILTER (WHERE h.status = 'at_risk') AS at_risk,
               count(*) FILTER (WHERE h.status = 'inactive') AS inactive,
               count(*) AS members
        FROM last_run AS l JOIN member_activity_history AS h ON h.run_at = l.run_at
        GROUP BY ALL
        ORDER BY l.day, h.company_id
    """,
    "new_members_per_week": """
        SELECT company_id,
               CAST(date_trunc('week', timezone('UTC', joined_at)) AS DATE) AS week_start,
               count(*) AS new_members,
               count(*) FILTER (WHERE valid) AS still_valid
        FROM member_activity
        WHERE joined_at IS NOT NULL
        GROUP BY ALL
        ORDER BY week_start, company_id
    """,
    # Whop's side of delivery health, per UTC hour and company: what Whop tried, what failed and how, how slow.
    "webhook_delivery_health": """
        WITH per_code AS (
            SELECT company_id, date_trunc('hour', timezone('UTC', sent_at)) AS hour, response_code, count(*) AS n
            FROM webhook_deliveries WHERE NOT success GROUP BY ALL
        ), failures AS (
            SELECT company_id, hour,
                   string_agg(response_code || ': ' || n, ', ' ORDER BY response_code) AS failures_by_status
            FROM per_code GROUP BY ALL
        )
        SELECT d.company_id,
               date_trunc('hour', timezone('UTC', d.sent_at)) AS hour,
               count(*) AS attempts,
               count(*) FILTER (WHERE d.success) AS succeeded,
               count(*) FILTER (WHERE NOT d.success) AS failed,
               round(100.0 * count(*) FILTER (WHERE d.success) / count(*), 1) AS success_rate_pct,
               any_value(f.failures_by_status) AS failures_by_status,
               round(quantile_cont(d.total_time, 0.95), 3) AS p95_seconds
        FROM webhook_deliveries AS d
        LEFT JOIN failures AS f
            ON f.hour = date_trunc('hour', timezone('UTC', d.sent_at))
               AND f.company_id IS NOT DISTINCT FROM d.company_id
        GROUP BY ALL
        ORDER BY hour, d.company_id
    """,
}


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
