"""What the report shows, aggregated in DuckDB: each query returns a handful of rows whatever the member count."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb

AT_RISK_LISTED = 20  # rows in the "newly at risk" table; the heading gives the full count
# The heatmap and the runs chart stay readable and the page small however long the history; when a bound cuts
# something off, the chart says so ("the last N of M").
COHORTS_SHOWN = 104  # weekly cohorts in the retention heatmap (two years)
RUNS_SHOWN = 60  # pipeline runs in the health chart
COMPANIES_SHOWN = 50  # companies in the index table, the largest first (its chart draws the first 20 of them)
CHURN_DAYS = 30  # the index's churn: memberships that went invalid in this many days up to the run

Rows = list[tuple[Any, ...]]


@dataclass(frozen=True)
class Bounded:
    """The newest rows of something that may be longer than a chart shows: ``total`` items exist."""

    rows: Rows
    total: int


@dataclass(frozen=True)
class Overview:
    run_id: str
    run_at: datetime
    by_status: dict[str, int]
    drift: int

    @property
    def members(self) -> int:
        return sum(self.by_status.values())


@dataclass(frozen=True)
class NewlyAtRisk:
    since: datetime | None  # the run compared with; None when the history holds no earlier run
    total: int
    rows: Rows  # member_name, email, engagement_score, last_active, days_since_active


def overview(con: duckdb.DuckDBPyConnection) -> Overview:
    run_id, run_at = con.execute("SELECT run_id, run_at FROM snapshot_info").fetchone() or ("?", None)
    by_status = dict(con.execute("SELECT status, count(*) FROM member_activity GROUP BY ALL").fetchall())
    drift = con.execute("SELECT count(*) FROM reconciliation_drift").fetchone()
    return Overview(str(run_id), run_at, {str(k): int(v) for k, v in by_status.items()}, int(drift[0] if drift else 0))


def status_over_time(con: duckdb.DuckDBPyConnection) -> Rows:
    """(day, active, at_risk, inactive), every company's members together (the view counts per company)."""
    return con.execute(
        """
        SELECT day, sum(active), sum(at_risk), sum(inactive) FROM status_counts_per_day GROUP BY day ORDER BY day
        """
    ).fetchall()


def score_distribution(con: duckdb.DuckDBPyConnection) -> Rows:
    """(status, bucket start 0, 5, ... 100, members) — scores in buckets of 5 points."""
    return con.execute(
        """
        SELECT status, CAST(least(floor(engagement_score / 5) * 5, 100) AS INTEGER) AS bucket, count(*) AS members
        FROM member_activity WHERE engagement_score IS NOT NULL
        GROUP BY ALL ORDER BY status, bucket
        """
    ).fetchall()


def cohort_retention(con: duckdb.DuckDBPyConnection) -> Bounded:
    """(cohort_week, week_number, retained_share, retained, members) for the newest ``COHORTS_SHOWN`` cohorts,
    and how many cohorts there are."""
    rows = con.execute(
        f"""
        WITH cohorts AS (  -- every company's members of a cohort together (the view counts per company)
            SELECT cohort_week, week_number, sum(retained) AS retained, sum(members) AS members
            FROM weekly_cohort_retention GROUP BY ALL
        ), shown AS (
            SELECT DISTINCT cohort_week FROM cohorts ORDER BY cohort_week DESC LIMIT {COHORTS_SHOWN}
        )
        SELECT cohort_week, week_number, round(retained / members, 4) AS retained_share, retained, members
        FROM cohorts JOIN shown USING (cohort_week)
        ORDER BY cohort_week, week_number
        """
    ).fetchall()
    return Bounded(rows, _count(con, "SELECT count(DISTINCT cohort_week) FROM weekly_cohort_retention"))


def churn_per_week(con: duckdb.DuckDBPyConnection) -> Rows:
    """(week_start, members who went invalid that week), from the "left" webhooks."""
    return con.execute(
        """
        SELECT CAST(date_trunc('week', timezone('UTC', event_at)) AS DATE) AS week_start,
               count(DISTINCT membership_id) AS went_invalid
        FROM events WHERE kind = 'left' AND membership_id IS NOT NULL
        GROUP BY ALL ORDER BY week_start
        """
    ).fetchall()


def newly_at_risk(con: duckdb.DuckDBPyConnection) -> NewlyAtRisk:
    """Members at risk now who were not at risk a week ago: at the last run at least 7 days before the
    history's newest run, else at its oldest run; with no earlier run, every member at risk now counts."""
    since_row = con.execute(
        """
        WITH latest AS (SELECT max(run_at) AS run_at FROM member_activity_history)
        SELECT coalesce(
            (SELECT max(h.run_at) FROM member_activity_history AS h, latest
             WHERE h.run_at <= latest.run_at - INTERVAL 7 DAY),
            (SELECT min(h.run_at) FROM member_activity_history AS h, latest WHERE h.run_at < latest.run_at))
        """
    ).fetchone()
    since = since_row[0] if since_row else None
    newly = """
        FROM members_at_risk_now AS m
        WHERE NOT EXISTS (SELECT 1 FROM member_activity_history AS h
                          WHERE h.run_at = $since AND h.membership_id = m.membership_id AND h.status = 'at_risk')
    """
    total = con.execute(f"SELECT count(*) {newly}", {"since": since}).fetchone()
    rows = con.execute(
        f"SELECT member_name, email, engagement_score, last_active, days_since_active {newly} "
        f"ORDER BY engagement_score DESC, last_active DESC LIMIT {AT_RISK_LISTED}",
        {"since": since},
    ).fetchall()
    return NewlyAtRisk(since=since, total=int(total[0] if total else 0), rows=rows)


def drift_by_kind(con: duckdb.DuckDBPyConnection) -> Rows:
    """(kinds, memberships): each drifting membership once, under the kinds its row lists ("validity, status"
    stays one bar), so the bars add up to the memberships drifting that the headline counts."""
    return con.execute(
        """
        SELECT replace(reason, ',', ' + ') AS kinds, count(*) AS memberships
        FROM reconciliation_drift GROUP BY ALL ORDER BY memberships DESC, kinds
        """
    ).fetchall()


def pipeline_health(con: duckdb.DuckDBPyConnection) -> Bounded:
    """(started_at, status, seconds, rejects, landing_rejections, events_ingested) for the latest
    ``RUNS_SHOWN`` runs, oldest first, and how many runs there are.

    A snapshot written before ``landing_rejections`` was recorded lacks the column: its runs show no count
    (NULL), rather than the report failing on it."""
    refused = "landing_rejections" if _has_column(con, "pipeline_runs", "landing_rejections") else "NULL"
    rows = con.execute(
        f"""
        SELECT * FROM (
            SELECT started_at, status,
                   round(date_diff('millisecond', started_at, finished_at) / 1000.0, 2) AS seconds,
                   coalesce(rejects, 0) AS rejects, {refused} AS landing_rejections,
                   coalesce(events_ingested, 0) AS events_ingested
            FROM pipeline_runs ORDER BY started_at DESC LIMIT {RUNS_SHOWN}
        ) ORDER BY started_at
        """
    ).fetchall()
    return Bounded(rows, _count(con, "SELECT count(*) FROM pipeline_runs"))


def company_index(con: duckdb.DuckDBPyConnection) -> Bounded:
    """(company_id, members, active, at_risk, inactive, churned, drifting) for the ``COMPANIES_SHOWN`` companies
    with the most members, largest first, and how many companies the snapshot names. ``churned``: memberships
    whose "left" webhook came in the ``CHURN_DAYS`` days up to the run; ``drifting``: memberships where Whop's
    API and the webhooks disagree. Members no company was named for are a row of their own (company null)."""
    rows = con.execute(
        f"""
        WITH members AS (
            SELECT company_id, count(*) AS members,
                   count(*) FILTER (WHERE status = 'active') AS active,
                   count(*) FILTER (WHERE status = 'at_risk') AS at_risk,
                   count(*) FILTER (WHERE status = 'inactive') AS inactive
            FROM member_activity GROUP BY ALL
        ), churned AS (
            SELECT e.company_id, count(DISTINCT e.membership_id) AS churned
            FROM events AS e CROSS JOIN snapshot_info AS i
            WHERE e.kind = 'left' AND e.event_at > i.run_at - INTERVAL {CHURN_DAYS} DAY AND e.event_at <= i.run_at
            GROUP BY ALL
        ), drifting AS (
            SELECT company_id, count(*) AS drifting FROM reconciliation_drift GROUP BY ALL
        )
        SELECT m.company_id, m.members, m.active, m.at_risk, m.inactive,
               coalesce(c.churned, 0) AS churned, coalesce(d.drifting, 0) AS drifting
        FROM members AS m
        LEFT JOIN churned AS c ON c.company_id IS NOT DISTINCT FROM m.company_id
        LEFT JOIN drifting AS d ON d.company_id IS NOT DISTINCT FROM m.company_id
        ORDER BY m.members DESC, m.company_id NULLS LAST
        LIMIT {COMPANIES_SHOWN}
        """
    ).fetchall()
    named = "SELECT count(DISTINCT company_id) FROM member_activity"
    return Bounded(rows, _count(con, named))


def _count(con: duckdb.DuckDBPyConnection, query: str) -> int:
    row = con.execute(query).fetchone()
    return int(row[0]) if row else 0


def _has_column(con: duckdb.DuckDBPyConnection, table: str, column: str) -> bool:
    found = con.execute(
        "SELECT count(*) FROM duckdb_columns() WHERE table_name = $table AND column_name = $column",
        {"table": table, "column": column},
    ).fetchone()
    return bool(found and found[0])
