"""Per-app state of the dicom_net plugin, kept on ``ctx.stash`` (never in module globals)."""
from __future__ import annotations

import threading
from typing import Any

from .modalities import ModalityRegistry
from .options import DicomOptions, read_options

#: Key of this plugin's state in ``ctx.stash``.
STASH_KEY = "dicom_net"


class DicomNetState:
    """What one app's DICOM node holds.

    Attributes
    ----------
    options : DicomOptions
        The checked DICOM options.
    modalities : ModalityRegistry
        ``DicomModalities`` (in the index when ``DicomModalitiesInDatabase``).
    accepted_transfer_syntaxes : list of str
        ``AcceptedTransferSyntaxes`` patterns (``*`` and ``?`` wildcards), changed at run
        time by ``PUT /tools/accepted-transfer-syntaxes``.
    unknown_sop_class_accepted : bool
        ``UnknownSopClassAccepted``, changed by ``PUT /tools/unknown-sop-class-accepted``.
    extra : dict
        Services added by the plugin's modules (the SCP server, the query store...),
        keyed by module name.
    lock : threading.Lock
        Guards the mutable attributes above.
    """

    def __init__(self, ctx: Any) -> None:
        self.options: DicomOptions = read_options(ctx.config)
        opts = self.options
        self.modalities = ModalityRegistry(opts.modalities, ctx.index if opts["DicomModalitiesInDatabase"] else None,
                                           strict_aet=opts["StrictAetComparison"],
                                           check_host=opts["DicomCheckModalityHost"])
        self.accepted_transfer_syntaxes: list[str] = list(opts["AcceptedTransferSyntaxes"])
        self.unknown_sop_class_accepted: bool = opts["UnknownSopClassAccepted"]
        self.extra: dict[str, Any] = {}
        self.lock = threading.Lock()


def plugin_state(ctx: Any) -> DicomNetState:
    """The dicom_net state of ``ctx``'s app, created on first use.

    Raises
    ------
    pacsbox.ConfigError
        A DICOM option is malformed (see :func:`pacsbox_dicom_net.options.read_options`).
    """
    state = ctx.stash.get(STASH_KEY)
    if state is None:
        state = ctx.stash[STASH_KEY] = DicomNetState(ctx)
    return state
