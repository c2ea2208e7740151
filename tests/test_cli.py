"""The real `hwnas` command: one end-to-end run on a tiny config, and every user error it reports."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import hwnas
from hwnas.cli.app import main


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="100")
    return subprocess.run([sys.executable, "-m", "hwnas", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_end_to_end_search_front_export(tiny_config_file, tmp_path):
    work = tmp_path / "w"
    r = run_cli("search", str(tiny_config_file), "--workdir", str(work), "--quiet")
    assert r.returncode == 0, r.stderr
    assert "Validated Pareto front of tiny" in r.stdout
    assert f"job: tiny   store: sqlite:///{work}/hwnas.db   status: done" in r.stdout

    r = run_cli("jobs", "--workdir", str(work))
    assert r.returncode == 0 and "tiny" in r.stdout and "done" in r.stdout and "local-cpu" in r.stdout

    r = run_cli("front", "tiny", "--workdir", str(work), "--format", "json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert rows and all(row["measured"] is True for row in rows)
    assert {"id", "arch", "val_accuracy", "test_accuracy", "latency_ms", "latency_source", "energy_mj", "params",
            "flops", "measured"} <= set(rows[0])
    assert all(0 < row["val_accuracy"] <= 1 and 0 < row["test_accuracy"] <= 1 for row in rows)
    assert [row["val_accuracy"] for row in rows] == sorted((row["val_accuracy"] for row in rows), reverse=True)

    budget = max(row["latency_ms"] for row in rows)
    r = run_cli("front", "tiny", "--workdir", str(work), "--format", "csv", "--max-latency-ms", str(budget))
    assert r.returncode == 0 and r.stdout.startswith("id,val_accuracy,test_accuracy,latency_ms")

    out = tmp_path / "exported"
    r = run_cli("export", "tiny", "--workdir", str(work), "--max-latency-ms", str(budget), "--out", str(out),
                "--format", "all", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert (out / "model.safetensors").exists() and (out / "manifest.json").exists()
    assert set(doc["checks"]) == {"pt", "torchscript", "onnx"} and all(c["passed"] for c in doc["checks"].values())
    assert "int8" in doc["skipped_formats"]  # the tiny space has no 8-bit choice
    assert doc["files"]["onnx"] == "model.onnx" and (out / "model.onnx").exists()

    r = run_cli("report", "tiny", "--workdir", str(work), "--out", str(tmp_path / "report"),
                "--max-latency-ms", str(budget))
    assert r.returncode == 0, r.stderr
    assert f"report page: {tmp_path / 'report' / 'index.html'}" in r.stdout
    assert (tmp_path / "report" / "front.png").exists()
    model = hwnas.load_exported(out)
    import torch

    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def _errors(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.err.strip()


def test_user_errors_are_one_line_with_exit_codes(tiny_job, capsys, tmp_path):
    job, work = tiny_job
    w = ["--workdir", str(work)]
    cases = [
        (("front", "missing", *w), 2, "error: no job named 'missing'"),
        (("export", "tiny", "--candidate", "999", "--out", str(tmp_path / "o"), *w), 2,
         "error: job 'tiny' has no candidate 999; its candidates: 0-"),
        (("front", "tiny", "--max-latency-ms", "0.000001", *w), 1, "error: no candidate meets latency <= 1e-06 ms; "
                                                                    "the nearest is #"),
        (("front", "tiny", "--max-latency-ms", "-3", *w), 2, "error: --max-latency-ms must be a number above 0"),
        (("front", "tiny", "--min-accuracy", "2", *w), 2, "error: --min-accuracy must be a number above 0 and at most 1"),
        (("front", "tiny", "--max-latency-ms", "fast", *w), 2, "error: Invalid value for '--max-latency-ms'"),
        (("front", "tiny", "--format", "xml", *w), 2, "error: Invalid value for '--format'"),
        (("export", "tiny", "--out", str(tmp_path / "o"), *w), 2, "error: choose the subnet to export"),
        (("jobs", "--workdir", str(tmp_path / "nowhere")), 2, "error: no job store at"),
        (("search", "--name", "../escape", "--workdir", str(tmp_path / "n")), 2, "error: job name '../escape' must be"),
        (("search", "--set", "train.epochs=-1", "--workdir", str(tmp_path / "n")), 2,
         "error: --set train.epochs=-1: train.epochs: Input should be greater than or equal to 0"),
        (("search", "--set", "train.nope=1", "--workdir", str(tmp_path / "n")), 2, "error: --set train.nope=1: train.nope: unknown key"),
        (("search", str(tmp_path / "absent.yaml"), "--workdir", str(tmp_path / "n")), 2, "error: config file"),
        (("front", "tiny", "--store", "notaurl", *w), 2, "error: store URL 'notaurl' is not a SQLAlchemy URL"),
    ]
    for argv, code, message in cases:
        got_code, err = _errors(capsys, *argv)
        assert (got_code, err.splitlines()[0][: len(message)]) == (code, message), argv
        assert len(err.splitlines()) == 1, err
        assert "Traceback" not in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "n").exists()


def test_malformed_config_file_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("space: {type: cnn, stages: [{channels: 8, depth: []}]}\n")
    code, err = _errors(capsys, "search", str(bad), "--workdir", str(tmp_path / "w"))
    assert code == 2 and "space.stages.0.depth: List should have at least 1 item" in err
    bad.write_text("train:\n  epochs: [1\n")
    code, err = _errors(capsys, "search", str(bad), "--workdir", str(tmp_path / "w"))
    assert code == 2 and "not valid YAML at line" in err
    assert not (tmp_path / "w").exists()


def test_corrupt_lookup_table_is_named(tiny_config_file, tmp_path, capsys):
    work = tmp_path / "w"
    tree = yaml.safe_load(tiny_config_file.read_text())
    tree["train"]["epochs"] = 1
    cfg = tmp_path / "one.yaml"
    cfg.write_text(yaml.safe_dump(tree))
    assert main(["search", str(cfg), "--workdir", str(work), "--quiet"]) == 0
    lut = next((work / "luts").glob("*.csv"))
    lut.write_text("key,kind,cin\nbroken,conv,x\n")
    capsys.readouterr()
    code, err = _errors(capsys, "search", str(cfg), "--workdir", str(work), "--name", "again", "--quiet")
    assert code == 2 and err.startswith(f"error: lookup table {lut} lacks column")


def _trial_count(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return con.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]
    except sqlite3.Error:
        return 0


def _kill_when(proc: subprocess.Popen, condition, timeout: float = 600) -> None:
    """SIGKILL ``proc`` as soon as ``condition()`` holds (a generous timeout: CI machines are busy)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if condition():
            proc.kill()
            proc.wait()
            return
        time.sleep(0.02)
    code = proc.poll()
    proc.kill()
    pytest.fail(f"the condition to kill at never came (process {'exited ' + str(code) if code is not None else 'timed out'})")


def test_killed_search_resumes_without_losing_or_repeating(tiny_config_file, tmp_path):
    """SIGKILL during training and again between real evaluations; reruns finish the job."""
    tree = yaml.safe_load(tiny_config_file.read_text())
    tree["train"]["epochs"] = 4
    tree["search"]["evaluate"] = 10
    tree["search"]["batch"] = 4  # several rounds, so the kill lands inside one
    tree["device"]["repeats"] = 300  # slow each real evaluation so the kill lands between them
    cfg = tmp_path / "kill.yaml"
    cfg.write_text(yaml.safe_dump(tree))
    work = tmp_path / "w"
    argv = [sys.executable, "-m", "hwnas", "search", str(cfg), "--workdir", str(work), "--quiet"]
    checkpoint = work / "tiny" / "checkpoint.pt"

    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_when(proc, checkpoint.exists)
    assert not (work / "tiny" / "supernet.safetensors").exists()

    db = work / "hwnas.db"
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_when(proc, lambda: _trial_count(db) >= 2)
    job = hwnas.open_job("tiny", workdir=work)
    before = job.candidates()
    assert job.status == "killed" and 2 <= len(before) < 12  # stored as running, its lock free

    r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    job = hwnas.open_job("tiny", workdir=work)
    after = job.candidates()
    assert job.status == "done"
    assert after["arch"].is_unique
    rounds = job.attrs["search_rounds"]["rounds"]
    assert len(rounds) >= 2 and sum(r["picked"] for r in rounds) == len(after) <= 12
    kept = after.set_index("id").loc[before["id"]]
    assert (kept["val_accuracy"].values == before["val_accuracy"].values).all()
    history = job.attrs["train_history"]
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]


CHEAP = ["train.epochs=1", "train.recalibration_samples=64", "predictor.samples=12", "search.population=8",
         "search.generations=2", "search.evaluate=3", "device.repeats=3", "device.warmup=1"]


@pytest.mark.parametrize("config", ["digits-cnn-shiftadd", "digits-cnn-shiftadd-accel", "digits-cnn-mixed",
                                    "digits-vit", "digits-vit-variants"])
def test_every_shipped_config_trains_searches_queries_and_exports(config, tmp_path, capsys):
    path = Path(__file__).resolve().parents[1] / "experiments" / f"{config}.yaml"
    work = tmp_path / "w"
    sets = [arg for item in CHEAP for arg in ("--set", item)]
    assert main(["search", str(path), "--workdir", str(work), "--quiet", *sets]) == 0
    capsys.readouterr()
    assert main(["front", config, "--workdir", str(work), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    measured = config != "digits-cnn-shiftadd-accel"  # an analytical device models latency
    assert rows and all(row["measured"] == measured for row in rows)
    best, formats = str(rows[0]["id"]), []
    if config == "digits-vit-variants":  # the candidate with the most blocks of the new variants, every format
        candidates = hwnas.open_job(config, workdir=work).candidates()
        new = candidates["arch"].map(lambda a: sum(v in ("relu_linear", "log2") for v in json.loads(a).values()))
        assert new.max() > 0
        best, formats = str(candidates["id"][new.idxmax()]), ["--format", "all"]
    assert main(["export", config, "--workdir", str(work), "--candidate", best, "--out", str(tmp_path / "e"),
                 *formats]) == 0
    assert "every file takes raw inputs (sklearn.datasets.load_digits().images / 16" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "e" / "manifest.json").read_text())
    assert all(check["passed"] for check in manifest["checks"].values())  # each file against the supernet
    if any(b.get("wquant") == "log2" for b in manifest["subnet"].get("blocks", [])):
        assert manifest["shift_exponents"]["layers"]
    model = hwnas.load_exported(tmp_path / "e")
    import torch

    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
