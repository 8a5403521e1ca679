"""One typed body-field reader family, one JSON body parser, one level map (issue 14 item
10): the readers of :mod:`pacsbox.web` with each route family's wording, and the routes
that use them answering as before (texts as Orthanc 1.10.1 words them)."""
from __future__ import annotations

import falcon.testing
import pytest

from pacsbox import OrthancError
from pacsbox.index.models import CONTENT_TYPE_DICOM, LEVEL_NAMES, PLURAL, Level
from pacsbox.web import (FIND_FIELDS, MODIFY_FIELDS, read_bool, read_int, read_string, read_strings,
                         request_mode, request_permissive)


def _error(fn, *args, **kw):
    with pytest.raises(OrthancError) as e:
        fn(*args, **kw)
    return e.value.http_status, int(e.value.code), e.value.details


def test_readers_in_orthancs_serialization_words():
    body = {"B": True, "S": "x", "I": -3, "L": ["a", "b"], "N": None, "F": 1.5, "Big": 2 ** 31}
    assert (read_bool(body, "B", False), read_bool(body, "absent", None)) == (True, None)
    assert (read_string(body, "S"), read_string(body, "absent", "d")) == ("x", "d")
    assert (read_int(body, "I", 0), read_int(body, "absent", 7)) == (-3, 7)
    assert read_strings(body, "L") == ["a", "b"]
    assert _error(read_bool, body, "N", False) == (400, 15, "Boolean value expected in field: N")
    assert _error(read_string, body, "I") == (400, 15, "String value expected in field: I")
    assert _error(read_int, body, "F", 0) == (400, 15, "Integer value expected in field: F")
    assert _error(read_int, body, "B", 0) == (400, 15, "Integer value expected in field: B")
    assert _error(read_int, body, "Big", 0) == (400, 15, "Integer value expected in field: Big")
    assert _error(read_int, body, "I", 0, unsigned=True) == (400, 15, "Unsigned integer value expected in field: I")
    assert _error(read_strings, body, "absent") == (400, 15, "List of strings expected in field: absent")
    assert _error(read_strings, ["not", "an object"], "L") == (400, 15, "List of strings expected in field: L")


def test_readers_in_the_modify_and_find_words():
    assert _error(read_bool, {"Force": 1}, "Force", False, errors=MODIFY_FIELDS) == \
        (400, 15, 'Member "Force" should be a Boolean value')
    assert _error(read_bool, {"CaseSensitive": None}, "CaseSensitive", None, errors=FIND_FIELDS) == \
        (400, 8, 'Field "CaseSensitive" should be a Boolean')
    assert _error(read_int, {"Limit": "3"}, "Limit", 0, unsigned=True, errors=FIND_FIELDS) == \
        (400, 8, 'Field "Limit" should be an integer')
    assert _error(read_int, {"Limit": -1}, "Limit", 0, unsigned=True, errors=FIND_FIELDS) == \
        (400, 3, 'Field "Limit" should be a positive integer')


def test_request_mode_and_permissive():
    assert request_mode({}, True) == (True, 0)
    assert request_mode({"Asynchronous": True, "Priority": -5}, True) == (False, -5)
    assert request_mode({"Synchronous": True, "Asynchronous": True}, False) == (True, 0)
    assert request_mode(["a bare array"], False) == (False, 0)
    assert _error(request_mode, {"Synchronous": "yes"}) == (400, 15, "Boolean value expected in field: Synchronous")
    assert _error(request_mode, {"Priority": 2 ** 31}) == (400, 15, "Integer value expected in field: Priority")
    assert (request_permissive(None), request_permissive({"Permissive": True})) == (None, True)
    assert _error(request_permissive, {"Permissive": 0}) == (400, 15, "Boolean value expected in field: Permissive")


def test_one_level_map():
    assert [(lvl.type_name, lvl.plural) for lvl in Level] == list(zip(LEVEL_NAMES, PLURAL))
    assert [Level.parse(n) for n in ("patients", "STUDY", "Series", "image", "Images")] == \
        [Level.PATIENT, Level.STUDY, Level.SERIES, Level.INSTANCE, Level.INSTANCE]
    for bad in (" Study", "\u017ftudy", "levels", ""):
        assert _error(Level.parse, bad) == (400, 3, None)
    assert Level.SERIES.path("abc") == "/series/abc" and Level.SERIES == 2 and CONTENT_TYPE_DICOM == 1


@pytest.fixture()
def client(pacsbox_make_app):
    return falcon.testing.TestClient(pacsbox_make_app())


@pytest.mark.parametrize("path, body, expected", [
    # the job routes: Orthanc's ParseJsonRequest failing, 400 BadFileFormat without details
    ("/tools/bulk-modify", b"", (400, 15, None)),
    ("/tools/bulk-modify", b"[1, 2]", (400, 15, None)),
    ("/studies/x/split", b"not json", (400, 15, None)),
    ("/studies/x/split", b"[]", (400, 15, None)),
    ("/tools/bulk-modify", b'{"Replace": {"PatientName": "x"}, "Level": 3, "Resources": []}',
     (400, 15, "String value expected in field: Level")),
    ("/tools/bulk-modify", b'{"Replace": {"PatientName": "x"}, "Level": "levels", "Resources": []}', (400, 3, None)),
    ("/tools/bulk-modify", b'{"Replace": {"StudyDescription": "x"}, "LossyQuality": "90", "Resources": []}',
     (400, 15, "Integer value expected in field: LossyQuality")),
    ("/tools/bulk-anonymize", b'{"Force": "yes", "Resources": []}', (400, 15, 'Member "Force" should be a Boolean value')),
    ("/tools/bulk-anonymize", b'{"PrivateCreator": 3, "Resources": []}',
     (400, 15, "String value expected in field: PrivateCreator")),
    # the bulk content routes: 400 BadRequest
    ("/tools/bulk-content", b"", (400, 8, "The body must contain a JSON object")),
    ("/tools/bulk-delete", b"[]", (400, 8, "The body must contain a JSON object")),
    ("/tools/bulk-content", b'{"Resources": "x"}', (400, 15, "List of strings expected in field: Resources")),
    ("/tools/bulk-content", b'{"Resources": [], "Level": "Images", "Full": 1}',
     (400, 15, "Boolean value expected in field: Full")),
])
def test_routes_answer_in_orthancs_words(client, path, body, expected):
    r = client.simulate_post(path, body=body)
    assert (r.status_code, r.json.get("OrthancStatus"), r.json.get("Details")) == expected


def test_a_bulk_level_named_as_orthanc_reads_it(client):
    r = client.simulate_post("/tools/bulk-content", json={"Resources": [], "Level": "Images"})
    assert (r.status_code, r.json) == (200, [])
