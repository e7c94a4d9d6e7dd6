"""Settings: every documented environment variable is read, invalid values are refused naming the variable,
and docs/configuration.md's settings table is the one ``scripts/settings_table.py`` writes from the fields."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field, SecretStr

from memberpulse.errors import ConfigError
from memberpulse.settings import Settings, env_names, load_settings

ROOT = Path(__file__).resolve().parents[2]
# Set for every case, so that the pairs that must come together (Whop key + company, Supabase URL + key)
# are complete whichever one a case sets.
PAIRED = {"WHOP_API_KEY": "k_base", "WHOP_COMPANY_ID": "biz_base", "SUPABASE_URL": "https://p.supabase.co",
          "SUPABASE_SERVICE_ROLE_KEY": "srk_base"}  # fmt: skip


def _settings_table_script() -> Any:
    spec = importlib.util.spec_from_file_location("settings_table", ROOT / "scripts" / "settings_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _documented_variables() -> list[str]:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    table = doc.split("<!-- settings-table:start -->")[1].split("<!-- settings-table:end -->")[0]
    first_cells = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    return [name for cell in first_cells for name in re.findall(r"`([A-Z0-9_]+)`", cell)]


def _sample(name: str) -> tuple[str, Any]:
    """A valid, non-default value for the field: (environment text, expected field value)."""
    field = Settings.model_fields[name]
    default = field.default
    if name == "whop_api_base_url":
        return "http://whop.example.test/api/v1", "http://whop.example.test/api/v1"
    if name == "log_level":
        return "debug", "DEBUG"
    if name == "data_dir":
        return "/srv/memberpulse-data", Path("/srv/memberpulse-data")
    if name == "storage_url":
        return "s3://team-bucket/memberpulse", "s3://team-bucket/memberpulse"
    if name in ("whop_company_id", "whop_company_ids"):
        return "biz_sample", "biz_sample"
    if name == "whop_company_api_keys":
        return "biz_sample=k_sample", "biz_sample=k_sample"
    if isinstance(default, bool):
        return "true", True
    if isinstance(default, int):
        return str(default + 1), default + 1
    if isinstance(default, float):
        return str(default + 0.5), default + 0.5
    if field.annotation == int | None:  # unset by default (a value derived at run time)
        return "1000", 1000
    return f"value_of_{name}", f"value_of_{name}"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for field in Settings.model_fields:
        for env in env_names(field):
            monkeypatch.delenv(env, raising=False)
    return monkeypatch


def test_settings_table_is_generated_from_the_fields() -> None:
    script = _settings_table_script()
    assert script.main(["--check"]) == 0, "docs/configuration.md is stale: run python scripts/settings_table.py"
    documented = set(_documented_variables())
    assert documented == {env for field in Settings.model_fields for env in env_names(field)}
    assert all(field.description for field in Settings.model_fields.values())


@pytest.mark.parametrize("variable", _documented_variables())
def test_every_documented_variable_is_read(variable: str, clean_env: pytest.MonkeyPatch) -> None:
    field = next(f for f in Settings.model_fields if variable in env_names(f))
    for env, value in PAIRED.items():
        if env not in env_names(field):
            clean_env.setenv(env, value)
    text, expected = _sample(field)
    clean_env.setenv(variable, text)
    value = getattr(Settings(_env_file=None), field)  # type: ignore[call-arg]
    assert (value.get_secret_value() if isinstance(value, SecretStr) else value) == expected


def test_unprefixed_and_keyword_names_both_work(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    assert Settings(_env_file=None, MEMBERPULSE_DATA_DIR=str(tmp_path)).data_dir == tmp_path  # type: ignore[call-arg]
    assert Settings(_env_file=None, data_dir=tmp_path).data_dir == tmp_path  # type: ignore[call-arg]
    # A blank value, as a .env file often has it, means "not set".
    clean_env.setenv("SUPABASE_URL", "")
    assert Settings(_env_file=None).publish_target is None  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("env", "variable", "words"),
    [
        ({"MEMBERPULSE_HALF_LIFE_DAYS": "abc"}, "MEMBERPULSE_HALF_LIFE_DAYS", "number"),
        ({"MEMBERPULSE_HALF_LIFE_DAYS": "0"}, "MEMBERPULSE_HALF_LIFE_DAYS", "> 0"),
        ({"MEMBERPULSE_ACTIVE_DAYS": "40"}, "MEMBERPULSE_ACTIVE_DAYS", "at most 30"),
        ({"MEMBERPULSE_LOG_LEVEL": "loud"}, "MEMBERPULSE_LOG_LEVEL", "'INFO'"),
        ({"MEMBERPULSE_WHOP_PAGE_SIZE": "5000"}, "MEMBERPULSE_WHOP_PAGE_SIZE", "≤ 1000"),
        ({"MEMBERPULSE_WHOP_TIMEOUT_SECONDS": "0"}, "MEMBERPULSE_WHOP_TIMEOUT_SECONDS", "> 0"),
        ({"WHOP_API_BASE_URL": "api.whop.com"}, "WHOP_API_BASE_URL", "http(s) URL"),
        ({"SUPABASE_URL": "https://p.supabase.co"}, "SUPABASE_SERVICE_ROLE_KEY", "unset SUPABASE_URL"),
        ({"SUPABASE_SERVICE_ROLE_KEY": "srk"}, "SUPABASE_URL", "unset SUPABASE_SERVICE_ROLE_KEY"),
        ({"NEXT_PUBLIC_WHOP_COMPANY_ID": "biz_1"}, "WHOP_API_KEY", "set WHOP_API_KEY"),
        ({"WHOP_COMPANY_IDS": "biz_1,biz_2"}, "WHOP_API_KEY", "WHOP_COMPANY_API_KEYS"),
        ({"WHOP_API_KEY": "k", "WHOP_COMPANY_IDS": "biz_1, acme"}, "WHOP_COMPANY_IDS", "'acme' is not a Whop company"),
        ({"WHOP_API_KEY": "k", "WHOP_COMPANY_ID": "biz_1/.."}, "WHOP_COMPANY_ID", "not a Whop company id"),
        ({"WHOP_COMPANY_API_KEYS": "biz_1=k1,biz_2"}, "WHOP_COMPANY_API_KEYS", "item 2 (biz_2) is not biz_…=<API"),
        ({"WHOP_COMPANY_API_KEYS": "biz_1=k1,biz_1=k2"}, "WHOP_COMPANY_API_KEYS", "biz_1 a second key"),
        ({"WHOP_COMPANY_IDS": "biz_1,biz_2", "WHOP_COMPANY_API_KEYS": "biz_1=k1"}, "WHOP_API_KEY", "biz_2"),
        ({"MEMBERPULSE_WHOP_RATE_LIMIT_REQUESTS": "1"}, "MEMBERPULSE_WHOP_RATE_LIMIT_REQUESTS", "≥ 10"),
        ({"MEMBERPULSE_INCLUDE_TEST_WEBHOOKS": "maybe"}, "MEMBERPULSE_INCLUDE_TEST_WEBHOOKS", "true or false"),
    ],
)
def test_invalid_settings_name_the_variable_and_the_fix(
    env: dict[str, str], variable: str, words: str, clean_env: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        clean_env.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None)
    assert caught.value.variable == variable
    assert words in str(caught.value)


def test_secrets_never_appear_in_a_configuration_error(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SUPABASE_SERVICE_ROLE_KEY", "srk_very_secret_value")
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None)
    assert "srk_very_secret_value" not in str(caught.value)
    clean_env.delenv("SUPABASE_SERVICE_ROLE_KEY")
    clean_env.setenv("WHOP_COMPANY_API_KEYS", "biz_a=apik_secret_one,apik_secret_two")
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None)
    assert "apik_secret" not in str(caught.value) and "item 2" in str(caught.value)


def test_company_lists_combine_in_order_once_without_those_left_out(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("WHOP_API_KEY", "k_app")
    clean_env.setenv("NEXT_PUBLIC_WHOP_COMPANY_ID", "biz_one")
    clean_env.setenv("WHOP_COMPANY_IDS", " biz_two, biz_one,-biz_three,,biz_four ")
    clean_env.setenv("WHOP_COMPANY_API_KEYS", "biz_three=k_three, biz_five = k_five")
    settings = load_settings(_env_file=None)
    assert settings.listed_companies == ("biz_one", "biz_two", "biz_four", "biz_five")
    assert settings.excluded_companies == {"biz_three"}
    assert {c: settings.whop_key_for(c).get_secret_value() for c in ("biz_one", "biz_five")} == {  # type: ignore[union-attr]
        "biz_one": "k_app",
        "biz_five": "k_five",
    }


def test_an_app_key_alone_is_a_whole_configuration(clean_env: pytest.MonkeyPatch) -> None:
    """A Whop app's key reads every company that installed the app: the companies come from landed webhooks."""
    clean_env.setenv("WHOP_API_KEY", "k_app")
    settings = load_settings(_env_file=None)
    assert settings.listed_companies == () and settings.whop_key_for("biz_any") is not None
    clean_env.delenv("WHOP_API_KEY")
    clean_env.setenv("WHOP_COMPANY_API_KEYS", "biz_own=k_own")
    keyed = load_settings(_env_file=None)
    assert keyed.listed_companies == ("biz_own",) and keyed.whop_key_for("biz_other") is None


def test_a_setting_declared_with_its_prefixed_name_as_alias_still_works(clean_env: pytest.MonkeyPatch) -> None:
    """Settings added as ``Field(validation_alias="MEMBERPULSE_<NAME>")`` read the same variable."""

    class Extended(Settings):
        new_limit: int = Field(default=5, ge=1, validation_alias="MEMBERPULSE_NEW_LIMIT", description="a limit")

    assert Extended(_env_file=None).new_limit == 5  # type: ignore[call-arg]
    clean_env.setenv("MEMBERPULSE_NEW_LIMIT", "7")
    assert Extended(_env_file=None).new_limit == 7  # type: ignore[call-arg]
    assert Extended(_env_file=None, MEMBERPULSE_NEW_LIMIT=9).new_limit == 9  # type: ignore[call-arg]
    assert Extended(_env_file=None, new_limit=11).new_limit == 11  # type: ignore[call-arg]
