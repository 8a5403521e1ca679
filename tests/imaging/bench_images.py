"""Speed of the image routes and of transcoding, side by side with Orthanc 1.10.1.

Not collected by pytest (the name does not start with ``test_``). Run::

    python tests/imaging/bench_images.py [--requests 60] [--instances 500] [--reps 2]

It starts a scratch reference Orthanc and ``pacsbox serve`` on free loopback ports, both
up at once, and measures interleaved (one request to A, one to B, ...), since the
machine is small and shared:

1. ``GET /instances/{id}/preview`` p50 on the CT template (``CT_small.dcm``), the MR
   template (``MR-SIEMENS-DICOM-WithOverlays.dcm``, pydicom-data), JPEG lossless files
   (``SC_rgb_jpeg_gdcm.dcm`` RGB 100x100, ``JPGLosslessP14SV1_1s_1f_8b.dcm`` 1024x768) and
   JPEG baseline ones (``SC_jpeg_no_color_transform.dcm`` 256x256, ``color3d_jpeg_baseline.dcm``
   640x480x120); then ``frames/{i}/preview`` of a new frame at each request (no answer
   reused by either server's cache);
2. ``POST /studies/{id}/anonymize`` with ``Transcode`` JPEG-LS lossless of a CT study of
   ``--instances`` instances (copies of ``CT_small.dcm``, explicit VR little endian or
   ``--source-syntax``, with new UIDs), wall time and server CPU (the process and its children, from /proc).

Prints the medians and the ratios reference/pacsbox (above 1: pacsbox is faster), and
the load average before and after, since the machine is shared.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import requests

warnings.filterwarnings("ignore")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(url: str, proc: subprocess.Popen) -> None:
    for _ in range(600):
        try:
            requests.get(url + "/system", timeout=1)
            return
        except requests.ConnectionError:
            if proc.poll() is not None:
                raise SystemExit(f"server exited: {proc.args}")
            time.sleep(0.05)
    raise SystemExit(f"server did not answer: {proc.args}")


def start_servers(work: str):
    orthanc = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    rp, pp = free_port(), free_port()
    rcfg = {"Name": "Ref", "StorageDirectory": f"{work}/ref", "IndexDirectory": f"{work}/ref", "HttpPort": rp,
            "DicomServerEnabled": False, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "StableAge": 60, "WebDavEnabled": False}
    pcfg = {"Name": "Ours", "StorageDirectory": f"{work}/ours", "HttpPort": pp, "DicomServerEnabled": False,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "StableAge": 60}
    with open(f"{work}/ref.json", "w") as f:
        json.dump(rcfg, f)
    with open(f"{work}/ours.json", "w") as f:
        json.dump(pcfg, f)
    ref = subprocess.Popen([orthanc, f"--logdir={work}", f"{work}/ref.json"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    ours = subprocess.Popen([sys.executable, "-m", "pacsbox.cli", "serve", "--config", f"{work}/ours.json"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    a, b = f"http://127.0.0.1:{rp}", f"http://127.0.0.1:{pp}"
    wait(a, ref)
    wait(b, ours)
    return (ref, a), (ours, b)


def sample(name: str) -> bytes:
    from pydicom.data import get_testdata_file
    return open(get_testdata_file(name), "rb").read()


def bench_preview(a: str, b: str, n: int) -> dict:
    out = {}
    sa, sb = requests.Session(), requests.Session()
    for name in ("CT_small.dcm", "MR-SIEMENS-DICOM-WithOverlays.dcm", "SC_rgb_jpeg_gdcm.dcm",
                 "JPGLosslessP14SV1_1s_1f_8b.dcm", "SC_jpeg_no_color_transform.dcm", "color3d_jpeg_baseline.dcm"):
        data = sample(name)
        ia = sa.post(a + "/instances", data=data).json()["ID"]
        ib = sb.post(b + "/instances", data=data).json()["ID"]
        ta, tb = [], []
        for i in range(n + 3):
            t = time.perf_counter()
            assert sa.get(f"{a}/instances/{ia}/preview").status_code == 200
            t1 = time.perf_counter()
            assert sb.get(f"{b}/instances/{ib}/preview").status_code == 200
            t2 = time.perf_counter()
            if i >= 3:  # warm-up
                ta.append(t1 - t)
                tb.append(t2 - t1)
        ma, mb = statistics.median(ta) * 1000, statistics.median(tb) * 1000
        out[name] = {"reference_ms": round(ma, 2), "pacsbox_ms": round(mb, 2), "ratio": round(ma / mb, 2)}
        sa.delete(f"{a}/instances/{ia}")  # several samples share their UIDs
        sb.delete(f"{b}/instances/{ib}")
        print(f"preview {name:40s} reference {ma:7.2f} ms  pacsbox {mb:7.2f} ms  ratio {ma / mb:5.2f}", flush=True)
    # every request a frame not asked before: no answer is reused, only the parsed file
    data = sample("color3d_jpeg_baseline.dcm")
    ia = sa.post(a + "/instances", data=data).json()["ID"]
    ib = sb.post(b + "/instances", data=data).json()["ID"]
    ta, tb = [], []
    for i in range(min(n, 119)):
        t = time.perf_counter()
        assert sa.get(f"{a}/instances/{ia}/frames/{i}/preview").status_code == 200
        t1 = time.perf_counter()
        assert sb.get(f"{b}/instances/{ib}/frames/{i}/preview").status_code == 200
        t2 = time.perf_counter()
        ta.append(t1 - t)
        tb.append(t2 - t1)
    ma, mb = statistics.median(ta) * 1000, statistics.median(tb) * 1000
    out["color3d_jpeg_baseline.dcm distinct frames"] = {"reference_ms": round(ma, 2), "pacsbox_ms": round(mb, 2),
                                                        "ratio": round(ma / mb, 2)}
    print(f"preview {'color3d_jpeg_baseline.dcm, a new frame each':40s} reference {ma:7.2f} ms  pacsbox {mb:7.2f} ms"
          f"  ratio {ma / mb:5.2f}", flush=True)
    return out


def make_study(count: int, syntax: str = "1.2.840.10008.1.2.1") -> list[bytes]:
    import pydicom
    from pydicom.uid import generate_uid
    from pydicom.data import get_testdata_file
    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    study = generate_uid()
    series = [generate_uid() for _ in range(4)]
    files = []
    for i in range(count):
        ds = template.copy()
        ds.file_meta = template.file_meta.copy()
        ds.PatientID, ds.PatientName = "BENCH", "BENCH^TRANSCODE"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series[i % 4]
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = i + 1
        ds.file_meta.TransferSyntaxUID = syntax
        buf = io.BytesIO()
        ds.save_as(buf, implicit_vr=syntax == "1.2.840.10008.1.2", enforce_file_format=True)
        files.append(buf.getvalue())
    return files


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of a process and of its live children (pacsbox's
    transcoding workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == pid or int(fields[1]) == pid:  # fields[1] is the parent's PID
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def bench_transcode(a: str, b: str, count: int, reps: int, target: str, pids: dict | None = None,
                    source_syntax: str = "1.2.840.10008.1.2.1") -> dict:
    from concurrent.futures import ThreadPoolExecutor
    files = make_study(count, source_syntax)
    ids = {}
    for url in (a, b):
        s = requests.Session()
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda d: requests.post(url + "/instances", data=d).json(), files))
        ids[url] = answers[0]["ParentStudy"]
    times: dict[str, list[float]] = {a: [], b: []}
    cpu: dict[str, list[float]] = {a: [], b: []}
    pids = pids or {}
    for _ in range(reps):
        for url in (a, b):
            c0 = cpu_seconds(pids[url]) if url in pids else 0.0
            t = time.perf_counter()
            r = requests.post(f"{url}/studies/{ids[url]}/anonymize", json={"Transcode": target, "Force": True},
                              timeout=3600)
            dt = time.perf_counter() - t
            assert r.status_code == 200, r.text
            new = r.json()["ID"]
            inst = requests.get(f"{url}/studies/{new}/instances").json()
            assert len(inst) == count
            f = requests.get(f"{url}/instances/{inst[0]['ID']}/metadata/TransferSyntax").text
            assert f == target, f
            times[url].append(dt)
            if url in pids:
                cpu[url].append(cpu_seconds(pids[url]) - c0)
            requests.delete(f"{url}/studies/{new}")
    ma, mb = statistics.median(times[a]), statistics.median(times[b])
    print(f"anonymize+transcode {count} CT -> {target}: reference {ma:6.2f} s  pacsbox {mb:6.2f} s  "
          f"speed ratio {ma / mb:5.2f}  (samples {times[a]} / {times[b]})", flush=True)
    out = {"reference_s": round(ma, 3), "pacsbox_s": round(mb, 3), "ratio": round(ma / mb, 2),
           "samples": {"reference": times[a], "pacsbox": times[b]}}
    if cpu[a] and cpu[b]:
        ca, cb = statistics.median(cpu[a]), statistics.median(cpu[b])
        print(f"   server CPU: reference {ca:6.2f} s  pacsbox {cb:6.2f} s (with its workers)  ratio {ca / cb:5.2f}"
              f"  ({ca / count * 1000:.2f} vs {cb / count * 1000:.2f} ms an instance)", flush=True)
        out.update(reference_cpu_s=round(ca, 3), pacsbox_cpu_s=round(cb, 3))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=60)
    p.add_argument("--instances", type=int, default=500)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--target", default="1.2.840.10008.1.2.4.80")
    p.add_argument("--source-syntax", default="1.2.840.10008.1.2.1",
                   help="transfer syntax of the CT study (1.2.840.10008.1.2: implicit VR little endian)")
    p.add_argument("--skip", default="", help="comma list: preview,transcode")
    p.add_argument("--json-out")
    args = p.parse_args()
    print("load average %.2f %.2f %.2f" % os.getloadavg(), flush=True)
    work = tempfile.mkdtemp(prefix="pacsbox-bench-img-")
    (ref, a), (ours, b) = start_servers(work)
    result = {}
    try:
        if "preview" not in args.skip:
            result["preview"] = bench_preview(a, b, args.requests)
        if "transcode" not in args.skip:
            result["transcode"] = bench_transcode(a, b, args.instances, args.reps, args.target,
                                                  {a: ref.pid, b: ours.pid}, args.source_syntax)
    finally:
        for proc in (ref, ours):
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)
    print("load average %.2f %.2f %.2f" % os.getloadavg(), flush=True)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
