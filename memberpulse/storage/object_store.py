"""One small object-store client for everything memberpulse keeps outside the data dir
(``MEMBERPULSE_STORAGE_URL``): S3 and what speaks its API (Cloudflare R2, Supabase Storage, MinIO), Google Cloud
Storage and Azure Blob Storage.

It stands on obstore (Rust's ``object_store``, the crate polars reads cloud files with): one dependency for every
cloud, conditional writes (create-if-absent, replace-if-unchanged) that leases and commits are built on, and
credentials from each cloud's standard variables, read the way that cloud's own tools read them. Why obstore
rather than fsspec/s3fs, measured: docs/deploy.md.

The surface is the handful of operations the product needs, each saying plainly what a missing object or a lost
race means (``None``, ``False``) instead of raising; everything else a store can answer becomes a
:class:`~memberpulse.errors.StorageUnavailable` (exit 3: the network or the service may heal) or a
:class:`~memberpulse.errors.ConfigError` (exit 2: a bucket that does not exist, credentials refused), one line,
no secret in it. Every request is counted per operation (:attr:`ObjectStore.requests`): the request-cost figures
in the docs are read from these counters, not estimated.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlparse

import obstore
from obstore import exceptions as obstore_errors
from obstore.store import from_url

from memberpulse.errors import ConfigError, StorageUnavailable

if TYPE_CHECKING:
    from obstore.store import ObjectStore as _Backend

STORAGE_URL_VARIABLE: Final = "MEMBERPULSE_STORAGE_URL"
#: URL schemes accepted, by cloud (``file://`` is not one: unset the URL for the local layout).
SCHEMES: Final = {"s3": "S3", "s3a": "S3", "gs": "GCS", "az": "Azure", "abfs": "Azure", "abfss": "Azure"}
#: What obstore raises for an absent object (Python's own error from some calls, its own from others).
_ABSENT: Final = (FileNotFoundError, obstore_errors.NotFoundError)
#: The standard variables of each cloud that a dotenv file may carry; exported when the environment lacks them.
CLOUD_VARIABLE_PREFIXES: Final = ("AWS_", "GOOGLE_", "AZURE_")


@dataclass(frozen=True)
class StorageUrl:
    """Where the shared state lives: ``<scheme>://<bucket>/<prefix>``, checked once."""

    scheme: str
    bucket: str
    prefix: str

    @classmethod
    def parse(cls, text: str) -> StorageUrl:
        parsed = urlparse(text.strip())
        scheme = parsed.scheme.lower()
        if scheme not in SCHEMES:
            raise ConfigError(
                f"{STORAGE_URL_VARIABLE}={text!r} is not an object-store URL",
                variable=STORAGE_URL_VARIABLE,
                hint="use s3://bucket/prefix (also R2, Supabase Storage, MinIO), gs://bucket/prefix or "
                "az://container/prefix; unset it to keep everything under MEMBERPULSE_DATA_DIR",
            )
        if "@" in parsed.netloc:
            raise ConfigError(
                f"{STORAGE_URL_VARIABLE} carries credentials (user:password@); they are not read from there",
                variable=STORAGE_URL_VARIABLE,
                hint="put them in the cloud's standard variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, …)",
            )
        if not parsed.netloc or parsed.query or parsed.fragment:
            raise ConfigError(
                f"{STORAGE_URL_VARIABLE} needs a bucket and a path, nothing else: {text!r}",
                variable=STORAGE_URL_VARIABLE,
                hint="credentials and endpoints go in the cloud's standard variables (AWS_ACCESS_KEY_ID, "
                "AWS_ENDPOINT_URL, …), never in the URL",
            )
        return cls(scheme=scheme, bucket=parsed.netloc, prefix=parsed.path.strip("/"))

    def __str__(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.prefix}".rstrip("/")


@dataclass(frozen=True)
class ObjectStoreConfig:
    """How patient the client is. A request that outlasts ``timeout_seconds`` is retried up to
    ``max_retries`` times within ``retry_budget_seconds`` in all, then fails as StorageUnavailable: a landing
    shipper or a run must never hang on a store that stopped answering."""

    connect_timeout_seconds: float = 5.0
    timeout_seconds: float = 30.0
    max_retries: int = 3
    retry_budget_seconds: float = 60.0


@dataclass(frozen=True)
class StoredObject:
    """An object's bytes and the version (ETag) they are: the version is what a conditional write names."""

    data: bytes
    version: str


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    version: str
    last_modified: datetime


@dataclass
class ObjectStore:
    """Keys are relative to the URL's prefix, ``/``-separated (``raw/landing/dt=…/…``)."""

    url: StorageUrl
    backend: _Backend
    requests: Counter[str] = field(default_factory=Counter)

    @classmethod
    def open(
        cls, url: StorageUrl, config: ObjectStoreConfig | None = None, *, env_files: tuple[Path, ...] = ()
    ) -> ObjectStore:
        """A client for ``url``; credentials and endpoint from the cloud's standard variables (for S3:
        ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, ``AWS_ALLOW_HTTP``)."""
        config = config or ObjectStoreConfig()
        export_cloud_variables(env_files)
        client: dict[str, Any] = {
            "connect_timeout": timedelta(seconds=config.connect_timeout_seconds),
            "timeout": timedelta(seconds=config.timeout_seconds),
        }
        if _truthy(os.environ.get("AWS_ALLOW_HTTP")):
            client["allow_http"] = True
        retry = {"max_retries": config.max_retries, "retry_timeout": timedelta(seconds=config.retry_budget_seconds)}
        try:
            backend = from_url(str(url), client_options=client, retry_config=retry)  # type: ignore[call-overload]
        except Exception as exc:  # obstore raises its own and pyo3's errors for a bad configuration
            raise ConfigError(
                f"cannot open {url}: {_first_line(exc)}",
                variable=STORAGE_URL_VARIABLE,
                hint=f"check the {SCHEMES[url.scheme]} credentials and endpoint variables",
            ) from None
        return cls(url=url, backend=backend)

    # --- reads -------------------------------------------------------------------------------------------

    def get(self, key: str) -> StoredObject | None:
        """The object, or None when there is none."""
        self.requests["get"] += 1
        with self._translated(key, absent_is_fine=True):
            try:
                result = obstore.get(self.backend, key)
                return StoredObject(data=bytes(result.bytes()), version=_version(result.meta))
            except _ABSENT:
                return None

    def get_if_changed(self, key: str, version: str) -> StoredObject | None:
        """The object when it is no longer ``version``, else None: a copy cached by its ETag is downloaded
        again only when it changed. An object that is gone raises FileNotFoundError, never "unchanged"."""
        self.requests["get"] += 1
        with self._translated(key, absent_is_fine=True):
            try:
                result = obstore.get(self.backend, key, options={"if_none_match": version})
            except obstore_errors.NotModifiedError:
                return None
            except _ABSENT:
                raise FileNotFoundError(f"{self.url}/{key}") from None
            return StoredObject(data=bytes(result.bytes()), version=_version(result.meta))

    def download(self, key: str, target: Path) -> str:
        """Stream the object into ``target`` (a file the caller then renames into place); returns its version."""
        self.requests["get"] += 1
        with self._translated(key, absent_is_fine=True):
            result = obstore.get(self.backend, key)
            with target.open("wb") as out:
                for chunk in result:
                    out.write(chunk)
            return _version(result.meta)

    def head(self, key: str) -> ObjectInfo | None:
        self.requests["head"] += 1
        with self._translated(key, absent_is_fine=True):
            try:
                return _info(obstore.head(self.backend, key))
            except _ABSENT:
                return None

    def list(self, prefix: str, *, after: str | None = None) -> Iterator[ObjectInfo]:
        """Every object under ``prefix`` in key order, only those whose key sorts after ``after`` when given (a
        reader that remembers the last key it saw lists only what is new). One request per page of 1,000."""
        with self._translated(prefix):
            pages = obstore.list(
                self.backend, prefix.rstrip("/") + "/" if prefix else None, offset=after, chunk_size=1000
            )
            answered = False
            for page in pages:
                self.requests["list"] += 1
                answered = True
                yield from (_info(meta) for meta in page)
            if not answered:  # an empty listing yields no page but is a request all the same
                self.requests["list"] += 1

    # --- writes ------------------------------------------------------------------------------------------

    def put(self, key: str, data: bytes | Path) -> str:
        """Write the whole object at once (a reader sees the old object or the new one, never a part)."""
        self.requests["put"] += 1
        with self._translated(key):
            return _version(obstore.put(self.backend, key, data))

    def put_new(self, key: str, data: bytes) -> str | None:
        """Create the object only if there is none; None when another writer got there first."""
        self.requests["put"] += 1
        with self._translated(key):
            try:
                return _version(obstore.put(self.backend, key, data, mode="create"))
            except obstore_errors.AlreadyExistsError:
                return None

    def replace(self, key: str, data: bytes, version: str) -> str | None:
        """Replace the object only if it is still ``version``; None when it changed in between (a lost race)."""
        self.requests["put"] += 1
        with self._translated(key, absent_is_fine=True):
            try:
                return _version(obstore.put(self.backend, key, data, mode={"e_tag": version}))
            except (obstore_errors.PreconditionError, *_ABSENT):
                return None

    def copy(self, source: str, target: str) -> None:
        """Copy an object within the store, server-side (no bytes through this host; S3 copies up to 5 GB)."""
        self.requests["copy"] += 1
        with self._translated(source):
            obstore.copy(self.backend, source, target, overwrite=True)

    def delete(self, key: str) -> None:
        self.requests["delete"] += 1
        with self._translated(key):
            obstore.delete(self.backend, key)

    # --- errors ------------------------------------------------------------------------------------------

    @contextmanager
    def _translated(self, key: str, *, absent_is_fine: bool = False) -> Iterator[None]:
        """What obstore raises, as memberpulse's two kinds of error naming the object (never a secret).
        ``absent_is_fine``: the caller catches FileNotFoundError and says what an absent object means."""
        where = f"{self.url}/{key}".rstrip("/")
        try:
            yield
        except (obstore_errors.NotModifiedError, obstore_errors.AlreadyExistsError, obstore_errors.PreconditionError):
            raise  # answers, not failures: the operation turns each into its result
        except _ABSENT:
            if absent_is_fine:
                raise
            raise ConfigError(  # a write or a listing: only the bucket can be missing
                f"the bucket of {where} does not exist (or is not visible to these credentials)",
                variable=STORAGE_URL_VARIABLE,
                hint="create the bucket, or correct MEMBERPULSE_STORAGE_URL and the endpoint variables",
            ) from None
        except (obstore_errors.PermissionDeniedError, obstore_errors.UnauthenticatedError) as exc:
            raise ConfigError(
                f"the object store refused access to {where}: {_first_line(exc)}",
                variable=STORAGE_URL_VARIABLE,
                hint=f"check the {SCHEMES[self.url.scheme]} credentials: they need read, write, list and delete",
            ) from None
        except OSError as exc:
            if isinstance(exc, obstore_errors.BaseError):
                raise self._unavailable(where, exc) from None
            raise StorageUnavailable(f"cannot write the local file for {where}: {exc.strerror or exc}") from None
        except Exception as exc:  # obstore's errors and the runtime's (timeouts, connection refused, 5xx)
            raise self._unavailable(where, exc) from None

    @staticmethod
    def _unavailable(where: str, exc: BaseException) -> StorageUnavailable:
        return StorageUnavailable(
            f"the object store did not answer for {where}: {_first_line(exc)}",
            hint="the run can be retried once the store is reachable",
        )


def export_cloud_variables(env_files: tuple[Path, ...]) -> None:
    """Each cloud's standard variables found in the dotenv files (``MEMBERPULSE_ENV_FILE``) go into the process
    environment where it does not set them already, as ``docker --env-file`` would: the clouds' client libraries,
    obstore's included, read only the environment."""
    from dotenv import dotenv_values  # pydantic-settings' own dotenv reader

    for path in env_files:
        if not path.is_file():
            continue
        for name, value in dotenv_values(path).items():
            if value is not None and name.upper().startswith(CLOUD_VARIABLE_PREFIXES):
                os.environ.setdefault(name, value)


def _version(meta: Any) -> str:
    return str(meta.get("e_tag") or meta.get("version") or "")


def _info(meta: Any) -> ObjectInfo:
    return ObjectInfo(
        key=str(meta["path"]), size=int(meta["size"]), version=_version(meta), last_modified=meta["last_modified"]
    )


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]
