"""One data dir per user whatever directory a command starts in, said by every command; dotenv files read
by the rule the docs give; a data dir no one writes to is said, never a silent success."""

from __future__ import annotations

from pathlib import Path

import pytest

from memberpulse.cli import main
from memberpulse.errors import ConfigError
from memberpulse.flows.reconcile._flow import check_data_dir
from memberpulse.settings import Settings
from tests.support.reconcile_testkit import append_raw, scenario


@pytest.fixture
def xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No MEMBERPULSE_DATA_DIR, no dotenv: the per-user default under a fresh XDG_DATA_HOME."""
    monkeypatch.delenv("MEMBERPULSE_DATA_DIR", raising=False)
    monkeypatch.delenv("MEMBERPULSE_ENV_FILE", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "memberpulse"


def _cwd(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path / name)


def test_every_command_uses_and_names_the_same_data_dir_from_any_directory(
    xdg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    append_raw(xdg, scenario())  # as `serve` would have stored them under its default
    _cwd(tmp_path, "a", monkeypatch)
    assert Settings().data_dir == xdg and xdg.is_absolute()
    assert main(["run"]) == 0
    assert str(xdg) in capsys.readouterr().out  # the summary's "data dir" row

    _cwd(tmp_path, "b", monkeypatch)
    assert main(["sql", "SELECT count(*) AS members FROM member_activity"]) == 0
    out, err = capsys.readouterr()
    assert "members" in out and " 4 " in out
    assert f"memberpulse sql: data dir {xdg}" in err

    _cwd(tmp_path, "c", monkeypatch)
    assert main(["report"]) == 0
    assert f"memberpulse report: data dir {xdg}" in capsys.readouterr().err
    assert (xdg / "snapshots" / "report.html").is_file()
    assert not any((tmp_path / d / "data").exists() for d in "abc")


def test_a_dotenv_named_by_MEMBERPULSE_ENV_FILE_is_read_from_any_directory(
    xdg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / "memberpulse.env"
    env_file.write_text(f"MEMBERPULSE_DATA_DIR={tmp_path / 'elsewhere'}\nMEMBERPULSE_HALF_LIFE_DAYS=3\n")
    _cwd(tmp_path, "anywhere", monkeypatch)
    monkeypatch.setenv("MEMBERPULSE_ENV_FILE", str(env_file))
    assert Settings().data_dir == tmp_path / "elsewhere"
    # ...under a .env in the working directory, and under the environment itself.
    (tmp_path / "anywhere" / ".env").write_text("MEMBERPULSE_HALF_LIFE_DAYS=5\nMEMBERPULSE_ACTIVE_DAYS=2\n")
    settings = Settings()
    assert (settings.half_life_days, settings.active_days) == (3, 2)
    monkeypatch.setenv("MEMBERPULSE_HALF_LIFE_DAYS", "9")
    assert Settings().half_life_days == 9


def test_a_missing_env_file_is_a_configuration_error(
    xdg: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MEMBERPULSE_ENV_FILE", "/nonexistent/memberpulse.env")
    assert main(["run"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert "MEMBERPULSE_ENV_FILE='/nonexistent/memberpulse.env' names no readable file" in line


def test_a_run_on_a_data_dir_no_one_writes_to_warns_in_its_own_summary(
    xdg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run"]) == 0
    out, err = capsys.readouterr()
    assert "has never received a webhook, a backfill or a recovery" in err
    assert "WARNING" in out and "has never received a webhook" in out


def test_a_deployment_run_refuses_a_relative_or_unused_data_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is relative"):
        check_data_dir(Settings(MEMBERPULSE_DATA_DIR="data"), deployment=True)
    unused = Settings(MEMBERPULSE_DATA_DIR=str(tmp_path), WHOP_WEBHOOK_SECRET="ws_x")
    with pytest.raises(ConfigError, match="has never received a webhook"):
        check_data_dir(unused, deployment=True)
    assert check_data_dir(unused, deployment=False) is not None  # the CLI warns
    (tmp_path / "landing").mkdir()  # what `serve` creates at start: a landing writes here
    assert check_data_dir(unused, deployment=True) is None


def test_a_fresh_workers_empty_cache_is_not_an_unused_data_dir(tmp_path: Path) -> None:
    worker = Settings(
        MEMBERPULSE_DATA_DIR=str(tmp_path), WHOP_WEBHOOK_SECRET="ws_x", MEMBERPULSE_STORAGE_URL="s3://b/p"
    )
    assert check_data_dir(worker, deployment=True) is None  # the state is in the store; the data dir a cache


@pytest.mark.slow
def test_serve_names_its_data_dir_when_it_listens(tmp_path: Path) -> None:
    from tests.support.landing_process import landing_process

    with landing_process(tmp_path / "data") as landing:
        log = landing.log()
    assert f"Listening on {landing.url}" in log and f"data dir {tmp_path / 'data'}" in log
