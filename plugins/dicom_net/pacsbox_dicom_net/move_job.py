"""Retrieve jobs: ``DicomMoveScu`` (C-MOVE SCU) and ``DicomGetScu`` (C-GET SCU).

One job retrieves a list of identifiers (one per C-FIND answer, or per resource of
``POST /modalities/{id}/move``) from one modality, over one association, in order
(Orthanc ``DicomMoveScuJob``; reference sections 3 and 9.6). pacsbox adds:

- **live progress**: each step handles the responses that arrived (a Pending response
  carries the remaining/completed/failed/warning sub-operation counts), so ``Progress``
  follows the sub-operations, not only the identifiers;
- **no silent success**: a final status other than Success, or any failed sub-operation,
  fails the job (``NETWORK_PROTOCOL``, with the counts and the status in
  ``ErrorDetails``) unless ``Permissive``; the counts and statuses are in the content
  either way (``InstancesCount``, ``FailedInstancesCount``, ``WarningInstancesCount``,
  ``Failures``). Orthanc 1.10.1 ends such a job in ``Success`` when the final status is a
  warning (0xB000);
- **interruption**: :meth:`RetrieveJob.interrupt` aborts the association, so a pause or a
  cancel takes effect at once even while the remote is silent;
- **C-GET** (Orthanc 1.12 ``RetrieveMethod``): the instances come back on the same
  association and are stored through ``ctx.ingest.store`` from the bytes as received.

After a restart the identifier in progress is retrieved again; instances already received
are ``AlreadyStored`` by the ingest path (no duplicate).

The routes choose the method and describe the identifiers with :mod:`.retrieve_request`;
C-GET stores the received data sets as Part-10 files made by :mod:`.part10`.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Mapping

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import (PatientRootQueryRetrieveInformationModelGet,
                                  PatientRootQueryRetrieveInformationModelMove,
                                  StudyRootQueryRetrieveInformationModelGet,
                                  StudyRootQueryRetrieveInformationModelMove)
from pynetdicom.status import QR_GET_SERVICE_CLASS_STATUS, QR_MOVE_SERVICE_CLASS_STATUS

from pacsbox import ErrorCode, Job, OrthancError, StepResult, orthanc_id

from .find_scu import run_find
from .modalities import Modality, aet_equal, parse_modality
from .part10 import part10
from .query_identifiers import (PATIENT_ID, SERIES_INSTANCE_UID, SOP_INSTANCE_UID, STUDY_INSTANCE_UID, answer_short,
                                default_charset, find_identifier, move_identifier, short_keys)
from .scu import open_association, scu_timeout
from .state import plugin_state

log = logging.getLogger(__name__)

#: Transfer syntaxes proposed for C-GET's storage contexts: uncompressed first, then the
#: usual compressed ones (the files are stored as received).
GET_TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.5"]


def status_text(code: int, get: bool = False) -> str:
    """A DIMSE status with its meaning.

    Parameters
    ----------
    code : int
        The status, e.g. ``0xA801``.
    get : bool
        Read it in the C-GET table instead of the C-MOVE one (PS3.4 C.4.2.1.5, C.4.3.1.4).

    Returns
    -------
    str
        ``0xA801 (Failure: Move destination unknown)``; just ``0x....`` when unknown.
    """
    table = QR_GET_SERVICE_CLASS_STATUS if get else QR_MOVE_SERVICE_CLASS_STATUS
    entry = table.get(code)
    if entry is None and 0xC000 <= code <= 0xCFFF:
        entry = table.get(0xC000)
    text = f"0x{code:04X}"
    return f"{text} ({entry[0]}: {entry[1]})" if entry else text


class RetrieveJob(Job):
    """Retrieve identifiers from a modality by C-MOVE (``DicomMoveScu``) or C-GET.

    Parameters
    ----------
    modality_name : str
        Symbolic name of the remote.
    modality : Modality
        Its configuration (kept in the job, as Orthanc does).
    items : list of dict
        One per C-MOVE/C-GET: ``{"Level": "Study", "Keys": {"gggg,eeee": value},
        "Query": {content item}}``.
    local_aet : str
        Calling AET.
    target_aet : str
        C-MOVE destination (unused by C-GET).
    timeout : float or None
        Seconds; None = the modality's / ``DicomScuTimeout``.
    permissive : bool
        Go on after a failed identifier (reference section 3.2).

    Attributes
    ----------
    position : int
        Index of the identifier being retrieved.
    results : list of dict
        One per finished identifier: ``Status`` (``0x0000``), ``Completed``, ``Failed``,
        ``Warning``, and ``FailedSOPInstanceUIDs`` when the remote listed them.
    current : dict
        Sub-operation counts of the request in progress (``Remaining``, ``Completed``,
        ``Failed``, ``Warning``).
    partial : bool
        Sub-operations of the identifier in progress completed (saved with the job). When
        such a job is run again after a restart or a pause and the instances come here
        (C-GET, or C-MOVE to this server's AET), only the instances not yet stored are
        retrieved: the identifier is expanded by C-FIND into its series and instances,
        those already in the index are counted as completed, and a series with none of
        them stored is retrieved whole, the others instance by instance.
    """

    type_name = "DicomMoveScu"
    method = "C-MOVE"

    def __init__(self, modality_name: str, modality: Modality, items: list[dict], *, local_aet: str,
                 target_aet: str, timeout: float | None = None, permissive: bool = False) -> None:
        super().__init__()
        self.modality_name = modality_name
        self.modality = modality
        self.items = items
        self.local_aet = local_aet
        self.target_aet = target_aet
        self.timeout = timeout
        self.permissive = permissive
        self.position = 0
        self.results: list[dict[str, Any]] = []
        self.current: dict[str, int] = {}
        self.requests: list[dict[str, Any]] = []   # C-MOVE/C-GET requests left for the current item
        self.request_total = 1
        self.acc: dict[str, Any] = {}               # counts of the current item's finished requests
        self.partial = False                       # the current item had completed sub-operations
        self.stored = 0   # C-GET: instances stored by this run
        self._assoc: Any = None
        self._responses: Any = None
        self._lock = threading.Lock()
        self._ctx: Any = None
        self._sent_at = 0.0

    # ---- the job contract ----------------------------------------------------------
    def public_content(self) -> dict[str, Any]:
        """``Description``, ``LocalAet``, ``RemoteAet``, ``Query`` (as Orthanc), then
        ``TargetAet`` (C-MOVE), ``RetrieveMethod``, ``InstancesCount``,
        ``FailedInstancesCount``, ``WarningInstancesCount`` (sub-operations) and
        ``Failures`` (one entry per identifier that did not end in plain Success)."""
        done = list(self.results)
        out: dict[str, Any] = {
            "Description": self.description, "LocalAet": self.local_aet, "RemoteAet": self.modality.aet,
            "Query": [it["Query"] for it in self.items], "RetrieveMethod": self.method,
            "InstancesCount": sum(r["Completed"] for r in done),
            "FailedInstancesCount": sum(r["Failed"] for r in done),
            "WarningInstancesCount": sum(r["Warning"] for r in done),
        }
        if self.method == "C-MOVE":
            out["TargetAet"] = self.target_aet
        failures = [dict(r, Index=i) for i, r in enumerate(done) if r["Status"] != "0x0000" or r["Failed"]]
        if failures:
            out["Failures"] = failures
        return out

    def progress(self) -> float:
        """Identifiers done, plus the done fraction of the sub-operations of the current
        one (from its last Pending response), in percent."""
        n = len(self.items)
        if n == 0:
            return 100.0 if self.position else 0.0
        frac = 0.0
        cur = self.current
        if self.position < n:
            if cur:
                done = cur.get("Completed", 0) + cur.get("Failed", 0) + cur.get("Warning", 0)
                total = done + cur.get("Remaining", 0)
                frac = done / total if total else 0.0
            total_requests = max(1, self.request_total)
            finished = max(0, total_requests - len(self.requests)) if self.requests else 0
            frac = (finished + frac) / total_requests
        return 100.0 * (min(self.position, n) + frac) / n

    def reset(self) -> None:
        """``resubmit``: start again from the first identifier."""
        self.position = 0
        self.results = []
        self.current = {}
        self.requests = []
        self.request_total = 1
        self.acc = {}
        self.partial = False

    def start(self, ctx: Any) -> None:
        """Remember the context (C-GET stores through it)."""
        self._ctx = ctx

    def step(self, ctx: Any) -> StepResult:
        """Handle the next response (one step per response, so that ``Progress`` follows
        the Pending counts), opening the association and sending the next request when
        needed."""
        self._ctx = ctx
        if self.position >= len(self.items):
            self._release()
            return StepResult.SUCCESS
        if self._responses is None and not self._send(ctx):
            outcome = self._finish_item(None)
        else:
            outcome = self._read_one()
        return StepResult.CONTINUE if outcome is None else outcome

    def stop(self, reason: str) -> None:
        """Release the association (abort it unless the job succeeded)."""
        if reason in ("Success",):
            self._release()
        else:
            self._abort()
        self._responses = None
        self.current = {}
        if reason != "Success":
            self.requests = []      # rebuilt (refined when partial) at the next run

    def interrupt(self) -> None:
        """Abort the association so that a blocked step returns at once."""
        self._abort()

    def serialize(self) -> dict[str, Any]:
        """The job's parameters and progress (the identifier in progress restarts)."""
        return {"Modality": self.modality_name, "ModalityConfig": self.modality.to_json(), "Items": self.items,
                "LocalAet": self.local_aet, "TargetAet": self.target_aet, "Timeout": self.timeout,
                "Permissive": self.permissive, "Position": self.position, "Results": self.results,
                "Description": self.description, "Partial": self.partial or bool(self.current.get("Completed")),
                "Accumulated": self.acc}

    @classmethod
    def from_serialized(cls, data: Mapping[str, Any], ctx: Any) -> "RetrieveJob":
        """Rebuild from :meth:`serialize`'s output."""
        job = cls(data["Modality"], parse_modality(data["Modality"], dict(data["ModalityConfig"])),
                  list(data["Items"]), local_aet=data["LocalAet"], target_aet=data["TargetAet"],
                  timeout=data.get("Timeout"), permissive=bool(data.get("Permissive")))
        job.position = int(data.get("Position", 0))
        job.results = list(data.get("Results", []))
        job.description = data.get("Description", "REST API")
        job.partial = bool(data.get("Partial", False))
        job.acc = dict(data.get("Accumulated", {}))
        return job

    # ---- mechanics -----------------------------------------------------------------
    def _models(self) -> tuple[str, str]:
        if self.method == "C-GET":
            return PatientRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelGet
        return PatientRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelMove

    def _open(self, ctx: Any) -> Any:
        patient, study = self._models()
        contexts = [build_context(patient), build_context(study)]
        return open_association(ctx, self.modality, contexts, local_aet=self.local_aet, timeout=self.timeout)

    def _lands_here(self, ctx: Any) -> bool:
        """Whether the retrieved instances are stored by this server."""
        if self.method == "C-GET":
            return True
        state = plugin_state(ctx)
        return aet_equal(self.target_aet, state.options["DicomAet"], state.options["StrictAetComparison"])

    def _plan(self, ctx: Any) -> None:
        """The requests of the current item (refined after an interruption, see
        :attr:`partial`)."""
        item = self.items[self.position]
        self.requests = [{"Level": item["Level"], "Keys": dict(item["Keys"])}]
        refined = False
        if self.partial and self._lands_here(ctx):
            try:
                requests, present = self._missing(ctx, item)
                # nothing of it stored, or a remote that lists nothing below the level:
                # the identifier is retrieved whole
                if present:
                    self.requests, refined = requests, True
            except OrthancError as e:
                log.warning("retrieve from %s: cannot list what is left of an interrupted identifier, retrieving it "
                            "whole: %s", self.modality.aet, e)
        if refined:     # what is stored counts as completed, whichever run brought it
            self.acc["Completed"] = present
        else:           # the item starts again from scratch
            self.acc = {}
        self.partial = False
        self.request_total = len(self.requests)

    def _missing(self, ctx: Any, item: Mapping[str, Any]) -> tuple[list[dict[str, Any]], int]:
        """The requests retrieving what of ``item`` is not stored yet, and how many of its
        instances are (C-FIND at the series and image levels)."""
        def _keys_of(level: str, fields: Mapping[int, str]) -> list[dict[int, Any]]:
            ident = find_identifier(level, fields, normalize=False, manufacturer=self.modality.manufacturer,
                                    charset=default_charset(ctx))
            return [answer_short(a) for a in run_find(ctx, self.modality, ident, local_aet=self.local_aet,
                                                      timeout=self.timeout)]

        level = item["Level"]
        keys = {int(k.replace(",", ""), 16): v for k, v in item["Keys"].items()}
        if level == "Instance":
            series = [(keys.get(STUDY_INSTANCE_UID, ""), keys.get(SERIES_INSTANCE_UID, ""))]
        elif level == "Series":
            series = [(keys.get(STUDY_INSTANCE_UID, ""), keys.get(SERIES_INSTANCE_UID, ""))]
        else:
            studies = ([keys[STUDY_INSTANCE_UID]] if level == "Study" else
                       [a.get(STUDY_INSTANCE_UID) for a in _keys_of("Study", {PATIENT_ID: keys.get(PATIENT_ID, "")})])
            series = [(st, a.get(SERIES_INSTANCE_UID)) for st in studies if isinstance(st, str)
                      for a in _keys_of("Series", {STUDY_INSTANCE_UID: st})]
        requests: list[dict[str, Any]] = []
        present = 0
        for study, ser in series:
            if not isinstance(ser, str):
                continue
            fields = {STUDY_INSTANCE_UID: study, SERIES_INSTANCE_UID: ser}
            if level == "Instance":
                fields[SOP_INSTANCE_UID] = keys.get(SOP_INSTANCE_UID, "")
            missing = []
            instances = _keys_of("Instance", fields)
            for a in instances:
                sop = a.get(SOP_INSTANCE_UID)
                if not isinstance(sop, str):
                    continue
                pid = a.get(PATIENT_ID) if isinstance(a.get(PATIENT_ID), str) else ""
                if ctx.index.lookup(orthanc_id(pid.strip(), study.strip(), ser.strip(), sop.strip()), 3) is None:
                    missing.append(sop)
                else:
                    present += 1
            if len(missing) == len(instances) and level != "Instance":
                requests.append({"Level": "Series", "Keys": short_keys({STUDY_INSTANCE_UID: study,
                                                                       SERIES_INSTANCE_UID: ser})})
            else:
                requests += [{"Level": "Instance", "Keys": short_keys({STUDY_INSTANCE_UID: study,
                                                                      SERIES_INSTANCE_UID: ser,
                                                                      SOP_INSTANCE_UID: sop})} for sop in missing]
        return requests, present

    def _send(self, ctx: Any) -> bool:
        """Send the next request of the current item; False when nothing is left to send."""
        if not self.requests:
            self._plan(ctx)
            if not self.requests:
                return False
        with self._lock:
            assoc = self._assoc
        if assoc is None or not assoc.is_established:
            assoc = self._open(ctx)
            with self._lock:
                self._assoc = assoc
            if self.stop_requested:   # interrupted while associating
                self._abort()
        request = self.requests[0]
        fields = {int(k.replace(",", ""), 16): v for k, v in request["Keys"].items()}
        ident = move_identifier(request["Level"], fields, self.modality.manufacturer, default_charset(ctx))
        patient, study = self._models()
        model = patient if request["Level"] == "Patient" else study
        self.current = {}
        self._sent_at = time.monotonic()
        if self.method == "C-GET":
            self._responses = assoc.send_c_get(ident, model)
        else:
            self._responses = assoc.send_c_move(ident, self.target_aet, model)
        return True

    def _read_one(self) -> StepResult | None:
        """Read one response; returns a final StepResult, or None to go on."""
        try:
            status, ident = next(self._responses)
        except StopIteration:
            status, ident = Dataset(), None
        code = int(status.Status) if status is not None and "Status" in status else None
        if code is not None:
            self._sent_at = time.monotonic()    # the DIMSE timeout counts from the last message
        counts = {name: int(status.get(f"NumberOf{name}Suboperations", 0) or 0) if status is not None else 0
                  for name in ("Remaining", "Completed", "Failed", "Warning")}
        if code in (0xFF00, 0xFF01):
            self.current = counts
            if counts["Completed"]:
                self.partial = True
            return None
        self._responses = None
        if code is None:
            self._abort()
            if self.stop_requested:
                raise OrthancError(ErrorCode.NETWORK_PROTOCOL, "interrupted")
            seconds = scu_timeout(self._ctx, self.modality, self.timeout) if self._ctx is not None else 0
            if seconds and time.monotonic() - self._sent_at >= 0.9 * seconds:   # Orthanc 1.10.1's wording
                reason = "DIMSE No data available (timeout in non-blocking mode)"
            else:
                reason = "the association was aborted by the remote"
            raise OrthancError(ErrorCode.NETWORK_PROTOCOL,
                               f'DicomAssociation - {self.method} to AET "{self.modality.aet}": {reason}')
        # The final response's counts are authoritative when given (PS3.4 C.4.2.1.6).
        if not any(counts.values()) and self.current:
            counts = dict(self.current, Remaining=0)
        acc = self.acc
        for name in ("Completed", "Failed", "Warning"):
            acc[name] = acc.get(name, 0) + counts[name]
        if code != 0x0000 and acc.get("Status", "0x0000") == "0x0000":
            acc["Status"] = f"0x{code:04X}"
        failed_uids = ident.get("FailedSOPInstanceUIDList") if ident is not None else None
        if failed_uids:
            acc.setdefault("FailedSOPInstanceUIDs", []).extend(
                [str(u) for u in failed_uids] if not isinstance(failed_uids, str) else [failed_uids])
        self.current = {}
        if self.requests:
            self.requests.pop(0)
        is_get = self.method == "C-GET"
        if code == 0x0000 and counts["Failed"] == 0:
            return None if self.requests else self._finish_item(None)
        if code == 0x0000 or 0xB000 <= code <= 0xBFFF:
            details = (f'{self.method} SCU to AET "{self.modality.aet}": {counts["Failed"]} sub-operation(s) failed, '
                       f'{counts["Completed"]} completed, {counts["Warning"]} with warnings '
                       f'(DIMSE status {status_text(code, is_get)})')
        else:
            details = (f'{self.method} SCU to AET "{self.modality.aet}" has failed with DIMSE status '
                       f'{status_text(code, is_get)}')
        if self.permissive:
            log.warning("%s (ignored: permissive job)", details)
            return None if self.requests else self._finish_item(None)
        self.requests = []
        return self._finish_item(details)

    def _finish_item(self, failure: str | None) -> StepResult | None:
        """Record the current item's result and move to the next one; with ``failure``
        (details), fail the job."""
        acc = self.acc
        result: dict[str, Any] = {"Status": acc.get("Status", "0x0000"), "Completed": acc.get("Completed", 0),
                                  "Failed": acc.get("Failed", 0), "Warning": acc.get("Warning", 0)}
        if acc.get("FailedSOPInstanceUIDs"):
            result["FailedSOPInstanceUIDs"] = acc["FailedSOPInstanceUIDs"]
        self.results.append(result)
        self.acc = {}
        self.partial = False
        self.requests = []
        self.request_total = 1
        self.position += 1
        if failure is None:
            return None
        self.error_code = int(ErrorCode.NETWORK_PROTOCOL)
        self.error_details = failure
        self._release()
        return StepResult.FAILURE

    def _release(self) -> None:
        with self._lock:
            assoc, self._assoc = self._assoc, None
        if assoc is not None:
            try:
                if assoc.is_established:
                    assoc.release()
            except Exception:  # noqa: BLE001 - closing a broken association
                assoc.abort()

    def _abort(self) -> None:
        with self._lock:
            assoc, self._assoc = self._assoc, None
        if assoc is not None:
            try:
                assoc.abort()
            except Exception:  # noqa: BLE001
                log.debug("abort failed", exc_info=True)
            # pynetdicom waits for the next response on a queue, up to the DIMSE timeout,
            # even once aborted: an empty item wakes the waiting step at once.
            queue = getattr(getattr(assoc, "dimse", None), "msg_queue", None)
            if queue is not None:
                queue.put((None, None))


class DicomMoveScuJob(RetrieveJob):
    """C-MOVE SCU job (``DicomMoveScu``): the remote sends to ``target_aet`` on
    associations of its own."""

    type_name = "DicomMoveScu"
    method = "C-MOVE"


class DicomGetScuJob(RetrieveJob):
    """C-GET SCU job (``DicomGetScu``, Orthanc 1.12): the remote sends the instances back
    on the same association; each one is stored with ``ctx.ingest.store`` from the bytes
    as received (never decoded and re-encoded), with origin ``DicomProtocol``."""

    type_name = "DicomGetScu"
    method = "C-GET"

    def _open(self, ctx: Any) -> Any:
        from pynetdicom import StoragePresentationContexts
        patient, study = self._models()
        contexts = [build_context(patient), build_context(study)]
        roles = []
        for cx in StoragePresentationContexts[:126]:
            contexts.append(build_context(cx.abstract_syntax, GET_TRANSFER_SYNTAXES))
            role = SCP_SCU_RoleSelectionNegotiation()
            role.sop_class_uid = cx.abstract_syntax
            role.scu_role = False
            role.scp_role = True
            roles.append(role)
        return open_association(ctx, self.modality, contexts, local_aet=self.local_aet, timeout=self.timeout,
                                ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, self._on_store)])

    def _on_store(self, event: Any) -> int:
        """C-STORE sub-operation of the C-GET: store the instance as received."""
        ctx = self._ctx
        try:
            req = event.request
            data = part10(req.DataSet.getvalue(), str(req.AffectedSOPClassUID), str(req.AffectedSOPInstanceUID),
                          str(event.context.transfer_syntax), self.modality.aet)
            origin = {"Origin": "DicomProtocol", "RemoteAET": self.modality.aet,
                      "CalledAET": event.assoc.requestor.ae_title, "RemoteIP": event.assoc.acceptor.address}
            ctx.ingest.store(data, origin)
        except OrthancError as e:
            log.warning("C-GET from %s: an instance was refused: %s", self.modality.aet, e)
            return 0xA900 if e.code == ErrorCode.BAD_FILE_FORMAT else 0xC000
        except Exception:  # noqa: BLE001 - the peer gets a failure status, never an abort
            log.exception("C-GET from %s: storing an instance failed", self.modality.aet)
            return 0xC000
        self.stored += 1
        return 0x0000


def job_types() -> list[type[Job]]:
    """``DicomMoveScu`` and ``DicomGetScu``."""
    return [DicomMoveScuJob, DicomGetScuJob]
