"""The change log (``/changes``), the exports log (``/exports``), global properties and
stability. A mixin of :class:`~pacsbox.index.index.Index`.

Every change row goes through :meth:`ChangeLog._log_change`, inside the transaction that
makes the change; the transaction announces it once committed.
"""
from __future__ import annotations

from typing import Sequence

from .models import LEVEL_NAMES, PLURAL, Level, Resource, ResourceGoneError, now_stamp


class ChangeLog:
    """Change and exports logs, global properties, stability (mixin of
    :class:`~pacsbox.index.index.Index`)."""

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
        rows = self._all(f"SELECT id, level, public_id FROM resources WHERE is_stable = 0 AND level < {Level.INSTANCE} "
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
