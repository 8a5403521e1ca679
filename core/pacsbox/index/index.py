"""The index: patients, studies, series and instances, with tags, metadata, attachments,
the change log, the exports log and global properties.

One narrow interface, :class:`Index`. :class:`SQLiteIndex` is the default (a WAL-mode file
in ``IndexDirectory``); the SQL is kept to the subset PostgreSQL also accepts, so that
another backend only supplies connections and placeholders.

Concurrency: reads use one connection per thread; writes are serialized by a lock and run
in ``BEGIN IMMEDIATE`` transactions, so concurrent first uploads of one new patient create
it once.
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from ..dicom.matching import normalize_identifier
from ..errors import ErrorCode, OrthancError
from .schema import SCHEMA_VERSION, schema_statements

log = logging.getLogger("pacsbox.index")


class ResourceGoneError(OrthancError):
    """A write to a resource that was deleted meanwhile (by another request or job).

    An :class:`~pacsbox.OrthancError` with code ``UnknownResource`` (HTTP 404), so that a
    REST route answers as for an unknown resource and a job fails with that code, as
    Orthanc does when a job's resource disappears under it.

    Parameters
    ----------
    public_id : str
        The Orthanc ID of the resource (or its row ID when unknown).
    """

    def __init__(self, public_id: str) -> None:
        super().__init__(ErrorCode.UNKNOWN_RESOURCE, f"Unknown resource: {public_id}")
        self.public_id = public_id

LEVEL_NAMES = ("Patient", "Study", "Series", "Instance")
LEVEL_OF = {"Patient": 0, "Study": 1, "Series": 2, "Instance": 3,
            "patients": 0, "studies": 1, "series": 2, "instances": 3}
PLURAL = ("patients", "studies", "series", "instances")


def now_stamp(t: float | None = None) -> str:
    """UTC time as ``YYYYMMDDTHHMMSS`` (Orthanc's ``LastUpdate``/``Date`` format)."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(t if t is not None else time.time()))


@dataclass
class Resource:
    """One row of the resources table.

    Attributes
    ----------
    internal_id : int
    level : int
        0 patient, 1 study, 2 series, 3 instance.
    public_id : str
        Orthanc ID.
    parent_internal : int or None
    main_tags : dict of str to str
    last_update : str
    is_stable : bool
    """

    internal_id: int
    level: int
    public_id: str
    parent_internal: int | None
    main_tags: dict[str, str]
    last_update: str
    is_stable: bool

    @property
    def level_name(self) -> str:
        """str: ``"Patient"``, ``"Study"``, ``"Series"`` or ``"Instance"``."""
        return LEVEL_NAMES[self.level]


@dataclass
class Attachment:
    """An attachment row: ``uuid`` in the storage area, sizes in bytes, MD5 hex digest."""

    content_type: int
    uuid: str
    compressed_size: int
    uncompressed_size: int
    md5: str | None = None


@dataclass
class NewInstance:
    """Everything the index needs to record a new instance.

    Attributes
    ----------
    ids : tuple of 4 str
        Orthanc IDs of patient, study, series, instance.
    main_tags : tuple of 4 dict
        Main tags of each level.
    identifiers : tuple of 4 dict
        Indexed identifier tags of each level (keyword → value), used by lookup/find.
    metadata : dict of str to str
        Instance metadata (``ReceptionDate``, ``Origin``, ``TransferSyntax``...).
    attachment : Attachment
        The DICOM file.
    index_in_series : int or None
    expected_instances : int or None
        Expected count of the series (for ``CompletedSeries``).
    """

    ids: tuple[str, str, str, str]
    main_tags: tuple[dict, dict, dict, dict]
    identifiers: tuple[dict, dict, dict, dict]
    metadata: dict[str, str]
    attachment: Attachment
    index_in_series: int | None = None
    expected_instances: int | None = None


@dataclass
class StoreOutcome:
    """Result of :meth:`Index.store_instance`.

    Attributes
    ----------
    status : str
        ``"Success"`` or ``"AlreadyStored"``.
    changes : list of dict
        Change-log entries written (``/changes`` shape).
    removed_attachments : list of Attachment
        Attachments of an overwritten instance, to delete from storage after commit.
    existing_attachment : Attachment or None
        The stored file when ``AlreadyStored``.
    recycled : list of str
        IDs of the patients deleted to make room (:class:`Quota`).
    """

    status: str
    changes: list[dict] = field(default_factory=list)
    removed_attachments: list[Attachment] = field(default_factory=list)
    existing_attachment: Attachment | None = None
    recycled: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Quota:
    """Storage limits (Orthanc's ``MaximumStorageSize``, ``MaximumPatientCount`` and, from
    1.11, ``MaximumStorageMode``).

    Attributes
    ----------
    max_bytes : int
        Total size of the attachments, bytes (0: no limit).
    max_patients : int
        Number of patients (0: no limit).
    reject : bool
        ``MaximumStorageMode: "Reject"``: refuse an instance that would exceed a limit,
        instead of recycling (deleting) the oldest unprotected patients.
    """

    max_bytes: int = 0
    max_patients: int = 0
    reject: bool = False

    @property
    def active(self) -> bool:
        """Whether any limit is set."""
        return bool(self.max_bytes or self.max_patients)

    @classmethod
    def from_config(cls, config: Any) -> "Quota":
        """The quota of an Orthanc-style configuration.

        Raises
        ------
        ValueError
            ``MaximumStorageMode`` is neither ``Recycle`` nor ``Reject``.
        """
        mode = str(config.get("MaximumStorageMode", "Recycle") or "Recycle")
        if mode not in ("Recycle", "Reject"):
            raise ValueError(f"MaximumStorageMode must be \"Recycle\" or \"Reject\", not {mode!r}")
        return cls(max_bytes=int(config.get("MaximumStorageSize", 0) or 0) * 1024 * 1024,
                   max_patients=int(config.get("MaximumPatientCount", 0) or 0), reject=mode == "Reject")


#: Identifiers ``/tools/lookup`` searches; each also gets a normalized row in ``identifiers``.
LOOKUP_TAGS = frozenset({"PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"})
#: ``tag`` prefix of the normalized rows (``~PatientID``).
NORMALIZED_PREFIX = "~"


def identifier_rows(resource_id: int, identifiers: dict[str, str]) -> list[tuple[int, str, str]]:
    """The ``identifiers`` rows of a new resource: each identifier as stored, plus a
    normalized row for those ``/tools/lookup`` searches (:data:`LOOKUP_TAGS`).

    Parameters
    ----------
    resource_id : int
        The resource's row ID.
    identifiers : dict of str to str
        Keyword to value (``{"PatientID": "id11111 "}``).

    Returns
    -------
    list of (int, str, str)
        ``(resource_id, tag, value)`` rows; normalized rows have the tag
        ``"~" + keyword`` and the value of :func:`~pacsbox.dicom.matching.normalize_identifier`.
    """
    rows = [(resource_id, tag, value) for tag, value in identifiers.items()]
    rows += [(resource_id, NORMALIZED_PREFIX + tag, normalize_identifier(value))
             for tag, value in identifiers.items() if tag in LOOKUP_TAGS]
    return rows


class Index:
    """Interface of the index (see :class:`SQLiteIndex`).

    Every change-log row it writes (``/changes``) is announced, once its transaction
    committed, to the listeners of :meth:`add_change_listener` (the app's
    ``change_recorded`` notification), so that no caller can forget to announce one.
    """

    dialect = "sqlite"
    #: Storage limits applied by :meth:`store_instance` (none by default; see ``create_index``).
    quota: Quota = Quota()
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
        def __init__(self, index: "Index"):
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

    def transaction(self) -> "Index._Tx":
        """A write transaction (context manager), serialized with every other write."""
        return Index._Tx(self)

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

    # ---- rows ------------------------------------------------------------------------
    @staticmethod
    def _resource(row) -> Resource:
        return Resource(row[0], row[1], row[2], row[3], json.loads(row[4]), row[5], bool(row[6]))

    _RES_COLS = "id, level, public_id, parent_id, main_tags, last_update, is_stable"

    def lookup(self, public_id: str, level: int | None = None) -> Resource | None:
        """Find a resource by Orthanc ID (optionally of one level)."""
        if level is None:
            row = self._one(f"SELECT {self._RES_COLS} FROM resources WHERE public_id = ?", (public_id,))
        else:
            row = self._one(f"SELECT {self._RES_COLS} FROM resources WHERE public_id = ? AND level = ?",
                            (public_id, level))
        return self._resource(row) if row else None

    def exists(self, public_id: str) -> bool:
        """Whether a resource with this Orthanc ID exists (one indexed lookup)."""
        return self._one("SELECT 1 FROM resources WHERE public_id = ?", (public_id,)) is not None

    def get_by_internal(self, internal_id: int) -> Resource | None:
        """Find a resource by its internal row ID."""
        row = self._one(f"SELECT {self._RES_COLS} FROM resources WHERE id = ?", (internal_id,))
        return self._resource(row) if row else None

    def get_many(self, internal_ids: Sequence[int]) -> list[Resource]:
        """Resources by internal IDs, in the order given (missing ones skipped)."""
        if not internal_ids:
            return []
        out: dict[int, Resource] = {}
        ids = list(internal_ids)
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for row in self._all(f"SELECT {self._RES_COLS} FROM resources WHERE id IN ({marks})", chunk):
                out[row[0]] = self._resource(row)
        return [out[i] for i in ids if i in out]

    def children(self, internal_id: int) -> list[Resource]:
        """Direct children, in insertion order."""
        return [self._resource(r) for r in self._all(
            f"SELECT {self._RES_COLS} FROM resources WHERE parent_id = ? ORDER BY id", (internal_id,))]

    def children_public_ids(self, internal_id: int) -> list[str]:
        """Orthanc IDs of the direct children, in insertion order."""
        return [r[0] for r in self._all("SELECT public_id FROM resources WHERE parent_id = ? ORDER BY id",
                                        (internal_id,))]

    def public_id_of(self, internal_id: int | None) -> str | None:
        """Orthanc ID of an internal row ID."""
        if internal_id is None:
            return None
        row = self._one("SELECT public_id FROM resources WHERE id = ?", (internal_id,))
        return row[0] if row else None

    def ancestors(self, res: Resource) -> list[Resource]:
        """The parent, grand-parent... of ``res`` (closest first)."""
        out = []
        cur = res
        while cur.parent_internal is not None:
            cur = self.get_by_internal(cur.parent_internal)
            if cur is None:
                break
            out.append(cur)
        return out

    def list_public_ids(self, level: int, since: int | None = None, limit: int | None = None) -> list[str]:
        """Orthanc IDs of one level, in insertion order, optionally paged."""
        sql = "SELECT public_id FROM resources WHERE level = ? ORDER BY id"
        args: list = [level]
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            args += [int(limit), int(since or 0)]
        elif since:
            sql += " LIMIT -1 OFFSET ?" if self.dialect == "sqlite" else " OFFSET ?"
            args += [int(since)]
        return [r[0] for r in self._all(sql, args)]

    def list_resources(self, level: int, since: int | None = None, limit: int | None = None) -> list[Resource]:
        """Resources of one level, in insertion order, optionally paged."""
        sql = f"SELECT {self._RES_COLS} FROM resources WHERE level = ? ORDER BY id"
        args: list = [level]
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            args += [int(limit), int(since or 0)]
        elif since:
            sql += " LIMIT -1 OFFSET ?" if self.dialect == "sqlite" else " OFFSET ?"
            args += [int(since)]
        return [self._resource(r) for r in self._all(sql, args)]

    def descendant_instances(self, internal_id: int, level: int) -> list[Resource]:
        """Instances below a resource (or the instance itself), in index order."""
        if level == 3:
            r = self.get_by_internal(internal_id)
            return [r] if r else []
        if level == 2:
            rows = self._all(f"SELECT {self._RES_COLS} FROM resources WHERE parent_id = ? ORDER BY id",
                             (internal_id,))
        elif level == 1:
            rows = self._all(
                f"SELECT i.id, i.level, i.public_id, i.parent_id, i.main_tags, i.last_update, i.is_stable "
                f"FROM resources s JOIN resources i ON i.parent_id = s.id WHERE s.parent_id = ? ORDER BY s.id, i.id",
                (internal_id,))
        else:
            rows = self._all(
                "SELECT i.id, i.level, i.public_id, i.parent_id, i.main_tags, i.last_update, i.is_stable "
                "FROM resources st JOIN resources s ON s.parent_id = st.id JOIN resources i ON i.parent_id = s.id "
                "WHERE st.parent_id = ? ORDER BY st.id, s.id, i.id", (internal_id,))
        return [self._resource(r) for r in rows]

    def descendant_ids(self, internal_id: int, level: int, target_level: int) -> list[int]:
        """Internal IDs of the descendants of ``internal_id`` at ``target_level``."""
        ids = [internal_id]
        for _lvl in range(level, target_level):
            if not ids:
                break
            nxt: list[int] = []
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                marks = ",".join("?" * len(chunk))
                nxt += [r[0] for r in self._all(
                    f"SELECT id FROM resources WHERE parent_id IN ({marks}) ORDER BY id", chunk)]
            ids = nxt
        return ids

    def series_instances_with_index(self, series_internal: int) -> list[tuple[str, str | None]]:
        """``(instance Orthanc ID, IndexInSeries or None)`` of a series' instances, in order."""
        return self._all("SELECT r.public_id, m.value FROM resources r LEFT JOIN metadata m "
                         "ON m.resource_id = r.id AND m.name = 'IndexInSeries' WHERE r.parent_id = ? ORDER BY r.id",
                         (series_internal,))

    def count_children(self, internal_id: int) -> int:
        """Number of direct children."""
        return self._one("SELECT COUNT(*) FROM resources WHERE parent_id = ?", (internal_id,))[0]

    # ---- metadata & attachments --------------------------------------------------------
    def metadata(self, internal_id: int) -> dict[str, str]:
        """All metadata of a resource, name → value (sorted by name)."""
        return dict(sorted(self._all("SELECT name, value FROM metadata WHERE resource_id = ?", (internal_id,))))

    def get_metadata(self, internal_id: int, name: str) -> str | None:
        """One metadata value, or None."""
        row = self._one("SELECT value FROM metadata WHERE resource_id = ? AND name = ?", (internal_id, name))
        return row[0] if row else None

    def set_metadata(self, internal_id: int, name: str, value: str, public_id: str | None = None,
                     level: int | None = None, log_change: bool = True) -> list[dict]:
        """Create or replace a metadata value; logs ``UpdatedMetadata`` when asked.

        Raises
        ------
        ResourceGoneError
            The resource no longer exists (checked in the write transaction).
        """
        changes = []
        with self.transaction() as tx:
            if tx.execute("SELECT 1 FROM resources WHERE id = ?", (internal_id,)).fetchone() is None:
                raise ResourceGoneError(public_id or str(internal_id))
            tx.execute("DELETE FROM metadata WHERE resource_id = ? AND name = ?", (internal_id, name))
            tx.execute("INSERT INTO metadata(resource_id, name, value) VALUES (?, ?, ?)", (internal_id, name, value))
            if log_change and public_id is not None and level is not None:
                changes.append(self._log_change(tx, "UpdatedMetadata", internal_id, public_id, level))
        return changes

    def delete_metadata(self, internal_id: int, name: str) -> bool:
        """Delete a metadata value; returns whether it existed."""
        with self.transaction() as tx:
            cur = tx.execute("DELETE FROM metadata WHERE resource_id = ? AND name = ?", (internal_id, name))
            return cur.rowcount > 0

    def set_main_tags(self, internal_id: int, main_tags: dict[str, str], identifiers: dict[str, str]) -> None:
        """Replace the main tags and the identifier rows of a resource (``reconstruct``)."""
        with self.transaction() as tx:
            tx.execute("UPDATE resources SET main_tags = ? WHERE id = ?",
                       (json.dumps(main_tags, ensure_ascii=False), internal_id))
            tx.execute("DELETE FROM identifiers WHERE resource_id = ?", (internal_id,))
            rows = identifier_rows(internal_id, identifiers)
            if rows:
                tx.execute("INSERT INTO identifiers(resource_id, tag, value) VALUES "
                           + ", ".join(["(?, ?, ?)"] * len(rows)), [x for r in rows for x in r])

    # ---- revisions (ETags of metadata and attachments) ------------------------------------
    def revision(self, internal_id: int, kind: int, name: str) -> int:
        """The revision of a metadata (``kind`` 0) or attachment (``kind`` 1, ``name`` its
        content type as text): 0 until it is replaced."""
        row = self._one("SELECT revision FROM revisions WHERE resource_id = ? AND kind = ? AND name = ?",
                        (internal_id, kind, name))
        return int(row[0]) if row else 0

    def set_revision(self, internal_id: int, kind: int, name: str, revision: int) -> None:
        """Record the revision of a metadata or attachment (0 removes the row)."""
        with self.transaction() as tx:
            tx.execute("DELETE FROM revisions WHERE resource_id = ? AND kind = ? AND name = ?",
                       (internal_id, kind, name))
            if revision and tx.execute("SELECT 1 FROM resources WHERE id = ?", (internal_id,)).fetchone():
                tx.execute("INSERT INTO revisions(resource_id, kind, name, revision) VALUES (?, ?, ?, ?)",
                           (internal_id, kind, name, revision))

    # ---- labels (Orthanc 1.12) --------------------------------------------------------------
    def labels(self, internal_id: int) -> list[str]:
        """The labels of a resource, sorted."""
        return [r[0] for r in self._all("SELECT label FROM labels WHERE resource_id = ? ORDER BY label",
                                        (internal_id,))]

    def add_label(self, internal_id: int, label: str, public_id: str | None = None) -> None:
        """Attach a label to a resource (nothing when it has it already).

        Raises
        ------
        ResourceGoneError
            The resource no longer exists (checked in the write transaction).
        """
        with self.transaction() as tx:
            if tx.execute("SELECT 1 FROM resources WHERE id = ?", (internal_id,)).fetchone() is None:
                raise ResourceGoneError(public_id or str(internal_id))
            if tx.execute("SELECT 1 FROM labels WHERE resource_id = ? AND label = ?",
                          (internal_id, label)).fetchone() is None:
                tx.execute("INSERT INTO labels(resource_id, label) VALUES (?, ?)", (internal_id, label))

    def remove_label(self, internal_id: int, label: str) -> bool:
        """Detach a label from a resource; returns whether it had it."""
        with self.transaction() as tx:
            cur = tx.execute("DELETE FROM labels WHERE resource_id = ? AND label = ?", (internal_id, label))
            return cur.rowcount > 0

    def all_labels(self) -> list[str]:
        """Every label in use, sorted (``GET /tools/labels``)."""
        return [r[0] for r in self._all("SELECT DISTINCT label FROM labels ORDER BY label")]

    def set_attachment(self, internal_id: int, att: Attachment, public_id: str,
                       level: int) -> tuple[Attachment | None, list[dict]] | None:
        """Create or replace one attachment of a resource; logs ``UpdatedAttachment``.

        Parameters
        ----------
        internal_id : int
            The resource's row ID.
        att : Attachment
            The new attachment (its file already in the storage area).
        public_id : str
            The resource's Orthanc ID (for the change log).
        level : int
            The resource's level, 0 patient ... 3 instance.

        Returns
        -------
        (Attachment or None, list of dict), or None
            The attachment replaced (its file is the caller's to remove after commit) and
            the change logged; None when the resource no longer exists (deleted meanwhile).
        """
        with self.transaction() as tx:
            if tx.execute("SELECT 1 FROM resources WHERE id = ?", (internal_id,)).fetchone() is None:
                return None
            old = self._take_attachment(tx, internal_id, att.content_type)
            tx.execute("INSERT INTO attachments(resource_id, content_type, uuid, compressed_size, uncompressed_size, "
                       "md5) VALUES (?, ?, ?, ?, ?, ?)", (internal_id, att.content_type, att.uuid,
                                                          att.compressed_size, att.uncompressed_size, att.md5))
            change = self._log_change(tx, "UpdatedAttachment", internal_id, public_id, level)
        return old, [change]

    @staticmethod
    def _take_attachment(tx, internal_id: int, content_type: int) -> Attachment | None:
        """Delete one attachment row inside ``tx`` and return it (None when absent)."""
        row = tx.execute("SELECT content_type, uuid, compressed_size, uncompressed_size, md5 FROM attachments "
                         "WHERE resource_id = ? AND content_type = ?", (internal_id, content_type)).fetchone()
        if row is None:
            return None
        tx.execute("DELETE FROM attachments WHERE resource_id = ? AND content_type = ?", (internal_id, content_type))
        return Attachment(*row)

    def delete_attachment(self, internal_id: int, content_type: int, public_id: str,
                          level: int) -> tuple[Attachment | None, list[dict]]:
        """Delete one attachment of a resource; logs ``UpdatedAttachment`` when it existed.

        Parameters
        ----------
        internal_id : int
            The resource's row ID.
        content_type : int
            The attachment's type (1024-65535 for user attachments).
        public_id : str
            The resource's Orthanc ID (for the change log).
        level : int
            The resource's level, 0 patient ... 3 instance.

        Returns
        -------
        (Attachment or None, list of dict)
            The attachment deleted (None when there was none) and the change logged.
        """
        with self.transaction() as tx:
            old = self._take_attachment(tx, internal_id, content_type)
            if old is None:
                return None, []
            change = self._log_change(tx, "UpdatedAttachment", internal_id, public_id, level)
        return old, [change]

    def attachments(self, internal_id: int) -> list[Attachment]:
        """Attachments of a resource, by content type."""
        return [Attachment(*r) for r in self._all(
            "SELECT content_type, uuid, compressed_size, uncompressed_size, md5 FROM attachments "
            "WHERE resource_id = ? ORDER BY content_type", (internal_id,))]

    def attachment(self, internal_id: int, content_type: int = 1) -> Attachment | None:
        """One attachment (1 = the DICOM file), or None."""
        row = self._one("SELECT content_type, uuid, compressed_size, uncompressed_size, md5 FROM attachments "
                        "WHERE resource_id = ? AND content_type = ?", (internal_id, content_type))
        return Attachment(*row) if row else None

    def attachment_by_public_id(self, public_id: str, content_type: int = 1) -> Attachment | None:
        """The attachment of an instance given by Orthanc ID (one query: the hot path of ``/file``)."""
        row = self._one("SELECT a.content_type, a.uuid, a.compressed_size, a.uncompressed_size, a.md5 "
                        "FROM resources r JOIN attachments a ON a.resource_id = r.id "
                        "WHERE r.public_id = ? AND a.content_type = ?", (public_id, content_type))
        return Attachment(*row) if row else None

    def instance_attachments(self, internal_ids: Sequence[int]) -> dict[int, Attachment]:
        """DICOM attachments of many instances, internal ID → Attachment."""
        out: dict[int, Attachment] = {}
        ids = list(internal_ids)
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for r in self._all("SELECT resource_id, content_type, uuid, compressed_size, uncompressed_size, md5 "
                               f"FROM attachments WHERE content_type = 1 AND resource_id IN ({marks})", chunk):
                out[r[0]] = Attachment(*r[1:])
        return out

    # ---- ingest ----------------------------------------------------------------------
    def store_instance(self, new: NewInstance, overwrite: bool = False) -> StoreOutcome:
        """Record a new instance and its missing parents in one transaction.

        Parameters
        ----------
        new : NewInstance
        overwrite : bool
            Orthanc ``OverwriteInstances``: replace an existing instance with the same ID.

        Returns
        -------
        StoreOutcome
            ``AlreadyStored`` leaves the index untouched unless ``overwrite``.
        """
        now = time.time()
        stamp = now_stamp(now)
        out = StoreOutcome("Success")
        with self.transaction() as tx:
            # the four levels' rows in one query (public IDs are unique across levels)
            known = dict(tx.execute("SELECT public_id, id FROM resources WHERE public_id IN (?, ?, ?, ?)",
                                    tuple(new.ids)).fetchall())
            row = (known[new.ids[3]],) if new.ids[3] in known else None
            if row is not None:
                att = tx.execute("SELECT content_type, uuid, compressed_size, uncompressed_size, md5 "
                                 "FROM attachments WHERE resource_id = ? AND content_type = 1", (row[0],)).fetchone()
                if not overwrite:
                    out.status = "AlreadyStored"
                    out.existing_attachment = Attachment(*att) if att else None
                    return out
                # as Orthanc: the old instance is deleted with its now empty parents (and their
                # change-log rows and attachments), then everything is created again from the
                # new file
                doomed = row[0]
                while doomed is not None:
                    out.removed_attachments += [Attachment(*a) for a in tx.execute(
                        "SELECT content_type, uuid, compressed_size, uncompressed_size, md5 FROM attachments "
                        "WHERE resource_id = ?", (doomed,)).fetchall()]
                    up = tx.execute("SELECT parent_id FROM resources WHERE id = ?", (doomed,)).fetchone()[0]
                    for table in ("identifiers", "metadata", "attachments", "changes"):
                        tx.execute(f"DELETE FROM {table} WHERE resource_id = ?", (doomed,))
                    tx.execute("DELETE FROM resources WHERE id = ?", (doomed,))
                    left = up is not None and tx.execute(
                        "SELECT 1 FROM resources WHERE parent_id = ? LIMIT 1", (up,)).fetchone()
                    doomed = None if left or up is None else up
                known = dict(tx.execute("SELECT public_id, id FROM resources WHERE public_id IN (?, ?, ?)",
                                        tuple(new.ids[:3])).fetchall())
            parent = None
            created: list[tuple[int, int, str]] = []
            internal = [0, 0, 0, 0]
            for level in range(4):
                pid = new.ids[level]
                rid = None if level == 3 else known.get(pid)
                if rid is None:
                    cur = tx.execute(
                        "INSERT INTO resources(level, public_id, parent_id, main_tags, last_update, last_activity, "
                        "is_stable) VALUES (?, ?, ?, ?, ?, ?, 0) RETURNING id",
                        (level, pid, parent, json.dumps(new.main_tags[level], ensure_ascii=False), stamp, now))
                    rid = cur.fetchone()[0]
                    created.append((level, rid, pid))
                    rows = identifier_rows(rid, new.identifiers[level])
                    if rows:
                        tx.execute("INSERT INTO identifiers(resource_id, tag, value) VALUES "
                                   + ", ".join(["(?, ?, ?)"] * len(rows)), [x for r in rows for x in r])
                internal[level] = rid
                parent = rid
            # touch the ancestors (stability, LastUpdate)
            tx.execute("UPDATE resources SET last_update = ?, last_activity = ?, is_stable = 0 WHERE id IN (?, ?, ?)",
                       (stamp, now, internal[0], internal[1], internal[2]))
            if self.quota.active:
                self._recycle(tx, internal[0], new.attachment.compressed_size, out)
            iid = internal[3]
            if new.metadata:
                tx.execute("INSERT INTO metadata(resource_id, name, value) VALUES "
                           + ", ".join(["(?, ?, ?)"] * len(new.metadata)),
                           [x for name, value in new.metadata.items() for x in (iid, name, value)])
            a = new.attachment
            tx.execute("INSERT INTO attachments(resource_id, content_type, uuid, compressed_size, uncompressed_size, md5)"
                       " VALUES (?, ?, ?, ?, ?, ?)",
                       (iid, a.content_type, a.uuid, a.compressed_size, a.uncompressed_size, a.md5))
            for level, rid, pid in sorted(created, key=lambda c: -c[0]):
                out.changes.append(self._log_change(tx, "New" + LEVEL_NAMES[level], rid, pid, level, stamp))
            if new.expected_instances:
                if self._series_complete(tx, internal[2], new.expected_instances):
                    out.changes.append(self._log_change(tx, "CompletedSeries", internal[2], new.ids[2], 2, stamp))
        return out

    def _recycling_needed(self, tx, size: int) -> bool:
        q = self.quota
        if q.max_bytes:
            total = tx.execute("SELECT COALESCE(SUM(compressed_size), 0) FROM attachments").fetchone()[0]
            if int(total) + size > q.max_bytes:
                return True
        if q.max_patients:
            if tx.execute("SELECT COUNT(*) FROM resources WHERE level = 0").fetchone()[0] > q.max_patients:
                return True
        return False

    def _recycle(self, tx, patient_to_keep: int, size: int, out: StoreOutcome) -> None:
        """Make room for a new instance of ``size`` bytes (Orthanc's ``ServerIndex::Recycle``).

        Called inside :meth:`store_instance`'s transaction once the new instance's rows
        exist (so a new patient counts) and before its attachment is recorded. The
        patients deleted are the unprotected ones least recently given an instance,
        never the new instance's own; their attachments join ``out.removed_attachments``.

        Raises
        ------
        OrthancError
            500 ``FULL_STORAGE`` (as Orthanc 1.10.1 answers it) when the instance is larger than ``MaximumStorageSize``,
            when ``MaximumStorageMode`` is ``Reject``, or when no patient is left to
            recycle (the transaction then rolls back: nothing is stored or deleted).
        """
        q = self.quota
        if q.max_bytes and size > q.max_bytes:
            raise OrthancError(ErrorCode.FULL_STORAGE, f"Cannot store an instance of size {size} bytes in a "
                                                       f"storage area limited to {q.max_bytes}",
                               http_status=500)
        if not self._recycling_needed(tx, size):
            return
        if q.reject:
            raise OrthancError(ErrorCode.FULL_STORAGE, "The storage is full (MaximumStorageMode is Reject)",
                               http_status=500)
        while True:
            row = tx.execute(
                "SELECT id, public_id FROM resources WHERE level = 0 AND id <> ? AND id NOT IN "
                "(SELECT resource_id FROM protected_patients) ORDER BY last_activity, id LIMIT 1",
                (patient_to_keep,)).fetchone()
            if row is None:
                raise OrthancError(ErrorCode.FULL_STORAGE, "Cannot recycle more patients", http_status=500)
            log.info("recycling patient %s", row[1])
            out.recycled.append(row[1])
            out.removed_attachments += self._delete_tree(tx, row[0])
            if not self._recycling_needed(tx, size):
                return

    def _delete_tree(self, tx, root: int) -> list[Attachment]:
        """Delete a resource and its descendants inside ``tx``; their attachments."""
        all_ids, ids = [root], [root]
        while ids:
            nxt: list[int] = []
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                marks = ",".join("?" * len(chunk))
                nxt += [r[0] for r in tx.execute(f"SELECT id FROM resources WHERE parent_id IN ({marks})",
                                                 chunk).fetchall()]
            all_ids += nxt
            ids = nxt
        atts: list[Attachment] = []
        for i in range(0, len(all_ids), 500):
            chunk = all_ids[i:i + 500]
            marks = ",".join("?" * len(chunk))
            atts += [Attachment(*r) for r in tx.execute(
                "SELECT content_type, uuid, compressed_size, uncompressed_size, md5 FROM attachments "
                f"WHERE resource_id IN ({marks})", chunk).fetchall()]
            for table in ("identifiers", "metadata", "attachments", "changes", "labels"):
                tx.execute(f"DELETE FROM {table} WHERE resource_id IN ({marks})", chunk)
        for i in range(len(all_ids) - 1, -1, -500):  # children first
            chunk = all_ids[max(0, i - 499):i + 1]
            marks = ",".join("?" * len(chunk))
            tx.execute(f"DELETE FROM resources WHERE id IN ({marks})", chunk)
        return atts

    # ---- protection -------------------------------------------------------------------------
    def is_protected(self, internal_id: int) -> bool:
        """Whether a patient is protected from recycling."""
        return self._one("SELECT 1 FROM protected_patients WHERE resource_id = ?", (internal_id,)) is not None

    def set_protected(self, internal_id: int, protected: bool) -> None:
        """Protect a patient from recycling, or not."""
        with self.transaction() as tx:
            tx.execute("DELETE FROM protected_patients WHERE resource_id = ?", (internal_id,))
            if protected:
                tx.execute("INSERT INTO protected_patients(resource_id) VALUES (?)", (internal_id,))

    def _series_complete(self, tx, series_internal: int, expected: int) -> bool:
        n = tx.execute("SELECT COUNT(*) FROM resources WHERE parent_id = ?", (series_internal,)).fetchone()[0]
        if n != expected:
            return False
        idx = [r[0] for r in tx.execute(
            "SELECT m.value FROM resources i JOIN metadata m ON m.resource_id = i.id AND m.name = 'IndexInSeries' "
            "WHERE i.parent_id = ?", (series_internal,)).fetchall()]
        try:
            return sorted(int(x) for x in idx) == list(range(1, expected + 1))
        except ValueError:
            return False

    def _log_change(self, tx, change_type: str, internal_id: int | None, public_id: str, level: int,
                    stamp: str | None = None) -> dict:
        stamp = stamp or now_stamp()
        cur = tx.execute("INSERT INTO changes(change_type, resource_id, public_id, level, date) "
                         "VALUES (?, ?, ?, ?, ?) RETURNING seq", (change_type, internal_id, public_id, level, stamp))
        seq = cur.fetchone()[0]
        change = {"ChangeType": change_type, "Date": stamp, "ID": public_id,
                  "Path": f"/{PLURAL[level]}/{public_id}", "ResourceType": LEVEL_NAMES[level], "Seq": seq}
        tx.changes.append(change)
        return change

    def log_change(self, change_type: str, res: Resource) -> dict:
        """Append a change-log entry for ``res`` and return it (``/changes`` shape).

        Raises
        ------
        ResourceGoneError
            ``res`` no longer exists (checked in the write transaction).
        """
        with self.transaction() as tx:
            if tx.execute("SELECT 1 FROM resources WHERE id = ?", (res.internal_id,)).fetchone() is None:
                raise ResourceGoneError(res.public_id)
            return self._log_change(tx, change_type, res.internal_id, res.public_id, res.level)

    # ---- delete ----------------------------------------------------------------------
    def referenced_uuids(self, uuids: Sequence[str]) -> set[str]:
        """The subset of ``uuids`` that attachment rows reference (crash recovery).

        Parameters
        ----------
        uuids : sequence of str

        Returns
        -------
        set of str
        """
        found: set[str] = set()
        for i in range(0, len(uuids), 500):
            chunk = list(uuids[i:i + 500])
            marks = ",".join("?" * len(chunk))
            found.update(r[0] for r in self._all(f"SELECT uuid FROM attachments WHERE uuid IN ({marks})", chunk))
        return found

    def delete_resource(self, res: Resource, before_commit=None) -> tuple[Resource | None, list[Attachment]] | None:
        """Delete a resource, its descendants and its ancestors left empty.

        The resource is found again by its Orthanc ID inside the write transaction, so a
        concurrent delete of the same resource (or a stale ``Resource``) never touches
        another one.

        Parameters
        ----------
        res : Resource
            The resource to delete (only ``public_id`` and ``level`` are used).
        before_commit : callable, optional
            Called with the list of attachments removed from the index, inside the
            transaction, before it commits (the storage's journal of pending files).

        Returns
        -------
        (Resource or None, list of Attachment), or None
            The closest remaining ancestor (``RemainingAncestor``) and every attachment
            removed from the index (to delete from storage after commit); None when the
            resource no longer exists.
        """
        with self.transaction() as tx:
            row = tx.execute("SELECT id, parent_id FROM resources WHERE public_id = ? AND level = ?",
                             (res.public_id, res.level)).fetchone()
            if row is None:
                return None
            ids = [row[0]]
            parent_id = row[1]
            all_ids = list(ids)
            for _ in range(res.level, 3):
                nxt = []
                for i in range(0, len(ids), 500):
                    chunk = ids[i:i + 500]
                    marks = ",".join("?" * len(chunk))
                    nxt += [r[0] for r in tx.execute(
                        f"SELECT id FROM resources WHERE parent_id IN ({marks})", chunk).fetchall()]
                ids = nxt
                all_ids += nxt
            remaining = None
            while parent_id is not None:
                n = tx.execute("SELECT COUNT(*) FROM resources WHERE parent_id = ?", (parent_id,)).fetchone()[0]
                prow = tx.execute(f"SELECT {self._RES_COLS} FROM resources WHERE id = ?", (parent_id,)).fetchone()
                if prow is None:
                    break
                if n > 1:  # siblings remain (the child itself is deleted below)
                    remaining = self._resource(prow)
                    break
                all_ids.append(parent_id)
                parent_id = prow[3]
            atts: list[Attachment] = []
            for i in range(0, len(all_ids), 500):
                chunk = all_ids[i:i + 500]
                marks = ",".join("?" * len(chunk))
                atts += [Attachment(*r) for r in tx.execute(
                    "SELECT content_type, uuid, compressed_size, uncompressed_size, md5 FROM attachments "
                    f"WHERE resource_id IN ({marks})", chunk).fetchall()]
            # dependent rows first, then the resources (foreign keys cascade what is left)
            for i in range(0, len(all_ids), 500):
                chunk = all_ids[i:i + 500]
                marks = ",".join("?" * len(chunk))
                for table in ("identifiers", "metadata", "attachments", "changes"):
                    tx.execute(f"DELETE FROM {table} WHERE resource_id IN ({marks})", chunk)
            for i in range(0, len(all_ids), 500):
                chunk = all_ids[i:i + 500]
                marks = ",".join("?" * len(chunk))
                tx.execute(f"DELETE FROM resources WHERE id IN ({marks})", chunk)
            if before_commit is not None:
                before_commit(atts)
        return remaining, atts

    # ---- statistics --------------------------------------------------------------------
    def statistics(self) -> dict[str, int]:
        """Counts per level and total sizes (bytes), cached until the next write."""
        c = self._stats_cache
        if c is not None and time.monotonic() - c[0] < 1.0:
            return c[1]
        counts = dict(self._all("SELECT level, COUNT(*) FROM resources GROUP BY level"))
        sizes = self._one("SELECT COALESCE(SUM(compressed_size), 0), COALESCE(SUM(uncompressed_size), 0) "
                          "FROM attachments")
        stats = {"CountPatients": counts.get(0, 0), "CountStudies": counts.get(1, 0),
                 "CountSeries": counts.get(2, 0), "CountInstances": counts.get(3, 0),
                 "TotalDiskSize": int(sizes[0]), "TotalUncompressedSize": int(sizes[1])}
        self._stats_cache = (time.monotonic(), stats)
        return stats

    def resource_statistics(self, res: Resource) -> dict[str, int]:
        """Counts of descendants per level and sizes (bytes) of a resource.

        ``DiskSize`` and ``UncompressedSize`` sum the attachments of the resource itself
        and of all its descendants (a user attachment on a patient or a study counts, as in
        Orthanc 1.10.1); the ``Dicom...`` sizes only the DICOM files.
        """
        out: dict[str, int] = {}
        ids = [res.internal_id]
        inst = list(ids)  # every resource whose attachments count
        names = {1: "CountStudies", 2: "CountSeries", 3: "CountInstances"}
        for lvl in range(res.level + 1, 4):
            ids = self.descendant_ids_from(ids)
            out[names[lvl]] = len(ids)
            inst += ids
        disk = unc = 0
        dicom_disk = dicom_unc = 0
        for i in range(0, len(inst), 500):
            chunk = inst[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for ct, cs, us in self._all(
                    "SELECT content_type, SUM(compressed_size), SUM(uncompressed_size) FROM attachments "
                    f"WHERE resource_id IN ({marks}) GROUP BY content_type", chunk):
                disk += cs
                unc += us
                if ct == 1:
                    dicom_disk += cs
                    dicom_unc += us
        if res.level == 3:
            out["CountInstances"] = 1
        out.update({"DiskSize": int(disk), "UncompressedSize": int(unc),
                    "DicomDiskSize": int(dicom_disk), "DicomUncompressedSize": int(dicom_unc)})
        return out

    def descendant_ids_from(self, ids: Sequence[int]) -> list[int]:
        """Internal IDs of the direct children of every ID in ``ids``."""
        out: list[int] = []
        ids = list(ids)
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            marks = ",".join("?" * len(chunk))
            out += [r[0] for r in self._all(f"SELECT id FROM resources WHERE parent_id IN ({marks}) ORDER BY id",
                                            chunk)]
        return out

    # ---- lookup & find ----------------------------------------------------------------
    def lookup_identifier(self, value: str) -> list[Resource]:
        """Resources whose PatientID / Study / Series / SOP Instance UID matches ``value``.

        As Orthanc's ``/tools/lookup``, both sides are compared normalized
        (:func:`~pacsbox.dicom.matching.normalize_identifier`: case, surrounding spaces,
        ``_``/``%`` and non-ASCII characters do not count), through the normalized rows
        kept in the ``identifiers`` table (one indexed query).

        Parameters
        ----------
        value : str
            The identifier to look up (an empty one finds the empty identifiers).

        Returns
        -------
        list of Resource
            Patients first, then studies, series and instances, in insertion order.
        """
        marks = ",".join("?" * len(LOOKUP_TAGS))
        rows = self._all(
            f"SELECT r.id, r.level, r.public_id, r.parent_id, r.main_tags, r.last_update, r.is_stable "
            f"FROM identifiers i JOIN resources r ON r.id = i.resource_id "
            f"WHERE i.tag IN ({marks}) AND i.value = ? ORDER BY r.level, r.id",
            [NORMALIZED_PREFIX + t for t in sorted(LOOKUP_TAGS)] + [normalize_identifier(value)])
        return [self._resource(r) for r in rows]

    def find_candidates(self, level: int, exact: dict[str, str] | None = None) -> Iterator[tuple[Resource, list[Resource]]]:
        """Resources of ``level`` with their ancestors' rows, for C-FIND style matching.

        Parameters
        ----------
        level : int
        exact : dict of str to str, optional
            Identifier constraints (``{"StudyInstanceUID": "1.2.3"}``) answered by the
            ``identifiers`` index; the identifier's level may be ``level`` or above.

        Yields
        ------
        (Resource, list of Resource)
            The resource, then its ancestors closest first; instances in index order,
            other levels by increasing Orthanc ID (the order of ``/tools/find`` answers
            in Orthanc 1.10.1).
        """
        cols = "r0.id, r0.level, r0.public_id, r0.parent_id, r0.main_tags, r0.last_update, r0.is_stable"
        joins = ""
        for k in range(1, level + 1):
            cols += (f", r{k}.id, r{k}.level, r{k}.public_id, r{k}.parent_id, r{k}.main_tags, r{k}.last_update, "
                     f"r{k}.is_stable")
            joins += f" JOIN resources r{k} ON r{k}.id = r{k - 1}.parent_id"
        where = "r0.level = ?"
        args: list = [level]
        for n, (tag, value) in enumerate((exact or {}).items()):
            tag_level = {"PatientID": 0, "StudyInstanceUID": 1, "AccessionNumber": 1,
                         "SeriesInstanceUID": 2, "SOPInstanceUID": 3}[tag]
            alias = f"r{level - tag_level}"
            where += (f" AND EXISTS (SELECT 1 FROM identifiers x{n} WHERE x{n}.resource_id = {alias}.id "
                      f"AND x{n}.tag = ? AND x{n}.value = ?)")
            args += [tag, value]
        # Orthanc 1.10.1 answers instances in index order, other levels by Orthanc ID
        sql = f"SELECT {cols} FROM resources r0{joins} WHERE {where} ORDER BY {'r0.id' if level == 3 else 'r0.public_id'}"
        for row in self._all(sql, args):
            res = [self._resource(row[i * 7:(i + 1) * 7]) for i in range(level + 1)]
            yield res[0], res[1:]

    # ---- changes & exports ---------------------------------------------------------------
    def get_changes(self, since: int = 0, limit: int = 100) -> tuple[list[dict], bool, int]:
        """``(changes, done, last)`` for ``GET /changes`` (entries with ``Seq > since``)."""
        rows = self._all("SELECT seq, change_type, public_id, level, date FROM changes WHERE seq > ? "
                         "ORDER BY seq LIMIT ?", (int(since), int(limit) + 1))
        done = len(rows) <= limit
        rows = rows[:limit]
        out = [{"ChangeType": r[1], "Date": r[4], "ID": r[2], "Path": f"/{PLURAL[r[3]]}/{r[2]}",
                "ResourceType": LEVEL_NAMES[r[3]], "Seq": r[0]} for r in rows]
        last = out[-1]["Seq"] if out else self.last_change_seq()
        return out, done, last

    def last_change(self) -> list[dict]:
        """The most recent change (list of 0 or 1 entries)."""
        rows = self._all("SELECT seq, change_type, public_id, level, date FROM changes ORDER BY seq DESC LIMIT 1")
        return [{"ChangeType": r[1], "Date": r[4], "ID": r[2], "Path": f"/{PLURAL[r[3]]}/{r[2]}",
                 "ResourceType": LEVEL_NAMES[r[3]], "Seq": r[0]} for r in rows]

    def last_change_seq(self) -> int:
        """The highest ``Seq`` ever written (0 when the log was never written)."""
        row = self._one("SELECT MAX(seq) FROM changes")
        if row and row[0] is not None:
            return int(row[0])
        if self.dialect == "sqlite":
            row = self._one("SELECT seq FROM sqlite_sequence WHERE name = 'changes'")
            return int(row[0]) if row else 0
        return 0

    def clear_changes(self) -> None:
        """``DELETE /changes``."""
        with self.transaction() as tx:
            tx.execute("DELETE FROM changes")

    def log_export(self, res: Resource, modality: str, identifiers: Sequence[str]) -> None:
        """Record an exported resource (``/exports``, option ``LogExportedResources``)."""
        ids = list(identifiers) + [""] * (4 - len(identifiers))
        with self.transaction() as tx:
            tx.execute("INSERT INTO exports(level, public_id, remote_modality, patient_id, study_instance_uid, "
                       "series_instance_uid, sop_instance_uid, date) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (res.level, res.public_id, modality, ids[0], ids[1], ids[2], ids[3], now_stamp()))

    def get_exports(self, since: int = 0, limit: int = 100, *, last: bool = False) -> tuple[list[dict], bool, int]:
        """``(exports, done, last)`` for ``GET /exports``; ``last=True``: only the most
        recent export (``GET /exports?last``)."""
        cols = ("SELECT seq, level, public_id, remote_modality, patient_id, study_instance_uid, "
                "series_instance_uid, sop_instance_uid, date FROM exports")
        if last:
            rows = self._all(cols + " ORDER BY seq DESC LIMIT 1")
        else:
            rows = self._all(cols + " WHERE seq > ? ORDER BY seq LIMIT ?", (int(since), int(limit) + 1))
        done = len(rows) <= limit
        rows = rows[:limit]
        out = []
        for r in rows:
            e = {"Date": r[8], "ID": r[2], "Path": f"/{PLURAL[r[1]]}/{r[2]}", "RemoteModality": r[3],
                 "ResourceType": LEVEL_NAMES[r[1]], "Seq": r[0], "PatientID": r[4]}
            if r[1] >= 1:
                e["StudyInstanceUID"] = r[5]
            if r[1] >= 2:
                e["SeriesInstanceUID"] = r[6]
            if r[1] >= 3:
                e["SOPInstanceUID"] = r[7]
            out.append(e)
        last = out[-1]["Seq"] if out else (self._one("SELECT MAX(seq) FROM exports")[0] or 0)
        return out, done, last

    def clear_exports(self) -> None:
        """``DELETE /exports``."""
        with self.transaction() as tx:
            tx.execute("DELETE FROM exports")

    # ---- global properties --------------------------------------------------------------
    def get_global(self, name: str, default: str | None = None) -> str | None:
        """A global property (``JobsRegistry``, ``AnonymizationSequence``...)."""
        row = self._one("SELECT value FROM global_properties WHERE name = ?", (name,))
        return row[0] if row else default

    def set_global(self, name: str, value: str) -> None:
        """Create or replace a global property."""
        with self.transaction() as tx:
            tx.execute("DELETE FROM global_properties WHERE name = ?", (name,))
            tx.execute("INSERT INTO global_properties(name, value) VALUES (?, ?)", (name, value))

    def increment_global(self, name: str) -> int:
        """Atomically increment an integer global property and return the new value."""
        with self.transaction() as tx:
            row = tx.execute("SELECT value FROM global_properties WHERE name = ?", (name,)).fetchone()
            n = int(row[0]) + 1 if row else 1
            tx.execute("DELETE FROM global_properties WHERE name = ?", (name,))
            tx.execute("INSERT INTO global_properties(name, value) VALUES (?, ?)", (name, str(n)))
            return n

    # ---- stability ----------------------------------------------------------------------
    def mark_stable(self, older_than: float) -> list[dict]:
        """Mark patients/studies/series idle since ``older_than`` (epoch s) stable; log ``Stable*``."""
        rows = self._all("SELECT id, level, public_id FROM resources WHERE is_stable = 0 AND level < 3 "
                         "AND last_activity < ? ORDER BY level DESC, id", (older_than,))
        if not rows:
            return []
        changes = []
        with self.transaction() as tx:
            for rid, level, pid in rows:
                cur = tx.execute("UPDATE resources SET is_stable = 1 WHERE id = ? AND is_stable = 0 "
                                 "AND last_activity < ?", (rid, older_than))
                if cur.rowcount:
                    changes.append(self._log_change(tx, "Stable" + LEVEL_NAMES[level], rid, pid, level))
        return changes


class SQLiteIndex(Index):
    """The default index: a SQLite database in WAL mode.

    Parameters
    ----------
    path : path-like or ``":memory:"``
        The database file (``<IndexDirectory>/index.db``).
    """

    dialect = "sqlite"

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__()
        self.path = str(path)
        self._lock_fd: int | None = None
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = _lock_exclusively(self.path + ".lock")
        try:
            self.create_schema()
        except BaseException:
            self._unlock()
            raise

    def close(self) -> None:
        """Close the connections and release the index's lock file."""
        super().close()
        self._unlock()

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def _connect(self):
        c = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=NORMAL")
        c.execute("PRAGMA foreign_keys=ON")
        c.execute("PRAGMA busy_timeout=30000")
        return c


class IndexInUseError(RuntimeError):
    """Another pacsbox process (or app) already uses this SQLite index."""


def _lock_exclusively(lock_path: str) -> int | None:
    """Hold an exclusive, non-blocking ``flock`` on ``lock_path`` for the life of the index.

    One SQLite index serves one server: a second ``pacsbox serve`` on the same folder would
    share the index but not the jobs registry or the storage clean-up. The lock is released
    when the index is closed or the process dies (SIGKILL included).

    Returns
    -------
    int or None
        The locked file descriptor (None where ``fcntl`` does not exist).

    Raises
    ------
    IndexInUseError
        The lock is held by another process or another open index.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return None
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise IndexInUseError(f"the index {lock_path[:-5]} is already in use by another pacsbox "
                              f"(lock file {lock_path})") from None
    return fd
