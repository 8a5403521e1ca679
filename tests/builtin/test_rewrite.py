"""The byte-level rewriter under modify/anonymize/split/merge (``pacsbox.dicom.rewrite`` and
``pacsbox.dicom.modification``), on real files: pydicom's test files and pydicom-data.

Every output must parse with pydicom and with dcmtk's ``dcmdump`` without new warnings;
compressed pixel data is never transcoded unless asked; UIDs are deterministic per seed.
"""
from __future__ import annotations

import functools
import glob
import io
import os
import shutil
import subprocess
import tempfile
import warnings

import pydicom
import pydicom.data
import pytest

from conftest import pydicom_data_files, read
from conftest import testfile as sample_path
from pacsbox.dicom import rewrite as RW
from pacsbox.dicom.scan import scan
from pacsbox.dicom.modification import DicomPath, Modification, TagParser, UidMapper
import pacsbox
from pacsbox import OrthancError

PARSER = TagParser()


def anonymizer(body=None, name="Anonymized7"):
    m, overridden = Modification.from_anonymize_request(body or {}, PARSER)
    if not overridden:
        m.replace_tag(0x00100010, name, True)
    return m


def modifier(body, level):
    m = Modification.from_modify_request(body, PARSER)
    m.set_level(level)
    m.check()
    return m


def run(m, data, seed="seed-1"):
    return m.rewriter(UidMapper(seed)).rewrite(data)


def parse(data):
    return pydicom.dcmread(io.BytesIO(data))


@functools.lru_cache(maxsize=1)
def readable_real_files():
    """Real sample files that pydicom reads completely and that have a SOPInstanceUID."""
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # pydicom's bundled test files (listed directly: get_testdata_files() checks the
        # hashes of pydicom-data for seconds) and pydicom-data's files
        bundled = sorted(glob.glob(os.path.join(os.path.dirname(pydicom.data.__file__), "test_files", "**", "*.dcm"),
                                   recursive=True))
        for f in sorted(set(bundled + pydicom_data_files())):
            if os.path.getsize(f) > 4_000_000:
                continue
            try:
                scan(open(f, "rb").read())                       # what pacsbox can store
                ds = pydicom.dcmread(f, force=True)
                for _ in ds.iterall():
                    pass
                if "SOPInstanceUID" not in ds:
                    continue
            except Exception:  # noqa: BLE001 - truncated or broken samples are not inputs
                continue
            out.append(f)
    return out


@functools.lru_cache(maxsize=None)
def source_dcmdump(path: str) -> tuple[int, list[str]]:
    """dcmdump's verdict on a sample file (cached: shared by the parametrized tests)."""
    with open(path, "rb") as f:
        return dcmdump_warnings(f.read())


def dcmdump_warnings(data: bytes) -> tuple[int, list[str]]:
    with tempfile.NamedTemporaryFile(suffix=".dcm") as t:
        t.write(data)
        t.flush()
        p = subprocess.run(["dcmdump", "+E", t.name], capture_output=True, text=True, errors="replace")
    return p.returncode, [line for line in p.stderr.splitlines() if line.startswith(("E:", "W:", "F:"))]


def test_anonymize_ct_small_matches_the_2021b_profile():
    data = read("CT_small.dcm")
    src = parse(data)
    res = run(anonymizer(), data)
    ds = parse(res.data)
    # cleared (present, empty): Z/D rules of the 2021b profile present in this file
    for kw in ("StudyDate", "StudyTime", "ContentDate", "ContentTime", "AccessionNumber",
               "ReferringPhysicianName", "PatientBirthDate", "PatientSex", "StudyID", "ContrastBolusAgent"):
        assert kw in src and kw in ds and ds[kw].value in ("", None), kw
    # removed (X rules)
    for kw in ("InstitutionName", "StudyDescription", "SeriesDescription", "OperatorsName"):
        if kw in src:
            assert kw not in ds, kw
    assert not any(el.tag.is_private for el in ds)
    # untouched
    for kw in ("Modality", "SeriesNumber", "InstanceNumber", "ImageType", "Rows", "Columns", "PixelSpacing",
               "RescaleIntercept", "Manufacturer"):
        assert ds[kw].value == src[kw].value, kw
    assert ds.PixelData == src.PixelData
    assert ds.PatientName == "Anonymized7"
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.DeidentificationMethod == f"pacsbox {pacsbox.__version__} - PS 3.15-2021b Table E.1-1 Basic Profile"
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID", "InstanceCreatorUID"):
        assert ds[kw].value != src[kw].value and ds[kw].value.startswith("2.25."), kw
        assert len(ds[kw].value) <= 64
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.file_meta.TransferSyntaxUID == src.file_meta.TransferSyntaxUID
    assert ds.file_meta.ImplementationClassUID == RW.IMPLEMENTATION_CLASS_UID
    assert len(ds.PatientID) == 36 and ds.PatientID != src.PatientID
    # the identifiers reported to the job
    assert res.identifiers[0x0020000D] == (src.StudyInstanceUID, ds.StudyInstanceUID)
    assert res.identifiers[0x00100020] == (src.PatientID, ds.PatientID)


def test_uids_are_a_function_of_the_seed_and_the_original():
    data = read("CT_small.dcm")
    m = anonymizer()
    a, b, c = (parse(run(m, data, s).data) for s in ("s1", "s1", "s2"))
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "PatientID", "FrameOfReferenceUID"):
        assert a[kw].value == b[kw].value
        assert a[kw].value != c[kw].value
    mapper = UidMapper("s1")
    assert a.StudyInstanceUID == mapper(1, parse(data).StudyInstanceUID)
    assert a.SOPInstanceUID == mapper(3, parse(data).SOPInstanceUID)


def test_versions_and_unknown_version():
    data = read("CT_small.dcm")
    d2008 = parse(run(anonymizer({"DicomVersion": "2008"}), data).data)
    assert "StudyDate" in d2008 and "AccessionNumber" not in d2008 and "PatientSex" not in d2008
    assert d2008.DeidentificationMethod == f"pacsbox {pacsbox.__version__} - PS 3.15-2008 Table E.1-1"
    d2023 = parse(run(anonymizer({"DicomVersion": "2023b"}), data).data)
    assert d2023.DeidentificationMethod.endswith("PS 3.15-2023b Table E.1-1 Basic Profile")
    with pytest.raises(OrthancError) as e:
        anonymizer({"DicomVersion": "2019a"})
    assert e.value.code == 3 and e.value.details == "Unknown specific version of the DICOM standard: 2019a"


def test_customized_anonymization_keeps_the_deidentification_method():
    # Orthanc drops it (an Orthanc bug report); pacsbox marks it customized (issue 13 case 15)
    data = read("CT_small.dcm")
    ds = parse(run(anonymizer({"Keep": ["StudyDescription"], "KeepPrivateTags": True}), data).data)
    assert ds.DeidentificationMethod == \
        f"pacsbox {pacsbox.__version__} - PS 3.15-2021b Table E.1-1 Basic Profile (customized)"
    assert ds.StudyDescription == parse(data).StudyDescription
    assert any(el.tag.is_private for el in ds)


def test_sequences_relationships_and_overlays():
    data = read("MR-SIEMENS-DICOM-WithOverlays.dcm")
    src = parse(data)
    ds = parse(run(anonymizer(), data).data)
    old_ref = src.ReferencedImageSequence[0].ReferencedSOPInstanceUID
    new_ref = ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID
    assert new_ref == UidMapper("seed-1")(3, old_ref)           # remapped with the job's mapping
    assert ds.ReferencedImageSequence[0].ReferencedSOPClassUID == src.ReferencedImageSequence[0].ReferencedSOPClassUID
    assert "RequestAttributesSequence" not in ds                  # X in 2021b
    # overlays at the top level are kept (Orthanc applies the 60xx ranges inside sequences only)
    assert ds[0x60003000].value == src[0x60003000].value
    assert ds.PixelData == src.PixelData


def test_sequence_paths_replace_and_remove():
    data = read("MR-SIEMENS-DICOM-WithOverlays.dcm")
    src = parse(data)
    m = modifier({"Replace": {"ReferencedImageSequence[*].ReferencedSOPInstanceUID": "1.2.3.4",
                              "RequestAttributesSequence[0].RequestedProcedureID": "RP-9",
                              "RequestAttributesSequence[0].(0040,0010)": "STATION"},
                  "Remove": ["RequestAttributesSequence[0].ScheduledProcedureStepID"]}, 3)
    ds = parse(run(m, data).data)
    assert [i.ReferencedSOPInstanceUID for i in ds.ReferencedImageSequence] == \
        ["1.2.3.4"] * len(src.ReferencedImageSequence)
    item = ds.RequestAttributesSequence[0]
    assert item.RequestedProcedureID == "RP-9"
    assert item.ScheduledStationName == "STATION"                  # inserted: absent before
    assert "ScheduledProcedureStepID" not in item
    assert item.ScheduledProcedureStepDescription == src.RequestAttributesSequence[0].ScheduledProcedureStepDescription
    # modification: other UIDs untouched, new SOP Instance UID only (instance level)
    assert ds.StudyInstanceUID == src.StudyInstanceUID and ds.SOPInstanceUID != src.SOPInstanceUID


def test_path_parsing_errors():
    with pytest.raises(OrthancError) as e:
        DicomPath.parse("ReferencedImageSequence[x].ReferencedSOPInstanceUID", PARSER)
    assert (e.value.code, e.value.details) == (3, "Not a valid index in parent path: [x]")
    with pytest.raises(OrthancError) as e:
        DicomPath.parse("ReferencedImageSequence.ReferencedSOPInstanceUID", PARSER)
    assert e.value.details == "Parent path doesn't contain an index"
    with pytest.raises(OrthancError) as e:
        DicomPath.parse("NoSuchKeyword", PARSER)
    assert e.value.code == 27
    p = DicomPath.parse("ReferencedImageSequence[*].(0008,1155)", PARSER)
    assert p.prefix == ((0x00081140, None),) and p.final == 0x00081155
    assert p.format() == "(0008,1140)[*].(0008,1155)"


def test_replace_sequence_private_tags_and_numbers():
    data = read("CT_small.dcm")
    body = {"Replace": {"ReferencedPatientSequence": [{"ReferencedSOPClassUID": "1.2.3",
                                                       "ReferencedSOPInstanceUID": "4.5.6"}],
                        "0041,0010": "KitCreator", "0041,1010": "hello", "0041,1012": "raw", "Rows": "128",
                        "EncryptedAttributesSequence": []},
            "PrivateCreator": "KitCreator"}
    # the "Dictionary" option gives the VR of a private tag of a known creator (reference 7.2)
    parser = TagParser({"0041,10": ["LO", "KitComment", 1, 1, "KitCreator"]})
    m = Modification.from_modify_request(body, parser)
    m.set_level(3)
    ds = parse(m.rewriter(UidMapper("s")).rewrite(data).data)
    assert ds.ReferencedPatientSequence[0].ReferencedSOPInstanceUID == "4.5.6"
    assert ds[0x00410010].VR == "LO" and ds[0x00410010].value == "KitCreator"
    assert ds[0x00411010].VR == "LO" and ds[0x00411010].value == "hello"
    assert ds[0x00411012].VR == "UN" and ds[0x00411012].value == b"raw\x00"   # unknown: UN
    assert ds.Rows == 128
    assert len(ds.EncryptedAttributesSequence) == 0
    assert parser("KitComment") == 0x00411010


def test_bad_replacement_value_types():
    with pytest.raises(OrthancError) as e:
        Modification.from_modify_request({"Replace": {"InstitutionName": 5}}, PARSER)
    assert (e.value.code, e.value.details) == (5, "Bad Parameter type for tag 0008,0080")
    m = modifier({"Replace": {"Rows": "many"}}, 3)
    with pytest.raises(RW.ValueTypeError):
        run(m, read("CT_small.dcm"))


def test_non_ascii_value_switches_to_utf8_and_keeps_other_text():
    src = pydicom.dcmread(sample_path("CT_small.dcm"))
    src.PatientName = "Müller^Jérôme"                # written in ISO_IR 100 (Latin-1)
    buf = io.BytesIO()
    src.save_as(buf)
    data = buf.getvalue()
    assert "Müller".encode("latin-1") in data
    res = run(modifier({"Replace": {"InstitutionName": "Łódź Szpital"}}, 3), data)
    assert res.charset_switched
    assert "Łódź Szpital".encode("utf-8") in res.data and "Müller".encode("utf-8") in res.data
    ds = parse(res.data)
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert ds.InstitutionName == "Łódź Szpital"
    assert str(ds.PatientName) == "Müller^Jérôme"
    # a value the character set can hold keeps it
    res = run(modifier({"Replace": {"InstitutionName": "Hôpital"}}, 3), data)
    assert not res.charset_switched and parse(res.data).SpecificCharacterSet == "ISO_IR 100"
    assert "Hôpital".encode("latin-1") in res.data


@pytest.mark.parametrize("name", ["MR_small_bigendian.dcm", "MR_small_implicit.dcm", "image_dfl.dcm", "JPEG2000.dcm",
                                  "SC_rgb_rle.dcm", "emri_small_jpeg_ls_lossless.dcm", "SC_rgb_jpeg_dcmtk.dcm",
                                  "explicit_VR-UN.dcm", "rtstruct.dcm"])
def test_transfer_syntaxes_are_kept_and_pixel_data_untouched(name):
    data = read(name)
    src = pydicom.dcmread(sample_path(name), force=True)
    res = run(anonymizer(), data)
    ds = parse(res.data)
    assert ds.file_meta.TransferSyntaxUID == src.file_meta.get("TransferSyntaxUID", ds.file_meta.TransferSyntaxUID)
    if "PixelData" in src:
        assert ds.PixelData == src.PixelData
    assert ds.SOPInstanceUID != src.SOPInstanceUID
    assert ds.PatientID != src.get("PatientID")
    code, warns = dcmdump_warnings(res.data)
    assert code == 0 and warns == dcmdump_warnings(data)[1]     # nothing the source did not have


def test_un_elements_are_anonymized():
    # explicit_VR-UN.dcm stores every element with VR UN; Orthanc 1.10.1 leaves PatientID there
    data = read("explicit_VR-UN.dcm")
    src = pydicom.dcmread(sample_path("explicit_VR-UN.dcm"))
    ds = parse(run(anonymizer(), data).data)
    assert str(ds.PatientID) != str(src.PatientID)
    assert ds.FrameOfReferenceUID != src.FrameOfReferenceUID


@pytest.mark.skipif(shutil.which("dcmdump") is None, reason="dcmtk's dcmdump is not installed")
@pytest.mark.parametrize("kind", ["anonymize", "modify"])
def test_every_real_file_rewrites_to_a_valid_file(kind):
    if kind == "anonymize":
        m = anonymizer()
    else:
        m = modifier({"Replace": {"InstitutionName": "Łódź Szpital", "StudyDescription": "X",
                                  "ReferencedImageSequence[*].ReferencedSOPInstanceUID": "1.2.3"},
                      "Remove": ["SeriesDescription"], "RemovePrivateTags": True}, 1)
    rw = m.rewriter(UidMapper("seed"))
    real_files = readable_real_files()
    assert len(real_files) > 120
    failures = []
    for f in real_files:
        data = open(f, "rb").read()
        out = rw.rewrite(data).data
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = parse(out)
            for _ in ds.iterall():
                pass
            src = pydicom.dcmread(f, force=True)
        if "PixelData" in src and ds.PixelData != src.PixelData:
            failures.append((f, "pixel data changed"))
        if ds.original_encoding != src.original_encoding:
            failures.append((f, "encoding changed"))
        src_ts = src.file_meta.get("TransferSyntaxUID")
        if src_ts is not None and src_ts.is_compressed and ds.file_meta.TransferSyntaxUID != src_ts:
            failures.append((f, "transcoded"))
        if ds.SOPInstanceUID == src.SOPInstanceUID:
            failures.append((f, "SOPInstanceUID kept"))
        code, warns = dcmdump_warnings(out)
        code0, warns0 = source_dcmdump(f)
        if code0 or any(w.startswith("E:") for w in warns0):
            continue                             # dcmtk cannot read the source either
        if code or (warns and not warns0):       # a clean source gives a clean output
            failures.append((f, warns[:3]))
    assert failures == []


@pytest.mark.parametrize("target", [RW.IMPLICIT_LE, RW.EXPLICIT_LE, RW.EXPLICIT_BE])
@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm"])
def test_transcode_between_uncompressed_syntaxes(name, target):
    data = read(name)
    src = pydicom.dcmread(sample_path(name), force=True)
    out = RW.transcode(run(anonymizer(), data).data, target)
    ds = parse(out)
    assert ds.file_meta.TransferSyntaxUID == target
    assert (ds.pixel_array == src.pixel_array).all()
    assert ds.Rows == src.Rows and ds.Modality == src.Modality
    code, warns = dcmdump_warnings(out)
    assert code == 0 and warns == []


def test_transcode_decompresses():
    out = RW.transcode(read("JPEG2000.dcm"), RW.EXPLICIT_LE)
    ds = parse(out)
    assert ds.file_meta.TransferSyntaxUID == RW.EXPLICIT_LE
    assert (ds.pixel_array == pydicom.dcmread(sample_path("JPEG2000.dcm")).pixel_array).all()
    assert RW.is_known_transfer_syntax(RW.EXPLICIT_BE) and not RW.is_known_transfer_syntax("1.2.3")


def test_level_rules():
    def err(body, level):
        with pytest.raises(OrthancError) as e:
            modifier(body, level)
        return e.value.code, e.value.details
    assert err({"Replace": {"InstitutionName": "x"}}, 0) == \
        (8, "When modifying a patient, her PatientID is required to be modified")
    assert err({"Replace": {"PatientID": "x"}, "Force": True}, 1) == \
        (8, "When modifying a study, the parent PatientID cannot be manually modified")
    assert err({"Replace": {"StudyInstanceUID": "1.2"}, "Force": True}, 2) == \
        (8, "When modifying a series, the parent StudyInstanceUID cannot be manually modified")
    assert err({"Replace": {"SeriesInstanceUID": "1.2"}, "Force": True}, 3) == \
        (8, "When modifying an instance, the parent SeriesInstanceUID cannot be manually modified")
    assert err({"Remove": ["StudyInstanceUID"], "Force": True}, 1) == \
        (8, "It is forbidden to remove one of the main Dicom identifiers")
    assert err({"Replace": {"SOPInstanceUID": "1.2"}}, 3) == \
        (8, "Marking tag \"SOPInstanceUID\" as to be replaced requires the \"Force\" option to be set to true")
    assert err({"Keep": ["SeriesInstanceUID"]}, 2) == \
        (8, "Marking tag \"SeriesInstanceUID\" as to be kept requires the \"Force\" option to be set to true")
    assert err({"Remove": ["PatientID"]}, 1) == \
        (8, "Marking tag \"PatientID\" as to be removed requires the \"Force\" option to be set to true")
    assert err({"Force": "yes"}, 1) == (15, "Member \"Force\" should be a Boolean value")


def test_keep_sop_instance_uid_and_serialization_round_trip():
    data = read("CT_small.dcm")
    src = parse(data)
    m = modifier({"Replace": {"StudyInstanceUID": "1.2.3.4", "InstitutionName": "Here"}, "Keep": ["SOPInstanceUID"],
                  "Force": True, "Remove": ["ReferencedImageSequence[0].ReferencedSOPClassUID"]}, 1)
    again = Modification.deserialize(m.serialize(), PARSER)
    assert again.serialize() == m.serialize()
    a, b = run(m, data).data, run(again, data).data
    assert a == b
    ds = parse(a)
    assert ds.SOPInstanceUID == src.SOPInstanceUID and ds.StudyInstanceUID == "1.2.3.4"
    assert ds.SeriesInstanceUID != src.SeriesInstanceUID


def test_replaced_uid_is_also_mapped_inside_sequences():
    """Anonymization with a forced StudyInstanceUID: references to the original inside
    sequences take the replacement (Orthanc ``RegisterMappedDicomIdentifier``)."""
    src = pydicom.dcmread(sample_path("CT_small.dcm"))
    item = pydicom.Dataset()
    item.StudyInstanceUID = src.StudyInstanceUID
    item.SeriesInstanceUID = src.SeriesInstanceUID
    src.SourceImageSequence = [item]
    buf = io.BytesIO()
    src.save_as(buf)
    ds = parse(run(anonymizer({"Replace": {"StudyInstanceUID": "1.2.3.4"}, "Force": True}), buf.getvalue()).data)
    assert ds.StudyInstanceUID == "1.2.3.4"
    assert ds.SourceImageSequence[0].StudyInstanceUID == "1.2.3.4"
    assert ds.SourceImageSequence[0].SeriesInstanceUID == ds.SeriesInstanceUID != src.SeriesInstanceUID
