"""The DICOM options of Orthanc that this plugin reads, checked at start-up.

Every option keeps Orthanc 1.10.1's name and default (reference section 9.8), except
``DicomAet``, whose pacsbox default is ``PACSBOX`` (a core default). The plugin declares
them with ``register_options``: the core refuses a value of the wrong type or range at
start-up with a message naming the option, its value, what is expected and the plugin;
:func:`read_options` checks what a type cannot say.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pacsbox import ConfigError

from .modalities import ModalityConfigError, parse_modalities

#: Option name -> (default, kind, doc): the options this plugin declares with the
#: ``register_options`` hook, so that the core checks them at start-up (kinds of
#: :class:`pacsbox.OptionSpec`).
DICOM_OPTIONS: dict[str, tuple[Any, str, str]] = {
    "DicomServerEnabled": (True, "bool", "Run the DICOM server (C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET SCP)"),
    "DicomAet": ("PACSBOX", "aet", "The Application Entity Title of this server"),
    "DicomPort": (4242, "port", "TCP port of the DICOM server"),
    "DicomCheckCalledAet": (False, "bool", "Refuse associations whose called AET is not DicomAet"),
    "DicomCheckModalityHost": (False, "bool",
                               "Refuse a known AET calling from another address than its DicomModalities host"),
    "StrictAetComparison": (False, "bool", "Compare AETs case-sensitively"),
    "DicomAlwaysAllowEcho": (True, "bool", "Accept C-ECHO from any AET, known or not"),
    "DicomAlwaysAllowStore": (True, "bool", "Accept C-STORE from any AET, known or not"),
    "DicomAlwaysAllowFind": (False, "bool", "Accept C-FIND from any AET, known or not"),
    "DicomAlwaysAllowFindWorklist": (False, "bool", "Accept worklist C-FIND from any AET, known or not"),
    "DicomAlwaysAllowGet": (False, "bool", "Accept C-GET from any AET, known or not"),
    "DicomAlwaysAllowMove": (False, "bool", "Accept C-MOVE from any AET, known or not"),
    "DicomModalitiesInDatabase": (False, "bool",
                                  "Keep the modalities in the index (edited through /modalities), not the file"),
    "DicomScuTimeout": (10, "int>=0", "Seconds an SCU waits for its peer (0: no limit)"),
    "DicomScpTimeout": (30, "int>=0", "Seconds of idleness after which the SCP drops an association (0: never)"),
    "DicomAssociationCloseDelay": (5, "int>=0", "Seconds an idle SCU association stays open for reuse"),
    "DicomScuPreferredTransferSyntax": ("1.2.840.10008.1.2.1", "str",
                                        "Transfer syntax the C-STORE SCU proposes first"),
    "DicomThreadsCount": (4, "int>0", "Associations served at once (keep it >= 2 for a C-MOVE to ourselves)"),
    "MaximumPduLength": (16384, "int>0", "Largest PDU received, in bytes"),
    "QueryRetrieveSize": (100, "int>=0", "Most answers of the C-FIND SCP (0: no limit)"),
    "SynchronousCMove": (True, "bool", "The C-MOVE SCP runs its C-STORE sub-operations in the request"),
    "AcceptedTransferSyntaxes": (["1.2.840.10008.1.*"], "str|list[str]",
                                 "Transfer syntax UIDs the SCP accepts (wildcards * and ? allowed)"),
    "UnknownSopClassAccepted": (False, "bool", "Accept storage of SOP classes outside the standard list"),
    "DicomEchoChecksFind": (False, "bool", "A C-ECHO to a modality also checks that it answers C-FIND"),
    "TranscodeDicomProtocol": (True, "bool",
                               "Transcode an instance the peer does not accept in its transfer syntax"),
    "LogExportedResources": (False, "bool", "Record the resources sent to modalities and peers in /exports"),
    "DicomTlsEnabled": (False, "bool", "DICOM TLS for the SCP and the SCUs"),
    "DicomTlsCertificate": ("", "str", "PEM certificate of this server (DICOM TLS)"),
    "DicomTlsPrivateKey": ("", "str", "PEM private key of this server (DICOM TLS)"),
    "DicomTlsTrustedCertificates": ("", "str", "PEM file of the trusted peer certificates (DICOM TLS)"),
    "DicomTlsRemoteCertificateRequired": (True, "bool", "Require a certificate from DICOM TLS peers"),
    "RetrieveMethod": ("C-MOVE", "str", "How /queries/.../retrieve fetches: \"C-MOVE\" or \"C-GET\""),
}


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
        ``RetrieveMethod`` is not ``C-MOVE`` or ``C-GET``, TLS lacks its certificate or
        key, or a ``DicomModalities`` entry is malformed; the message names the option and
        the value. (Types and ranges are the core's to check, from :data:`DICOM_OPTIONS`.)
    """
    values = {}
    for name, (default, _kind, _doc) in DICOM_OPTIONS.items():  # kinds checked by the core
        value = config.get(name, default) if hasattr(config, "get") else default
        values[name] = default if value is None else value
    if isinstance(values["AcceptedTransferSyntaxes"], str):
        values["AcceptedTransferSyntaxes"] = [values["AcceptedTransferSyntaxes"]]
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
