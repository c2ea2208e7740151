"""The prefill objective: a space's latency phase (the lm space's prefill of a prompt of
``space.prompt_length`` tokens) priced on the job's device like its latency, stored per candidate,
searched on, budgeted, shown and exported; a space that states no such phase refuses it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import hwnas
from hwnas.cli.app import main
from hwnas.config import DeviceConfig
from hwnas.errors import ConfigError, LookupTableError
from hwnas.hwmodels.cost import CostModel, PhaseCost
from hwnas.hwmodels.devices import build_device
from hwnas.hwmodels.energy import energy_model
from hwnas.hwmodels.lut import LookupTable
from hwnas.job.checks import job_phases, load_job_config
from hwnas.spaces.lm import lm_prefill_graph
from hwnas.spaces.registry import build_space, latency_phase

from . import seq_space
from .test_lm_cli import CONFIG, TINY_LM

PROMPT = 16
# TINY_LM on fewer steps and evaluation windows; 4 correction samples leave 2 to fit on, too few for
# the learned correction, so the search prices prefill by the plain table sum
PREFILL_LM = [*TINY_LM, "train.max_steps=4", "data.max_eval_samples=16", "search.evaluate=2",
              f"space.prompt_length={PROMPT}", "search.objectives=[perplexity, latency, prefill]"]


def test_a_job_measures_prices_budgets_and_exports_prefill_on_its_device(tmp_path, capsys, one_thread):
    work = tmp_path / "w"
    sets = [arg for item in PREFILL_LM for arg in ("--set", item)]
    assert main(["search", str(CONFIG), "--workdir", str(work), "--quiet", *sets]) == 0
    capsys.readouterr()
    job = hwnas.open_job("text-lm", workdir=work)
    assert job.latency_phases == {"prefill": f"per {PROMPT}-token prompt"}
    frame = job.candidates()
    assert len(frame) >= 2 and frame["measured"].all() and (frame["prefill_ms"] > 0).all()
    assert (frame["prefill_spread_ms"] >= 0).all()

    # the search's figure is the table sum of lm_prefill_graph's ops on the job's table (the learned
    # correction had too few samples), and the table holds those ops, measured in place
    assert job.attrs["prefill_predictor"]["chosen"] == "table_sum"
    table, space = LookupTable.load(job.paths.lut), job.space()
    for _, row in frame.iterrows():
        spec = space.subnet_spec(space.validate(json.loads(row["arch"])))
        ops = lm_prefill_graph(spec)
        assert all(table.entry(op)["repeats"] > 0 for op in ops)
        assert row["predicted_prefill_ms"] == pytest.approx(sum(table.entry(op)["latency_ms"] for op in ops), rel=1e-9)

    # the front: CSV and JSON carry prefill_ms, the table a prefill column and what it times
    assert main(["front", "text-lm", "--workdir", str(work), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert all(r["prefill_ms"] > 0 for r in rows)
    assert main(["front", "text-lm", "--workdir", str(work), "--format", "csv"]) == 0
    assert "prefill_ms" in capsys.readouterr().out.splitlines()[0].split(",")
    assert main(["front", "text-lm", "--workdir", str(work)]) == 0
    shown = capsys.readouterr().out
    assert f"prefill per {PROMPT}-token prompt" in shown.replace("\n", "")
    assert all(f"{r['prefill_ms']:.3f}" in shown for r in rows)

    # --max-prefill-ms keeps only the candidates under it; below them all nothing is left (exit 1)
    figures = sorted(frame["prefill_ms"])
    budget = figures[len(figures) // 2]
    assert main(["front", "text-lm", "--workdir", str(work), "--format", "json", "--max-prefill-ms", str(budget)]) == 0
    kept = json.loads(capsys.readouterr().out)
    assert kept and all(r["prefill_ms"] <= budget for r in kept)
    assert main(["front", "text-lm", "--workdir", str(work), "--max-prefill-ms", str(figures[0] * 0.5)]) == 1
    assert "prefill <= " in capsys.readouterr().err

    out = tmp_path / "export"
    assert main(["export", "text-lm", "--workdir", str(work), "--max-prefill-ms", str(budget), "--out", str(out),
                 "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    chosen = frame[frame["id"] == manifest["candidate"]].iloc[0]
    prefill = manifest["metrics"]["phases"]["prefill"]
    assert prefill["prefill_ms"] == chosen["prefill_ms"] <= budget and prefill["source"] == "measured"
    # what was timed is the prefill: the phase's call runs the exported model once over a
    # prompt_length-token prompt (a timing ratio here would be a flaky test; bench figures time it)
    model = hwnas.load_exported(out).eval()
    seen: list[tuple[int, ...]] = []
    handle = model.embed.register_forward_hook(lambda _m, args, _out: seen.append(tuple(args[0].shape)))
    with torch.inference_mode():
        latency_phase("lm", "prefill").timed_call(model, 1)()
    handle.remove()
    assert seen == [(1, PROMPT)]


def test_a_space_outside_hwnas_states_a_prefill_phase_an_analytical_device_prices(tmp_path):
    """seq-test (tests/seq_space.py) states its phase through the registry alone; a job on an
    analytical device stores, for every candidate, the roofline's sum over the phase's ops."""
    from pydoc_data.topics import topics

    docs = tmp_path / "docs"
    docs.mkdir()
    for name in sorted(topics)[:8]:
        (docs / f"{name}.txt").write_text(topics[name], encoding="utf-8")
    tree = {"name": "seq", "data": {"dataset": "text", "root": str(docs), "context_length": 8, "batch_size": 64},
            "space": {"type": seq_space.NAME, "embed": [8, 16], "hidden": [8, 32], "prompt_length": 6},
            "train": {"epochs": 1, "max_steps": 2, "subnets_per_step": 2}, "device": {"name": "edge-accel-45nm"},
            "predictor": {"samples": 10, "model": "ridge"},
            "search": {"objectives": ["perplexity", "latency", "prefill"], "population": 8, "generations": 2,
                       "evaluate": 2, "batch": 2}}
    assert list(job_phases(load_job_config(tree))) == ["prefill"]
    job = hwnas.launch(tree, workdir=tmp_path / "w")
    frame, table, space = job.candidates(), LookupTable.load(job.paths.lut), job.space()
    assert job.latency_phases == {"prefill": "per 6-token prompt"} and len(frame) >= 2
    for _, row in frame.iterrows():
        ops = seq_space.seq_prefill_graph(space.subnet_spec(space.validate(json.loads(row["arch"]))))
        assert [op.h for op in ops] == [6, 6] and row["latency_source"] == "analytical"
        assert row["prefill_ms"] == row["predicted_prefill_ms"] == sum(table.entry(op)["latency_ms"] for op in ops)
        assert row["prefill_ms"] > row["latency_ms"] and row["prefill_spread_ms"] == 0  # six tokens against one
    assert len(job.front(max_prefill_ms=float(frame["prefill_ms"].max()))) >= 1


def test_a_table_device_must_price_the_prefill_ops(tmp_path):
    """An lm table device without the prefill's ops is refused when prefill is asked for, by op."""
    space = build_space({"type": "lm", "hidden_size": 32, "num_layers": 2, "heads": 4, "kv_heads": 2,
                         "intermediate_size": 64, "context_length": 16, "prompt_length": 8}, (16,), 256)
    phases = {"prefill": latency_phase("lm", "prefill")}
    roofline = build_device(DeviceConfig(name="edge-accel-45nm"))
    decode_only, both = tmp_path / "decode.csv", tmp_path / "both.csv"
    roofline.lookup_table(space).save(decode_only)
    roofline.lookup_table(space, phases).save(both)
    def device(path: Path):
        return build_device(DeviceConfig(name="edge-accel-45nm", table=str(path)))
    assert device(decode_only).lookup_table(space)  # without prefill asked for: fine
    with pytest.raises(LookupTableError, match=r"has no entry for op embedding-tied-in256x8x1-"):  # 8 tokens
        device(decode_only).lookup_table(space, phases)
    table = device(both).lookup_table(space, phases)
    costs = CostModel(space, table, energy_model("horowitz-45nm"),
                      phases={"prefill": PhaseCost(phases["prefill"])}).costs(space.largest())
    ops = lm_prefill_graph(space.subnet_spec(space.largest()))
    assert costs["prefill_ms"] == pytest.approx(sum(table.entry(op)["latency_ms"] for op in ops), rel=1e-12)


def test_a_space_without_the_phase_refuses_prefill_in_one_line(tmp_path, tiny_tree, capsys):
    with pytest.raises(ConfigError, match=r"^config: search.objectives: the 'cnn' space prices no prefill latency \(it "
                                          r"states none in its SpaceEntry.latency_phases\)$"):
        load_job_config({**tiny_tree, "search": {**tiny_tree["search"],
                                                 "objectives": ["accuracy", "latency", "prefill"]}})
    with pytest.raises(ConfigError, match=r"^config: search.max_prefill_ms: the 'cnn' space prices no prefill"):
        load_job_config({**tiny_tree, "search": {**tiny_tree["search"], "max_prefill_ms": 1.0}})
    path = tmp_path / "cnn.yaml"
    path.write_text(yaml.safe_dump(tiny_tree))
    code = main(["search", str(path), "--workdir", str(tmp_path / "w"), "--set",
                 "search.objectives=[accuracy, prefill]"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "search.objectives" in err and "prefill" in err
    assert not (tmp_path / "w" / "hwnas.db").exists()  # refused before any job existed


def test_prompt_length_defaults_to_32_within_the_context_and_must_fit_it():
    def lm(**keys):
        return load_job_config({"data": {"dataset": "pydoc", "context_length": 16},
                                "space": {"type": "lm", "hidden_size": 32, "heads": 4, "kv_heads": 2,
                                          "intermediate_size": 64, **keys},
                                "search": {"objectives": ["perplexity", "latency", "prefill"]}}).space
    assert lm(context_length=64).prompt_length == 32 and lm(context_length=16).prompt_length == 16
    assert lm(context_length=64, prompt_length=48).prompt_length == 48
    with pytest.raises(ConfigError, match="space.prompt_length: 65 exceeds context_length 64"):
        lm(context_length=64, prompt_length=65)
