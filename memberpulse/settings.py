"""One ``Settings`` for the whole product, read from the environment or a ``.env`` file.

Every setting is ``MEMBERPULSE_`` + its field name upper-cased (``half_life_days`` ←
``MEMBERPULSE_HALF_LIFE_DAYS``), except the names the Whop/Supabase webhook guide uses, kept as they are
(``WHOP_WEBHOOK_SECRET``, ``WHOP_API_KEY``, ``WHOP_COMPANY_ID`` or ``NEXT_PUBLIC_WHOP_COMPANY_ID``,
``WHOP_API_BASE_URL``, ``SUPABASE_*``). Constraints live on the fields, so an invalid value is refused
here, once, and :func:`load_settings` turns the refusal into a :class:`ConfigError` naming the variable.
Each field's ``description`` is the README's settings table (``scripts/settings_table.py`` writes it).
Secrets are ``SecretStr`` so they never print in a repr, a log line or an error.

Each field's default is written here once (the scoring knobs' once in ``memberpulse.contracts.scoring``, which the
transforms read without importing settings), and so is its bound: nothing downstream clamps a setting again.
Each stage takes its settings as one typed config object built from a ``Settings`` (``settings.scoring``,
``ConnectionLimits.from_settings``, ``PublishConfig.from_settings``, ``WhopClientConfig.from_settings``); one
built without a caller's settings comes from :func:`default_settings`, so no constructor carries a number of its
own.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlparse

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from memberpulse.contracts.scoring import ScoringParams
from memberpulse.errors import ConfigError
from memberpulse.storage.object_store import StorageUrl

DEFAULT_WHOP_API_BASE_URL = "https://api.whop.com/api/v1"
#: A Whop company id as memberpulse takes it: it names folders under the warehouse, so nothing else.
COMPANY_ID: Final = re.compile(r"biz_[A-Za-z0-9_]{1,64}")
ENV_PREFIX = "MEMBERPULSE_"
MAX_WHOP_PAGE_SIZE = 1000  # Whop's API refuses larger pages
#: The longest single wait of the Whop backoff (a bound, not a setting).
WHOP_BACKOFF_CAP_SECONDS: Final = 30.0
_SCORING: Final = ScoringParams()  # the scoring knobs' defaults
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
#: Names a dotenv file read by every command and flow run, wherever it starts (a Prefect worker runs flows in
#: a temporary directory, where no ``.env`` is); a ``.env`` in the working directory is read too, under it.
ENV_FILE_VARIABLE = "MEMBERPULSE_ENV_FILE"
DATA_DIR_DEFAULT_TEXT = "$XDG_DATA_HOME/memberpulse (~/.local/share/memberpulse)"


def default_data_dir() -> Path:
    """Absolute and per user (as XDG says, like dlt's pipelines directory): ``serve``, ``run``, ``sql`` and the
    deployment runs of one user on one machine find the same data whatever directory each starts in."""
    base = os.environ.get("XDG_DATA_HOME", "").strip() or str(Path.home() / ".local" / "share")
    return Path(base) / "memberpulse"


def env_files() -> tuple[Path, ...]:
    """The dotenv files read, lowest precedence first (the environment itself wins over both)."""
    named = os.environ.get(ENV_FILE_VARIABLE, "").strip()
    return (Path(".env"), *((Path(named),) if named else ()))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file_encoding="utf-8",  # the files: env_files()
        extra="ignore",
        populate_by_name=True,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Read ``MEMBERPULSE_ENV_FILE`` when each Settings is made, not when this module is imported."""
        dotenv = DotEnvSettingsSource(settings_cls, env_file=env_files())
        return init_settings, env_settings, dotenv, file_secret_settings

    # --- landing -------------------------------------------------------------------------------------------
    whop_webhook_secret: SecretStr | None = Field(
        default=None,
        validation_alias="WHOP_WEBHOOK_SECRET",
        description="Webhook secret from Whop's dashboard; during a rotation several, separated by commas or "
        "spaces (any may match). Required by `serve`.",
    )
    webhook_tolerance_seconds: int = Field(
        default=300, ge=1, le=86_400, description="How far a signature's timestamp may be from now, in seconds."
    )
    max_body_bytes: int = Field(
        default=1024 * 1024, ge=1, description="Largest webhook body accepted; larger ones are answered 413."
    )
    segment_max_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1, description="A raw segment file is closed and a new one started at this size."
    )
    segment_max_age_seconds: float = Field(
        default=300.0, gt=0, description="A raw segment file is also closed once it has been open this many seconds."
    )
    quarantine_max_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=0,
        description="Total size cap of the landing's rejection log (quarantine); past it the oldest entries are "
        "removed. The counts per reason and the first refusal of each reason are kept beyond it (at most 270 KiB).",
    )
    landing_workers: int = Field(default=1, ge=1, le=64, description="Landing processes sharing the port.")
    log_level: LogLevel = Field(
        default="INFO", description="Log level of the landing and the CLI (DEBUG also shows tracebacks)."
    )
    # --- production: readiness and the reverse proxy ---------------------------------------------------------
    min_free_bytes: int = Field(
        default=1024**3,
        ge=0,
        description="Below this many free bytes on the data volume the health answer is 503 `degraded` "
        "(webhooks are still stored while the disk takes them).",
    )
    trusted_proxies: str = Field(
        default="127.0.0.1",
        description="Comma-separated addresses or networks whose `X-Forwarded-For` the landing believes (`*` = any).",
    )

    # --- event-driven runs -------------------------------------------------------------------------------------
    run_signal: bool = Field(
        default=True,
        description=(
            "The landing emits a Prefect event (at most once a second) when webhooks land, so the reconcile "
            "deployment's trigger starts a run; needs PREFECT_API_URL. false = runs only on the schedule."
        ),
    )
    # --- landing connection limits (slow, idle and oversized clients) ---
    header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a client has to send a request's line and headers (408 and closed after).",
    )
    body_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a client has, after the headers, to send the whole body (408 and closed after).",
    )
    keep_alive_timeout_seconds: int = Field(
        default=5,
        gt=0,
        description="Seconds an idle kept-alive connection stays open between requests.",
    )
    max_header_bytes: int = Field(
        default=32 * 1024,
        ge=1024,
        description="Largest request head (request line and headers) in bytes; 431 and closed above.",
    )
    max_pending_body_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1,
        description="Bytes of unfinished request bodies one landing process holds; past it, 503 and closed.",
    )
    max_connections: int | None = Field(
        default=None,
        ge=1,
        description="Connections one landing process keeps open; past it a new one closes the idlest idle one "
        "(never one mid-request). Unset: the open-file limit, less an eighth of it (at most 2048, the listen "
        "backlog) and 64; `serve` refuses a larger value.",
    )

    # --- Whop API (backfill) -------------------------------------------------------------------------------
    whop_api_key: SecretStr | None = Field(
        default=None,
        validation_alias="WHOP_API_KEY",
        description="API key for the backfill and recovery: a company's key, or a Whop app's key, which reads "
        "every company that installed the app (the default key of every company without its own in "
        "`WHOP_COMPANY_API_KEYS`). No key at all: backfill skipped.",
    )
    whop_company_id: str | None = Field(
        default=None,
        validation_alias=AliasChoices("WHOP_COMPANY_ID", "NEXT_PUBLIC_WHOP_COMPANY_ID"),
        description="Company to backfill, `biz_…` (`NEXT_PUBLIC_WHOP_COMPANY_ID` is read too); read like "
        "`WHOP_COMPANY_IDS`, and both lists are combined.",
    )
    whop_company_ids: str | None = Field(
        default=None,
        validation_alias="WHOP_COMPANY_IDS",
        description="More companies, comma-separated `biz_…`, fetched besides `WHOP_COMPANY_ID`, the companies of "
        "`WHOP_COMPANY_API_KEYS` and every company seen in landed webhooks; `-biz_…` leaves a company out "
        "whatever names it.",
    )
    whop_company_api_keys: SecretStr | None = Field(
        default=None,
        validation_alias="WHOP_COMPANY_API_KEYS",
        description="Per-company API keys, `biz_a=key_a,biz_b=key_b` (each such company is fetched); a company "
        "without one is read with `WHOP_API_KEY`.",
    )
    whop_rate_limit_requests: int = Field(
        default=600,
        ge=10,
        description="Requests Whop allows one API key per window (600 a minute); the backfill and recovery "
        "of every company read with that key share nine tenths of it.",
    )
    whop_rate_limit_window_seconds: float = Field(
        default=60.0, gt=0, le=3600, description="The window Whop counts a key's requests in, in seconds."
    )
    backfill_concurrency: int = Field(
        default=8,
        ge=1,
        le=256,
        description="Companies the backfill and recovery read at once (each backfill reads its two lists side "
        "by side).",
    )
    backfill_retry_hours: float = Field(
        default=12.0,
        ge=0,
        description="After a backfill that some companies failed, a backfill started within this many hours "
        "of that round's start fetches only the companies still to do; later, or with `--all`, every company.",
    )
    whop_api_base_url: str = Field(
        default=DEFAULT_WHOP_API_BASE_URL, validation_alias="WHOP_API_BASE_URL", description="Whop API root."
    )
    whop_max_rate_limit_wait_seconds: float = Field(
        default=300.0, ge=0, description="Longest total wait on Whop's 429 answers before the backfill gives up."
    )
    whop_max_attempts: int = Field(
        default=6, ge=1, le=100, description="Tries per page on Whop 5xx answers, timeouts and connection errors."
    )
    whop_timeout_seconds: float = Field(default=30.0, gt=0, le=600, description="Timeout of one Whop API request.")
    whop_page_size: int = Field(
        default=100, ge=1, le=MAX_WHOP_PAGE_SIZE, description="Records per page asked of Whop's API."
    )
    whop_max_pages: int = Field(
        default=10_000,
        ge=1,
        description="Most pages one listing of Whop's API (memberships, members, the delivery log) may take; a "
        "listing still going past it (a cursor that never ends) stops the command with exit 3.",
    )
    whop_backoff_base_seconds: float = Field(
        default=0.5,
        gt=0,
        le=60,
        description="First wait of the exponential backoff on Whop 5xx/timeouts (doubles per try, jittered, "
        f"capped at {WHOP_BACKOFF_CAP_SECONDS:g} s).",
    )

    # --- recovery from Whop's delivery log (memberpulse recover) -------------------------------------------------
    whop_webhook_id: str | None = Field(
        default=None,
        validation_alias="WHOP_WEBHOOK_ID",
        description="The webhook (hook_...) whose delivery log recovery reads, or several, comma-separated; a "
        "Whop app's webhook is named here (no company lists it). Unset: each company's webhooks posting to "
        "MEMBERPULSE_PUBLIC_WEBHOOK_URL.",
    )
    recover_max_deliveries: int = Field(
        default=500_000,
        ge=1,
        description="Most delivery attempts one `memberpulse recover` reads (Whop keeps 30 days); a delivery log "
        "longer than this stops the recovery with exit 3 and nothing written.",
    )
    public_webhook_url: str | None = Field(
        default=None,
        validation_alias="MEMBERPULSE_PUBLIC_WEBHOOK_URL",
        description="The landing's public URL as configured in Whop (https://.../api/webhooks/whop); used to "
        "find the webhook when WHOP_WEBHOOK_ID is unset.",
    )

    # --- Supabase ------------------------------------------------------------------------------------------
    supabase_db_url: SecretStr | None = Field(
        default=None,
        validation_alias="SUPABASE_DB_URL",
        description="Direct Postgres connection string: the fast COPY publish path (preferred).",
    )
    supabase_url: str | None = Field(
        default=None,
        validation_alias="SUPABASE_URL",
        description="Project URL for the PostgREST publish path (with `SUPABASE_SERVICE_ROLE_KEY`).",
    )
    supabase_service_role_key: SecretStr | None = Field(
        default=None,
        validation_alias="SUPABASE_SERVICE_ROLE_KEY",
        description="Service-role key for the PostgREST publish path (with `SUPABASE_URL`).",
    )
    publish_batch_size: int = Field(default=1000, ge=1, le=100_000, description="Rows per PostgREST upsert batch.")
    publish_max_attempts: int = Field(
        default=4, ge=1, le=20, description="Tries of a publish on a transient failure before the run exits 3."
    )
    publish_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="Seconds to connect to the publish target, of silence on an open connection before TCP "
        "keepalives probe it and of unacknowledged data before it fails (Postgres), or per HTTP phase (PostgREST).",
    )
    publish_deadline_seconds: float = Field(
        default=300.0,
        gt=0,
        le=3600,
        description="Seconds one publish may take in all (connecting, every statement or request, retries and "
        "their waits); past it the publish is abandoned and the run exits 3, the snapshot written.",
    )
    publish_statement_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Postgres statement_timeout for every publish statement (SET LOCAL).",
    )
    publish_lock_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Postgres lock_timeout for every publish statement (SET LOCAL): how long to wait for a lock.",
    )
    publish_backoff_seconds: float = Field(
        default=0.5, ge=0, le=60, description="First wait between publish tries (doubles per try)."
    )

    # --- storage -------------------------------------------------------------------------------------------
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Landing files, quarantine, warehouse and snapshots live under it. A relative path is taken "
        "from the directory a command starts in (refused in deployment runs, which start in a temporary one).",
    )
    snapshots_keep: int = Field(default=10, ge=1, description="DuckDB snapshot files kept.")
    storage_url: str | None = Field(
        default=None,
        description="Object storage shared by landing replicas and workers on several hosts (`s3://bucket/prefix`, "
        "`gs://…`, `az://…`; R2, Supabase Storage and MinIO through `AWS_ENDPOINT_URL`). Credentials come from "
        "the cloud's standard variables. Unset: everything stays under the data dir.",
    )
    storage_timeout_seconds: float = Field(
        default=30.0, gt=0, le=600, description="Timeout of one object-store request (each is retried 3 times)."
    )
    ship_interval_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="With the storage URL set: how often a landing process uploads what its raw segments and "
        "quarantine gained. At most this much (plus the upload's time) of acknowledged webhooks is only on the "
        "landing host's disk.",
    )
    storage_lease_seconds: float = Field(
        default=120.0,
        ge=2,
        le=3600,
        description="With a storage URL: how long a run's lease on the shared state lasts without renewal (renewed "
        "every third of it while the run works). A worker that died holds it this long; keep it well above the "
        "hosts' clock skew.",
    )
    storage_gc_grace_seconds: float = Field(
        default=86400.0,
        ge=0,
        description="With a storage URL: state objects no state tree references are deleted once this much older.",
    )

    include_test_webhooks: bool = Field(
        default=False,
        description="Score and publish the `send-test` mock webhooks (ids starting `test_`) like real ones; "
        "by default they are kept in the raw store and counted, never published.",
    )
    raw_retention_days: float = Field(
        default=7,
        ge=0,
        description="Landing segments older than this many days (and fully ingested) are compacted into the "
        "daily Parquet raw archive and their NDJSON removed.",
    )

    # --- scoring -------------------------------------------------------------------------------------------
    half_life_days: float = Field(
        default=_SCORING.half_life_days, gt=0, description="Days after which an engagement score halves."
    )
    active_days: float = Field(
        default=_SCORING.active_days,
        ge=0,
        description="A valid member is `active` up to this many days since last activity.",
    )
    at_risk_days: float = Field(
        default=_SCORING.at_risk_days,
        ge=0,
        description="A valid member is `at_risk` up to this many days since last activity (at least the active "
        "days), `inactive` after.",
    )

    # --- checks across fields ------------------------------------------------------------------------------
    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("data_dir")
    @classmethod
    def _not_a_file(cls, value: Path) -> Path:
        # Every command would otherwise fail later, each in its own words (a "damaged manifest" whose remedy,
        # a full refresh, cannot help either): a data dir that is a file is a configuration error at once.
        if value.exists() and not value.is_dir():
            raise ValueError(
                "it is a file, not a directory; the data dir holds the landing files, warehouse and snapshots"
            )
        return value

    @field_validator("storage_url")
    @classmethod
    def _object_store_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        try:
            return str(StorageUrl.parse(value))
        except ConfigError as exc:
            raise ValueError(f"{exc.message}; {exc.hint}") from None

    @field_validator("whop_api_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        url = urlparse(value)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise ValueError("not an http(s) URL; the API root is e.g. https://api.whop.com/api/v1")
        return value

    @field_validator("whop_company_id", "whop_company_ids")
    @classmethod
    def _company_list(cls, value: str | None) -> str | None:
        if value is None:
            return None
        items = _split_list(value)
        for item in items:
            if not COMPANY_ID.fullmatch(item.removeprefix("-")):
                raise ValueError(
                    f"{item!r} is not a Whop company id (biz_ then letters, digits or _; -biz_… leaves one out)"
                )
        return ",".join(items)

    @field_validator("whop_company_api_keys")
    @classmethod
    def _company_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _parse_company_keys(value.get_secret_value())  # ValueError names the item, never its key
        return value

    @model_validator(mode="before")
    @classmethod
    def _read_env_style_names(cls, data: Any) -> Any:
        """Accept the environment variable names as keyword arguments too (``MEMBERPULSE_DATA_DIR=...``);
        a blank value (``SUPABASE_URL=`` in a ``.env``) means "not set"."""
        if not isinstance(data, dict):
            return data
        values: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, str) and not value.strip():
                continue
            name = key[len(ENV_PREFIX) :].lower() if key.upper().startswith(ENV_PREFIX) else key
            values[name if name in cls.model_fields else key] = value
        return values

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.active_days > self.at_risk_days:
            raise ValueError(
                f"MEMBERPULSE_ACTIVE_DAYS ({self.active_days:g}) is greater than MEMBERPULSE_AT_RISK_DAYS "
                f"({self.at_risk_days:g}); set MEMBERPULSE_ACTIVE_DAYS to at most {self.at_risk_days:g}"
            )
        _both_or_neither(
            "SUPABASE_URL",
            self.supabase_url,
            "SUPABASE_SERVICE_ROLE_KEY",
            self.supabase_service_role_key,
            "PostgREST publishing",
        )
        _every_listed_company_has_a_key(self)
        return self

    # --- derived -------------------------------------------------------------------------------------------
    @property
    def webhook_secrets(self) -> list[str]:
        """All configured webhook secrets (rotation: any may match). Empty when unset."""
        if self.whop_webhook_secret is None:
            return []
        return [s for s in re.split(r"[,\s]+", self.whop_webhook_secret.get_secret_value()) if s]

    def require_webhook_secrets(self) -> list[str]:
        secrets = self.webhook_secrets
        if not secrets:
            raise ConfigError(
                "no webhook secret configured: the landing endpoint refuses to run without one",
                variable="WHOP_WEBHOOK_SECRET",
            )
        return secrets

    @property
    def publish_target(self) -> Literal["postgres", "postgrest"] | None:
        """Where flows publish: the direct Postgres path when ``SUPABASE_DB_URL`` is set, else PostgREST."""
        if self.supabase_db_url is not None:
            return "postgres"
        if self.supabase_url and self.supabase_service_role_key is not None:
            return "postgrest"
        return None

    @property
    def scoring(self) -> ScoringParams:
        """The scoring knobs as the scorer takes them."""
        return ScoringParams(self.half_life_days, self.active_days, self.at_risk_days)

    @property
    def listed_companies(self) -> tuple[str, ...]:
        """The companies the settings name (WHOP_COMPANY_ID, WHOP_COMPANY_IDS, WHOP_COMPANY_API_KEYS), in that
        order, each once, without those left out."""
        named = [
            *_split_list(self.whop_company_id or ""),
            *_split_list(self.whop_company_ids or ""),
            *self.company_api_keys,
        ]
        left_out = self.excluded_companies
        return tuple(dict.fromkeys(c for c in named if not c.startswith("-") and c not in left_out))

    @property
    def excluded_companies(self) -> frozenset[str]:
        """Companies left out (``-biz_…``) whatever names them: the settings or landed webhooks."""
        named = [*_split_list(self.whop_company_id or ""), *_split_list(self.whop_company_ids or "")]
        return frozenset(c[1:] for c in named if c.startswith("-"))

    @property
    def company_api_keys(self) -> dict[str, SecretStr]:
        """WHOP_COMPANY_API_KEYS by company (empty when unset)."""
        if self.whop_company_api_keys is None:
            return {}
        pairs = _parse_company_keys(self.whop_company_api_keys.get_secret_value())
        return {company: SecretStr(key) for company, key in pairs.items()}

    def whop_key_for(self, company_id: str) -> SecretStr | None:
        """The key that reads ``company_id``: its own, else WHOP_API_KEY (None: no key reads it)."""
        own = self.company_api_keys.get(company_id)
        if own is not None:
            return own
        default = self.whop_api_key
        return default if default is not None and default.get_secret_value().strip() else None

    @property
    def landing_dir(self) -> Path:
        return self.data_dir / "landing"

    @property
    def quarantine_dir(self) -> Path:
        return self.data_dir / "quarantine"

    @property
    def warehouse_dir(self) -> Path:
        return self.data_dir / "warehouse"

    @property
    def snapshots_dir(self) -> Path:
        return self.data_dir / "snapshots"

    @property
    def storage(self) -> StorageUrl | None:
        """The object store shared across hosts, or None for the local layout under the data dir."""
        return StorageUrl.parse(self.storage_url) if self.storage_url else None


def _both_or_neither(name_a: str, a: object, name_b: str, b: object, purpose: str) -> None:
    if (a is None) != (b is None):
        have, missing = (name_a, name_b) if b is None else (name_b, name_a)
        raise ValueError(f"{missing} is not set while {have} is ({purpose} needs both); set {missing} or unset {have}")


def _split_list(value: str) -> list[str]:
    """A comma-separated list as written in a variable: items stripped, empty ones (a trailing comma) dropped."""
    return [item.strip() for item in value.split(",") if item.strip()]


def _parse_company_keys(value: str) -> dict[str, str]:
    """``biz_a=key_a,biz_b=key_b`` by company. A ValueError names the item by its place (and its company, which
    is no secret), never the key."""
    keys: dict[str, str] = {}
    for place, item in enumerate(_split_list(value), 1):
        company, sep, key = (part.strip() for part in item.partition("="))
        if not sep or not COMPANY_ID.fullmatch(company) or not key:
            shown = f" ({company})" if COMPANY_ID.fullmatch(company) else ""
            raise ValueError(f"item {place}{shown} is not biz_…=<API key>")
        if company in keys:
            raise ValueError(f"item {place} gives {company} a second key")
        keys[company] = key
    return keys


def _every_listed_company_has_a_key(settings: Settings) -> None:
    """A company named in the settings must be readable: by its own key or WHOP_API_KEY."""
    keyless = [c for c in settings.listed_companies if settings.whop_key_for(c) is None]
    if keyless:
        named_in = "WHOP_COMPANY_ID" if settings.whop_company_ids is None else "WHOP_COMPANY_IDS"
        raise ValueError(
            f"WHOP_API_KEY is not set while {named_in} is ({', '.join(keyless[:3])} would have no key for the "
            f"backfill); set WHOP_API_KEY, or give each company its key in WHOP_COMPANY_API_KEYS"
        )


def default_settings() -> Settings:
    """Every setting at its default, neither the environment nor a dotenv file read: what a stage builds its
    config object from when its caller gives none."""
    return Settings.model_construct()


def env_names(field_name: str) -> list[str]:
    """The environment variable(s) a setting is read from, the first being the documented one."""
    alias = Settings.model_fields[field_name].validation_alias
    if isinstance(alias, str):
        return [alias]
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices]
    return [ENV_PREFIX + field_name.upper()]


def load_settings(**overrides: Any) -> Settings:
    """``Settings()`` from the environment, or a :class:`ConfigError` naming the first variable to fix."""
    named = os.environ.get(ENV_FILE_VARIABLE, "").strip()
    if named and not Path(named).is_file():
        raise ConfigError(
            f"{ENV_FILE_VARIABLE}={named!r} names no readable file",
            variable=ENV_FILE_VARIABLE,
            hint="give the absolute path of an existing dotenv file, or unset it",
        )
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise _config_error(exc) from None


def _config_error(exc: ValidationError) -> ConfigError:
    error = exc.errors(include_url=False)[0]
    loc = error["loc"]
    if not loc:  # a check across fields: its message names the variables and the fix
        message = str(error["msg"]).removeprefix("Value error, ")
        variable = message.split(" ", 1)[0]
        text, _, fix = message.partition("; ")
        return ConfigError(text, variable=variable, hint=fix or None)
    key = str(loc[0])  # the field name, or the alias it was read under
    key = next((name for name in Settings.model_fields if key in env_names(name)), key)
    variable = env_names(key)[0] if key in Settings.model_fields else str(loc[0])
    shown = "(secret)" if _is_secret(key) else repr(_without_userinfo(error.get("input")))
    message = str(error["msg"]).removeprefix("Value error, ")
    return ConfigError(f"{variable}={shown} is invalid: {message}", variable=variable, hint=_fix(key, error))


def _without_userinfo(value: object) -> object:
    """A URL's ``user:password@`` is never echoed back, whichever setting it was put in by mistake."""
    if isinstance(value, str) and "@" in value and "://" in value:
        scheme, _, rest = value.partition("://")
        return f"{scheme}://…@{rest.rpartition('@')[2]}"
    return value


def _is_secret(field_name: str) -> bool:
    field = Settings.model_fields.get(field_name)
    return field is not None and "SecretStr" in str(field.annotation)


def _fix(field_name: str, error: Any) -> str:
    if field_name not in Settings.model_fields:
        return "check the value"
    names = env_names(field_name)[0]
    ctx = error.get("ctx") or {}
    if "expected" in ctx:
        return f"set {names} to one of {ctx['expected']}"
    bounds = [f"{op} {ctx[k]}" for k, op in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")) if k in ctx]
    if bounds:
        return f"set {names} to a number {', '.join(bounds)}"
    kind = {"int": "whole number", "float": "number", "bool": "true or false"}.get(error["type"].split("_")[0])
    return f"set {names} to a {kind or 'valid value'}, or unset it for the default"
