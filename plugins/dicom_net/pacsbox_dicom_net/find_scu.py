"""C-FIND as an SCU: one C-FIND sent and its answers collected (:func:`run_find`), and the
queries of ``/modalities/{id}/query`` run and kept per app for ``/queries``
(:func:`run_query`, :class:`QueryStore`: at most ``QueryRetrieveSize``, the least recently
used dropped first).

The identifier sent comes from :mod:`.query_identifiers`; it goes by Patient Root FIND for
the patient level, Study Root FIND otherwise, Modality Worklist FIND for
``find-worklist``. :mod:`.query_routes` holds the REST routes.

Before the identifier is built, :func:`run_query` (``/modalities/{id}/query`` and the child
queries of ``/queries``) gives the keys to the chained filter ``filter_outgoing_find``, as
Orthanc 1.10.1's ``QueryRetrieveHandler`` gives them to the Lua
``OutgoingFindRequestFilter``; the ``find-*`` routes do not.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping

from pydicom.dataset import Dataset
from pynetdicom.sop_class import (ModalityWorklistInformationFind, PatientRootQueryRetrieveInformationModelFind,
                                  StudyRootQueryRetrieveInformationModelFind)

from pacsbox import ErrorCode, OrthancError

from .modalities import Modality
from .query_identifiers import as_raw, default_charset, find_identifier, make_dataset
from .scu import open_association, scu_timeout
from .state import plugin_state

log = logging.getLogger("pacsbox.dicom_net.query")


def _status_text(status: int) -> str:
    return f"0x{status:04X}"


def run_find(ctx: Any, modality: Modality, identifier: Dataset, *, worklist: bool = False,
             local_aet: str | None = None, timeout: float | None = None) -> list[Dataset]:
    """Send one C-FIND and collect the answers.

    Parameters
    ----------
    ctx : ServerContext
    modality : Modality
    identifier : pydicom.Dataset
        From :func:`find_identifier` (its (0008,0052) picks Patient or Study Root).
    worklist : bool
        Modality Worklist Information Model FIND instead.
    local_aet : str, optional
        Calling AET (``LocalAet``).
    timeout : float, optional
        Seconds (``Timeout``; see :func:`pacsbox_dicom_net.scu.scu_timeout`).

    Returns
    -------
    list of pydicom.Dataset
        The identifiers of the Pending responses, in arrival order.

    Raises
    ------
    OrthancError
        ``NETWORK_PROTOCOL`` (500) when the association fails, when the remote answers a
        failure status ("C-FIND SCU to AET "X" has failed with DIMSE status 0xC000", as
        Orthanc) or when the exchange is aborted or times out.
    """
    if worklist:
        model = ModalityWorklistInformationFind
    elif str(identifier.get("QueryRetrieveLevel", "")) == "PATIENT":
        model = PatientRootQueryRetrieveInformationModelFind
    else:
        model = StudyRootQueryRetrieveInformationModelFind
    from pynetdicom.presentation import build_context
    assoc = open_association(ctx, modality, [build_context(model)], local_aet=local_aet, timeout=timeout)
    answers: list[Dataset] = []
    final = None
    t0 = time.monotonic()
    try:
        for status, ident in assoc.send_c_find(identifier, model):
            if not status or "Status" not in status:
                break
            code = int(status.Status)
            if code in (0xFF00, 0xFF01):
                if ident is not None:
                    answers.append(as_raw(ident))
                continue
            final = code
            break
    finally:
        if assoc.is_established:
            assoc.release()
    if final is None:
        seconds = scu_timeout(ctx, modality, timeout)
        if seconds and time.monotonic() - t0 >= 0.9 * seconds:   # Orthanc 1.10.1's (DCMTK's) wording
            reason = "DIMSE No data available (timeout in non-blocking mode)"
        else:
            reason = "the association was aborted by the remote"
        raise OrthancError(ErrorCode.NETWORK_PROTOCOL, f'DicomAssociation - C-FIND to AET "{modality.aet}": {reason}')
    if final != 0x0000 and not 0xB000 <= final <= 0xBFFF:
        raise OrthancError(ErrorCode.NETWORK_PROTOCOL,
                           f'C-FIND SCU to AET "{modality.aet}" has failed with DIMSE status {_status_text(final)}')
    return answers


@dataclass
class QueryResult:
    """One ``/queries/{id}``: a C-FIND that ran, with its answers.

    Attributes
    ----------
    id : str
        UUID.
    modality_name : str
        Symbolic name of the queried modality.
    modality : Modality
    level : str
        One of :data:`LEVELS`.
    query : dict of int to str
        The filter as submitted (``GET /queries/{id}/query``).
    normalize : bool
    local_aet : str or None
        ``LocalAet`` of the request (retrieves reuse it).
    timeout : float or None
        ``Timeout`` of the request, seconds (retrieves reuse it).
    answers : list of pydicom.Dataset
    """

    id: str
    modality_name: str
    modality: Modality
    level: str
    query: dict[int, str]
    normalize: bool = True
    local_aet: str | None = None
    timeout: float | None = None
    answers: list[Dataset] = field(default_factory=list)

    def answer(self, index: int) -> Dataset:
        """Answer ``index``.

        Raises
        ------
        OrthancError
            400 ``PARAMETER_OUT_OF_RANGE`` when out of range.
        """
        if not 0 <= index < len(self.answers):
            raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE)
        return self.answers[index]

    def query_dataset(self) -> Dataset:
        """The submitted filter as a data set (to render it)."""
        return as_raw(make_dataset(self.query, "ISO_IR 192"))


class QueryStore:
    """The ``/queries`` of one app: at most ``QueryRetrieveSize`` results, the least
    recently used dropped first (Orthanc ``SharedArchive``: a read makes a query recent).

    Parameters
    ----------
    size : int
        ``QueryRetrieveSize`` (0 keeps none, as Orthanc).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: "collections.OrderedDict[str, QueryResult]" = collections.OrderedDict()
        self._lock = threading.Lock()

    def add(self, result: QueryResult) -> str:
        """Keep ``result`` (evicting the oldest beyond the size); returns its ID."""
        with self._lock:
            self._items[result.id] = result
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return result.id

    def get(self, query_id: str) -> QueryResult | None:
        """The query ``query_id`` (made most recent), or None."""
        with self._lock:
            res = self._items.get(query_id)
            if res is not None:
                self._items.move_to_end(query_id)
            return res

    def remove(self, query_id: str) -> None:
        """Forget ``query_id`` (no error when unknown, as Orthanc)."""
        with self._lock:
            self._items.pop(query_id, None)

    def ids(self) -> list[str]:
        """Query IDs, sorted (Orthanc lists its archive's map)."""
        with self._lock:
            return sorted(self._items)


def query_store(ctx: Any) -> QueryStore:
    """This app's query store.

    Parameters
    ----------
    ctx : ServerContext

    Returns
    -------
    QueryStore
        Kept in ``plugin_state(ctx).extra["queries"]``, created on first use with
        ``QueryRetrieveSize``.
    """
    state = plugin_state(ctx)
    with state.lock:
        store = state.extra.get("queries")
        if store is None:
            store = state.extra["queries"] = QueryStore(state.options["QueryRetrieveSize"])
        return store


def get_modality(ctx: Any, name: str) -> Modality:
    """The modality of symbolic name ``name``.

    Raises
    ------
    OrthancError
        404 ``INEXISTENT_ITEM`` "No modality with symbolic name: X" (Orthanc 1.10.1).
    """
    m = plugin_state(ctx).modalities.get(name)
    if m is None:
        raise OrthancError(ErrorCode.INEXISTENT_ITEM, f"No modality with symbolic name: {name}")
    return m


def run_query(ctx: Any, modality_name: str, level: str, fields: Mapping[int, str], *, normalize: bool = True,
              local_aet: str | None = None, timeout: float | None = None) -> QueryResult:
    """Run a C-FIND on ``modality_name`` and keep the result in the app's query store.

    Parameters
    ----------
    ctx : ServerContext
    modality_name : str
    level : str
        One of :data:`LEVELS`.
    fields : mapping of int to str
    normalize : bool
    local_aet : str, optional
    timeout : float, optional
        Seconds.

    Returns
    -------
    QueryResult
        Stored (``/queries/{id}``).

    Raises
    ------
    OrthancError
        404 for an unknown modality; 500 ``NETWORK_PROTOCOL`` (see :func:`run_find`);
        what a ``filter_outgoing_find`` implementation raised (see
        :func:`filter_outgoing`).
    """
    modality = get_modality(ctx, modality_name)
    sent = filter_outgoing(ctx, modality_name, modality, level, fields)
    ident = find_identifier(level, sent, normalize=normalize, manufacturer=modality.manufacturer,
                            charset=default_charset(ctx))
    answers = run_find(ctx, modality, ident, local_aet=local_aet, timeout=timeout)
    result = QueryResult(str(uuid.uuid4()), modality_name, modality, level, dict(fields), normalize, local_aet,
                         timeout, answers)
    query_store(ctx).add(result)
    return result


def filter_outgoing(ctx: Any, modality_name: str, modality: Modality, level: str,
                    fields: Mapping[int, str]) -> Mapping[int, str]:
    """The keys of a query after the ``filter_outgoing_find`` implementations.

    Parameters
    ----------
    ctx : ServerContext
    modality_name : str
    modality : Modality
    level : str
        One of :data:`LEVELS`.
    fields : mapping of int to str
        The query as submitted.

    Returns
    -------
    mapping of int to str
        ``fields`` itself when no plugin implements the hook.

    Raises
    ------
    OrthancError
        What an implementation raised as an ``OrthancError`` (e.g. a Lua error, 500
        ``CannotExecuteLua``); 500 ``INTERNAL_ERROR`` naming the plugin for any other
        exception, or a result that is not a mapping of tags to strings (logged).
    """
    from .hook_calls import HookFailed, call_chain
    description = {"Name": modality_name, **modality.to_json()}
    try:
        return call_chain(ctx, "filter_outgoing_find", "query", dict(fields), Mapping, _tags_to_text, level=level,
                          modality=description)
    except HookFailed as e:
        if isinstance(e.error, OrthancError):
            raise e.error from None
        log.error("%s", e, exc_info=e.error)
        raise OrthancError(ErrorCode.INTERNAL_ERROR, str(e)) from None


def _tags_to_text(value: Mapping[Any, Any]) -> bool:
    return all(isinstance(k, int) and not isinstance(k, bool) and isinstance(v, str) for k, v in value.items())
