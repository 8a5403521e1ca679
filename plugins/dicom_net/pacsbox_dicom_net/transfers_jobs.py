"""The ``PushTransfer`` and ``PullTransfer`` jobs (the plugin's ``PushJob`` / ``PullJob``);
what they share is in :mod:`.transfers_job_base`, their HTTP machinery
(``HttpQueriesQueue`` / ``HttpQueriesRunner``) in :mod:`.transfers_http`.

Push (``POST /transfers/send``), as the plugin's states:

1. *create*: plan the buckets, ``POST <peer>/transfers/push`` with
   ``{"Instances", "Buckets", "Compression"}``; the answer's ``Path`` is the transaction;
2. *push*: ``PUT <peer><Path>/<n>`` of every bucket, ``Threads`` at once over pooled
   keep-alive connections, each retried ``MaxHttpRetries`` times one second apart;
3. *commit*: ``POST <peer><Path>/commit`` (timeout ``PeerCommitTimeout``); or, when a
   bucket failed for good, ``DELETE <peer><Path>`` and the job fails.

Pull (``POST /transfers/pull``): *lookup* (``POST <peer>/transfers/lookup``), *pull*
(``GET <peer>/transfers/chunks/...`` into a local staging area), *commit* (local, all or
nothing, see :mod:`.transfers_area`).

Beyond the plugin (whose jobs are never saved, see its TODO): both jobs serialize which
buckets are done, so a paused job, or one reloaded after a restart, goes on where it
stopped. A resumed push whose transaction the receiver no longer knows (it restarted, or
evicted it) opens a new transaction and sends everything again.
"""
from __future__ import annotations

import logging
import os
import uuid
from typing import TYPE_CHECKING, Any, Callable, Mapping

from pacsbox import ErrorCode, OrthancError, StepResult

from .transfers_area import DownloadArea, staging_root
from .transfers_http import PeerHttpError, QueryRunner
from .transfers_job_base import RequestInterrupted, TransferJob, effective_bucket_size, transfer_settings
from .transfers_protocol import (JOB_TYPE_PULL, JOB_TYPE_PUSH, KEY_ORIGINATOR, KEY_RESOURCES, URI_LOOKUP, URI_PUSH,
                                 InstanceInfo, megabytes, plan_buckets)

if TYPE_CHECKING:  # pragma: no cover
    from pacsbox import ServerContext

log = logging.getLogger("pacsbox.dicom_net.transfers")


class PushTransferJob(TransferJob):
    """``PushTransfer``: send resources to a peer that runs the accelerator.

    Parameters
    ----------
    query : mapping
        The checked ``/transfers/send`` body (``Peer``, ``Resources``, ``Compression``,
        optional ``SenderTransferID`` / ``Originator``).

    Notes
    -----
    ``Content`` (as the plugin): ``Resources``, ``Peer``, ``Compression``,
    ``TotalInstances``, ``TotalSizeMB``, ``UploadedSizeMB``, ``CompletedHttpQueries``,
    ``NetworkSpeedKBs``.
    """

    type_name = JOB_TYPE_PUSH

    def __init__(self, query: Mapping[str, Any]) -> None:
        super().__init__(query)
        self.transaction: str | None = None
        self.restarts = 0

    def step(self, ctx: "ServerContext") -> StepResult:
        """One state step (see the module's docstring)."""
        st = transfer_settings(ctx)
        assert self.client is not None
        if self.state == "init":
            from .transfers import source_cache
            from .transfers_source import describe_instances, instances_of_resources
            ids = instances_of_resources(ctx, self.query[KEY_RESOURCES])
            self.instances = describe_instances(source_cache(ctx), ids)
            self.buckets = plan_buckets(self.instances, effective_bucket_size(st, self.instances))
            self.state = "create"
            return StepResult.CONTINUE
        if self.state == "create":
            self.done = set()
            self.transaction = None
            body = {"Instances": [i.to_json() for i in sorted(self.instances, key=lambda i: i.id)],
                    "Buckets": [b.to_json() for b in self.buckets], "Compression": self.compression}
            try:
                answer = self._with_retries(st.max_http_retries, lambda: self._interruptible(
                    lambda: self.client.request("POST", URI_PUSH, json_body=body,
                                                timeout=st.peer_commit_timeout).json()))
            except RequestInterrupted:
                return StepResult.CONTINUE  # paused/canceled: created again at resume
            except (PeerHttpError, ValueError) as e:
                if self.stop_requested:
                    return StepResult.CONTINUE
                return self._fail(ErrorCode.NETWORK_PROTOCOL,
                                  f'Cannot create a push transaction to peer "{self.peer_name}" (check that it has '
                                  f"the transfers accelerator plugin installed): {e}")
            if not isinstance(answer, Mapping) or not isinstance(answer.get("Path"), str):
                return self._fail(ErrorCode.NETWORK_PROTOCOL, f"Bad network protocol from peer: {self.peer_name}")
            self.transaction = answer["Path"]
            self.state = "push"
            return StepResult.CONTINUE
        if self.state == "push":
            return self._push_step(ctx, st)
        if self.state == "commit":
            try:
                self._with_retries(st.max_http_retries, lambda: self._interruptible(
                    lambda: self.client.request("POST", f"{self.transaction}/commit", data=b"",
                                                timeout=st.peer_commit_timeout)))
            except RequestInterrupted:
                return StepResult.CONTINUE  # paused: committed again at resume (404 → sent again)
            except PeerHttpError as e:
                if self.stop_requested and e.status is None:
                    return StepResult.CONTINUE
                if e.status == 404 and self.restarts < 3:
                    # the receiver no longer knows the transaction (it restarted, or a first
                    # commit went through but its answer was lost): send again, the
                    # instances already stored answer AlreadyStored
                    self.restarts += 1
                    log.warning("transfers: peer %s does not know push transaction %s at commit, sending again",
                                self.peer_name, self.transaction)
                    self.state = "create"
                    return StepResult.CONTINUE
                return self._fail(ErrorCode.NETWORK_PROTOCOL,
                                  f"Cannot commit push transaction on remote peer {self.peer_name}: {e.details}")
            self.state = "success"
            return StepResult.SUCCESS
        if self.state == "discard":
            self._discard_remote(st)
            return StepResult.FAILURE
        raise OrthancError(ErrorCode.INTERNAL_ERROR, f"Bad state of a push job: {self.state}")

    def _with_retries(self, retries: int, fn: Callable[[], Any]) -> Any:
        attempt = 0
        while True:
            try:
                return fn()
            except PeerHttpError as e:
                attempt += 1
                if attempt > retries or (e.status is not None and 400 <= e.status < 500) or self.wait_stop(1.0):
                    raise

    def _push_step(self, ctx: "ServerContext", st) -> StepResult:
        if self.runner is None:
            todo = [i for i in range(len(self.buckets)) if i not in self.done]
            if not todo:
                self.state = "commit"
                return StepResult.CONTINUE
            from .transfers import source_cache
            cache = source_cache(ctx)
            client, tx, compression, buckets = self.client, self.transaction, self.compression, self.buckets

            def send(n: int) -> tuple[int, int]:
                body = cache.bucket_body(buckets[n], compression)
                client.request("PUT", f"{tx}/{n}", data=body, content_type="application/octet-stream")
                return len(body), 0

            self.runner = QueryRunner(todo, send, st.threads, st.max_http_retries,
                                      fatal=lambda e: isinstance(e, PeerHttpError) and e.status is not None
                                      and 400 <= e.status < 500)
        runner = self.runner
        runner.wait(0.2)
        if runner.running:
            self.speed = runner.speed_kbs()
            return StepResult.CONTINUE
        self.runner = None
        self._absorb(runner)
        if runner.failure is None:
            if len(self.done) >= len(self.buckets):
                self.state = "commit"
            return StepResult.CONTINUE  # else stopped (pause, cancel): the next run goes on
        e = runner.failure
        if isinstance(e, PeerHttpError) and e.status == 404 and self.restarts < 3:
            # the receiver no longer knows the transaction (restart, eviction): start again
            self.restarts += 1
            log.warning("transfers: peer %s lost push transaction %s, opening a new one", self.peer_name,
                        self.transaction)
            self.state = "create"
            return StepResult.CONTINUE
        self.error_code = int(ErrorCode.NETWORK_PROTOCOL)
        self.error_details = (f"Cannot send bucket {runner.failed_query} to peer {self.peer_name}: "
                              f"{getattr(e, 'details', e)}")
        self.state = "discard"
        return StepResult.CONTINUE

    def _discard_remote(self, st) -> None:
        if self.client is None or not self.transaction:
            return
        try:
            self.client.request("DELETE", self.transaction, timeout=min(30.0, self.client.timeout or 30.0))
        except PeerHttpError as e:
            log.warning("transfers: cannot discard push transaction %s on peer %s: %s", self.transaction,
                        self.peer_name, e)

    def stop(self, reason: str) -> None:
        """Stop the upload threads; a canceled job also discards its remote transaction."""
        super().stop(reason)
        if reason == "Canceled" and self.transaction and self.state in ("push", "commit", "discard"):
            self._discard_remote(None)  # the session closed by interrupt() opens new connections
            if self.client is not None:
                self.client.close()

    def public_content(self) -> dict[str, Any]:
        """The plugin's ``Content`` of a push job."""
        up, _ = self._transfer_counts()
        out: dict[str, Any] = {"Resources": self.query[KEY_RESOURCES], "Peer": self.peer_name,
                               "Compression": self.compression}
        if self.state != "init":
            out["TotalInstances"] = len(self.instances)
            out["TotalSizeMB"] = megabytes(sum(i.size for i in self.instances))
            out["UploadedSizeMB"] = megabytes(up)
            out["CompletedHttpQueries"] = self._done_count()
            out["NetworkSpeedKBs"] = self.speed
        return out

    def serialize(self) -> dict[str, Any]:
        """The plugin's serialized query plus pacsbox's progress (transaction, plan, done
        buckets)."""
        d = self.base_serialized()
        d["pacsbox"]["Transaction"] = self.transaction
        d["pacsbox"]["Restarts"] = self.restarts
        return d

    @classmethod
    def from_serialized(cls, data: Mapping[str, Any], ctx: "ServerContext") -> "PushTransferJob":
        """Rebuild a push job; it goes on uploading the buckets not done yet."""
        job = cls(data)
        job.load_base(data)
        extra = data.get("pacsbox") or {}
        job.transaction = extra.get("Transaction")
        job.restarts = int(extra.get("Restarts", 0))
        if job.state == "discard" or (job.state in ("push", "commit") and not job.transaction):
            job.state = "create" if job.buckets else "init"
        return job

    def reset(self) -> None:
        """Start again from the first state, with a new transaction (``resubmit``)."""
        super().reset()
        self.transaction = None
        self.restarts = 0


class PullTransferJob(TransferJob):
    """``PullTransfer``: fetch resources from a peer that runs the accelerator.

    Parameters
    ----------
    query : mapping
        The checked ``/transfers/pull`` body (``Peer``, ``Resources``, ``Compression``,
        optional ``Originator``).

    Notes
    -----
    ``Content`` (as the plugin): ``Originator`` (when given), ``Resources``, ``Peer``,
    ``Compression``, ``TotalInstances``, ``TotalSizeMB``, ``DownloadedSizeMB``,
    ``CompletedHttpQueries``, ``NetworkSpeedKBs``.
    """

    type_name = JOB_TYPE_PULL

    def __init__(self, query: Mapping[str, Any]) -> None:
        super().__init__(query)
        self.area_dir: str | None = None
        self.area: DownloadArea | None = None

    def _open_area(self, ctx: "ServerContext", fresh: bool) -> DownloadArea:
        if self.area_dir is None:
            self.area_dir = os.path.join(staging_root(ctx), "pull", str(uuid.uuid4()))
        self.area = DownloadArea(self.area_dir, self.instances, reopen=not fresh)
        return self.area

    def step(self, ctx: "ServerContext") -> StepResult:
        """One state step (see the module's docstring)."""
        st = transfer_settings(ctx)
        assert self.client is not None
        if self.state == "init":
            try:
                answer = self._lookup(st)
            except RequestInterrupted:
                return StepResult.CONTINUE  # paused/canceled: asked again at resume
            except (PeerHttpError, ValueError) as e:
                if self.stop_requested:
                    return StepResult.CONTINUE  # interrupted by a pause: asked again at resume
                return self._fail(ErrorCode.NETWORK_PROTOCOL,
                                  f'Cannot retrieve the list of instances to pull from peer "{self.peer_name}" '
                                  f"(check that it has the transfers accelerator plugin installed): {e}")
            if (not isinstance(answer, Mapping) or not isinstance(answer.get("Instances"), list)
                    or not isinstance(answer.get(KEY_ORIGINATOR), str)):
                return self._fail(ErrorCode.NETWORK_PROTOCOL, f"Bad network protocol from peer: {self.peer_name}")
            if KEY_ORIGINATOR in self.query and self.query[KEY_ORIGINATOR] != answer[KEY_ORIGINATOR]:
                return self._fail(ErrorCode.NETWORK_PROTOCOL,
                                  'Invalid originator, check out the "RemoteSelf" configuration option of peer: '
                                  f"{self.peer_name}")
            try:
                self.instances = [InstanceInfo.from_json(i) for i in answer["Instances"]]
            except OrthancError:
                return self._fail(ErrorCode.NETWORK_PROTOCOL, f"Bad network protocol from peer: {self.peer_name}")
            if not self.instances:
                self.state = "success"
                return StepResult.SUCCESS
            self.buckets = plan_buckets(self.instances, effective_bucket_size(st, self.instances), base_url=self.client.base,
                                        compression=self.compression)
            self.done = set()
            self._open_area(ctx, fresh=True)
            self.state = "pull"
            return StepResult.CONTINUE
        if self.state == "pull":
            return self._pull_step(ctx, st)
        if self.state == "commit":
            if self.area is None and not (self.area_dir and os.path.isdir(self.area_dir)):
                self.state, self.done = "pull", set()  # staging lost (a commit cut by a crash)
                return StepResult.CONTINUE
            area = self.area or self._open_area(ctx, fresh=False)
            try:
                area.commit(ctx, st.commit_threads)
            finally:
                area.discard()
                self.area = None
            self.state = "success"
            return StepResult.SUCCESS
        raise OrthancError(ErrorCode.INTERNAL_ERROR, f"Bad state of a pull job: {self.state}")

    def _lookup(self, st) -> Any:
        attempt = 0
        while True:
            try:
                return self._interruptible(
                    lambda: self.client.request("POST", URI_LOOKUP, json_body=self.query[KEY_RESOURCES]).json())
            except PeerHttpError as e:
                attempt += 1
                if attempt > st.max_http_retries or (e.status is not None and 400 <= e.status < 500) \
                        or self.wait_stop(1.0):
                    raise

    def _pull_step(self, ctx: "ServerContext", st) -> StepResult:
        if self.runner is None:
            area = self.area
            if area is None or not os.path.isdir(area.directory):
                if self.area_dir and os.path.isdir(self.area_dir):
                    area = self._open_area(ctx, fresh=False)
                else:  # staging lost (restart): download everything again
                    self.done = set()
                    area = self._open_area(ctx, fresh=True)
            todo = [i for i in range(len(self.buckets)) if i not in self.done]
            client, compression, buckets = self.client, self.compression, self.buckets

            def fetch(n: int) -> tuple[int, int]:
                resp = client.request("GET", buckets[n].pull_uri(compression))
                body = resp.content
                area.write_bucket(buckets[n], body, compression, n)
                return 0, len(body)

            self.runner = QueryRunner(todo, fetch, st.threads, st.max_http_retries)
        runner = self.runner
        runner.wait(0.2)
        if runner.running:
            self.speed = runner.speed_kbs()
            return StepResult.CONTINUE
        self.runner = None
        self._absorb(runner)
        if runner.failure is None:
            if len(self.done) >= len(self.buckets):
                self.state = "commit"
            return StepResult.CONTINUE  # else stopped (pause, cancel): the next run goes on
        e = runner.failure
        self._drop_area()
        return self._fail(ErrorCode.NETWORK_PROTOCOL,
                          f"Cannot download bucket {runner.failed_query} from peer {self.peer_name}: "
                          f"{getattr(e, 'details', e)}")

    def _drop_area(self) -> None:
        if self.area is not None:
            self.area.discard()
        elif self.area_dir:
            import shutil
            shutil.rmtree(self.area_dir, ignore_errors=True)
        self.area = None

    def stop(self, reason: str) -> None:
        """Stop the download threads; the staging area is kept for a pause or a restart,
        deleted otherwise."""
        super().stop(reason)
        if reason not in ("Paused", "Shutdown", "Success"):
            self._drop_area()

    def public_content(self) -> dict[str, Any]:
        """The plugin's ``Content`` of a pull job."""
        _, down = self._transfer_counts()
        out: dict[str, Any] = {}
        if KEY_ORIGINATOR in self.query:
            out["Originator"] = self.query[KEY_ORIGINATOR]
        out.update({"Resources": self.query[KEY_RESOURCES], "Peer": self.peer_name, "Compression": self.compression})
        if self.state != "init":
            out["TotalInstances"] = len(self.instances)
            out["TotalSizeMB"] = megabytes(sum(i.size for i in self.instances))
            out["DownloadedSizeMB"] = megabytes(down)
            out["CompletedHttpQueries"] = self._done_count()
            out["NetworkSpeedKBs"] = self.speed
        return out

    def serialize(self) -> dict[str, Any]:
        """The plugin's serialized query plus pacsbox's progress (plan, done buckets,
        staging folder)."""
        d = self.base_serialized()
        d["pacsbox"]["Area"] = self.area_dir
        return d

    @classmethod
    def from_serialized(cls, data: Mapping[str, Any], ctx: "ServerContext") -> "PullTransferJob":
        """Rebuild a pull job; it goes on downloading the buckets not done yet (all of
        them when its staging folder is gone)."""
        job = cls(data)
        job.load_base(data)
        job.area_dir = (data.get("pacsbox") or {}).get("Area")
        if job.state == "commit" and not (job.area_dir and os.path.isdir(job.area_dir)):
            job.state, job.done = "pull", set()
        return job

    def reset(self) -> None:
        """Start again from the lookup, dropping the staged files (``resubmit``)."""
        self._drop_area()
        super().reset()
        self.area_dir = None
