"""Extension points of the DICOM node (plugin-owned hook specs).

They exist only when the ``dicom_net`` plugin is loaded: it adds them through the core's
``add_hookspecs`` hook. Implement them in your plugin with
``@hookimpl(optionalhook=True)``, so that your plugin still loads when ``dicom_net`` is
blocked::

    from pacsbox import hookimpl

    @hookimpl(optionalhook=True)
    def filter_incoming_association(calling_aet, called_aet, ip):
        return calling_aet != "BLOCKED"

Every hook runs in a thread of the SCP, on the association's request path: keep it fast.
An implementation that raises is logged with its plugin's name, and the peer gets a DIMSE
failure status (``0xC000`` family) or an association rejection: never a dropped
connection.

Source: DICOM PS3.4 annex C (Query/Retrieve) and annex K (Basic Worklist Management);
Orthanc's ``IncomingDicomRequestFilter``, ``WorklistCallback`` and ``FindCallback``.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import pydicom

from pacsbox import hookspec


@hookspec
def filter_incoming_association(calling_aet: str, called_aet: str, ip: str) -> bool | None:
    """Accept or refuse an incoming association, after the core's AET checks.

    Calling convention: **veto filter**: every implementation runs; any ``False``
    rejects the association (A-ASSOCIATE-RJ, rejected-permanent, service user,
    reason "calling AE title not recognised").

    Parameters
    ----------
    calling_aet : str
        The peer's AET, padding stripped.
    called_aet : str
        The AET the peer called, padding stripped.
    ip : str
        The peer's IP address (``"127.0.0.1"``).

    Returns
    -------
    bool or None
        ``False`` to reject; ``True`` or ``None`` to let the association go on.

    Raises
    ------
    Exception
        Never propagated: an exception is logged with the plugin's name and the
        association is rejected (a broken filter fails closed).

    Notes
    -----
    Called only for associations that passed ``DicomCheckCalledAet`` and the calling-AET
    check (``DicomAlwaysAllow*`` options or ``DicomModalities``).

    Orthanc equivalent: ``OrthancPluginRegisterIncomingDicomRequestFilter`` / Lua
    ``IncomingDicomRequestFilter`` at association level.
    """


@hookspec(firstresult=True)
def find_worklist_answers(query: pydicom.Dataset, origin: Mapping[str, Any]) -> Sequence[pydicom.Dataset] | None:
    """Answer a Modality Worklist C-FIND.

    Calling convention: **firstresult**: implementations are called until one returns
    something other than ``None``. The built-in folder provider (``Worklists`` section,
    ``{"Enable": true, "Database": "<folder>"}``) is ``trylast``, so an installed plugin
    overrides it. When no implementation answers, the worklist presentation context is
    refused at association time, as Orthanc does without a worklist plugin.

    Parameters
    ----------
    query : pydicom.Dataset
        The C-FIND identifier as received (PS3.4 K.6.1.2).
    origin : mapping
        ``RemoteAET``, ``CalledAET``, ``RemoteIP``.

    Returns
    -------
    list of pydicom.Dataset or None
        The matching worklist items, each holding the requested keys; the SCP sends
        one Pending (``0xFF00``) response per item, then Success. ``None``: not answered
        by this implementation.

    Raises
    ------
    Exception
        Never propagated: logged with the plugin's name; the peer gets ``0xC000``
        (unable to process) and the association goes on.

    Notes
    -----
    The SCP adds nothing to the datasets: the provider returns the keys to send. It
    caps the answers at ``LimitFindResults`` (0 = no limit).

    Orthanc equivalent: ``OrthancPluginRegisterWorklistCallback``.
    """


@hookspec(firstresult=True)
def find_answers(level: str, query: pydicom.Dataset, origin: Mapping[str, Any]) -> Sequence[pydicom.Dataset] | None:
    """Answer a Patient Root or Study Root C-FIND instead of the index.

    Calling convention: **firstresult**: implementations are called until one returns
    something other than ``None``; when none answers, the SCP matches the index as
    ``/tools/find`` does.

    Parameters
    ----------
    level : str
        (0008,0052) *Query/Retrieve Level*: ``"PATIENT"``, ``"STUDY"``, ``"SERIES"`` or
        ``"IMAGE"``.
    query : pydicom.Dataset
        The C-FIND identifier as received.
    origin : mapping
        ``RemoteAET``, ``CalledAET``, ``RemoteIP``.

    Returns
    -------
    list of pydicom.Dataset or None
        The answers, sent as Pending (``0xFF00``) responses in order, then Success;
        ``None`` to let the index answer.

    Raises
    ------
    Exception
        Never propagated: logged with the plugin's name; the peer gets ``0xC000`` and the
        association goes on.

    Notes
    -----
    ``LimitFindResults`` still caps the answers. Orthanc's own plugins cannot replace the
    C-FIND SCP's answers; this hook can.

    Orthanc equivalent: ``OrthancPluginRegisterFindCallback`` (which answers only the
    C-FIND requests Orthanc's database would not).
    """


@hookspec(firstresult=True)
def move_destination(aet: str) -> tuple[str, int] | Mapping[str, Any] | None:
    """Resolve a C-MOVE destination that is not a configured modality.

    Calling convention: **firstresult**: called only when (0000,0600) *Move Destination*
    matches no entry of ``DicomModalities``; the first non-``None`` answer is used.

    Parameters
    ----------
    aet : str
        The Move Destination AET, padding stripped.

    Returns
    -------
    tuple of (str, int), or mapping, or None
        ``(host, port)``, or a modality definition in the object form of
        ``DicomModalities`` (``{"AET": ..., "Host": ..., "Port": ...}``); ``None`` when
        unknown: the C-MOVE then fails with ``0xC000`` and no sub-operation, as Orthanc
        1.10.1 answers an unknown destination.

    Raises
    ------
    Exception
        Never propagated: logged with the plugin's name; the C-MOVE fails with
        ``0xC000`` and no sub-operation.

    Notes
    -----
    Orthanc equivalent: ``OrthancPluginRegisterMoveCallback`` (which takes over the
    whole move); here the plugin only names the destination, and pacsbox sends.
    """
