"""The four levels of a resource: patient, study, series, instance (Orthanc's
``ResourceType``), in one map: :class:`Level`.

A leaf module (it imports only :mod:`pacsbox.errors`), so that every layer, the DICOM
code included, names levels the same way.
"""
from __future__ import annotations

import enum

from .errors import ErrorCode, OrthancError


class Level(enum.IntEnum):
    """The level of a resource (Orthanc's ``ResourceType``), stored as its integer.

    ``Resource.level`` holds the plain integer, which compares equal to these members
    (``res.level == Level.SERIES``).

    Examples
    --------
    >>> Level.STUDY.type_name, Level.STUDY.plural, Level.parse("images")
    ('Study', 'studies', <Level.INSTANCE: 3>)
    """

    PATIENT = 0
    STUDY = 1
    SERIES = 2
    INSTANCE = 3

    @property
    def type_name(self) -> str:
        """str: ``"Patient"``, ``"Study"``, ``"Series"`` or ``"Instance"`` (the ``Type`` and
        ``ResourceType`` of the REST answers)."""
        return LEVEL_NAMES[self]

    @property
    def plural(self) -> str:
        """str: ``"patients"``, ``"studies"``, ``"series"`` or ``"instances"`` (the URIs)."""
        return PLURAL[self]

    def path(self, public_id: str) -> str:
        """``/{plural}/{public_id}``, the ``Path`` of the REST answers."""
        return f"/{PLURAL[self]}/{public_id}"

    @classmethod
    def parse(cls, text: str) -> "Level":
        """A level named as Orthanc's ``StringToResourceType`` reads it: singular or
        plural, any case, ``Image``/``Images`` for instances (surrounding spaces refused).

        Raises
        ------
        OrthancError
            400 ``PARAMETER_OUT_OF_RANGE`` (no details, as Orthanc 1.10.1) for another
            name.
        """
        level = _LEVEL_BY_NAME.get(text.upper()) if isinstance(text, str) and text.isascii() else None
        if level is None:
            raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE)
        return level


#: ``Level`` names by value, for the hot paths (``LEVEL_NAMES[res.level]``).
LEVEL_NAMES = ("Patient", "Study", "Series", "Instance")
#: Plural names by value (``/{plural}/{id}``).
PLURAL = ("patients", "studies", "series", "instances")
_LEVEL_BY_NAME = {**{n.upper(): Level(i) for i, n in enumerate(LEVEL_NAMES)},
                  **{n.upper(): Level(i) for i, n in enumerate(PLURAL)}, "IMAGE": Level.INSTANCE,
                  "IMAGES": Level.INSTANCE}
