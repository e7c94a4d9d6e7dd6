"""One ``Settings`` for the whole product, read from the environment or a ``.env`` file.

Seed names are kept (``WHOP_WEBHOOK_SECRET``, ``NEXT_PUBLIC_WHOP_COMPANY_ID``, ``SUPABASE_SERVICE_ROLE_KEY``).
Secrets are ``SecretStr`` so they never print in a repr, a log line or an error.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from memberpulse.errors import ConfigError

DEFAULT_WHOP_API_BASE_URL = "https://api.whop.com/api/v1"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # --- landing -------------------------------------------------------------------------------------------
    whop_webhook_secret: SecretStr | None = Field(default=None, validation_alias="WHOP_WEBHOOK_SECRET")
    webhook_tolerance_seconds: int = Field(default=300, validation_alias="MEMBERPULSE_WEBHOOK_TOLERANCE_SECONDS")
    max_body_bytes: int = Field(default=1024 * 1024, validation_alias="MEMBERPULSE_MAX_BODY_BYTES")
    segment_max_bytes: int = Field(default=64 * 1024 * 1024, validation_alias="MEMBERPULSE_SEGMENT_MAX_BYTES")
    segment_max_age_seconds: float = Field(default=300.0, validation_alias="MEMBERPULSE_SEGMENT_MAX_AGE_SECONDS")
    quarantine_max_bytes: int = Field(default=64 * 1024 * 1024, validation_alias="MEMBERPULSE_QUARANTINE_MAX_BYTES")
    landing_workers: int = Field(default=1, ge=1, validation_alias="MEMBERPULSE_LANDING_WORKERS")
    log_level: str = Field(default="INFO", validation_alias="MEMBERPULSE_LOG_LEVEL")
    # --- production: readiness and the reverse proxy ---------------------------------------------------------
    min_free_bytes: int = Field(
        default=1024**3,
        ge=0,
        validation_alias="MEMBERPULSE_MIN_FREE_BYTES",
        description="Below this many free bytes on the data volume the health answer is 503 degraded.",
    )
    trusted_proxies: str = Field(
        default="127.0.0.1",
        validation_alias="MEMBERPULSE_TRUSTED_PROXIES",
        description="Comma-separated addresses/networks whose X-Forwarded-For is believed ('*' = any).",
    )

    # --- Whop API (backfill) -------------------------------------------------------------------------------
    whop_api_key: SecretStr | None = Field(default=None, validation_alias="WHOP_API_KEY")
    whop_company_id: str | None = Field(
        default=None, validation_alias=AliasChoices("WHOP_COMPANY_ID", "NEXT_PUBLIC_WHOP_COMPANY_ID")
    )
    whop_api_base_url: str = Field(default=DEFAULT_WHOP_API_BASE_URL, validation_alias="WHOP_API_BASE_URL")
    whop_max_rate_limit_wait_seconds: float = Field(
        default=300.0, validation_alias="MEMBERPULSE_WHOP_MAX_RATE_LIMIT_WAIT_SECONDS"
    )
    whop_max_attempts: int = Field(default=6, validation_alias="MEMBERPULSE_WHOP_MAX_ATTEMPTS")
    whop_timeout_seconds: float = Field(default=30.0, validation_alias="MEMBERPULSE_WHOP_TIMEOUT_SECONDS")
    whop_page_size: int = Field(default=100, validation_alias="MEMBERPULSE_WHOP_PAGE_SIZE")
    # first wait of the exponential backoff on 5xx/timeouts (doubles per attempt, jittered, capped at 30 s)
    whop_backoff_base_seconds: float = Field(
        default=0.5, gt=0, validation_alias="MEMBERPULSE_WHOP_BACKOFF_BASE_SECONDS"
    )

    # --- recovery from Whop's delivery log (memberpulse recover) -------------------------------------------------
    whop_webhook_id: str | None = Field(
        default=None,
        validation_alias="WHOP_WEBHOOK_ID",
        description="The company's webhook (hook_...) whose delivery log recovery reads; unset: found by "
        "MEMBERPULSE_PUBLIC_WEBHOOK_URL.",
    )
    public_webhook_url: str | None = Field(
        default=None,
        validation_alias="MEMBERPULSE_PUBLIC_WEBHOOK_URL",
        description="The landing's public URL as configured in Whop (https://.../api/webhooks/whop); used to "
        "find the webhook when WHOP_WEBHOOK_ID is unset.",
    )

    # --- Supabase ------------------------------------------------------------------------------------------
    supabase_db_url: SecretStr | None = Field(default=None, validation_alias="SUPABASE_DB_URL")
    supabase_url: str | None = Field(default=None, validation_alias="SUPABASE_URL")
    supabase_service_role_key: SecretStr | None = Field(default=None, validation_alias="SUPABASE_SERVICE_ROLE_KEY")
    publish_batch_size: int = Field(default=1000, validation_alias="MEMBERPULSE_PUBLISH_BATCH_SIZE")
    publish_max_attempts: int = Field(default=4, ge=1, validation_alias="MEMBERPULSE_PUBLISH_MAX_ATTEMPTS")
    publish_timeout_seconds: float = Field(
        default=30.0, gt=0, validation_alias="MEMBERPULSE_PUBLISH_TIMEOUT_SECONDS"
    )
    publish_backoff_seconds: float = Field(
        default=0.5, ge=0, validation_alias="MEMBERPULSE_PUBLISH_BACKOFF_SECONDS"
    )

    # --- storage -------------------------------------------------------------------------------------------
    data_dir: Path = Field(default=Path("./data"), validation_alias="MEMBERPULSE_DATA_DIR")
    snapshots_keep: int = Field(default=10, validation_alias="MEMBERPULSE_SNAPSHOTS_KEEP")

    # --- scoring -------------------------------------------------------------------------------------------
    half_life_days: float = Field(default=7.0, gt=0, validation_alias="MEMBERPULSE_HALF_LIFE_DAYS")
    active_days: float = Field(default=7.0, ge=0, validation_alias="MEMBERPULSE_ACTIVE_DAYS")
    at_risk_days: float = Field(default=30.0, ge=0, validation_alias="MEMBERPULSE_AT_RISK_DAYS")

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

