"""The PostgREST publisher through the real supabase-py client, with PostgREST answered in-process by
``httpx.MockTransport`` (a stand-in for PostgREST, named as such).

The fast counterpart of test_publish_postgrest.py (a stand-in server over the real PostgreSQL): no server, no
database, no real waits, so batching, retries and the mapping of PostgREST's answers to our errors are checked in
milliseconds.
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest

from memberpulse.errors import PublishError, PublishUnavailable
from memberpulse.flows.publish import (
    DEFAULT_PUBLISH_CONFIG,
    PipelineRun,
    PostgrestPublisher,
    PublishConfig,
    PublishedState,
    get_publisher,
)
from memberpulse.flows.publish._schema import MEMBER_ACTIVITY_COLUMNS
from memberpulse.settings import Settings
from tests.support.publish_data import T0, SleepRecorder, members

URL = "https://project.supabase.test"
SERVICE_KEY = "test-service-role-key"
T1, T2 = T0 + timedelta(hours=1), T0 + timedelta(hours=2)
Answer = httpx.Response | Exception


@dataclass
class ScriptedPostgrest:
    """Accepts every upsert (201, empty body: ``return=minimal``) and counts member_activity's keys for a
    ``HEAD`` (``Content-Range: */n``), unless an answer is queued in ``script``."""

    script: deque[Answer] = field(default_factory=deque)
    requests: list[httpx.Request] = field(default_factory=list)
    members: set[str] = field(default_factory=set)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.script:
            answer = self.script.popleft()
            if isinstance(answer, Exception):
                raise answer
            return answer
        if request.method == "HEAD":
            return httpx.Response(200, headers={"Content-Range": f"*/{len(self.members)}"})
        if request.url.path.endswith("/member_activity"):
            self.members |= {row["membership_id"] for row in json.loads(request.content)}
        return httpx.Response(201)

    def upserts(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == "POST"]

    def bodies(self) -> list[Any]:
        return [json.loads(r.content) for r in self.upserts()]


def _error(status: int, code: str, message: str, hint: str | None = None) -> httpx.Response:
    return httpx.Response(status, json={"code": code, "message": message, "details": None, "hint": hint})


@pytest.fixture
def postgrest() -> ScriptedPostgrest:
    return ScriptedPostgrest()


def _publisher(
    postgrest: ScriptedPostgrest, tmp_path: Path, sleeps: SleepRecorder, **config: Any
) -> PostgrestPublisher:
    """A publisher with the default config but for the ``config`` fields given."""
    return PostgrestPublisher(
        URL,
        SERVICE_KEY,
        state=PublishedState(tmp_path),
        config=replace(DEFAULT_PUBLISH_CONFIG, **config),
        sleep=sleeps,
        transport=httpx.MockTransport(postgrest),
    )


def test_upserts_in_batches_of_the_batch_size(
    postgrest: ScriptedPostgrest, tmp_path: Path, sleeps: SleepRecorder
) -> None:
    with _publisher(postgrest, tmp_path, sleeps, batch_size=3) as publisher:
        result = publisher.publish_members(members(7), run_at=T1)
    assert (result.inserted, result.updated, result.unchanged) == (7, 0, 0)
    assert [[row["membership_id"] for row in body] for body in postgrest.bodies()] == [
        [f"mem_{i:07d}" for i in batch] for batch in ([0, 1, 2], [3, 4, 5], [6])
    ]
    for request in postgrest.requests:
        assert (request.method, request.url.path) == ("POST", "/rest/v1/member_activity")
        assert request.url.params["on_conflict"] == "membership_id"
        assert set(request.url.params["columns"].replace('"', "").split(",")) == set(MEMBER_ACTIVITY_COLUMNS)
        assert request.headers["prefer"] == "return=minimal,resolution=merge-duplicates"
        assert request.headers["apikey"] == SERVICE_KEY
        assert request.headers["authorization"] == f"Bearer {SERVICE_KEY}"
    first = postgrest.bodies()[0][0]
    assert set(first) == set(MEMBER_ACTIVITY_COLUMNS)
    assert first["updated_at"] == "2026-11-01T13:00:00.000000+00:00" and first["last_active"].endswith("+00:00")
    assert sleeps.calls == []


def test_only_changed_rows_are_sent(postgrest: ScriptedPostgrest, tmp_path: Path, sleeps: SleepRecorder) -> None:
    publisher = _publisher(postgrest, tmp_path, sleeps)
    publisher.publish_members(members(3), run_at=T1)
    result = publisher.publish_members(members(3, score=9).head(1).vstack(members(2, start=1)), run_at=T2)
    assert (result.inserted, result.updated, result.unchanged) == (0, 1, 2)
    assert [len(b) for b in postgrest.bodies()] == [3, 1]
    assert postgrest.bodies()[1][0]["engagement_score"] == 9
    before = len(postgrest.requests)
    assert publisher.publish_members(members(3, score=9).head(1).vstack(members(2, start=1)), run_at=T2).unchanged == 3
    assert [r.method for r in postgrest.requests[before:]] == ["HEAD"]  # the check (a count), nothing sent


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 520])
def test_retryable_statuses_are_retried_with_backoff(
    postgrest: ScriptedPostgrest, tmp_path: Path, sleeps: SleepRecorder, status: int
) -> None:
    postgrest.script.extend([_error(status, "PGRST000", "busy"), _error(status, "PGRST000", "busy")])
    result = _publisher(postgrest, tmp_path, sleeps, backoff_seconds=0.5).publish_members(members(2), run_at=T1)
    assert result.inserted == 2
    assert len(postgrest.requests) == 3 and postgrest.bodies()[0] == postgrest.bodies()[2]
    assert sleeps.calls == [0.5, 1.0]


@pytest.mark.parametrize(
    "failure", [httpx.ReadTimeout("timed out"), httpx.ConnectError("refused"), httpx.RemoteProtocolError("cut")]
)
def test_transport_failures_are_retried(
    postgrest: ScriptedPostgrest, tmp_path: Path, sleeps: SleepRecorder, failure: Exception
) -> None:
    postgrest.script.append(failure)
    assert _publisher(postgrest, tmp_path, sleeps).publish_members(members(2), run_at=T1).inserted == 2
    assert len(postgrest.requests) == 2 and len(sleeps.calls) == 1


def test_a_target_that_stays_down_gives_up_and_keeps_the_published_state(
    postgrest: ScriptedPostgrest, tmp_path: Path, sleeps: SleepRecorder
) -> None:
    _publisher(postgrest, tmp_path, sleeps).publish_members(members(2), run_at=T1)
    state_before = PublishedState(tmp_path).path.read_bytes()
    postgrest.script.extend([_error(503, "PGRST000", "down")] * 10)
    with pytest.raises(PublishUnavailable, match="after 3 attempts") as caught:
        _publisher(postgrest, tmp_path, sleeps, max_attempts=3).publish_members(members(3), run_at=T2)
    assert "HTTP 503" in str(caught.value)
    assert len(postgrest.requests) == 1 + 3
    assert PublishedState(tmp_path).path.read_bytes() == state_before


@pytest.mark.parametrize(
    ("answer", "in_message", "hint"),
    [
        (_error(401, "42501", "permission denied"), "HTTP 401", "SUPABASE_SERVICE_ROLE_KEY"),
        (_error(403, "42501", "permission denied"), "HTTP 403", "SUPABASE_SERVICE_ROLE_KEY"),
        (_error(404, "42P01", 'relation "member_activity" does not exist'), "HTTP 404", "memberpulse migrate"),
        (_error(400, "42P01", "missing table"), "code 42P01", "memberpulse migrate"),
        (_error(409, "23505", "duplicate key"), "HTTP 409", None),
        (_error(400, "PGRST204", "column not found", hint="add the column"), "column not found", "add the column"),
    ],
)
def test_refusals_are_fatal_not_retried_and_say_what_to_fix(
    postgrest: ScriptedPostgrest,
    tmp_path: Path,
    sleeps: SleepRecorder,
    answer: httpx.Response,
    in_message: str,
    hint: str | None,
) -> None:
    postgrest.script.append(answer)
    publisher = _publisher(postgrest, tmp_path, sleeps)
    with pytest.raises(PublishError) as caught:
        publisher.publish_members(members(1), run_at=T1)
    assert not isinstance(caught.value, PublishUnavailable)
    assert in_message in str(caught.value) and SERVICE_KEY not in str(caught.value)
    if hint is None:
        assert caught.value.hint is None
    else:
        assert caught.value.hint is not None and hint in caught.value.hint
    assert len(postgrest.requests) == 1 and sleeps.calls == []
    assert not publisher.state.path.exists()


def test_runs_and_failures_are_upserted_on_their_keys(
    postgrest: ScriptedPostgrest, tmp_path: Path, sleeps: SleepRecorder
) -> None:
    publisher = _publisher(postgrest, tmp_path, sleeps, batch_size=2)
    publisher.record_run(PipelineRun(run_id="r-1", flow="reconcile", started_at=T1, finished_at=T2, status="completed"))
    failures = pl.DataFrame(
        {"webhook_id": ["wh_1", "wh_2", "wh_3"], "event_type": [None] * 3, "reason": ["bad json"] * 3,
         "received_at": [T1] * 3, "body_prefix": ["{"] * 3},
        schema_overrides={"received_at": pl.Datetime("us", "UTC"), "event_type": pl.Utf8},
    )  # fmt: skip
    assert publisher.record_failures(failures) == 3
    assert [(r.url.path, r.url.params["on_conflict"]) for r in postgrest.requests] == [
        ("/rest/v1/pipeline_runs", "run_id"),
        ("/rest/v1/webhook_failures", "webhook_id,reason"),
        ("/rest/v1/webhook_failures", "webhook_id,reason"),
    ]
    run = postgrest.bodies()[0][0]
    assert (run["run_id"], run["status"], run["finished_at"]) == (
        "r-1",
        "completed",
        "2026-11-01T14:00:00.000000+00:00",
    )
    assert [len(b) for b in postgrest.bodies()[1:]] == [2, 1]


def _phase_timeouts(request: httpx.Request) -> set[float]:
    """The timeouts httpx applied to a request (connect, read, write, pool), as it records them on it."""
    return set(request.extensions["timeout"].values())


def test_every_request_is_bounded_by_the_publish_timeout_setting(
    postgrest: ScriptedPostgrest, tmp_path: Path, sleeps: SleepRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMBERPULSE_PUBLISH_TIMEOUT_SECONDS", "2.5")
    monkeypatch.delenv("SUPABASE_DB_URL", raising=False)  # the PostgREST path, whatever this machine has set
    settings = Settings(_env_file=None, MEMBERPULSE_DATA_DIR=str(tmp_path), SUPABASE_URL=URL,  # type: ignore[call-arg]
                        SUPABASE_SERVICE_ROLE_KEY=SERVICE_KEY)  # fmt: skip
    configured = get_publisher(settings)
    assert isinstance(configured, PostgrestPublisher) and configured.config == PublishConfig.from_settings(settings)
    configured.close()
    publisher = PostgrestPublisher(URL, SERVICE_KEY, state=PublishedState(tmp_path), config=configured.config,
                                   sleep=sleeps, transport=httpx.MockTransport(postgrest))  # fmt: skip
    publisher.publish_members(members(2), run_at=T1)
    publisher.record_run(PipelineRun(run_id="r1", flow="reconcile", started_at=T1))
    assert [_phase_timeouts(r) for r in postgrest.requests] == [{2.5}, {2.5}]


def test_a_publisher_made_without_a_config_has_the_settings_default_timeout(
    postgrest: ScriptedPostgrest, tmp_path: Path
) -> None:
    """Not a default of its own: the constructor's 30 s had drifted from the setting's 10 s."""
    publisher = PostgrestPublisher(URL, SERVICE_KEY, state=PublishedState(tmp_path),
                                   transport=httpx.MockTransport(postgrest))  # fmt: skip
    publisher.publish_members(members(1), run_at=T1)
    assert _phase_timeouts(postgrest.requests[0]) == {Settings.model_fields["publish_timeout_seconds"].default}


def test_no_phase_outlasts_the_publish_deadline_and_no_try_starts_past_it(
    tmp_path: Path, sleeps: SleepRecorder
) -> None:
    """Twenty tries of 2.5 s each would take almost a minute: the 0.3 s deadline cuts every phase's timeout to
    what is left of it, and the publish gives up as soon as no time is left for another try."""
    timeouts: list[set[float]] = []

    def slow_timeout(request: httpx.Request) -> httpx.Response:
        timeouts.append(_phase_timeouts(request))
        time.sleep(0.1)  # a read that times out after taking some of the deadline
        raise httpx.ReadTimeout("timed out", request=request)

    config = replace(
        DEFAULT_PUBLISH_CONFIG, max_attempts=20, timeout_seconds=2.5, backoff_seconds=0, deadline_seconds=0.3
    )
    publisher = PostgrestPublisher(URL, SERVICE_KEY, state=PublishedState(tmp_path), config=config, sleep=sleeps,
                                   transport=httpx.MockTransport(slow_timeout))  # fmt: skip
    started = time.monotonic()
    with pytest.raises(PublishUnavailable) as raised:
        publisher.publish_members(members(2), run_at=T1)
    assert time.monotonic() - started < 1.0
    assert "deadline (0.3 s)" in raised.value.message
    assert "MEMBERPULSE_PUBLISH_DEADLINE_SECONDS" in (raised.value.hint or "")
    assert 2 <= len(timeouts) <= 4  # the tries that fit in 0.3 s, not twenty
    assert all(max(phases) <= 0.3 for phases in timeouts), timeouts
    assert publisher.state.load() is None  # nothing marked published
