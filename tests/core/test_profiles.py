"""Self-checks of the anonymization profile data (``pacsbox.dicom.profiles``).

Expected sizes come from Orthanc's generated ``DicomModification_Anonymization*.impl.h``
files and ``SetupAnonymization2008()`` (see ``shared/reference/rest-api.md`` Appendix B).
"""
from __future__ import annotations

import pytest

from pacsbox.dicom.profiles import (
    ALWAYS_REGENERATED_UIDS,
    DEFAULT_VERSION,
    PATIENT_IDENTIFIERS,
    PROFILES,
    RELATIONSHIP_SEQUENCES,
)

RANGES = (
    (0xFF00, 0x5000, 0x0000, 0x0000),
    (0xFF00, 0x6000, 0xFFFF, 0x3000),
    (0xFF00, 0x6000, 0xFFFF, 0x4000),
)


@pytest.mark.parametrize(
    ("version", "removals", "clearings", "uids"),
    [
        ("2008", 39, 0, 8),
        ("2017c", 216, 20, 31),
        ("2021b", 317, 85, 47),
        # Orthanc's impl.h has 411 removal lines, three of them duplicates.
        ("2023b", 408, 138, 51),
    ],
)
def test_sizes(version: str, removals: int, clearings: int, uids: int) -> None:
    p = PROFILES[version]
    assert p.version == version
    assert (len(p.removals), len(p.clearings), len(p.uids)) == (removals, clearings, uids)


def test_versions_and_methods() -> None:
    assert set(PROFILES) == {"2008", "2017c", "2021b", "2023b"}
    assert DEFAULT_VERSION == "2021b"
    assert PROFILES["2008"].deidentification_method == "PS 3.15-2008 Table E.1-1"
    for v in ("2017c", "2021b", "2023b"):
        assert PROFILES[v].deidentification_method == f"PS 3.15-{v} Table E.1-1 Basic Profile"


@pytest.mark.parametrize("version", ["2008", "2017c", "2021b", "2023b"])
def test_sets_are_disjoint_and_spare_main_identifiers(version: str) -> None:
    p = PROFILES[version]
    assert not p.removals & p.clearings
    assert not p.removals & p.uids
    assert not p.clearings & p.uids
    every = p.removals | p.clearings | p.uids
    assert not every & set(ALWAYS_REGENERATED_UIDS)
    assert not every & PATIENT_IDENTIFIERS
    assert not every & set(RELATIONSHIP_SEQUENCES)
    for tag in every:
        assert 0 <= tag <= 0xFFFFFFFF


def test_removed_ranges() -> None:
    assert PROFILES["2008"].removed_ranges == ()
    for v in ("2017c", "2021b", "2023b"):
        assert PROFILES[v].removed_ranges == RANGES


def test_well_known_members_2021b() -> None:
    p = PROFILES["2021b"]
    assert 0x00100030 in p.clearings  # PatientBirthDate
    assert 0x00100040 in p.clearings  # PatientSex
    assert 0x00080050 in p.clearings  # AccessionNumber
    assert 0x00200010 in p.clearings  # StudyID
    assert 0x0040A730 in p.clearings  # ContentSequence
    assert 0x00080080 in p.removals  # InstitutionName
    assert 0x00081030 in p.removals  # StudyDescription
    assert 0x0008103E in p.removals  # SeriesDescription
    assert 0xFFFAFFFA in p.removals  # DigitalSignaturesSequence
    assert 0x00200052 in p.uids  # FrameOfReferenceUID
    assert 0x00081155 in p.uids  # ReferencedSOPInstanceUID
    assert 0x04000100 in p.uids  # DigitalSignatureUID
    assert 0x00080060 not in p.removals | p.clearings | p.uids  # Modality kept


def test_version_differences() -> None:
    # 2008 removes what later profiles clear.
    assert {0x00080050, 0x00100030, 0x00100040, 0x00200010} <= PROFILES["2008"].removals
    assert 0x00200052 in PROFILES["2008"].uids
    # DigitalSignatureUID: removed in 2017c, remapped from 2021b on.
    assert 0x04000100 in PROFILES["2017c"].removals
    assert 0x04000100 in PROFILES["2023b"].uids
    # Treatment Site: cleared in 2021b, removed in 2023b.
    assert 0x30100077 in PROFILES["2021b"].clearings
    assert 0x30100077 in PROFILES["2023b"].removals
    # 2023b extends 2021b.
    assert PROFILES["2021b"].removals <= PROFILES["2023b"].removals
    assert PROFILES["2021b"].uids <= PROFILES["2023b"].uids
    assert PROFILES["2021b"].clearings - {0x30100077} <= PROFILES["2023b"].clearings
    assert {0x00080017, 0x00080019, 0x00640003, 0x300A0785} == (
        PROFILES["2023b"].uids - PROFILES["2021b"].uids
    )
