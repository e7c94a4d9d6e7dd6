"""Object storage shared by several hosts (``MEMBERPULSE_STORAGE_URL``): the client every stage uses.

Public surface: :class:`StorageUrl`, :class:`ObjectStoreConfig`, :class:`ObjectStore` (with
:class:`StoredObject`, :class:`ObjectInfo`) and :func:`open_store`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from memberpulse.storage.object_store import (
    ObjectInfo,
    ObjectStore,
    ObjectStoreConfig,
    StorageUrl,
    StoredObject,
)

if TYPE_CHECKING:
    from memberpulse.settings import Settings

__all__ = ["ObjectInfo", "ObjectStore", "ObjectStoreConfig", "StorageUrl", "StoredObject", "open_store"]


def open_store(settings: Settings) -> ObjectStore | None:
    """The configured object store, or None when ``MEMBERPULSE_STORAGE_URL`` is unset (the local layout)."""
    from memberpulse.settings import env_files

    url = settings.storage
    if url is None:
        return None
    config = ObjectStoreConfig(timeout_seconds=settings.storage_timeout_seconds)
    return ObjectStore.open(url, config, env_files=env_files())
