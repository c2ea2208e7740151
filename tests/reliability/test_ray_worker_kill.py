"""A Ray worker killed mid-evaluation: its item is retried, and the job completes (issue 7).

``hwnas search --workers 2`` runs as a subprocess; the test finds one of that job's Ray workers
while it executes an evaluation and SIGKILLs it. The job must still end "done", with every
evaluation committed once and the same accuracies as a serial run of the same config.

How the kill is aimed:

* Only this job's workers: a worker is a descendant of the ``hwnas search`` process (which starts
  the local Ray: raylet, then workers as the raylet's children), so workers of Ray clusters that
  other tests run at the same time are never touched.
* Mid-evaluation, by construction rather than by timing: Ray sets the process title of an actor's
  worker to ``ray::_Worker`` when idle and ``ray::_Worker.run`` while it executes
  ``_Worker.run`` (one evaluation). The test SIGSTOPs a worker seen with the ``run`` title,
  re-reads the title once the process is stopped (it cannot change any more), and SIGKILLs it only
  if it still says ``run``; otherwise it SIGCONTs it and keeps looking. So however short an
  evaluation is on a fast machine, or however slow on a loaded one, the kill lands inside one.
"""
from __future__ import annotations

import copy
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import hwnas
from hwnas.job.events import read_events, repeated

ROOT = Path(__file__).resolve().parents[2]

#: Title of an actor's worker process while it executes ``_Worker.run`` (hwnas.utils.executors).
RUN_TITLE = "ray::_Worker.run"
#: Title prefix of every hwnas actor's worker process (idle: exactly ``ray::_Worker``).
WORKER_TITLE = "ray::_Worker"


# -- /proc helpers ------------------------------------------------------------------------------

def _title(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.split(b"\0", 1)[0].decode(errors="replace")


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # the command name may hold spaces and ')'
    return fields[0], int(fields[1])


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat:
                children.setdefault(stat[1], []).append(int(entry))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _is_worker(title: str | None) -> bool:
    return title is not None and (title == WORKER_TITLE or title.startswith(WORKER_TITLE + "."))


def _workers(root: int) -> set[int]:
    """Processes under ``root`` whose title says they are an hwnas executor actor."""
    return {pid for pid in _descendants(root) if _is_worker(_title(pid))}


def _kill_mid_evaluation(pid: int) -> bool:
    """SIGKILL ``pid`` if, once stopped, it is executing ``_Worker.run``; else let it go on."""
    try:
        os.kill(pid, signal.SIGSTOP)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        stat = _stat(pid)
        if stat is None:
            return False
        if stat[0] in ("T", "t"):
            break
        time.sleep(0.001)
    if _title(pid) == RUN_TITLE:
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (_stat(pid) or ("X",))[0] not in ("Z", "X"):
            time.sleep(0.01)  # SIGKILL is delivered asynchronously
        assert (_stat(pid) or ("X",))[0] in ("Z", "X"), f"worker {pid} survived SIGKILL"
        return True
    os.kill(pid, signal.SIGCONT)
    return False


def _kill_one_evaluation(job: subprocess.Popen, deadline: float, seen: set[int]) -> int:
    """Wait for one of ``job``'s workers to run an evaluation and SIGKILL it in the middle of it;
    returns its pid. Fails if the job ends first or ``deadline`` passes. Adds every worker pid
    found to ``seen``."""
    workers: set[int] = set()
    rescan = 0.0
    while time.monotonic() < deadline:
        if job.poll() is not None:
            pytest.fail(f"the job ended (exit {job.returncode}) before a worker could be killed "
                        "mid-evaluation")
        if time.monotonic() >= rescan:  # the workers appear when the search stage starts
            workers = _workers(job.pid)
            seen |= workers
            rescan = time.monotonic() + 0.05
        for pid in workers:
            if _title(pid) == RUN_TITLE and _kill_mid_evaluation(pid):
                return pid
        time.sleep(0.002)
    pytest.fail("no worker of the job ran an evaluation before the deadline")


def _watch_until_done(job: subprocess.Popen, deadline: float, seen: set[int]) -> None:
    """Wait for ``job`` to end, adding the pids of the workers it runs meanwhile to ``seen``."""
    while job.poll() is None:
        if time.monotonic() > deadline:
            pytest.fail("the job did not finish after its worker was killed (a hang?)")
        seen |= _workers(job.pid)
        time.sleep(0.02)


# -- the job ------------------------------------------------------------------------------------

def _config(tiny: dict) -> dict:
    tree = copy.deepcopy(tiny)
    tree["name"] = "worker-kill"
    # A device model, not a stopwatch: latencies, and with them the search, are exact, so the
    # parallel job must find the very candidates the serial one does.
    tree["device"] = {"name": "edge-accel-45nm"}
    # Cheaper than the tiny config where it does not matter here: one epoch of supernet training
    # (the serial job's; the parallel job reuses its weights), a ridge predictor on few samples.
    # Not fewer training steps: an LSQ quantizer that training never ran at some bit-width is
    # initialised by the first evaluation that runs it, and then a result depends on which items
    # its worker evaluated before, so no parallel run could equal the serial one. Slower where it
    # matters: recalibrating batch norm on more images makes each real evaluation longer, so there
    # is more of it to land a kill in.
    tree["train"].update(epochs=1, recalibration_samples=512)
    tree["predictor"].update(samples=12, model="ridge")
    tree["search"].update(evaluate=6, batch=4)  # 8 evaluations over 2 rounds
    return tree


def _search(config: Path, workdir: Path, workers: int, log: Path) -> subprocess.Popen:
    """``hwnas search`` in a process (and session) of its own, its output to ``log``."""
    # One torch thread in both jobs: two jobs side by side on a small machine, and evaluations on
    # one thread give the same accuracies in a worker as in the serial job.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = open(log, "w")
    try:
        return subprocess.Popen([sys.executable, "-m", "hwnas", "search", str(config), "--workdir", str(workdir),
                                 "--workers", str(workers), "--quiet"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        out.close()


def _stop(job: subprocess.Popen) -> None:
    """End a job process this test started, and what it started (its own session), if still up."""
    if job.poll() is None:
        try:
            os.killpg(job.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        job.wait(30)


def _results(job) -> list[tuple[str, float, float, float]]:
    frame = job.store.candidates(job.study)
    return sorted(zip(frame["arch"], frame["test_accuracy"], frame["val_accuracy"], frame["latency_ms"]))


@pytest.mark.timeout(480)
def test_a_worker_killed_mid_evaluation_is_replaced_and_the_job_completes(tiny_tree, tmp_path):
    pytest.importorskip("ray")
    config = tmp_path / "worker-kill.yaml"
    config.write_text(yaml.safe_dump(_config(tiny_tree)))
    parallel_dir, serial_dir = tmp_path / "parallel", tmp_path / "serial"
    parallel_log, serial_log = tmp_path / "parallel.log", tmp_path / "serial.log"

    # The serial reference first; the parallel job starts from its trained supernet (the worker
    # count is not part of a job's identity, and a job whose weights file exists skips training).
    # Training on Ray workers is data-parallel, equal to the serial run only within noise, so the
    # parallel job's results can equal the serial ones only from the same weights; it also spares
    # this test a Ray Train start-up that has nothing to do with evaluation.
    serial = _search(config, serial_dir, 1, serial_log)
    deadline = time.monotonic() + 400  # generous: other tests may share the cores
    try:
        serial.wait(max(1.0, deadline - time.monotonic()))
    finally:
        _stop(serial)
    assert serial.returncode == 0, serial_log.read_text()[-4000:]
    (parallel_dir / "worker-kill").mkdir(parents=True)
    shutil.copy(serial_dir / "worker-kill" / "supernet.safetensors", parallel_dir / "worker-kill")
    parallel = _search(config, parallel_dir, 2, parallel_log)
    workers: set[int] = set()
    try:
        killed = _kill_one_evaluation(parallel, deadline, workers)
        _watch_until_done(parallel, deadline, workers)
    finally:
        _stop(parallel)

    assert parallel.returncode == 0, parallel_log.read_text()[-4000:]
    # Two workers, one killed, and its replacement.
    assert killed in workers and len(workers) >= 3, (killed, workers)
    job = hwnas.open_job("worker-kill", workdir=parallel_dir)
    reference = hwnas.open_job("worker-kill", workdir=serial_dir)
    assert job.status == "done"
    frame = job.candidates()
    assert len(frame) == 8 and frame["arch"].is_unique, "every evaluation committed exactly once"
    assert _results(job) == _results(reference), "parallel results must equal serial ones"
    # The job says what happened: once in its attributes, once in its journal.
    [retry] = job.attrs["worker_retries"]
    assert retry["arch"] in set(frame["arch"]) and "died" in retry["error"]
    journal = read_events(parallel_dir / "worker-kill" / "events.jsonl")
    assert [e["arch"] for e in journal if e["event"] == "worker_retry"] == [retry["arch"]]
    assert repeated(journal, "evaluated") == 0
