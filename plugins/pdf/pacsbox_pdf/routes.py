"""REST routes of the pdf plugin: ``POST /tools/create-dicom`` and
``GET /instances/{id}/pdf`` (reference section 6)."""
from __future__ import annotations

import io
import json
from typing import Any, Mapping

import pydicom

from pacsbox import ErrorCode, OrthancError, RouteSpec, not_found, read_body, send_json

from .create import DicomCreator, Encoder
from .encapsulate import ENCAPSULATED_DOCUMENT, ENCAPSULATED_DOCUMENT_LENGTH, ENCAPSULATED_PDF

#: Option bounding the body of ``POST /tools/create-dicom``, in MB (0 = no limit).
MAX_SIZE_OPTION = "CreateDicomMaximumSize"
#: Its default: 256 MB of JSON, i.e. about 190 MB of content once base64-decoded.
DEFAULT_MAX_SIZE_MB = 256


def max_body_bytes(config: Any) -> int:
    """The ``CreateDicomMaximumSize`` option in bytes (0 = no limit); the core checked it at
    start-up, as the plugin's ``register_options`` declares it."""
    return int(config.get(MAX_SIZE_OPTION, DEFAULT_MAX_SIZE_MB)) * 1024 * 1024


class CreateDicomRoute:
    """``POST /tools/create-dicom``.

    Parameters
    ----------
    ctx : pacsbox.ServerContext
    encoders : mapping of str to callable
        MIME type → content encoder.
    """

    def __init__(self, ctx: Any, encoders: Mapping[str, Encoder]) -> None:
        self.ctx = ctx
        self.encoders = encoders
        self.limit = max_body_bytes(ctx.config)

    def on_post(self, req, resp):
        data = read_body(req, self.limit, "The body of /tools/create-dicom", MAX_SIZE_OPTION)
        try:
            body = json.loads(data) if data.strip() else None
        except (ValueError, UnicodeDecodeError, RecursionError):
            body = None
        origin = {"Origin": "RestApi", "RemoteIP": req.remote_addr or "",
                  "HttpUsername": getattr(req.context, "username", None) or ""}
        del data
        send_json(resp, DicomCreator(self.ctx, self.encoders, origin).create(body))


def pdf_bytes(data: bytes) -> bytes | None:
    """The PDF encapsulated in a DICOM file, or None when the file holds none.

    Parameters
    ----------
    data : bytes
        A DICOM file.

    Returns
    -------
    bytes or None
        The document when (0008,0016) *SOP Class UID* is Encapsulated PDF Storage,
        (0042,0012) is ``application/pdf`` and (0042,0011) is present. The padding byte
        of an odd-length document is removed: by (0042,0015) *Encapsulated Document
        Length* when the file has it, else by Orthanc's rule (a last byte other than LF
        or CR is padding).
    """
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True,
                             specific_tags=[0x00080016, 0x00420011, 0x00420012, ENCAPSULATED_DOCUMENT_LENGTH])
        sop = str(ds.get("SOPClassUID", "") or "").strip(" \x00")
        mime = str(ds.get("MIMETypeOfEncapsulatedDocument", "") or "").strip(" \x00")
        doc = ds.get(ENCAPSULATED_DOCUMENT)
        if sop != ENCAPSULATED_PDF or mime != "application/pdf" or doc is None:
            return None
        value = doc.value
        if not isinstance(value, (bytes, bytearray)):
            return None
        length_el = ds.get(ENCAPSULATED_DOCUMENT_LENGTH)
        length = length_el.value if length_el is not None else None
    except Exception:  # noqa: BLE001 - an unreadable file holds no PDF
        return None
    if isinstance(length, int) and 0 <= length <= len(value) and len(value) - length <= 1:
        return bytes(value[:length]) if length != len(value) else bytes(value)
    if value and value[-1] not in (10, 13):
        return bytes(value[:-1])
    return bytes(value)


class PdfRoute:
    """``GET /instances/{id}/pdf``: the encapsulated PDF, ``application/pdf``; any other
    instance (or an unknown one) is an empty 404, as Orthanc 1.10.1."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_get(self, req, resp, id):
        try:
            data = self.ctx.resources.read_file(id)
        except OrthancError:
            raise not_found() from None
        pdf = pdf_bytes(data)
        if pdf is None:
            raise not_found()
        resp.content_type = "application/pdf"
        resp.data = pdf


def route_specs(ctx: Any, encoders: Mapping[str, Encoder]) -> list[RouteSpec]:
    """The plugin's route declarations."""
    return [
        RouteSpec("/tools/create-dicom", lambda c: CreateDicomRoute(c, encoders)),
        RouteSpec("/instances/{id}/pdf", PdfRoute),
    ]
