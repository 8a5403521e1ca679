"""The SCP's association checks, C-ECHO and C-STORE, with dcmtk's echoscu/storescu and
pynetdicom peers on loopback (reference section 9.7)."""
from __future__ import annotations

import io
import logging
import socket
import struct
import threading
import time
import warnings
import zlib

import pydicom
import pytest
from pydicom.dataset import Dataset
import requests
from pydicom.data import get_testdata_file
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, Verification

from pacsbox import hookimpl, read_file_meta
from pacsbox.testing import free_port, inline_plugin

import pacsbox_dicom_net.scp as scp_module
from scp_helpers import run_dcmtk, sample


def echo(node, *args, aet="ECHOSCU", called=None):
    return run_dcmtk("echoscu", "-aet", aet, "-aec", called or node.aet, *args, "127.0.0.1", str(node.dicom_port),
                     timeout=30)


def instances(node):
    return requests.get(node.url + "/instances?expand", timeout=10).json()


def dataset_bytes(data: bytes) -> bytes:
    """The data set part of a Part-10 file (inflated when deflated)."""
    meta = read_file_meta(data)
    body = data[meta.dataset_offset:]
    if meta.transfer_syntax == "1.2.840.10008.1.2.1.99":
        body = zlib.decompress(body, -15)
    return body


# ---- association ---------------------------------------------------------------------

def test_echo_any_aet_by_default(node):
    n = node()
    r = echo(n, "-v", aet="WHOEVER")
    assert r.returncode == 0, r.stderr
    assert "Received Echo Response (Success)" in r.stderr


def test_called_aet_checked(node):
    n = node({"DicomCheckCalledAet": True})
    r = echo(n, called="NOTME")
    assert r.returncode != 0
    assert "Reason: Called AE Title Not Recognized" in r.stderr
    assert echo(n, called="PACSBOX").returncode == 0
    # case-insensitive unless StrictAetComparison
    assert echo(n, called="pacsbox").returncode == 0
    strict = node({"DicomCheckCalledAet": True, "StrictAetComparison": True})
    r = echo(strict, called="pacsbox")
    assert r.returncode != 0 and "Reason: Called AE Title Not Recognized" in r.stderr


def _closed(extra=None):
    cfg = {name: False for name in ("DicomAlwaysAllowEcho", "DicomAlwaysAllowStore", "DicomAlwaysAllowFind",
                                    "DicomAlwaysAllowFindWorklist", "DicomAlwaysAllowGet", "DicomAlwaysAllowMove")}
    cfg.update(extra or {})
    return cfg


def test_calling_aet_must_be_a_modality_when_nothing_is_always_allowed(node):
    n = node(_closed({"DicomModalities": {"known": ["KNOWN", "127.0.0.1", 104],
                                          "elsewhere": ["FAR", "10.1.2.3", 104]}}))
    r = echo(n, aet="STRANGER")
    assert r.returncode != 0 and "Reason: Calling AE Title Not Recognized" in r.stderr
    assert echo(n, aet="KNOWN").returncode == 0
    assert echo(n, aet="known").returncode == 0
    assert echo(n, aet="FAR").returncode == 0   # host not checked by default
    checked = node(_closed({"DicomCheckModalityHost": True,
                            "DicomModalities": {"elsewhere": ["FAR", "10.1.2.3", 104]}}))
    r = echo(checked, aet="FAR")
    assert r.returncode != 0 and "Reason: Calling AE Title Not Recognized" in r.stderr


def test_refused_command_gets_a_status_not_an_abort(node):
    n = node(_closed({"DicomModalities": {"m": {"AET": "NOECHO", "Host": "127.0.0.1", "Port": 104,
                                                "AllowEcho": False}}}))
    ae = AE(ae_title="NOECHO")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", n.dicom_port, ae_title="PACSBOX")
    assert assoc.is_established
    status = assoc.send_c_echo()
    assert status.Status == 0x0124
    # the association goes on
    assert assoc.send_c_echo().Status == 0x0124
    assoc.release()


def test_hook_filter_incoming_association(node, caplog):
    seen = []

    def filt(calling_aet, called_aet, ip):
        seen.append((calling_aet, called_aet, ip))
        return calling_aet != "BLOCKED"

    n = node(plugins=[inline_plugin("assocfilter", filter_incoming_association=(filt, {"optionalhook": True}))])
    assert echo(n, aet="FRIEND").returncode == 0
    r = echo(n, aet="BLOCKED")
    assert r.returncode != 0 and "Reason: Calling AE Title Not Recognized" in r.stderr
    assert seen == [("FRIEND", "PACSBOX", "127.0.0.1"), ("BLOCKED", "PACSBOX", "127.0.0.1")]


def test_hook_filter_incoming_association_that_raises_rejects_and_names_the_plugin(node, caplog):
    def filt(calling_aet, called_aet, ip):
        raise RuntimeError("boom")

    n = node(plugins=[inline_plugin("brokenfilter", filter_incoming_association=(filt, {"optionalhook": True}))])
    with caplog.at_level(logging.ERROR):
        r = echo(n, aet="ANY")
    assert r.returncode != 0 and "Reason: Calling AE Title Not Recognized" in r.stderr
    assert "brokenfilter" in caplog.text and "filter_incoming_association" in caplog.text
    # the server still serves the next peer once the filter is fixed
    assert scp_module.server_of(n.ctx) is not None


def test_port_in_use_names_the_option(live_server):
    import pacsbox_dicom_net.plugin as dicom_net_plugin
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    port = sock.getsockname()[1]
    try:
        with pytest.raises(Exception) as info:
            live_server({"DicomPort": port}, plugins=[dicom_net_plugin])
        assert "DicomPort" in str(info.value)
    finally:
        sock.close()


def test_server_disabled(node):
    n = node({"DicomServerEnabled": False})
    assert scp_module.server_of(n.ctx) is None
    assert echo(n).returncode != 0


def test_fifty_associations_at_once_are_all_served(node):
    n = node({"DicomThreadsCount": 2})
    results = []

    def one():
        ae = AE(ae_title="MANY")
        ae.add_requested_context(Verification)
        ae.acse_timeout = 30
        assoc = ae.associate("127.0.0.1", n.dicom_port)
        ok = assoc.is_established and assoc.send_c_echo().Status == 0
        if assoc.is_established:
            assoc.release()
        results.append(ok)

    threads = [threading.Thread(target=one) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results.count(True) == 50
    assert echo(n).returncode == 0


# ---- C-STORE -------------------------------------------------------------------------

#: One file per transfer-syntax family, with the storescu option that proposes its
#: transfer syntax.
FAMILIES = [
    ("MR_small_implicit.dcm", "1.2.840.10008.1.2", ["-xi"]),
    ("CT_small.dcm", "1.2.840.10008.1.2.1", ["-xe"]),
    ("MR_small_bigendian.dcm", "1.2.840.10008.1.2.2", ["-xb"]),
    ("image_dfl.dcm", "1.2.840.10008.1.2.1.99", ["-xd"]),
    ("SC_rgb_jpeg_dcmtk.dcm", "1.2.840.10008.1.2.4.50", ["-xy"]),
    ("JPEG-LL.dcm", "1.2.840.10008.1.2.4.70", ["-xs"]),
    ("MR_small_jpeg_ls_lossless.dcm", "1.2.840.10008.1.2.4.80", ["-xt"]),
    ("MR_small_jp2klossless.dcm", "1.2.840.10008.1.2.4.90", ["-xv"]),
    ("MR_small_RLE.dcm", "1.2.840.10008.1.2.5", ["-xr"]),
]


def _check_metadata(n, inst_id, ts, calling):
    md = requests.get(f"{n.url}/instances/{inst_id}/metadata?expand", timeout=10).json()
    assert (md["Origin"], md["RemoteAET"], md["CalledAET"], md["RemoteIP"], md["TransferSyntax"]) == \
        ("DicomProtocol", calling, "PACSBOX", "127.0.0.1", ts)


@pytest.mark.parametrize("name,ts,opts", FAMILIES, ids=[f[1] for f in FAMILIES])
def test_store_keeps_the_data_set_byte_for_byte(node, name, ts, opts):
    """The data set bytes of the P-DATA are the stored file's data set, exactly (sent
    with a hand-made C-STORE whose data set is the source file's data set, byte for
    byte, still deflated for the deflated transfer syntax)."""
    n = node()
    path = sample(name)
    source = open(path, "rb").read()
    smeta = read_file_meta(source)
    body = source[smeta.dataset_offset:]
    status = _pynetdicom_store(n.dicom_port, body, smeta.sop_class_uid, smeta.sop_instance_uid, ts=ts)
    assert status == 0x0000
    [inst] = instances(n)
    stored = requests.get(f"{n.url}/instances/{inst['ID']}/file", timeout=10).content
    meta = read_file_meta(stored)
    assert stored[meta.dataset_offset:] == body
    assert stored[:132] == b"\0" * 128 + b"DICM"
    assert (meta.transfer_syntax, meta.sop_class_uid, meta.sop_instance_uid) == \
        (ts, smeta.sop_class_uid, smeta.sop_instance_uid)
    # the file meta names the sender, as DCMTK's storescp writes it
    assert pydicom.dcmread(io.BytesIO(stored), stop_before_pixels=True).file_meta.SourceApplicationEntityTitle \
        == "RAWSCU"
    _check_metadata(n, inst["ID"], ts, "RAWSCU")


@pytest.mark.parametrize("name,ts,opts", FAMILIES, ids=[f[1] for f in FAMILIES])
def test_storescu_every_transfer_syntax_family(node, name, ts, opts):
    """dcmtk's storescu re-encodes what it sends (drops trailing padding, writes sequences
    with explicit lengths): the stored file keeps the transfer syntax, and its pixel data
    and every other element equal the source's."""
    n = node()
    path = sample(name)
    r = run_dcmtk("storescu", "-R", "-aet", "SENDER", "-aec", "PACSBOX", *opts, "127.0.0.1", str(n.dicom_port), path)
    assert r.returncode == 0, r.stderr
    [inst] = instances(n)
    stored = requests.get(f"{n.url}/instances/{inst['ID']}/file", timeout=10).content
    assert read_file_meta(stored).transfer_syntax == ts
    got = pydicom.dcmread(io.BytesIO(stored))
    want = pydicom.dcmread(path)
    assert got.PixelData == want.PixelData
    skip = {0xFFFCFFFC}
    assert [e.tag for e in got if e.tag not in skip] == [e.tag for e in want if e.tag not in skip]
    _check_metadata(n, inst["ID"], ts, "SENDER")


def test_duplicate_is_success(node):
    n = node()
    path = sample("CT_small.dcm")
    for _ in range(2):
        r = run_dcmtk("storescu", "-v", "127.0.0.1", str(n.dicom_port), path)
        assert r.returncode == 0 and "Received Store Response (Success)" in r.stderr
    assert len(instances(n)) == 1


def _pynetdicom_store(port, ds_bytes, sop_class, sop_instance, ts="1.2.840.10008.1.2.1", abort_after=False):
    """Send raw data set bytes with a hand-made C-STORE command; returns the status."""
    from pynetdicom.dimse_primitives import C_STORE
    ae = AE(ae_title="RAWSCU")
    ae.add_requested_context(sop_class, [ts])
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSBOX")
    assert assoc.is_established
    req = C_STORE()
    req.MessageID = 1
    req.AffectedSOPClassUID = sop_class
    req.AffectedSOPInstanceUID = sop_instance
    req.Priority = 2
    req.DataSet = io.BytesIO(ds_bytes)
    cx_id = assoc.accepted_contexts[0].context_id
    # pause the requestor's reactor, as pynetdicom's send_* do, so that it does not take
    # the response off the queue
    assoc._reactor_checkpoint.clear()
    while not assoc._is_paused:
        time.sleep(0.001)
    try:
        assoc.dimse.send_msg(req, cx_id)
        if abort_after:
            return None
        _, rsp = assoc.dimse.get_msg(block=True)
    finally:
        assoc._reactor_checkpoint.set()
    if abort_after:
        assoc.abort()
        return None
    status = rsp.Status
    assoc.release()
    return status


def test_uid_mismatch_truncated_and_unparseable_data_sets(node):
    n = node()
    path = sample("CT_small.dcm")
    source = open(path, "rb").read()
    body = source[read_file_meta(source).dataset_offset:]
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    # the command's SOP Instance UID differs from the data set's: 0xA900, as Orthanc (DCMTK)
    assert _pynetdicom_store(n.dicom_port, body, CTImageStorage, "1.2.3.4") == 0xA900
    # truncated in the middle of the pixel data: cannot be stored
    assert _pynetdicom_store(n.dicom_port, body[: len(body) - 1000], CTImageStorage, ds.SOPInstanceUID) == 0xC000
    # garbage
    assert _pynetdicom_store(n.dicom_port, bytes(range(256)), CTImageStorage, ds.SOPInstanceUID) == 0xC000
    assert instances(n) == []
    # and the server goes on storing
    assert _pynetdicom_store(n.dicom_port, body, CTImageStorage, ds.SOPInstanceUID) == 0x0000
    assert len(instances(n)) == 1


def _pdv(context_id: int, control: int, data: bytes) -> bytes:
    return struct.pack(">IBB", len(data) + 2, context_id, control) + data


def _p_data(*pdvs: bytes) -> bytes:
    body = b"".join(pdvs)
    return struct.pack(">BBI", 0x04, 0, len(body)) + body


def _store_command(sop_class: str, sop_instance: str) -> bytes:
    from pynetdicom.dsutils import encode
    cmd = Dataset()
    cmd.CommandGroupLength = 0
    cmd.AffectedSOPClassUID = sop_class
    cmd.CommandField = 0x0001
    cmd.MessageID = 7
    cmd.Priority = 0
    cmd.CommandDataSetType = 0x0000
    cmd.AffectedSOPInstanceUID = sop_instance
    raw = encode(cmd, True, True)
    cmd.CommandGroupLength = len(raw) - 12
    return encode(cmd, True, True)


def test_abort_in_the_middle_of_a_store_stores_nothing(node):
    """An association aborted after the command and half of the data set (a P-DATA
    fragment without the last-fragment bit): nothing is stored, the server goes on."""
    n = node()
    path = sample("CT_small.dcm")
    source = open(path, "rb").read()
    meta = read_file_meta(source)
    body = source[meta.dataset_offset:]
    ae = AE(ae_title="HALF")
    ae.add_requested_context(CTImageStorage, ["1.2.840.10008.1.2.1"])
    assoc = ae.associate("127.0.0.1", n.dicom_port, ae_title="PACSBOX")
    assert assoc.is_established
    cx_id = assoc.accepted_contexts[0].context_id
    sock = assoc.dul.socket.socket
    assoc._reactor_checkpoint.clear()  # keep pynetdicom's own threads quiet
    sock.sendall(_p_data(_pdv(cx_id, 0x03, _store_command(CTImageStorage, meta.sop_instance_uid))))
    sock.sendall(_p_data(_pdv(cx_id, 0x00, body[: len(body) // 2])))
    sock.sendall(struct.pack(">BBIBBBB", 0x07, 0, 4, 0, 0, 0, 0))  # A-ABORT
    assoc._reactor_checkpoint.set()
    assoc.abort()
    # the SCP is still serving, and stored nothing
    assert echo(n).returncode == 0
    assert instances(n) == []
    assert requests.get(n.url + "/statistics", timeout=10).json()["CountInstances"] == 0
    # control: the same hand-made PDUs with the whole data set and the last-fragment bit
    assoc = ae.associate("127.0.0.1", n.dicom_port, ae_title="PACSBOX")
    assoc._reactor_checkpoint.clear()
    while not assoc._is_paused:
        time.sleep(0.001)
    sock = assoc.dul.socket.socket
    sock.sendall(_p_data(_pdv(cx_id, 0x03, _store_command(CTImageStorage, meta.sop_instance_uid))))
    sock.sendall(_p_data(_pdv(cx_id, 0x02, body)))
    _, rsp = assoc.dimse.get_msg(block=True)
    assoc._reactor_checkpoint.set()
    assert rsp.Status == 0x0000
    assoc.release()
    assert len(instances(n)) == 1


def test_unknown_sop_class_only_when_accepted(node):
    n = node()
    path = sample("CT_small.dcm")
    ds = pydicom.dcmread(path)
    ds.SOPClassUID = "1.2.3.4.5.6.7"
    ds.file_meta.MediaStorageSOPClassUID = "1.2.3.4.5.6.7"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    body = data[read_file_meta(data).dataset_offset:]

    ae = AE(ae_title="ODD")
    ae.add_requested_context("1.2.3.4.5.6.7", ["1.2.840.10008.1.2.1"])
    assoc = ae.associate("127.0.0.1", n.dicom_port)
    # the context is refused (pynetdicom then aborts: no accepted context)
    assert not assoc.is_established
    assert [cx.abstract_syntax for cx in assoc.rejected_contexts] == ["1.2.3.4.5.6.7"]

    r = requests.put(n.url + "/tools/unknown-sop-class-accepted", data="1", timeout=10)
    assert r.status_code == 200
    assert _pynetdicom_store(n.dicom_port, body, "1.2.3.4.5.6.7", ds.SOPInstanceUID) == 0x0000
    [inst] = instances(n)
    md = requests.get(f"{n.url}/instances/{inst['ID']}/metadata/SopClassUid", timeout=10).text
    assert md == "1.2.3.4.5.6.7"


def test_accepted_transfer_syntaxes_change_at_run_time(node):
    n = node()
    path = sample("JPEG-LL.dcm")
    r = requests.put(n.url + "/tools/accepted-transfer-syntaxes", json=["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"],
                     timeout=10)
    assert r.status_code == 200
    r = run_dcmtk("storescu", "-v", "-R", "-xs", "--decompress-never", "127.0.0.1", str(n.dicom_port), path)
    assert r.returncode != 0 or "No presentation context" in r.stderr or "no acceptable" in r.stderr.lower()
    assert instances(n) == []
    r = requests.put(n.url + "/tools/accepted-transfer-syntaxes", json="1.2.840.10008.1.2.4.7?", timeout=10)
    assert r.status_code == 200 and r.json() == ["1.2.840.10008.1.2.4.70"]
    r = run_dcmtk("storescu", "-R", "-xs", "127.0.0.1", str(n.dicom_port), path)
    assert r.returncode == 0, r.stderr
    assert len(instances(n)) == 1


def test_filter_that_raises_gives_a_failure_status_and_names_the_plugin(node, caplog):
    def refuse(dataset, origin):
        if dataset.Modality == "CT":
            raise ValueError("filter bug")
        return dataset.Modality != "MR"

    n = node(plugins=[inline_plugin("badinstancefilter", filter_received_instance=refuse)])
    with caplog.at_level(logging.ERROR):
        r = run_dcmtk("storescu", "-v", "-R", "-nh", "127.0.0.1", str(n.dicom_port), sample("CT_small.dcm"),
                      sample("MR_small_implicit.dcm"), sample("SC_rgb.dcm"))
    assert "badinstancefilter" in caplog.text
    # all three answered on one association: the raising filter is a failure (0xA700, as
    # Orthanc answers an exception), the filter that says no is a success (as Orthanc
    # 1.10.1), the third is stored
    assert r.stderr.count("Received Store Response") == 3
    assert "Received Store Response (Refused: OutOfResources)" in r.stderr
    assert r.stderr.count("Received Store Response (Success)") == 2
    assert [i["MainDicomTags"]["SOPInstanceUID"] for i in instances(n)] == \
        [pydicom.dcmread(sample("SC_rgb.dcm")).SOPInstanceUID]
    # the core reports which plugin raised
    result = n.ctx.ingest.store(open(sample("CT_small.dcm"), "rb").read())
    assert (result.status, result.failed_filters) == ("FilteredOut", ("badinstancefilter",))


def test_idle_association_ends_after_dicom_scp_timeout(node):
    n = node({"DicomScpTimeout": 1})
    ae = AE(ae_title="IDLE")
    ae.add_requested_context(Verification)
    # measured from before the association request: the server's idle time starts after
    # it, so 1 s is a lower bound on any machine (from after the association, a slow test
    # thread measured less); the upper bound tells DicomScpTimeout 1 from its default (30)
    t0 = time.monotonic()
    assoc = ae.associate("127.0.0.1", n.dicom_port, ae_title="PACSBOX")
    assert assoc.is_established
    while assoc.is_established and time.monotonic() - t0 < 30:
        time.sleep(0.05)
    assert not assoc.is_established and assoc.is_aborted
    assert 0.9 < time.monotonic() - t0 < 20
    assert echo(n).returncode == 0


@pytest.mark.parametrize("aet", ["STORESCU", "ODD", ""])
def test_part10_file_meta_equals_pydicom_writer(aet):
    """The hand-encoded File Meta Information of a received instance is byte for byte
    what pydicom's writer makes of pynetdicom's ``event.file_meta``."""
    import io
    from types import SimpleNamespace

    from pydicom.dataset import FileMetaDataset
    from pydicom.filewriter import write_file_meta_info
    from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

    from pacsbox_dicom_net.store_scp import part10_file
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.21"
    meta.MediaStorageSOPInstanceUID = "1.2.3.4.5"
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    meta.ImplementationClassUID = PYNETDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = PYNETDICOM_IMPLEMENTATION_VERSION
    if aet:
        meta.SourceApplicationEntityTitle = aet
    buf = io.BytesIO()
    buf.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(buf, meta, enforce_standard=True)
    buf.write(b"\x08\x00\x05\x00CS\x00\x00")
    req = SimpleNamespace(DataSet=io.BytesIO(b"\x08\x00\x05\x00CS\x00\x00"),
                          AffectedSOPClassUID="1.2.840.10008.5.1.4.1.1.21", AffectedSOPInstanceUID="1.2.3.4.5")
    event = SimpleNamespace(request=req, context=SimpleNamespace(transfer_syntax="1.2.840.10008.1.2.1"),
                            assoc=SimpleNamespace(pacsbox_peer={"RemoteAET": aet}))
    assert part10_file(event) == buf.getvalue()
