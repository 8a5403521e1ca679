"""The ``Dictionary`` configuration option (reference section 7.1): :class:`TagDictionary`,
the tags a site declares, used wherever a tag is named, and :func:`tag_dictionary`, the
app's one. Part of the tag helpers (:mod:`pacsbox.dicom.tags` re-exports both).
"""
from __future__ import annotations

from typing import Any, Mapping

from pydicom import Dataset
from pydicom.datadict import dictionary_VR

from .tags import _creator_text, dictionary_vr, keyword, parse_tag, private_name

class TagDictionary:
    """The tags a site declares in the ``Dictionary`` option, used wherever a tag is named.

    Orthanc registers these entries in DCMTK's data dictionary at start-up, so that their
    names are accepted as tag names in requests (create-dicom ``Tags``, modify
    ``Replace``/``Remove``, ``/tools/find``, ``/instances/{id}/content/{name}``) and shown
    in the ``/tags`` answers, and so that their VR is used to encode new values.

    Parameters
    ----------
    dictionary : mapping, optional
        The ``Dictionary`` option: ``"gggg,eeee"`` (a ``0x`` prefix is accepted; for a
        private tag only the element's low byte counts) → ``[VR, Name, MinMultiplicity,
        MaxMultiplicity, PrivateCreator]`` (2 to 5 items).
    default_private_creator : str
        The ``DefaultPrivateCreator`` option, used when a request gives no
        ``PrivateCreator``.
    load_private_dictionary : bool
        The ``LoadPrivateDictionary`` option: False leaves DCMTK's private dictionary out,
        so that a private tag outside the ``Dictionary`` is ``"Unknown Tag & Data"``.

    Attributes
    ----------
    names : dict of str to int
        Name → tag. A private entry's tag is given in the first private block,
        ``(gggg,10ee)``, the block whose creator is ``(gggg,0010)``.
    public : dict of int to tuple of (str, str)
        Public tag → ``(VR, Name)``.
    private : dict of tuple of (int, int, str) to tuple of (str, str)
        ``(group, element low byte, creator)`` → ``(VR, Name)``.
    creators : dict of str to str
        Name of a private entry → its private creator.
    default_private_creator : str
    load_private_dictionary : bool

    Notes
    -----
    Entries whose key or shape is malformed are skipped here; the start-up check of the
    option is the configuration's business. Source: reference section 7.1; Orthanc
    ``LoadExternalDictionaries``/``RegisterDictionaryTag``; DICOM PS3.5 section 7.8.1
    (private data element blocks).
    """

    def __init__(self, dictionary: Mapping[str, Any] | None = None, default_private_creator: str = "",
                 load_private_dictionary: bool = True) -> None:
        self.names: dict[str, int] = {}
        self.public: dict[int, tuple[str, str]] = {}
        self.private: dict[tuple[int, int, str], tuple[str, str]] = {}
        self.creators: dict[str, str] = {}
        self._tag_creators: dict[int, str] = {}
        self.default_private_creator = default_private_creator or ""
        self.load_private_dictionary = bool(load_private_dictionary)
        for key, entry in (dictionary or {}).items():
            try:
                g, e = [int(x.strip().lower().replace("0x", ""), 16) for x in str(key).split(",")]
            except ValueError:
                continue
            if not isinstance(entry, (list, tuple)) or len(entry) < 2 or not 0 <= g <= 0xFFFF \
                    or not 0 <= e <= 0xFFFF:
                continue
            vr, name = str(entry[0]).upper(), str(entry[1])
            creator = str(entry[4]) if len(entry) >= 5 and entry[4] is not None else ""
            if g & 1 and creator:
                self.private[(g, e & 0xFF, creator)] = (vr, name)
                if name not in self.names:
                    self.names[name] = (g << 16) | 0x1000 | (e & 0xFF)
                    self.creators[name] = creator
                    self._tag_creators.setdefault(self.names[name], creator)
            else:
                self.public[(g << 16) | e] = (vr, name)
                self.names.setdefault(name, (g << 16) | e)

    def __bool__(self) -> bool:
        """True when the dictionary changes anything (names given, or DCMTK's private
        dictionary left out)."""
        return bool(self.names) or not self.load_private_dictionary

    def parse(self, name: str) -> int:
        """The tag named ``name``: a ``Dictionary`` name, a keyword or a hexadecimal tag.

        Parameters
        ----------
        name : str
            ``"KitComment"``, ``"PatientName"``, ``"0010,0010"``, ``"0010-0010"``...

        Returns
        -------
        int
            ``0xGGGGEEEE``; a private ``Dictionary`` name gives its element in the first
            private block (``(gggg,10ee)``).

        Raises
        ------
        KeyError
            An unknown name (Orthanc answers "Unknown DICOM tag").
        """
        tag = self.names.get(name.strip())
        if tag is not None:
            return tag
        return parse_tag(name)

    def creator_of(self, tag: int) -> str | None:
        """The private creator of a tag as :meth:`parse` gives it for a private ``Dictionary``
        name (``(gggg,10ee)``), or None."""
        return self._tag_creators.get(tag)

    def locate(self, tag: int, ds: Dataset, creator: str | None = None) -> int:
        """Where a private tag of the ``Dictionary`` sits in a dataset.

        A private element's block depends on the file: ``KitComment`` is ``(0041,1010)``
        when ``KitCreator`` is declared in (0041,0010), ``(0041,1110)`` when it is declared
        in (0041,0011).

        Parameters
        ----------
        tag : int
            As :meth:`parse` gave it.
        ds : pydicom.Dataset
        creator : str, optional
            The private creator (default: the one of the ``Dictionary`` entry).

        Returns
        -------
        int
            The tag in the block that ``ds`` reserves for the creator; ``tag`` itself when
            it is not private, has no known creator, or ``ds`` reserves no block for it.
        """
        creator = creator or self._tag_creators.get(tag)
        group, elem = tag >> 16, tag & 0xFFFF
        if not creator or not group & 1 or elem <= 0x00FF:
            return tag
        for block in range(0x10, 0x100):
            el = ds.get_item((group << 16) | block)
            if el is None:
                continue
            if _creator_text(el) == creator:
                return (group << 16) | (block << 8) | (elem & 0xFF)
        return tag

    def entry(self, tag: int, creator: str | None = None) -> tuple[str, str] | None:
        """The ``(VR, Name)`` the option gives a tag, or None.

        Parameters
        ----------
        tag : int
        creator : str, optional
            The private creator of the tag's block (private tags only).
        """
        if tag >> 16 & 1:
            if not creator or not self.private or (tag & 0xFFFF) <= 0x00FF:
                return None
            return self.private.get((tag >> 16, tag & 0xFF, creator))
        return self.public.get(tag)

    def vr(self, tag: int, creator: str | None = None) -> str:
        """The VR to encode a new value of ``tag`` with.

        Parameters
        ----------
        tag : int
        creator : str, optional
            The private creator of the tag's block.

        Returns
        -------
        str
            The ``Dictionary`` VR, else the data dictionary's (DCMTK's rules of
            :func:`dictionary_vr`, ``"US or SS"`` resolved to ``US``); ``"UN"`` for an
            unknown private tag.
        """
        e = self.entry(tag, creator)
        if e is not None:
            return e[0]
        if not tag >> 16 & 1:
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                return "UL" if tag & 0xFFFF == 0 else "UN"
            return vr.split(" or ")[0] if len(vr) != 2 else vr
        return dictionary_vr(tag, creator)

    def name(self, tag: int, creator: str | None = None) -> str:
        """Orthanc's name of a tag in the JSON answers (``Name`` of ``/tags``, the keys of
        ``/simplified-tags``): the ``Dictionary`` name when the option lists the tag, else
        :func:`keyword` or :func:`private_name`."""
        e = self.entry(tag, creator)
        if e is not None:
            return e[1]
        if tag >> 16 & 1:
            return private_name(tag, creator if self.load_private_dictionary else None)
        return keyword(tag)


#: Key of the app's :class:`TagDictionary` in ``ctx.stash``.
_DICTIONARY_STASH_KEY = "pacsbox.dictionary"


def tag_dictionary(ctx: Any) -> TagDictionary:
    """The :class:`TagDictionary` of an app (its ``Dictionary``, ``DefaultPrivateCreator``
    and ``LoadPrivateDictionary`` options), built once and kept in ``ctx.stash``.

    Parameters
    ----------
    ctx : ServerContext

    Returns
    -------
    TagDictionary
    """
    d = ctx.stash.get(_DICTIONARY_STASH_KEY)
    if d is None:
        cfg = ctx.config
        load = cfg.get("LoadPrivateDictionary", True)
        d = ctx.stash[_DICTIONARY_STASH_KEY] = TagDictionary(cfg.get("Dictionary") or {},
                                                            str(cfg.get("DefaultPrivateCreator") or ""),
                                                            load is not False)
    return d
