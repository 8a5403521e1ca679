"""The index's connections and write transactions, whatever the SQL backend.

:class:`IndexConnection` holds one connection per thread for reads, serializes writes
behind one lock in ``BEGIN IMMEDIATE`` transactions, creates the schema, and announces
the change-log rows a transaction wrote once it committed (:meth:`~IndexConnection.add_change_listener`).
A backend supplies :meth:`~IndexConnection._connect` (and, for PostgreSQL, its
placeholder and statement execution); see :class:`pacsbox.index.index.SQLiteIndex`.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable, Sequence

from ..dicom.matching import normalize_identifier
from .models import LOOKUP_TAGS, NORMALIZED_PREFIX
from .schema import SCHEMA_VERSION, schema_statements

log = logging.getLogger("pacsbox.index")


class IndexConnection:
    """Connections, transactions, schema and change announcements of an index (the base of
    :class:`~pacsbox.index.index.Index`)."""

    dialect = "sqlite"
    placeholder = "?"

    # ---- connection management (backend-specific) -----------------------------------
    def _connect(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def __init__(self) -> None:
        self._local = threading.local()
        self._write_lock = threading.RLock()
        self._all_conns: list = []
        self._conns_lock = threading.Lock()
        self._stats_cache: tuple[float, dict] | None = None
        self._change_listeners: list[Callable[[dict], None]] = []

    def add_change_listener(self, listener: Callable[[dict], None]) -> None:
        """Call ``listener(change)`` for every change-log entry written from now on.

        Parameters
        ----------
        listener : callable
            Receives each entry (``/changes`` shape: ``ChangeType``, ``Date``, ``ID``,
            ``Path``, ``ResourceType``, ``Seq``) right after its transaction committed, in
            ``Seq`` order, on the writing thread and under the index's write lock: it must
            be quick and must not write to the index (the app's listener queues the
            ``change_recorded`` notification). Its exceptions are logged and ignored.
        """
        self._change_listeners.append(listener)

    def _announce(self, changes: list[dict]) -> None:
        for listener in self._change_listeners:
            for change in changes:
                try:
                    listener(change)
                except Exception:  # noqa: BLE001 - a listener never fails a committed write
                    log.exception("change listener failed on %s", change.get("ChangeType"))

    def _conn(self):
        c = getattr(self._local, "conn", None)
        if c is None:
            c = self._connect()
            self._local.conn = c
            with self._conns_lock:
                self._all_conns.append(c)
        return c

    def _q(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def _all(self, sql: str, args: Sequence = ()) -> list[tuple]:
        cur = self._conn().execute(self._q(sql), args) if self.dialect == "sqlite" else self._pg_exec(sql, args)
        return cur.fetchall()

    def _one(self, sql: str, args: Sequence = ()):
        rows = self._all(sql, args)
        return rows[0] if rows else None

    def _pg_exec(self, sql, args):  # pragma: no cover - overridden
        raise NotImplementedError

    class _Tx:
        def __init__(self, index: "IndexConnection"):
            self.index = index
            self.changes: list[dict] = []   # change-log rows written, announced at commit

        def __enter__(self):
            self.index._write_lock.acquire()
            try:
                self.conn = self.index._begin()
            except BaseException:
                self.index._write_lock.release()
                raise
            return self

        def execute(self, sql: str, args: Sequence = ()):
            return self.index._exec_in_tx(self.conn, sql, args)

        def __exit__(self, exc_type, exc, tb):
            try:
                if exc_type is None:
                    self.index._commit(self.conn)
                    if self.changes:
                        self.index._announce(self.changes)
                else:
                    self.index._rollback(self.conn)
            finally:
                self.index._write_lock.release()
            return False

    def transaction(self) -> "IndexConnection._Tx":
        """A write transaction (context manager), serialized with every other write."""
        return IndexConnection._Tx(self)

    def _begin(self):
        c = self._conn()
        c.execute("BEGIN IMMEDIATE")
        return c

    def _exec_in_tx(self, conn, sql, args):
        return conn.execute(self._q(sql), args)

    def _commit(self, conn):
        conn.execute("COMMIT")
        self._stats_cache = None

    def _rollback(self, conn):
        conn.execute("ROLLBACK")

    def create_schema(self) -> None:
        """Create the tables if missing and record the schema version.

        An index written before the normalized lookup rows existed (see
        :func:`identifier_rows`) gets them here, once, in the same transaction.
        """
        with self.transaction() as tx:
            for stmt in schema_statements(self.dialect):
                tx.execute(stmt)
            row = tx.execute("SELECT value FROM global_properties WHERE name = ?", ("SchemaVersion",)).fetchone()
            if row is None:
                tx.execute("INSERT INTO global_properties(name, value) VALUES (?, ?)",
                           ("SchemaVersion", str(SCHEMA_VERSION)))
            if tx.execute("SELECT value FROM global_properties WHERE name = ?",
                          ("NormalizedIdentifiers",)).fetchone() is None:
                marks = ",".join("?" * len(LOOKUP_TAGS))
                old_rows = tx.execute(f"SELECT resource_id, tag, value FROM identifiers WHERE tag IN ({marks})",
                                      sorted(LOOKUP_TAGS)).fetchall()
                for i in range(0, len(old_rows), 300):
                    rows = [(rid, NORMALIZED_PREFIX + tag, normalize_identifier(value))
                            for rid, tag, value in old_rows[i:i + 300]]
                    tx.execute("INSERT INTO identifiers(resource_id, tag, value) VALUES "
                               + ", ".join(["(?, ?, ?)"] * len(rows)), [x for r in rows for x in r])
                tx.execute("INSERT INTO global_properties(name, value) VALUES (?, ?)", ("NormalizedIdentifiers", "1"))

    def close(self) -> None:
        """Close every connection opened by this index."""
        with self._conns_lock:
            for c in self._all_conns:
                try:
                    c.close()
                except Exception:  # noqa: BLE001
                    pass
            self._all_conns.clear()
        self._local = threading.local()
