"""REST routes of the synchronous C-FIND as an SCU (reference section 9.5): the deprecated
``/modalities/{id}/find-patient|find-study|find-series|find-instance|find`` (Orthanc's
``DicomMap::SetupFind*Template`` keys, answers simplified) and
``/modalities/{id}/find-worklist`` (a Modality Worklist C-FIND). Their answers are not
kept (``/queries`` are, see :mod:`.query_routes`, which holds the route table).
"""
from __future__ import annotations

import json
from typing import Any, Mapping

from pacsbox import ErrorCode, OrthancError, parse_tag, read_body, read_bool, send_json

from .find_scu import get_modality, run_find
from .query_identifiers import (PATIENT_ID, STUDY_INSTANCE_UID, answer_short, default_charset, find_identifier,
                                make_dataset, render)
from .query_requests import check_calling, json_object, local_aet_field, timeout_field


#: Orthanc's ``DicomMap::SetupFind*Template`` (the keys the deprecated routes ask for).
FIND_TEMPLATES: dict[str, tuple[int, ...]] = {
    "Patient": (0x00100010, 0x00100020, 0x00100030, 0x00100040, 0x00101000),
    "Study": (0x00080020, 0x00080030, 0x00080050, 0x00080090, 0x00081030, 0x00100020, 0x0020000D, 0x00200010),
    "Series": (0x00080021, 0x00080031, 0x00080050, 0x00080060, 0x0008103E, 0x00081070, 0x00100020, 0x00180015,
               0x00181030, 0x0020000D, 0x0020000E, 0x00200011, 0x00400254),
    "Instance": (0x00080012, 0x00080013, 0x00080018, 0x00080050, 0x00100020, 0x0020000D, 0x0020000E,
                 0x00200012, 0x00200013, 0x00200032, 0x00200037, 0x00200100, 0x00204000, 0x00280008,
                 0x00541330),
}
#: Route -> (level, tags that must be longer than 2 characters: any of the first group, and
#: each of the others) (Orthanc ``DicomFindStudy``...).
FIND_ROUTES = {"find-patient": ("Patient", ()),
               "find-study": ("Study", ((0x00080050, 0x00100020),)),
               "find-series": ("Series", ((0x00080050, 0x00100020), (0x0020000D,))),
               "find-instance": ("Instance", ((0x00080050, 0x00100020), (0x0020000D,), (0x0020000E,)))}


def _merge_template(level: str, body: Any) -> dict[int, str]:
    """Template of ``level`` merged with the body's tag -> value pairs; a body that is not
    an object is refused with an empty 400 (Orthanc ``MergeQueryAndTemplate``)."""
    if not isinstance(body, dict):
        raise OrthancError(ErrorCode.BAD_REQUEST, empty=True)
    fields = {t: "" for t in FIND_TEMPLATES[level]}
    for key, value in body.items():
        try:
            tag = parse_tag(key)
        except (KeyError, ValueError):
            raise OrthancError(ErrorCode.UNKNOWN_DICOM_TAG, f"Unknown DICOM tag: {key}") from None
        if isinstance(value, str):
            fields[tag] = value
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            fields[tag] = str(value)
        else:
            raise OrthancError(ErrorCode.BAD_REQUEST, empty=True)
    return fields


def _body_or_refuse(req: Any) -> Any:
    data = read_body(req)
    try:
        return json.loads(data) if data.strip() else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


class DeprecatedFindRoute:
    """``POST /modalities/{id}/find-patient|find-study|find-series|find-instance``: a
    synchronous C-FIND answering an array of simplified answers (deprecated in Orthanc)."""

    def __init__(self, ctx: Any, route: str) -> None:
        self.ctx = ctx
        self.level, self.required = FIND_ROUTES[route]

    def on_post(self, req: Any, resp: Any, id: str) -> None:  # noqa: A002
        """Refused with an empty 400 when the identifiers Orthanc requires are missing."""
        fields = _merge_template(self.level, _body_or_refuse(req))
        for group in self.required:
            if not any(len(fields.get(t, "")) > 2 for t in group):
                raise OrthancError(ErrorCode.BAD_REQUEST, empty=True)
        send_json(resp, [render(a, "simplify") for a in _find(self.ctx, id, self.level, fields)])


def _find(ctx: Any, name: str, level: str, fields: Mapping[int, str]) -> list:
    modality = get_modality(ctx, name)
    ident = find_identifier(level, fields, manufacturer=modality.manufacturer,
                            charset=default_charset(ctx))
    return run_find(ctx, modality, ident)


class DeprecatedFindAllRoute:
    """``POST /modalities/{id}/find``: patients, each with its ``Studies``, each with its
    ``Series`` (simplified answers; deprecated in Orthanc)."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_post(self, req: Any, resp: Any, id: str) -> None:  # noqa: A002
        """See the class docstring."""
        fields = _merge_template("Patient", _body_or_refuse(req))
        out = []
        for patient in _find(self.ctx, id, "Patient", fields):
            p = render(patient, "simplify")
            pshort = answer_short(patient)
            p["Studies"] = []
            sfields = {t: "" for t in FIND_TEMPLATES["Study"]}
            if isinstance(pshort.get(PATIENT_ID), str):
                sfields[PATIENT_ID] = pshort[PATIENT_ID]
            for study in _find(self.ctx, id, "Study", sfields):
                s = render(study, "simplify")
                sshort = answer_short(study)
                rfields = {t: "" for t in FIND_TEMPLATES["Series"]}
                for tag in (PATIENT_ID, STUDY_INSTANCE_UID):
                    if isinstance(sshort.get(tag), str):
                        rfields[tag] = sshort[tag]
                s["Series"] = [render(x, "simplify") for x in _find(self.ctx, id, "Series", rfields)]
                p["Studies"].append(s)
            out.append(p)
        send_json(resp, out)


class FindWorklistRoute:
    """``POST /modalities/{id}/find-worklist``: a Modality Worklist C-FIND. Body: the
    query itself, or ``{"Query": {...}, "Short"|"Full"|"Simplify": true, "LocalAet",
    "Timeout"}`` (Orthanc 1.9.5+); answers an array (simplified by default)."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_post(self, req: Any, resp: Any, id: str) -> None:  # noqa: A002
        """See the class docstring."""
        body = json_object(req)
        if "Query" in body:
            query, fmt = body["Query"], _body_format(body, "simplify")
        else:
            query, fmt = body, "simplify"
        local_aet, timeout = local_aet_field(body), timeout_field(body)
        modality = get_modality(self.ctx, id)
        check_calling(modality, local_aet)
        ident = _worklist_dataset(query, default_charset(self.ctx))
        answers = run_find(self.ctx, modality, ident, worklist=True, local_aet=local_aet or None,
                           timeout=timeout)
        send_json(resp, [render(a, fmt) for a in answers])


def _worklist_dataset(query: Any, charset: str) -> Any:
    """A worklist identifier from JSON (strings, and sequences as arrays of objects)."""
    from pydicom.dataset import Dataset
    if not isinstance(query, dict):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Must provide a JSON object")
    flat: dict[int, str] = {}
    seqs: dict[int, list] = {}
    for key, value in query.items():
        try:
            tag = parse_tag(key)
        except (KeyError, ValueError):
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, f"Unknown DICOM tag: {key}") from None
        if isinstance(value, list):
            seqs[tag] = value
        elif isinstance(value, str):
            flat[tag] = value
        else:
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, f"Bad value for tag {key}")
    ds = make_dataset(flat, charset)
    for tag, items in seqs.items():
        seq = []
        for item in items:
            sub = _worklist_dataset(item, None) if item else Dataset()
            seq.append(sub)
        ds.add_new(tag, "SQ", seq)
    return ds


def _body_format(body: Mapping[str, Any], default: str) -> str:
    """``Short``/``Full``/``Simplify`` fields of a body (Orthanc ``GetDicomFormat``)."""
    if read_bool(body, "Short", False):
        return "short"
    if read_bool(body, "Full", False):
        return "full"
    if read_bool(body, "Simplify", False):
        return "simplify"
    return default
