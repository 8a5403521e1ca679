"""The SCP's bulk receive path (``receive.py``): C-STORE requests however the peer cuts
them into PDUs and PDVs, other messages handed to pynetdicom on the same association,
broken PDUs refused with an abort, and responses byte-equal to pynetdicom's.

The PDUs are written by hand on an association opened by pynetdicom, so that the
cases real peers rarely produce (a command and its data set in one PDU, a command
split over two PDUs, a PDV running past its PDU) are sent exactly."""
from __future__ import annotations

import select
import struct
import threading
import time
from io import BytesIO

import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, MRImageStorage, Verification

from pacsbox import read_file_meta
from pacsbox_dicom_net.scp import server_of
from pacsbox_dicom_net.dimse import command_set, element, parse_command, response_pdu, uid, us
from pacsbox_dicom_net.send_wire import DirectResponses, hold_reactor, write_pdus

EXPLICIT = "1.2.840.10008.1.2.1"
CT = get_testdata_file("CT_small.dcm")
MR = get_testdata_file("MR_small.dcm")


def _dataset(path):
    """The data set bytes of a file (no preamble nor meta group) and its UIDs."""
    with open(path, "rb") as f:
        data = f.read()
    meta = read_file_meta(data)
    return data[meta.dataset_offset:], meta.sop_class_uid, meta.sop_instance_uid


def _store_command(sop_class, sop_instance, msg_id):
    return command_set([element(0x0002, uid(sop_class)), element(0x0100, us(0x0001)), element(0x0110, us(msg_id)),
                        element(0x0700, us(0)), element(0x0800, us(0x0000)), element(0x1000, uid(sop_instance))])


def _echo_command(msg_id):
    return command_set([element(0x0002, uid(Verification)), element(0x0100, us(0x0030)),
                        element(0x0110, us(msg_id)), element(0x0800, us(0x0101))])


def _pdv(cx_id, header, data):
    return struct.pack(">IBB", len(data) + 2, cx_id, header) + data


def _pdu(*pdvs):
    body = b"".join(pdvs)
    return struct.pack(">BBI", 0x04, 0, len(body)) + body


def _read_response(reader):
    """(Status, Message ID Being Responded To) of the next response."""
    got = reader.read_status(time.monotonic() + 10)
    assert got is not None, "no response (association lost)"
    return got


def _open_raw(n, *sop_classes):
    """An association to node ``n`` proposing ``sop_classes`` in Explicit VR Little
    Endian, its responses read by the test: ``(assoc, reader, {SOP class: context ID})``."""
    ae = AE(ae_title="RAWSCU")
    for sop in sop_classes:
        ae.add_requested_context(sop, [EXPLICIT])
    assoc = ae.associate("127.0.0.1", n.dicom_port, ae_title=n.aet)
    assert assoc.is_established
    hold_reactor(assoc)
    return assoc, DirectResponses(assoc), {str(cx.abstract_syntax): cx.context_id for cx in assoc.accepted_contexts}


@pytest.fixture
def raw_assoc(node):
    """``(node, assoc, reader, contexts)``: an association to a pacsbox node whose PDUs the
    test writes itself (CT and MR storage and Verification, Explicit VR Little Endian)."""
    n = node({"DicomAlwaysAllowStore": True, "DicomAlwaysAllowEcho": True})
    assoc, reader, contexts = _open_raw(n, CTImageStorage, MRImageStorage, Verification)
    yield n, assoc, reader, contexts
    if assoc.is_established:
        reader.detach()
        assoc._reactor_checkpoint.set()  # noqa: SLF001
        assoc.release()


def _stored_bytes(n, sop_instance):
    ids = requests.post(n.url + "/tools/lookup", data=sop_instance).json()
    assert len(ids) == 1, ids
    return requests.get(f"{n.url}/instances/{ids[0]['ID']}/file").content


def test_command_and_data_set_in_one_pdu(raw_assoc):
    n, assoc, reader, cxs = raw_assoc
    data, sop_class, sop_instance = _dataset(CT)
    cx = cxs[CTImageStorage]
    write_pdus(assoc, _pdu(_pdv(cx, 0x03, _store_command(sop_class, sop_instance, 7)), _pdv(cx, 0x02, data)))
    assert _read_response(reader) == (0x0000, 7)
    stored = _stored_bytes(n, sop_instance)
    assert stored.endswith(data) and read_file_meta(stored).sop_instance_uid == sop_instance


def test_command_split_over_two_pdus_and_data_set_in_tiny_pdvs(raw_assoc):
    n, assoc, reader, cxs = raw_assoc
    data, sop_class, sop_instance = _dataset(MR)
    cx = cxs[MRImageStorage]
    cmd = _store_command(sop_class, sop_instance, 8)
    pieces = [_pdu(_pdv(cx, 0x01, cmd[:10])), _pdu(_pdv(cx, 0x03, cmd[10:]))]
    frags = [data[i:i + 1000] for i in range(0, len(data), 1000)]
    # several PDVs per PDU, PDUs of uneven sizes, written in one go and byte by byte
    for k in range(0, len(frags), 3):
        group = frags[k:k + 3]
        pieces.append(_pdu(*[_pdv(cx, 0x02 if k + j == len(frags) - 1 else 0x00, f) for j, f in enumerate(group)]))
    stream = b"".join(pieces)
    write_pdus(assoc, stream[:3])
    time.sleep(0.05)
    write_pdus(assoc, stream[3:])
    assert _read_response(reader) == (0x0000, 8)
    assert _stored_bytes(n, sop_instance).endswith(data)


def test_other_messages_interleave_with_c_store_on_one_association(raw_assoc):
    n, assoc, reader, cxs = raw_assoc
    ct, ct_class, ct_uid = _dataset(CT)
    mr, mr_class, mr_uid = _dataset(MR)
    write_pdus(assoc, _pdu(_pdv(cxs[Verification], 0x03, _echo_command(1))))
    assert _read_response(reader) == (0x0000, 1)
    write_pdus(assoc, _pdu(_pdv(cxs[CTImageStorage], 0x03, _store_command(ct_class, ct_uid, 2))))
    write_pdus(assoc, _pdu(_pdv(cxs[CTImageStorage], 0x02, ct)))
    assert _read_response(reader) == (0x0000, 2)
    write_pdus(assoc, _pdu(_pdv(cxs[Verification], 0x03, _echo_command(3))))
    assert _read_response(reader) == (0x0000, 3)
    write_pdus(assoc, _pdu(_pdv(cxs[MRImageStorage], 0x03, _store_command(mr_class, mr_uid, 4)),
                           _pdv(cxs[MRImageStorage], 0x02, mr)))
    assert _read_response(reader) == (0x0000, 4)
    assert requests.get(n.url + "/statistics").json()["CountInstances"] == 2
    # the C-STOREs took the bulk path, the C-ECHOs pynetdicom's
    (served,) = server_of(n.ctx).server.active_associations
    assert served.dul._pacsbox_reader is not None and served.dul._pacsbox_reader.stores == 2


def test_c_store_whose_data_set_disagrees_with_its_command(raw_assoc):
    n, assoc, reader, cxs = raw_assoc
    data, sop_class, _ = _dataset(CT)
    cx = cxs[CTImageStorage]
    write_pdus(assoc, _pdu(_pdv(cx, 0x03, _store_command(sop_class, "1.2.3.4", 9)), _pdv(cx, 0x02, data)))
    assert _read_response(reader) == (0xA900, 9)  # as DCMTK's store SCP in Orthanc
    assert requests.get(n.url + "/statistics").json()["CountInstances"] == 0


@pytest.mark.parametrize("broken", ["pdv past its pdu", "pdv shorter than its header"])
def test_broken_pdu_aborts_the_association_and_the_server_keeps_serving(raw_assoc, broken):
    n, assoc, reader, cxs = raw_assoc
    cx = cxs[Verification]
    cmd = _echo_command(1)
    if broken == "pdv past its pdu":
        body = struct.pack(">IBB", len(cmd) + 50, cx, 0x03) + cmd
    else:
        body = struct.pack(">IBB", 1, cx, 0x03)
    write_pdus(assoc, struct.pack(">BBI", 0x04, 0, len(body)) + body)
    assert reader.read_status(time.monotonic() + 10) is None and reader.lost  # A-ABORT, or closed
    # a new association is served
    ae = AE(ae_title="NEXT")
    ae.add_requested_context(Verification)
    again = ae.associate("127.0.0.1", n.dicom_port, ae_title=n.aet)
    assert again.is_established
    assert again.send_c_echo().Status == 0x0000
    again.release()


@pytest.mark.parametrize("status,instance", [(0x0000, "1.2.3.4.5"), (0xA700, "1.2.840.10008.99.1"),
                                             (0xC000, "1.2.3")])
def test_c_store_response_is_byte_equal_to_pynetdicoms(status, instance):
    from pynetdicom.dimse_messages import C_STORE_RSP
    from pynetdicom.dimse_primitives import C_STORE

    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 513
    rsp.AffectedSOPClassUID = CTImageStorage
    rsp.AffectedSOPInstanceUID = instance
    rsp.Status = status
    msg = C_STORE_RSP()
    msg.primitive_to_message(rsp)
    pdus = list(msg.encode_msg(5, 16384))
    expected = b"".join(p.presentation_data_value_list[0][1][1:] for p in pdus)
    ours = response_pdu(5, 0x8001, CTImageStorage, 513, status, instance)
    assert ours[12:] == expected
    assert struct.unpack(">BBIIBB", ours[:12]) == (0x04, 0, len(expected) + 6, len(expected) + 2, 5, 0x03)
    assert parse_command(expected)[0x0900] == struct.pack("<H", status)


def test_parse_command_refuses_what_is_not_a_command_set():
    with pytest.raises(ValueError):
        parse_command(struct.pack("<HHI", 0x0008, 0x0016, 2) + b"1\0")
    with pytest.raises(ValueError):
        parse_command(struct.pack("<HHI", 0x0000, 0x0100, 20) + b"\x01\x00")


def test_debug_logging_of_pynetdicom_keeps_pynetdicoms_path(node, caplog):
    """With the ``pynetdicom`` logger at DEBUG (its per-PDU logs wanted), the SCP leaves
    the association to pynetdicom: the store works the same and pynetdicom logs it."""
    caplog.set_level("DEBUG", logger="pynetdicom")
    n = node({"DicomAlwaysAllowStore": True})
    ae = AE(ae_title="DEBUGSCU")
    ae.add_requested_context(CTImageStorage, [EXPLICIT])
    assoc = ae.associate("127.0.0.1", n.dicom_port, ae_title=n.aet)
    ds = pydicom.dcmread(CT)
    assert assoc.send_c_store(ds).Status == 0x0000
    assoc.release()
    assert "Received Store Request" in caplog.text
    assert requests.get(n.url + "/statistics").json()["CountInstances"] == 1


def test_bytes_read_ahead_are_kept_across_messages(raw_assoc):
    """Two C-STOREs written in one go: the second is read with the first's last PDU and
    served after it, on the same association."""
    n, assoc, reader, cxs = raw_assoc
    ct, ct_class, ct_uid = _dataset(CT)
    mr, mr_class, mr_uid = _dataset(MR)
    write_pdus(assoc, _pdu(_pdv(cxs[CTImageStorage], 0x03, _store_command(ct_class, ct_uid, 11)),
                           _pdv(cxs[CTImageStorage], 0x02, ct))
               + _pdu(_pdv(cxs[MRImageStorage], 0x03, _store_command(mr_class, mr_uid, 12)))
               + _pdu(_pdv(cxs[MRImageStorage], 0x02, mr)))
    assert _read_response(reader) == (0x0000, 11)
    assert _read_response(reader) == (0x0000, 12)
    assert _stored_bytes(n, mr_uid).endswith(mr)
    assert BytesIO(_stored_bytes(n, ct_uid)).getvalue().endswith(ct)


def test_leading_uids_read_as_pydicom_reads_them():
    """store_scp.leading_uids (the C-STORE's check of the data set against its command,
    without pydicom) finds the UIDs pydicom finds, in every little-endian sample file of
    pydicom, and defers to pydicom (None) where it cannot tell."""
    import warnings

    from pydicom.data import get_testdata_files

    from pacsbox import DicomFormatError
    from pacsbox_dicom_net.store_scp import dataset_uids, leading_uids

    read = deferred = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paths = get_testdata_files("*.dcm")
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        try:
            meta = read_file_meta(data)
        except DicomFormatError:
            continue
        got = leading_uids(data[meta.dataset_offset:], meta.transfer_syntax)
        if meta.transfer_syntax not in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1"):
            assert got is None, path
            continue
        if got is None:
            deferred += 1
            continue
        read += 1
        assert got == dataset_uids(data), path
    assert read > 50 and deferred < read / 10, (read, deferred)
    assert leading_uids(b"\x08\x00\x16\x00UI\x30\x00" + b"1.2", EXPLICIT) is None  # value past the end


def test_c_cancel_reaches_a_c_find_served_in_place(node):
    """A C-FIND is served in the thread that reads the socket; its handler's look for a
    C-CANCEL between answers reads on, so the peer's C-CANCEL ends the request with
    0xFE00 (PS3.4 C.4.1.2.3), and the association goes on serving."""
    from pydicom.dataset import Dataset
    from pynetdicom.dsutils import encode
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

    from pacsbox.testing import inline_plugin

    asked = threading.Event()

    def slow_answers(level, query, origin):
        # the answers come once the peer's C-CANCEL is in the socket, unread (sent once
        # the request was being served, so not read ahead with it): a sleep of 0.5 s for it
        # was a bet that a slow machine could lose (all 50 answers, then the cancel)
        asked.set()
        (served,) = server_of(n.ctx).server.active_associations
        select.select([served.dul.socket.socket], [], [], 30)
        out = []
        for i in range(50):
            ds = Dataset()
            ds.QueryRetrieveLevel = level
            ds.StudyInstanceUID = f"1.2.3.{i}"
            out.append(ds)
        return out

    n = node({"DicomAlwaysAllowFind": True, "DicomAlwaysAllowEcho": True},
             plugins=[inline_plugin("slowfind", find_answers=(slow_answers, {"optionalhook": True}))])
    assoc, reader, cxs = _open_raw(n, FIND, Verification)
    try:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ""
        find = command_set([element(0x0002, uid(FIND)), element(0x0100, us(0x0020)), element(0x0110, us(21)),
                            element(0x0700, us(0)), element(0x0800, us(0x0000))])
        cancel = command_set([element(0x0100, us(0x0FFF)), element(0x0120, us(21)), element(0x0800, us(0x0101))])
        write_pdus(assoc, _pdu(_pdv(cxs[FIND], 0x03, find)) + _pdu(_pdv(cxs[FIND], 0x02, encode(query, False, True))))
        assert asked.wait(30)
        write_pdus(assoc, _pdu(_pdv(cxs[FIND], 0x03, cancel)))
        statuses = []
        while True:
            status, responded = _read_response(reader)
            assert responded == 21
            statuses.append(status)
            if status not in (0xFF00, 0xFF01):
                break
        assert statuses[-1] == 0xFE00 and len(statuses) < 50, statuses
        write_pdus(assoc, _pdu(_pdv(cxs[Verification], 0x03, _echo_command(22))))
        assert _read_response(reader) == (0x0000, 22)
    finally:
        reader.detach()
        assoc._reactor_checkpoint.set()  # noqa: SLF001
        assoc.release()
    assert assoc.is_released
