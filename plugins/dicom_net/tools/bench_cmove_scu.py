#!/usr/bin/env python3
"""Speed of the C-MOVE SCU: retrieving a 500-instance study from a remote SCP into pacsbox,
against the reference Orthanc doing the same.

Set-up (everything on 127.0.0.1)::

    remote SCP (a second Orthanc, or dcmtk dcmqrscp) holding the study
        |  C-MOVE from the reference Orthanc REF -> C-STOREs into REF
        |  C-MOVE from pacsbox PB               -> C-STOREs into PB's SCP
        v

The study (1 patient, 1 study, 4 series x 125 CT instances by default) is made with
``/work/shared/bench/gen_corpus.py --template ct``. For each repetition, interleaved
(REF then PB), the study is deleted from the receiver, queried (``POST
/modalities/remote/query``) and retrieved with ``POST /queries/{id}/retrieve`` (synchronous,
target = the receiver itself); the time of the retrieve call is measured, the receiver must
then hold every instance. The script prints the median times, the server CPU seconds of each
receiver during its retrieves (utime + stime from ``/proc``), and the ratio REF time / PB
time (> 1: pacsbox is faster).

Usage::

    python plugins/dicom_net/tools/bench_cmove_scu.py                    # generate, start, measure once
    python plugins/dicom_net/tools/bench_cmove_scu.py --repeat 3 --remote dcmqrscp
    python plugins/dicom_net/tools/bench_cmove_scu.py --method C-GET     # pacsbox retrieves by C-GET

Options: ``--corpus DIR`` (an existing gen_corpus.py output; generated in the work folder
otherwise), ``--instances`` (per series, 4 series), ``--remote orthanc|dcmqrscp``,
``--orthanc PATH`` (Debian's ``/usr/sbin/Orthanc`` by default, run with ``TCP_NODELAY=1``),
``--workdir`` (kept when given; a temporary folder otherwise), ``--method`` (pacsbox's
``RetrieveMethod`` for the call; the reference 1.10.1 has no C-GET SCU and always moves).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

GEN_CORPUS = "/work/shared/bench/gen_corpus.py"
ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DCMTK = "/usr/bin"


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its threads (``/proc/PID/stat``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Procs:
    """The processes this script started, stopped by PID at the end."""

    def __init__(self) -> None:
        self.procs: list[tuple[subprocess.Popen, object]] = []

    def start(self, cmd: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
        """Start ``cmd`` with its output in ``log``."""
        f = open(log, "wb")
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=dict(os.environ, **(env or {})))
        self.procs.append((p, f))
        return p

    def stop(self) -> None:
        """Terminate every started process (kill after 15 s)."""
        for p, f in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
            f.close()


def wait_up(url: str, proc: subprocess.Popen, log: Path) -> None:
    """Wait until ``url/system`` answers (60 s)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited; see {log}")
        try:
            if requests.get(url + "/system", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    sys.exit(f"server did not start; see {log}")


def start_orthanc(procs: Procs, folder: Path, aet: str, dicom_port: int, modalities: dict) -> tuple[str, int]:
    """A throw-away Orthanc; returns (URL, PID)."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg = {"Name": aet, "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
           "HttpPort": port, "DicomPort": dicom_port, "DicomAet": aet, "RemoteAccessAllowed": False,
           "AuthenticationEnabled": False, "DicomModalities": modalities, "DicomScuTimeout": 60,
           "StableAge": 3600, "Plugins": [], "HttpServerEnabled": True, "DicomServerEnabled": True}
    (folder / "orthanc.json").write_text(json.dumps(cfg))
    log = folder / "stdout.log"
    p = procs.start([ORTHANC, f"--logdir={folder}", str(folder / "orthanc.json")], log, {"TCP_NODELAY": "1"})
    url = f"http://127.0.0.1:{port}"
    wait_up(url, p, log)
    return url, p.pid


def start_pacsbox(procs: Procs, folder: Path, aet: str, dicom_port: int, modalities: dict,
                  extra: dict | None = None) -> tuple[str, int]:
    """``pacsbox serve`` on free ports, with ``extra`` options; returns (URL, PID)."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg = {"Name": aet, "StorageDirectory": str(folder / "db"), "HttpPort": port, "DicomPort": dicom_port,
           "DicomAet": aet, "RemoteAccessAllowed": False, "DicomModalities": modalities, "DicomScuTimeout": 60,
           "StableAge": 3600, **(extra or {})}
    (folder / "pacsbox.json").write_text(json.dumps(cfg))
    exe = shutil.which("pacsbox")
    cmd = [exe] if exe else [sys.executable, "-m", "pacsbox.cli"]
    log = folder / "stdout.log"
    p = procs.start(cmd + ["serve", "--config", str(folder / "pacsbox.json")], log)
    url = f"http://127.0.0.1:{port}"
    wait_up(url, p, log)
    return url, p.pid


def start_dcmqrscp(procs: Procs, folder: Path, aet: str, port: int, peers: dict[str, int],
                   files: list[Path]) -> None:
    """dcmtk's dcmqrscp with ``files`` indexed (``dcmqridx``)."""
    db = folder / "db"
    db.mkdir(parents=True, exist_ok=True)
    hosts = "\n".join(f"{a.lower()} = ({a}, 127.0.0.1, {p})" for a, p in peers.items())
    (folder / "dcmqrscp.cfg").write_text(
        f"NetworkTCPPort = {port}\nMaxPDUSize = 16384\nMaxAssociations = 16\nHostTable BEGIN\n{hosts}\n"
        f"HostTable END\nVendorTable BEGIN\nVendorTable END\nAETable BEGIN\n{aet} {db} RW (10000, 4096mb) ANY\n"
        f"AETable END\n")
    copies = []
    for i, f in enumerate(files):
        dst = db / f"f{i:05d}.dcm"
        shutil.copyfile(f, dst)
        copies.append(str(dst))
    for i in range(0, len(copies), 200):
        subprocess.run([f"{DCMTK}/dcmqridx", str(db), *copies[i:i + 200]], check=True)
    procs.start([f"{DCMTK}/dcmqrscp", "-c", str(folder / "dcmqrscp.cfg"), str(port)], folder / "stdout.log",
                {"TCP_NODELAY": "1"})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit("dcmqrscp did not start")


def corpus(args: argparse.Namespace, workdir: Path) -> list[Path]:
    """The study's files (generated when needed)."""
    folder = Path(args.corpus) if args.corpus else workdir / "corpus"
    if not (folder / "manifest.json").exists():
        subprocess.run([sys.executable, GEN_CORPUS, "--out", str(folder), "--patients", "1", "--studies", "1",
                        "--series", "4", "--instances", str(args.instances), "--template", "ct", "--seed", "7",
                        "--quiet"], check=True)
    return sorted((folder / "dicom").rglob("*.dcm"))


def study_uid(path: Path) -> str:
    """StudyInstanceUID of a file."""
    import pydicom
    return str(pydicom.dcmread(str(path), stop_before_pixels=True).StudyInstanceUID)


def clear(url: str) -> None:
    """Delete every patient of a receiver."""
    for pid in requests.get(url + "/patients").json():
        requests.delete(f"{url}/patients/{pid}")


def timed_retrieve(url: str, pid: int, uid: str, n: int, body: dict) -> tuple[float, float]:
    """Query the study on ``remote`` and retrieve it synchronously; returns (seconds,
    server CPU seconds)."""
    clear(url)
    r = requests.post(url + "/modalities/remote/query",
                      json={"Level": "Study", "Query": {"StudyInstanceUID": uid}}, timeout=60)
    r.raise_for_status()
    q = r.json()["Path"]
    c0, t0 = cpu_seconds(pid), time.perf_counter()
    r = requests.post(f"{url}{q}/retrieve", json=body, timeout=3600)
    dt = time.perf_counter() - t0
    cpu = cpu_seconds(pid) - c0
    if r.status_code != 200:
        sys.exit(f"retrieve failed on {url}: {r.status_code} {r.text}")
    deadline = time.monotonic() + 30     # the last C-STORE may be indexed just after the final response
    while requests.get(url + "/statistics").json()["CountInstances"] != n:
        if time.monotonic() > deadline:
            sys.exit(f"{url} holds {requests.get(url + '/statistics').json()['CountInstances']} instances, not {n}")
        time.sleep(0.05)
    return dt, cpu


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print the table and the ratio."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus")
    ap.add_argument("--instances", type=int, default=125, help="instances per series (4 series)")
    ap.add_argument("--remote", choices=("orthanc", "dcmqrscp"), default="orthanc")
    ap.add_argument("--orthanc", default=ORTHANC)
    ap.add_argument("--workdir")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--method", choices=("C-MOVE", "C-GET"), default="C-MOVE")
    ap.add_argument("--pacsbox-config", default="{}",
                    help="JSON object of extra pacsbox options (e.g. '{\"MaximumPduLength\": 1048576}')")
    args = ap.parse_args(argv)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-cmove-"))
    workdir.mkdir(parents=True, exist_ok=True)
    files = corpus(args, workdir)
    n = len(files)
    uid = study_uid(files[0])
    procs = Procs()
    try:
        remote_port, ref_port, pb_port = free_port(), free_port(), free_port()
        peers = {"REF": ref_port, "PACSBOX": pb_port}
        if args.remote == "orthanc":
            mods = {name.lower(): {"AET": name, "Host": "127.0.0.1", "Port": p, "AllowGet": True} for name, p in peers.items()}
            remote_url, _ = start_orthanc(procs, workdir / "remote", "REMOTE", remote_port, mods)
            with requests.Session() as s:
                for f in files:
                    s.post(remote_url + "/instances", data=f.read_bytes()).raise_for_status()
        else:
            start_dcmqrscp(procs, workdir / "remote", "REMOTE", remote_port, peers, files)
        remote = {"remote": ["REMOTE", "127.0.0.1", remote_port]}
        ref_url, ref_pid = start_orthanc(procs, workdir / "ref", "REF", ref_port, remote)
        pb_url, pb_pid = start_pacsbox(procs, workdir / "pacsbox", "PACSBOX", pb_port, remote,
                                       json.loads(args.pacsbox_config))
        times: dict[str, list[tuple[float, float]]] = {"reference": [], "pacsbox": []}
        for rep in range(args.repeat):
            times["reference"].append(timed_retrieve(ref_url, ref_pid, uid, n, {}))
            times["pacsbox"].append(timed_retrieve(pb_url, pb_pid, uid, n, {"RetrieveMethod": args.method}))
            print(f"rep {rep + 1}: reference {times['reference'][-1][0]:.2f} s, "
                  f"pacsbox {times['pacsbox'][-1][0]:.2f} s", flush=True)
        med = {k: statistics.median(t for t, _ in v) for k, v in times.items()}
        cpu = {k: statistics.median(c for _, c in v) for k, v in times.items()}
        print(f"\nretrieve of {n} instances from {args.remote} (pacsbox by {args.method}), "
              f"median of {args.repeat}:")
        print(f"  {'server':<10} {'seconds':>8} {'inst/s':>8} {'server CPU s':>13}")
        for k in ("reference", "pacsbox"):
            print(f"  {k:<10} {med[k]:8.2f} {n / med[k]:8.1f} {cpu[k]:13.2f}")
        print(f"ratio reference time / pacsbox time: {med['reference'] / med['pacsbox']:.2f} "
              f"(target >= 1.2); server CPU ratio reference / pacsbox: "
              f"{cpu['reference'] / cpu['pacsbox'] if cpu['pacsbox'] else float('nan'):.2f}")
    finally:
        procs.stop()
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
