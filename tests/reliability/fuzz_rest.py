"""A small fuzzer of the REST upload and JSON routes (issue 13): random and mutated bodies
to ``POST /instances`` (DICOM files with flipped or cut bytes, gzip, ZIP, random bytes)
and to the JSON routes (modify, anonymize, split, merge, archive, media, find,
create-archive, jobs...), on an in-process app with every first-party plugin; counts the
answers by status and lists any 5xx.

Run: ``python tests/reliability/fuzz_rest.py [--requests 5000] [--seed 1]``;
``test_fuzz_small`` runs a few hundred requests in the suite.
"""
from __future__ import annotations

import argparse
import collections
import gzip
import io
import json
import random
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
for p in (str(HERE), str(HERE.parent)):
    if p not in sys.path:
        sys.path.insert(0, p)

import falcon.testing  # noqa: E402

from pacsbox import create_app  # noqa: E402

_KEYS = ["Replace", "Remove", "Keep", "Force", "KeepSource", "Asynchronous", "Synchronous", "Transcode",
         "Priority", "Permissive", "DicomVersion", "KeepPrivateTags", "PrivateCreator", "Resources", "Series",
         "Instances", "Level", "Query", "Limit", "Since", "Expand", "CaseSensitive", "Filename", "Utf8",
         "Extended", "LossyQuality", "Full", "Short", "RequestedTags", "Labels", "OrderBy", "Tags"]
_TAGS = ["PatientName", "PatientID", "StudyDescription", "0010,0010", "0008-1030", "SOPInstanceUID",
         "StudyInstanceUID", "ContentSequence", "ReferencedImageSequence[0].ReferencedSOPInstanceUID",
         "7fe0,0010", "xyz", "", "0010,0010[*]", "(0010,0020)", "1234,5678"]


#: Orthanc error codes whose HTTP status is 500 in the reference itself (reference
#: Appendix A): 27 ``UnknownDicomTag`` (a request naming a tag that does not exist, e.g.
#: inside a Replace sequence item). Counted apart; any other 5xx is a defect.
REFERENCE_500 = {27}


def _value(rng: random.Random, depth: int = 0):
    roll = rng.random()
    if depth > 3 or roll < 0.25:
        return rng.choice(["", "x", "DOE^JOHN", "\u00c5str\u00f6m", "1.2.840.10008.1.2.5", "*", "ß" * 70,
                           "../..", "\x00", "2019a", "Patient", "Study", "Series", "Instance", "true"])
    if roll < 0.4:
        return rng.choice([0, -1, 1, 2 ** 31, 2 ** 63, 1.5, True, False, None])
    if roll < 0.7:
        return {rng.choice(_TAGS + _KEYS): _value(rng, depth + 1) for _ in range(rng.randint(0, 4))}
    return [_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]


def _body(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.1:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
    if roll < 0.2:
        return json.dumps(_value(rng)).encode()[: rng.randint(0, 40)]   # truncated JSON
    body = {rng.choice(_KEYS): _value(rng) for _ in range(rng.randint(0, 5))}
    return json.dumps(body).encode()


def _mutated_dicom(rng: random.Random, files: list[bytes]) -> bytes:
    data = bytearray(rng.choice(files))
    roll = rng.random()
    if roll < 0.3:
        for _ in range(rng.randint(1, 20)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif roll < 0.5:
        data = data[: rng.randint(0, len(data))]
    elif roll < 0.6:
        return gzip.compress(bytes(data))
    elif roll < 0.75:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for i in range(rng.randint(0, 3)):
                zf.writestr(rng.choice(["a.dcm", "DICOMDIR", "../x.dcm", f"{i}/b"]), bytes(data))
        out = bytearray(buf.getvalue())
        if rng.random() < 0.3 and out:
            out[rng.randrange(len(out))] = rng.randrange(256)
        return bytes(out)
    elif roll < 0.8:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 512)))
    return bytes(data)


def run(n: int, seed: int, workdir: Path) -> dict:
    """Send ``n`` requests; returns ``{"requests", "by_status", "errors" (5xx samples)}``."""
    from builtin.builtin_helpers import make_study
    rng = random.Random(seed)
    app = create_app({"StorageDirectory": str(workdir / "fuzz"), "StableAge": 60, "SaveJobs": False,
                      "DicomServerEnabled": False, "MaximumUploadSize": 64},
                     load_entrypoints=True)
    client = falcon.testing.TestClient(app)
    files = make_study(4, patient_id="FUZZ", series=2)
    ids = [client.simulate_post("/instances", body=f).json for f in files]
    study, patient = ids[0]["ParentStudy"], ids[0]["ParentPatient"]
    series, instance = ids[0]["ParentSeries"], ids[0]["ID"]
    targets = [f"/studies/{study}/{op}" for op in ("modify", "anonymize", "split", "merge", "archive", "media")] + \
        [f"/patients/{patient}/{op}" for op in ("modify", "anonymize")] + \
        [f"/series/{series}/modify", f"/instances/{instance}/modify", f"/instances/{instance}/anonymize",
         "/tools/find", "/tools/create-archive", "/tools/create-media", "/tools/lookup", "/tools/count-resources",
         "/studies/ffffffff-ffffffff-ffffffff-ffffffff-ffffffff/modify", f"/instances/{instance}/metadata/1025",
         f"/instances/{instance}/attachments/1030"]
    by_status: collections.Counter = collections.Counter()
    reference_500: collections.Counter = collections.Counter()
    errors = []
    try:
        for i in range(n):
            if rng.random() < 0.35:
                path, body = "/instances", _mutated_dicom(rng, files)
                headers = {"Content-Encoding": "gzip"} if body[:2] == b"\x1f\x8b" else {}
                r = client.simulate_post(path, body=body, headers=headers)
            else:
                path, body = rng.choice(targets), _body(rng)
                method = client.simulate_put if "/metadata/" in path or "/attachments/" in path else \
                    client.simulate_post
                r = method(path, body=body)
            by_status[r.status_code] += 1
            if r.status_code >= 500:
                try:
                    code = r.json.get("OrthancStatus")
                except (ValueError, AttributeError):
                    code = None
                if code in REFERENCE_500:
                    reference_500[code] += 1
                else:
                    errors.append((path, body[:200], r.text[:300]))
    finally:
        app.close()
    return {"requests": n, "by_status": dict(sorted(by_status.items())),
            "reference_500": {str(k): v for k, v in sorted(reference_500.items())}, "errors": errors}


def main(argv=None) -> int:
    """Command line: ``--requests N --seed S``; prints the counts, exit 1 on any 5xx."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    out = run(args.requests, args.seed, Path(tempfile.mkdtemp(prefix="pacsbox-fuzz-")))
    print(json.dumps({k: v for k, v in out.items() if k != "errors"}, indent=2))
    for e in out["errors"][:20]:
        print("5xx:", e)
    return 1 if out["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
