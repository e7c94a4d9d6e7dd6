"""The calls the reconcile flow makes (publish_members, record_run, target_name), with or without a target."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
import pytest

from memberpulse import transforms
from memberpulse.contracts.failures import FAILURE_RECORD_SCHEMA, REJECT_SCHEMA
from memberpulse.contracts.quarantine import encode_quarantine_entry
from memberpulse.contracts.raw_record import encode_raw_record
from memberpulse.contracts.tables import WEBHOOK_FAILURES
from memberpulse.errors import PublishUnavailable
from memberpulse.flows.publish import (
    PipelineRun,
    PublishedState,
    failures_from_rejects,
    publish_members,
    record_run,
    runs_with,
    target_name,
)
from memberpulse.flows.publish._failure_company import company_named_by
from memberpulse.flows.publish._schema import summarise_webhook_failures
from memberpulse.flows.publish._targets import FailureLog
from memberpulse.flows.raw import reader as raw_reader
from memberpulse.flows.reconcile._ingest import landing_rejections
from memberpulse.settings import Settings
from tests.support.postgres import free_port
from tests.support.publish_data import T0, members

T1, T2 = T0 + timedelta(hours=1), T0 + timedelta(hours=2)


def _settings(tmp_path: Path, **env: str) -> Settings:
    values: dict[str, Any] = {
        "_env_file": None,
        "MEMBERPULSE_DATA_DIR": str(tmp_path),
        "MEMBERPULSE_PUBLISH_BACKOFF_SECONDS": "0",
        **env,
    }
    return Settings(**values)


REJECTS = pl.DataFrame(
    {
        "webhook_id": ["wh_9", None],
        "received_at": ["2026-11-01T13:00:00+00:00", "2026-11-01T13:05:00+00:00"],
        "event_type": ["membership.went_valid", None],
        "reason": ["invalid json", "unreadable line"],
        "body": ["{oops", "garbage"],
        "source_file": ["a.ndjson", "a.ndjson"],
        "source_offset": [0, 10],
    }
)


def test_without_a_target_nothing_is_sent_but_updated_at_stays_stable(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert target_name(settings) is None
    first = publish_members(settings, members(3, status="at_risk"), run_at=T1)
    assert (first.result.inserted, first.result.updated) == (0, 0)
    assert first.as_published["updated_at"].to_list() == [T1] * 3
    assert [r["membership_id"] for r in first.newly_at_risk] == ["mem_0000000", "mem_0000001", "mem_0000002"]
    second = publish_members(settings, members(3, status="at_risk"), run_at=T2)
    assert second.as_published["updated_at"].to_list() == [T1] * 3
    assert second.newly_at_risk == []
    # The target's own state is untouched: configuring a target later publishes everything.
    assert not (tmp_path / "warehouse" / "published" / "member_activity.parquet").exists()


@pytest.mark.slow
def test_with_postgres_the_outcome_reports_the_target(migrated_postgres_dsn: str, tmp_path: Path) -> None:
    settings = _settings(tmp_path, SUPABASE_DB_URL=migrated_postgres_dsn.replace("postgres@", "postgres:pw9@"))
    assert target_name(settings) is not None and "pw9" not in str(target_name(settings))
    outcome = publish_members(settings, members(4), run_at=T1)
    assert (outcome.result.inserted, outcome.result.updated, outcome.result.unchanged) == (4, 0, 0)
    again = publish_members(settings, members(4), run_at=T2)
    assert (again.result.inserted, again.result.unchanged) == (0, 4)
    assert again.as_published["updated_at"].to_list() == [T1] * 4

    run = PipelineRun(run_id="run-7", flow="reconcile", started_at=T1, status="completed", finished_at=T2,
                      events_ingested=9, rejects=2, rows_inserted=4, rows_unchanged=0)  # fmt: skip
    runs = record_run(settings, run, rejects=REJECTS)
    assert runs.select("run_id", "status", "rows_inserted").rows() == [("run-7", "completed", 4)]
    with psycopg.connect(migrated_postgres_dsn) as conn:
        assert conn.execute("SELECT run_id, status, events_ingested FROM pipeline_runs").fetchall() == [
            ("run-7", "completed", 9)
        ]
        failures = conn.execute("SELECT webhook_id, reason FROM webhook_failures ORDER BY reason").fetchall()
    assert failures[0] == ("wh_9", "invalid json")
    # keyed by sha256(body), located by segment and offset
    assert failures[1][1] == "unreadable line (a.ndjson byte 10)" and len(failures[1][0]) == 64


def test_record_run_best_effort_swallows_a_down_target_but_keeps_the_local_log(tmp_path: Path) -> None:
    down = _settings(tmp_path, SUPABASE_DB_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/postgres",
                     MEMBERPULSE_PUBLISH_MAX_ATTEMPTS="2")  # fmt: skip
    run = PipelineRun(run_id="r-1", flow="reconcile", started_at=T1, status="failed", error="boom")
    runs = record_run(down, run, best_effort=True)
    assert runs.select("run_id", "status", "error").rows() == [("r-1", "failed", "boom")]
    with pytest.raises(PublishUnavailable):
        record_run(down, run)


def test_a_run_log_from_before_the_landing_count_keeps_its_runs_with_that_count_unknown(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    older = record_run(settings, PipelineRun(run_id="r-0", flow="reconcile", started_at=T0, rejects=1))
    log = PublishedState(settings.warehouse_dir, name="pipeline_runs").path
    older.drop("landing_rejections").write_parquet(log)  # as the previous version wrote it

    runs = runs_with(settings, PipelineRun(run_id="r-1", flow="reconcile", started_at=T1, landing_rejections=2))

    assert runs.select("run_id", "rejects", "landing_rejections").rows() == [("r-0", 1, None), ("r-1", 0, 2)]


def test_failures_from_rejects_maps_the_transforms_reject_schema() -> None:
    frame = failures_from_rejects(REJECTS)
    assert frame.columns == ["webhook_id", "event_type", "reason", "received_at", "body_prefix", "company_id"]
    assert frame["received_at"].to_list() == [T1, T1 + timedelta(minutes=5)]
    assert frame["body_prefix"].to_list() == ["{oops", "garbage"]


def test_a_reject_without_a_readable_received_at_is_dated_by_the_run_that_found_it() -> None:
    undated = REJECTS.with_columns(pl.lit(None, pl.Utf8).alias("received_at"))
    assert failures_from_rejects(undated).height == 0  # nothing to date it by
    frame = failures_from_rejects(undated, seen_at=T2)
    assert frame["received_at"].to_list() == [T2, T2]
    assert frame["reason"].to_list() == ["invalid json", "unreadable line (a.ndjson byte 10)"]


def _found_failures(tmp_path: Path) -> list[pl.DataFrame]:
    """One failure of each kind a run finds: a landing refusal, an unreadable line, a body that is not JSON."""
    quarantine = tmp_path / "quarantine"
    quarantine.mkdir()
    (quarantine / "w.ndjson").write_bytes(
        encode_quarantine_entry(received_at=T1, status=403, reason="signature mismatch", remote=None,
                                headers={"webhook-id": "msg_q"}, body_bytes=5, body_prefix=b"hello")
    )  # fmt: skip
    refused = landing_rejections(raw_reader.read_new(quarantine, {}, raw_reader.QUARANTINE_FILES))
    unreadable = transforms.parse_ndjson(b"not a record\n", source_file="dt=2026-11-01/w-000001.ndjson").rejects
    line = encode_raw_record("msg_b", T1, None, "standard", None, "{oops")
    not_json = transforms.parse_raw(transforms.parse_ndjson(line).records).rejects
    return [refused, unreadable, not_json]


def test_a_failure_has_its_contract_row_at_every_stage(tmp_path: Path) -> None:
    """Found (REJECT_SCHEMA) → logged in the warehouse (FAILURE_RECORD_SCHEMA) → published (webhook_failures),
    whichever path found it."""
    found = _found_failures(tmp_path)
    assert [(f.schema, f.height) for f in found] == [(REJECT_SCHEMA, 1)] * 3
    log = FailureLog(tmp_path / "warehouse")
    assert log.load().schema == FAILURE_RECORD_SCHEMA  # nothing logged yet
    assert failures_from_rejects(found[0].clear()).schema == FAILURE_RECORD_SCHEMA
    logged = log.append(failures_from_rejects(pl.concat(found), seen_at=T2))
    assert logged.schema == FAILURE_RECORD_SCHEMA and log.load().equals(logged)
    assert logged["webhook_id"].to_list()[::2] == ["msg_q", "msg_b"]
    assert logged["received_at"].to_list() == [T1, T2, T1]  # the unreadable line is dated by the run
    published = summarise_webhook_failures(logged)
    assert published.schema == WEBHOOK_FAILURES.sent_schema
    assert published.height == 3


@pytest.mark.parametrize(
    ("body", "company"),
    [
        ('{"type":"membership.activated","account_id":"biz_env","data":{"id":"mem_1"}}', "biz_env"),
        ('{"company_id":"biz_top","data":{"id":"mem_1"}}', "biz_top"),
        ('{"data":{"company":{"id":"biz_obj"}}}', "biz_obj"),
        ('{"action":"membership.went_valid","data":{"company_id":"biz_pin"}}', "biz_pin"),
        # The parser's order for events: data first, the envelope last.
        ('{"account_id":"biz_env","company_id":"biz_top","data":{"company_id":"biz_pin"}}', "biz_pin"),
        ('{"account_id":"biz_env","company_id":"biz_top"}', "biz_top"),
        ('{"company_id":"","account_id":7,"data":{"company":"biz_x","company_id":null}}', None),
        ('{"data":"biz_x"}', None),
        ('["biz_x"]', None),
        ('{"company_id":"biz_cut","data":{"id":"mem_1"', None),  # cut to its excerpt: no longer JSON
        ("", None),
        (None, None),
    ],
)
def test_the_company_a_webhook_body_names(body: str | None, company: str | None) -> None:
    assert company_named_by(body) == company


def test_only_a_body_the_parser_refused_names_a_company(tmp_path: Path) -> None:
    """The raw store's records were verified; a landing refusal was not: its body names no company, whatever
    it says."""
    found = _found_failures(tmp_path)
    line = encode_raw_record("msg_t", T1, None, "standard", None, '{"type":"x","timestamp":"?","company_id":"biz_1"}')
    bad_time = transforms.parse_raw(transforms.parse_ndjson(line).records).rejects
    forged = found[0].with_columns(body=pl.lit('{"company_id":"biz_1","data":{"id":"mem_1"}}'))
    logged = failures_from_rejects(pl.concat([forged, found[1], bad_time]), seen_at=T2)
    assert logged.select("webhook_id", "company_id").rows()[::2] == [("msg_q", None), ("msg_t", "biz_1")]
    assert logged["company_id"][1] is None  # an unreadable line


def test_a_failure_log_from_before_the_company_reads_with_it_null(tmp_path: Path) -> None:
    log = FailureLog(tmp_path / "warehouse")
    older = log.append(failures_from_rejects(REJECTS))
    older.drop("company_id").write_parquet(log.path)  # as the previous version wrote it
    assert log.load().equals(older)
    named = REJECTS.head(1).with_columns(
        webhook_id=pl.lit("wh_10"), reason=pl.lit("unparsable timestamp: '?'"), body=pl.lit('{"company_id":"biz_1"}')
    )
    both = log.append(failures_from_rejects(named))
    assert both.schema == FAILURE_RECORD_SCHEMA
    companies = dict(summarise_webhook_failures(both).select("webhook_id", "company_id").iter_rows())
    assert (companies.pop("wh_9"), companies.pop("wh_10"), list(companies.values())) == (None, "biz_1", [None])
