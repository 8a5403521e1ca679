#!/usr/bin/env python3
"""Speed of ``POST /peers/{id}/store``: the reference Orthanc against pacsbox, on a link
with added latency.

Set-up (everything on 127.0.0.1)::

    reference Orthanc (sender O) --\\
                                    +--> latency proxy (+N ms each way) --> pacsbox receiver R
    pacsbox sender S ---------------/

The same study (500 CT instances by default, generated with
``/work/shared/bench/gen_corpus.py --template ct``) is uploaded to O and S; then, for each
mode (plain, ``Compress``), O and S send it to R through the proxy with ``POST
/peers/rx/store`` (synchronous), R's copy being deleted before each send. The script prints
the times, the bytes sent (``Size``) and the ratios Orthanc time / pacsbox time (> 1: pacsbox
is faster). ``/transfers/send`` of pacsbox (the transfers accelerator) is measured too when
the route exists (otherwise "n/a").

Usage::

    python plugins/dicom_net/tools/bench_peers.py                  # generate, start, measure
    python plugins/dicom_net/tools/bench_peers.py --corpus DIR --delay-ms 10 --repeat 3
    python plugins/dicom_net/tools/bench_peers.py --orthanc-url http://127.0.0.1:8042

Options: ``--orthanc PATH`` (default Debian's ``/usr/sbin/Orthanc``, run with
``TCP_NODELAY=1``), ``--orthanc-url`` (use a running reference instead; it must be empty
of this study or hold it), ``--concurrency`` (pacsbox's ``OrthancPeerStoreConcurrency``),
``--workdir`` (kept when given; a temporary folder otherwise), ``--instances`` (per
series, 4 series).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tests" / "plugins" / "dicom_net"))
from latency_proxy import LatencyProxy  # noqa: E402

GEN_CORPUS = "/work/shared/bench/gen_corpus.py"
ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen | None, what: str, log: str) -> None:
    """Wait until ``url/system`` answers (60 s)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"{what} exited; see {log}")
        try:
            if requests.get(url + "/system", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{what} did not answer within 60 s; see {log}")


class Procs:
    """Servers started by this script, stopped by their own PID."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, cmd: list[str], log: str, env: dict | None = None) -> subprocess.Popen:
        with open(log, "ab") as f:
            p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=dict(os.environ, **(env or {})))
        self.procs.append(p)
        return p

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def start_pacsbox(procs: Procs, workdir: Path, name: str, extra: dict) -> str:
    port = free_port()
    cfg = {"Name": name, "HttpPort": port, "StorageDirectory": str(workdir / name), "DicomServerEnabled": False,
           "RemoteAccessAllowed": False, "StableAge": 3600, "ConcurrentJobs": 2}
    cfg.update(extra)
    path = workdir / f"{name}.json"
    path.write_text(json.dumps(cfg))
    exe = shutil.which("pacsbox")
    cmd = ([exe] if exe else [sys.executable, "-m", "pacsbox.cli"]) + ["serve", "--config", str(path)]
    log = str(workdir / f"{name}.log")
    p = procs.start(cmd, log)
    url = f"http://127.0.0.1:{port}"
    wait_up(url, p, f"pacsbox {name}", log)
    return url


def start_orthanc(procs: Procs, workdir: Path, orthanc: str) -> str:
    d = workdir / "orthanc"
    d.mkdir(exist_ok=True)
    port = free_port()
    cfg = {"Name": "Ref", "HttpPort": port, "DicomPort": free_port(), "StorageDirectory": str(d / "db"),
           "IndexDirectory": str(d / "db"), "DicomServerEnabled": False, "RemoteAccessAllowed": False,
           "AuthenticationEnabled": False, "StableAge": 3600, "WebDavEnabled": False}
    (d / "config.json").write_text(json.dumps(cfg))
    log = str(d / "stdout.log")
    p = procs.start([orthanc, f"--logdir={d}", str(d / "config.json")], log, env={"TCP_NODELAY": "1"})
    url = f"http://127.0.0.1:{port}"
    wait_up(url, p, "Orthanc", log)
    return url


def corpus_files(corpus: Path) -> list[Path]:
    files = sorted(Path(p) for p in glob.glob(str(corpus / "dicom" / "**" / "*.dcm"), recursive=True))
    if not files:
        files = sorted(Path(p) for p in glob.glob(str(corpus / "**" / "*.dcm"), recursive=True))
    if not files:
        raise SystemExit(f"no .dcm file under {corpus}")
    return files


def upload_all(url: str, files: list[Path]) -> str:
    """Upload the files; the Orthanc ID of their (single) study."""
    studies = set()
    with requests.Session() as s:
        for f in files:
            r = s.post(url + "/instances", data=f.read_bytes(), timeout=60)
            r.raise_for_status()
            studies.add(r.json()["ParentStudy"])
    if len(studies) != 1:
        raise SystemExit(f"the corpus must hold one study, not {len(studies)}")
    return studies.pop()


def clear_receiver(receiver: str, study: str) -> None:
    requests.delete(f"{receiver}/studies/{study}", timeout=120)
    assert requests.get(f"{receiver}/studies", timeout=30).json() == [], "receiver not empty"


def timed_store(sender: str, receiver: str, study: str, n: int, compress: bool) -> tuple[float, int]:
    """One synchronous ``/peers/rx/store``; (seconds, bytes sent)."""
    clear_receiver(receiver, study)
    t0 = time.perf_counter()
    r = requests.post(f"{sender}/peers/rx/store", json={"Resources": [study], "Compress": compress}, timeout=3600)
    elapsed = time.perf_counter() - t0
    if r.status_code != 200:
        raise SystemExit(f"store from {sender} failed: {r.status_code} {r.text}")
    body = r.json()
    got = len(requests.get(f"{receiver}/instances", timeout=60).json())
    if body["InstancesCount"] != n or got != n:
        raise SystemExit(f"store from {sender}: {body['InstancesCount']} sent, {got} received, {n} expected")
    return elapsed, int(body["Size"])


def timed_transfers_send(sender: str, receiver: str, study: str, n: int, compress: bool) -> tuple[float, int] | None:
    """Slot for the transfers accelerator: ``POST /transfers/send`` of pacsbox (Orthanc's
    transfers-plugin body). None when the route does not exist. Filled in by the transfers
    engineer if the body or the answer differ."""
    clear_receiver(receiver, study)
    body = {"Resources": [{"Level": "Study", "ID": study}], "Compression": "gzip" if compress else "none",
            "Peer": "rx"}
    t0 = time.perf_counter()
    r = requests.post(f"{sender}/transfers/send", json=body, timeout=3600)
    if r.status_code in (404, 405):
        return None
    if r.status_code != 200:
        print(f"   /transfers/send failed: {r.status_code} {r.text[:300]}")
        return None
    answer = r.json()
    job = answer.get("ID")
    while job:   # asynchronous: wait for the job
        j = requests.get(f"{sender}/jobs/{job}", timeout=30).json()
        if j["State"] in ("Success", "Failure"):
            if j["State"] != "Success":
                print(f"   /transfers/send job failed: {j.get('ErrorDetails')}")
                return None
            answer = j.get("Content", {})
            break
        time.sleep(0.02)
    elapsed = time.perf_counter() - t0
    got = len(requests.get(f"{receiver}/instances", timeout=60).json())
    if got != n:
        print(f"   /transfers/send: {got} received, {n} expected")
        return None
    size = answer.get("Size")
    if size is None:     # PushTransfer's content: UploadedSizeMB (MiB)
        size = float(answer.get("UploadedSizeMB", 0) or 0) * 1024 * 1024
    return elapsed, int(float(size))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Peer store speed: Orthanc vs pacsbox through a latency proxy")
    ap.add_argument("--corpus", help="corpus folder (gen_corpus.py output); generated when absent")
    ap.add_argument("--instances", type=int, default=125, help="instances per series when generating (4 series)")
    ap.add_argument("--delay-ms", type=float, default=10.0, help="proxy delay per direction, ms (default 10)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per case; the best time is kept")
    ap.add_argument("--concurrency", type=int, default=None, help="pacsbox OrthancPeerStoreConcurrency")
    ap.add_argument("--orthanc", default=ORTHANC, help="reference Orthanc binary")
    ap.add_argument("--orthanc-url", help="use this running reference Orthanc instead of starting one")
    ap.add_argument("--workdir", help="working folder (kept); default: a temporary one (deleted)")
    args = ap.parse_args(argv)

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-peers-"))
    workdir.mkdir(parents=True, exist_ok=True)
    procs = Procs()
    proxy = None
    try:
        if args.corpus:
            corpus = Path(args.corpus)
        else:
            corpus = workdir / "corpus"
            if not corpus.exists():
                subprocess.run([sys.executable, GEN_CORPUS, "--out", str(corpus), "--patients", "1", "--studies", "1",
                                "--series", "4", "--instances", str(args.instances), "--template", "ct",
                                "--seed", "1", "--quiet"], check=True)
        files = corpus_files(corpus)
        n = len(files)
        total = sum(f.stat().st_size for f in files)
        print(f"corpus: {n} instances, {total / 1e6:.1f} MB; latency +{args.delay_ms:g} ms each way")

        receiver = start_pacsbox(procs, workdir, "receiver", {})
        proxy = LatencyProxy("127.0.0.1", int(receiver.rsplit(":", 1)[1]), args.delay_ms).start()
        rx_url = f"http://127.0.0.1:{proxy.port}/"
        extra = {"OrthancPeers": {"rx": [rx_url]}}
        if args.concurrency:
            extra["OrthancPeerStoreConcurrency"] = args.concurrency
        pacsbox = start_pacsbox(procs, workdir, "sender", extra)
        orthanc = args.orthanc_url or start_orthanc(procs, workdir, args.orthanc)
        requests.put(f"{orthanc}/peers/rx", json=[rx_url], timeout=10).raise_for_status()

        study = upload_all(pacsbox, files)
        if upload_all(orthanc, files) != study:
            raise SystemExit("the two senders disagree on the study ID")

        rows = []
        for compress in (False, True):
            for label, url in (("Orthanc", orthanc), ("pacsbox", pacsbox)):
                best = min((timed_store(url, receiver, study, n, compress) for _ in range(args.repeat)),
                           key=lambda t: t[0])
                rows.append((label, "/peers/store", compress, *best))
                print(f"  {label:8s} /peers/store  Compress={str(compress):5s} {best[0]:7.2f} s  "
                      f"{n / best[0]:7.1f} inst/s  Size {best[1] / 1e6:6.2f} MB", flush=True)
            t = timed_transfers_send(pacsbox, receiver, study, n, compress)
            if t is None:
                print(f"  pacsbox  /transfers/send Compress={str(compress):5s}     n/a")
            else:
                rows.append(("pacsbox", "/transfers/send", compress, *t))
                print(f"  pacsbox  /transfers/send Compress={str(compress):5s} {t[0]:7.2f} s  "
                      f"{n / t[0]:7.1f} inst/s  Size {t[1] / 1e6:6.2f} MB", flush=True)

        print("\nratios (Orthanc /peers/store time / pacsbox time; > 1 means pacsbox is faster):")
        for compress in (False, True):
            ref = next(r[3] for r in rows if r[0] == "Orthanc" and r[2] == compress)
            for label, route, c, secs, size in rows:
                if label == "pacsbox" and c == compress:
                    print(f"  Compress={str(compress):5s} {route:16s} x{ref / secs:5.2f}")
    finally:
        if proxy is not None:
            proxy.stop()
        procs.stop()
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
