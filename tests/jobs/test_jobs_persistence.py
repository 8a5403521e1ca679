"""Persistence of the jobs registry (``SaveJobs``, reference section 3.7): saved shortly
after every submission and state change, while running and at shutdown; reloaded at
start-up with the same IDs; ``load_jobs=False`` (``--no-jobs``) skips the reload."""
from __future__ import annotations

import json

import falcon.testing

from pacsbox.jobs.engine import REGISTRY_PROPERTY, JobsEngine
from jobtypes import BlockerJob, jobs_app, RestartingStepsJob, StepsJob, wait_until  # noqa: F401 (fixtures)


def _saved(app):
    raw = app.ctx.index.get_global(REGISTRY_PROPERTY)
    return json.loads(raw) if raw else None


def _saved_state(app, job_id):
    data = _saved(app)
    entry = (data or {}).get("Jobs", {}).get(job_id)
    return entry["State"] if entry else None


def test_saved_shortly_after_submission_and_state_change(jobs_app, tmp_path, monkeypatch):
    """A submission and a state change are saved by themselves (within SAVE_DELAY), not
    by the periodic save: with that period made longer than the test, only the change
    can trigger the saves awaited here (how long they take depends on the machine)."""
    assert JobsEngine.SAVE_DELAY <= 0.1
    monkeypatch.setattr(JobsEngine, "SAVE_PERIOD", 3600.0)
    app = jobs_app({"StorageDirectory": str(tmp_path / "s")})
    jobs = app.ctx.jobs
    blocker = jobs.submit(BlockerJob())
    wait_until(lambda: blocker.state.value == "Running")
    rec = jobs.submit(StepsJob(2, label="saved"), priority=3)
    wait_until(lambda: _saved_state(app, rec.id) == "Pending", interval=0.002)
    entry = _saved(app)["Jobs"][rec.id]
    assert entry["Priority"] == 3 and entry["Job"]["Type"] == "TestSteps" and entry["Job"]["Label"] == "saved"
    jobs.pause(rec.id)
    wait_until(lambda: _saved_state(app, rec.id) == "Paused", interval=0.002)
    jobs.cancel(blocker.id)
    wait_until(lambda: _saved_state(app, blocker.id) == "Failure")
    assert _saved(app)["Jobs"][blocker.id]["ErrorCode"] == 37


def test_progress_of_a_running_job_is_captured(jobs_app, tmp_path):
    """Without any state change, the saved registry follows a running job (at most
    PROGRESS_SAVE_PERIOD late), so that a crash loses little work."""
    app = jobs_app({"StorageDirectory": str(tmp_path / "s")})
    # 2000 steps of 10 ms or more: still running after any wait below (the shutdown
    # interrupts it)
    rec = app.ctx.jobs.submit(StepsJob(2000, delay=0.01))
    wait_until(lambda: rec.job.done >= 20 and rec.id in ((_saved(app) or {}).get("Jobs") or {}))
    first = _saved(app)["Jobs"][rec.id]
    wait_until(lambda: _saved(app)["Jobs"][rec.id]["Job"]["Done"] > first["Job"]["Done"] + 10)
    entry = _saved(app)["Jobs"][rec.id]
    assert entry["State"] == "Running"
    assert entry["Progress"] >= int(100 * entry["Job"]["Done"] / 2000 + 0.5)
    assert 0 < entry["Job"]["Done"] <= rec.job.done


def test_restart_brings_every_job_back(jobs_app, tmp_path):
    cfg = {"StorageDirectory": str(tmp_path / "s"), "ConcurrentJobs": 1}
    app1 = jobs_app(cfg)
    jobs = app1.ctx.jobs
    ok = jobs.submit(StepsJob(2, label="ok"))
    bad = jobs.submit(StepsJob(2, fail_at=1, error="orthanc", label="bad"))
    wait_until(lambda: ok.state.value == "Success" and bad.state.value == "Failure")
    running = jobs.submit(StepsJob(200, delay=0.01, label="running"))
    wait_until(lambda: running.job.done >= 10)
    pending = jobs.submit(StepsJob(3, label="pending"), priority=5)
    paused = jobs.submit(StepsJob(3, label="paused"), priority=9)
    jobs.pause(paused.id)
    before = {r.id: falcon.testing.TestClient(app1).simulate_get(f"/jobs/{r.id}").json
              for r in (ok, bad, running, pending, paused)}
    app1.close()
    done_at_stop = running.job.done
    assert running.state.value == "Running" and 10 <= done_at_stop < 200

    app2 = jobs_app(cfg)
    client = falcon.testing.TestClient(app2)
    assert sorted(client.simulate_get("/jobs").json) == sorted(before)
    now = {i: client.simulate_get(f"/jobs/{i}").json for i in before}
    assert now[ok.id]["State"] == "Success"
    assert now[bad.id]["State"] == "Failure"
    assert (now[bad.id]["ErrorCode"], now[bad.id]["ErrorDetails"]) == (9, "peer refused")
    assert now[paused.id]["State"] == "Paused"
    for i, d in now.items():
        for k in ("ID", "Type", "Priority", "CreationTime"):
            assert d[k] == before[i][k]
        if i in (ok.id, bad.id):
            assert d["CompletionTime"] == before[i]["CompletionTime"]
            assert d["EffectiveRuntime"] == before[i]["EffectiveRuntime"]
            assert d["Content"] == before[i]["Content"]
    jobs2 = app2.ctx.jobs
    r2, p2 = jobs2.get(running.id), jobs2.get(pending.id)
    wait_until(lambda: r2.state.value == "Success" and p2.state.value == "Success")
    # resumed where it stopped: the steps done before the shutdown are not run again
    assert r2.job.executed == list(range(done_at_stop, 200))
    assert p2.job.executed == [0, 1, 2]
    # Pending/Running jobs requeued by priority: pending (5) before running (0)
    assert app2.ctx.stash["test-order"] == ["pending", "running"]
    assert r2.runtime >= before[running.id]["EffectiveRuntime"] - 0.002
    assert jobs2.get(paused.id).state.value == "Paused"
    assert jobs2.resume(paused.id)
    wait_until(lambda: jobs2.get(paused.id).state.value == "Success")


def test_non_resumable_type_restarts_from_its_first_step(jobs_app, tmp_path):
    cfg = {"StorageDirectory": str(tmp_path / "s")}
    app1 = jobs_app(cfg)
    rec = app1.ctx.jobs.submit(RestartingStepsJob(100, delay=0.01))
    wait_until(lambda: rec.job.done >= 5)
    app1.close()
    app2 = jobs_app(cfg)
    r2 = app2.ctx.jobs.get(rec.id)
    wait_until(lambda: r2.state.value == "Success")
    assert r2.job.executed == list(range(100))


def test_no_jobs_skips_the_reload_and_next_save_overwrites(jobs_app, tmp_path):
    cfg = {"StorageDirectory": str(tmp_path / "s")}
    app1 = jobs_app(cfg)
    rec = app1.ctx.jobs.submit(BlockerJob())
    app1.ctx.jobs.pause(rec.id)
    app1.close()
    assert _saved(app1)["Jobs"][rec.id]["State"] == "Paused"
    app2 = jobs_app(cfg, load_jobs=False)
    assert falcon.testing.TestClient(app2).simulate_get("/jobs").json == []
    app2.close()
    assert _saved(app2)["Jobs"] == {}
    app3 = jobs_app(cfg)
    assert app3.ctx.jobs.ids() == []


def test_save_jobs_false(jobs_app, tmp_path):
    cfg = {"StorageDirectory": str(tmp_path / "s"), "SaveJobs": False}
    app1 = jobs_app(cfg)
    rec = app1.ctx.jobs.submit(StepsJob(1))
    wait_until(lambda: rec.state.value == "Success")
    app1.close()
    assert _saved(app1) is None
    app2 = jobs_app({**cfg, "SaveJobs": True})
    assert app2.ctx.jobs.ids() == []


def test_unreadable_entries_are_skipped_and_history_trimmed(jobs_app, tmp_path):
    cfg = {"StorageDirectory": str(tmp_path / "s")}
    app1 = jobs_app(cfg)
    recs = []
    for i in range(4):
        r = app1.ctx.jobs.submit(StepsJob(1, label=str(i)))
        wait_until(lambda: r.state.value == "Success")
        recs.append(r)
    app1.close()
    data = _saved(app1)
    assert data["History"] == [r.id for r in recs]
    good = data["Jobs"][recs[0].id]
    data["Jobs"]["11111111-1111-1111-1111-111111111111"] = {**good, "Job": {"Type": "NoSuchType"}}
    data["Jobs"]["22222222-2222-2222-2222-222222222222"] = {"State": "Pending"}
    app2 = jobs_app({**cfg, "SaveJobs": False})    # does not overwrite at shutdown
    app2.ctx.index.set_global(REGISTRY_PROPERTY, json.dumps(data))
    app2.close()
    app3 = jobs_app({**cfg, "JobsHistorySize": 2})
    assert sorted(app3.ctx.jobs.ids()) == sorted(r.id for r in recs[2:])


def test_the_saved_registry_is_json_written_by_json(jobs_app, tmp_path):
    """The registry is built with ``json`` (it was spliced together by hand): a label with
    quotes, backslashes and non-ASCII text comes back as it was, and a finished job's
    EffectiveRuntime is the same after a reload (saved rounded, not truncated)."""
    cfg = {"StorageDirectory": str(tmp_path / "s")}
    app1 = jobs_app(cfg)
    label = 'quote " backslash \\ brace } é 中'
    rec = app1.ctx.jobs.submit(StepsJob(1, label=label))
    wait_until(lambda: rec.state.value == "Success")
    rec.runtime = 1.2346  # ms 1234.6: saved as 1235, EffectiveRuntime 1.235 both times
    before = falcon.testing.TestClient(app1).simulate_get(f"/jobs/{rec.id}").json
    app1.close()
    app2 = jobs_app(cfg)
    data = _saved(app2)
    assert data["Type"] == "JobsRegistry" and data["History"] == [rec.id]
    assert data["Jobs"][rec.id]["Job"]["Label"] == label and data["Jobs"][rec.id]["Runtime"] == 1235
    after = falcon.testing.TestClient(app2).simulate_get(f"/jobs/{rec.id}").json
    assert after["EffectiveRuntime"] == before["EffectiveRuntime"] == 1.235
    assert app2.ctx.jobs.get(rec.id).job.label == label
