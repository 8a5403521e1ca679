"""The resources table of the index: patients, studies, series and instances.

Reads (lookup, children, descendants, paging, statistics, ``/tools/lookup`` and the
candidates of ``/tools/find``), the storing of a new instance with the storage limits
(recycling), protection, and deletion. A mixin of :class:`~pacsbox.index.index.Index`.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Iterator, Sequence

from ..dicom.matching import normalize_identifier
from ..errors import ErrorCode, OrthancError
from .models import (CONTENT_TYPE_DICOM, LEVEL_NAMES, LOOKUP_TAGS, NORMALIZED_PREFIX, Attachment, Level, NewInstance,
                     Quota, Resource, ResourceGoneError, StoreOutcome, identifier_rows, now_stamp)

log = logging.getLogger("pacsbox.index")



def _in_chunks(ids: list[int], size: int = 500):
    """``(chunk, "?,?,...")`` pairs covering ``ids``, for ``IN (...)`` clauses that stay
    under SQLite's limit of bound parameters."""
    for i in range(0, len(ids), size):
        chunk = ids[i:i + size]
        yield chunk, ",".join("?" * len(chunk))

class ResourceRows:
    """The rows of the resources table (mixin of :class:`~pacsbox.index.index.Index`)."""

    #: Storage limits applied by :meth:`store_instance` (none by default; see ``create_index``).
    quota: Quota = Quota()

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
        for chunk, marks in _in_chunks(ids):
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

    def _level_rows(self, columns: str, level: int, since: int | None, limit: int | None) -> list[tuple]:
        """``columns`` of the resources of one level, in insertion order, optionally paged."""
        sql = f"SELECT {columns} FROM resources WHERE level = ? ORDER BY id"
        args: list = [level]
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            args += [int(limit), int(since or 0)]
        elif since:
            sql += " LIMIT -1 OFFSET ?" if self.dialect == "sqlite" else " OFFSET ?"
            args += [int(since)]
        return self._all(sql, args)

    def list_public_ids(self, level: int, since: int | None = None, limit: int | None = None) -> list[str]:
        """Orthanc IDs of one level, in insertion order, optionally paged."""
        return [r[0] for r in self._level_rows("public_id", level, since, limit)]

    def list_resources(self, level: int, since: int | None = None, limit: int | None = None) -> list[Resource]:
        """Resources of one level, in insertion order, optionally paged."""
        return [self._resource(r) for r in self._level_rows(self._RES_COLS, level, since, limit)]

    def descendant_instances(self, internal_id: int, level: int) -> list[Resource]:
        """Instances below a resource (or the instance itself), in index order."""
        if level == Level.INSTANCE:
            r = self.get_by_internal(internal_id)
            return [r] if r else []
        if level == Level.SERIES:
            rows = self._all(f"SELECT {self._RES_COLS} FROM resources WHERE parent_id = ? ORDER BY id",
                             (internal_id,))
        elif level == Level.STUDY:
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
            for chunk, marks in _in_chunks(ids):
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

    # ---- ingest ----------------------------------------------------------------------
    def store_instance(self, new: NewInstance, overwrite: bool = False, before_commit=None) -> StoreOutcome:
        """Record a new instance and its missing parents in one transaction.

        Parameters
        ----------
        new : NewInstance
        overwrite : bool
            Orthanc ``OverwriteInstances``: replace an existing instance with the same ID.
        before_commit : callable, optional
            Called with ``out.removed_attachments`` (the files of an overwritten instance
            and of recycled patients) inside the transaction, before it commits, when
            there are any (the storage's journal of pending files).

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
                att = tx.execute("SELECT content_type, uuid, compressed_size, uncompressed_size, md5 FROM attachments "
                                 f"WHERE resource_id = ? AND content_type = {CONTENT_TYPE_DICOM}", (row[0],)).fetchone()
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
            for level in Level:
                pid = new.ids[level]
                rid = None if level == Level.INSTANCE else known.get(pid)
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
                    out.changes.append(self._log_change(tx, "CompletedSeries", internal[2], new.ids[2], Level.SERIES,
                                                          stamp))
            if before_commit is not None and out.removed_attachments:
                before_commit(out.removed_attachments)
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
        return self._remove_rows(tx, [root] + self._descendants(tx, [root]))

    @staticmethod
    def _descendants(tx, ids: list[int]) -> list[int]:
        """Row IDs of every descendant of ``ids``, level by level (inside ``tx``)."""
        out: list[int] = []
        while ids:
            nxt: list[int] = []
            for chunk, marks in _in_chunks(ids):
                nxt += [r[0] for r in tx.execute(f"SELECT id FROM resources WHERE parent_id IN ({marks})",
                                                 chunk).fetchall()]
            out += nxt
            ids = nxt
        return out

    @staticmethod
    def _remove_rows(tx, ids: list[int]) -> list[Attachment]:
        """Delete the resources ``ids`` and their dependent rows inside ``tx``; their
        attachments (whose files are the caller's to remove after the commit)."""
        atts: list[Attachment] = []
        for i in range(0, len(ids), 500):  # dependent rows first (foreign keys cascade the rest)
            chunk = ids[i:i + 500]
            marks = ",".join("?" * len(chunk))
            atts += [Attachment(*r) for r in tx.execute(
                "SELECT content_type, uuid, compressed_size, uncompressed_size, md5 FROM attachments "
                f"WHERE resource_id IN ({marks})", chunk).fetchall()]
            for table in ("identifiers", "metadata", "attachments", "changes", "labels"):
                tx.execute(f"DELETE FROM {table} WHERE resource_id IN ({marks})", chunk)
        for i in range(len(ids) - 1, -1, -500):  # children first
            chunk = ids[max(0, i - 499):i + 1]
            marks = ",".join("?" * len(chunk))
            tx.execute(f"DELETE FROM resources WHERE id IN ({marks})", chunk)
        return atts

    # ---- protection -------------------------------------------------------------------------
    def is_protected(self, internal_id: int) -> bool:
        """Whether a patient is protected from recycling."""
        return self._one("SELECT 1 FROM protected_patients WHERE resource_id = ?", (internal_id,)) is not None

    def set_protected(self, internal_id: int, protected: bool, public_id: str | None = None) -> None:
        """Protect a patient from recycling, or not.

        Raises
        ------
        ResourceGoneError
            Protecting a patient deleted meanwhile (checked in the same transaction).
        """
        with self.transaction() as tx:
            tx.execute("DELETE FROM protected_patients WHERE resource_id = ?", (internal_id,))
            if protected and tx.execute("SELECT 1 FROM resources WHERE id = ?", (internal_id,)).fetchone() is None:
                raise ResourceGoneError(public_id or str(internal_id))
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

    def delete_resource(self, res: Resource, before_commit=None,
                        deleted: list[tuple[int, str]] | None = None) -> tuple[Resource | None, list[Attachment]] | None:
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
        deleted : list, optional
            When given, filled with ``(level, Orthanc ID)`` of every resource removed:
            the resource, its descendants level by level, then the ancestors left empty.

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
            parent_id = row[1]
            all_ids = [row[0]] + self._descendants(tx, [row[0]])
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
            if deleted is not None:
                for chunk, marks in _in_chunks(all_ids):
                    found = {r[0]: (r[1], r[2]) for r in tx.execute(
                        f"SELECT id, level, public_id FROM resources WHERE id IN ({marks})", chunk).fetchall()}
                    deleted.extend(found[k] for k in chunk if k in found)
            atts = self._remove_rows(tx, all_ids)
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
        for lvl in range(res.level + 1, Level.INSTANCE + 1):
            ids = self.descendant_ids_from(ids)
            out[names[lvl]] = len(ids)
            inst += ids
        disk = unc = 0
        dicom_disk = dicom_unc = 0
        for chunk, marks in _in_chunks(inst):
            for ct, cs, us in self._all(
                    "SELECT content_type, SUM(compressed_size), SUM(uncompressed_size) FROM attachments "
                    f"WHERE resource_id IN ({marks}) GROUP BY content_type", chunk):
                disk += cs
                unc += us
                if ct == CONTENT_TYPE_DICOM:
                    dicom_disk += cs
                    dicom_unc += us
        if res.level == Level.INSTANCE:
            out["CountInstances"] = 1
        out.update({"DiskSize": int(disk), "UncompressedSize": int(unc),
                    "DicomDiskSize": int(dicom_disk), "DicomUncompressedSize": int(dicom_unc)})
        return out

    def descendant_ids_from(self, ids: Sequence[int]) -> list[int]:
        """Internal IDs of the direct children of every ID in ``ids``."""
        out: list[int] = []
        ids = list(ids)
        for chunk, marks in _in_chunks(ids):
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
        order = "r0.id" if level == Level.INSTANCE else "r0.public_id"
        sql = f"SELECT {cols} FROM resources r0{joins} WHERE {where} ORDER BY {order}"
        for row in self._all(sql, args):
            res = [self._resource(row[i * 7:(i + 1) * 7]) for i in range(level + 1)]
            yield res[0], res[1:]
