"""What a snapshot contains: table definitions, the analyst views, and the columns inputs must carry."""

from __future__ import annotations

# The published table, column for column (DESIGN "Published table"). Declared rather than inferred so that an
# empty run still yields the right types and a snapshot always matches what Supabase holds.
MEMBER_ACTIVITY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("membership_id", "VARCHAR NOT NULL"),
    ("company_id", "VARCHAR"),
    ("user_id", "VARCHAR"),
    ("member_name", "VARCHAR"),
    ("email", "VARCHAR"),
    ("status", "VARCHAR"),
    ("engagement_score", "INTEGER"),
    ("activity_score", "INTEGER"),
    ("last_active", "TIMESTAMPTZ"),
    ("joined_at", "TIMESTAMPTZ"),
    ("total_sessions", "INTEGER"),
    ("membership_status", "VARCHAR"),
    ("valid", "BOOLEAN"),
    ("updated_at", "TIMESTAMPTZ"),
)
MEMBER_ACTIVITY_REQUIRED = frozenset(name for name, _ in MEMBER_ACTIVITY_COLUMNS) - {"activity_score"}

# History rows are whatever the flow scored in each run (read from its parquet files) plus the run's time.
HISTORY_REQUIRED = frozenset({"membership_id", "status"})

TABLES: tuple[str, ...] = (
    "member_activity",
    "events",
    "member_activity_history",
    "reconciliation_drift",
    "pipeline_runs",
    "snapshot_info",
    "whop_member_access",
)

# Days and weeks are UTC calendar days and ISO weeks (Monday start), whatever the analyst's session time zone.
VIEWS: dict[str, str] = {
    "members_at_risk_now": """
        SELECT m.membership_id, m.member_name, m.email, m.engagement_score, m.last_active,
               round(date_diff('second', m.last_active, i.run_at) / 86400.0, 1) AS days_since_active,
               m.joined_at, m.total_sessions, m.membership_status, m.updated_at
        FROM member_activity AS m CROSS JOIN snapshot_info AS i
        WHERE m.status = 'at_risk'
        ORDER BY m.last_active, m.membership_id
    """,
    # One row per UTC day: member counts by status as of that day's last run.
    "status_counts_per_day": """
        WITH last_run AS (
            SELECT CAST(timezone('UTC', run_at) AS DATE) AS day, max(run_at) AS run_at
            FROM member_activity_history
            GROUP BY ALL
        )
        SELECT l.day,
               l.run_at AS as_of,
               count(*) FILTER (WHERE h.status = 'active') AS active,
               count(*) FILTER (WHERE h.status = 'at_risk') AS at_risk,
               count(*) FILTER (WHERE h.status = 'inactive') AS inactive,
               count(*) AS members
        FROM last_run AS l JOIN member_activity_history AS h ON h.run_at = l.run_at
        GROUP BY ALL
        ORDER BY l.day
    """,
    "new_members_per_week": """
        SELECT CAST(date_trunc('week', timezone('UTC', joined_at)) AS DATE) AS week_start,
               count(*) AS new_members,
               count(*) FILTER (WHERE valid) AS still_valid
        FROM member_activity
        WHERE joined_at IS NOT NULL
        GROUP BY ALL
        ORDER BY week_start
    """,
}


def columns_ddl(columns: tuple[tuple[str, str], ...]) -> str:
    return ", ".join(f"{quote_ident(name)} {sql_type}" for name, sql_type in columns)


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
