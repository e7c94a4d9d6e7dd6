"""deploy/: the systemd units pass ``systemd-analyze verify``; the environment template lists every setting."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from memberpulse.settings import Settings, env_names

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNITS = ("memberpulse-landing.service", "memberpulse-worker.service")
INSTALLED_BIN = "/opt/memberpulse/.venv/bin"


@pytest.mark.slow
def test_systemd_units_verify_clean(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing (scripts/test.sh installs Debian's systemd package)"
    venv_bin = str(Path(sys.executable).parent)
    for unit in UNITS:
        text = (DEPLOY / unit).read_text()
        assert f"ExecStart={INSTALLED_BIN}/" in text
        # The units name the documented install path; here the executables live in this environment.
        (tmp_path / unit).write_text(text.replace(INSTALLED_BIN, venv_bin))
    result = subprocess.run(
        [analyze, "verify", *(str(tmp_path / unit) for unit in UNITS)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # systemd only warns (exit 0) on settings it cannot parse: any line about our units is a failure.
    complaints = [line for line in result.stderr.splitlines() if "memberpulse-" in line]
    assert complaints == [], result.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_units_run_unprivileged_and_sandboxed(unit: str) -> None:
    settings = dict(re.findall(r"^(\w+)=(.*)$", (DEPLOY / unit).read_text(), re.M))
    assert settings["User"] == "memberpulse" and settings["Restart"] == "always"
    assert settings["ProtectSystem"] == "strict" and settings["NoNewPrivileges"] == "yes"
    assert settings["ReadWritePaths"] == "/var/lib/memberpulse"
    assert settings["EnvironmentFile"] == "/etc/memberpulse/memberpulse.env"


def test_the_landing_unit_gives_it_descriptors_for_many_connections() -> None:
    settings = dict(re.findall(r"^(\w+)=(.*)$", (DEPLOY / "memberpulse-landing.service").read_text(), re.M))
    assert int(settings["LimitNOFILE"]) >= 65536  # systemd's default soft limit, 1024, is what ran out


def test_environment_template_lists_every_setting_with_its_default() -> None:
    template = (DEPLOY / "memberpulse.env").read_text()
    entries = dict(re.findall(r"^#?([A-Z][A-Z0-9_]*)=(.*)$", template, re.M))
    for name, field in Settings.model_fields.items():
        listed = [env for env in env_names(name) if env in entries]
        assert listed, f"{name}: none of {env_names(name)} is in deploy/memberpulse.env"
        listed_value = entries[listed[0]]
        if field.default_factory is not None:  # computed per machine (the per-user data dir): an absolute example
            assert listed_value.startswith("/"), f"{listed[0]}: template says {listed_value!r}"
            continue
        default = field.default
        expected = "" if default is None else str(default)
        assert listed_value == expected, f"{listed[0]}: template says {listed_value!r}, default is {expected!r}"
