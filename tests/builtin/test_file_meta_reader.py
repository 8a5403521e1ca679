"""One public File Meta reader (issue 14 item 11): ``pacsbox.read_file_meta`` serves the
ingest scanner, the modification's rewriter and the archive plugin, which lost their own
group-0002 walks."""
from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.data import get_testdata_file

from pacsbox import DicomFormatError, read_file_meta
from pacsbox.dicom import rewrite
from pacsbox.dicom.modification import UidMapper
from pacsbox_archive.dicomfile import peek

CT = get_testdata_file("CT_small.dcm")


def _part10() -> bytes:
    return open(CT, "rb").read()


def _bare_dataset() -> bytes:
    """The CT's data set alone (explicit VR little endian), without preamble nor meta group."""
    data = _part10()
    bare = data[read_file_meta(data).dataset_offset:]
    assert bare[:2] == b"\x08\x00"
    return bare


def test_the_vrs_are_kept_to_write_the_group_again():
    meta = read_file_meta(_part10())
    assert meta.vrs[0x00020001] == b"OB" and meta.vrs[0x00020010] == b"UI"
    assert set(meta.vrs) == set(meta.elements)


def test_bare_data_sets_only_when_asked():
    data = _bare_dataset()
    with pytest.raises(DicomFormatError):
        read_file_meta(data)
    meta = read_file_meta(data, bare_dataset=True)
    assert (meta.elements, meta.dataset_offset, meta.transfer_syntax) == ({}, 0, "1.2.840.10008.1.2.1")
    assert (meta.sop_class_uid, meta.sop_instance_uid) == ("", "")


def test_the_rewriter_reads_the_meta_through_read_file_meta():
    data = _part10()
    class NewName(rewrite.Rules):
        replacements = {0x00100010: "NEW^NAME"}

        def top(self, tag, vr):
            return (rewrite.REPLACE, "NEW^NAME") if tag == 0x00100010 else (rewrite.KEEP, None)

    rw = rewrite.Rewriter(NewName(), UidMapper("seed"), lambda tag: "PN")
    out = rw.rewrite(data)
    meta = read_file_meta(out.data)
    source = read_file_meta(data)
    assert (meta.transfer_syntax, meta.sop_class_uid, meta.sop_instance_uid) == (
        source.transfer_syntax, source.sop_class_uid, source.sop_instance_uid)
    assert pydicom.dcmread(io.BytesIO(out.data)).PatientName == "NEW^NAME"
    bare = rw.rewrite(_bare_dataset())   # a bare data set gets a meta group
    ds = pydicom.dcmread(io.BytesIO(bare.data))
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1" and ds.PatientName == "NEW^NAME"
    assert read_file_meta(bare.data).sop_class_uid == ds.SOPClassUID
    with pytest.raises(rewrite.RewriteError):
        rw.rewrite(b"not a DICOM file at all")


def test_archive_peek_reads_the_meta_through_read_file_meta():
    data = _part10()
    ds = pydicom.dcmread(CT)
    facts = peek(data[:4096])
    assert (facts.sop_class_uid, facts.sop_instance_uid, facts.transfer_syntax_uid) == (
        ds.SOPClassUID, ds.SOPInstanceUID, ds.file_meta.TransferSyntaxUID)
    assert facts.charset_known and facts.specific_character_set == ds.get("SpecificCharacterSet")
    no_preamble = peek(data[128 + 4:])          # starts with group 0002: read as well
    assert no_preamble.sop_instance_uid == ds.SOPInstanceUID
    for junk in (b"", b"x" * 300, data[:140]):   # no meta, or a meta element cut short
        assert peek(junk) == type(facts)()
