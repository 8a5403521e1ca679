"""The DICOM options of Orthanc that this plugin reads, checked at start-up.

Every option keeps Orthanc 1.10.1's name and default (reference section 9.8), except
``DicomAet``, whose pacsbox default is ``PACSBOX`` (a core default). A malformed value
stops the start-up with a message naming the option, its value and what is expected.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pacsbox import ConfigError

from .modalities import ModalityConfigError, parse_modalities

#: Option name -> (default, kind). Kinds: ``bool``, ``int>=0``, ``int>0``, ``port``,
#: ``aet``, ``str``, ``list[str]``.
DICOM_OPTIONS: dict[str, tuple[Any, str]] = {
    "DicomServerEnabled": (True, "bool"),
    "DicomAet": ("PACSBOX", "aet"),
    "DicomPort": (4242, "port"),
    "DicomCheckCalledAet": (False, "bool"),
    "DicomCheckModalityHost": (False, "bool"),
    "StrictAetComparison": (False, "bool"),
    "DicomAlwaysAllowEcho": (True, "bool"),
    "DicomAlwaysAllowStore": (True, "bool"),
    "DicomAlwaysAllowFind": (False, "bool"),
    "DicomAlwaysAllowFindWorklist": (False, "bool"),
    "DicomAlwaysAllowGet": (False, "bool"),
    "DicomAlwaysAllowMove": (False, "bool"),
    "DicomModalitiesInDatabase": (False, "bool"),
    "DicomScuTimeout": (10, "int>=0"),
    "DicomScpTimeout": (30, "int>=0"),
    "DicomAssociationCloseDelay": (5, "int>=0"),
    "DicomScuPreferredTransferSyntax": ("1.2.840.10008.1.2.1", "str"),
    "DicomThreadsCount": (4, "int>0"),
    "MaximumPduLength": (16384, "int>0"),
    "QueryRetrieveSize": (100, "int>=0"),
    "SynchronousCMove": (True, "bool"),
    "AcceptedTransferSyntaxes": (["1.2.840.10008.1.*"], "list[str]"),
    "UnknownSopClassAccepted": (False, "bool"),
    "DicomEchoChecksFind": (False, "bool"),
    "TranscodeDicomProtocol": (True, "bool"),
    "LogExportedResources": (False, "bool"),
    "DicomTlsEnabled": (False, "bool"),
    "DicomTlsCertificate": ("", "str"),
    "DicomTlsPrivateKey": ("", "str"),
    "DicomTlsTrustedCertificates": ("", "str"),
    "DicomTlsRemoteCertificateRequired": (True, "bool"),
    "RetrieveMethod": ("C-MOVE", "str"),
}


def _check(name: str, value: Any, kind: str) -> Any:
    def bad(expected: str) -> ConfigError:
        return ConfigError(f"option {name}: {value!r} is not {expected}")

    if kind == "bool":
        if not isinstance(value, bool):
            raise bad("true or false")
    elif kind.startswith("int") or kind == "port":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        if kind == "int>=0" and value < 0:
            raise bad("an integer >= 0")
        if kind == "int>0" and value <= 0:
            raise bad("an integer > 0")
        if kind == "port" and not 0 < value < 65536:
            raise bad("a TCP port number (1-65535)")
    elif kind == "aet":
        if not isinstance(value, str) or not value or len(value) > 16:
            raise bad("an AET: a string of 1 to 16 characters")
    elif kind == "str":
        if not isinstance(value, str):
            raise bad("a string")
    elif kind == "list[str]":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad("a list of strings")
    return value


@dataclass
class DicomOptions:
    """The checked DICOM options of one app.

    Attributes
    ----------
    values : dict of str to any
        Every name of :data:`DICOM_OPTIONS` with its configured or default value.
    modalities : dict of str to Modality
        ``DicomModalities``, parsed.
    """

    values: dict[str, Any] = field(default_factory=dict)
    modalities: dict = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.values[name]


def read_options(config: Any) -> DicomOptions:
    """Check and read the DICOM options of ``config``.

    Parameters
    ----------
    config : pacsbox.Config
        The app's configuration.

    Returns
    -------
    DicomOptions

    Raises
    ------
    pacsbox.ConfigError
        An option has the wrong type or range, ``RetrieveMethod`` is not ``C-MOVE`` or
        ``C-GET``, or a ``DicomModalities`` entry is malformed; the message names the
        option and the value.
    """
    values = {}
    for name, (default, kind) in DICOM_OPTIONS.items():
        value = config.get(name, default) if hasattr(config, "get") else default
        if value is None:
            value = default
        values[name] = _check(name, value, kind)
    if values["RetrieveMethod"] not in ("C-MOVE", "C-GET"):
        raise ConfigError(f"option RetrieveMethod: {values['RetrieveMethod']!r} is not C-MOVE or C-GET")
    if values["DicomTlsEnabled"]:
        for name in ("DicomTlsCertificate", "DicomTlsPrivateKey"):
            if not values[name]:
                raise ConfigError(f"option {name}: required when DicomTlsEnabled is true")
    try:
        modalities = parse_modalities(config.get("DicomModalities", {}))
    except ModalityConfigError as e:
        raise ConfigError(f"option DicomModalities: {e}") from None
    return DicomOptions(values, modalities)
