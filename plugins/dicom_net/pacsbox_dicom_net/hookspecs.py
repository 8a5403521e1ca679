"""Extension points of the DICOM node (plugin-owned hook specs).

They exist only when the ``dicom_net`` plugin is loaded: it adds them through the core's
``add_hookspecs`` hook. Implement them in your plugin with
``@hookimpl(optionalhook=True)``, so that your plugin still loads when ``dicom_net`` is
blocked::

    from pacsbox import hookimpl

    @hookimpl(optionalhook=True)
    def filter_incoming_association(calling_aet, called_aet, ip):
        return calling_aet != "BLOCKED"

Every hook but ``filter_outgoing_find`` runs in a thread of the SCP, on the association's
request path: keep it fast. An implementation that raises is logged with its plugin's name,
and the peer gets a DIMSE failure status (``0xC000`` family, ``0xA700`` for C-STORE) or an
association rejection: never a dropped connection. ``filter_outgoing_find`` runs in the
thread of the REST request that queries a modality.

Calling conventions, besides the core's (veto filter, firstresult; see
:mod:`pacsbox.hookspecs`):

- **chained filter**: every implementation is called, in pluggy's order (``tryfirst``
  first, ``trylast`` last, otherwise the last registered first); each receives what the
  previous one returned (the original value for the first one); ``None`` passes its input
  on unchanged. What the last one gives is used.

Source: DICOM PS3.4 annex B (Storage), annex C (Query/Retrieve) and annex K (Basic
Worklist Management); Orthanc's ``IncomingDicomRequestFilter``, ``WorklistCallback``,
``FindCallback``, ``IncomingCStoreInstanceFilter`` and its Lua ``Incoming*Filter`` /
``OutgoingFindRequestFilter`` callbacks.
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


@hookspec
def filter_incoming_find(query: pydicom.Dataset, origin: Mapping[str, Any]) -> pydicom.Dataset | None:
    """Rewrite a Patient Root or Study Root C-FIND identifier before it is answered.

    Calling convention: **chained filter**: every implementation is called in pluggy's
    order, each with the identifier the previous one returned; ``None`` keeps it. Called
    for each C-FIND the calling AET may send (after the ``Find`` permission check),
    before ``find_answers`` and the index. The rewritten identifier is the whole query:
    its keys are matched **and** are the keys of the answers (as Orthanc 1.10.1 does with
    its Lua filter), its (0008,0052) *Query/Retrieve Level* is the level.

    Parameters
    ----------
    query : pydicom.Dataset
        The identifier as received (PS3.4 C.4.1.1.3), or as the previous implementation
        returned it. Do not modify it in place: return a new data set.
    origin : mapping
        ``RemoteAET``, ``CalledAET``, ``RemoteIP``.

    Returns
    -------
    pydicom.Dataset or None
        The identifier to use instead; ``None`` to keep the one received. Values of text
        VRs may be ``str`` (decoded); (0008,0005) *Specific Character Set*, when present,
        decides the answers' character set as for a received query.

    Raises
    ------
    Exception
        Never propagated: logged with the plugin's name; the peer gets ``0xC000``
        (unable to process, PS3.4 C.4.1.1.4) and the association goes on. A rewritten
        identifier without a valid level gets ``0xC000`` too.

    Notes
    -----
    Not called for Modality Worklist C-FIND (see ``filter_incoming_worklist``), nor for
    the identifiers of C-MOVE and C-GET.

    Orthanc equivalent: Lua ``IncomingFindRequestFilter(query, origin)``.
    """


@hookspec
def filter_incoming_worklist(query: pydicom.Dataset, origin: Mapping[str, Any]) -> pydicom.Dataset | None:
    """Rewrite a Modality Worklist C-FIND identifier before the worklist provider answers.

    Calling convention: **chained filter** (see ``filter_incoming_find``). Called for each
    Modality Worklist C-FIND the calling AET may send (``FindWorklist`` permission),
    before ``find_worklist_answers``; only when a worklist provider exists (otherwise the
    worklist presentation context is refused at association time).

    Parameters
    ----------
    query : pydicom.Dataset
        The identifier as received (PS3.4 K.6.1.1.3), sequences included, or as the
        previous implementation returned it. Do not modify it in place.
    origin : mapping
        ``RemoteAET``, ``CalledAET``, ``RemoteIP``.

    Returns
    -------
    pydicom.Dataset or None
        The identifier the provider matches instead; ``None`` to keep it.

    Raises
    ------
    Exception
        Never propagated: logged with the plugin's name; the peer gets ``0xC000`` and the
        association goes on.

    Notes
    -----
    The typical use is Orthanc's book example: restrict the query to the calling
    modality by setting (0040,0100)[0] (0040,0001) *Scheduled Station AE Title* to
    ``origin["RemoteAET"]``.

    Orthanc equivalent: Lua ``IncomingWorklistRequestFilter(query, origin)``.
    """


@hookspec(firstresult=True)
def filter_incoming_cstore(dataset: pydicom.Dataset, origin: Mapping[str, Any]) -> int | None:
    """Accept a C-STORE, or refuse it with the DIMSE status to answer.

    Calling convention: **firstresult**: implementations are called until one returns
    something other than ``None``; that status is the C-STORE response's, and the instance
    is **not stored**. Called for each C-STORE the calling AET may send, once the data
    set's SOP Class and Instance UIDs were checked against the command, and before the
    instance goes to the core's ingest (so before ``filter_received_instance``, and before
    the duplicate check).

    Parameters
    ----------
    dataset : pydicom.Dataset
        The received instance, fully parsed (file meta included: (0002,0010) is the
        presentation context's transfer syntax).
    origin : mapping
        ``Origin`` (``"DicomProtocol"``), ``RemoteAET``, ``CalledAET``, ``RemoteIP``.

    Returns
    -------
    int or None
        ``None`` to let the instance be stored; else the C-STORE status (0..0xFFFF, PS3.4
        B.2.3 and PS3.7 annex C), e.g. ``0xA700`` *Refused: Out of Resources*, ``0xA900``
        *Data Set does not match SOP Class*, ``0xC000`` *Cannot understand*. ``0x0000``
        discards the instance while answering Success (as Orthanc's
        ``ReceivedInstanceFilter`` returning false).

    Raises
    ------
    Exception
        Never propagated: an exception, or a result that is not ``None`` or an integer in
        0..0xFFFF, is logged with the plugin's name and the C-STORE is answered ``0xA700``
        with nothing stored (Orthanc answers an exception in its filters so).

    Notes
    -----
    The data set is parsed only when at least one implementation is registered. Only the
    SCP's C-STORE calls it: instances uploaded over REST, or received by the C-GET SCU,
    are not concerned.

    Orthanc equivalent: ``OrthancPluginRegisterIncomingCStoreInstanceFilter`` (C and
    Python plugins: 0 accepts, another value refuses with that status); Lua
    ``ReceivedCStoreInstanceFilter`` (Orthanc 1.10.1: returning 0 discards with Success,
    another number stores).
    """


@hookspec
def filter_outgoing_find(query: Mapping[int, str], level: str, modality: Mapping[str, Any]) -> Mapping[int, str] | None:
    """Rewrite the keys of a C-FIND that pacsbox sends as an SCU.

    Calling convention: **chained filter** (see ``filter_incoming_find``), in the thread
    of the REST request. Called by ``POST /modalities/{id}/query`` and
    ``POST /queries/{id}/answers/{index}/query-{patients,studies,series,instances}``,
    before the identifier is built (``Normalize``, the manufacturer's quirks,
    (0008,0052), the identifiers down to the level and (0008,0005) are applied to what the
    filter returns, as Orthanc 1.10.1 applies them after its Lua filter). The
    ``/modalities/{id}/find-*`` routes do not call it (neither does Orthanc 1.10.1).

    Parameters
    ----------
    query : mapping of int to str
        Tag (``0xGGGGEEEE``) -> value, as the request's ``Query`` gives them (or as the
        previous implementation returned them).
    level : str
        ``"Patient"``, ``"Study"``, ``"Series"`` or ``"Instance"``.
    modality : mapping
        The queried modality: its symbolic name as ``Name``, and the long form of
        ``GET /modalities/{id}/configuration`` (``AET``, ``Host``, ``Port``,
        ``Manufacturer``...).

    Returns
    -------
    mapping of int to str, or None
        The keys to send instead (the whole query); ``None`` to keep them.
        ``GET /queries/{id}/query`` still shows the query as submitted.

    Raises
    ------
    OrthancError
        Propagated: the route answers it (a Lua error is 500 ``CannotExecuteLua``, as
        Orthanc) and nothing is sent.
    Exception
        Any other exception is logged with the plugin's name; the route answers 500
        ``InternalError`` and nothing is sent.

    Notes
    -----
    The answers, and the retrieves made from them, are not filtered.

    Orthanc equivalent: Lua ``OutgoingFindRequestFilter(query, modality)``.
    """
