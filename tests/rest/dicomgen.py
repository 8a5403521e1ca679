"""Small DICOM files built with pydicom for the REST tests (edge cases the test corpora lack).

Every builder returns the bytes of a Part-10 file (preamble, ``DICM``, meta group).
"""
from __future__ import annotations

import io

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

SC = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage


def dicom_bytes(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> bytes:
    """Serialize ``ds`` as a Part-10 file in ``transfer_syntax``."""
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", SC) or SC
    ds.file_meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", "1.2.3") or "1.2.3"
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta.ImplementationClassUID = "1.2.3.4"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True, little_endian=transfer_syntax != ExplicitVRBigEndian,
               implicit_vr=transfer_syntax == ImplicitVRLittleEndian)
    return buf.getvalue()


def instance(patient_id="P1", study="1.2.3.4", series="1.2.3.4.5", sop="1.2.3.4.5.6",
             transfer_syntax: str = ExplicitVRLittleEndian, **tags) -> bytes:
    """A minimal Secondary Capture instance.

    ``patient_id``/``study``/``series``/``sop`` may be ``None`` (element absent) or ``""``
    (element present and empty); keyword arguments add elements (``PatientName="A^B"``).
    """
    ds = Dataset()
    ds.SOPClassUID = SC
    for kw, value in (("SOPInstanceUID", sop), ("StudyInstanceUID", study), ("SeriesInstanceUID", series),
                      ("PatientID", patient_id)):
        if value is not None:
            setattr(ds, kw, value)
    for kw, value in tags.items():
        setattr(ds, kw, value)
    return dicom_bytes(ds, transfer_syntax)


def edge_cases(transfer_syntax: str = ExplicitVRLittleEndian) -> bytes:
    """The edge-case file whose Orthanc 1.10.1 renderings the tag tests assert.

    Identifiers: PatientID ``" P1 "``, StudyInstanceUID ``1.2.3.8``, SeriesInstanceUID
    ``1.2.3.9.1``, SOPInstanceUID ``1.2.3.9.1.1``. Explicit-VR syntaxes also get ``UN``
    elements.
    """
    saved = pydicom.config.settings.writing_validation_mode, pydicom.config.replace_un_with_known_vr
    pydicom.config.settings.writing_validation_mode = 0
    pydicom.config.replace_un_with_known_vr = False  # keep the UN elements as UN
    ds = Dataset()
    ds.SOPClassUID = SC
    add = ds.add
    add(DataElement(0x00080018, "UI", "1.2.3.9.1.1"))
    add(DataElement(0x0020000D, "UI", "1.2.3.8"))
    add(DataElement(0x0020000E, "UI", "1.2.3.9.1"))
    add(DataElement(0x00100020, "LO", " P1 "))
    add(DataElement(0x00100010, "PN", "  Doe^John  "))
    add(DataElement(0x00081030, "LO", "  lead and trail  "))
    add(DataElement(0x00200010, "SH", " 42 "))
    add(DataElement(0x00280030, "DS", [" 1.5", "2.50 "]))
    add(DataElement(0x00200013, "IS", " 7 "))
    add(DataElement(0x00080030, "TM", "101010.5 "))
    add(DataElement(0x00080008, "CS", ["ORIGINAL", " PRIMARY ", "AXIAL"]))
    add(DataElement(0x00280010, "US", 512))
    add(DataElement(0x00280103, "US", 0))
    add(DataElement(0x00280106, "SS", -5))
    add(DataElement(0x00181310, "US", [0, 256, 256, 0]))
    add(DataElement(0x00186011, "SQ", Sequence([Dataset(), Dataset()])))
    ds[0x00186011].value[0].add(DataElement(0x00186012, "US", 1))
    ds[0x00186011].value[0].add(DataElement(0x0018601A, "FD", 0.1))
    ds[0x00186011].value[1].add(DataElement(0x00186012, "US", 2))
    add(DataElement(0x00400275, "SQ", Sequence()))
    add(DataElement(0x00189352, "FL", [0.79, 12345678.0]))
    add(DataElement(0x00189327, "FD", [0.1, 1e300, -2.5, 100.0]))
    add(DataElement(0x00209165, "AT", [0x00100010, 0x7FE00010]))
    add(DataElement(0x00080090, "PN", None))
    add(DataElement(0x00280120, "US", None))
    add(DataElement(0x00204000, "LT", "x" * 300))
    add(DataElement(0x00324000, "LT", "y" * 256))
    add(DataElement(0x00185021, "LO", "retired"))
    add(DataElement(0x00181000, "LO", "SN123"))
    add(DataElement(0x00186020, "SL", [-1, 2]))
    add(DataElement(0x00186022, "UL", 4000000000))
    add(DataElement(0x00090010, "LO", "MY PRIVATE CREATOR"))
    add(DataElement(0x00091001, "LO", "private value"))
    add(DataElement(0x00091002, "US", 12))
    add(DataElement(0x00290010, "LO", "SIEMENS CSA HEADER"))
    add(DataElement(0x00291008, "CS", "IMAGE NUM 4"))
    add(DataElement(0x00420011, "OB", b"%PDF"))
    add(DataElement(0x7FE00010, "OB", b"\x00\x01"))
    add(DataElement(0x7FE10010, "LO", "TEST"))
    add(DataElement(0x7FE11001, "LO", "after pixels"))
    if transfer_syntax != ImplicitVRLittleEndian:
        add(DataElement(0x00080070, "UN", b"ACME "))
        add(DataElement(0x00080080, "UN", b"Hospital\x00"))
        add(DataElement(0x00281101, "UN", b"\x00\x01\x00\x00\x10\x00"))
        add(DataElement(0x00210010, "UN", b"MYCREATOR "))
        add(DataElement(0x00211001, "LO", "under un creator"))
    try:
        return dicom_bytes(ds, transfer_syntax)
    finally:
        pydicom.config.settings.writing_validation_mode, pydicom.config.replace_un_with_known_vr = saved


__all__ = ["instance", "edge_cases", "dicom_bytes", "ExplicitVRLittleEndian", "ImplicitVRLittleEndian",
           "ExplicitVRBigEndian"]
