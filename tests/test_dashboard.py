"""A stored job is a plain optuna study that optuna-dashboard can show.

The read side here uses only optuna (``optuna.load_study``) and optuna-dashboard's own WSGI app
(``optuna_dashboard.wsgi``, called in-process without a browser or a socket) -- no hwnas code --
and compares what they see with what hwnas says about the job: trial count, directions, objective
names (the dashboard's axis labels), every trial's values and params, and the Pareto front.

Dashboard routes used (optuna-dashboard 0.21): ``GET /api/studies`` (the study list) and
``GET /api/studies/<study_id>?after=0`` (one study: its trials, best_trials = the Pareto front,
objective_names, union_user_attrs).
"""
from __future__ import annotations

import io
import json
import math
from typing import Any
from wsgiref.util import setup_testing_defaults

import numpy as np
import optuna
import pytest
from optuna.study import StudyDirection
from optuna.trial import TrialState

from hwnas.job.checks import load_job_config as load_config
from hwnas.job.handle import Job
from hwnas.search.objectives import objective_column
from hwnas.job.store import JobStore
from hwnas.spaces.registry import build_space
from tests.conftest import TINY

DASHBOARD_MISSING = "optuna-dashboard is not installed (pip install optuna-dashboard, or the dev extra)"


def _dashboard_app(url: str):
    try:
        import optuna_dashboard
    except ImportError:
        pytest.skip(DASHBOARD_MISSING)
    return optuna_dashboard.wsgi(url)


def _get(app, path: str, query: str = "") -> tuple[int, Any]:
    """One GET through the dashboard's WSGI app, as its browser front end would make it."""
    environ: dict[str, Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query,
                               "wsgi.input": io.BytesIO(b"")}
    setup_testing_defaults(environ)
    status: list[str] = []
    body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
    code = int(status[0].split()[0])
    assert code == 200, f"GET {path}?{query} -> {status[0]}: {body[:300]!r}"
    return code, json.loads(body)


def _expected_directions(objectives: list[str]) -> list[StudyDirection]:
    return [StudyDirection.MAXIMIZE if o == "accuracy" else StudyDirection.MINIMIZE for o in objectives]


def _dominates(a: list[float], b: list[float], directions: list[StudyDirection]) -> bool:
    """Whether a dominates b: no worse in every objective, better in one."""
    sign = [-1.0 if d == StudyDirection.MAXIMIZE else 1.0 for d in directions]
    la, lb = [s * v for s, v in zip(sign, a)], [s * v for s, v in zip(sign, b)]
    return all(x <= y for x, y in zip(la, lb)) and any(x < y for x, y in zip(la, lb))


def _check_study(url: str, job: Job) -> optuna.Study:
    """Read the job back through plain optuna and compare it with hwnas's view of it."""
    objectives = job.objectives
    candidates = job.candidates().set_index("id")
    front_ids = set(job.front()["id"].astype(int))

    study = optuna.load_study(study_name=job.name, storage=url)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == len(candidates) > 0
    assert len(study.trials) == len(trials), "every stored trial is a COMPLETE evaluated candidate"
    assert study.directions == _expected_directions(objectives)
    assert study.metric_names == [objective_column(o) for o in objectives]

    for t in trials:
        row = candidates.loc[t.number]
        assert t.values == [float(row[objective_column(o)]) for o in objectives]
        assert t.params == json.loads(row["arch"])
        # The values are the same numbers as the user attributes named by the metric names.
        assert t.values == [t.user_attrs[name] for name in study.metric_names]

    # optuna's own Pareto front (study.best_trials) is hwnas's unbudgeted front: both take it over
    # the same measured numbers (the trial values), with accuracy maximised and costs minimised.
    optuna_front = {t.number for t in study.best_trials}
    assert optuna_front == front_ids
    assert 0 < len(optuna_front) <= len(trials)
    values = {t.number: t.values for t in trials}
    for n, v in values.items():  # and it is a front: the rest are dominated, the front is not
        dominated = any(_dominates(values[f], v, study.directions) for f in optuna_front)
        assert dominated == (n not in optuna_front), (n, v)
    return study


def _check_dashboard(url: str, job: Job, study: optuna.Study) -> dict[str, Any]:
    app = _dashboard_app(url)
    _, listing = _get(app, "/api/studies")
    summaries = [s for s in listing["study_summaries"] if s["study_name"] == job.name]
    assert len(summaries) == 1
    summary = summaries[0]
    assert summary["directions"] == [d.name.lower() for d in _expected_directions(job.objectives)]
    objectives_attr = next(a["value"] for a in summary["user_attrs"] if a["key"] == "objectives")
    assert json.loads(objectives_attr) == job.objectives

    _, detail = _get(app, f"/api/studies/{summary['study_id']}", "after=0")
    assert detail["name"] == job.name
    assert detail["directions"] == summary["directions"]
    assert detail.get("objective_names") == [objective_column(o) for o in job.objectives], "axis labels"

    trials = {t.number: t for t in study.trials}
    assert sorted(t["number"] for t in detail["trials"]) == sorted(trials)
    for shown in detail["trials"]:
        stored = trials[shown["number"]]
        assert shown["state"] == "Complete"
        assert shown["values"] == stored.values
        assert {p["name"]: p["param_external_value"] for p in shown["params"]} == \
            {k: str(v) for k, v in stored.params.items()}
        attrs = {a["key"]: a["value"] for a in shown["user_attrs"]}
        assert attrs["arch"] == stored.user_attrs["arch"]
        for name, value in zip(detail["objective_names"], stored.values):
            assert math.isclose(float(attrs[name]), value)

    assert {t["number"] for t in detail["best_trials"]} == set(job.front()["id"].astype(int))
    assert {t["number"] for t in detail["best_trials"]} == {t.number for t in study.best_trials}
    shown_attrs = {a["key"] for a in detail["union_user_attrs"]}
    assert {"arch", *detail["objective_names"]} <= shown_attrs
    return detail


# -- a hand-made job with a known front (fast; fails on any wrong number) ----------------------

OBJECTIVES = ["accuracy", "latency", "energy"]
# (accuracy, latency_ms, energy_mj): 0, 1 and 4 are the front; 2 is dominated by 1, 3 by 0.
POINTS = [(0.90, 2.0, 2.0), (0.80, 1.0, 1.0), (0.70, 1.5, 1.5), (0.90, 2.5, 2.0), (0.60, 0.5, 3.0)]
FRONT = {0, 1, 4}


@pytest.fixture
def hand_made(tmp_path):
    url = f"sqlite:///{tmp_path / 'hwnas.db'}"
    space = build_space(load_config(TINY).space, (1, 8, 8), 10)
    store = JobStore(url)
    study = store.create("hand", OBJECTIVES, {"status": "done", "objectives": OBJECTIVES})
    rng = np.random.default_rng(0)
    archs: dict[str, Any] = {}
    while len(archs) < len(POINTS):
        arch = space.sample(rng)
        archs.setdefault(arch.to_json(), arch)
    for (acc, lat, energy), arch in zip(POINTS, archs.values()):
        store.add_candidate(study, space, arch, {
            "val_accuracy": acc, "test_accuracy": acc - 0.005, "latency_ms": lat, "energy_mj": energy, "params": 1000,
            "predicted_accuracy": acc - 0.01, "predicted_accuracy_std": 0.02, "predicted_latency_ms": lat * 1.1,
            "measured": True})
    store.storage.engine.dispose()
    reader = JobStore(url, create=False)
    yield url, Job("hand", reader, reader.open("hand"))
    reader.storage.engine.dispose()


def test_hand_made_job_reads_back_through_optuna(hand_made):
    url, job = hand_made
    assert set(job.front()["id"]) == FRONT
    study = _check_study(url, job)
    assert study.metric_names == ["val_accuracy", "latency_ms", "energy_mj"]
    assert [t.values for t in study.trials] == [list(p) for p in POINTS]
    assert {t.number for t in study.best_trials} == FRONT


def test_hand_made_job_opens_in_optuna_dashboard(hand_made):
    url, job = hand_made
    study = optuna.load_study(study_name=job.name, storage=url)
    detail = _check_dashboard(url, job, study)
    assert {t["number"] for t in detail["best_trials"]} == FRONT
    assert detail["objective_names"] == ["val_accuracy", "latency_ms", "energy_mj"]
    shown_attrs = {a["key"] for a in detail["union_user_attrs"]}
    assert {"predicted_accuracy", "predicted_latency_ms", "measured"} <= shown_attrs
    # `after` pages the trials as the front end polls: only the newer ones come back.
    _, tail = _get(_dashboard_app(url), f"/api/studies/{study._study_id}", "after=3")
    assert [t["number"] for t in tail["trials"]] == [3, 4]
    assert {t["number"] for t in tail["best_trials"]} == FRONT


# -- a real job made by the whole pipeline --------------------------------------------------------

def test_real_job_reads_back_through_optuna(tiny_job):
    job, workdir = tiny_job
    url = f"sqlite:///{workdir}/hwnas.db"
    assert job.name == "tiny"
    _check_study(url, job)


def test_real_job_opens_in_optuna_dashboard(tiny_job):
    job, workdir = tiny_job
    url = f"sqlite:///{workdir}/hwnas.db"
    study = optuna.load_study(study_name=job.name, storage=url)
    detail = _check_dashboard(url, job, study)
    assert len(detail["trials"]) == len(job.candidates())
    # The job's metadata travels with the study, so the dashboard's study page shows it too.
    keys = {a["key"] for a in detail["user_attrs"]}
    assert {"status", "objectives", "config", "job_dir"} <= keys
