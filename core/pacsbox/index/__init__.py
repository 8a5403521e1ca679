"""The index (SQLite by default; the schema and queries are portable to PostgreSQL)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .index import Index, Quota, SQLiteIndex

if TYPE_CHECKING:  # pragma: no cover
    from ..config import Config


def create_index(config: "Config") -> Index:
    """Open the index named by the configuration.

    ``IndexDirectory`` (default: ``StorageDirectory``) holds ``index.db``, a SQLite file.
    ``MaximumStorageSize`` (MB), ``MaximumPatientCount`` and ``MaximumStorageMode``
    (``Recycle`` or ``Reject``) set the index's :class:`Quota`.

    Parameters
    ----------
    config : Config

    Returns
    -------
    Index
    """
    index = SQLiteIndex(config.path("IndexDirectory") / "index.db")
    index.quota = Quota.from_config(config)
    return index


__all__ = ["Index", "Quota", "SQLiteIndex", "create_index"]
