"""Revisions of metadata and attachments: ``ETag``, ``If-None-Match`` and ``If-Match``.

As Orthanc (1.9.2+): every GET of a metadata or attachment carries
``ETag: "<revision>-<MD5>"``; a GET whose ``If-None-Match`` names that ETag is answered 304
(a malformed one is 400); a PUT or DELETE whose ``If-Match`` names another ETag is 409. With
``CheckRevisions: true``, ``If-Match`` is required to replace an existing item or to delete
one (409 without it). A PUT answers the new ETag.

The revision is stored in the index (table ``revisions``): 0 for a new item, +1 at each
replacement; Orthanc 1.10.1's own SQLite index does not keep revisions (a GET always says
0 there), its PostgreSQL index does, as pacsbox.
"""
from __future__ import annotations

import re

import falcon

from ..errors import ErrorCode, OrthancError

_ETAG = re.compile(r'"?([0-9]+)-([^"]*)"?')


def etag(revision: int, md5: str) -> str:
    """The ``ETag`` header value ``"<revision>-<md5>"``."""
    return f'"{revision}-{md5}"'


def parse_etag(value: str, header: str) -> tuple[int, str]:
    """``(revision, md5)`` of an ``If-Match``/``If-None-Match`` value (quotes optional).

    Raises
    ------
    OrthancError
        400 ``PARAMETER_OUT_OF_RANGE`` with Orthanc's details when it is no ETag.
    """
    m = _ETAG.fullmatch(value.strip())
    if m is None:
        raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE,
                           f'The "{header}" HTTP header should contain the ETag (revision followed by MD5 hash), '
                           f"but found: {value}")
    return int(m.group(1)), m.group(2)


def answer_etag(req: falcon.Request, resp: falcon.Response, revision: int, md5: str | None) -> bool:
    """Set the ``ETag`` of a GET and honour ``If-None-Match``.

    Returns
    -------
    bool
        True when the answer is complete (304, empty, no ``Content-Type``).

    Raises
    ------
    OrthancError
        400 for a malformed ``If-None-Match``.
    """
    if md5 is None:
        return False
    resp.set_header("ETag", etag(revision, md5))
    inm = req.get_header("If-None-Match")
    if inm is None:
        return False
    if parse_etag(inm, "If-None-Match") == (revision, md5):
        resp.status = 304
        resp.content_type = None
        resp.data = b""
        return True
    return False


def check_if_match(req: falcon.Request, check_revisions: bool, current: tuple[int, str | None] | None,
                   deleting: bool) -> None:
    """Check the ``If-Match`` of a PUT or DELETE against the current item.

    Parameters
    ----------
    req : falcon.Request
    check_revisions : bool
        Orthanc's ``CheckRevisions``.
    current : (int, str) or None
        ``(revision, md5)`` of the existing item, None when there is none.
    deleting : bool
        A DELETE (``If-Match`` is then required with ``CheckRevisions`` and the details
        say so).

    Raises
    ------
    OrthancError
        409 ``REVISION`` when the header is missing but required, or names another
        revision or content; 400 when it is malformed.
    """
    header = req.get_header("If-Match")
    if header is None:
        if check_revisions and current is not None:
            if deleting:
                raise OrthancError(ErrorCode.REVISION, 'HTTP header "If-Match" is missing, as "CheckRevisions" is "true"')
            raise OrthancError(ErrorCode.REVISION)
        return
    wanted = parse_etag(header, "if-match")
    if current is None or wanted != current:
        raise OrthancError(ErrorCode.REVISION)
