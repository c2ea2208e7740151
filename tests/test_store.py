"""The job store on SQLite and on a real (throwaway) PostgreSQL server.

Round trip through a fresh ``JobStore``, two processes writing two jobs into one store at once,
masked passwords, and the real CLI with ``--store postgresql+psycopg://...``. The PostgreSQL cases
skip, saying why, when no server can be started (see tests/pg_server.py).
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy.engine import make_url

from hwnas.job.checks import load_job_config as load_config
from hwnas.errors import HwnasError
from hwnas.job.store import CANDIDATE_COLUMNS, JobStore, display_url
from hwnas.spaces.dims import Arch
from hwnas.spaces.registry import build_space
from tests.conftest import TINY
from tests.pg_server import pg_url  # noqa: F401  (the session fixture)

ROOT = Path(__file__).resolve().parents[1]
OBJECTIVES = ["accuracy", "latency", "energy"]


def _fresh_database(server_url: str) -> str:
    """A new, empty database on the test server, so each test sees a store of its own."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    url = make_url(server_url)
    with psycopg.connect(host=url.host, port=url.port, user=url.username, dbname=url.database,
                         autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store' / 'hwnas.db'}"
    return _fresh_database(request.getfixturevalue("pg_url"))


@pytest.fixture
def space():
    cfg = load_config(TINY)
    return build_space(cfg.space, (1, 8, 8), 10)


def _metrics(i: int) -> dict:
    """Every candidate column but id/arch, distinct per ``i`` so a lost or doubled one shows."""
    return {"val_accuracy": 0.5 + i / 1000, "test_accuracy": 0.4 + i / 1000, "latency_ms": 1.0 + i / 7,
            "latency_spread_ms": 0.01, "latency_source": "measured" if i % 2 == 0 else "table",
            "energy_mj": 0.25 + i / 3, "params": 1000 + i, "flops": 1.5e6 + i, "macs": 7.5e5 + i,
            "bitops": 2.0e8 + i, "weight_kb": 12.5 + i, "memory_kb": 40.25 + i, "activation_kb": 6.0 + i,
            "predicted_accuracy": 0.49 + i / 1000,
            "predicted_accuracy_std": 0.02, "predicted_latency_ms": 1.1 + i / 7, "measured": i % 2 == 0,
            "evaluated_at": f"2024-01-01T00:00:{i:02d}", "seq": i}


def _attrs(space_name: str = "tiny") -> dict:
    return {"status": "running", "space": space_name, "device": "local-cpu", "objectives": OBJECTIVES,
            "created": "2024-01-01T00:00:00"}


def test_round_trip_through_a_new_store(store_url, space):
    rng = np.random.default_rng(0)
    store = JobStore(store_url)
    study = store.create("job-a", OBJECTIVES, _attrs())
    added = []
    for i in range(8):
        arch = space.sample(rng)
        ident = store.add_candidate(study, space, arch, _metrics(i))
        assert ident == i
        added.append({"id": i, "arch": arch.to_json(), **{k: v for k, v in _metrics(i).items()
                                                         if k in CANDIDATE_COLUMNS}})
    written = store.candidates(study)
    store.storage.engine.dispose()

    again = JobStore(store_url, create=False)
    assert again.job_names() == ["job-a"]
    reopened = again.open("job-a")
    read = again.candidates(reopened)
    expected = pd.DataFrame(added, columns=CANDIDATE_COLUMNS)
    expected["measured"] = expected["measured"].astype(bool)
    pd.testing.assert_frame_equal(read, written)
    pd.testing.assert_frame_equal(read, expected, check_dtype=False)
    for row, trial in zip(added, reopened.get_trials()):
        assert trial.params == Arch.from_json(row["arch"]).to_dict()
        assert trial.values == [row["val_accuracy"], row["latency_ms"], row["energy_mj"]]  # the dashboard's objectives
    assert reopened.directions[0].name == "MAXIMIZE" and reopened.directions[1].name == "MINIMIZE"
    assert reopened.user_attrs["objectives"] == OBJECTIVES

    assert again.list_jobs() == [{"name": "job-a", "status": "running", "space": "tiny",
                                  "device": "local-cpu", "candidates": 8, "created": "2024-01-01T00:00:00",
                                     "budget": None, "hypervolume": None}]
    again.storage.engine.dispose()


WRITER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    import numpy as np
    from hwnas.job.checks import load_job_config as load_config
    from hwnas.job.store import JobStore
    from hwnas.spaces.registry import build_space
    from tests.conftest import TINY
    from tests.test_store import _metrics

    url, job, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    space = build_space(load_config(TINY).space, (1, 8, 8), 10)
    store = JobStore(url)
    study = store.open(job)
    rng = np.random.default_rng(sum(map(ord, job)))
    archs = [space.sample(rng) for _ in range(n)]
    Path(str(go) + "." + job).touch()  # ready: imports done, store open
    while not go.exists():
        time.sleep(0.01)
    ids = [store.add_candidate(study, space, arch, _metrics(i)) for i, arch in enumerate(archs)]
    print(json.dumps({"ids": ids, "archs": [a.to_json() for a in archs]}))
""")


def test_two_jobs_written_at_once_by_two_processes(store_url, tmp_path):
    n = 30
    store = JobStore(store_url)
    for job in ("job-x", "job-y"):
        store.create(job, OBJECTIVES, _attrs())
    go = tmp_path / "go"
    procs = {job: subprocess.Popen([sys.executable, "-c", WRITER, store_url, job, str(n), str(go)], cwd=ROOT,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for job in ("job-x", "job-y")}
    try:
        # start both writers together, once both have paid for their imports
        for _ in range(1200):
            if all(Path(f"{go}.{job}").exists() for job in procs) or any(p.poll() is not None
                                                                          for p in procs.values()):
                break
            time.sleep(0.05)
        go.touch()
        results = {job: p.communicate(timeout=120) for job, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    for job, (stdout, stderr) in results.items():
        assert procs[job].returncode == 0, f"{job} writer failed:\n{stderr[-3000:]}"
        assert "database is locked" not in stderr

    again = JobStore(store_url, create=False)
    assert sorted(again.job_names()) == ["job-x", "job-y"]
    assert {r["name"]: r["candidates"] for r in again.list_jobs()} == {"job-x": n, "job-y": n}
    for job, (stdout, _) in results.items():
        written = json.loads(stdout.strip().splitlines()[-1])
        assert written["ids"] == list(range(n))
        study = again.open(job)
        frame = again.candidates(study)
        assert list(frame["id"]) == list(range(n))  # none lost, none doubled
        assert list(frame["arch"]) == written["archs"]
        assert [t.user_attrs["seq"] for t in study.get_trials()] == list(range(n))
        assert list(frame["params"]) == [1000 + i for i in range(n)]
    store.storage.engine.dispose()
    again.storage.engine.dispose()


def test_password_is_masked():
    url = "postgresql+psycopg://alice:s3cr%40t@db.example.org:5432/hwnas"
    assert display_url(url) == "postgresql+psycopg://alice:***@db.example.org:5432/hwnas"
    assert "s3cr" not in display_url(url)
    assert display_url("sqlite:///runs/hwnas.db") == "sqlite:///runs/hwnas.db"
    assert display_url("not a url") == "<invalid store URL>"


def test_unreachable_server_error_hides_the_password():
    pytest.importorskip("psycopg")
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql+psycopg://alice:s3cret@127.0.0.1:{port}/hwnas?connect_timeout=5"
    with pytest.raises(HwnasError) as info:
        JobStore(url)
    message = str(info.value)
    assert message.startswith("cannot open store postgresql+psycopg://alice:***@127.0.0.1:")
    assert "s3cret" not in message and "\n" not in message


def test_cli_search_jobs_front_on_postgresql(pg_url, tiny_config_file, tmp_path, capsys):  # noqa: F811
    from hwnas.cli.app import main

    url = _fresh_database(pg_url)
    work = tmp_path / "w"
    assert main(["search", str(tiny_config_file), "--store", url, "--workdir", str(work), "-q"]) == 0
    out = capsys.readouterr().out
    assert "Validated Pareto front of tiny" in out
    assert "status: done" in out and "postgresql+psycopg://postgres@127.0.0.1:" in out
    assert not (work / "hwnas.db").exists()  # the jobs went to PostgreSQL, not the default SQLite

    assert main(["jobs", "--store", url]) == 0
    out = capsys.readouterr().out
    assert "tiny" in out and "done" in out and "local-cpu" in out

    assert main(["front", "tiny", "--store", url, "--workdir", str(work), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(row["measured"] is True for row in rows)
    assert all(0 < row["val_accuracy"] <= 1 for row in rows)
    assert main(["front", "tiny", "--store", url, "--workdir", str(work)]) == 0
    assert "Pareto front of tiny" in capsys.readouterr().out
