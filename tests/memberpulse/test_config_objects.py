"""Every default is written once: on its Settings field, or (the scoring knobs) on ``ScoringParams``, which the
Settings fields read. Each stage takes its settings as one typed config object built from Settings.

The checks compare identities, not only values: two equal literals are two float objects, so a default typed
again anywhere fails here even while the copies still agree.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
from collections.abc import Callable
from pathlib import Path

import pytest

from memberpulse import transforms
from memberpulse.contracts.scoring import ScoringParams
from memberpulse.errors import ConfigError
from memberpulse.flows.publish import (
    DEFAULT_PUBLISH_CONFIG,
    PostgresPublisher,
    PostgrestPublisher,
    PublishConfig,
    Publisher,
)
from memberpulse.flows.whop import RetryPolicy
from memberpulse.flows.whop._client import DEFAULT_WHOP_CLIENT_CONFIG, WhopBackfillClient, WhopClientConfig
from memberpulse.landing import verify
from memberpulse.landing.protocol import DEFAULT_CONNECTION_LIMITS, ConnectionLimits, GuardedHttpToolsProtocol
from memberpulse.settings import WHOP_BACKOFF_CAP_SECONDS, Settings, env_names, load_settings

ROOT = Path(__file__).resolve().parents[2]


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


# --- the stages' config objects: built from Settings, no defaults of their own ------------------------------

CONFIG_TYPES = (ConnectionLimits, RetryPolicy, WhopClientConfig, PublishConfig)
#: Each config object's settings at a valid value other than the default, and the fields they must reach.
NON_DEFAULT = {
    "MEMBERPULSE_HEADER_TIMEOUT_SECONDS": ("4.5", [("limits", "header_timeout_seconds", 4.5)]),
    "MEMBERPULSE_BODY_TIMEOUT_SECONDS": ("5.5", [("limits", "body_timeout_seconds", 5.5)]),
    "MEMBERPULSE_MAX_HEADER_BYTES": ("2048", [("limits", "max_header_bytes", 2048)]),
    "MEMBERPULSE_MAX_PENDING_BODY_BYTES": ("4096", [("limits", "max_pending_body_bytes", 4096)]),
    "MEMBERPULSE_MAX_CONNECTIONS": ("100", [("limits", "max_connections", 100)]),
    "MEMBERPULSE_WHOP_PAGE_SIZE": ("7", [("whop", "page_size", 7)]),
    "MEMBERPULSE_WHOP_TIMEOUT_SECONDS": ("3.5", [("whop", "timeout_seconds", 3.5)]),
    "MEMBERPULSE_WHOP_MAX_PAGES": ("12", [("whop", "max_pages", 12)]),
    "MEMBERPULSE_WHOP_MAX_ATTEMPTS": ("2", [("retry", "max_attempts", 2)]),
    "MEMBERPULSE_WHOP_MAX_RATE_LIMIT_WAIT_SECONDS": ("9", [("retry", "max_rate_limit_wait", 9.0)]),
    "MEMBERPULSE_WHOP_BACKOFF_BASE_SECONDS": ("0.25", [("retry", "backoff_base", 0.25)]),
    "MEMBERPULSE_PUBLISH_MAX_ATTEMPTS": ("3", [("publish", "max_attempts", 3)]),
    "MEMBERPULSE_PUBLISH_BACKOFF_SECONDS": ("0.75", [("publish", "backoff_seconds", 0.75)]),
    "MEMBERPULSE_PUBLISH_TIMEOUT_SECONDS": ("2.5", [("publish", "timeout_seconds", 2.5)]),
    "MEMBERPULSE_PUBLISH_STATEMENT_TIMEOUT_SECONDS": ("6.5", [("publish", "statement_timeout_seconds", 6.5)]),
    "MEMBERPULSE_PUBLISH_LOCK_TIMEOUT_SECONDS": ("1.5", [("publish", "lock_timeout_seconds", 1.5)]),
    "MEMBERPULSE_PUBLISH_BATCH_SIZE": ("11", [("publish", "batch_size", 11)]),
    "MEMBERPULSE_PUBLISH_DEADLINE_SECONDS": ("45", [("publish", "deadline_seconds", 45.0)]),
}


def _configs(settings: Settings) -> dict[str, object]:
    whop = WhopClientConfig.from_settings(settings)
    return {
        "limits": ConnectionLimits.from_settings(settings),
        "whop": whop,
        "retry": whop.retry,
        "publish": PublishConfig.from_settings(settings),
    }


@pytest.mark.parametrize("config_type", CONFIG_TYPES, ids=lambda t: t.__name__)
def test_a_config_object_has_no_defaults_of_its_own(config_type: type) -> None:
    for field in dataclasses.fields(config_type):
        assert field.default is dataclasses.MISSING, f"{config_type.__name__}.{field.name}"
        assert field.default_factory is dataclasses.MISSING, f"{config_type.__name__}.{field.name}"


def test_the_default_configs_are_the_ones_settings_build_from_their_defaults(clean_env: pytest.MonkeyPatch) -> None:
    settings = _settings()
    assert ConnectionLimits.from_settings(settings) == DEFAULT_CONNECTION_LIMITS
    assert GuardedHttpToolsProtocol.limits == DEFAULT_CONNECTION_LIMITS  # until serve sets the configured ones
    assert WhopClientConfig.from_settings(settings) == DEFAULT_WHOP_CLIENT_CONFIG
    assert PublishConfig.from_settings(settings) == DEFAULT_PUBLISH_CONFIG
    assert settings.webhook_tolerance_seconds == verify.DEFAULT_TOLERANCE_SECONDS
    assert DEFAULT_WHOP_CLIENT_CONFIG.retry.backoff_cap == WHOP_BACKOFF_CAP_SECONDS


def test_every_config_field_follows_its_setting(clean_env: pytest.MonkeyPatch) -> None:
    defaults = _configs(_settings())
    for variable, (text, _) in NON_DEFAULT.items():
        clean_env.setenv(variable, text)
    configs = _configs(_settings())
    for variable, (_, reached) in NON_DEFAULT.items():
        for config, field, value in reached:
            assert getattr(configs[config], field) == value, variable
            assert getattr(defaults[config], field) != value, variable
    # Every field of every config is reached by a setting (or is the one fixed bound, the Whop backoff cap).
    covered = {(config, field) for _, reached in NON_DEFAULT.values() for config, field, _ in reached}
    for name, config in configs.items():
        fields = {f.name for f in dataclasses.fields(config)} - {"retry", "backoff_cap"}  # type: ignore[arg-type]
        assert {(name, f) for f in fields} <= covered, name


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MEMBERPULSE_WHOP_MAX_ATTEMPTS", "0"),
        ("MEMBERPULSE_WHOP_MAX_RATE_LIMIT_WAIT_SECONDS", "-1"),
        ("MEMBERPULSE_PUBLISH_MAX_ATTEMPTS", "0"),
        ("MEMBERPULSE_PUBLISH_BATCH_SIZE", "0"),
    ],
)
def test_the_bounds_stages_used_to_clamp_again_are_refused_at_the_setting(
    variable: str, value: str, clean_env: pytest.MonkeyPatch
) -> None:
    """The Whop retry policy and the publishers no longer clamp these: the Settings field refuses them."""
    clean_env.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None)
    assert caught.value.variable == variable


# --- constructors take the config object, never a number -----------------------------------------------------

#: The modules whose constructors and functions take settings' values: none may default one to a number.
CONFIGURED_MODULES = (
    "flows/publish/_publisher.py",
    "flows/publish/_postgres.py",
    "flows/publish/_postgrest.py",
    "flows/publish/_publish_step.py",
    "flows/whop/_client.py",
    "flows/whop/_retry.py",
    "landing/protocol.py",
    "landing/verify.py",
    "transforms/_score.py",
)


def numeric_defaults(source: str) -> list[str]:
    """``function(parameter=<number>)`` for every parameter of every function in ``source`` whose default is a
    number written out (``30.0``, ``64 * 1024``) rather than taken from a config object."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = node.args
            positional = args.posonlyargs + args.args
            pairs = list(zip(positional[len(positional) - len(args.defaults) :], args.defaults, strict=True))
            pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is not None]
            found += [f"{node.name}({a.arg}={ast.unparse(d)})" for a, d in pairs if _is_number(d)]
    return found


def _is_number(node: ast.expr) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, int | float) and not isinstance(node.value, bool)
    if isinstance(node, ast.UnaryOp):
        return _is_number(node.operand)
    return isinstance(node, ast.BinOp) and _is_number(node.left) and _is_number(node.right)


def test_the_check_finds_a_number_written_as_a_default() -> None:
    """What the publishers' and the Whop client's constructors looked like before (30.0 had drifted from 10)."""
    before = "def __init__(self, *, batch_size: int = 1000, timeout_seconds: float = 30.0, max_bytes=64 * 1024): ..."
    assert numeric_defaults(before) == [
        "__init__(batch_size=1000)", "__init__(timeout_seconds=30.0)", "__init__(max_bytes=64 * 1024)"
    ]  # fmt: skip
    assert numeric_defaults("def f(config: C = DEFAULT_CONFIG, verbose: bool = False): ...") == []


def test_no_configured_constructor_or_function_defaults_a_number() -> None:
    found = {name: numeric_defaults((ROOT / name).read_text()) for name in CONFIGURED_MODULES}
    assert {name: defaults for name, defaults in found.items() if defaults} == {}


@pytest.mark.parametrize(
    ("constructor", "default"),
    [
        (Publisher.__init__, DEFAULT_PUBLISH_CONFIG),
        (PostgresPublisher.__init__, DEFAULT_PUBLISH_CONFIG),
        (PostgrestPublisher.__init__, DEFAULT_PUBLISH_CONFIG),
        (WhopBackfillClient.__init__, DEFAULT_WHOP_CLIENT_CONFIG),
    ],
    ids=lambda c: getattr(c, "__qualname__", ""),
)
def test_constructors_take_the_config_built_from_settings(constructor: Callable[..., None], default: object) -> None:
    """The same rule at run time, whatever wrote the default."""
    parameters = inspect.signature(constructor).parameters
    assert parameters["config"].default is default
    numbers = [p.name for p in parameters.values() if type(p.default) in (int, float)]  # bools are not numbers here
    assert numbers == []


@pytest.mark.parametrize("verifier", [verify.verify_webhook, verify.verify_lowercased])
def test_the_verifier_tolerance_defaults_to_the_setting_default_itself(verifier: Callable[..., object]) -> None:
    default = inspect.signature(verifier).parameters["tolerance_seconds"].default
    assert default is Settings.model_fields["webhook_tolerance_seconds"].default  # 300: not a cached small int
