"""The default Modality Worklist provider: a folder of worklist files.

Configuration (the section of Orthanc's sample ``ModalityWorklists`` plugin)::

    "Worklists" : {
      "Enable": true,
      "Database": "/var/lib/pacsbox/worklists"
    }

When enabled, a :class:`FolderWorklists` object is registered in the app's plugin manager
at start-up under the name ``dicom_net.worklists``, as a ``trylast`` implementation of
``find_worklist_answers``: any installed plugin that answers first wins. Every regular
file of the folder that pydicom can read (``*.wl`` files as written by dcmtk's
``dump2dcm``, or any DICOM file) is one worklist item; files are read at each query, so
adding or removing a file takes effect at once.

Matching follows DICOM PS3.4 K.2.2.1 / C.2.2.2 as Orthanc's sample plugin does with its
``FindMatcher``: each non-empty key of the query must match the item (single value,
``*``/``?`` wildcards on text VRs, ``\\``-separated lists, ``A-B`` date/time ranges;
person names case-insensitive unless ``CaseSensitivePN``, everything else
case-sensitive); a sequence key with one item matches when one of the item's sequence
items matches that item's keys (sequence matching); an empty key or an empty sequence is
universal. The answer holds the requested keys only, with the item's values (a key the
item lacks is left out) and, for a sequence key, the matching items reduced to the keys
of the query's item (all of them, whole, for an empty query sequence). Six findscu -W
queries answer exactly as Orthanc 1.10.1's ModalityWorklists plugin on the same files
(``test_scp_reference.py``).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Sequence

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from pacsbox import OrthancError, compile_query, hookimpl

from .find_answers import codecs_of, copy_item, text_of

log = logging.getLogger("pacsbox.dicom_net.worklist")

#: Name of the default provider in the plugin manager.
PLUGIN_NAME = "dicom_net.worklists"


def _key(tag: int) -> str:
    return f"{tag >> 16:04x},{tag & 0xFFFF:04x}"


def _has_constraint(query: Dataset, codecs: list[str]) -> bool:
    for elem in query:
        tag = int(elem.tag)
        if tag == 0x00080005 or tag >> 16 < 0x0008:
            continue
        if elem.VR == "SQ":
            if elem.value and _has_constraint(elem.value[0], codecs):
                return True
        elif text_of(query, tag, codecs):
            return True
    return False


def matches(query: Dataset, item: Dataset, *, case_sensitive_pn: bool = False,
            query_codecs: list[str] | None = None, item_codecs: list[str] | None = None) -> bool:
    """Whether worklist ``item`` matches ``query`` (see the module docstring).

    Parameters
    ----------
    query : pydicom.Dataset
        A C-FIND identifier (or one item of a sequence key).
    item : pydicom.Dataset
        A worklist file (or one item of one of its sequences).
    case_sensitive_pn : bool
        ``CaseSensitivePN``.
    query_codecs, item_codecs : list of str, optional
        Python codecs of the two data sets (default: from their (0008,0005), else
        Latin-1); inherited by sequence items.

    Returns
    -------
    bool

    Raises
    ------
    OrthancError
        A wildcard on a key whose VR takes none (dates, UIDs, numbers).
    """
    qc = query_codecs or codecs_of(query)
    ic = item_codecs or codecs_of(item)
    for elem in query:
        tag = int(elem.tag)
        if tag == 0x00080005 or tag >> 16 < 0x0008:
            continue
        if elem.VR == "SQ":
            if not elem.value or not _has_constraint(elem.value[0], qc):
                continue
            seq = item.get(tag)
            if seq is None or seq.VR != "SQ" or not any(
                    matches(elem.value[0], it, case_sensitive_pn=case_sensitive_pn, query_codecs=qc,
                            item_codecs=ic) for it in seq.value):
                return False
            continue
        value = text_of(query, tag, qc)
        if not value:
            continue
        [constraint] = compile_query({_key(tag): value}, case_sensitive_pn, dicom_rules=True)
        if constraint.is_universal:
            continue
        if not constraint.matches(text_of(item, tag, ic)):
            return False
    return True


def extract(query: Dataset, item: Dataset, *, case_sensitive_pn: bool = False) -> Dataset:
    """The answer for a matching ``item``: the keys of ``query`` with ``item``'s values.

    Parameters
    ----------
    query : pydicom.Dataset
    item : pydicom.Dataset
    case_sensitive_pn : bool

    Returns
    -------
    pydicom.Dataset
        (0008,0005) of the item when it has one, then each requested key the item has
        (copied; a key it lacks is left out, as Orthanc's ModalityWorklists plugin);
        sequences reduced as the module docstring says.
    """
    out = Dataset()
    charset = item.get("SpecificCharacterSet")
    if charset is not None:
        out.SpecificCharacterSet = charset
    for elem in query:
        tag = int(elem.tag)
        if tag == 0x00080005:
            continue
        src = item.get(tag)
        if src is None:
            continue  # a requested key the item lacks is left out, as Orthanc's plugin
        if elem.VR == "SQ":
            q_item = elem.value[0] if elem.value else None
            items = []
            if src is not None and src.VR == "SQ":
                for it in src.value:
                    if q_item is None or len(q_item) == 0:
                        items.append(copy_item(it))
                    elif matches(q_item, it, case_sensitive_pn=case_sensitive_pn, query_codecs=codecs_of(query),
                                 item_codecs=codecs_of(item)):
                        items.append(extract(q_item, it, case_sensitive_pn=case_sensitive_pn))
            out.add(DataElement(tag, "SQ", DicomSequence(items)))
        else:
            out.add(DataElement(tag, src.VR, src.value))
    return out


class FolderWorklists:
    """The folder provider of worklist answers (``Worklists`` configuration section).

    Parameters
    ----------
    folder : str
        ``Worklists.Database``.
    case_sensitive_pn : bool
        ``CaseSensitivePN``.
    """

    def __init__(self, folder: str, case_sensitive_pn: bool = False) -> None:
        self.folder = folder
        self.case_sensitive_pn = case_sensitive_pn

    def items(self) -> list[Dataset]:
        """The worklist files of the folder, read now, in file-name order (unreadable
        files are skipped and logged)."""
        out = []
        try:
            names = sorted(os.listdir(self.folder))
        except OSError as e:
            log.error("Worklists: cannot list the folder %s: %s", self.folder, e)
            return out
        for name in names:
            path = os.path.join(self.folder, name)
            if not os.path.isfile(path):
                continue
            try:
                out.append(pydicom.dcmread(path, force=True))
            except Exception as e:  # noqa: BLE001 - one bad file does not stop the others
                log.warning("Worklists: cannot read %s: %s", path, e)
        return out

    @hookimpl(trylast=True)
    def find_worklist_answers(self, query: pydicom.Dataset, origin: Mapping[str, Any]) -> Sequence[pydicom.Dataset]:
        """Match every worklist file of the folder against ``query``.

        Returns
        -------
        list of pydicom.Dataset
            One answer per matching file (see :func:`extract`).

        Raises
        ------
        OrthancError
            A wildcard on a key whose VR takes none (the SCP answers ``0xC000``).
        """
        out = []
        for item in self.items():
            try:
                ok = matches(query, item, case_sensitive_pn=self.case_sensitive_pn)
            except OrthancError:
                raise
            if ok:
                out.append(extract(query, item, case_sensitive_pn=self.case_sensitive_pn))
        return out


def start(ctx: Any) -> None:
    """Register the folder provider when ``Worklists.Enable`` is true.

    Raises
    ------
    pacsbox.ConfigError
        ``Worklists.Database`` is missing or not a folder.
    """
    from pacsbox import ConfigError

    section = ctx.plugin_config("Worklists", {}) or {}
    if not isinstance(section, Mapping) or not section.get("Enable", False):
        return
    folder = section.get("Database")
    if not isinstance(folder, str) or not os.path.isdir(folder):
        raise ConfigError(f"option Worklists.Database: {folder!r} is not a folder")
    if ctx.pm.get_plugin(PLUGIN_NAME) is None:
        ctx.pm.register(FolderWorklists(folder, ctx.config.bool("CaseSensitivePN")), name=PLUGIN_NAME)


def stop(ctx: Any) -> None:
    """Unregister the folder provider, if registered."""
    obj = ctx.pm.get_plugin(PLUGIN_NAME)
    if obj is not None:
        ctx.pm.unregister(obj)
