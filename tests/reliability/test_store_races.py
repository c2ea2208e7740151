"""Processes sharing one store: creating it at the same moment, and a job killed while it was
being created."""
from __future__ import annotations

import subprocess
import sys

import optuna

import hwnas
from hwnas.job.store import JobStore, default_store_url

OPEN_STORE = "import sys; from hwnas.job.store import JobStore; JobStore(sys.argv[1]); print('opened')"


def test_processes_creating_one_new_store_at_once_all_open_it(tmp_path):
    """Each sees no schema and creates it; the losers of that race open the winner's."""
    url = default_store_url(tmp_path / "w")
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_STORE, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 and out.strip() == "opened" for p, (out, _) in zip(procs, results)), results
    assert JobStore(url, create=False).job_names() == []


def test_a_job_killed_while_being_created_is_finished_on_rerun(tiny_tree, tmp_path):
    """The study exists but its attributes were never written (the process died in between):
    the rerun completes the creation instead of calling it another config's job."""
    store = JobStore(default_store_url(tmp_path))
    objectives = hwnas.load_config(tiny_tree).search.objectives
    optuna.create_study(study_name="tiny", storage=store.storage,
                        directions=["maximize" if o == "accuracy" else "minimize" for o in objectives])
    tiny_tree["search"]["evaluate"] = 2
    job = hwnas.launch(tiny_tree, workdir=tmp_path)
    assert job.status == "done" and job.attrs["config_hash"] and len(job.candidates()) >= 2
