"""Helpers of the transfers accelerator tests: a generated study, two linked nodes, job
polling, and a TCP proxy that a test can cut."""
from __future__ import annotations

import hashlib
import io
import socket
import threading
import time
from typing import Any

import numpy as np
import pydicom
import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from pacsbox_dicom_net.peers import parse_peer, peer_registry


def make_instance(study_uid: str, series_uid: str, number: int, rows: int = 32, seed: int = 0) -> bytes:
    """A small CT-like Part-10 file (``rows`` x ``rows`` 16-bit pixels), bytes."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    sop_uid = generate_uid(entropy_srcs=[study_uid, series_uid, str(number)])
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = sop_uid
    ds.PatientID = "TRANSFERS"
    ds.PatientName = "Transfers^Test"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "CT"
    ds.InstanceNumber = number
    ds.Rows = ds.Columns = rows
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    rng = np.random.default_rng(seed * 100003 + number)
    ds.PixelData = rng.integers(0, 4096, size=(rows, rows), dtype=np.uint16).tobytes()
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def make_study(count: int, *, large: int = 0, large_rows: int = 512, seed: int = 0) -> list[bytes]:
    """``count`` small instances of one study (2 series), then ``large`` big ones
    (``large_rows`` x ``large_rows`` pixels, 512 KB each by default)."""
    study = generate_uid(entropy_srcs=["study", str(seed)])
    series = [generate_uid(entropy_srcs=["series", str(seed), str(i)]) for i in range(2)]
    out = [make_instance(study, series[i % 2], i + 1, seed=seed) for i in range(count)]
    out += [make_instance(study, series[0], count + 1 + i, rows=large_rows, seed=seed) for i in range(large)]
    return out


def load(node: Any, files: list[bytes]) -> str:
    """Store ``files`` on ``node`` (in-process ingest); returns the study's Orthanc ID."""
    study = None
    for data in files:
        study = node.ctx.ingest.store(data).ids[1]
    return study


def link(node: Any, name: str, other: Any, **props: str) -> None:
    """Declare ``other`` as peer ``name`` of ``node`` (extra string properties, e.g.
    ``RemoteSelf``)."""
    peer_registry(node.ctx).put(name, parse_peer(name, {"Url": other.url + "/", **props}))


def link_url(node: Any, name: str, url: str) -> None:
    """Declare ``url`` as peer ``name`` of ``node``."""
    peer_registry(node.ctx).put(name, parse_peer(name, {"Url": url}))


def wait_job(url: str, job_id: str, timeout: float = 60.0, states=("Success", "Failure")) -> dict:
    """Poll ``/jobs/{id}`` until its state is one of ``states``; returns the job."""
    deadline = time.monotonic() + timeout
    while True:
        job = requests.get(f"{url}/jobs/{job_id}", timeout=10).json()
        if job["State"] in states:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['State']} after {timeout} s: {job}")
        time.sleep(0.05)


def md5s(node: Any) -> dict[str, str]:
    """Orthanc ID → MD5 of the stored file, for every instance of ``node`` (read over
    REST, ``/instances/{id}/file``)."""
    out = {}
    for iid in requests.get(f"{node.url}/instances", timeout=30).json():
        out[iid] = hashlib.md5(requests.get(f"{node.url}/instances/{iid}/file", timeout=30).content).hexdigest()
    return out


class CutProxy:
    """A TCP proxy on 127.0.0.1 toward ``target_port`` that a test can cut.

    After ``cut_after`` bytes went from client to server, every connection is closed and
    new ones are refused until :meth:`heal`. :meth:`cut` does the same at once.
    """

    def __init__(self, target_port: int, cut_after: int | None = None) -> None:
        self.target = target_port
        self.cut_after = cut_after
        self.forwarded = 0
        self.cut_event = threading.Event()
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                c, _ = self.listener.accept()
            except OSError:
                return
            if self.cut_event.is_set():
                c.close()
                continue
            try:
                s = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                c.close()
                continue
            with self._lock:
                self._socks += [c, s]
            threading.Thread(target=self._pipe, args=(c, s, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(s, c, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data or self.cut_event.is_set():
                    break
                if upstream:
                    with self._lock:
                        self.forwarded += len(data)
                        over = self.cut_after is not None and self.forwarded >= self.cut_after
                    if over:
                        self.cut()
                        break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def cut(self) -> None:
        """Close every connection and refuse new ones."""
        self.cut_event.set()
        with self._lock:
            socks, self._socks = self._socks, []
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def heal(self) -> None:
        """Accept connections again (and never cut by size)."""
        self.cut_after = None
        self.cut_event.clear()

    def close(self) -> None:
        """Stop the proxy."""
        self._closed = True
        self.cut()
        self.listener.close()
