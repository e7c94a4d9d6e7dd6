"""Damaged state files stop a command with CorruptState: exit 2 and one line naming the file and the remedy,
never a traceback, and before any work. Each state document is damaged four ways (garbage, truncated, a wrong
type, a newer format) and read through its real reading path and through the CLI (in-process); the subprocess
tests at the end run the installed CLI over a data dir after a real run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

from memberpulse.cli import main
from memberpulse.contracts.tables import WEBHOOK_DELIVERIES
from memberpulse.errors import CorruptState
from memberpulse.flows.publish import publish_state
from memberpulse.flows.publish._targets import TargetState, postgres_key
from memberpulse.flows.reconcile import reconcile
from memberpulse.flows.reconcile._store import Manifest, ReconcileStore
from memberpulse.flows.recover import RecoveryStore
from memberpulse.flows.snapshot._incremental import SnapshotLineage, usable_previous, write_record
from memberpulse.flows.state_codec import STATE_FORMAT, RecoveryState, TargetMeta
from memberpulse.flows.whop import ParquetSink, SnapshotWriter, list_snapshots
from memberpulse.flows.whop._snapshot import SCHEMAS
from memberpulse.settings import Settings
from tests.flows.reconcile.test_run_semantics import _tree_digest
from tests.support.reconcile_testkit import AS_OF, append_raw, make_settings, scenario

# --- every state document, damaged, through its reading path and the CLI (fast, in-process) -------------------

DSN = "postgresql://memberpulse@127.0.0.1:1/members"  # never contacted: the damaged state stops the run first
LINEAGE = SnapshotLineage(
    events_token_before="lineage/1", events_token="lineage/1", new_events=None,
    members_version_before="v1", members_version="v1", changed_members=None,
)  # fmt: skip


@dataclass(frozen=True)
class StateDocument:
    """One state document: how its store writes a good one (returns its path), the real path that reads it,
    the remedy its error must name, the CLI command that reads it (with its settings), and a wrong-typed field."""

    write: Callable[[Settings], Path]
    read: Callable[[Settings], object]
    remedy: str
    command: tuple[str, ...]
    wrong_type: tuple[str, object]
    env: tuple[tuple[str, str], ...] = ()


def _write_manifest(settings: Settings) -> Path:
    store = ReconcileStore(settings.warehouse_dir)
    store.commit(Manifest(run_id="run-1", offsets={"dt=2026-11-27/w-1.ndjson": 30}, as_of=AS_OF.isoformat()))
    return store.manifest_path


def _write_target(settings: Settings) -> Path:
    target = TargetState(settings.warehouse_dir, postgres_key(DSN))
    target.save_meta(TargetMeta(failures_sent=2, as_of=AS_OF.isoformat(), change_token="lineage/1"))
    return target.meta_path


def _write_snapshot_only(settings: Settings) -> Path:
    state = publish_state(settings)  # no target configured: the rows go to the snapshot only
    state.save_meta(TargetMeta(as_of=AS_OF.isoformat(), change_token="lineage/1"))
    return state.meta_path


def _recovery(settings: Settings) -> RecoveryStore:
    return RecoveryStore(settings.warehouse_dir, settings.landing_dir, settings.quarantine_dir)


def _write_recovery(settings: Settings) -> Path:
    known = pl.DataFrame(schema={"webhook_id": pl.String(), "landed": pl.Boolean()})
    state = RecoveryState(stopped_at=AS_OF.isoformat(), recovered_at=AS_OF.isoformat(), recovered=1)
    _recovery(settings).commit(state, known, ["msg_1"], WEBHOOK_DELIVERIES.schema.to_frame())
    return _recovery(settings).state_path


def _write_build_record(settings: Settings) -> Path:
    write_record(settings.snapshots_dir, settings.snapshots_dir / "20261127T120000000000Z-run1.duckdb", LINEAGE, {})
    return settings.snapshots_dir / ".build.json"


def _write_backfill(settings: Settings) -> Path:
    with SnapshotWriter(settings.warehouse_dir, fetched_at=AS_OF, company_id="biz_test") as writer:
        for resource, schema in SCHEMAS.items():
            ParquetSink(writer.path_for(resource), schema).close()
        return writer.commit(pages={"memberships": 1, "members": 1}).manifest_path


RECOVER_ENV = (("WHOP_API_KEY", "key"), ("WHOP_COMPANY_ID", "biz_test"), ("WHOP_WEBHOOK_ID", "hook_test"))
DOCUMENTS: dict[str, StateDocument] = {
    "reconcile manifest": StateDocument(
        _write_manifest, lambda s: ReconcileStore(s.warehouse_dir).load_manifest(),
        "memberpulse run --full-refresh", ("run",), ("offsets", {"dt=2026-11-27/w-1.ndjson": "30"}),
    ),
    "publish target state": StateDocument(
        _write_target, lambda s: TargetState(s.warehouse_dir, postgres_key(DSN)).load_meta(),
        "delete it: the next run compares every row", ("run",), ("failures_sent", "2"),
        env=(("SUPABASE_DB_URL", DSN),),
    ),
    "snapshot-only publish state": StateDocument(
        _write_snapshot_only, lambda s: publish_state(s).load_meta(),
        "delete it: the next run compares every row", ("run",), ("scoring", "7,7,30"),
    ),
    "recovery state": StateDocument(
        _write_recovery, lambda s: _recovery(s).load_state(),
        "delete the warehouse/recovery folder", ("recover",), ("index_offsets", []), env=RECOVER_ENV,
    ),
    "snapshot build record": StateDocument(
        _write_build_record, lambda s: usable_previous(s.snapshots_dir, LINEAGE),
        "delete it: the next run builds the snapshot in full", ("run",), ("file", 7),
    ),
    "backfill manifest": StateDocument(
        _write_backfill, lambda s: list_snapshots(s.warehouse_dir),
        "run `memberpulse backfill`", ("run",), ("company_id", None),
    ),
}  # fmt: skip


def _with(path: Path, **changes: object) -> bytes:
    return json.dumps({**json.loads(path.read_text()), **changes}).encode()


DAMAGES: dict[str, Callable[[Path, StateDocument], bytes]] = {
    "garbage": lambda path, doc: bytes(range(256)),
    "truncated": lambda path, doc: path.read_bytes()[: path.stat().st_size // 2],
    "wrong type": lambda path, doc: _with(path, **dict([doc.wrong_type])),
    "newer format": lambda path, doc: _with(path, format=STATE_FORMAT + 1),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
@pytest.mark.parametrize("name", list(DOCUMENTS))
def test_a_damaged_state_document_is_named_with_its_remedy(
    name: str, damage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    doc, data_dir = DOCUMENTS[name], tmp_path / "data"
    settings = make_settings(data_dir)
    path = doc.write(settings)
    doc.read(settings)  # the good file reads
    path.write_bytes(DAMAGES[damage](path, doc))

    with pytest.raises(CorruptState) as raised:
        doc.read(settings)
    assert raised.value.path == str(path) and str(path) in raised.value.message
    if damage == "newer format":
        assert f"written by a newer memberpulse (format {STATE_FORMAT + 1})" in raised.value.message
        assert raised.value.hint is not None and "upgrade memberpulse" in raised.value.hint
    else:
        assert "is damaged" in raised.value.message
        assert raised.value.hint is not None and doc.remedy in raised.value.hint

    for variable, value in (("MEMBERPULSE_DATA_DIR", str(data_dir)), ("MEMBERPULSE_LOG_LEVEL", "WARNING"), *doc.env):
        monkeypatch.setenv(variable, value)
    monkeypatch.chdir(tmp_path)  # no stray .env
    capsys.readouterr()
    before = _tree_digest(data_dir)
    assert main(list(doc.command)) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0] == f"memberpulse {doc.command[0]}: {raised.value}", lines
    assert _tree_digest(data_dir) == before  # stopped before any work


# --- the installed CLI after a real run (subprocesses) --------------------------------------------------------


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir after one good run (no publish target): manifest, state, published state, run log."""
    root = tmp_path_factory.mktemp("pristine")
    append_raw(root, scenario())
    reconcile(make_settings(root), as_of=AS_OF, full_refresh=False)  # the same steps the CLI runs
    return root


def _run_cli(data_dir: Path, prefect_home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MEMBERPULSE_DATA_DIR": str(data_dir), "PREFECT_HOME": str(prefect_home)}
    for name in ("PREFECT_API_URL", "SUPABASE_DB_URL", "SUPABASE_URL"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "memberpulse", "run", "--as-of", AS_OF.isoformat(), *args],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _manifest(data_dir: Path) -> Path:
    return data_dir / "warehouse" / "reconcile" / "manifest.json"


def _state_file(data_dir: Path) -> Path:
    return data_dir / "warehouse" / "reconcile" / json.loads(_manifest(data_dir).read_text())["state_file"]


def _truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])
    return path


def _write(data: bytes) -> Callable[[Path], Path]:
    def damage(data_dir: Path) -> Path:
        _manifest(data_dir).write_bytes(data)
        return _manifest(data_dir)

    return damage


def _unknown_key(data_dir: Path) -> Path:
    manifest = json.loads(_manifest(data_dir).read_text())
    _manifest(data_dir).write_text(json.dumps({**manifest, "surprise": 1}))
    return _manifest(data_dir)


DAMAGE: dict[str, Callable[[Path], Path]] = {
    "manifest truncated": lambda d: _truncate(_manifest(d)),
    "manifest empty": _write(b""),
    "manifest binary": _write(bytes(range(256))),
    "manifest null": _write(b"null"),
    "manifest unknown key": _unknown_key,
    "state parquet truncated": lambda d: _truncate(_state_file(d)),
    "published parquet truncated": lambda d: _truncate(
        d / "warehouse" / "published" / "member_activity.snapshot-only.parquet"
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_file_exits_2_with_one_line_naming_it(
    case: str, pristine: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(pristine, data_dir)
    damaged = DAMAGE[case](data_dir)

    done = _run_cli(data_dir, tmp_path_factory.getbasetemp() / "prefect-home")

    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(lines) == 1 and "Traceback" not in done.stdout, done.stderr[-3000:]
    assert str(damaged) in lines[0] and "damaged" in lines[0]
    remedy = "delete it" if "published" in case else "memberpulse run --full-refresh"
    assert remedy in lines[0]


@pytest.mark.slow
def test_full_refresh_rebuilds_past_a_damaged_manifest(
    pristine: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(pristine, data_dir)
    _manifest(data_dir).write_bytes(b"null")

    done = _run_cli(data_dir, tmp_path_factory.getbasetemp() / "prefect-home", "--full-refresh")

    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(_manifest(data_dir).read_text())["state_file"]
