"""Kill a running ``hwnas`` at a random point of a chosen stage, and account for what survived.

Shared by ``test_kills.py`` and ``experiments/bench_reliability.py``. A run is the real CLI in a
subprocess (``python -m tests.reliability.steady_device``: hwnas with the deterministic measured
device registered, see :mod:`tests.reliability.steady_device`). The job's journal
(:mod:`hwnas.job.events`) says when the wanted stage starts; the process is then SIGKILLed after a
random delay, a fraction of that stage's duration in an uninterrupted reference run, and the
journal says which stage was really running when it died. Before the rerun, everything the
job had committed (store rows, sample caches, lookup-table entries, checkpointed epochs) is
snapshotted, so the rerun can be checked to have kept all of it unchanged.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from hwnas.job.events import read_events, repeated, unfinished

REPO = Path(__file__).resolve().parents[2]
KILLABLE_STAGES = ("train", "profile", "predictor", "search", "evaluate")
STEADY_JOB = "steady"


def steady_tree() -> dict[str, Any]:
    """The job the kill tests and the benchmark kill: the tests' tiny CNN on ``steady-cpu``, with
    3 epochs (room to land in training) and 8 real evaluations in 3 rounds."""
    import copy

    from tests.conftest import TINY

    tree = copy.deepcopy(TINY) | {"name": STEADY_JOB}
    tree["train"] = {**TINY["train"], "epochs": 3}
    tree["device"] = {**TINY["device"], "name": "steady-cpu", "warmup": 1, "repeats": 3}
    tree["search"] = {**TINY["search"], "evaluate": 6, "batch": 3}
    return tree
COMPARED = ("test_accuracy", "val_accuracy", "latency_ms", "energy_mj", "params", "round")


def hwnas_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "tests.reliability.steady_device", *args]


def run_hwnas(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(hwnas_argv(*args), cwd=REPO, capture_output=True, text=True, timeout=timeout)


def _time(event: dict) -> float:
    return dt.datetime.fromisoformat(event["t"]).timestamp()


def stage_seconds(events: list[dict]) -> dict[str, float]:
    """Each stage's duration the first time it ran to its end (a round's, for search/evaluate)."""
    opened: dict[tuple, float] = {}
    seconds: dict[str, float] = {}
    for e in events:
        key = (e.get("pid"), e.get("stage"), e.get("round"))
        if e["event"] == "stage_started":
            opened[key] = _time(e)
        elif e["event"] == "stage_finished" and key in opened:
            seconds.setdefault(e["stage"], _time(e) - opened.pop(key))
    return seconds


def running_stage(events: list[dict], pid: int) -> str | None:
    """The innermost stage ``pid`` had started and not finished when its journal ends."""
    stack: list[str] = []
    for e in events:
        if e.get("pid") != pid:
            continue
        if e["event"] == "stage_started":
            stack.append(e["stage"])
        elif e["event"] == "stage_finished" and e["stage"] in stack:
            del stack[len(stack) - 1 - stack[::-1].index(e["stage"]):]
    return stack[-1] if stack else None


@dataclass
class Kill:
    stage: str  # the stage aimed at
    landed: str | None  # the stage running when the process died
    delay_s: float
    committed: dict[str, dict] = field(default_factory=dict)


def kill_during(args: list[str], journal: Path, stage: str, seconds: float, rng: random.Random,
                timeout: float = 600, fraction: float = 0.6) -> Kill:
    """Start ``hwnas ARGS``; when its journal shows ``stage`` starting, wait a random
    ``[0, fraction) x seconds`` and SIGKILL it."""
    already = len(read_events(journal))
    proc = subprocess.Popen(hwnas_argv(*args), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"hwnas exited {proc.returncode} before stage {stage} started: "
                                     f"{proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"stage {stage} never started within {timeout} s")
            events = read_events(journal)[already:]
            if any(e["event"] == "stage_started" and e.get("stage") == stage and e.get("pid") == proc.pid
                   for e in events):
                break
            time.sleep(0.005)
        delay = rng.uniform(0, fraction * seconds)
        time.sleep(delay)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    return Kill(stage, running_stage(read_events(journal), proc.pid), delay)


class MissedStage(AssertionError):
    """A kill aimed at a stage that runs once landed after it, so that stage cannot be hit."""


def kill_in_every_stage(args: list[str], work: Path, name: str, seconds: dict[str, float], rng: random.Random,
                        fraction: float = 0.5) -> tuple[list[Kill], list[dict[str, dict]]]:
    """Kill ``hwnas ARGS`` once in each of :data:`KILLABLE_STAGES`, rerunning it after each kill;
    returns the kills and what the job had committed right after each one. A kill that lands in
    another stage than the one aimed at counts for that stage; the stages that come back (each
    round has a search and an evaluation) are aimed at again."""
    journal = work / name / "events.jsonl"
    kills, snapshots, remaining = [], [], list(KILLABLE_STAGES)
    while remaining and len(kills) < 2 * len(KILLABLE_STAGES):
        aim = remaining[0]
        kill = kill_during(args, journal, aim, seconds[aim], rng, fraction=fraction)
        kills.append(kill)
        snapshots.append(committed(work, name))
        if kill.landed in remaining:
            remaining.remove(kill.landed)
        elif KILLABLE_STAGES.index(aim) < KILLABLE_STAGES.index("search"):
            raise MissedStage(f"the kill aimed at {aim} landed in {kill.landed}, and {aim} does not come back; "
                              f"kills {describe(kills)}")
    if remaining:
        raise MissedStage(f"no kill landed in {remaining}; kills {describe(kills)}")
    return kills, snapshots


# -- what a job has committed -------------------------------------------------------------------
def _csv(path: Path, key: str, value: str) -> dict[str, float]:
    if not path.exists():
        return {}
    frame = pd.read_csv(path)
    return dict(zip(frame[key].astype(str), frame[value].astype(float)))


def committed(workdir: Path, name: str) -> dict[str, dict]:
    """Everything durable a job holds: store rows by arch, sample caches, lookup-table entries
    (of every cached table in ``WORKDIR/luts``) and the checkpoint's epochs."""
    import torch

    from hwnas.job.store import JobStore, default_store_url

    job_dir = workdir / name
    out: dict[str, dict] = {"candidates": {}, "accuracy_samples": {}, "latency_samples": {}, "lut": {}, "epochs": {}}
    store = JobStore(default_store_url(workdir), create=False) if (workdir / "hwnas.db").exists() else None
    if store is not None and store.exists(name):
        frame = store.candidates(store.open(name), extra=("round",))
        out["candidates"] = {row["arch"]: tuple(row[c] for c in COMPARED) for row in frame.to_dict("records")}
    out["accuracy_samples"] = _csv(job_dir / "accuracy_samples.csv", "arch", "val_accuracy")
    out["latency_samples"] = _csv(job_dir / "latency_samples.csv", "arch", "latency_ms")
    for table in sorted((workdir / "luts").glob("*.csv")):
        out["lut"].update({f"{table.name}:{k}": v for k, v in _csv(table, "key", "latency_ms").items()})
    checkpoint = job_dir / "checkpoint.pt"
    if checkpoint.exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        out["epochs"] = {int(h["epoch"]): float(h["loss"]) for h in state["history"]}
    return out


def lost(before: dict[str, dict], after: dict[str, dict]) -> list[str]:
    """What ``before`` committed that ``after`` lacks or holds with another value."""
    missing = []
    for kind, items in before.items():
        for key, value in items.items():
            if after[kind].get(key) != value:
                missing.append(f"{kind}: {key[:80]} {value} -> {after[kind].get(key)}")
    return missing


@dataclass
class JournalCounts:
    runs: int
    evaluations_repeated: int  # committed real evaluations, samples or table entries done again
    redone_in_flight: int  # started, killed before committing, so done again by the next run


def journal_counts(journal: Path) -> JournalCounts:
    events = read_events(journal)
    samples = {c: [e for e in events if e.get("column") == c] for c in ("val_accuracy", "latency_ms")}
    op_events = [{"event": "op", "arch": key} for e in events if e["event"] == "ops_measured" for key in e["keys"]]
    repeats = (repeated(events, "evaluated") + sum(repeated(s, "sampled") for s in samples.values())
               + repeated(op_events, "op"))
    in_flight = (unfinished(events, "evaluation_started", "evaluated")
                 + sum(unfinished(s, "sample_started", "sampled") for s in samples.values()))
    return JournalCounts(sum(e["event"] == "run_started" for e in events), repeats, in_flight)


def write_config(path: Path, tree: dict[str, Any]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(tree))
    return path


def kill_seed() -> int:
    """The seed of the kill delays: ``HWNAS_KILL_SEED`` to replay a failure, else a new one."""
    return int(os.environ.get("HWNAS_KILL_SEED") or random.SystemRandom().randrange(2**31))


def describe(kills: list[Kill]) -> str:
    return json.dumps([{"aimed": k.stage, "landed": k.landed, "delay_s": round(k.delay_s, 3)} for k in kills])
