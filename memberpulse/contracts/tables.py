"""Every published and snapshot table, column by column: the one definition the publishers, the scorer, the
snapshot writer and the data dictionary read.

A column carries its name, polars type (what frames hold), Postgres type (what the Supabase migrations
declare: a test checks that they agree), whether it may be null in Postgres, and one sentence saying what it
means. Snapshots (DuckDB) declare only the key NOT NULL: they mirror what was published and never refuse a
row the warehouse accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import polars as pl

from memberpulse.contracts.times import UTC_US

_DUCKDB_TYPES: Final[dict[pl.DataType, str]] = {
    pl.String(): "VARCHAR",
    pl.Int32(): "INTEGER",
    pl.Int64(): "BIGINT",
    pl.Boolean(): "BOOLEAN",
    UTC_US: "TIMESTAMPTZ",
    pl.Float64(): "DOUBLE",
}


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    dtype: pl.DataType
    sql_type: str  # Postgres
    nullable: bool
    description: str
    filled_by_database: bool = False  # a generated column or a default: the database fills it, writers never send it

    @property
    def duckdb_type(self) -> str:
        return _DUCKDB_TYPES[self.dtype]


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    description: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def schema(self) -> pl.Schema:
        """Every column, in table order, with its polars type."""
        return pl.Schema({c.name: c.dtype for c in self.columns})

    @property
    def sent_names(self) -> tuple[str, ...]:
        """The columns a writer sends (the database fills the others)."""
        return tuple(c.name for c in self.columns if not c.filled_by_database)

    @property
    def sent_schema(self) -> pl.Schema:
        return pl.Schema({c.name: c.dtype for c in self.columns if not c.filled_by_database})

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    def without(self, *names: str) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.name not in names)

    def duckdb_columns(self) -> str:
        """Column definitions for a DuckDB ``CREATE TABLE``: only the key is NOT NULL."""
        return ", ".join(
            f"{quote_ident(c.name)} {c.duckdb_type}{' NOT NULL' if c.name in self.key else ''}" for c in self.columns
        )


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _col(name: str, dtype: pl.DataType, sql_type: str, description: str) -> Column:
    return Column(name, dtype, sql_type, True, description)


def _req(name: str, dtype: pl.DataType, sql_type: str, description: str) -> Column:
    """A column Postgres declares NOT NULL (or PRIMARY KEY)."""
    return Column(name, dtype, sql_type, False, description)


_S, _I32, _I64, _B = pl.String(), pl.Int32(), pl.Int64(), pl.Boolean()

MEMBER_ACTIVITY: Final = Table(
    "member_activity",
    "One row per Whop membership, scored as of the last flow run; written by the flows only.",
    (
        _req("membership_id", _S, "text", "Whop's membership id (mem_…), the row's key."),
        _col("company_id", _S, "text", "The Whop company (biz_…) the membership belongs to."),
        _col("user_id", _S, "text", "The Whop user (user_…) holding the membership."),
        _col("member_name", _S, "text", "The member's display name, else their username, as Whop last reported it."),
        _col("email", _S, "text", "The member's email address as Whop last reported it."),
        _req(
            "status",
            _S,
            "text",
            "Engagement status as of the run: active, at_risk (quiet for a while) or inactive (gone or long quiet).",
        ),
        _req(
            "engagement_score",
            _I32,
            "integer",
            "0-100 as of the run: 100 halved for every MEMBERPULSE_HALF_LIFE_DAYS (default 7) since the last "
            "activity, rounded half up (floor(100 * 0.5^(days / half_life_days) + 0.5)); 0 when the membership is "
            "not valid.",
        ),
        Column(
            "activity_score",
            _I32,
            "integer",
            True,
            "Same value as engagement_score, kept for dashboards built on the older column name.",
            filled_by_database=True,
        ),
        _col("last_active", UTC_US, "timestamptz", "The member's latest access (or join when never seen accessing)."),
        _col(
            "joined_at",
            UTC_US,
            "timestamptz",
            "When the membership became valid (first join event or Whop's created_at).",
        ),
        _req("total_sessions", _I32, "integer", "How many distinct access instants were seen for the member."),
        _col("membership_status", _S, "text", "Whop's own membership status (active, trialing, canceled, expired, …)."),
        _req("valid", _B, "boolean", "Whether the membership currently grants access (latest validity fact)."),
        _req("updated_at", UTC_US, "timestamptz", "When a run last changed this row (unchanged rows keep theirs)."),
    ),
    key=("membership_id",),
)

#: Characters of a failing webhook's body kept in ``webhook_failures.body_prefix``.
BODY_PREFIX_CHARS: Final = 512

WEBHOOK_FAILURES: Final = Table(
    "webhook_failures",
    "Webhooks that were refused by the landing or could not be parsed; the raw bodies stay in the landing store.",
    (
        _req("webhook_id", _S, "text", "The webhook's id, or the sha256 of its body when it carried none."),
        _req("reason", _S, "text", "Why it failed, e.g. 'landing 403: signature mismatch' or 'unparsable event time'."),
        _col("event_type", _S, "text", "The event type the webhook declared, when it could be read."),
        _col(
            "body_prefix",
            _S,
            "text",
            f"The first {BODY_PREFIX_CHARS} characters of the body, for a human to recognise it.",
        ),
        _req("first_seen", UTC_US, "timestamptz", "When this webhook first failed for this reason."),
        _req("last_seen", UTC_US, "timestamptz", "When this webhook last failed for this reason."),
        Column(
            "recorded_at",
            UTC_US,
            "timestamptz",
            False,
            "When the row was last written (set by Postgres).",
            filled_by_database=True,
        ),
        # Last: a later migration added it, and the migrations must declare the columns in this order.
        _col(
            "company_id",
            _S,
            "text",
            "The Whop company (biz_…) the webhook's verified body names; null when it names none, for a webhook "
            "the landing refused (unverified) and for failures recorded before this was kept. Row level "
            "security shows a company only its own failures: a null one only to the service role.",
        ),
    ),
    key=("webhook_id", "reason"),
)

PIPELINE_RUNS: Final = Table(
    "pipeline_runs",
    "One row per flow run, with its counts, status and timings.",
    (
        _req("run_id", _S, "text", "The run's id (the Prefect flow run id when run under Prefect)."),
        _req("flow", _S, "text", "Which flow ran: reconcile or backfill."),
        _req("started_at", UTC_US, "timestamptz", "When the run started."),
        _col("finished_at", UTC_US, "timestamptz", "When the run finished (null while running or after a crash)."),
        _req("status", _S, "text", "running, completed or failed."),
        _req("events_ingested", _I64, "bigint", "Raw records read from the landing store by this run."),
        _req("rejects", _I64, "bigint", "Records this run could not turn into events (see webhook_failures)."),
        _req("rows_inserted", _I64, "bigint", "member_activity rows this run published for the first time."),
        _req("rows_updated", _I64, "bigint", "member_activity rows whose published values this run changed."),
        _req("rows_unchanged", _I64, "bigint", "member_activity rows this run left as they were."),
        _req("drift_count", _I64, "bigint", "Memberships where Whop's API and the webhook history disagree."),
        _col("error", _S, "text", "What went wrong, for a failed run."),
        # Last: a later migration added it, and the migrations must declare the columns in this order.
        _col(
            "landing_rejections",
            _I64,
            "bigint",
            "Webhooks the landing refused (its quarantine entries) that this run read; null for runs recorded "
            "before this was counted.",
        ),
    ),
    key=("run_id",),
)

# --- tables only the DuckDB snapshot holds ------------------------------------------------------------------

EVENTS: Final = Table(
    "events",
    "Every parsed webhook, one row per webhook id (its earliest arrival).",
    (
        _req("webhook_id", _S, "text", "The webhook's id (webhook-id header, or sha256 of the body)."),
        _req("received_at", UTC_US, "timestamptz", "When the landing stored the webhook."),
        _col("signed_at", _I64, "bigint", "The Unix time in the webhook's signature."),
        _col("scheme", _S, "text", "How it arrived: standard or legacy signature, or delivery_log (recovered)."),
        _col("event_type", _S, "text", "The body's type or action (else the one the landing recorded)."),
        _req("kind", _S, "text", "What the event means for a member: joined, accessed, left or other."),
        _req("event_at", UTC_US, "timestamptz", "When the event happened, from the best time the webhook carries."),
        _req("time_source", _S, "text", "Where event_at came from: envelope, payload, signed_at or received_at."),
        _col("membership_id", _S, "text", "The membership the event is about (data.id)."),
        _col("user_id", _S, "text", "The user the event is about."),
        _col("company_id", _S, "text", "The company the membership belongs to."),
        _col("username", _S, "text", "The member's username, when the payload carries it."),
        _col("member_name", _S, "text", "The member's display name, else the username."),
        _col("email", _S, "text", "The member's email, when the payload carries it."),
        _col("membership_status", _S, "text", "Whop's membership status in the payload (v1 events)."),
    ),
    key=("webhook_id",),
)

RECONCILIATION_DRIFT: Final = Table(
    "reconciliation_drift",
    "Memberships where the latest Whop API snapshot and the webhook history disagree (missed or late webhooks).",
    (
        _req("membership_id", _S, "text", "The membership in disagreement."),
        _col("company_id", _S, "text", "The company the membership belongs to."),
        _col("user_id", _S, "text", "The user holding the membership."),
        _req("reason", _S, "text", "Comma-separated, in this order: api_only, webhook_only, validity, status."),
        _col("webhook_valid", _B, "boolean", "Validity according to the latest webhook at or before the snapshot."),
        _col("api_valid", _B, "boolean", "Validity according to the API snapshot."),
        _col("webhook_status", _S, "text", "Membership status according to the latest webhook carrying one."),
        _col("api_status", _S, "text", "Membership status according to the API snapshot."),
        _col("webhook_valid_at", UTC_US, "timestamptz", "When the webhook validity fact happened."),
        _col("webhook_status_at", UTC_US, "timestamptz", "When the webhook status fact happened."),
        _col("webhook_last_at", UTC_US, "timestamptz", "The latest webhook fact about the membership."),
        _col("api_fetched_at", UTC_US, "timestamptz", "When the API snapshot was fetched."),
    ),
)

WEBHOOK_DELIVERIES: Final = Table(
    "webhook_deliveries",
    "Every delivery attempt Whop logged for the company's webhook, as recovery last read it (Whop's side).",
    (
        _req("delivery_id", _S, "text", "Whop's id of the attempt (whdel_...)."),
        _col(
            "company_id",
            _S,
            "text",
            "The Whop company (biz_…) the attempt's request body names (its envelope's company_id or account_id, "
            "else data.company_id or data.company.id, as recovery reads it); null when it names none, and for "
            "attempts read before this was kept.",
        ),
        _col("event", _S, "text", "The event type the attempt carried."),
        _col("webhook_id", _S, "text", "The message's webhook-id (the envelope id); the same across retries."),
        _req("sent_at", UTC_US, "timestamptz", "When Whop sent the attempt."),
        _req("response_code", _I32, "integer", "The HTTP status the endpoint answered; 0 when it was not reached."),
        _req("success", _B, "boolean", "Whether the endpoint answered 2xx."),
        _col("total_time", pl.Float64(), "double precision", "Seconds the attempt took."),
        _col("replayed_from", _S, "text", "The attempt this one replayed; null for an original delivery."),
    ),
    key=("delivery_id",),
)

MEMBER_ACTIVITY_HISTORY: Final = Table(
    "member_activity_history",
    "member_activity as each run scored it, one copy per run (older days thinned to their last run).",
    (
        _req("run_at", UTC_US, "timestamptz", "The run's as-of time."),
        *(c for c in MEMBER_ACTIVITY.columns),
    ),
)

SNAPSHOT_INFO: Final = Table(
    "snapshot_info",
    "One row describing the snapshot file itself.",
    (
        _col("run_id", _S, "text", "The run that wrote the snapshot."),
        _col("run_at", UTC_US, "timestamptz", "The run's as-of time: the snapshot shows the members as of it."),
        _col("written_at", UTC_US, "timestamptz", "When the file was written."),
        _col("memberpulse_version", _S, "text", "The memberpulse version that wrote it."),
    ),
)

WHOP_MEMBER_ACCESS: Final = Table(
    "whop_member_access",
    "Whop's own last access time per membership, from the latest backfill (empty until a backfill has run).",
    (
        _col("membership_id", _S, "text", "The membership Whop's API listed."),
        _col("company_id", _S, "text", "The Whop company (biz_…) the API listed the membership under."),
        _col("user_id", _S, "text", "The user holding the membership."),
        _col("last_accessed_at", UTC_US, "timestamptz", "When Whop last saw the member access the product."),
        _col("fetched_at", UTC_US, "timestamptz", "When the backfill that reported it was fetched."),
    ),
)

PIPELINE_RUN_COMPANIES: Final = Table(
    "pipeline_run_companies",
    "What each reconcile run did per company: one row per run and company it ingested events, found failures or "
    "changed member rows for (a company left out of a run's rows was not touched by it); the last 90 days.",
    (
        _req("run_id", _S, "text", "The run (pipeline_runs.run_id)."),
        _req("started_at", UTC_US, "timestamptz", "When the run started (pipeline_runs.started_at)."),
        _col(
            "company_id",
            _S,
            "text",
            "The Whop company (biz_…); null for what no webhook or API response named a company for (and landing "
            "refusals, whose bodies are unverified, are counted on no company's row).",
        ),
        _req("members", _I64, "bigint", "The company's members the run scored."),
        _req(
            "members_changed",
            _I64,
            "bigint",
            "Of them, members whose published values (status, score, ...) this run changed, target or not.",
        ),
        _req(
            "rows_published",
            _I64,
            "bigint",
            "member_activity rows of the company this run sent to the publish target (0 with no target, a dry run "
            "or a failed publish).",
        ),
        _req("events_ingested", _I64, "bigint", "The company's new events the run read."),
        _req(
            "rejects",
            _I64,
            "bigint",
            "Records of the raw store the run could not turn into events whose (verified) body names the company.",
        ),
        _req("drift_count", _I64, "bigint", "The company's memberships where Whop's API and the webhooks disagree."),
    ),
)

#: Tables in Supabase (one migration each).
PUBLISHED_TABLES: Final = (MEMBER_ACTIVITY, WEBHOOK_FAILURES, PIPELINE_RUNS)
#: Tables in every DuckDB snapshot, in load order.
SNAPSHOT_TABLES: Final = (
    MEMBER_ACTIVITY, EVENTS, MEMBER_ACTIVITY_HISTORY, RECONCILIATION_DRIFT, PIPELINE_RUNS, WEBHOOK_FAILURES,
    WEBHOOK_DELIVERIES, SNAPSHOT_INFO, WHOP_MEMBER_ACCESS, PIPELINE_RUN_COMPANIES,
)  # fmt: skip
