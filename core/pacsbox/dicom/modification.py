"""Modification and anonymization of DICOM instances, as Orthanc's ``DicomModification``.

:class:`Modification` holds what a ``/modify`` or ``/anonymize`` request asks for
(reference sections 5.2 and 5.3): tags to replace, remove, clear, keep, UIDs to remap,
private tags, paths into sequences. It parses the request bodies with Orthanc's checks and
error texts, serializes to JSON (so that a job can be rebuilt after a restart), and
compiles into the :class:`~pacsbox.dicom.rewrite.Rules` that :mod:`pacsbox.dicom.rewrite`
applies to the bytes of each file.

New UIDs come from a :class:`UidMapper`: a deterministic function of a per-job random
seed, the level and the original value (``2.25.<128-bit integer of SHA-256>``, ISO/IEC
9834-8 form), so that every instance of a job gets the same mapping, and a job re-run
after a crash rewrites an instance to the very same UIDs (stored again as
``AlreadyStored``, never as a duplicate).

Sources: Orthanc ``DicomModification.cpp`` (``Apply``, ``RelationshipsVisitor``,
``ParseModifyRequest``, ``ParseAnonymizationRequest``), ``DicomPath.cpp``; reference
sections 5.2, 5.3 and Appendix B; profiles in :mod:`pacsbox.dicom.profiles`.
"""
from __future__ import annotations

import hashlib
import uuid
from typing import Any, Callable, Mapping

from ..version import __version__
from ..errors import ErrorCode, OrthancError
from ..levels import LEVEL_NAMES, Level
from ..web import MODIFY_FIELDS, read_bool, read_string
from . import profiles
from . import rewrite
from .tag_paths import DicomPath, TagParser, tag_name

PATIENT_ID = 0x00100020
PATIENT_NAME = 0x00100010
STUDY_UID = 0x0020000D
SERIES_UID = 0x0020000E
SOP_UID = 0x00080018
DATABASE_KEYS = (PATIENT_ID, STUDY_UID, SERIES_UID, SOP_UID)
REFERENCED_SOP_INSTANCE_UID = 0x00081155
REFERENCED_FRAME_OF_REFERENCE_SEQUENCE = 0x30060010
RT_REFERENCED_STUDY_SEQUENCE = 0x30060012


#: Name put before the profile text in (0012,0063) *De-identification Method*; Orthanc
#: writes ``"Orthanc <version>"`` there.
DEIDENTIFICATION_SOFTWARE = f"pacsbox {__version__}"


# ------------------------------------------------------------------------------------------
# UID mapping
# ------------------------------------------------------------------------------------------

class UidMapper:
    """Deterministic original → new identifier mapping for one job.

    Parameters
    ----------
    seed : str
        Random per-job seed (hex), saved with the job.
    overrides : mapping, optional
        ``(level, original) → new``: identifiers replaced by the request (Orthanc
        ``RegisterMappedDicomIdentifier``).

    Notes
    -----
    Level 0 (patient) gives a UUID string (new PatientID); levels 1-3 give
    ``2.25.<decimal>`` UIDs of at most 44 characters. The hash input is
    ``seed|level|original`` with the original stripped of padding.
    """

    def __init__(self, seed: str, overrides: Mapping[tuple[int, str], str] | None = None) -> None:
        self.seed = seed
        self.overrides = dict(overrides or {})
        self._cache: dict[tuple[int, str], str] = {}

    def register(self, level: int, original: str, new: str) -> None:
        """Map ``original`` to ``new`` at ``level`` unless already mapped (first one wins,
        as Orthanc's ``RegisterMappedDicomIdentifier``)."""
        key = (level, original.strip(" \x00"))
        if key not in self._cache and key not in self.overrides:
            self.overrides[key] = new

    def __call__(self, level: int, original: str) -> str:
        key = (level, original.strip(" \x00"))
        v = self._cache.get(key)
        if v is None:
            v = self.overrides.get(key)
            if v is None:
                digest = hashlib.sha256(f"{self.seed}|{key[0]}|{key[1]}".encode("utf-8")).digest()
                u = uuid.UUID(bytes=digest[:16], version=4)
                v = str(u) if level == Level.PATIENT else f"2.25.{u.int}"
            self._cache[key] = v
        return v


# ------------------------------------------------------------------------------------------
# the modification
# ------------------------------------------------------------------------------------------

#: Bounds of a ``Replace`` value: nesting of sequences, items per sequence, characters of
#: a text value (a DICOM value length is at most 2^32 - 2 bytes; 64 MiB is plenty for text).
MAX_REPLACE_DEPTH = 16
MAX_REPLACE_ITEMS = 10000
MAX_REPLACE_TEXT = 64 * 1024 * 1024


def _convert_json(value: Any, parse_tag: Callable[[str], int], tag: int, depth: int = 0) -> Any:
    """A Replace value with the tag names of nested sequence items parsed to ints.

    Raises
    ------
    OrthancError
        ``BAD_PARAMETER_TYPE`` for a value that is neither a string nor a list of
        objects; 400 ``BAD_REQUEST`` beyond :data:`MAX_REPLACE_DEPTH` nested sequences,
        :data:`MAX_REPLACE_ITEMS` items or :data:`MAX_REPLACE_TEXT` characters.
    """
    if isinstance(value, str):
        if len(value) > MAX_REPLACE_TEXT:
            raise OrthancError(ErrorCode.BAD_REQUEST, f"The Replace value of tag {tag_name(tag)} is longer than "
                               f"{MAX_REPLACE_TEXT} characters")
        return value
    if isinstance(value, list):
        if depth >= MAX_REPLACE_DEPTH:
            raise OrthancError(ErrorCode.BAD_REQUEST, f"The Replace value of tag {tag_name(tag)} nests more than "
                               f"{MAX_REPLACE_DEPTH} sequences")
        if len(value) > MAX_REPLACE_ITEMS:
            raise OrthancError(ErrorCode.BAD_REQUEST, f"The Replace value of tag {tag_name(tag)} has more than "
                               f"{MAX_REPLACE_ITEMS} items")
        out = []
        for item in value:
            if not isinstance(item, dict):
                raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE, f"Bad Parameter type for tag {tag_name(tag)}")
            out.append({parse_tag(k): _convert_json(v, parse_tag, parse_tag(k), depth + 1) for k, v in item.items()})
        return out
    raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE, f"Bad Parameter type for tag {tag_name(tag)}")


def _to_json(value: Any) -> Any:
    if isinstance(value, list):
        return [{tag_name(k): _to_json(v) for k, v in item.items()} for item in value]
    return value


class Modification:
    """What to do to every instance of a modification or anonymization.

    Build it with :meth:`from_modify_request` / :meth:`from_anonymize_request`, check it
    with :meth:`check_level`, save it with :meth:`serialize`, compile it with
    :meth:`rules`.

    Parameters
    ----------
    tag_parser : TagParser
    private_creator : str
        Default private creator (option ``DefaultPrivateCreator``).
    """

    def __init__(self, tag_parser: TagParser, private_creator: str = "") -> None:
        self.parse_tag = tag_parser
        self.is_anonymization = False
        self.level = 3
        self.remove_private = False
        self.private_keep: set[int] = set()
        self.keep: set[int] = set()
        self.removals: set[int] = set()
        self.clearings: set[int] = set()
        self.uids: set[int] = set()
        self.ranges: tuple[tuple[int, int, int, int], ...] = ()
        self.replacements: dict[int, Any] = {}
        self.keep_study = self.keep_series = self.keep_sop = False
        self.keep_paths: list[DicomPath] = []
        self.remove_paths: list[DicomPath] = []
        self.replace_paths: list[tuple[DicomPath, Any]] = []
        self.private_creator = private_creator
        self.deidentification_value: str | None = None
        self.dicom_version: str | None = None

    # ---- Orthanc's primitive operations ----------------------------------------------
    def _mark_not_orthanc_anonymization(self) -> None:
        """The request customizes the profile (``Keep``/``Remove``/``Replace``...).

        Orthanc then drops its DeidentificationMethod (0012,0063) replacement, so the
        profile's clearing leaves the attribute empty or absent although the instance was
        de-identified (an Orthanc bug report). pacsbox keeps it, marked as customized.
        """
        v = self.replacements.get(profiles.DEIDENTIFICATION_METHOD_TAG)
        if v is not None and v == self.deidentification_value and not v.endswith(" (customized)"):
            self.deidentification_value = f"{v} (customized)"
            self.replacements[profiles.DEIDENTIFICATION_METHOD_TAG] = self.deidentification_value

    def keep_tag(self, tag: int) -> None:
        """Keep ``tag`` untouched (``Keep``)."""
        self.keep.add(tag)
        self.removals.discard(tag)
        self.clearings.discard(tag)
        self.uids.discard(tag)
        self.replacements.pop(tag, None)
        if tag == STUDY_UID:
            self.keep_study = True
        elif tag == SERIES_UID:
            self.keep_series = True
        elif tag == SOP_UID:
            self.keep_sop = True
        elif tag >> 16 & 1:
            self.private_keep.add(tag)
        self._mark_not_orthanc_anonymization()

    def remove_tag(self, tag: int) -> None:
        """Remove ``tag`` (``Remove``)."""
        self.removals.add(tag)
        self.clearings.discard(tag)
        self.uids.discard(tag)
        self.replacements.pop(tag, None)
        self.private_keep.discard(tag)
        self._mark_not_orthanc_anonymization()

    def replace_tag(self, tag: int, value: Any, safe_for_anonymization: bool = False) -> None:
        """Replace ``tag`` by ``value``, inserting it when absent (``Replace``)."""
        self.clearings.discard(tag)
        self.removals.discard(tag)
        self.uids.discard(tag)
        self.private_keep.discard(tag)
        self.replacements[tag] = value
        if not safe_for_anonymization:
            self._mark_not_orthanc_anonymization()

    def keep_path(self, path: DicomPath) -> None:
        """``Keep`` with a path."""
        if not path.prefix:
            self.keep_tag(path.final)
        self.keep_paths.append(path)
        self._mark_not_orthanc_anonymization()

    def remove_path(self, path: DicomPath) -> None:
        """``Remove`` with a path."""
        if not path.prefix:
            self.remove_tag(path.final)
        else:
            self.remove_paths.append(path)
            self._mark_not_orthanc_anonymization()

    def replace_path(self, path: DicomPath, value: Any, safe_for_anonymization: bool = False) -> None:
        """``Replace`` with a path."""
        if not path.prefix:
            self.replace_tag(path.final, value, safe_for_anonymization)
        else:
            self.replace_paths.append((path, value))
            if not safe_for_anonymization:
                self._mark_not_orthanc_anonymization()

    def set_remove_private(self, removed: bool) -> None:
        """``RemovePrivateTags`` / ``KeepPrivateTags``."""
        self.remove_private = removed
        if not removed:
            self._mark_not_orthanc_anonymization()

    def set_level(self, level: int) -> None:
        """Modification level (0 patient ... 3 instance)."""
        self.level = level
        if level != Level.PATIENT:
            self._mark_not_orthanc_anonymization()

    def setup_anonymization(self, version: str) -> None:
        """Load a PS3.15 profile (``SetupAnonymization``).

        Raises
        ------
        OrthancError
            400 ``PARAMETER_OUT_OF_RANGE`` "Unknown specific version of the DICOM standard:
            <version>".
        """
        profile = profiles.PROFILES.get(version)
        if profile is None:
            raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE,
                               f"Unknown specific version of the DICOM standard: {version}")
        self.is_anonymization = True
        self.dicom_version = version
        self.keep.clear()
        self.removals = set(profile.removals)
        self.clearings = set(profile.clearings)
        self.ranges = profile.removed_ranges
        self.uids = set(profile.uids) | set(profiles.PATIENT_IDENTIFIERS)
        self.replacements = {}
        self.replace_paths, self.remove_paths, self.keep_paths = [], [], []
        self.remove_private = True
        self.level = 0
        self.private_keep.clear()
        self.deidentification_value = f"{DEIDENTIFICATION_SOFTWARE} - {profile.deidentification_method}"
        self.replacements[profiles.DEIDENTIFICATION_METHOD_TAG] = self.deidentification_value
        self.replacements[profiles.PATIENT_IDENTITY_REMOVED_TAG] = "YES"

    # ---- request parsing ------------------------------------------------------------------
    def _parse_list(self, body: Mapping[str, Any], name: str, keep: bool, force: bool) -> None:
        value = body[name]
        if not isinstance(value, list):
            raise OrthancError(ErrorCode.BAD_REQUEST)
        for item in value:
            if not isinstance(item, str):
                raise OrthancError(ErrorCode.BAD_REQUEST)
            path = DicomPath.parse(item, self.parse_tag)
            if not path.prefix and not force and path.final in DATABASE_KEYS:
                raise OrthancError(ErrorCode.BAD_REQUEST, f"Marking tag \"{item}\" as to be "
                                   f"{'kept' if keep else 'removed'} requires the \"Force\" option to be set to true")
            if keep:
                self.keep_path(path)
            else:
                self.remove_path(path)

    def _parse_replacements(self, body: Mapping[str, Any], force: bool) -> None:
        value = body["Replace"]
        if not isinstance(value, dict):
            raise OrthancError(ErrorCode.BAD_REQUEST)
        for name, v in value.items():
            path = DicomPath.parse(name, self.parse_tag)
            if not path.prefix and not force and path.final in DATABASE_KEYS:
                raise OrthancError(ErrorCode.BAD_REQUEST, f"Marking tag \"{name}\" as to be replaced requires the "
                                   "\"Force\" option to be set to true")
            self.replace_path(path, _convert_json(v, self.parse_tag, path.final))

    def _parse_tag_fields(self, body: Mapping[str, Any], force: bool) -> None:
        """``Remove``, ``Replace``, ``Keep`` (in Orthanc's order) and ``PrivateCreator``."""
        if "Remove" in body:
            self._parse_list(body, "Remove", False, force)
        if "Replace" in body:
            self._parse_replacements(body, force)
        if "Keep" in body:
            self._parse_list(body, "Keep", True, force)
        self._parse_private_creator(body)
        self.force = force

    def _parse_private_creator(self, body: Mapping[str, Any]) -> None:
        self.private_creator = read_string(body, "PrivateCreator", self.private_creator)

    @classmethod
    def from_modify_request(cls, body: Mapping[str, Any], tag_parser: TagParser,
                            private_creator: str = "") -> "Modification":
        """Parse a ``/modify`` body (``ParseModifyRequest``); the level is set by the caller.

        Raises
        ------
        OrthancError
            Orthanc's 400 errors for malformed fields and for Force-protected tags.
        """
        m = cls(tag_parser, private_creator)
        if not isinstance(body, dict):
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT)
        force = read_bool(body, "Force", False, errors=MODIFY_FIELDS)
        if read_bool(body, "RemovePrivateTags", False, errors=MODIFY_FIELDS):
            m.set_remove_private(True)
        m._parse_tag_fields(body, force)
        return m

    @classmethod
    def from_anonymize_request(cls, body: Mapping[str, Any], tag_parser: TagParser,
                               private_creator: str = "") -> tuple["Modification", bool]:
        """Parse an ``/anonymize`` body (``ParseAnonymizationRequest``).

        Returns
        -------
        (Modification, bool)
            The modification, and whether PatientName was replaced, kept or removed by the
            request (else the caller replaces it with ``Anonymized<N>``).

        Raises
        ------
        OrthancError
            Orthanc's 400 errors; ``PARAMETER_OUT_OF_RANGE`` for an unknown ``DicomVersion``.
        """
        m = cls(tag_parser, private_creator)
        if not isinstance(body, dict):
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT)
        force = read_bool(body, "Force", False, errors=MODIFY_FIELDS)
        version = profiles.DEFAULT_VERSION
        if "DicomVersion" in body:
            v = body["DicomVersion"]
            if not isinstance(v, str):
                raise OrthancError(ErrorCode.BAD_FILE_FORMAT)
            version = v
        m.setup_anonymization(version)
        if read_bool(body, "KeepPrivateTags", False, errors=MODIFY_FIELDS):
            m.set_remove_private(False)
        m._parse_tag_fields(body, force)
        return m, PATIENT_NAME not in m.uids

    force = False

    def check(self) -> None:
        """Orthanc's consistency checks on the identifiers (run before the job starts).

        Raises
        ------
        OrthancError
            400 ``BAD_REQUEST``: removing a main identifier; a patient modification
            without a new PatientID; a study/series/instance modification changing
            PatientID; a series/instance one changing StudyInstanceUID; an instance one
            changing SeriesInstanceUID (Orthanc 1.10.1 checks these even with ``Force``).
        """
        if any(t in self.removals for t in DATABASE_KEYS):
            raise OrthancError(ErrorCode.BAD_REQUEST, "It is forbidden to remove one of the main Dicom identifiers")
        if self.is_anonymization:
            return
        replaced_pid = PATIENT_ID in self.replacements or PATIENT_ID in self.uids
        lvl = self.level
        texts = {1: "a study", 2: "a series", 3: "an instance"}
        if lvl == 0 and not replaced_pid:
            raise OrthancError(ErrorCode.BAD_REQUEST, "When modifying a patient, her PatientID is required to be modified")
        if lvl >= 1 and replaced_pid:
            raise OrthancError(ErrorCode.BAD_REQUEST,
                               f"When modifying {texts[lvl]}, the parent PatientID cannot be manually modified")
        if lvl >= 2 and STUDY_UID in self.replacements:
            raise OrthancError(ErrorCode.BAD_REQUEST,
                               f"When modifying {texts[lvl]}, the parent StudyInstanceUID cannot be manually modified")
        if lvl == 3 and SERIES_UID in self.replacements:
            raise OrthancError(ErrorCode.BAD_REQUEST,
                               "When modifying an instance, the parent SeriesInstanceUID cannot be manually modified")

    def detect_level(self) -> int:
        """The level implied by the replaced identifiers (``DetectModifyLevel``)."""
        if PATIENT_ID in self.replacements:
            return 0
        if STUDY_UID in self.replacements:
            return 1
        if SERIES_UID in self.replacements:
            return 2
        return 3

    # ---- serialization ---------------------------------------------------------------------
    def serialize(self) -> dict[str, Any]:
        """JSON-serializable state (rebuilt by :meth:`deserialize`)."""
        tags = lambda s: sorted(tag_name(t) for t in s)  # noqa: E731
        return {
            "IsAnonymization": self.is_anonymization, "Level": LEVEL_NAMES[self.level],
            "RemovePrivateTags": self.remove_private, "PrivateTagsToKeep": tags(self.private_keep),
            "Keep": tags(self.keep), "Removals": tags(self.removals), "Clearings": tags(self.clearings),
            "Uids": tags(self.uids), "RemovedRanges": [list(r) for r in self.ranges],
            "Replacements": {tag_name(t): _to_json(v) for t, v in sorted(self.replacements.items())},
            "KeepStudyInstanceUID": self.keep_study, "KeepSeriesInstanceUID": self.keep_series,
            "KeepSOPInstanceUID": self.keep_sop,
            "KeepSequences": [p.format() for p in self.keep_paths],
            "RemoveSequences": [p.format() for p in self.remove_paths],
            "SequenceReplacements": [[p.format(), _to_json(v)] for p, v in self.replace_paths],
            "PrivateCreator": self.private_creator, "DeidentificationMethod": self.deidentification_value,
            "DicomVersion": self.dicom_version, "Force": self.force,
        }

    @classmethod
    def deserialize(cls, data: Mapping[str, Any], tag_parser: TagParser) -> "Modification":
        """Rebuild from :meth:`serialize`'s output."""
        m = cls(tag_parser, data.get("PrivateCreator", ""))
        pt = tag_parser
        tags = lambda k: {pt(x) for x in data.get(k, [])}  # noqa: E731
        m.is_anonymization = bool(data["IsAnonymization"])
        m.level = LEVEL_NAMES.index(data["Level"])
        m.remove_private = bool(data["RemovePrivateTags"])
        m.private_keep, m.keep = tags("PrivateTagsToKeep"), tags("Keep")
        m.removals, m.clearings, m.uids = tags("Removals"), tags("Clearings"), tags("Uids")
        m.ranges = tuple(tuple(r) for r in data.get("RemovedRanges", []))
        m.replacements = {pt(k): _convert_json(v, pt, pt(k)) for k, v in data.get("Replacements", {}).items()}
        m.keep_study = bool(data.get("KeepStudyInstanceUID"))
        m.keep_series = bool(data.get("KeepSeriesInstanceUID"))
        m.keep_sop = bool(data.get("KeepSOPInstanceUID"))
        m.keep_paths = [DicomPath.parse(s, pt) for s in data.get("KeepSequences", [])]
        m.remove_paths = [DicomPath.parse(s, pt) for s in data.get("RemoveSequences", [])]
        m.replace_paths = [(DicomPath.parse(s, pt), _convert_json(v, pt, 0)) for s, v in
                           data.get("SequenceReplacements", [])]
        m.deidentification_value = data.get("DeidentificationMethod")
        m.dicom_version = data.get("DicomVersion")
        m.force = bool(data.get("Force", False))
        return m

    # ---- compilation -----------------------------------------------------------------------
    def is_removed(self, tag: int) -> bool:
        """In the removals or in a removed range (curves, overlays)."""
        if tag in self.removals:
            return True
        g, e = tag >> 16, tag & 0xFFFF
        for gm, gv, em, ev in self.ranges:
            if g & gm == gv and e & em == ev:
                return True
        return False

    def rules(self) -> "ModificationRules":
        """The compiled rules for :class:`pacsbox.dicom.rewrite.Rewriter`."""
        return ModificationRules(self)

    def rewriter(self, mapper: UidMapper, default_codec: str = "latin_1") -> rewrite.Rewriter:
        """A :class:`~pacsbox.dicom.rewrite.Rewriter` applying this modification."""
        creator = self.private_creator
        parser = self.parse_tag
        return rewrite.Rewriter(self.rules(), mapper, lambda t: parser.vr(t, creator), default_codec)


class ModificationRules(rewrite.Rules):
    """:class:`Modification` compiled for the byte-level rewriter (Orthanc ``Apply``).

    Precedence at the top level follows the order of Orthanc's ``Apply``: private tags
    removed, clearings, removals, replacements (with insertion), Study/Series/SOP Instance
    UIDs regenerated at and below the level, then (anonymization only) the relationships:
    remaining UID-type tags remapped and sequences visited; finally the paths into
    sequences.
    """

    def __init__(self, m: Modification) -> None:
        self.m = m
        self.replacements = m.replacements
        top: dict[int, tuple[int, Any]] = {}
        anon = m.is_anonymization
        if anon:
            for t in m.uids:
                top[t] = (rewrite.MAP, 0 if t in profiles.PATIENT_IDENTIFIERS else 3)
        for t in m.removals:
            top[t] = (rewrite.REMOVE, None)
        for t in m.clearings:
            top[t] = (rewrite.CLEAR, None)
        if m.level <= Level.STUDY and not m.keep_study:
            top[STUDY_UID] = (rewrite.MAP, 1)
        if m.level <= Level.SERIES and not m.keep_series:
            top[SERIES_UID] = (rewrite.MAP, 2)
        if not m.keep_sop:
            top[SOP_UID] = (rewrite.MAP, 3)
        self._top = top
        self._anon = anon
        self._remove_private = m.remove_private
        self._private_keep = m.private_keep
        self._path_roots = {p.prefix[0][0] for p in m.remove_paths} | {p.prefix[0][0] for p, _ in m.replace_paths}
        self._has_paths = bool(m.remove_paths or m.replace_paths)
        self._keep_paths = m.keep_paths
        #: anonymization: main UIDs replaced by the request, whose originals map to the
        #: replacement inside sequences too (``(tag, level, value)``)
        self.registrations = [(t, lvl, m.replacements[t]) for t, lvl in ((STUDY_UID, 1), (SERIES_UID, 2), (SOP_UID, 3))
                              if anon and isinstance(m.replacements.get(t), str)]

    def top(self, tag: int, vr: str) -> tuple[int, Any]:
        if tag >> 16 & 1 and self._remove_private and tag not in self._private_keep:
            return rewrite.REMOVE, None
        a = self._top.get(tag)
        if a is not None:
            if a[0] == rewrite.MAP and vr not in rewrite.STRING_VRS:
                return rewrite.KEEP, None
            return a
        if vr == "SQ" and (self._anon or tag in self._path_roots):
            return rewrite.DESCEND, None
        return rewrite.KEEP, None

    def nested(self, tag: int, vr: str, parents: tuple[tuple[int, int], ...]) -> tuple[int, Any]:
        m = self.m
        if self._anon and not any(p.covers(parents, tag) for p in self._keep_paths):
            if tag >> 16 & 1 and self._remove_private:
                return rewrite.REMOVE, None
            if m.is_removed(tag):
                return rewrite.REMOVE, None
            if tag in m.clearings:
                return (rewrite.CLEAR, None) if vr in rewrite.STRING_VRS else (rewrite.REMOVE, None)
            if vr in rewrite.STRING_VRS:
                if tag == STUDY_UID:
                    return self._path_override(tag, parents, (rewrite.MAP, 1))
                if tag == SERIES_UID:
                    return self._path_override(tag, parents, (rewrite.MAP, 2))
                if tag == SOP_UID:
                    return self._path_override(tag, parents, (rewrite.MAP, 3))
                if tag in m.uids:
                    if tag in profiles.PATIENT_IDENTIFIERS:
                        level = 0
                    elif (tag == REFERENCED_SOP_INSTANCE_UID and len(parents) == 2
                          and parents[0][0] == REFERENCED_FRAME_OF_REFERENCE_SEQUENCE
                          and parents[1][0] == RT_REFERENCED_STUDY_SEQUENCE):
                        level = 1
                    else:
                        level = 3
                    return self._path_override(tag, parents, (rewrite.MAP, level))
        if self._has_paths and any(p.final == tag and p.prefix_matches(parents) for p in m.remove_paths):
            return rewrite.REMOVE, None
        if vr == "SQ" and self.descend(tag, parents):
            return rewrite.DESCEND, None
        return rewrite.KEEP, None

    def _path_override(self, tag, parents, action):
        if self._has_paths and any(p.final == tag and p.prefix_matches(parents) for p in self.m.remove_paths):
            return rewrite.REMOVE, None
        return action

    def descend(self, tag: int, parents: tuple[tuple[int, int], ...]) -> bool:
        if self._anon:
            return True
        m = self.m
        return any(p.leads_into(parents, tag) for p in m.remove_paths) or \
            any(p.leads_into(parents, tag) for p, _ in m.replace_paths)

    def inserts(self, parents: tuple[tuple[int, int], ...]) -> Mapping[int, Any]:
        if not self.m.replace_paths:
            return {}
        return {p.final: v for p, v in self.m.replace_paths if p.prefix_matches(parents)}
