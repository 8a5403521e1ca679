"""The operations Lua callbacks record (``SendToModality``, ``SendToPeer``,
``ModifyInstance``, ``Delete``, ``CallSystem``), run after the callback on the engine's
operations thread, through the REST API (``/modalities/{id}/store``, ``/peers/{id}/store``,
``/instances/{id}/modify``, ``DELETE``), so that the Lua plugin never imports another
plugin.

The operations of the callbacks that follow one another closely are taken as one batch,
and the sends of a batch to one destination go in one store request, as Orthanc's Lua job
manager keeps its job and association open while instances keep arriving.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import tempfile
import time
from typing import Any

from pacsbox import OrthancError, call_rest_api

log = logging.getLogger("pacsbox.lua")

__all__ = ["OperationsRunner", "BATCH_GAP", "BATCH_AGE", "BATCH_AGE_MAX"]

#: Seconds without a new operation after which the operations thread sends what it has.
BATCH_GAP = 0.02
#: Seconds after which a first batch is sent even while operations keep coming.
BATCH_AGE = 0.25
#: The longest a batch may wait while operations keep coming without a pause.
BATCH_AGE_MAX = 1.0


class OperationsRunner:
    """The queue of recorded operations, and their execution in batches.

    Parameters
    ----------
    ctx : ServerContext
        The app's services (``ctx.app`` for the REST calls, ``ctx.ingest`` to store a
        modified instance).
    allow_os_io : bool
        ``LuaAllowOsAndIo``: ``CallSystem`` runs only when true.
    """

    def __init__(self, ctx: Any, allow_os_io: bool) -> None:
        self.ctx = ctx
        self.allow_os_io = allow_os_io
        self._queue: queue.Queue = queue.Queue()

    def submit(self, ops: list) -> None:
        """Queue the operations one callback recorded, in their order.

        Parameters
        ----------
        ops : list of dict
            The operation tables of ``toolbox.lua`` as JSON (``Operation``, ``Resource``...).
        """
        self._queue.put([_normalize_operation(op) for op in ops])

    def finish(self) -> None:
        """Let :meth:`run` return once what is queued now is done."""
        self._queue.put(None)

    def idle(self) -> bool:
        """Whether every queued operation is done.

        Returns
        -------
        bool
        """
        return self._queue.unfinished_tasks == 0

    def run(self) -> None:
        """Run the queued operations until :meth:`finish` (the operations thread's loop)."""
        age = BATCH_AGE
        while True:
            first = self._queue.get()
            batch = [first]
            # take what is queued, and what keeps coming (until a pause of BATCH_GAP or an age
            # of BATCH_AGE), to send it in as few associations as possible, as Orthanc's Lua
            # job manager keeps its job and association open while instances keep arriving
            # while the stream goes on, each batch may be twice as old as the previous one (up
            # to BATCH_AGE_MAX): fewer associations for a long study, a short first send
            end = time.monotonic() + age
            paused = False
            while first is not None:
                try:
                    batch.append(self._queue.get(timeout=max(0.0, min(BATCH_GAP, end - time.monotonic()))))
                except queue.Empty:
                    paused = time.monotonic() < end
                    break
                if batch[-1] is None or len(batch) >= 1000:
                    break
            age = BATCH_AGE if paused else min(BATCH_AGE_MAX, 2 * age)
            stop = batch[-1] is None
            jobs = [b for b in batch if b is not None]
            try:
                if jobs:
                    self._run_jobs(jobs)
            except Exception:  # noqa: BLE001
                log.exception("Lua: error while running the operations of a script")
            finally:
                for _ in batch:
                    self._queue.task_done()
            if stop:
                return

    def _run_jobs(self, jobs: list[list[dict]]) -> None:
        # first, the sends that start jobs, grouped by destination: one store request for all
        sent: dict[tuple, set[str]] = {}
        groups: dict[tuple, list[str]] = {}
        for ops in jobs:
            if ops and ops[0]["Operation"] in ("store-scu", "store-peer") and ops[0]["Resource"]:
                key = _send_key(ops[0])
                groups.setdefault(key, [])
                if ops[0]["Resource"] not in groups[key]:
                    groups[key].append(ops[0]["Resource"])
        for key, ids in groups.items():
            if len(ids) > 1 and self._send(key, ids):
                sent[key] = set(ids)
        for ops in jobs:
            self._run_job(ops, sent)

    def _run_job(self, ops: list[dict], sent: dict[tuple, set[str]]) -> None:
        previous: list[str] = []
        for i, op in enumerate(ops):
            resource = op["Resource"]
            inputs = [resource] if resource else (previous if i > 0 else [])
            kind = op["Operation"]
            if kind in ("store-scu", "store-peer"):
                key = _send_key(op)
                todo = [r for r in inputs if r not in sent.get(key, ())]
                if todo and not self._send(key, todo):
                    return  # a failed send stops the chain: nothing after it (e.g. Delete) runs
                previous = inputs
            elif kind == "delete":
                for r in inputs:
                    self._delete(r)
                previous = []
            elif kind == "modify":
                previous = [n for n in (self._modify(r, op) for r in inputs) if n]
                if inputs and not previous:
                    return
            elif kind == "call-system":
                for r in inputs:
                    self._call_system(r, op)
                previous = inputs
            else:
                log.error("Lua: unknown operation %s", kind)
                return

    def _send(self, key: tuple, ids: list[str]) -> bool:
        kind, target, local_aet = key
        if kind == "store-scu":
            uri, body = f"/modalities/{target}/store", {"Resources": ids, "Synchronous": True}
            if local_aet:
                body["LocalAet"] = local_aet
        else:
            uri, body = f"/peers/{target}/store", {"Resources": ids, "Synchronous": True}
        answer = call_rest_api(self.ctx.app, "POST", uri, json.dumps(body), origin="Lua")
        if answer.status != 200:
            log.error("Lua: cannot send %d resource(s) with %s: %s %s", len(ids), uri, answer.status,
                      answer.body[:500].decode("utf-8", "replace"))
            return False
        return True

    def _delete(self, resource: str) -> None:
        for level in ("instances", "series", "studies", "patients"):
            answer = call_rest_api(self.ctx.app, "DELETE", f"/{level}/{resource}", origin="Lua")
            if answer.status == 200:
                return
        log.error("Lua: cannot delete resource %s", resource)

    def _modify(self, resource: str, op: dict) -> str | None:
        body = {k: op[k] for k in ("Replace", "Remove", "RemovePrivateTags") if op.get(k) not in (None, {}, [])}
        if "RemovePrivateTags" in body:
            body["RemovePrivateTags"] = body["RemovePrivateTags"] not in (False, "false", "0", 0)
        body["Force"] = True
        modified = call_rest_api(self.ctx.app, "POST", f"/instances/{resource}/modify", json.dumps(body),
                                 origin="Lua")
        if modified.status != 200:
            log.error("Lua: cannot modify instance %s: %s", resource, modified.body[:500])
            return None
        try:  # stored as Orthanc's Lua modify operation does: origin Lua, ModifiedFrom the source
            result = self.ctx.ingest.store(modified.body, {"Origin": "Lua", "Metadata": {"ModifiedFrom": resource}})
        except OrthancError as e:
            log.error("Lua: cannot store the modified instance of %s: %s", resource, e)
            return None
        return result.answer().get("ID")

    def _call_system(self, resource: str, op: dict) -> None:
        if not self.allow_os_io:
            log.error("Lua: CallSystem() needs LuaAllowOsAndIo")
            return
        answer = call_rest_api(self.ctx.app, "GET", f"/instances/{resource}/file", origin="Lua")
        if answer.status != 200:
            log.error("Lua: cannot read instance %s for CallSystem()", resource)
            return
        with tempfile.NamedTemporaryFile(suffix=".dcm", delete=False) as f:
            f.write(answer.body)
        try:
            args = [str(a) for a in (op.get("Arguments") or [])]
            subprocess.run([str(op["Command"]), *args, f.name], check=False, timeout=3600)
        except (OSError, subprocess.SubprocessError) as e:
            log.error("Lua: CallSystem(%s) failed: %s", op.get("Command"), e)
        finally:
            os.unlink(f.name)


def _send_key(op: dict) -> tuple:
    if op["Operation"] == "store-scu":
        return ("store-scu", op.get("Modality") or "", op.get("LocalAet") or "")
    return ("store-peer", op.get("Peer") or "", "")


def _normalize_operation(op: Any) -> dict:
    op = dict(op) if isinstance(op, dict) else {}
    op.setdefault("Operation", "")
    op["Resource"] = str(op.get("Resource") or "")
    return op
