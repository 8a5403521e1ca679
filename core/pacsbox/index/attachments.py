"""Metadata, main tags, revisions, labels and attachments of the index's resources.
A mixin of :class:`~pacsbox.index.index.Index`.
"""
from __future__ import annotations

import json
from typing import Sequence

from .models import CONTENT_TYPE_DICOM, Attachment, ResourceGoneError, identifier_rows


class MetadataAndAttachments:
    """What hangs off a resource row (mixin of :class:`~pacsbox.index.index.Index`)."""

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

    def set_main_tags(self, internal_id: int, main_tags: dict[str, str], identifiers: dict[str, str],
                      public_id: str | None = None) -> None:
        """Replace the main tags and the identifier rows of a resource (``reconstruct``, a
        forced rename).

        Raises
        ------
        ResourceGoneError
            The resource was deleted meanwhile (checked in the same transaction).
        """
        with self.transaction() as tx:
            if tx.execute("UPDATE resources SET main_tags = ? WHERE id = ?",
                          (json.dumps(main_tags, ensure_ascii=False), internal_id)).rowcount == 0:
                raise ResourceGoneError(public_id or str(internal_id))
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
                       level: int, before_commit=None) -> tuple[Attachment | None, list[dict]] | None:
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
        before_commit : callable, optional
            Called with ``[replaced attachment]`` inside the transaction, before it
            commits, when one is replaced (the storage's journal of pending files).

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
            if old is not None and before_commit is not None:
                before_commit([old])
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
                          level: int, before_commit=None) -> tuple[Attachment | None, list[dict]]:
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
        before_commit : callable, optional
            Called with ``[deleted attachment]`` inside the transaction, before it commits
            (the storage's journal of pending files).

        Returns
        -------
        (Attachment or None, list of dict)
            The attachment deleted (None when there was none) and the change logged.
        """
        with self.transaction() as tx:
            old = self._take_attachment(tx, internal_id, content_type)
            if old is None:
                return None, []
            if before_commit is not None:
                before_commit([old])
            change = self._log_change(tx, "UpdatedAttachment", internal_id, public_id, level)
        return old, [change]

    def attachments(self, internal_id: int) -> list[Attachment]:
        """Attachments of a resource, by content type."""
        return [Attachment(*r) for r in self._all(
            "SELECT content_type, uuid, compressed_size, uncompressed_size, md5 FROM attachments "
            "WHERE resource_id = ? ORDER BY content_type", (internal_id,))]

    def attachment(self, internal_id: int, content_type: int = CONTENT_TYPE_DICOM) -> Attachment | None:
        """One attachment (1 = the DICOM file), or None."""
        row = self._one("SELECT content_type, uuid, compressed_size, uncompressed_size, md5 FROM attachments "
                        "WHERE resource_id = ? AND content_type = ?", (internal_id, content_type))
        return Attachment(*row) if row else None

    def attachment_by_public_id(self, public_id: str, content_type: int = CONTENT_TYPE_DICOM) -> Attachment | None:
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
                               f"FROM attachments WHERE content_type = {CONTENT_TYPE_DICOM} AND resource_id "
                               f"IN ({marks})", chunk):
                out[r[0]] = Attachment(*r[1:])
        return out
