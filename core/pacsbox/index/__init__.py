"""The index (SQLite by default; the schema and queries are portable to PostgreSQL)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .index import Index, SQLiteIndex

if TYPE_CHECKING:  # pragma: no cover
    from ..config import Config


def create_index(config: "Config") -> Index:
    """Open the index named by the configuration.

    ``IndexDirectory`` (default: ``StorageDirectory``) holds ``index.db``, a SQLite file.

    Parameters
    ----------
    config : Config

    Returns
    -------
    Index
    """
    return SQLiteIndex(config.path("IndexDirectory") / "index.db")


__all__ = ["Index", "SQLiteIndex", "create_index"]
