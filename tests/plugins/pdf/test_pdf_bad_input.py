"""Bad ``POST /tools/create-dicom`` bodies: Orthanc 1.10.1's status and error body (recorded
from the reference server, compared live in ``test_pdf_reference.py``), and nothing stored."""
from __future__ import annotations

import base64

import pytest

from pdf_helpers import KIT_DICTIONARY, data_uri, pdf_client

B64 = base64.b64encode


def _err(status, code, message, details=None):
    return status, code, message, details


BAD = {
    "array": ([], _err(400, 8, "Bad request")),
    "string": ("x", _err(400, 8, "Bad request")),
    "number": (3, _err(400, 8, "Bad request")),
    "tags_string": ({"Tags": "x"}, _err(400, 8, "Bad request")),
    "tags_array": ({"Tags": []}, _err(400, 8, "Bad request")),
    "tags_null": ({"Tags": None}, _err(400, 8, "Bad request")),
    "v1_not_string": ({"PatientName": 3}, _err(400, 2019, "Only string values are supported when creating DICOM "
                                                         "instances")),
    "tag_value_number": ({"Tags": {"PatientName": 3}}, _err(400, 5, "Bad type for a parameter",
                                                            "Bad Parameter type for tag 0010,0010")),
    "pixel_data": ({"Tags": {"PixelData": "abc"}},
                   _err(400, 2021, "Use \"Content\" to inject an image into a new DICOM instance")),
    "mime_unsupported": ({"Tags": {}, "Content": "data:text/plain;base64,aGVsbG8="},
                         _err(500, 2, "Not implemented yet",
                              "Unsupported MIME type for the content of a new DICOM file: text/plain")),
    "not_a_data_uri": ({"Tags": {}, "Content": "hello"}, _err(400, 15, "Bad file format")),
    "bad_base64": ({"Tags": {}, "Content": "data:application/pdf;base64,%%%%"}, _err(400, 15, "Bad file format")),
    "no_base64_marker": ({"Tags": {}, "Content": "data:application/pdf,abc"}, _err(400, 15, "Bad file format")),
    "content_number": ({"Tags": {}, "Content": 3}, _err(
        400, 2023, "The payload of the DICOM instance must be specified according to Data URI scheme")),
    "content_object": ({"Tags": {}, "Content": {"x": 1}}, _err(
        400, 2023, "The payload of the DICOM instance must be specified according to Data URI scheme")),
    "png_undecodable": ({"Tags": {}, "Content": "data:image/png;base64," + B64(b"notapng").decode()},
                        _err(400, 15, "Bad file format")),
    "jpeg_undecodable": ({"Tags": {}, "Content": "data:image/jpeg;base64," + B64(b"notajpeg").decode()},
                         _err(500, -1, "Internal error",
                              "Error during JPEG decoding: Not a JPEG file: starts with 0x6e 0x6f")),
    "not_a_pdf": ({"Tags": {}, "Content": "data:application/pdf;base64," + B64(b"hello").decode()},
                  _err(400, 15, "Bad file format", "Not a PDF file")),
    "parent_unknown": ({"Tags": {}, "Parent": "01234567-89abcdef-01234567-89abcdef-01234567"},
                       _err(400, 2024, "Trying to attach a new DICOM instance to an inexistent resource")),
    "parent_garbage": ({"Tags": {}, "Parent": "xyz"},
                       _err(400, 2024, "Trying to attach a new DICOM instance to an inexistent resource")),
    "parent_number": ({"Tags": {}, "Parent": 3},
                      _err(400, 2024, "Trying to attach a new DICOM instance to an inexistent resource")),
    "private_name_unknown": ({"Tags": {"NoSuchPrivateName": "x"}, "PrivateCreator": "KitCreator"},
                             _err(500, 27, "Unknown DICOM tag")),
    "hex_tag_malformed": ({"Tags": {"zzzz,0010": "x"}}, _err(500, 27, "Unknown DICOM tag")),
    "text_in_public_us": ({"Tags": {"Rows": "abc"}}, _err(
        400, 15, "Bad file format", "While creating a DICOM instance, tag (0028,0010) has out-of-range value: \"abc\"")),
    "text_in_dictionary_us": ({"Tags": {"KitNumber": "abc"}, "PrivateCreator": "KitCreator"}, _err(
        400, 15, "Bad file format", "While creating a DICOM instance, tag (0041,1011) has out-of-range value: \"abc\"")),
    "string_for_sequence": ({"Tags": {"ReferencedStudySequence": "x"}}, _err(
        400, 15, "Bad file format", "While creating a DICOM instance, tag (0008,1110) has out-of-range value: \"x\"")),
    "override_uid": ({"Tags": {"StudyInstanceUID": "1.2.3"}},
                     _err(400, 2020, "Trying to override a value inherited from a parent module", "StudyInstanceUID")),
    "force_not_bool": ({"Tags": {}, "Force": "yes"}, _err(400, 8, "Bad request")),
    "interpret_not_bool": ({"Tags": {}, "InterpretBinaryTags": "yes"}, _err(400, 8, "Bad request")),
    "creator_not_string": ({"Tags": {}, "PrivateCreator": 3}, _err(400, 8, "Bad request")),
    "array_item_without_payload": ({"Tags": {}, "Content": [{"Tags": {}}]}, _err(404, 17, "Unknown resource")),
    "array_second_item_bad": ({"Tags": {}, "Content": ["data:application/pdf;base64,JVBERi0=", 3]}, _err(
        400, 2023, "The payload of the DICOM instance must be specified according to Data URI scheme")),
    "us_two_values": ({"Tags": {"Rows": "1\\2"}}, _err(
        400, 15, "Bad file format", "While creating a DICOM instance, tag (0028,0010) has out-of-range value: \"1\\2\"")),
    "us_with_space": ({"Tags": {"Rows": " 12"}}, _err(
        400, 15, "Bad file format", "While creating a DICOM instance, tag (0028,0010) has out-of-range value: \" 12\"")),
    "fd_three_values": ({"Tags": {"0018,9089": "1\\2\\3"}}, _err(
        400, 15, "Bad file format",
        "While creating a DICOM instance, tag (0018,9089) has out-of-range value: \"1\\2\\3\"")),
    "sequence_item_not_object": ({"Tags": {"ReferencedStudySequence": ["x"]}},
                                 _err(400, 5, "Bad type for a parameter")),
    "sequence_item_unknown_tag": ({"Tags": {"ReferencedStudySequence": [{"Nope": "x"}]}},
                                  _err(500, 27, "Unknown DICOM tag")),
    "charset_unknown": ({"Tags": {"SpecificCharacterSet": "ISO_IR 999"}},
                        _err(400, 3, "Parameter out of range", "Unknown specific character set: ISO_IR 999")),
    "content_null": ({"Tags": {}, "Content": None}, _err(
        400, 2023, "The payload of the DICOM instance must be specified according to Data URI scheme")),
    "v1_bad_pixel_data": ({"PatientName": "x", "PixelData": "nope"}, _err(400, 15, "Bad file format")),
    "v1_unknown_tag": ({"Nope": "x"}, _err(500, 27, "Unknown DICOM tag")),
}


@pytest.fixture
def client(make_app):
    return pdf_client(make_app, {"Dictionary": KIT_DICTIONARY})


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input(client, case):
    body, (status, code, message, details) = BAD[case]
    r = client.simulate_post("/tools/create-dicom", json=body)
    assert r.status_code == status
    expected = {"HttpStatus": status, "OrthancStatus": code, "Message": message, "OrthancError": message,
                "Method": "POST", "Uri": "/tools/create-dicom"}
    if details is not None:
        expected["Details"] = details
    got = {k: v for k, v in r.json.items() if k != "HttpError"}
    assert got == expected
    assert client.simulate_get("/instances").json == []


@pytest.mark.parametrize("raw", [b"{bad", b"", b"   ", b"\xff\xfe"])
def test_body_not_json(client, raw):
    r = client.simulate_post("/tools/create-dicom", body=raw)
    assert r.status_code == 400 and r.json["OrthancStatus"] == 8 and "Details" not in r.json


def test_parent_is_an_instance(client):
    inst = client.simulate_post("/tools/create-dicom", json={"Tags": {}}).json["ID"]
    r = client.simulate_post("/tools/create-dicom", json={"Tags": {}, "Parent": inst})
    assert r.status_code == 400 and r.json["OrthancStatus"] == 2025
    assert client.simulate_get("/instances").json == [inst]


def test_palette_png_not_implemented(client):
    from pdf_helpers import image_bytes
    r = client.simulate_post("/tools/create-dicom", json={"Tags": {}, "Content": data_uri("image/png", image_bytes("P"))})
    assert r.status_code == 500 and r.json["OrthancStatus"] == 2 and "Details" not in r.json


# ---- size limit ------------------------------------------------------------------------

class Unreadable:
    """A WSGI input that fails the test when the body is read."""

    def read(self, *args):
        raise AssertionError("the body was read")

    readline = read

    def readlines(self, *args):
        raise AssertionError("the body was read")

    def __iter__(self):
        raise AssertionError("the body was read")


def test_oversized_body_is_refused_before_reading(make_app):
    client = pdf_client(make_app, {"CreateDicomMaximumSize": 1})
    r = client.simulate_request("POST", "/tools/create-dicom", headers={"Content-Length": str(1 << 30)},
                                extras={"wsgi.input": Unreadable()})
    assert r.status_code == 413
    assert r.json["HttpStatus"] == 413 and r.json["OrthancStatus"] == 8
    assert r.json["Details"] == "The body of /tools/create-dicom exceeds CreateDicomMaximumSize (1048576 bytes)"


def test_gzip_body_is_counted_inflated(make_app):
    import gzip
    client = pdf_client(make_app, {"CreateDicomMaximumSize": 1})
    bomb = gzip.compress(b'{"Tags": {}, "Content": "data:application/pdf;base64,' + b"A" * (64 << 20) + b'"}')
    assert len(bomb) < 200_000
    r = client.simulate_post("/tools/create-dicom", body=bomb, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 413
    small = gzip.compress(b'{"Tags": {"PatientName": "Gz"}}')
    r = client.simulate_post("/tools/create-dicom", body=small, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 200


def test_body_under_the_limit_is_accepted(make_app):
    from pdf_helpers import make_pdf
    client = pdf_client(make_app, {"CreateDicomMaximumSize": 1})
    pdf = make_pdf(600_000)
    r = client.simulate_post("/tools/create-dicom", json={"Tags": {}, "Content": data_uri("application/pdf", pdf)})
    assert r.status_code == 200
    assert client.simulate_get(f"/instances/{r.json['ID']}/pdf").content == pdf
    big = make_pdf(900_000)  # 1.2 MB once base64-encoded
    r = client.simulate_post("/tools/create-dicom", json={"Tags": {}, "Content": data_uri("application/pdf", big)})
    assert r.status_code == 413


def test_bad_size_option_stops_the_start(make_app):
    from pacsbox import ConfigError, StartupError
    with pytest.raises((ConfigError, StartupError)):
        pdf_client(make_app, {"CreateDicomMaximumSize": "big"})


def _rss_mb() -> int:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS")).split()[1]) // 1024


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/status"), reason="needs /proc")
def test_large_body_through_the_server_keeps_memory_flat(live_server):
    """A 200 MB body on a real server (waitress spools it to a file): 413 from the option,
    and the process does not grow by the body's size."""
    import select
    import socket
    import pacsbox_pdf.plugin as pdf_plugin
    server = live_server({"CreateDicomMaximumSize": 1}, plugins=[pdf_plugin])
    size = 200 << 20
    before = _rss_mb()
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(f"POST /tools/create-dicom HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode())
        chunk, sent, answer = b"A" * (1 << 20), 0, b""
        while sent < size and not select.select([s], [], [], 0)[0]:  # waitress answers once it has it all
            s.sendall(chunk)
            sent += len(chunk)
        s.settimeout(30)
        while b"\r\n\r\n" not in answer:
            answer += s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413")
    assert _rss_mb() - before < 64
