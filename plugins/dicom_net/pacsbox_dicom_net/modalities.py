"""The ``DicomModalities`` configuration: parsing, AET matching and the run-time registry.

Both forms of Orthanc's option are accepted (reference section 9.1)::

    "DicomModalities" : {
      "short"  : [ "AET", "127.0.0.1", 104 ],
      "short4" : [ "AET", "127.0.0.1", 104, "Generic" ],
      "long"   : { "AET": "AET", "Host": "127.0.0.1", "Port": 104, "AllowStore": true, ... }
    }

The registry (:class:`ModalityRegistry`) is what the SCP, the SCU jobs and the REST routes
share. With ``DicomModalitiesInDatabase: true`` the modalities live in the index (global
property ``pacsbox_dicom_net.modalities``), so that ``PUT``/``DELETE /modalities/{id}``
survive a restart; the configured ones seed it on the first start, as Orthanc does.

Source: Orthanc 1.10.1 ``RemoteModalityParameters``; reference sections 9.1, 9.2 and 9.7.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Mapping

#: Manufacturer values Orthanc 1.10.1 accepts (``StringToModalityManufacturer``).
MANUFACTURERS = ("Generic", "GenericNoWildcardInDates", "GenericNoUniversalWildcard", "Vitrea", "GE")
#: Obsolete names still read by Orthanc 1.10.1 (with a warning), and what they mean now.
_OBSOLETE_MANUFACTURERS = {"AgfaImpax": "GenericNoUniversalWildcard", "EFilm2": "GenericNoUniversalWildcard",
                           "SyngoVia": "GenericNoWildcardInDates", "MedInria": "Generic",
                           "ClearCanvas": "Generic", "Dcm4Chee": "Generic", "StoreScp": "Generic"}
#: The per-command permission flags of a modality, all true by default.
ALLOW_FLAGS = ("AllowEcho", "AllowFind", "AllowFindWorklist", "AllowGet", "AllowMove", "AllowStore",
               "AllowNAction", "AllowEventReport", "AllowTranscoding")
#: ``RetrieveMethod`` values (Orthanc 1.12): how this server retrieves from the modality.
RETRIEVE_METHODS = ("SystemDefault", "C-MOVE", "C-GET")
#: Global property holding the modalities when ``DicomModalitiesInDatabase`` is true.
DB_PROPERTY = "pacsbox_dicom_net.modalities"


class ModalityConfigError(ValueError):
    """A modality definition is malformed; the message says which field and why."""


@dataclass(frozen=True)
class Modality:
    """One remote DICOM node (an entry of ``DicomModalities``).

    Attributes
    ----------
    aet : str
        Its application entity title (AE, 16 characters at most).
    host : str
        Host name or IP address (default ``127.0.0.1``).
    port : int
        TCP port, 1-65535 (default 104).
    manufacturer : str
        One of :data:`MANUFACTURERS` (query quirks, reference section 9.1).
    allow : dict of str to bool
        The :data:`ALLOW_FLAGS`, all true unless configured otherwise.
    local_aet : str
        Calling AET pacsbox uses toward this modality; empty means ``DicomAet``.
    timeout : int
        DIMSE and network timeout in seconds; 0 means ``DicomScuTimeout``.
    use_tls : bool
        ``UseDicomTls``: associations to this modality use DICOM TLS.
    retrieve_method : str
        ``RetrieveMethod`` (Orthanc 1.12): ``SystemDefault``, ``C-MOVE`` or ``C-GET``.
    """

    aet: str
    host: str = "127.0.0.1"
    port: int = 104
    manufacturer: str = "Generic"
    allow: Mapping[str, bool] = field(default_factory=lambda: {k: True for k in ALLOW_FLAGS})
    local_aet: str = ""
    timeout: int = 0
    use_tls: bool = False
    retrieve_method: str = "SystemDefault"

    def allows(self, command: str) -> bool:
        """Whether ``command`` (``Echo``, ``Store``, ``Find``, ``FindWorklist``, ``Move``,
        ``Get``, ``NAction``, ``EventReport``) is allowed to this modality."""
        return bool(self.allow.get("Allow" + command, True))

    def to_json(self) -> dict[str, Any]:
        """The long form Orthanc 1.10.1 answers in ``GET /modalities?expand`` and
        ``/modalities/{id}/configuration``: every key, sorted (reference section 9.2)."""
        out: dict[str, Any] = {"AET": self.aet, "Host": self.host, "LocalAet": self.local_aet,
                               "Manufacturer": self.manufacturer, "Port": self.port, "Timeout": self.timeout,
                               "UseDicomTls": self.use_tls}
        for k in ALLOW_FLAGS:
            out[k] = bool(self.allow.get(k, True))
        if self.retrieve_method != "SystemDefault":
            out["RetrieveMethod"] = self.retrieve_method
        return dict(sorted(out.items()))


def _port(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise ModalityConfigError(f"modality {name!r}: Port must be a number, not {value!r}")
    if isinstance(value, str):
        if not value.strip().isdigit():
            raise ModalityConfigError(f"modality {name!r}: Port must be a number, not {value!r}")
        value = int(value)
    if not isinstance(value, int) or not 0 < value < 65536:
        raise ModalityConfigError(f"modality {name!r}: Port must be an integer in 1-65535, not {value!r}")
    return value


def _aet(value: Any, name: str, field_name: str = "AET", *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not value and not empty):
        raise ModalityConfigError(f"modality {name!r}: {field_name} must be a non-empty string, not {value!r}")
    if len(value) > 16:
        raise ModalityConfigError(f"modality {name!r}: {field_name} {value!r} is longer than 16 characters")
    return value


def _manufacturer(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise ModalityConfigError(f"modality {name!r}: Manufacturer must be a string, not {value!r}")
    if value in MANUFACTURERS:
        return value
    if value in _OBSOLETE_MANUFACTURERS:
        return _OBSOLETE_MANUFACTURERS[value]
    raise ModalityConfigError(f"modality {name!r}: unknown Manufacturer {value!r} "
                              f"(expected one of {', '.join(MANUFACTURERS)})")


def parse_modality(name: str, value: Any) -> Modality:
    """Read one modality definition, in the array or the object form.

    Parameters
    ----------
    name : str
        Its symbolic name (the JSON key), used in error messages.
    value : list or dict
        ``[AET, Host, Port]`` or ``[AET, Host, Port, Manufacturer]``, or an object with
        ``AET``, ``Host``, ``Port``, ``Manufacturer``, the ``Allow*`` flags,
        ``AllowStorageCommitment`` (sets ``AllowNAction`` and ``AllowEventReport``),
        ``LocalAet``, ``Timeout``, ``UseDicomTls`` and ``RetrieveMethod``.

    Returns
    -------
    Modality

    Raises
    ------
    ModalityConfigError
        A field is missing, of the wrong type or out of range (the message names it).
    """
    if isinstance(value, list):
        if len(value) not in (3, 4):
            raise ModalityConfigError(f"modality {name!r}: the array form is [AET, Host, Port(, Manufacturer)]")
        host = value[1]
        if not isinstance(host, str) or not host:
            raise ModalityConfigError(f"modality {name!r}: Host must be a non-empty string, not {host!r}")
        return Modality(_aet(value[0], name), host, _port(value[2], name),
                        _manufacturer(value[3], name) if len(value) == 4 else "Generic")
    if not isinstance(value, Mapping):
        raise ModalityConfigError(f"modality {name!r}: expected an array or an object, not {type(value).__name__}")
    if "AET" not in value:
        raise ModalityConfigError(f"modality {name!r}: the object form needs the field AET")
    allow = {k: True for k in ALLOW_FLAGS}
    if "AllowStorageCommitment" in value:
        flag = value["AllowStorageCommitment"]
        if not isinstance(flag, bool):
            raise ModalityConfigError(f"modality {name!r}: AllowStorageCommitment must be true or false")
        allow["AllowNAction"] = allow["AllowEventReport"] = flag
    for k in ALLOW_FLAGS:
        if k in value:
            if not isinstance(value[k], bool):
                raise ModalityConfigError(f"modality {name!r}: {k} must be true or false, not {value[k]!r}")
            allow[k] = value[k]
    host = value.get("Host", "127.0.0.1")
    if not isinstance(host, str) or not host:
        raise ModalityConfigError(f"modality {name!r}: Host must be a non-empty string, not {host!r}")
    timeout = value.get("Timeout", 0)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0:
        raise ModalityConfigError(f"modality {name!r}: Timeout must be a number of seconds >= 0, not {timeout!r}")
    use_tls = value.get("UseDicomTls", False)
    if not isinstance(use_tls, bool):
        raise ModalityConfigError(f"modality {name!r}: UseDicomTls must be true or false, not {use_tls!r}")
    method = value.get("RetrieveMethod", "SystemDefault")
    if method not in RETRIEVE_METHODS:
        raise ModalityConfigError(f"modality {name!r}: RetrieveMethod must be one of "
                                  f"{', '.join(RETRIEVE_METHODS)}, not {method!r}")
    return Modality(_aet(value["AET"], name), host, _port(value.get("Port", 104), name),
                    _manufacturer(value.get("Manufacturer", "Generic"), name), allow,
                    _aet(value.get("LocalAet", ""), name, "LocalAet", empty=True), timeout, use_tls, method)


def parse_modalities(value: Any) -> dict[str, Modality]:
    """Read the whole ``DicomModalities`` option.

    Parameters
    ----------
    value : dict or None
        Symbolic name to definition (see :func:`parse_modality`).

    Returns
    -------
    dict of str to Modality

    Raises
    ------
    ModalityConfigError
        The option is not an object, or one definition is malformed.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ModalityConfigError("DicomModalities must be an object of symbolic name -> modality")
    return {str(name): parse_modality(str(name), v) for name, v in value.items()}


def aet_equal(a: str, b: str, strict: bool) -> bool:
    """AET comparison of Orthanc: exact with ``StrictAetComparison``, else case-insensitive."""
    return a == b if strict else a.upper() == b.upper()


class ModalityRegistry:
    """The modalities of one app, shared by the SCP, the SCU jobs and the REST routes.

    Parameters
    ----------
    configured : dict of str to Modality
        From ``DicomModalities``.
    index : Index or None
        The app's index when ``DicomModalitiesInDatabase`` is true (modalities then live
        in a global property; the configured ones are added on the first start only).
    strict_aet : bool
        ``StrictAetComparison``.
    check_host : bool
        ``DicomCheckModalityHost``.
    """

    def __init__(self, configured: Mapping[str, Modality], index: Any = None, *, strict_aet: bool = False,
                 check_host: bool = False) -> None:
        self._lock = threading.Lock()
        self._index = index
        self.strict_aet = strict_aet
        self.check_host = check_host
        mods = dict(configured)
        if index is not None:
            stored = index.get_global(DB_PROPERTY)
            if stored is None:
                self._save(mods)
            else:
                mods = {name: self._from_stored(name, v) for name, v in json.loads(stored).items()}
        self._mods = mods

    @staticmethod
    def _from_stored(name: str, v: Mapping[str, Any]) -> Modality:
        return parse_modality(name, dict(v))

    def _save(self, mods: Mapping[str, Modality]) -> None:
        if self._index is not None:
            self._index.set_global(DB_PROPERTY, json.dumps({n: m.to_json() for n, m in mods.items()}))

    def names(self) -> list[str]:
        """Symbolic names, sorted (``GET /modalities``)."""
        with self._lock:
            return sorted(self._mods)

    def items(self) -> Iterator[tuple[str, Modality]]:
        """``(name, modality)`` pairs, sorted by name."""
        with self._lock:
            snapshot = sorted(self._mods.items())
        return iter(snapshot)

    def get(self, name: str) -> Modality | None:
        """The modality of symbolic name ``name``, or None."""
        with self._lock:
            return self._mods.get(name)

    def put(self, name: str, modality: Modality) -> None:
        """Create or replace ``name`` (``PUT /modalities/{id}``), persisted when in the database."""
        with self._lock:
            mods = dict(self._mods)
            mods[name] = modality
            self._save(mods)
            self._mods = mods

    def delete(self, name: str) -> bool:
        """Remove ``name``; False when unknown (``DELETE /modalities/{id}``)."""
        with self._lock:
            if name not in self._mods:
                return False
            mods = dict(self._mods)
            del mods[name]
            self._save(mods)
            self._mods = mods
            return True

    def by_aet(self, aet: str, ip: str | None = None) -> list[tuple[str, Modality]]:
        """Modalities whose AET matches ``aet`` (and whose ``Host`` is ``ip`` when
        ``DicomCheckModalityHost`` is set and ``ip`` is given), sorted by name.

        Parameters
        ----------
        aet : str
            A calling or destination AET, as received (padding stripped).
        ip : str, optional
            The peer's IP address.

        Returns
        -------
        list of (str, Modality)
        """
        with self._lock:
            snapshot = sorted(self._mods.items())
        out = [(n, m) for n, m in snapshot if aet_equal(m.aet, aet, self.strict_aet)]
        if self.check_host and ip is not None:
            out = [(n, m) for n, m in out if m.host == ip]
        return out

    def with_override(self, name: str, **changes: Any) -> Modality:
        """A copy of modality ``name`` with fields replaced (per-call ``CalledAet``,
        ``Host``, ``Port`` of Orthanc 1.12).

        Raises
        ------
        KeyError
            ``name`` is unknown.
        """
        m = self.get(name)
        if m is None:
            raise KeyError(name)
        return replace(m, **changes)
