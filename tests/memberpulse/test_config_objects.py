"""Every default is written once: on its Settings field, or (the scoring knobs) on ``ScoringParams``, which the
Settings fields read. Each stage takes its settings as one typed config object built from Settings.

The checks compare identities, not only values: two equal literals are two float objects, so a default typed
again anywhere fails here even while the copies still agree.
"""

from __future__ import annotations

import dataclasses

import pytest

from memberpulse import transforms
from memberpulse.contracts.scoring import ScoringParams
from memberpulse.settings import Settings, env_names


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for field in Settings.model_fields:
        for env in env_names(field):
            monkeypatch.delenv(env, raising=False)
    return monkeypatch


def _settings() -> Settings:
    return Settings(_env_file=None)  # type: ignore[call-arg]


def test_the_scoring_defaults_are_the_settings_defaults_themselves() -> None:
    for field in dataclasses.fields(ScoringParams):
        assert isinstance(field.default, float)  # a float: identity tells a copy from the same constant
        assert Settings.model_fields[field.name].default is field.default, field.name
    assert transforms.ScoringParams is ScoringParams


def test_settings_build_the_scoring_params_from_their_variables(clean_env: pytest.MonkeyPatch) -> None:
    assert _settings().scoring == ScoringParams()
    clean_env.setenv("MEMBERPULSE_HALF_LIFE_DAYS", "3.5")
    clean_env.setenv("MEMBERPULSE_ACTIVE_DAYS", "2")
    clean_env.setenv("MEMBERPULSE_AT_RISK_DAYS", "12")
    assert _settings().scoring == ScoringParams(half_life_days=3.5, active_days=2.0, at_risk_days=12.0)
