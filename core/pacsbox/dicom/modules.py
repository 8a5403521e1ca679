"""DICOM module tag lists used by Orthanc (``DicomTag::AddTagsForModule``; reference
Appendix C): ``/{level}/{id}/module``, create-dicom ``Parent``, split and merge."""
from __future__ import annotations


def _tags(text: str) -> tuple[int, ...]:
    return tuple(int(t.replace(",", ""), 16) for t in text.split())


PATIENT_MODULE = _tags("""
0010,0010 0010,0020 0010,0030 0010,0040 0008,1120 0010,0032 0010,1000 0010,1002 0010,1001
0010,2160 0010,4000 0010,2201 0010,2202 0010,2292 0010,2293 0010,2294 0010,2297 0010,2298
0010,2299 0012,0062 0012,0063 0012,0064 0010,0021 0010,0024
""")

STUDY_MODULE = _tags("""
0020,000d 0008,0020 0008,0030 0008,0090 0008,0096 0020,0010 0008,0050 0008,0051 0008,1030
0008,1048 0008,1049 0008,1060 0008,1062 0032,1034 0008,1110 0008,1032 0040,1012
""")

SERIES_MODULE = _tags("""
0008,0060 0020,000e 0020,0011 0020,0060 0008,0021 0008,0031 0008,1050 0008,1052 0018,1030
0008,103e 0008,103f 0008,1070 0008,1072 0008,1111 0008,1250 0018,0015 0018,5100 0028,0108
0028,0109 0040,0275 0010,2210 0040,0253 0040,0244 0040,0245 0040,0254 0040,0260 0040,0280
""")

INSTANCE_MODULE = _tags("""
0008,0016 0008,0018 0008,0005 0008,0012 0008,0013 0008,0014 0008,001a 0008,001b 0008,0110
0008,0201 0018,a001 0020,0013 0100,0410 0100,0420 0100,0424 0100,0426 0400,0500 0400,0561
0040,a390 0028,0303 4ffe,0001 fffa,fffa
""")

#: Level index (0 patient ... 3 instance) → module tags.
MODULES = (PATIENT_MODULE, STUDY_MODULE, SERIES_MODULE, INSTANCE_MODULE)


def module_tags(level: int | str) -> tuple[int, ...]:
    """The tags of one level's DICOM module, as Orthanc's ``DicomTag::AddTagsForModule``.

    Parameters
    ----------
    level : int or str
        0 to 3, or ``"Patient"``, ``"Study"``, ``"Series"``, ``"Instance"``.

    Returns
    -------
    tuple of int
        Tags ``0xGGGGEEEE`` (reference Appendix C).

    Raises
    ------
    ValueError
        An unknown level.
    """
    if isinstance(level, str):
        names = ("patient", "study", "series", "instance")
        if level.lower() not in names:
            raise ValueError(f"unknown level: {level!r}")
        level = names.index(level.lower())
    if not isinstance(level, int) or not 0 <= level <= 3:
        raise ValueError(f"unknown level: {level!r}")
    return MODULES[level]
