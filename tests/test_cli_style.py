"""One CLI style: help with a runnable example, --quiet, --json, tables that fit 80 columns, progress
bars with an ETA on stderr."""
from __future__ import annotations

import json
import math
import shlex

import pytest
import torch
import typer
import yaml

from hwnas.cli.app import app, main
from hwnas.hwmodels import local_cpu
from hwnas.cli.style import _plain

COMMANDS = ["search", "jobs", "report", "devices", "import-table", "profile", "front", "export"]
CHEAP = ["train.epochs=0", "train.recalibration_samples=64", "predictor.samples=12", "search.population=8",
         "search.generations=2", "search.evaluate=3", "device.repeats=3", "device.warmup=1",
         "device.correction_samples=0"]


@pytest.fixture(autouse=True)
def columns_80(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_fits(text: str, width: int = 80) -> None:
    long = [line for line in text.splitlines() if len(line) > width]
    assert not long, "\n".join(long)


def examples(help_text: str) -> list[list[str]]:
    """The commands under ``Example:``, continuation lines joined, split as a shell would."""
    lines = help_text.split("Example:", 1)[1].split("\n\n", 1)[0].replace("\\\n", " ").splitlines()
    return [shlex.split(line) for line in lines if line.strip()]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help_with_a_valid_example_and_the_shared_options(name, capsys):
    code, out, err = run(capsys, name, "--help")
    assert code == 0 and not err
    assert "Example:" in out and "--quiet" in out and "-q" in out and "--json" in out
    assert_fits(out)
    group = typer.main.get_command(app)
    for argv in examples(out):
        assert argv[:2] == ["hwnas", name]
        command = group.get_command(None, name)
        command.make_context(name, argv[2:])  # the example parses: known options, valid values


def test_top_level_help_has_an_example(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "Example:" in out
    assert all(argv[0] == "hwnas" for argv in examples(out))


def test_json_outputs_parse_and_hold_the_tables_information(tiny_job, capsys, tmp_path):
    job, work = tiny_job
    w = ["--workdir", work]

    code, out, _ = run(capsys, "jobs", *w, "--json")
    jobs = json.loads(out)
    assert code == 0 and [j["name"] for j in jobs] == ["tiny"] and jobs[0]["status"] == "done"
    assert {"space", "device", "candidates", "budget", "hypervolume", "created"} <= set(jobs[0])

    code, out, _ = run(capsys, "front", "tiny", *w, "--json")
    rows = json.loads(out)
    assert code == 0 and rows and {"id", "arch", "val_accuracy", "test_accuracy", "latency_ms", "energy_mj", "params"} <= set(rows[0])
    assert isinstance(rows[0]["arch"], dict)
    code, same, _ = run(capsys, "front", "tiny", *w, "--format", "json")
    assert code == 0 and json.loads(same) == rows
    code, _, err = run(capsys, "front", "tiny", *w, "--json", "--format", "csv")
    assert code == 2 and err.startswith("error: --json and --format csv conflict") and len(err.splitlines()) == 1

    code, out, _ = run(capsys, "report", "tiny", *w, "--json")
    report = json.loads(out)
    assert code == 0 and report["job"] == "tiny" and report["predictors"]
    assert {"kendall_tau", "rmse", "mape", "within_10pct"} <= set(report["predictors"][0])
    assert report["device"]["name"] == "local-cpu" and "train" in report["stage_seconds"]

    code, out, _ = run(capsys, "devices", *w, "--json")
    devices = json.loads(out)
    assert code == 0 and {"local-cpu", "edge-accel-45nm"} <= {d["name"] for d in devices}
    assert {"kind", "processor", "runtime", "about"} <= set(devices[0])

    code, out, _ = run(capsys, "search", "--resume", "tiny", *w, "--json", "--quiet")  # done: nothing reruns
    result = json.loads(out)
    assert code == 0 and result["job"] == "tiny" and result["status"] == "done"
    assert result["front"] == rows and result["evaluated"] == len(job.candidates())

    best = str(rows[0]["id"])
    code, out, _ = run(capsys, "export", "tiny", *w, "--candidate", best, "--out", tmp_path / "e", "--json")
    exported = json.loads(out)
    assert code == 0 and exported["candidate"] == int(best)
    assert exported["manifest"] == str(tmp_path / "e" / "manifest.json")
    assert exported["files"]["weights"] == "model.safetensors"
    assert 0 < exported["metrics"]["evaluated"]["export_test_accuracy"] <= 1


def test_import_table_json(tmp_path, capsys):
    from tests.test_tables import OFA

    source = tmp_path / "lut.yaml"
    source.write_text(yaml.safe_dump(OFA))
    code, out, _ = run(capsys, "import-table", source, "--format", "ofa", "--name", "phone", "--workdir",
                       tmp_path / "w", "--json")
    imported = json.loads(out)
    assert code == 0 and imported["device"] == "phone" and imported["entries"] == 6
    assert imported["table"].endswith("phone.csv") and imported["granularity"] == "block"


def test_tables_fit_80_columns(tiny_job, capsys):
    job, work = tiny_job
    w = ["--workdir", work]
    for argv in (["front", "tiny", *w], ["jobs", *w], ["devices", *w], ["report", "tiny", *w]):
        code, out, _ = run(capsys, *argv)
        assert code == 0 and out.strip(), argv
        assert_fits(out)
    code, out, _ = run(capsys, "front", "tiny", *w)
    assert "arch" in out.splitlines()[1] and "d" in out  # the arch column kept, folded if need be


def test_wide_terminal_gets_the_full_devices_table(monkeypatch, capsys):
    """Not the host's names: a long processor name and a CUDA build's torch version, as on a
    machine whose processor reads "Intel(R) Xeon(R) Processor" (where this test once failed)."""
    monkeypatch.setattr(local_cpu, "processor_name", lambda: "Intel(R) Xeon(R) Processor")
    monkeypatch.setattr(torch, "__version__", "2.14.1+cu130")
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run(capsys, "devices")
    header = out.splitlines()[0].split()
    assert code == 0 and header[:4] == ["name", "kind", "processor", "runtime"] and header[-1] == "about"
    assert_fits(out, 140)  # capped


def test_quiet_has_no_progress_bars_and_no_informational_lines(tiny_config_file, tmp_path, capsys):
    argv = ["profile", "--space", tiny_config_file, "--workdir", tmp_path / "w", "--set", "device.repeats=3",
            "--set", "device.warmup=1"]
    code, out, err = run(capsys, *argv)
    assert code == 0 and "profile local-cpu" in err and "took" in err and "method:" in out
    code, out, err = run(capsys, *argv, "--quiet")
    assert code == 0 and err == ""
    assert "ops of the cnn space" in out and "table:" in out and "method:" not in out


def test_search_reports_every_stage_with_an_eta_and_json_alone_on_stdout(tiny_config_file, tmp_path, capsys):
    sets = [arg for item in CHEAP for arg in ("--set", item)]
    code, out, err = run(capsys, "search", tiny_config_file, "--workdir", tmp_path / "w", "--json", *sets)
    assert code == 0, err
    result = json.loads(out)  # nothing else on stdout
    assert result["status"] == "done" and result["front"]
    for step in ("train supernet", "profile local-cpu", "sample subnets", "search round 1", "evaluate round 1"):
        assert step in err, step
    assert "took" in err
    assert_fits(err)


def test_json_is_strict():
    assert _plain({"a": math.nan, "b": [math.inf, 1.5], "c": True}) == {"a": None, "b": [None, 1.5], "c": True}
    import numpy as np

    assert json.dumps(_plain({"n": np.int64(3), "x": np.float32(0.5)})) == '{"n": 3, "x": 0.5}'
