"""The Python API on one tiny job: front, export, reload, and their errors."""
import json

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

import hwnas
from hwnas.errors import HwnasError, JobError, NoCandidateError
from hwnas.train.components import Components, resolve_compute
from hwnas.job.paths import JobPaths
from hwnas.utils.io import record_digest


def test_job_is_done_with_measured_candidates(tiny_job):
    job, workdir = tiny_job
    assert job.status == "done"
    frame = job.candidates()
    rounds = job.attrs["search_rounds"]
    assert sum(r["picked"] for r in rounds["rounds"]) == len(frame) == rounds["rounds"][-1]["evaluated"]
    assert len(frame) <= job.config.search.evaluate + 2 and rounds["stopped"]
    space = job.space()
    assert {space.largest().to_json(), space.smallest().to_json()} <= set(frame["arch"])  # the anchors
    assert frame["measured"].all()
    assert frame["arch"].is_unique
    assert ((frame["val_accuracy"] > 0) & (frame["val_accuracy"] <= 1)).all()
    assert ((frame["test_accuracy"] > 0) & (frame["test_accuracy"] <= 1)).all()
    assert (frame["latency_source"] == "measured").all()
    assert (frame["latency_ms"] > 0).all() and (frame["energy_mj"] > 0).all()
    assert set(job.attrs["stage_seconds"]) >= {"train", "profile", "predictor", "search", "evaluate"}
    assert -1 <= job.attrs["predictor_quality"]["accuracy"]["kendall_tau"] <= 1


def test_open_job_and_front_dataframe(tiny_job):
    job, workdir = tiny_job
    again = hwnas.open_job("tiny", workdir=workdir)
    front = again.front()
    assert isinstance(front, pd.DataFrame) and len(front) >= 1
    assert list(front["val_accuracy"]) == sorted(front["val_accuracy"], reverse=True)
    assert {"id", "arch", "val_accuracy", "test_accuracy", "latency_ms", "energy_mj", "params", "flops", "measured"} <= set(front.columns)


def test_unknown_job_and_candidate(tiny_job):
    job, workdir = tiny_job
    with pytest.raises(JobError, match="no job named 'nope' in store sqlite:///.*; jobs here: tiny"):
        hwnas.open_job("nope", workdir=workdir)
    with pytest.raises(JobError, match="has no candidate 999"):
        job.export(workdir / "x", candidate=999)
    with pytest.raises(JobError, match="give a candidate id or budgets, not both"):
        job.export(workdir / "x", candidate=0, max_latency_ms=1.0)  # a budget must never be ignored
    assert not (workdir / "x").exists()


def test_rerunning_a_finished_job_does_no_work(tiny_job, tiny_tree):
    job, workdir = tiny_job
    again = hwnas.launch(tiny_tree, workdir=workdir)
    assert again.status == "done" and len(again.candidates()) == len(job.candidates())


def test_same_name_with_another_config_is_refused(tiny_job, tiny_tree):
    job, workdir = tiny_job
    tiny_tree["train"]["epochs"] = 3
    with pytest.raises(JobError, match="already exists with a different config"):
        hwnas.launch(tiny_tree, workdir=workdir)


def test_export_round_trip_equals_the_supernet(tiny_job, tmp_path):
    job, workdir = tiny_job
    best = job.front().iloc[0]
    out = job.export(tmp_path / "exp", candidate=int(best["id"]))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["candidate"] == int(best["id"])
    assert manifest["arch"] == json.loads(best["arch"])
    assert manifest["metrics"]["evaluated"]["val_accuracy"] == pytest.approx(best["val_accuracy"])
    assert manifest["metrics"]["evaluated"]["export_test_accuracy"] == pytest.approx(best["test_accuracy"])
    assert manifest["metrics"]["measured"]["latency_ms"] == pytest.approx(best["latency_ms"])
    assert manifest["seed"] == 0 and manifest["device"]["name"] == "local-cpu"
    assert {"torch", "pymoo", "optuna", "hwnas"} <= set(manifest["versions"])
    assert manifest["quantization"][0]["wbits"] == 32 and manifest["quantization"][0]["kind"] == "conv"

    model = hwnas.load_exported(out)
    assert isinstance(model, torch.nn.Module) and not model.training
    weights = load_file(str(out / "model.safetensors"))
    supernet = load_file(str(JobPaths(job.job_dir).supernet))
    assert sum(t.numel() for t in weights.values()) < sum(t.numel() for t in supernet.values())

    parts = Components.build(job.config, resolve_compute("cpu"))
    parts.load_weights(JobPaths(job.job_dir).supernet)
    reference = parts.recalibrated_subnet(parts.space.validate(manifest["arch"]))
    x = torch.stack([parts.data.test[i][0] for i in range(64)])
    parts.supernet.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.network(x), parts.supernet(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.network(x), reference(x), rtol=0, atol=0)
    # The exported model takes raw pixels (digits / 16) and standardizes them itself.
    section = manifest["preprocessing"]
    assert section["mean"] == manifest["data"]["mean"] and section["std"] == manifest["data"]["std"]
    assert "load_digits().images / 16" in section["raw_input"] == model.input_description
    std, mean = torch.tensor(section["std"]).view(-1, 1, 1), torch.tensor(section["mean"]).view(-1, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(x * std + mean), reference(x), rtol=1e-4, atol=1e-4)


def test_torchscript_export_checks_itself_and_loads_without_hwnas(tiny_job, tmp_path):
    import subprocess
    import sys

    job, _ = tiny_job
    best = int(job.front().iloc[0]["id"])
    out = job.export(tmp_path / "ts", candidate=best, formats=("pt", "torchscript"))
    manifest = json.loads((out / "manifest.json").read_text())
    for fmt in ("pt", "torchscript"):
        check = manifest["checks"][fmt]
        assert check["passed"] and check["inputs"] == 16 and check["max_abs_diff_off_boundaries"] <= check["tolerance"]
    assert manifest["torchscript"]["file"] == "model.torchscript.pt"
    latency = manifest["metrics"]["export_latency"]  # re-measured on the job's device after export
    assert latency["measured"] and latency["median_ms"] > 0
    assert latency["gap"] == pytest.approx(latency["median_ms"] / latency["predicted_ms"] - 1)
    assert latency["gap_above_10pct"] == (abs(latency["gap"]) > 0.10)
    # torch alone, with hwnas made unimportable, loads and runs the file like the hwnas module
    script = ("import sys; sys.modules['hwnas'] = None; import torch; "
              f"m = torch.jit.load({str(out / 'model.torchscript.pt')!r}); "
              "torch.manual_seed(0); x = torch.rand(1, 1, 8, 8); print(repr(m(x).flatten().tolist()))")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    torch.manual_seed(0)
    x = torch.rand(1, 1, 8, 8)
    with torch.no_grad():
        expected = hwnas.load_exported(out)(x).flatten()
    torch.testing.assert_close(torch.tensor(eval(run.stdout)), expected, rtol=1e-4, atol=1e-4)
    from hwnas.cli.app import main

    assert main(["export", "tiny", "--workdir", str(tiny_job[1]), "--candidate", str(best), "--out",
                 str(tmp_path / "bad"), "--format", "tflite"]) == 2


def test_export_under_a_budget_picks_the_most_accurate_on_validation_that_fits(tiny_job, tmp_path):
    job, workdir = tiny_job
    frame = job.candidates()
    budget = float(frame["latency_ms"].median())
    out = job.export(tmp_path / "b", max_latency_ms=budget)
    manifest = json.loads((out / "manifest.json").read_text())
    fitting = frame[frame["latency_ms"] <= budget]
    assert manifest["metrics"]["measured"]["latency_ms"] <= budget  # local-cpu measured it
    assert manifest["metrics"]["evaluated"]["val_accuracy"] == pytest.approx(fitting["val_accuracy"].max())
    with pytest.raises(NoCandidateError):
        job.export(tmp_path / "c", max_latency_ms=1e-6)
    assert not (tmp_path / "c").exists()


def test_front_budgets_and_export_choose_on_validation_never_on_test(tiny_job, tmp_path, capsys):
    """Two candidates under a budget: one best on validation, the other best on test. The front,
    the budget query, hwnas front's JSON and the export all take the validation-best."""
    import shutil

    from hwnas.cli.app import main
    from hwnas.job.handle import open_job

    job, workdir = tiny_job
    shutil.copy(workdir / "hwnas.db", tmp_path / "hwnas.db")  # the job's files stay shared, read-only
    copy = open_job("tiny", workdir=tmp_path)
    space = copy.space()
    base = copy.candidates().iloc[0].to_dict()
    metrics = {k: base[k] for k in ("energy_mj", "params", "flops", "macs", "bitops", "weight_kb",
                                    "predicted_accuracy", "predicted_accuracy_std", "predicted_latency_ms")}
    fast = 1e-4  # below every real candidate
    ids = {}
    for name, arch, val, test in (("val_best", space.largest(), 0.99, 0.50), ("test_best", space.smallest(), 0.60, 0.99)):
        ids[name] = copy.store.add_candidate(copy.study, space, arch, {
            **metrics, "val_accuracy": val, "test_accuracy": test, "latency_ms": fast, "latency_spread_ms": 0.0,
            "latency_source": "measured", "measured": True, "round": 9})
    front = copy.front(max_latency_ms=2 * fast)
    assert front["id"].tolist() == [ids["val_best"]]  # test_best is dominated on validation accuracy
    assert main(["front", "tiny", "--workdir", str(tmp_path), "--max-latency-ms", str(2 * fast), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["id"], r["val_accuracy"], r["test_accuracy"]) for r in rows] == [(ids["val_best"], 0.99, 0.50)]
    out = copy.export(tmp_path / "picked", max_latency_ms=2 * fast)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["candidate"] == ids["val_best"]
    assert manifest["metrics"]["evaluated"]["val_accuracy"] == 0.99
    assert manifest["metrics"]["evaluated"]["test_accuracy"] == 0.50
    assert manifest["metrics"]["evaluated"]["chosen_on"] == "val_accuracy"


def test_front_json_names_validation_and_test_accuracy(tiny_job, capsys):
    from hwnas.cli.app import main

    job, workdir = tiny_job
    assert main(["front", "tiny", "--workdir", str(workdir), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    rows = rows["front"] if isinstance(rows, dict) else rows
    assert rows and {"val_accuracy", "test_accuracy", "latency_source"} <= set(rows[0])
    assert "accuracy" not in rows[0]
    assert [r["val_accuracy"] for r in rows] == sorted((r["val_accuracy"] for r in rows), reverse=True)


def test_tampered_or_foreign_exports_are_refused(tiny_job, tmp_path):
    job, _ = tiny_job
    out = job.export(tmp_path / "t", candidate=int(job.candidates().iloc[0]["id"]))
    weights = out / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(HwnasError, match="does not match the hash in its manifest"):
        hwnas.load_exported(out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["format"] = "hwnas-export/99"
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(HwnasError, match="manifest.json does not match the sha256 digest"):
        hwnas.load_exported(out)  # altered after it was written
    record_digest(out / "manifest.json")  # one altered by whoever also rewrote its digest
    with pytest.raises(HwnasError, match="has format 'hwnas-export/99'"):
        hwnas.load_exported(out)
    with pytest.raises(HwnasError, match="not an hwnas export"):
        hwnas.load_exported(tmp_path / "empty")


def test_an_imagefolder_dataset_runs_through_training_and_export(tmp_path, tiny_tree):
    """A real loader chosen in the config: RGB images of another size flow through every stage."""
    from PIL import Image

    for label, colour in enumerate([(220, 30, 30), (30, 220, 30), (30, 30, 220)]):
        folder = tmp_path / "images" / f"class{label}"
        folder.mkdir(parents=True)
        for i in range(20):
            shade = tuple(max(0, min(255, c + 3 * i - 30)) for c in colour)
            Image.new("RGB", (12, 12), shade).save(folder / f"{i}.png")
    tiny_tree["name"] = "folder"
    tiny_tree["data"] = {"dataset": "imagefolder", "root": str(tmp_path / "images"), "image_size": 8,
                         "batch_size": 16}
    tiny_tree["train"]["recalibration_samples"] = 16
    tiny_tree["predictor"]["samples"] = 12
    job = hwnas.launch(tiny_tree, workdir=tmp_path / "w")
    assert job.attrs["input_shape"] == [3, 8, 8] and job.attrs["num_classes"] == 3
    out = job.export(tmp_path / "e", candidate=int(job.front().iloc[0]["id"]))
    assert hwnas.load_exported(out)(torch.zeros(1, 3, 8, 8)).shape == (1, 3)


def test_ensemble_uncertainty_reaches_the_candidates(tiny_job):
    job, _ = tiny_job
    frame = job.candidates()
    assert (frame["predicted_accuracy_std"] >= 0).all() and (frame["predicted_accuracy_std"] > 0).any()
    quality = job.attrs["predictor_quality"]["accuracy"]
    assert quality["mean_std"] > 0 and -1 <= quality["uncertainty_spearman"] <= 1


def test_latency_predictor_is_chosen_on_a_holdout_and_reported(tiny_job, capsys):
    from hwnas.cli.app import main

    job, workdir = tiny_job
    latency = job.attrs["latency_predictor"]
    assert latency["samples"] == 10 and latency["chosen"] in ("table_sum", "learned")
    better = min(("table_sum", "learned"), key=lambda k: latency[k]["mape"])
    assert latency["chosen"] == better
    samples = (JobPaths(job.job_dir).root / "latency_samples.csv").read_text().strip().splitlines()
    assert len(samples) == 11
    from hwnas.hwmodels.lut import read_meta

    kept = read_meta(JobPaths(job.job_dir).lut)["latency_correction"]  # recorded with the device's table
    assert kept["samples"] == 10 and kept["learned"] == latency["learned"]
    assert main(["report", "tiny", "--workdir", str(workdir)]) == 0
    text = capsys.readouterr().out
    assert "accuracy (ensemble)" in text and "latency table sum" in text and "latency learned" in text
    assert "accuracy (ensemble) uncertainty: mean std" in text
    assert main(["report", "tiny", "--workdir", str(workdir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {r["predictor"].rstrip(" *") for r in report["predictors"]} == {
        "accuracy (ensemble)", "latency table sum", "latency learned"}
    assert all(0 <= r["within_10pct"] <= 1 for r in report["predictors"])
