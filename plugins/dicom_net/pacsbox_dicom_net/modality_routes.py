"""REST routes of the modalities: configuration, C-ECHO and C-STORE SCU.

=========================================  ==================================================
``GET /modalities`` (``?expand``)          names (sorted), or name -> long-form configuration
``GET /modalities/{id}``                   the sub-routes; unknown name: empty 404
``GET /modalities/{id}/configuration``     the long form; unknown: 404 (7)
``PUT /modalities/{id}``                   create/replace (array or object form): empty 200
``DELETE /modalities/{id}``                empty 200; unknown: 404 (7)
``POST /modalities/{id}/echo``             C-ECHO (``Timeout``, ``CheckFind``): ``{}``
``POST /tools/dicom-echo``                 C-ECHO to a modality given in the body
``POST /modalities/{id}/store``            ``DicomModalityStore`` job (:mod:`.store_job`)
``POST /modalities/{id}/store-straight``   C-STORE of the DICOM file in the body
=========================================  ==================================================

Every answer and error is Orthanc 1.10.1's (checked side by side with the real server,
``tests/plugins/dicom_net/test_modalities_reference.py``), except that the store route
also honours Orthanc 1.12's per-call ``CalledAet``/``Host``/``Port`` (1.10.1 ignores
them). ``PUT`` changes persist across restarts with ``DicomModalitiesInDatabase``.

Source: reference sections 9.1 to 9.4; Orthanc 1.10.1 ``OrthancRestModalities.cpp``.
"""
from __future__ import annotations

import io
import json
from typing import Any, Mapping

import pydicom
from pydicom import Dataset
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind, Verification

from pacsbox import (DicomFormatError, ErrorCode, OrthancError, RouteSpec, is_orthanc_id, not_found, read_body,
                     read_bool, read_file_meta, read_int, read_json_body, send_json, send_text)

from .modalities import Modality, ModalityConfigError, parse_modality
from .scu import open_association
from .send import StoreSender
from .send_wire import SendInterrupted
from .state import plugin_state
from .store_job import StoreScuJob

#: ``GET /modalities/{id}`` (Orthanc 1.10.1).
SUB_ROUTES = ["configuration", "echo", "find", "find-instance", "find-patient", "find-series", "find-study",
              "find-worklist", "move", "query", "storage-commitment", "store", "store-straight"]
_ACTION_TYPE = "application/json"  # action routes answer {} without a charset


def get_modality(ctx: Any, name: str) -> Modality:
    """The modality of symbolic name ``name``.

    Raises
    ------
    OrthancError
        404 ``INEXISTENT_ITEM`` "No modality with symbolic name: <name>" (Orthanc's
        answer to any operation on an unknown modality).
    """
    m = plugin_state(ctx).modalities.get(name)
    if m is None:
        raise OrthancError(ErrorCode.INEXISTENT_ITEM, f"No modality with symbolic name: {name}")
    return m


#: The error of a body that is empty or not JSON (Orthanc 1.10.1's words on these routes).
_UNPARSABLE = (ErrorCode.BAD_FILE_FORMAT, "Cannot parse the JSON body")


def modality_from_body(name: str, body: Any) -> Modality:
    """Read a modality given in a request body (``PUT /modalities/{id}``,
    ``/tools/dicom-echo``), with Orthanc 1.10.1's errors.

    Raises
    ------
    OrthancError
        400 ``BAD_FILE_FORMAT``: "String value expected in field: Host" for an object
        without a string ``Host`` (1.10.1 requires it in requests), "Unsigned integer
        value expected in field: Timeout" for a negative ``Timeout``, no details for
        other malformed definitions.
    """
    if isinstance(body, Mapping):
        if not isinstance(body.get("Host"), str):
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "String value expected in field: Host")
        t = body.get("Timeout", 0)
        if isinstance(t, int) and not isinstance(t, bool) and t < 0:
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Unsigned integer value expected in field: Timeout")
    try:
        return parse_modality(name, body)
    except ModalityConfigError:
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT) from None


def echo(ctx: Any, modality: Modality, *, timeout: float | None = None, check_find: bool = False) -> None:
    """C-ECHO (and optionally a C-FIND) toward ``modality``.

    Parameters
    ----------
    ctx : ServerContext
    modality : Modality
    timeout : float, optional
        Seconds (default: the modality's, else ``DicomScuTimeout``).
    check_find : bool
        Also send a C-FIND (Study Root, STUDY level, universal ``StudyInstanceUID``),
        to check that the peer answers queries (``CheckFind``, ``DicomEchoChecksFind``).

    Raises
    ------
    OrthancError
        ``NETWORK_PROTOCOL`` (500) when the association fails or the peer answers with
        something other than success, in Orthanc's wording; ``DICOM_FIND_UNAVAILABLE``
        (2016, HTTP 500) "Remote AET is X" when ``check_find`` and the peer refuses the
        C-FIND presentation context, as Orthanc 1.10.1.
    """
    contexts = [build_context(Verification)]
    if check_find:
        contexts.append(build_context(StudyRootQueryRetrieveInformationModelFind))
    assoc = open_association(ctx, modality, contexts, timeout=timeout)
    prefix = f'DicomAssociation - C-ECHO to AET "{modality.aet}"'
    try:
        try:
            status = assoc.send_c_echo()
        except (ValueError, RuntimeError) as e:
            raise OrthancError(ErrorCode.NETWORK_PROTOCOL, f"{prefix}: {e}") from None
        if "Status" not in status or status.Status != 0x0000:
            raise OrthancError(ErrorCode.NETWORK_PROTOCOL, f"{prefix} has failed")
        if check_find:
            query = Dataset()
            query.QueryRetrieveLevel = "STUDY"
            query.StudyInstanceUID = ""
            prefix = f'DicomAssociation - C-FIND to AET "{modality.aet}"'
            if not any(cx.abstract_syntax == StudyRootQueryRetrieveInformationModelFind
                       for cx in assoc.accepted_contexts):
                # Orthanc 1.10.1's answer when the peer refuses the C-FIND context
                raise OrthancError(ErrorCode.DICOM_FIND_UNAVAILABLE, f"Remote AET is {modality.aet}")
            try:
                answers = list(assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind))
            except (ValueError, RuntimeError) as e:
                raise OrthancError(ErrorCode.NETWORK_PROTOCOL, f"{prefix}: {e}") from None
            final = answers[-1][0] if answers else None
            if final is None or "Status" not in final or final.Status not in (0x0000, 0xFF00, 0xFF01):
                raise OrthancError(ErrorCode.NETWORK_PROTOCOL, f"{prefix} has failed")
    finally:
        if assoc.is_established:
            assoc.release()


class ModalitiesListRoute:
    """``GET /modalities`` (``?expand``)."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_get(self, req: Any, resp: Any) -> None:
        """Answer the names, or with ``?expand`` every long-form configuration."""
        reg = plugin_state(self.ctx).modalities
        if "expand" in req.params:
            send_json(resp, {name: m.to_json() for name, m in reg.items()})
        else:
            send_json(resp, reg.names())


class ModalityItemRoute:
    """``GET``/``PUT``/``DELETE /modalities/{id}``."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_get(self, req: Any, resp: Any, id: str) -> None:  # noqa: A002 - falcon field name
        """The sub-routes of a known modality; an empty 404 otherwise."""
        if plugin_state(self.ctx).modalities.get(id) is None:
            raise not_found()
        send_json(resp, SUB_ROUTES)

    def on_put(self, req: Any, resp: Any, id: str) -> None:  # noqa: A002
        """Create or replace ``id`` from the body (either form); empty ``text/plain`` 200."""
        body = read_json_body(req, allow_empty=False, invalid=(ErrorCode.BAD_FILE_FORMAT, None))
        plugin_state(self.ctx).modalities.put(id, modality_from_body(id, body))
        send_text(resp, "")

    def on_delete(self, req: Any, resp: Any, id: str) -> None:  # noqa: A002
        """Remove ``id``; 404 (7) when unknown."""
        if not plugin_state(self.ctx).modalities.delete(id):
            raise OrthancError(ErrorCode.INEXISTENT_ITEM, f"Unknown DICOM modality with symbolic name: {id}")
        send_text(resp, "")


class ModalityConfigurationRoute:
    """``GET /modalities/{id}/configuration``."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_get(self, req: Any, resp: Any, id: str) -> None:  # noqa: A002
        """The long form of ``id``; 404 (7) when unknown."""
        send_json(resp, get_modality(self.ctx, id).to_json())


def _echo_options(ctx: Any, body: Any) -> tuple[int | None, bool]:
    body = body if isinstance(body, Mapping) else {}
    timeout = read_int(body, "Timeout", None)
    check_find = read_bool(body, "CheckFind", plugin_state(ctx).options["DicomEchoChecksFind"])
    return timeout, check_find


class ModalityEchoRoute:
    """``POST /modalities/{id}/echo``: body ``{}`` or empty, optional ``Timeout``
    (seconds) and ``CheckFind``."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_post(self, req: Any, resp: Any, id: str) -> None:  # noqa: A002
        """C-ECHO toward ``id``; ``{}`` on success."""
        body = read_json_body(req, invalid=_UNPARSABLE)
        modality = get_modality(self.ctx, id)
        timeout, check_find = _echo_options(self.ctx, body)
        echo(self.ctx, modality, timeout=timeout or None, check_find=check_find)
        send_json(resp, {}, content_type=_ACTION_TYPE)


class ToolsDicomEchoRoute:
    """``POST /tools/dicom-echo``: the modality in the body (either form), plus
    ``Timeout`` and ``CheckFind`` in the object form."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_post(self, req: Any, resp: Any) -> None:
        """C-ECHO toward the modality given in the body; ``{}`` on success."""
        body = read_json_body(req, allow_empty=False, invalid=_UNPARSABLE)
        modality = modality_from_body("dicom-echo", body)
        timeout, check_find = _echo_options(self.ctx, body)
        echo(self.ctx, modality, timeout=timeout or None, check_find=check_find)
        send_json(resp, {}, content_type=_ACTION_TYPE)


def _store_request(req: Any) -> tuple[list[Any], dict[str, Any]]:
    """The resources and the request object of a store body (bare ID, JSON string,
    array or object), with Orthanc 1.10.1's errors."""
    data = read_body(req)
    text = data.decode("utf-8", "replace").strip()
    if is_orthanc_id(text):
        return [text], {}
    try:
        body = json.loads(data) if text else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        body = None
    if body is None:
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Must provide a JSON value")
    if isinstance(body, str):
        return [body], {}
    if isinstance(body, list):
        return body, {}
    if isinstance(body, dict):
        if "Resources" not in body:
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, 'Missing field in JSON: "Resources"')
        if not isinstance(body["Resources"], list):
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, 'JSON field "Resources" must contain an array')
        return body["Resources"], body
    raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Must provide a JSON object, or a JSON array of strings")


def _str_param(body: Mapping[str, Any], name: str) -> str | None:
    if name not in body:
        return None
    v = body[name]
    if not isinstance(v, str):
        raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE)
    return v


def _export_identifiers(ctx: Any, res: Any) -> list[str]:
    """``[PatientID, StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID]`` down to the
    level of ``res``, for ``/exports``."""
    chain = sorted([*ctx.index.ancestors(res), res], key=lambda r: r.level)
    keys = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
    return [str(r.main_tags.get(keys[r.level], "") or "") for r in chain]


class ModalityStoreRoute:
    """``POST /modalities/{id}/store``: a ``DicomModalityStore`` job (synchronous by
    default), see :mod:`.store_job` and reference section 9.4."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_post(self, req: Any, resp: Any, id: str) -> None:  # noqa: A002
        """Resolve the resources and run the ``DicomModalityStore`` job."""
        ctx = self.ctx
        items, body = _store_request(req)
        resources = []
        for item in items:
            if not isinstance(item, str):
                raise OrthancError(ErrorCode.BAD_FILE_FORMAT,
                                   "Resources to be exported must be specified as a JSON array of strings")
            s = item.strip()
            if not is_orthanc_id(s):
                raise OrthancError(ErrorCode.BAD_FILE_FORMAT, f"This string is not a valid Orthanc identifier: {item}")
            r = ctx.index.lookup(s)
            if r is None:
                raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)
            resources.append(r)
        local_aet = _str_param(body, "LocalAet")
        mo_aet = _str_param(body, "MoveOriginatorAet")
        mo_id = None
        if "MoveOriginatorID" in body:
            v = body["MoveOriginatorID"]
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 65536:
                raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE)
            mo_id = v
        timeout = read_int(body, "Timeout", None)
        modality = get_modality(ctx, id)
        overrides: dict[str, Any] = {}
        if (called := _str_param(body, "CalledAet")) is not None:
            overrides["aet"] = called
        if (host := _str_param(body, "Host")) is not None:
            overrides["host"] = host
        if "Port" in body:
            port = body["Port"]
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE)
            overrides["port"] = port
        if overrides:
            from dataclasses import replace
            modality = replace(modality, **overrides)
        if plugin_state(ctx).options["LogExportedResources"]:
            for r in resources:
                ctx.index.log_export(r, id, _export_identifiers(ctx, r))
        instances = [i.public_id for i in ctx.resources.instances_of(resources)]
        job = StoreScuJob(instances, modality=modality, modality_name=id, local_aet=local_aet,
                          parent_resources=[r.public_id for r in resources], move_originator_aet=mo_aet,
                          move_originator_id=mo_id, timeout=timeout or None)
        send_json(resp, ctx.jobs.run_request(job, body, synchronous=True))


class ModalityStoreStraightRoute:
    """``POST /modalities/{id}/store-straight``: C-STORE of the DICOM file in the body,
    without storing it; answers ``{"SOPClassUID": ..., "SOPInstanceUID": ...}``."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_post(self, req: Any, resp: Any, id: str) -> None:  # noqa: A002
        """Send the body's DICOM file to ``id`` without storing it."""
        modality = get_modality(self.ctx, id)
        data = read_body(req)
        try:
            read_file_meta(data)
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True,
                                 specific_tags=["SOPClassUID", "SOPInstanceUID"])
            uids = (str(ds.get("SOPClassUID", "")), str(ds.get("SOPInstanceUID", "")))
        except (DicomFormatError, Exception):  # noqa: BLE001 - anything unreadable is a bad file
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT) from None
        with StoreSender(self.ctx, modality) as sender:
            try:
                result = sender.send(data, uids=uids)
            except SendInterrupted:  # pragma: no cover - nobody interrupts this sender
                raise OrthancError(ErrorCode.NETWORK_PROTOCOL) from None
        if not result.ok:
            raise OrthancError(ErrorCode.NETWORK_PROTOCOL,
                               f'DicomAssociation - C-STORE to AET "{modality.aet}": {result.error}')
        send_json(resp, {"SOPClassUID": result.sop_class_uid, "SOPInstanceUID": result.sop_instance_uid})


def routes(ctx: Any) -> list[RouteSpec]:
    """The routes of this module (see the module's table)."""
    return [RouteSpec("/modalities", ModalitiesListRoute), RouteSpec("/modalities/{id}", ModalityItemRoute),
            RouteSpec("/modalities/{id}/configuration", ModalityConfigurationRoute),
            RouteSpec("/modalities/{id}/echo", ModalityEchoRoute), RouteSpec("/tools/dicom-echo", ToolsDicomEchoRoute),
            RouteSpec("/modalities/{id}/store", ModalityStoreRoute),
            RouteSpec("/modalities/{id}/store-straight", ModalityStoreStraightRoute)]
