"""WebDAV (Orthanc 1.8+, ``WebDavEnabled``): ``/webdav`` browsed as a network drive.

The tree, as Orthanc's (names are ``{a} - {b}`` of main tags):

- ``by-patients/{PatientID - PatientName}/{StudyDate - StudyDescription}/{Modality - SeriesDescription}/{instance}.dcm``
- ``by-studies/{PatientID - PatientName - StudyDescription}/{Modality - SeriesDescription}/{instance}.dcm``
- ``by-dates/{YYYY}/{YYYY-MM}/{PatientID - PatientName - StudyDescription}/{Modality - SeriesDescription}/{instance}.dcm``
- ``by-uids/{StudyInstanceUID}/study.json``, ``.../{SeriesInstanceUID}/series.json`` and
  ``.../{SOPInstanceUID}.dcm``
- ``uploads/``: a ``PUT`` of a file there stores it (DICOM, or a ZIP of files); the folder
  stays empty.

``PROPFIND`` with ``Depth`` 0 or 1 answers 207 with a ``DAV:multistatus`` (collections,
and files with their length and type); ``GET`` returns a file; ``OPTIONS`` advertises DAV
class 1 and 2; ``LOCK``/``UNLOCK`` answer a lock token without locking (enough for the
clients that lock before they write); other writes are refused with 403. The resources
are listed from the index, in Orthanc's naming; two resources of one name get the name
once (as Orthanc).
"""
from __future__ import annotations

import time
import uuid
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape

from ..errors import ErrorCode, OrthancError
from ..index.models import CONTENT_TYPE_DICOM
from ..routing.registry import RouteSpec
from ..web import dumps, read_body

ROOT_FOLDERS = ("by-dates", "by-patients", "by-studies", "by-uids", "uploads")


def _name(*parts: str | None) -> str:
    return " - ".join((p or "").strip() for p in parts).strip().replace("/", "_")


def _study_name_by_patient(s: Any) -> str:
    return _name(s.main_tags.get("StudyDate"), s.main_tags.get("StudyDescription"))


def _study_name_full(s: Any) -> str:
    t = s.main_tags
    return _name(t.get("PatientID"), t.get("PatientName"), t.get("StudyDescription"))


def _series_name(s: Any) -> str:
    return _name(s.main_tags.get("Modality"), s.main_tags.get("SeriesDescription"))


class _Node:
    """A folder (``children`` is a callable giving ``{name: node}``) or a file."""

    def __init__(self, children=None, *, data=None, size: int = 0, ctype: str = "application/octet-stream"):
        self.children, self.data, self.size, self.ctype = children, data, size, ctype

    @property
    def is_folder(self) -> bool:
        return self.children is not None


class WebDav:
    """Resolves WebDAV paths against the index.

    Parameters
    ----------
    ctx : ServerContext
    """

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    # -- tree --------------------------------------------------------------------------------
    def _instances(self, series: Any) -> dict[str, _Node]:
        index = self.ctx.index
        out = {}
        for inst in index.children(series.internal_id):
            att = index.attachment(inst.internal_id, CONTENT_TYPE_DICOM)
            out[f"{inst.public_id}.dcm"] = _Node(data=lambda i=inst: self.ctx.resources.read_file(i),
                                                 size=att.uncompressed_size if att else 0, ctype="application/dicom")
        return out

    def _series_of(self, study: Any) -> dict[str, _Node]:
        out: dict[str, _Node] = {}
        for s in self.ctx.index.children(study.internal_id):
            out.setdefault(_series_name(s), _Node(lambda s=s: self._instances(s)))
        return out

    def _studies(self, name_of, studies) -> dict[str, _Node]:
        out: dict[str, _Node] = {}
        for st in studies:
            out.setdefault(name_of(st), _Node(lambda st=st: self._series_of(st)))
        return out

    def _by_patients(self) -> dict[str, _Node]:
        out: dict[str, _Node] = {}
        index = self.ctx.index
        for p in index.list_resources(0):
            name = _name(p.main_tags.get("PatientID"), p.main_tags.get("PatientName"))
            out.setdefault(name, _Node(lambda p=p: self._studies(_study_name_by_patient,
                                                                  index.children(p.internal_id))))
        return out

    def _by_dates(self) -> dict[str, _Node]:
        studies = self.ctx.index.list_resources(1)
        years: dict[str, dict[str, list]] = {}
        for st in studies:
            d = (st.main_tags.get("StudyDate") or "").strip()
            if len(d) >= 6 and d[:6].isdigit():
                years.setdefault(d[:4], {}).setdefault(f"{d[:4]}-{d[4:6]}", []).append(st)
            else:
                years.setdefault("UNKNOWN", {}).setdefault("UNKNOWN", []).append(st)
        return {y: _Node(lambda months=months: {m: _Node(lambda sts=sts: self._studies(_study_name_full, sts))
                                                 for m, sts in months.items()})
                for y, months in years.items()}

    def _by_uids(self) -> dict[str, _Node]:
        ctx = self.ctx
        out: dict[str, _Node] = {}

        def study_folder(st):
            d = {"study.json": _Node(data=lambda: dumps(ctx.resources.expand(st)), size=-1,
                                     ctype="application/json")}
            for se in ctx.index.children(st.internal_id):
                d[se.main_tags.get("SeriesInstanceUID", se.public_id)] = _Node(lambda se=se: series_folder(se))
            return d

        def series_folder(se):
            d = {"series.json": _Node(data=lambda: dumps(ctx.resources.expand(se)), size=-1,
                                      ctype="application/json")}
            for inst in ctx.index.children(se.internal_id):
                att = ctx.index.attachment(inst.internal_id, CONTENT_TYPE_DICOM)
                d[f"{inst.main_tags.get('SOPInstanceUID', inst.public_id)}.dcm"] = _Node(
                    data=lambda i=inst: ctx.resources.read_file(i), size=att.uncompressed_size if att else 0,
                    ctype="application/dicom")
            return d

        for st in ctx.index.list_resources(1):
            out[st.main_tags.get("StudyInstanceUID", st.public_id)] = _Node(lambda st=st: study_folder(st))
        return out

    def root(self) -> _Node:
        """The ``/webdav`` folder."""
        return _Node(lambda: {"by-dates": _Node(self._by_dates), "by-patients": _Node(self._by_patients),
                              "by-studies": _Node(lambda: self._studies(_study_name_full,
                                                                        self.ctx.index.list_resources(1))),
                              "by-uids": _Node(self._by_uids), "uploads": _Node(dict)})

    def resolve(self, parts: list[str]) -> _Node | None:
        """The node of a path (its components, decoded), or None."""
        node = self.root()
        for p in parts:
            if not node.is_folder:
                return None
            node = node.children().get(p)
            if node is None:
                return None
        return node


def _parts(path: str) -> list[str]:
    rest = path[len("/webdav"):]  # falcon has already percent-decoded the path
    return [p for p in rest.split("/") if p]


def _href(parts: list[str], folder: bool) -> str:
    h = "/webdav" + "".join("/" + quote(p, safe="") for p in parts)
    return h + "/" if folder and not parts else h


def _entry(href: str, name: str, node: _Node, stamp: str) -> str:
    if node.is_folder:
        props = "<D:resourcetype>\n          <D:collection />\n        </D:resourcetype>"
    else:
        size = node.size
        if size < 0:
            size = len(node.data())
        props = (f"<D:getcontentlength>{size}</D:getcontentlength>\n        "
                 f"<D:getcontenttype>{node.ctype}</D:getcontenttype>\n        <D:resourcetype />")
    return (f"  <D:response>\n    <D:href>{escape(href)}</D:href>\n    <D:propstat>\n"
            f"      <D:status>HTTP/1.1 200 OK</D:status>\n      <D:prop>\n"
            f"        <D:displayname>{escape(name)}</D:displayname>\n"
            f"        <D:creationdate>{stamp}</D:creationdate>\n"
            f"        <D:getlastmodified>{stamp}</D:getlastmodified>\n        {props}\n"
            f"      </D:prop>\n    </D:propstat>\n  </D:response>\n")


class WebDavRoute:
    """``/webdav`` and everything below it."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.dav = WebDav(ctx)

    def _node(self, req) -> tuple[list[str], _Node]:
        parts = _parts(req.path)
        node = self.dav.resolve(parts)
        if node is None:
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, empty=True)
        return parts, node

    def on_propfind(self, req, resp, path=""):
        """``PROPFIND`` (``Depth`` 0 or 1): a 207 ``DAV:multistatus``."""
        parts, node = self._node(req)
        depth = (req.get_header("Depth") or "1").strip()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        name = parts[-1] if parts else "webdav"
        out = ['<?xml version="1.0" encoding="UTF-8"?>\n<D:multistatus xmlns:D="DAV:">\n']
        out.append(_entry(_href(parts, node.is_folder) + ("/" if node.is_folder and parts else ""), name, node, stamp))
        if node.is_folder and depth != "0":
            for child, sub in sorted(node.children().items()):
                out.append(_entry(_href(parts + [child], sub.is_folder), child, sub, stamp))
        out.append("</D:multistatus>\n")
        resp.status = 207
        resp.content_type = "application/xml; charset=UTF-8"
        resp.data = "".join(out).encode("utf-8")

    def on_get(self, req, resp, path=""):
        """``GET`` of a file (a folder is 404: browse it with ``PROPFIND``)."""
        _parts_, node = self._node(req)
        if node.is_folder:
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, empty=True)
        resp.content_type = node.ctype
        resp.data = node.data()

    def on_put(self, req, resp, path=""):
        """``PUT`` into ``uploads/``: the file is stored (201); elsewhere 403."""
        parts = _parts(req.path)
        if len(parts) < 2 or parts[0] != "uploads":
            raise OrthancError(ErrorCode.FORBIDDEN_ACCESS, http_status=403, empty=True)
        data = read_body(req)
        if data:
            origin = {"Origin": "WebDav", "RemoteIP": req.remote_addr or ""}
            if data[:4] == b"PK\x03\x04":
                import io
                import zipfile
                with zipfile.ZipFile(io.BytesIO(data)) as zf:
                    for info in zf.infolist():
                        if not info.is_dir():
                            self.ctx.ingest.store(zf.read(info), origin)
            else:
                self.ctx.ingest.store(data, origin)
        resp.status = 201
        resp.content_type = "text/plain"
        resp.data = b""

    def on_options(self, req, resp, path=""):
        """``OPTIONS``: DAV classes 1 and 2."""
        resp.set_header("DAV", "1,2")
        resp.set_header("Allow", "OPTIONS, GET, PUT, PROPFIND, LOCK, UNLOCK")
        resp.set_header("MS-Author-Via", "DAV")
        resp.content_type = "text/plain"
        resp.data = b""

    def on_lock(self, req, resp, path=""):
        """``LOCK``: a token, nothing is locked."""
        token = f"opaquelocktoken:{uuid.uuid4()}"
        resp.set_header("Lock-Token", f"<{token}>")
        resp.content_type = "application/xml; charset=UTF-8"
        resp.data = ('<?xml version="1.0" encoding="UTF-8"?>\n<D:prop xmlns:D="DAV:"><D:lockdiscovery><D:activelock>'
                     '<D:locktype><D:write/></D:locktype><D:lockscope><D:exclusive/></D:lockscope>'
                     f'<D:depth>0</D:depth><D:timeout>Second-3600</D:timeout><D:locktoken><D:href>{token}'
                     '</D:href></D:locktoken></D:activelock></D:lockdiscovery></D:prop>\n').encode()

    def on_unlock(self, req, resp, path=""):
        """``UNLOCK``: 204."""
        resp.status = 204

    def _refuse(self, req, resp, path=""):
        raise OrthancError(ErrorCode.FORBIDDEN_ACCESS, http_status=403, empty=True)

    on_delete = on_mkcol = on_move = on_copy = on_proppatch = _refuse


#: Methods the WebDAV routes take besides Orthanc's four.
WEBDAV_METHODS = frozenset(("PROPFIND", "OPTIONS", "LOCK", "UNLOCK", "MKCOL", "MOVE", "COPY", "PROPPATCH", "HEAD"))


def routes(ctx) -> list[RouteSpec]:
    """``/webdav`` and ``/webdav/{path}`` when ``WebDavEnabled`` (default true, as Orthanc)."""
    enabled = ctx.config.get("WebDavEnabled", True)
    if enabled is False:
        return []
    return [RouteSpec("/webdav", WebDavRoute), RouteSpec("/webdav/{path:path}", WebDavRoute)]
