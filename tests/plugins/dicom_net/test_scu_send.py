"""send.py: the C-STORE SCU toward real peers (dcmtk storescp, a scriptable pynetdicom SCP)."""
from __future__ import annotations

import os
import select
import socket
import threading
import time

import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file
from pynetdicom.sop_class import CTImageStorage

from pacsbox import read_file_meta
from pacsbox.testing import free_port

from pacsbox_dicom_net.modalities import Modality
from pacsbox_dicom_net.send import StoreSender, instance_uids, plan_instances
from pacsbox_dicom_net.send_contexts import EXPLICIT_LE, IMPLICIT_LE, plan_contexts
from pacsbox_dicom_net.send_wire import SendInterrupted

CT = get_testdata_file("CT_small.dcm")          # Explicit VR Little Endian
MR = get_testdata_file("MR_small.dcm")          # Explicit VR Little Endian
JPEG = get_testdata_file("SC_rgb_jpeg_dcmtk.dcm")  # JPEG Baseline


def _bytes(path):
    with open(path, "rb") as f:
        return f.read()


def _upload(node, *paths):
    ids = []
    for p in paths:
        r = requests.post(node.url + "/instances", data=_bytes(p))
        assert r.status_code == 200, r.text
        ids.append(r.json()["ID"])
    return ids


def test_plan_contexts_stored_syntax_first_then_uncompressed():
    cxs = plan_contexts([("1.2.3", "1.2.840.10008.1.2.4.50"), ("1.2.3", EXPLICIT_LE), ("1.2.4", IMPLICIT_LE)],
                        allow_transcoding=True, preferred_ts=IMPLICIT_LE)
    got = [(str(c.abstract_syntax), [str(t) for t in c.transfer_syntax]) for c in cxs]
    assert got == [("1.2.3", ["1.2.840.10008.1.2.4.50"]), ("1.2.3", [EXPLICIT_LE]),
                   ("1.2.3", [IMPLICIT_LE, EXPLICIT_LE, "1.2.840.10008.1.2.2"]),
                   ("1.2.4", [IMPLICIT_LE]), ("1.2.4", [IMPLICIT_LE, EXPLICIT_LE, "1.2.840.10008.1.2.2"]),
                   ("1.2.840.10008.1.1", [IMPLICIT_LE])]
    # no transcoding: a compressed instance is proposed in its own syntax only
    cxs = plan_contexts([("1.2.3", "1.2.840.10008.1.2.4.50")], allow_transcoding=False)
    assert [[str(t) for t in c.transfer_syntax] for c in cxs] == [["1.2.840.10008.1.2.4.50"], [IMPLICIT_LE]]
    # 128 contexts at most
    cxs = plan_contexts([(f"1.2.{i}", EXPLICIT_LE) for i in range(100)], allow_transcoding=True)
    assert len(cxs) == 127 and cxs[-1].abstract_syntax == "1.2.840.10008.1.1"  # 63 classes x 2, Verification


def test_send_unchanged_bytes_to_dcmtk_storescp(node, tmp_path, dcmtk_tools):
    dcmtk = dcmtk_tools[0]
    n = node()
    _upload(n, CT, MR, JPEG)
    out = tmp_path / "out"
    out.mkdir()
    port = free_port()
    import subprocess
    proc = subprocess.Popen([dcmtk("storescp"), "+xa", "+B", "--output-directory", str(out), "-aet", "DCMTK", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, TCP_NODELAY="1"))
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        ctx = n.ctx
        insts = ctx.resources.instances_of(ctx.resources.resolve_many(ctx.index.list_public_ids(3)))
        mod = Modality("DCMTK", "127.0.0.1", port)
        with StoreSender(ctx, mod) as sender:
            sender.plan(plan_instances(ctx, insts))
            results = [sender.send(ctx.resources.read_file(i), uids=instance_uids(ctx, i)) for i in insts]
            first_assoc = sender.assoc
            assert [r.status for r in results] == [0, 0, 0], [(r.sop_class_uid, r.transfer_syntax, r.status) for r in results]
            assert not any(r.transcoded for r in results)
            assert sender.assoc is first_assoc  # one association for all
    finally:
        proc.terminate()
        proc.wait(10)
    files = sorted(os.listdir(out))
    assert len(files) == 3
    sent = {}
    for f in files:
        data = (out / f).read_bytes()
        m = read_file_meta(data)
        sent[m.sop_instance_uid] = (m.transfer_syntax, data[m.dataset_offset:])
    for p in (CT, MR, JPEG):
        data = _bytes(p)
        m = read_file_meta(data)
        uid = pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID  # JPEG's meta group disagrees
        assert sent[uid] == (m.transfer_syntax, data[m.dataset_offset:])


def test_statuses_are_data_and_move_originator(node, storage_scp):
    n = node()
    _upload(n, CT)
    scp = storage_scp("STATUSES")
    ctx = n.ctx
    data = ctx.resources.read_file(ctx.index.list_public_ids(3)[0])
    mod = Modality("STATUSES", "127.0.0.1", scp.port)
    statuses = iter([0xB000, 0xB007, 0xB006, 0xA700, 0xC000, 0x0000])
    scp.status = lambda ds: next(statuses)
    with StoreSender(ctx, mod, local_aet="CALLER") as sender:
        results = [sender.send(data, originator_aet="MOVER", originator_id=7) for _ in range(6)]
    assert [r.category for r in results] == ["warning"] * 3 + ["failure"] * 2 + ["success"]
    assert [r.ok for r in results] == [True] * 3 + [False] * 2 + [True]
    assert results[3].error == 'C-STORE SCU to AET "STATUSES" has failed with DIMSE status 0xA700'
    ds, info = scp.received[0]
    assert info["calling_aet"] == "CALLER"
    assert info["move_originator_aet"] == "MOVER" and info["move_originator_id"] == 7
    m = read_file_meta(data)
    assert info["raw"] == data[m.dataset_offset:]
    assert info["transfer_syntax"] == m.transfer_syntax


def test_refused_context_fails_that_instance_only(node, storage_scp):
    n = node()
    _upload(n, CT, JPEG)
    # the SCP takes CT images only, in Implicit VR Little Endian only
    scp = storage_scp("CTONLY", contexts=[(CTImageStorage, [IMPLICIT_LE])])
    ctx = n.ctx
    insts = ctx.resources.instances_of(ctx.resources.resolve_many(ctx.index.list_public_ids(3)))
    mod = Modality("CTONLY", "127.0.0.1", scp.port)
    with StoreSender(ctx, mod) as sender:
        sender.plan(plan_instances(ctx, insts))
        results = {r.sop_class_uid: r for r in (sender.send(ctx.resources.read_file(i), uids=instance_uids(ctx, i))
                                                 for i in insts)}
    ct = results[CTImageStorage]
    assert ct.ok and ct.transcoded and ct.transfer_syntax == IMPLICIT_LE
    other = [r for k, r in results.items() if k != CTImageStorage][0]
    assert not other.ok and other.status is None and other.error_code == 2
    assert other.error == "Cannot transcode from 1.2.840.10008.1.2.4.50 to one of [ ]"
    # the peer got an Implicit VR data set that says what it is
    ds, info = scp.received[0]
    assert info["transfer_syntax"] == IMPLICIT_LE
    orig = pydicom.dcmread(CT)
    assert ds.SOPInstanceUID == orig.SOPInstanceUID and ds.PixelData == orig.PixelData


def test_no_transcoding_when_modality_forbids(node, storage_scp):
    n = node()
    _upload(n, CT)
    scp = storage_scp("IMPL", contexts=[(CTImageStorage, [IMPLICIT_LE])])
    ctx = n.ctx
    mod = Modality("IMPL", "127.0.0.1", scp.port,
                   allow={"AllowTranscoding": False})
    data = ctx.resources.read_file(ctx.index.list_public_ids(3)[0])
    with StoreSender(ctx, mod) as sender:
        assert sender.allow_transcoding is False
        # uncompressed: only the element encoding changes, which stays allowed
        r = sender.send(data)
    assert r.ok and r.transfer_syntax == IMPLICIT_LE


def test_interrupt_while_peer_never_answers(node, storage_scp):
    """A send blocked on a peer that never answers ends with SendInterrupted when
    interrupted once blocked there: long before the peer's timeout of 60 s (the bound of
    30 s tells the two apart; it used to be 1.5 s, which a loaded machine can exceed)."""
    n = node()
    _upload(n, CT)
    ctx = n.ctx
    data = ctx.resources.read_file(ctx.index.list_public_ids(3)[0])

    def interrupt_when(blocked, sender):
        def run():
            if blocked():
                sender.interrupt()
        threading.Thread(target=run, daemon=True).start()

    # 1) a TCP listener that never speaks DICOM: interrupted once the connection waits on it
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(5)
    mod = Modality("MUTE", "127.0.0.1", lsock.getsockname()[1], timeout=60)
    sender = StoreSender(ctx, mod)
    interrupt_when(lambda: select.select([lsock], [], [], 30)[0], sender)
    t0 = time.monotonic()
    with pytest.raises(SendInterrupted):
        sender.send(data)
    assert time.monotonic() - t0 < 30
    lsock.close()
    # 2) an SCP that accepts the association and never answers the C-STORE: interrupted
    # once the request is there
    scp = storage_scp("SILENT")
    arrived = threading.Event()

    def never_answer(ds):
        arrived.set()
        scp.stop_event.wait(60)
        return 0xC000

    scp.status = never_answer
    mod = Modality("SILENT", "127.0.0.1", scp.port, timeout=60)
    sender = StoreSender(ctx, mod)
    interrupt_when(lambda: arrived.wait(30), sender)
    t0 = time.monotonic()
    with pytest.raises(SendInterrupted):
        sender.send(data)
    assert time.monotonic() - t0 < 30
    sender.close()


@pytest.mark.parametrize("originator", [None, ("MOVER", 7), ("ODD", 65535)])
@pytest.mark.parametrize("size,max_pdu", [(1, 16384), (39000, 16384), (16378, 16384), (5000, 0)])
def test_c_store_pdus_equal_pynetdicom_encoding(originator, size, max_pdu):
    from io import BytesIO

    from pynetdicom.dimse_messages import C_STORE_RQ
    from pynetdicom.dimse_primitives import C_STORE

    from pacsbox_dicom_net.send_wire import encode_c_store_pdus
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    req = C_STORE()
    req.MessageID, req.Priority = 12, 2
    req.AffectedSOPClassUID, req.AffectedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", "1.2.3.45"
    if originator:
        req.MoveOriginatorApplicationEntityTitle, req.MoveOriginatorMessageID = originator
    req.DataSet = BytesIO(data)
    msg = C_STORE_RQ()
    msg.primitive_to_message(req)
    from pynetdicom.pdu import P_DATA_TF
    pdus = []
    for prim in msg.encode_msg(5, max_pdu):
        pdu = P_DATA_TF()
        pdu.from_primitive(prim)
        pdus.append(pdu.encode())
    theirs = b"".join(pdus)
    ours = encode_c_store_pdus(5, max_pdu, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.45", data, msg_id=12, priority=2,
                               originator_aet=originator[0] if originator else None,
                               originator_id=originator[1] if originator else None)
    assert ours == theirs


@pytest.mark.parametrize("kind", ["move", "get"])
def test_pending_pdu_equals_pynetdicom_encoding(kind):
    from pynetdicom.dimse_messages import C_GET_RSP, C_MOVE_RSP
    from pynetdicom.dimse_primitives import C_GET, C_MOVE
    from pynetdicom.pdu import P_DATA_TF

    from pacsbox_dicom_net.send_wire import encode_pending_pdu
    prim, msg_cls = (C_MOVE, C_MOVE_RSP) if kind == "move" else (C_GET, C_GET_RSP)
    rsp = prim()
    rsp.MessageIDBeingRespondedTo = 3
    rsp.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.2"
    rsp.Status = 0xFF00
    rsp.NumberOfRemainingSuboperations, rsp.NumberOfCompletedSuboperations = 498, 1
    rsp.NumberOfFailedSuboperations, rsp.NumberOfWarningSuboperations = 1, 0
    msg = msg_cls()
    msg.primitive_to_message(rsp)
    pdus = []
    for p in msg.encode_msg(7, 16384):
        pdu = P_DATA_TF()
        pdu.from_primitive(p)
        pdus.append(pdu.encode())
    ours = encode_pending_pdu(7, 0x8021 if kind == "move" else 0x8010, "1.2.840.10008.5.1.4.1.2.2.2", 3,
                              remaining=498, completed=1, failed=1, warning=0)
    assert ours == b"".join(pdus)


def test_peer_abort_during_a_store_is_a_network_error(node):
    from pynetdicom import AE, AllStoragePresentationContexts, evt

    from pacsbox import OrthancError
    n = node()
    _upload(n, CT)
    ctx = n.ctx
    data = ctx.resources.read_file(ctx.index.list_public_ids(3)[0])
    calls = []

    def on_store(event):
        calls.append(1)
        if len(calls) == 2:
            event.assoc.abort()
        return 0x0000

    ae = AE("ABORTER")
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, cx.transfer_syntax)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        mod = Modality("ABORTER", "127.0.0.1", port, timeout=60)
        with StoreSender(ctx, mod) as sender:
            assert sender.send(data).ok
            t0 = time.monotonic()
            with pytest.raises(OrthancError, match="no response"):
                sender.send(data)
            assert time.monotonic() - t0 < 30   # the abort seen, not the 60 s timeout
            assert sender.send(data).ok  # a new association
    finally:
        server.shutdown()


def test_association_longer_than_the_timeout_is_released_cleanly(node, storage_scp, caplog):
    """The responses are read by the sender, not pynetdicom's DUL thread, so the DUL's idle
    timer must be restarted by each of them: otherwise an association busy for longer than
    the timeout (a store job of many instances) is seen as idle by pynetdicom's reactor at
    release, which logs "Network timeout reached" and releases it a second time."""
    n = node()
    _upload(n, CT)
    ctx = n.ctx
    data = ctx.resources.read_file(ctx.index.list_public_ids(3)[0])
    scp = storage_scp("SLOWISH")

    def slow(ds):
        time.sleep(0.25)
        return 0x0000
    scp.status = slow
    # a timeout of 2 s: 8 times the time a response takes (with 1 s, a loaded machine
    # could let one response come late)
    sender = StoreSender(ctx, Modality("SLOWISH", "127.0.0.1", scp.port, timeout=2))
    caplog.set_level("INFO", logger="pynetdicom")
    for _ in range(12):  # 3 s of traffic or more on one association, every response within 2 s
        assert sender.send(data).status == 0x0000
    assoc = sender.assoc
    sender.close()
    assert len(scp.received) == 12
    assert assoc.is_released and not assoc.is_aborted
    assert "Network timeout reached" not in caplog.text
