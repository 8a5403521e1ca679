"""The transfers accelerator: the protocol of Orthanc's ``transfers`` plugin
(``orthanc-mirrors/orthanc-transfers``, ``Plugin/Plugin.cpp``), in pacsbox.

Routes (all registered by the plugin, same paths and bodies):

- ``POST /transfers/send``: ``{"Resources": [{"Level", "ID"}...], "Compression":
  "gzip"|"none", "Peer", "Priority"?, "SenderTransferID"?}`` → a ``PushTransfer`` job
  (``{"ID", "Path"}``; ``"Synchronous": true`` waits and answers the job's content, a
  pacsbox addition). When the peer's ``OrthancPeers`` entry has a ``RemoteSelf`` property,
  the peer is asked to pull instead (``POST <peer>/transfers/pull``) and the answer is
  ``{"Peer", "RemoteJob", "URL"}``, as the plugin.
- ``POST /transfers/pull``: ``{"Resources", "Compression", "Peer", "Originator"?}`` →
  a ``PullTransfer`` job.
- ``GET /transfers/peers``: ``{peer: "installed"|"bidirectional"|"disabled"}``, each peer
  probed (``GET <peer>/plugins`` listing ``transfers``; pacsbox peers, whose ``/plugins``
  lists entry points, are recognized by ``POST <peer>/transfers/lookup`` with ``[]``).
- Receiving side: ``POST /transfers/lookup`` (the instances of a ``Resources`` array with
  size and MD5), ``GET /transfers/chunks/{id.id...}?offset=&size=&compression=`` (pull
  buckets), ``POST /transfers/push`` (create a transaction), ``PUT
  /transfers/push/{id}/{n}`` (a bucket), ``POST /transfers/push/{id}/commit``, ``DELETE
  /transfers/push/{id}``.

Options, section ``Transfers`` (names and defaults of the plugin): ``Threads`` (4),
``BucketSize`` (4096 KB), ``CacheSize`` (512 MB), ``MaxPushTransactions`` (4),
``MaxHttpRetries`` (0), ``PeerConnectivityTimeout`` (2 s), ``PeerCommitTimeout`` (600 s),
``CommitThreadsCount`` (1 in the plugin, 2 here); pacsbox adds ``PushTransactionTimeout``
(3600 s, 0 = never).

Per-app state lives in ``plugin_state(ctx).extra["transfers"]``.
"""
from __future__ import annotations

import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from pacsbox import ConfigError, ErrorCode, MetricSpec, OrthancError, RouteSpec, read_json_body, send_json

from .transfers_protocol import (CONFIG_SECTION, KB, KEY_BUCKETS, KEY_COMPRESSION, KEY_INSTANCES, KEY_ORIGINATOR,
                                 KEY_PEER, KEY_REMOTE_SELF, KEY_RESOURCES, MB, PLUGIN_NAME, URI_LOOKUP, URI_PLUGINS,
                                 URI_PULL, URI_PUSH, Bucket, InstanceInfo, check_compression,
                                 parse_transfer_query)

if TYPE_CHECKING:  # pragma: no cover
    from pacsbox import ServerContext

    from .transfers_receiver import PushTransactions
    from .transfers_source import InstancesCache

log = logging.getLogger("pacsbox.dicom_net.transfers")

EXTRA_KEY = "transfers"

#: Options of the ``Transfers`` section: name → (default, minimum). Units: ``BucketSize``
#: KB, ``CacheSize`` MB, timeouts seconds.
OPTIONS: dict[str, tuple[int, int]] = {
    "Threads": (4, 1),
    "BucketSize": (4096, 1),
    "CacheSize": (512, 1),
    "MaxPushTransactions": (4, 1),
    "MaxHttpRetries": (0, 0),
    "PeerConnectivityTimeout": (2, 0),
    "PeerCommitTimeout": (600, 0),
    "CommitThreadsCount": (2, 1),
    "PushTransactionTimeout": (3600, 0),
}


@dataclass(frozen=True)
class TransferSettings:
    """The checked ``Transfers`` options.

    Attributes
    ----------
    threads : int
        ``Threads``: HTTP queries at once per job, and concurrent ``/transfers/chunks``
        answers.
    bucket_size : int
        ``BucketSize`` in bytes (the option is in KB).
    cache_size : int
        ``CacheSize`` in bytes (the option is in MB).
    max_push_transactions : int
        ``MaxPushTransactions``.
    max_http_retries : int
        ``MaxHttpRetries``.
    peer_connectivity_timeout : float
        ``PeerConnectivityTimeout``, seconds (``/transfers/peers`` probes).
    peer_commit_timeout : float
        ``PeerCommitTimeout``, seconds (creating and committing a push transaction).
    commit_threads : int
        ``CommitThreadsCount``: instances stored at once by a commit. Default 2, not the
        plugin's 1: pacsbox's commit overlaps one file's parsing with another's storage
        and index writes (measured: 500 CT instances committed in 0.6 s instead of 1.0 s).
    push_transaction_timeout : float
        ``PushTransactionTimeout`` (pacsbox), seconds of inactivity before an open push
        transaction is discarded; 0 never.
    """

    threads: int = 4
    bucket_size: int = 4096 * KB
    cache_size: int = 512 * MB
    max_push_transactions: int = 4
    max_http_retries: int = 0
    peer_connectivity_timeout: float = 2.0
    peer_commit_timeout: float = 600.0
    commit_threads: int = 2
    push_transaction_timeout: float = 3600.0


def read_settings(config: Any) -> TransferSettings:
    """Read the ``Transfers`` section.

    Parameters
    ----------
    config : pacsbox.Config or mapping

    Returns
    -------
    TransferSettings

    Raises
    ------
    pacsbox.ConfigError
        The section is not an object, or an option is not an integer at least its
        minimum (``BucketSize``, ``MaxPushTransactions``, ``CommitThreadsCount`` and
        ``Threads`` must be positive, as the plugin refuses 0); the message names the
        option, e.g. ``option Transfers.BucketSize: 0 is not an integer >= 1``.
    """
    section = config.get(CONFIG_SECTION, {})
    if section is None:
        section = {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"option {CONFIG_SECTION}: {section!r} is not a JSON object")
    v: dict[str, int] = {}
    for name, (default, minimum) in OPTIONS.items():
        value = section.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"option {CONFIG_SECTION}.{name}: {value!r} is not an integer >= {minimum}")
        v[name] = value
    return TransferSettings(threads=v["Threads"], bucket_size=v["BucketSize"] * KB, cache_size=v["CacheSize"] * MB,
                            max_push_transactions=v["MaxPushTransactions"], max_http_retries=v["MaxHttpRetries"],
                            peer_connectivity_timeout=float(v["PeerConnectivityTimeout"]),
                            peer_commit_timeout=float(v["PeerCommitTimeout"]),
                            commit_threads=v["CommitThreadsCount"],
                            push_transaction_timeout=float(v["PushTransactionTimeout"]))


def check_config(config: Any) -> None:
    """Check the ``Transfers`` options at start-up (``configure`` hook).

    Parameters
    ----------
    config : pacsbox.Config or mapping

    Raises
    ------
    pacsbox.ConfigError
        See :func:`read_settings`.
    """
    read_settings(config)


# ------------------------------------------------------------------------------------------
# per-app state
# ------------------------------------------------------------------------------------------

#: The accelerator's gauges (Orthanc's transfers plugin), refreshed at each scrape.
TRANSFER_METRICS = (
    ("orthanc_transfers_used_cache_size", "Bytes held by the pull cache", "bytes"),
    ("orthanc_transfers_cache_hit_count", "Pull cache hits", ""),
    ("orthanc_transfers_cache_miss_count", "Pull cache misses", ""),
    ("orthanc_transfers_available_push_count", "Push transactions that can still be opened", ""),
    ("orthanc_transfers_created_push_count", "Push transactions opened", ""),
    ("orthanc_transfers_committed_push_count", "Push transactions committed", ""),
    ("orthanc_transfers_aborted_push_count", "Push transactions discarded", ""),
    ("orthanc_transfers_push_total_received_bytes_count", "Bytes received by push transactions", "bytes"),
    ("orthanc_transfers_push_total_time_spent_in_reception_ms", "Time spent receiving push buckets", "ms"),
    ("orthanc_transfers_push_total_time_spent_in_commit_ms", "Time spent committing push transactions", "ms"),
)


class TransfersState:
    """One app's accelerator.

    Attributes
    ----------
    settings : TransferSettings
    originator : str
        This server's accelerator UUID (``Originator`` of lookups), new at each start as
        the plugin's.
    transactions : PushTransactions
        Open push transactions (receiving side).
    cache : InstancesCache
        Instance files being sent.
    chunks_semaphore : threading.Semaphore
        Bounds concurrent ``/transfers/chunks`` answers to ``Threads``.
    """

    def __init__(self, ctx: "ServerContext") -> None:
        from .transfers_receiver import PushTransactions
        from .transfers_source import InstancesCache
        self.settings = read_settings(ctx.config)
        st = self.settings
        self.originator = str(uuid.uuid4())
        self.transactions: PushTransactions = PushTransactions(ctx, st.max_push_transactions, st.commit_threads,
                                                               st.push_transaction_timeout)
        self.cache: InstancesCache = InstancesCache(ctx, st.cache_size)
        self.chunks_semaphore = threading.Semaphore(st.threads)
        self.sweep_period = 60.0
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None

    def start_sweeper(self, ctx: "ServerContext") -> None:
        """Start the thread that deletes unused pull staging folders every
        :attr:`sweep_period` seconds."""
        from .transfers_area import sweep_pull_areas

        def loop() -> None:
            while not self._stop.wait(self.sweep_period):
                try:
                    sweep_pull_areas(ctx)
                except Exception:  # noqa: BLE001 - keep sweeping
                    log.exception("transfers: cannot sweep the pull staging folders")

        if self._sweeper is None:
            self._sweeper = threading.Thread(target=loop, name="TF-SWEEP", daemon=True)
            self._sweeper.start()

    def stop_sweeper(self) -> None:
        """Stop the sweeping thread."""
        self._stop.set()
        if self._sweeper is not None:
            self._sweeper.join(5)
            self._sweeper = None

    @staticmethod
    def metric_specs() -> list[MetricSpec]:
        """The gauges :meth:`collect_metrics` sets (declared through ``register_metrics``:
        the app's metrics store refuses undeclared names)."""
        return [MetricSpec(name, "gauge", text, unit) for name, text, unit in TRANSFER_METRICS]

    def collect_metrics(self, store: Any) -> None:
        """Publish the plugin's metrics (``RefreshMetricsCallback``): cache size, hits and
        misses; push transactions available, created, committed, aborted; bytes received
        and milliseconds spent receiving and committing."""
        c = self.transactions.info()
        values = (self.cache.memory_size, self.cache.hits, self.cache.misses, self.transactions.available(),
                  c["created"], c["committed"], c["aborted"], c["received_bytes"], c["reception_ms"],
                  c["commit_ms"])   # in the order of TRANSFER_METRICS
        for (name, _text, _unit), value in zip(TRANSFER_METRICS, values):
            store.set_value(name, value)


def state(ctx: "ServerContext") -> TransfersState:
    """The accelerator of ``ctx``'s app, created on first use."""
    from .state import plugin_state
    ps = plugin_state(ctx)
    st = ps.extra.get(EXTRA_KEY)
    if st is None:
        with ps.lock:
            st = ps.extra.get(EXTRA_KEY)
            if st is None:
                st = ps.extra[EXTRA_KEY] = TransfersState(ctx)
    return st


def settings(ctx: "ServerContext") -> TransferSettings:
    """The app's :class:`TransferSettings`."""
    return state(ctx).settings


def source_cache(ctx: "ServerContext") -> "InstancesCache":
    """The app's :class:`~.transfers_source.InstancesCache`."""
    return state(ctx).cache


def start(ctx: "ServerContext") -> None:
    """Clean what a previous run left in the staging folder (rolling back a commit cut
    by a crash), start the reaper of idle push transactions and the sweeper of unused pull
    staging folders."""
    from .transfers_area import recover_staging
    st = state(ctx)
    try:
        n = recover_staging(ctx)
        if n:
            log.warning("transfers: rolled back %d instance(s) of an interrupted commit", n)
    except Exception:  # noqa: BLE001 - never block the start-up on a cleanup
        log.exception("transfers: cannot clean the staging folder")
    st.transactions.start()
    st.start_sweeper(ctx)
    ctx.metrics.add_collector(st.collect_metrics)


def stop(ctx: "ServerContext") -> None:
    """Discard the open push transactions (their staging files are deleted)."""
    from .state import plugin_state
    st = plugin_state(ctx).extra.get(EXTRA_KEY)
    if st is not None:
        ctx.metrics.remove_collector(st.collect_metrics)
        st.stop_sweeper()
        st.transactions.stop()


def job_types() -> list:
    """``PushTransfer`` and ``PullTransfer``."""
    from .transfers_jobs import PullTransferJob, PushTransferJob
    return [PushTransferJob, PullTransferJob]


# ------------------------------------------------------------------------------------------
# REST
# ------------------------------------------------------------------------------------------

def _peer(ctx: "ServerContext", name: str):
    from . import peers
    p = peers.peer_registry(ctx).get(name)
    if p is None:
        raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, f"Unknown Orthanc peer: {name}")
    return p


class SendRoute:
    """``POST /transfers/send`` (the plugin's ``ScheduleSend``)."""

    def __init__(self, ctx: "ServerContext") -> None:
        self.ctx = ctx

    def on_post(self, req, resp) -> None:
        """Start a push job, or ask a ``RemoteSelf`` peer to pull.

        Raises
        ------
        OrthancError
            ``BadFileFormat`` (400) for a malformed body; ``UnknownResource`` (404) for an
            unknown peer; ``NetworkProtocol`` (500) when a pulling peer cannot be asked.
        """
        ctx = self.ctx
        body = read_json_body(req, allow_empty=False)
        query = parse_transfer_query(body)
        peer = _peer(ctx, query[KEY_PEER])
        remote_self = (peer.user_properties or {}).get(KEY_REMOTE_SELF)
        if remote_self:
            send_json(resp, self._ask_pull(query, peer, remote_self))
            return
        from .transfers_jobs import PushTransferJob
        send_json(resp, ctx.jobs.run_request(PushTransferJob(query), body, synchronous=False))

    def _ask_pull(self, query: Mapping[str, Any], peer, remote_self: str) -> dict[str, Any]:
        from .transfers_http import PeerClient, PeerHttpError
        ctx = self.ctx
        st = state(ctx)
        client = PeerClient(ctx, query[KEY_PEER], 1, query.get("SenderTransferID") or str(uuid.uuid4()))
        body = {KEY_RESOURCES: query[KEY_RESOURCES], KEY_COMPRESSION: query[KEY_COMPRESSION],
                KEY_ORIGINATOR: st.originator, KEY_PEER: remote_self}
        try:
            attempt = 0
            while True:
                try:
                    answer = client.request("POST", URI_PULL, json_body=body).json()
                    break
                except PeerHttpError:
                    attempt += 1
                    if attempt > st.settings.max_http_retries:
                        raise
                    threading.Event().wait(1.0)
        except (PeerHttpError, ValueError) as e:
            raise OrthancError(ErrorCode.NETWORK_PROTOCOL,
                               f"Cannot trigger send DICOM instances using pull mode to peer: {query[KEY_PEER]} "
                               f"(check out remote logs, and that transfer plugin is installed): {e}") from None
        finally:
            client.close()
        if not isinstance(answer, Mapping) or not isinstance(answer.get("ID"), str) \
                or not isinstance(answer.get("Path"), str):
            raise OrthancError(ErrorCode.NETWORK_PROTOCOL,
                               f"Cannot trigger send DICOM instances using pull mode to peer: {query[KEY_PEER]}")
        return {KEY_PEER: query[KEY_PEER], "RemoteJob": answer["ID"], "URL": peer.url + answer["Path"]}


class PullRoute:
    """``POST /transfers/pull`` (the plugin's ``SchedulePull``)."""

    def __init__(self, ctx: "ServerContext") -> None:
        self.ctx = ctx

    def on_post(self, req, resp) -> None:
        """Start a pull job (``{"ID", "Path"}``).

        Raises
        ------
        OrthancError
            ``BadFileFormat`` (400) for a malformed body; ``UnknownResource`` (404) for an
            unknown peer.
        """
        body = read_json_body(req, allow_empty=False)
        query = parse_transfer_query(body)
        _peer(self.ctx, query[KEY_PEER])
        from .transfers_jobs import PullTransferJob
        send_json(resp, self.ctx.jobs.run_request(PullTransferJob(query), body, synchronous=False))


class LookupRoute:
    """``POST /transfers/lookup`` (the plugin's ``LookupInstances``)."""

    def __init__(self, ctx: "ServerContext") -> None:
        self.ctx = ctx

    def on_post(self, req, resp) -> None:
        """Describe the instances of a ``Resources`` array.

        Raises
        ------
        OrthancError
            ``BadFileFormat`` / ``ParameterOutOfRange`` (400) for a malformed array;
            ``UnknownResource`` (404) for a missing resource.
        """
        from .transfers_source import describe_instances, instances_of_resources, lookup_answer
        body = read_json_body(req, allow_empty=False)
        st = state(self.ctx)
        ids = instances_of_resources(self.ctx, body)
        send_json(resp, lookup_answer(describe_instances(st.cache, ids), st.originator))


def _size_arg(req, name: str) -> int | None:
    v = req.get_param(name)
    if v is None:
        return None
    if not v.isascii() or not v.isdigit():
        raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE, f'The "{name}" GET argument must be a positive integer: {v}')
    return int(v)


class ChunksRoute:
    """``GET /transfers/chunks/{ids}`` (the plugin's ``ServeChunks``)."""

    def __init__(self, ctx: "ServerContext") -> None:
        self.ctx = ctx

    def on_get(self, req, resp, ids: str) -> None:
        """Serve a pull bucket (at most ``Threads`` at once).

        Raises
        ------
        OrthancError
            ``BadParameterType`` (400) for a non-integer ``offset``/``size``;
            ``ParameterOutOfRange`` (400) for an unknown compression; ``UnknownResource``
            (404) for an unknown instance.
        """
        st = state(self.ctx)
        offset = _size_arg(req, "offset") or 0
        size = _size_arg(req, "size") or 0
        compression = check_compression(req.get_param("compression") or "none")
        instance_ids = [i for i in ids.split(".") if i]
        with st.chunks_semaphore:
            data = st.cache.serve_chunks(instance_ids, offset, size, compression)
        resp.content_type = "application/gzip" if compression == "gzip" else "application/octet-stream"
        resp.data = data


class PushCreateRoute:
    """``POST /transfers/push`` (the plugin's ``CreatePush``)."""

    def __init__(self, ctx: "ServerContext") -> None:
        self.ctx = ctx

    def on_post(self, req, resp) -> None:
        """Open a push transaction (``{"ID", "Path"}``).

        Raises
        ------
        OrthancError
            ``BadFileFormat`` (400) for a malformed body or a bucket outside the announced
            instances; ``ParameterOutOfRange`` (400) for an unknown compression.
        """
        body = read_json_body(req, allow_empty=False)
        if (not isinstance(body, Mapping) or not isinstance(body.get(KEY_BUCKETS), list)
                or not isinstance(body.get(KEY_COMPRESSION), str) or not isinstance(body.get(KEY_INSTANCES), list)):
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT,
                               'A push transaction needs "Buckets" and "Instances" (arrays) and "Compression"')
        instances = [InstanceInfo.from_json(i) for i in body[KEY_INSTANCES]]
        buckets = [Bucket.from_json(b) for b in body[KEY_BUCKETS]]
        compression = check_compression(body[KEY_COMPRESSION])
        tid = state(self.ctx).transactions.create(instances, buckets, compression)
        send_json(resp, {"ID": tid, "Path": f"{URI_PUSH}/{tid}"})


class PushTransactionRoute:
    """``DELETE /transfers/push/{id}`` (``DiscardPush``), ``PUT /transfers/push/{id}/{n}``
    (``StorePush``) and ``POST /transfers/push/{id}/commit`` (``CommitPush``)."""

    def __init__(self, ctx: "ServerContext") -> None:
        self.ctx = ctx

    def on_delete(self, req, resp, id: str) -> None:  # noqa: A002 - falcon field name
        """Discard a transaction; 404 when unknown."""
        state(self.ctx).transactions.discard(id)
        send_json(resp, {})

    def on_put_part(self, req, resp, id: str, part: str) -> None:  # noqa: A002
        """Receive bucket ``part``; 404 for an unknown transaction, 400 for a bucket number
        out of range, 500 ``NetworkProtocol`` for a bucket of the wrong size."""
        if not part.isascii() or not part.isdigit():
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, f"Unknown bucket: {part}")
        data = req.bounded_stream.read()
        state(self.ctx).transactions.store(id, int(part), data)
        send_json(resp, {})

    def on_post_part(self, req, resp, id: str, part: str) -> None:  # noqa: A002
        """Commit (``part`` = ``commit``); 500 ``CorruptedFile`` for a missing bucket or
        an MD5 mismatch, with nothing kept."""
        if part != "commit":
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, f"Unknown URI: {URI_PUSH}/{id}/{part}")
        state(self.ctx).transactions.commit(id)
        send_json(resp, {})


def probe_peer(ctx: "ServerContext", name: str, timeout: float) -> bool:
    """Whether peer ``name`` runs the accelerator (``DetectTransferPlugin``).

    ``GET <peer>/plugins`` listing ``transfers`` (Orthanc with the plugin); else, for
    pacsbox peers, a ``POST <peer>/transfers/lookup`` of ``[]`` answering an object with
    ``Originator``.

    Parameters
    ----------
    ctx : ServerContext
    name : str
    timeout : float
        Seconds per request (``PeerConnectivityTimeout``; 0 means the peer's timeout).

    Returns
    -------
    bool
    """
    from .transfers_http import PeerClient, PeerHttpError
    try:
        client = PeerClient(ctx, name, 1, str(uuid.uuid4()))
    except OrthancError:
        return False
    t = timeout or None
    try:
        try:
            plugins = client.request("GET", URI_PLUGINS, timeout=t).json()
            if isinstance(plugins, list) and PLUGIN_NAME in plugins:
                return True
        except (PeerHttpError, ValueError):
            pass
        try:
            answer = client.request("POST", URI_LOOKUP, json_body=[], timeout=t).json()
            return isinstance(answer, Mapping) and isinstance(answer.get(KEY_ORIGINATOR), str)
        except (PeerHttpError, ValueError):
            return False
    finally:
        client.close()


class TransfersPeersRoute:
    """``GET /transfers/peers`` (the plugin's ``ServePeers``)."""

    def __init__(self, ctx: "ServerContext") -> None:
        self.ctx = ctx

    def on_get(self, req, resp) -> None:
        """Probe every peer at once (``Threads`` at a time)."""
        from . import peers
        ctx = self.ctx
        st = state(ctx)
        items = list(peers.peer_registry(ctx).items())
        out: dict[str, str] = {}
        if items:
            with ThreadPoolExecutor(max(1, min(st.settings.threads, len(items))),
                                    thread_name_prefix="TF-DETECT") as pool:
                found = list(pool.map(lambda it: probe_peer(ctx, it[0], st.settings.peer_connectivity_timeout),
                                      items))
            for (name, peer), ok in zip(items, found):
                if not ok:
                    out[name] = "disabled"
                elif (peer.user_properties or {}).get(KEY_REMOTE_SELF):
                    out[name] = "bidirectional"
                else:
                    out[name] = "installed"
        send_json(resp, out)


def routes(ctx: "ServerContext") -> list[RouteSpec]:
    """The accelerator's routes (see the module's docstring)."""
    return [
        RouteSpec("/transfers/send", SendRoute),
        RouteSpec("/transfers/pull", PullRoute),
        RouteSpec("/transfers/lookup", LookupRoute),
        RouteSpec("/transfers/peers", TransfersPeersRoute),
        RouteSpec("/transfers/chunks/{ids}", ChunksRoute),
        RouteSpec("/transfers/push", PushCreateRoute),
        RouteSpec("/transfers/push/{id}", PushTransactionRoute),
        RouteSpec("/transfers/push/{id}/{part}", PushTransactionRoute, suffix="part"),
    ]
