"""Who may use the SCP: the peer of an association (the ``origin`` of the plugin's hooks)
and the permission check of every DIMSE command (reference section 9.7), done by each
handler before it serves a request.
"""
from __future__ import annotations

import logging
from typing import Any

from .state import plugin_state

log = logging.getLogger("pacsbox.dicom_net.scp")

#: ``DicomAlwaysAllow<Cmd>`` option of each command name.
ALWAYS_ALLOW = {"Echo": "DicomAlwaysAllowEcho", "Store": "DicomAlwaysAllowStore",
                "Find": "DicomAlwaysAllowFind", "FindWorklist": "DicomAlwaysAllowFindWorklist",
                "Move": "DicomAlwaysAllowMove", "Get": "DicomAlwaysAllowGet"}


def peer(event: Any) -> dict[str, str]:
    """The calling AET, called AET and IP of the event's association.

    Returns
    -------
    dict
        ``{"RemoteAET", "CalledAET", "RemoteIP"}``, AETs without padding: the ``origin``
        of the plugin's hooks and the C-STORE metadata.
    """
    assoc = event.assoc
    info = getattr(assoc, "pacsbox_peer", None)
    if info is None:
        rq = assoc.requestor.primitive
        info = {"RemoteAET": str(rq.calling_ae_title).strip(), "CalledAET": str(rq.called_ae_title).strip(),
                "RemoteIP": str(assoc.requestor.address)}
    return info


def command_allowed(ctx: Any, event: Any, command: str) -> bool:
    """Whether ``command`` may be served to the event's peer (reference section 9.7).

    Parameters
    ----------
    ctx : ServerContext
    event : pynetdicom.events.Event
    command : str
        ``Echo``, ``Store``, ``Find``, ``FindWorklist``, ``Move`` or ``Get``.

    Returns
    -------
    bool
        True when the ``DicomAlwaysAllow<command>`` option is true, or the calling AET
        is a configured modality (host checked with ``DicomCheckModalityHost``) whose
        ``Allow<command>`` flag is true. A refusal is logged with Orthanc's wording.
    """
    state = plugin_state(ctx)
    if state.options[ALWAYS_ALLOW[command]]:
        return True
    p = peer(event)
    mods = state.modalities.by_aet(p["RemoteAET"], p["RemoteIP"])
    if not mods:
        log.warning('DICOM authorization rejected for AET %s on IP %s: This AET is not listed in configuration '
                    'option "DicomModalities"', p["RemoteAET"], p["RemoteIP"])
        return False
    if any(m.allows(command) for _, m in mods):
        return True
    log.warning("DICOM authorization rejected for AET %s on IP %s: The DICOM command %s is not allowed for this "
                "modality according to configuration option \"DicomModalities\"", p["RemoteAET"], p["RemoteIP"],
                command)
    return False
