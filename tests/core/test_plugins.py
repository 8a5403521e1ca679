"""The plugin framework: one test per hook spec (``test_hook_<name>``) checking that the
core behaves as the spec's docstring says, plus discovery, blocklist, validation and
isolation between apps.

Apps are built with explicit plugin lists through the ``pacsbox_make_app`` fixture of
:mod:`pacsbox.testing`; entry points are loaded only where a test is about them.
"""
from __future__ import annotations

import logging
import threading
import types
import warnings
from importlib import metadata

import falcon.testing
import pluggy
import pydicom
import pytest

import pacsbox
from pacsbox import (Config, ErrorCode, Job, MetricSpec, OrthancError, PluginLoadError, RouteSpec, StartupError,
                     StepResult, hookimpl, hookspec, send_json)
from pacsbox.testing import inline_plugin, wait_for_job, wait_for_notifications


def _testfile(name: str) -> str:
    from pydicom.data import get_testdata_file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_testdata_file(name)


CT_SMALL = _testfile("CT_small.dcm")
CT_SOP_UID = "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"


def ct_bytes() -> bytes:
    with open(CT_SMALL, "rb") as f:
        return f.read()


class Echo:
    """A resource answering its constructor argument."""

    def __init__(self, ctx, answer=None):
        self.ctx = ctx
        self.answer = answer

    def on_get(self, req, resp, **params):
        send_json(resp, self.answer if self.answer is not None else {"Name": self.ctx.config["Name"]})


def routes_plugin(name: str, *paths: str):
    return inline_plugin(name, register_routes=lambda ctx: [RouteSpec(p, Echo) for p in paths])


class CountJob(Job):
    """``steps`` instantaneous steps."""

    type_name = "PluginsTestCount"

    def __init__(self, steps: int = 2) -> None:
        super().__init__()
        self.steps, self.done = steps, 0

    def step(self, ctx):
        self.done += 1
        return StepResult.SUCCESS if self.done >= self.steps else StepResult.CONTINUE

    def public_content(self):
        return {"Done": self.done}


def files_under(path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------
# init
# ---------------------------------------------------------------------------------------

class OwnSpecs:
    """Hook specs owned by a plugin (declared through add_hookspecs)."""

    @hookspec
    def double_it(self, value):
        """A plugin-owned extension point."""


def test_hook_add_hookspecs(pacsbox_make_app):
    provider = inline_plugin("provider", add_hookspecs=lambda plugin_manager: plugin_manager.add_hookspecs(OwnSpecs))
    user = inline_plugin("user", double_it=(lambda value: value * 2, {"optionalhook": True}))
    app = pacsbox_make_app(plugins=[provider, user])
    assert app.ctx.pm.hook.double_it(value=21) == [42]

    # historic: a plugin registered after the app was built is called too
    late_calls = []
    app.ctx.pm.register(inline_plugin("late", add_hookspecs=lambda plugin_manager: late_calls.append(plugin_manager)))
    assert late_calls == [app.ctx.pm]

    # without the provider, the optional implementation still validates; the hook is absent
    app2 = pacsbox_make_app(plugins=[user])
    assert app2.ctx.pm.hook.double_it.spec is None

    # a raising implementation stops the start-up, naming the plugin
    def boom(plugin_manager):
        raise RuntimeError("no specs today")
    with pytest.raises(StartupError, match=r"plugin 'broken-specs' failed in hook add_hookspecs: RuntimeError: no specs"):
        pacsbox_make_app(plugins=[inline_plugin("broken-specs", add_hookspecs=boom)])


def test_hook_configure(pacsbox_make_app):
    seen = []
    plugin = inline_plugin("conf", configure=lambda config: seen.append((type(config), config.plugin_config("Conf"))))
    app = pacsbox_make_app({"Conf": {"Level": 3}}, plugins=[plugin])
    assert seen == [(Config, {"Level": 3})]

    # historic: late registration catches up with the same config object
    late = []
    app.ctx.pm.register(inline_plugin("late-conf", configure=lambda config: late.append(config)))
    assert late == [app.ctx.config]

    def strict(config):
        if not isinstance(config.plugin_config("Conf", {}).get("Level"), int):
            raise ValueError("Conf.Level must be an integer")
    with pytest.raises(StartupError, match=r"plugin 'strict' failed in hook configure: ValueError: Conf.Level"):
        pacsbox_make_app({"Conf": {"Level": "high"}}, plugins=[inline_plugin("strict", configure=strict)])


def test_hook_startup(pacsbox_make_app):
    seen = {}

    def startup(ctx):
        # the app is fully built: routes mounted, the falcon app answers
        client = falcon.testing.TestClient(ctx.app)
        seen["answer"] = client.simulate_get("/started").json
        seen["routes"] = ctx.routes.by_plugin()["starter"]
        seen["thread"] = threading.current_thread().name
        ctx.stash["starter"] = "ready"

    plugin = inline_plugin("starter", startup=startup,
                           register_routes=lambda ctx: [RouteSpec("/started", Echo)])
    app = pacsbox_make_app({"Name": "StartBox"}, plugins=[plugin])
    assert seen == {"answer": {"Name": "StartBox"}, "routes": ["/started"],
                    "thread": threading.current_thread().name}
    assert app.ctx.stash["starter"] == "ready"

    # a failing startup stops the start-up; plugins already started are shut down
    events = []
    first = inline_plugin("first", startup=(lambda ctx: events.append("first up"), {"tryfirst": True}),
                          shutdown=lambda ctx: events.append("first down"))

    def fail(ctx):
        raise OSError("port in use")
    second = inline_plugin("second", startup=fail, shutdown=lambda ctx: events.append("second down"))
    with pytest.raises(StartupError, match=r"plugin 'second' failed in hook startup: OSError: port in use"):
        pacsbox_make_app(plugins=[first, second])
    assert events == ["first up", "first down"]


def test_hook_shutdown(pacsbox_make_app, caplog):
    seen = []

    def good(ctx):
        # ctx is still usable: the index answers
        seen.append(("good", ctx.index.statistics()["CountInstances"]))

    def bad(ctx):
        seen.append(("bad", None))
        raise RuntimeError("cannot close")

    app = pacsbox_make_app(plugins=[inline_plugin("good", shutdown=good), inline_plugin("bad", shutdown=bad)])
    client = falcon.testing.TestClient(app)
    assert client.simulate_post("/instances", body=ct_bytes()).status_code == 200
    with caplog.at_level(logging.ERROR, logger="pacsbox.plugins"):
        app.close()
    assert sorted(seen) == [("bad", None), ("good", 1)]
    assert any("plugin 'bad' failed in hook shutdown" in r.getMessage() for r in caplog.records)
    app.close()  # once only
    assert len(seen) == 2


# ---------------------------------------------------------------------------------------
# register
# ---------------------------------------------------------------------------------------

def test_hook_register_routes(pacsbox_make_app):
    def fails(req, resp):
        raise ZeroDivisionError("oops")

    def refuses(req, resp):
        raise OrthancError(ErrorCode.BAD_REQUEST, "not like this")

    resources = {"/p/fail": types.SimpleNamespace(on_get=fails), "/p/refuse": types.SimpleNamespace(on_get=refuses)}
    plugin = inline_plugin("p", register_routes=lambda ctx: [
        RouteSpec("/p/hello", Echo), RouteSpec("/p/items/{id}", lambda ctx: Echo(ctx, {"Item": True})),
        *[RouteSpec(path, lambda ctx, r=r: r) for path, r in resources.items()]])
    app = pacsbox_make_app({"Name": "RouteBox"}, plugins=[plugin])
    client = falcon.testing.TestClient(app)
    assert client.simulate_get("/p/hello").json == {"Name": "RouteBox"}
    assert client.simulate_get("/p/items/12").json == {"Item": True}
    assert sorted(app.ctx.routes.by_plugin()["p"]) == ["/p/fail", "/p/hello", "/p/items/{id}", "/p/refuse"]
    r = client.simulate_post("/p/hello")
    assert r.status_code == 405 and r.headers["Allow"] == "GET"
    r = client.simulate_get("/p/fail")
    assert r.status_code == 500 and r.json["OrthancStatus"] == ErrorCode.INTERNAL_ERROR.value
    r = client.simulate_get("/p/refuse")
    assert r.status_code == 400 and r.json["OrthancStatus"] == ErrorCode.BAD_REQUEST.value
    assert r.json["Details"] == "not like this" and r.json["Uri"] == "/p/refuse"

    # plugin routes are behind authentication like the core's
    secured = pacsbox_make_app({"AuthenticationEnabled": True, "RegisteredUsers": {"alice": "pw"}},
                               plugins=[routes_plugin("p", "/p/hello")])
    sclient = falcon.testing.TestClient(secured)
    assert sclient.simulate_get("/p/hello").status_code == 401
    ok = sclient.simulate_get("/p/hello", headers={"Authorization": "Basic YWxpY2U6cHc="})
    assert ok.status_code == 200 and ok.json == {"Name": "pacsbox"}

    # duplicates (same template up to field names) name both plugins; pluggy calls the
    # last registered plugin first, so "q" declared first
    with pytest.raises(StartupError, match=r"^route '/p/items/\{id\}' declared by both plugin 'q' and plugin 'p'$"):
        pacsbox_make_app(plugins=[routes_plugin("p", "/p/items/{id}"), routes_plugin("q", "/p/items/{item}")])
    # a plugin may not take a core route either (the core's defaults are trylast)
    with pytest.raises(StartupError, match=r"^route '/system' declared by both plugin 'thief' and plugin "
                                           r"'pacsbox.rest.core'$"):
        pacsbox_make_app(plugins=[routes_plugin("thief", "/system")])
    # wrong declarations name the plugin
    with pytest.raises(StartupError, match=r"plugin 'sloppy': hook register_routes returned '/x', expected a RouteSpec"):
        pacsbox_make_app(plugins=[inline_plugin("sloppy", register_routes=lambda ctx: ["/x"])])
    with pytest.raises(StartupError, match=r"plugin 'single': hook register_routes must return a list, not RouteSpec"):
        pacsbox_make_app(plugins=[inline_plugin("single", register_routes=lambda ctx: RouteSpec("/x", Echo))])

    def broken(ctx):
        raise KeyError("Missing")
    with pytest.raises(StartupError, match=r"plugin 'broken' failed in hook register_routes: KeyError"):
        pacsbox_make_app(plugins=[inline_plugin("broken", register_routes=broken)])


def test_hook_register_job_types(pacsbox_make_app):
    app = pacsbox_make_app(plugins=[inline_plugin("jobs", register_job_types=lambda ctx: [CountJob])])
    assert app.ctx.job_types.get("PluginsTestCount") is CountJob
    assert app.ctx.job_types.by_plugin()["jobs"] == ["PluginsTestCount"]
    rec = app.ctx.jobs.submit(CountJob(3))
    info = wait_for_job(app, rec.id)
    assert (info["State"], info["Type"], info["Content"]["Done"]) == ("Success", "PluginsTestCount", 3)

    # an unregistered type cannot be submitted
    bare = pacsbox_make_app()
    with pytest.raises(ValueError, match="PluginsTestCount"):
        bare.ctx.jobs.submit(CountJob())

    class Twin(CountJob):
        pass

    with pytest.raises(StartupError, match=r"^job type 'PluginsTestCount' registered by both plugin 'b' and plugin 'a'$"):
        pacsbox_make_app(plugins=[inline_plugin("a", register_job_types=lambda ctx: [CountJob]),
                                  inline_plugin("b", register_job_types=lambda ctx: [Twin])])

    class Nameless(Job):
        pass

    with pytest.raises(StartupError, match=r"plugin 'c': job class Nameless has no type_name"):
        pacsbox_make_app(plugins=[inline_plugin("c", register_job_types=lambda ctx: [Nameless])])
    with pytest.raises(StartupError, match=r"plugin 'd': hook register_job_types returned .*expected a subclass of Job"):
        pacsbox_make_app(plugins=[inline_plugin("d", register_job_types=lambda ctx: [CountJob()])])


def test_hook_register_metrics(pacsbox_make_app):
    plugin = inline_plugin("m", register_metrics=lambda ctx: [MetricSpec("plugtest_hits", "counter", "Hits")])
    same = inline_plugin("m2", register_metrics=lambda ctx: [MetricSpec("plugtest_hits", "counter", "Hits again")])
    app = pacsbox_make_app(plugins=[plugin, same])
    spec = {s.name: s for s in app.ctx.metrics.specs()}["plugtest_hits"]
    assert (spec.kind, spec.plugin) in {("counter", "m"), ("counter", "m2")}
    app.ctx.metrics.increment("plugtest_hits")
    app.ctx.metrics.increment("plugtest_hits", 2)
    assert app.ctx.metrics.value("plugtest_hits") == 3

    other = inline_plugin("g", register_metrics=lambda ctx: [MetricSpec("plugtest_hits", "gauge")])
    with pytest.raises(StartupError, match=r"metric 'plugtest_hits' declared as counter\S* by plugin 'm' "
                                           r"and as gauge\S* by plugin 'g'"):
        pacsbox_make_app(plugins=[other, plugin])  # "m" is registered last, so called first
    with pytest.raises(StartupError, match=r"plugin 'n': hook register_metrics returned 'plugtest_x'"):
        pacsbox_make_app(plugins=[inline_plugin("n", register_metrics=lambda ctx: ["plugtest_x"])])


# ---------------------------------------------------------------------------------------
# provide
# ---------------------------------------------------------------------------------------

class MemoryArea:
    """A storage area in a dict."""

    def __init__(self):
        self.blobs: dict[tuple[str, int], bytes] = {}

    def create(self, uuid, data, content_type):
        self.blobs[(uuid, content_type)] = bytes(data)

    def read(self, uuid, content_type):
        try:
            return self.blobs[(uuid, content_type)]
        except KeyError:
            raise FileNotFoundError(uuid) from None

    def open(self, uuid, content_type):
        import io
        return io.BytesIO(self.read(uuid, content_type))

    def remove(self, uuid, content_type):
        self.blobs.pop((uuid, content_type), None)


def test_hook_get_storage_area(pacsbox_make_app, tmp_path):
    area = MemoryArea()
    storage_dir = tmp_path / "unused"
    app = pacsbox_make_app({"StorageDirectory": str(storage_dir)},
                           plugins=[inline_plugin("memory", get_storage_area=lambda config: area)])
    assert app.ctx.storage is area
    client = falcon.testing.TestClient(app)
    data = ct_bytes()
    ans = client.simulate_post("/instances", body=data).json
    assert ans["Status"] == "Success"
    assert list(area.blobs.values()) == [data]
    assert client.simulate_get(f"/instances/{ans['ID']}/file").content == data
    # nothing went to the filesystem default (only the index lives there)
    assert not [f for f in files_under(storage_dir) if not f.startswith("index")]

    # None defers to the next implementation: the filesystem default
    default = pacsbox_make_app(plugins=[inline_plugin("undecided", get_storage_area=lambda config: None)])
    assert type(default.ctx.storage).__name__ == "FilesystemStorageArea"

    # a wrapper sees (and may wrap) the area chosen by the others
    wrapped = []

    def wrapper(config):
        area = yield
        wrapped.append(area)
        return area
    app3 = pacsbox_make_app(plugins=[inline_plugin("wrap", get_storage_area=(wrapper, {"wrapper": True}))])
    assert wrapped == [app3.ctx.storage] and type(wrapped[0]).__name__ == "FilesystemStorageArea"

    def broken(config):
        raise PermissionError("bucket denied")
    with pytest.raises(StartupError, match=r"plugin 'cloud' failed in hook get_storage_area: PermissionError: bucket"):
        pacsbox_make_app(plugins=[inline_plugin("cloud", get_storage_area=broken)])


# ---------------------------------------------------------------------------------------
# filter
# ---------------------------------------------------------------------------------------

def test_hook_filter_incoming_http_request(pacsbox_make_app, caplog):
    seen = []

    def record(method, uri, ip, username, headers):
        seen.append((method, uri, ip, username, headers.get("x-probe")))
        return None if uri != "/statistics" else False

    app = pacsbox_make_app({"AuthenticationEnabled": True, "RegisteredUsers": {"alice": "pw"}},
                           plugins=[inline_plugin("recorder", filter_incoming_http_request=record),
                                    routes_plugin("routes", "/p/hello")])
    client = falcon.testing.TestClient(app)
    auth = {"Authorization": "Basic YWxpY2U6cHc=", "X-Probe": "1"}
    assert client.simulate_get("/system", headers=auth).status_code == 200
    r = client.simulate_get("/statistics", headers=auth)
    assert r.status_code == 403 and r.content == b""
    assert client.simulate_get("/p/hello", headers=auth).status_code == 200
    assert seen == [("GET", "/system", "127.0.0.1", "alice", "1"), ("GET", "/statistics", "127.0.0.1", "alice", "1"),
                    ("GET", "/p/hello", "127.0.0.1", "alice", "1")]
    # unauthenticated requests are refused before the filters run
    assert client.simulate_get("/system").status_code == 401
    assert len(seen) == 3

    # a raising filter fails closed, is logged with its name, and the others still run
    def broken(uri):
        raise RuntimeError("filter bug")
    others = []
    app2 = pacsbox_make_app(plugins=[inline_plugin("broken", filter_incoming_http_request=broken),
                                     inline_plugin("other", filter_incoming_http_request=lambda uri: others.append(uri))])
    with caplog.at_level(logging.ERROR, logger="pacsbox.plugins"):
        r = falcon.testing.TestClient(app2).simulate_get("/system")
    assert r.status_code == 403 and r.content == b""
    assert others == ["/system"]
    assert any("plugin 'broken' failed in hook filter_incoming_http_request" in rec.getMessage()
               for rec in caplog.records)


def test_hook_filter_received_instance(pacsbox_make_app, tmp_path, caplog):
    seen = []

    def refuse_ct(dataset, origin):
        seen.append((dataset.SOPInstanceUID, dataset.Modality, origin["Origin"], threading.current_thread().name))
        return dataset.Modality != "CT"

    storage_dir = tmp_path / "filtered"
    app = pacsbox_make_app({"StorageDirectory": str(storage_dir)},
                           plugins=[inline_plugin("ct-filter", filter_received_instance=refuse_ct)])
    client = falcon.testing.TestClient(app)
    r = client.simulate_post("/instances", body=ct_bytes())
    assert r.status_code == 200 and r.json["Status"] == "FilteredOut"
    assert seen == [(CT_SOP_UID, "CT", "RestApi", threading.current_thread().name)]
    assert client.simulate_get("/instances").json == []
    assert [f for f in files_under(storage_dir) if not f.startswith("index")] == []
    # another modality passes the same filter
    with open(_testfile("MR_small.dcm"), "rb") as f:
        assert client.simulate_post("/instances", body=f.read()).json["Status"] == "Success"
    assert len(client.simulate_get("/instances").json) == 1

    # a raising filter refuses (fail closed) and is logged with the plugin's name
    def broken(dataset):
        raise ValueError("cannot decide")
    app2 = pacsbox_make_app(plugins=[inline_plugin("undecided", filter_received_instance=broken)])
    client2 = falcon.testing.TestClient(app2)
    with caplog.at_level(logging.ERROR, logger="pacsbox.plugins"):
        assert client2.simulate_post("/instances", body=ct_bytes()).json["Status"] == "FilteredOut"
    assert client2.simulate_get("/instances").json == []
    assert any("plugin 'undecided' failed in hook filter_received_instance" in rec.getMessage()
               for rec in caplog.records)


# ---------------------------------------------------------------------------------------
# notify
# ---------------------------------------------------------------------------------------

def test_hook_instance_stored(pacsbox_make_app, caplog):
    release = threading.Event()
    seen = []

    def slow(ctx, instance_id, dataset):
        release.wait(60)
        seen.append((instance_id, dataset.SOPInstanceUID, threading.current_thread().name, ctx is app.ctx))

    def broken(instance_id):
        raise RuntimeError("listener bug")

    app = pacsbox_make_app(plugins=[inline_plugin("slow", instance_stored=slow),
                                    inline_plugin("broken", instance_stored=broken)])
    client = falcon.testing.TestClient(app)
    ans = client.simulate_post("/instances", body=ct_bytes()).json
    # the upload answered while the listener is still blocked (until released, or 60 s):
    # off the request path, whatever the time the upload took
    assert ans["Status"] == "Success" and seen == []
    release.set()
    with caplog.at_level(logging.ERROR, logger="pacsbox.plugins"):
        assert wait_for_notifications(app)
        # AlreadyStored is not announced
        assert client.simulate_post("/instances", body=ct_bytes()).json["Status"] == "AlreadyStored"
        assert wait_for_notifications(app)
    assert seen == [(ans["ID"], CT_SOP_UID, "pacsbox-notify", True)]
    assert sum("plugin 'broken' failed in hook instance_stored" in r.getMessage() for r in caplog.records) == 1


def test_hook_change_recorded(pacsbox_make_app):
    seen = []

    def record(ctx, change):
        seen.append((dict(change), threading.current_thread().name))

    def broken(change):
        raise RuntimeError("listener bug")

    app = pacsbox_make_app(plugins=[inline_plugin("broken", change_recorded=broken),
                                    inline_plugin("recorder", change_recorded=record)])
    client = falcon.testing.TestClient(app)
    ans = client.simulate_post("/instances", body=ct_bytes()).json
    assert wait_for_notifications(app)
    changes = client.simulate_get("/changes").json["Changes"]
    assert [c for c, _ in seen] == changes
    assert {t for _, t in seen} == {"pacsbox-notify"}
    by_type = {c["ChangeType"]: c for c, _ in seen}
    assert by_type["NewInstance"]["ID"] == ans["ID"]
    assert by_type["NewPatient"]["ID"] == ans["ParentPatient"]
    assert [c["Seq"] for c, _ in seen] == sorted(c["Seq"] for c, _ in seen)


def test_hook_resources_deleted(pacsbox_make_app):
    """A deletion is notified once, with every resource it removed: deleting the only
    series of a study removes the instance below and the study and patient above."""
    seen = []
    app = pacsbox_make_app(plugins=[inline_plugin("recorder", resources_deleted=lambda ctx, resources: seen.append(
        (list(resources), threading.current_thread().name)))])
    client = falcon.testing.TestClient(app)
    ans = client.simulate_post("/instances", body=ct_bytes()).json
    series = client.simulate_get(f"/instances/{ans['ID']}").json["ParentSeries"]
    assert wait_for_notifications(app) and seen == []  # nothing deleted yet
    assert client.simulate_delete(f"/series/{series}").json["RemainingAncestor"] is None
    assert wait_for_notifications(app)
    assert seen == [([{"ResourceType": "Series", "ID": series}, {"ResourceType": "Instance", "ID": ans["ID"]},
                      {"ResourceType": "Study", "ID": ans["ParentStudy"]},
                      {"ResourceType": "Patient", "ID": ans["ParentPatient"]}], "pacsbox-notify")]
    # a delete of what is already gone notifies nothing
    assert client.simulate_delete(f"/series/{series}").status_code == 404
    assert wait_for_notifications(app) and len(seen) == 1


def test_hook_job_state_changed(pacsbox_make_app):
    seen = []

    def record(ctx, job_info):
        seen.append((job_info.id, job_info.type, job_info.previous_state, job_info.state, job_info.progress,
                     job_info.error_code, threading.current_thread().name))

    def broken(job_info):
        raise RuntimeError("listener bug")

    app = pacsbox_make_app(plugins=[inline_plugin("jobs", register_job_types=lambda ctx: [CountJob]),
                                    inline_plugin("broken", job_state_changed=broken),
                                    inline_plugin("recorder", job_state_changed=record)])
    rec = app.ctx.jobs.submit(CountJob(2), priority=5)
    assert wait_for_job(app, rec.id)["State"] == "Success"
    assert wait_for_notifications(app)
    assert [(s[2], s[3]) for s in seen] == [(None, "Pending"), ("Pending", "Running"), ("Running", "Success")]
    assert {(s[0], s[1], s[6]) for s in seen} == {(rec.id, "PluginsTestCount", "pacsbox-notify")}
    assert (seen[-1][4], seen[-1][5]) == (100, 0)


# ---------------------------------------------------------------------------------------
# discovery, blocklist, validation
# ---------------------------------------------------------------------------------------

FIRST_PARTY = {"archive": "pacsbox_archive.plugin", "dicom_net": "pacsbox_dicom_net.plugin",
               "pdf": "pacsbox_pdf.plugin", "metrics": "pacsbox_metrics.plugin"}


def test_entry_points_are_loaded_with_their_distribution(pacsbox_make_app, monkeypatch):
    monkeypatch.delenv("PACSBOX_DISABLE_PLUGINS", raising=False)
    app = pacsbox_make_app(load_entrypoints=True)
    info = app.ctx.pm.dist_info
    for name, module in FIRST_PARTY.items():
        assert (info[name].distribution, info[name].version, info[name].module) == ("pacsbox", pacsbox.__version__,
                                                                                     module)
        assert app.ctx.pm.get_plugin(name).__name__ == module
    assert pacsbox.__version__ == metadata.version("pacsbox")
    # without entry points only the core's default plugins are there
    bare = pacsbox_make_app()
    assert bare.ctx.pm.dist_info == {}
    assert {n for n, _ in bare.ctx.pm.list_name_plugin()} >= {"pacsbox.rest.core", "pacsbox.storage.filesystem"}
    assert not set(FIRST_PARTY) & {n for n, _ in bare.ctx.pm.list_name_plugin()}


def test_blocklist_from_config_and_environment(pacsbox_make_app, monkeypatch):
    monkeypatch.setenv("PACSBOX_DISABLE_PLUGINS", " archive , ")
    app = pacsbox_make_app({"PluginsBlocklist": ["pdf"]}, load_entrypoints=True)
    ids = falcon.testing.TestClient(app).simulate_get("/plugins").json
    assert "archive" not in ids and "pdf" not in ids
    assert {"dicom_net", "metrics"} <= set(ids)
    assert app.ctx.pm.blocked_names == {"archive", "pdf"}
    # the blocklist also applies to default plugins and explicit ones
    monkeypatch.delenv("PACSBOX_DISABLE_PLUGINS")
    app2 = pacsbox_make_app({"PluginsBlocklist": "pacsbox.rest.plugins,hello"}, plugins=[routes_plugin("hello", "/h")])
    client = falcon.testing.TestClient(app2)
    assert client.simulate_get("/plugins").status_code == 404
    assert client.simulate_get("/h").status_code == 404
    assert client.simulate_get("/system").status_code == 200
    with pytest.raises(StartupError, match="PluginsBlocklist"):
        pacsbox_make_app({"PluginsBlocklist": {"pdf": True}})


def write_distribution(root, name: str, version: str, entry_points: dict[str, str], modules: dict[str, str]):
    """A real installed distribution under ``root``: ``*.dist-info`` and module files
    (``modules`` maps a path relative to ``root`` to its source)."""
    norm = name.replace("-", "_")
    info = root / f"{norm}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text("[pacsbox.plugins]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))
    for mod, src in modules.items():
        path = root / mod
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(src)


def test_broken_entry_point_names_its_distribution(pacsbox_make_app, tmp_path, monkeypatch):
    monkeypatch.delenv("PACSBOX_DISABLE_PLUGINS", raising=False)
    write_distribution(tmp_path / "site", "pacsbox-broken-plugin", "0.9", {"broken": "pacsbox_broken_test.plugin"},
                       {"pacsbox_broken_test/__init__.py": "", "pacsbox_broken_test/plugin.py":
                        "import pacsbox_missing_dependency_xyz\n"})
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    with pytest.raises(PluginLoadError) as e:
        pacsbox_make_app(load_entrypoints=True)
    assert str(e.value) == ("cannot load plugin 'broken' (pacsbox_broken_test.plugin) of distribution "
                            "'pacsbox-broken-plugin' 0.9: ModuleNotFoundError: No module named "
                            "'pacsbox_missing_dependency_xyz'")
    assert isinstance(e.value, StartupError)
    # blocking it lets the server start
    monkeypatch.setenv("PACSBOX_DISABLE_PLUGINS", "broken")
    app = pacsbox_make_app(load_entrypoints=True)
    assert "broken" not in app.ctx.pm.dist_info and "archive" in app.ctx.pm.dist_info


def test_two_distributions_with_one_plugin_name(pacsbox_make_app, tmp_path, monkeypatch):
    monkeypatch.delenv("PACSBOX_DISABLE_PLUGINS", raising=False)
    write_distribution(tmp_path / "site", "pacsbox-pdf-clone", "2.0", {"pdf": "pacsbox_pdf_clone_test"},
                       {"pacsbox_pdf_clone_test.py": '"""A clone."""\n'})
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    with pytest.raises(PluginLoadError, match=r"plugin name 'pdf' is advertised by both distribution '(pacsbox|"
                                              r"pacsbox-pdf-clone)' .* and distribution '(pacsbox-pdf-clone|pacsbox)'"):
        pacsbox_make_app(load_entrypoints=True)


def test_unknown_hook_is_refused_unless_optional(pacsbox_make_app):
    with pytest.raises(pluggy.PluginValidationError, match=r"unknown hook 'no_such_hook' in plugin .*typo"):
        pacsbox_make_app(plugins=[inline_plugin("typo", no_such_hook=lambda: None)])
    app = pacsbox_make_app(plugins=[inline_plugin("optional", no_such_hook=(lambda: None, {"optionalhook": True}))])
    assert app.ctx.pm.get_plugin("optional") is not None
    # an argument the spec does not have
    with pytest.raises(pluggy.PluginValidationError, match=r"Plugin 'bad-args' for hook 'register_routes'"):
        pacsbox_make_app(plugins=[inline_plugin("bad-args", register_routes=lambda ctx, extra: [])])


def test_wrappers_refused_where_the_core_calls_implementations_one_by_one(pacsbox_make_app):
    def wrap(ctx):
        return (yield)
    with pytest.raises(StartupError, match=r"plugin 'wrapper': hook register_routes does not accept wrapper"):
        pacsbox_make_app(plugins=[inline_plugin("wrapper", register_routes=(wrap, {"wrapper": True}))])


def test_two_apps_do_not_share_state(pacsbox_make_app):
    one = pacsbox_make_app({"Name": "One"}, plugins=[routes_plugin("only-one", "/only"),
                                                      inline_plugin("jobs", register_job_types=lambda ctx: [CountJob])])
    two = pacsbox_make_app({"Name": "Two"})
    c1, c2 = falcon.testing.TestClient(one), falcon.testing.TestClient(two)
    assert c1.simulate_get("/only").json == {"Name": "One"}
    assert c2.simulate_get("/only").status_code == 404
    assert one.ctx.pm is not two.ctx.pm and one.ctx.pm.get_plugin("only-one") is not None
    assert two.ctx.pm.get_plugin("only-one") is None
    assert two.ctx.job_types.get("PluginsTestCount") is None
    one.ctx.metrics.declare(MetricSpec("plugtest_per_app", "counter", "Per app"))
    one.ctx.metrics.increment("plugtest_per_app")
    assert (one.ctx.metrics.value("plugtest_per_app"), two.ctx.metrics.value("plugtest_per_app")) == (1, None)
    assert c1.simulate_post("/instances", body=ct_bytes()).json["Status"] == "Success"
    assert (len(c1.simulate_get("/instances").json), c2.simulate_get("/instances").json) == (1, [])
    assert one.ctx.notifier is not two.ctx.notifier


def test_trace_switch_logs_hook_calls(pacsbox_make_app, monkeypatch, caplog):
    monkeypatch.setenv("PACSBOX_TRACE_PLUGINS", "1")
    with caplog.at_level(logging.WARNING, logger="pacsbox.plugins.trace"):
        pacsbox_make_app(plugins=[routes_plugin("traced", "/t")])
    messages = [r.getMessage() for r in caplog.records if r.name == "pacsbox.plugins.trace"]
    assert "hook register_routes -> plugin 'traced'" in messages
    assert any(m.startswith("hook get_storage_area -> plugins [") for m in messages)
    monkeypatch.delenv("PACSBOX_TRACE_PLUGINS")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pacsbox.plugins.trace"):
        pacsbox_make_app(plugins=[routes_plugin("quiet", "/q")])
    assert [r for r in caplog.records if r.name == "pacsbox.plugins.trace"] == []


# ---------------------------------------------------------------------------------------
# GET /plugins (Orthanc 1.10.1 shape)
# ---------------------------------------------------------------------------------------

def test_plugins_routes_as_orthanc(pacsbox_make_app, monkeypatch):
    monkeypatch.delenv("PACSBOX_DISABLE_PLUGINS", raising=False)
    # no plugin loaded: the reference answers ["explorer.js"]
    bare = falcon.testing.TestClient(pacsbox_make_app())
    assert bare.simulate_get("/plugins").json == ["explorer.js"]
    assert bare.simulate_get("/plugins/archive").status_code == 404

    app = pacsbox_make_app(load_entrypoints=True)
    client = falcon.testing.TestClient(app)
    installed = sorted(ep.name for ep in metadata.entry_points(group="pacsbox.plugins"))
    assert client.simulate_get("/plugins").json == ["explorer.js"] + installed
    archive = client.simulate_get("/plugins/archive").json
    assert {k: archive[k] for k in ("ID", "Version", "Description", "ExtendsOrthancExplorer", "Distribution",
                                    "Module")} == {
        "ID": "archive", "Version": pacsbox.__version__,
        "Description": __import__("pacsbox_archive").__doc__.strip().splitlines()[0],
        "ExtendsOrthancExplorer": False, "Distribution": "pacsbox", "Module": "pacsbox_archive.plugin"}
    r = client.simulate_get("/plugins/no-such-plugin")
    assert r.status_code == 404 and r.content == b""
    js = client.simulate_get("/plugins/explorer.js")
    assert js.headers["Content-Type"] == "application/javascript"
    assert js.text == "// Extensions to Orthanc Explorer by the registered plugins\n\n"
    r = client.simulate_post("/plugins")
    assert r.status_code == 405 and r.headers["Allow"] == "GET"
    r = client.simulate_delete("/plugins/archive")
    assert r.status_code == 405 and r.headers["Allow"] == "GET"
