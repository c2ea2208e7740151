"""Reliability figures (issue 7): jobs killed in every long stage, exports killed midway, and the
bad-input catalogue.

What it runs, all on this machine's CPU through the real CLI in subprocesses:

1. The reference: a small job (the tests' tiny CNN space, 3 training epochs, 24 predictor samples,
   8 real evaluations in 3 rounds) run once without interruption. Its device is ``steady-cpu``, a
   measured device with a fixed clock (``tests/reliability/steady_device.py``), so that two runs
   can be compared value for value; real timings differ between any two runs.
2. ``--sequences`` fresh runs of the same job, each SIGKILLed once at a random point of each long
   stage (supernet training, profiling, predictor fitting, a round's search, a round's real
   evaluation) and rerun after every kill, then run to the end.
3. ``--export-kills`` exports of one candidate SIGKILLed at a random point, then rerun.
4. Every case of the bad-input catalogue (``tests/reliability/test_bad_inputs.py``).

What it compares against: each kill's snapshot of what the job had committed (store rows, sample
caches, lookup-table entries, checkpointed epochs) with the job's final state, and each final state
with the uninterrupted reference; each killed-and-rerun export with an uninterrupted one, file for
file.

Figures:

* ``kills``, ``kills_survived``: a kill survived when everything committed before it is unchanged at
  the end and its job ended with the reference's results; export kills count too.
* ``results_lost``: committed items (candidates, samples, table entries, epochs) missing or changed
  after a rerun. Goal 0.
* ``evaluations_repeated``: committed work done again (a real evaluation, a predictor sample, a
  latency sample or a table entry present twice in the job's journal). Goal 0.
* ``evaluations_redone_in_flight``: work a kill interrupted before it was committed, which the
  next run had to start again (at most one item per kill by design; not a loss).
* ``bad_inputs_tried``, ``bad_inputs_clear``: catalogue cases, and those refused with one clear
  line, the right exit code, no traceback and no file left behind. Goal: all.

Usage: ``python experiments/bench_reliability.py [--sequences 2] [--export-kills 3] [--seed N]``
(run from the repository root; about 3 minutes on 2 cores with the defaults).
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hwnas.job.events import read_events  # noqa: E402
from tests.reliability.faults import (STEADY_JOB, MissedStage, committed, journal_counts,  # noqa: E402
                                      kill_in_every_stage, lost, run_hwnas, stage_seconds, steady_tree, write_config)

NAME = STEADY_JOB


def run_reference(root: Path) -> dict:
    config = write_config(root / "steady.yaml", steady_tree())
    work = root / "reference"
    started = time.perf_counter()
    done = run_hwnas("search", str(config), "--workdir", str(work), "--quiet")
    if done.returncode:
        sys.exit(f"the reference job failed: {done.stderr}")
    return {"config": config, "work": work, "committed": committed(work, NAME), "wall_s": time.perf_counter() - started,
            "seconds": stage_seconds(read_events(work / NAME / "events.jsonl"))}


def kill_sequences(reference: dict, root: Path, sequences: int, rng: random.Random) -> dict:
    totals = Counter()
    by_stage: Counter = Counter()
    for i in range(sequences):
        work = root / f"killed-{i}"
        args = ["search", str(reference["config"]), "--workdir", str(work), "--quiet"]
        try:
            kills, snapshots = kill_in_every_stage(args, work, NAME, reference["seconds"], rng)
        except MissedStage as missed:
            print(f"# sequence {i}: {missed}", file=sys.stderr)
            totals["missed_sequences"] += 1
            continue
        final = run_hwnas(*args)
        after = committed(work, NAME) if final.returncode == 0 else None
        same = after == reference["committed"]
        for kill, snapshot in zip(kills, snapshots):
            missing = lost(snapshot, after) if after is not None else ["the rerun failed"]
            totals["kills"] += 1
            totals["results_lost"] += len(missing)
            totals["kills_survived"] += int(not missing and same)
            by_stage[kill.landed] += 1
        counts = journal_counts(work / NAME / "events.jsonl")
        totals["evaluations_repeated"] += counts.evaluations_repeated
        totals["evaluations_redone_in_flight"] += counts.redone_in_flight
        totals["fronts_equal"] += int(same)
        totals["sequences"] += 1
    totals["kills_by_stage"] = dict(by_stage)  # type: ignore[assignment]
    return totals


def export_kills(reference: dict, root: Path, count: int, rng: random.Random) -> dict:
    import hwnas
    from hwnas.errors import HwnasError
    from tests.reliability.faults import hwnas_argv

    job = hwnas.open_job(NAME, workdir=reference["work"])
    candidate = str(int(job.front()["id"].iloc[0]))

    def argv(out: Path) -> list[str]:
        return ["export", NAME, "--workdir", str(reference["work"]), "--candidate", candidate, "--out", str(out),
                "--format", "pt,torchscript", "--quiet"]

    first = root / "export-first"
    started = time.perf_counter()
    if run_hwnas(*argv(first)).returncode:
        sys.exit("the reference export failed")
    seconds = time.perf_counter() - started
    survived = 0
    for i in range(count):
        out = root / f"export-{i}"
        proc = subprocess.Popen(hwnas_argv(*argv(out)), cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 0.95) * seconds)
        proc.kill()
        proc.wait()
        consistent = True
        if (out / "manifest.json").exists():  # finished before the kill: it must be whole
            try:
                hwnas.load_exported(out)
            except HwnasError:
                consistent = False
        again = run_hwnas(*argv(out))
        same = again.returncode == 0 and all(
            (out / f).read_bytes() == (first / f).read_bytes()
            for f in ("model.safetensors", "model.torchscript.pt", "manifest.json"))
        survived += int(consistent and same)
    return {"export_kills": count, "export_kills_survived": survived}


def bad_inputs() -> tuple[int, int, list[str]]:
    from tests.reliability.test_bad_inputs import CASES, judge

    unclear = []
    for case in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            problems = judge(case, Path(tmp))
        if problems:
            unclear.append(f"{case.id}: {problems[0]}")
    return len(CASES), len(CASES) - len(unclear), unclear


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=2, help="jobs killed once in every stage")
    parser.add_argument("--export-kills", type=int, default=3)
    parser.add_argument("--seed", type=int, default=None, help="kill delays (default: a new seed, printed)")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    rng = random.Random(seed)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hwnas-bench-rel-") as tmp:
        root = Path(tmp)
        reference = run_reference(root)
        kills = kill_sequences(reference, root, args.sequences, rng)
        exports = export_kills(reference, root, args.export_kills, rng)
    tried, clear, unclear = bad_inputs()
    for line in unclear:
        print(f"# unclear: {line}", file=sys.stderr)
    print("compared_against: an uninterrupted run of the same job and seed (store rows, samples, table, epochs); "
          "an uninterrupted export, file for file")
    print(f"kill_seed: {seed}")
    print(f"reference_job_s: {reference['wall_s']:.1f}")
    print(f"kills: {kills['kills'] + exports['export_kills']}")
    print(f"kills_survived: {kills['kills_survived'] + exports['export_kills_survived']}")
    print(f"kills_by_stage: {json.dumps({**kills['kills_by_stage'], 'export': exports['export_kills']})}")
    print(f"results_lost: {kills['results_lost']}")
    print(f"evaluations_repeated: {kills['evaluations_repeated']}")
    print(f"evaluations_redone_in_flight: {kills['evaluations_redone_in_flight']}")
    print(f"fronts_equal_to_uninterrupted: {kills['fronts_equal']}/{kills['sequences']}")
    print(f"sequences_missing_a_stage: {kills['missed_sequences']}")
    print(f"bad_inputs_tried: {tried}")
    print(f"bad_inputs_clear: {clear}")
    print(f"wall_s: {time.perf_counter() - started:.1f}")


if __name__ == "__main__":
    main()
