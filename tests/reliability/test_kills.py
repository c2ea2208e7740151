"""SIGKILL at random points of every long stage: the rerun loses nothing, repeats nothing, and ends
with the front of an uninterrupted run with the same seed.

One job is killed once in each of training, profiling, predictor fitting, a round's search and a
round's real evaluation (rerun after each kill), then run to the end; an export is killed midway
and rerun. Kill delays are random: ``HWNAS_KILL_SEED`` replays a failing sequence (the seed is in
every failure message). The device is ``steady-cpu`` (see ``steady_device.py``), a measured device
with a fixed clock, so "the same front" can be asserted exactly; real timings would differ between
any two runs, killed or not.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

import hwnas
from hwnas.errors import HwnasError
from hwnas.job.events import read_events, summary

from .faults import (MissedStage, committed, describe, journal_counts, kill_in_every_stage, kill_seed, lost, run_hwnas,
                     stage_seconds, steady_tree, write_config)

STEADY = steady_tree()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted job: its committed results and each stage's duration."""
    root = tmp_path_factory.mktemp("reference")
    config = write_config(root / "steady.yaml", STEADY)
    work = root / "w"
    done = run_hwnas("search", str(config), "--workdir", str(work), "--quiet")
    assert done.returncode == 0, done.stderr
    return {"config": config, "work": work, "committed": committed(work, "steady"),
            "seconds": stage_seconds(read_events(work / "steady" / "events.jsonl"))}


def test_a_job_killed_in_every_stage_resumes_to_the_uninterrupted_front(reference, tmp_path):
    seed = kill_seed()
    rng = random.Random(seed)
    work = tmp_path / "w"
    args = ["search", str(reference["config"]), "--workdir", str(work), "--quiet"]
    journal = work / "steady" / "events.jsonl"
    try:
        kills, snapshots = kill_in_every_stage(args, work, "steady", reference["seconds"], rng)
    except MissedStage as missed:
        pytest.fail(f"{missed}; HWNAS_KILL_SEED={seed}")
    context = f"HWNAS_KILL_SEED={seed}, kills {describe(kills)}"
    job = hwnas.open_job("steady", workdir=work)
    assert job.status == "killed" and job.attrs["status"] == "running", context  # -9: no chance to say so
    final = run_hwnas(*args)
    assert final.returncode == 0, final.stderr + context
    after = committed(work, "steady")
    for kill, snapshot in zip(kills, snapshots):
        assert not lost(snapshot, after), f"lost after the kill in {kill.landed}: {lost(snapshot, after)}; {context}"
    counts = journal_counts(journal)
    assert counts.evaluations_repeated == 0, context
    assert counts.runs == len(kills) + 1
    # the uninterrupted run's front, candidates, samples, table and training, value for value
    assert after == reference["committed"], context
    job = hwnas.open_job("steady", workdir=work)

    def history(j) -> list[dict]:
        return [{k: v for k, v in h.items() if k != "seconds"} for h in j.attrs["train_history"]]

    assert job.status == "done" and history(job) == history(hwnas.open_job("steady", workdir=reference["work"]))
    runs = summary(read_events(journal))
    assert runs["resumed"] == len(kills) and runs["killed_in"] == [k.landed for k in kills]


def _export(work: Path, out: Path, candidate: int):
    return ["export", "steady", "--workdir", str(work), "--candidate", str(candidate), "--out", str(out),
            "--format", "pt,torchscript", "--quiet"]


def test_an_export_killed_midway_is_no_export_until_rerun(reference, tmp_path):
    import hashlib
    import subprocess
    import time

    from .faults import REPO, hwnas_argv

    work = reference["work"]
    candidate = int(hwnas.open_job("steady", workdir=work).front()["id"].iloc[0])
    first = tmp_path / "first"
    started = time.monotonic()
    done = run_hwnas(*_export(work, first, candidate))
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    seed = kill_seed()
    rng = random.Random(seed)
    out = tmp_path / "killed"
    for attempt in range(2):  # the second rewrites an export killed midway, over its leftovers
        proc = subprocess.Popen(hwnas_argv(*_export(work, out, candidate)), cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 0.95) * seconds)
        proc.kill()
        proc.wait()
        if (out / "manifest.json").exists():  # it finished first: a complete export
            hwnas.load_exported(out)
        else:
            with pytest.raises(HwnasError, match="not an hwnas export"):
                hwnas.load_exported(out)
    again = run_hwnas(*_export(work, out, candidate))
    assert again.returncode == 0, again.stderr + f" HWNAS_KILL_SEED={seed}"
    hwnas.load_exported(out)

    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    assert digest(out / "model.safetensors") == digest(first / "model.safetensors")
    assert digest(out / "model.torchscript.pt") == digest(first / "model.torchscript.pt")
    ours, theirs = (json.loads((d / "manifest.json").read_text()) for d in (out, first))
    assert ours == theirs  # the steady device's latencies too: nothing differs but the directory
