"""The OpenAPI document (issue 16 item 19): every registered route of every plugin is in it,
with its methods and docstring summaries; ``GET /tools/openapi.json`` and ``pacsbox
openapi`` serve it; and a bounded ``schemathesis`` run against a live server (the core
routes) gets no server error other than the ones the reference Orthanc 1.10.1 answers with
500 too.

``schemathesis`` (test extra) generates the requests from the document.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import requests

from pacsbox import create_app
from pacsbox.routing.openapi import METHODS, openapi_document, operations

#: 500s the reference answers too (parity): unknown DICOM tag, full storage, slices that
#: cannot be ordered.
REFERENCE_500 = {27, 19, 2040}


@pytest.fixture(scope="module")
def full_app(tmp_path_factory):
    app = create_app({"StorageDirectory": str(tmp_path_factory.mktemp("oa"))}, load_entrypoints=True,
                     start_jobs=False, run_startup=False)
    yield app
    app.close()


def test_every_registered_route_is_documented(full_app):
    doc = openapi_document(full_app.ctx)
    assert doc["openapi"] == "3.1.0"
    plugins = {spec.plugin for spec in full_app.ctx.routes.routes}
    assert {"dicom_net", "archive", "pdf", "metrics"} <= plugins
    n = 0
    for spec, resource in full_app.ctx.routes.mounted:
        import re
        item = doc["paths"][re.sub(r"\{([^}:]+):[^}]*\}", r"{\1}", spec.path)]
        ops = operations(resource, spec.suffix)
        assert ops, spec.path
        for method in ops:
            op = item[method]
            assert op["summary"] and spec.plugin in op["tags"], (spec.path, method)
            assert set(op["responses"]) == {"200", "default"}
            n += 1
        for f in [p["name"] for p in item.get("parameters", [])]:
            assert "{" + f in spec.path
    assert n > 250
    assert set(m for item in doc["paths"].values() for m in item if m != "parameters") <= set(METHODS)
    assert doc["paths"]["/patients/{id}/protected"]["get"]["summary"].startswith("``/patients/{id}/protected``")


def test_served_and_printed(full_app, tmp_path):
    import falcon.testing
    served = falcon.testing.TestClient(full_app).simulate_get("/tools/openapi.json").json
    assert served == json.loads(json.dumps(openapi_document(full_app.ctx)))
    out = subprocess.run([sys.executable, "-m", "pacsbox.cli", "openapi"], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    printed = json.loads(out.stdout)
    assert set(printed["paths"]) == set(served["paths"])


schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from conftest import LiveServer, free_port, read
    port = free_port()
    app = create_app({"StorageDirectory": str(tmp_path_factory.mktemp("st")), "HttpPort": port},
                     plugins=[], load_entrypoints=False)
    server = LiveServer(app, port)
    for name in ("CT_small.dcm", "MR_small.dcm"):
        requests.post(server.url + "/instances", data=read(name))
    yield server
    server.close()
    app.close()


@pytest.fixture(scope="module")
def api_schema(live):
    return schemathesis.openapi.from_dict(openapi_document(live.app.ctx))


schema = schemathesis.pytest.from_fixture("api_schema")
_SEEN: dict[str, set[int]] = {}


@schema.parametrize()
@settings(max_examples=2, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_server_error(case, live):
    r = case.call(base_url=live.url, timeout=30)
    _SEEN.setdefault(f"{case.method} {case.path}", set()).add(r.status_code)
    if r.status_code >= 500:
        body = r.json() if r.content[:1] == b"{" else {}
        assert body.get("OrthancStatus") in REFERENCE_500, (case.method, case.formatted_path, r.status_code, r.text)


def test_documented_200_is_really_answered(live):
    """Every documented GET without path fields answers its documented 200 (the other
    answers are the documented ``default``)."""
    doc = openapi_document(live.app.ctx)
    # (a GET of a WebDAV folder is 404, as in the reference: folders are browsed with PROPFIND)
    gets = [p for p, item in doc["paths"].items() if "get" in item and "{" not in p and p != "/webdav"]
    assert len(gets) > 20
    args = {"/tools/generate-uid": "?level=study"}  # a required query argument
    for path in gets:
        r = requests.get(live.url + path + args.get(path, ""), timeout=30)
        assert r.status_code == 200, (path, r.status_code, r.text[:200])
