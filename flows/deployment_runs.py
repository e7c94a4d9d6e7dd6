"""What differs when a flow runs as a Prefect deployment: it starts in a temporary working directory, so
nothing may depend on the directory it was started from."""

from __future__ import annotations

from memberpulse.errors import ConfigError
from memberpulse.settings import Settings


def in_deployment() -> bool:
    """Whether this flow run was started from a deployment (a schedule, a trigger, ``prefect deployment run``)
    rather than called directly (the CLI, a test, a bench)."""
    from prefect.runtime import deployment

    return deployment.id is not None


def require_absolute_data_dir(settings: Settings) -> None:
    """A relative data dir would be resolved inside the run's temporary directory, read empty and deleted."""
    if not settings.data_dir.is_absolute():
        raise ConfigError(
            f"MEMBERPULSE_DATA_DIR={str(settings.data_dir)!r} is relative, and a deployment run starts in a "
            "temporary directory",
            variable="MEMBERPULSE_DATA_DIR",
            hint="give the worker an absolute MEMBERPULSE_DATA_DIR (the landing's), or unset it for the per-user "
            "default",
        )
