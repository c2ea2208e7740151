"""A language-model job through the real CLI: text files (a part of the default corpus), a tiny next-token space
defined in the tests (tests/seq_space.py), perplexity as the quality objective. Search -> front
(ordered by validation perplexity, the per-token latency said) -> budgets -> report, and the stored
perplexity checked against one computed here from the extracted subnet."""
from __future__ import annotations

import json
import math

import torch
import torch.nn.functional as F
import yaml
from pydoc_data.topics import topics

import hwnas
from hwnas.cli.app import main
from hwnas.train.components import Components

from . import seq_space

TREE = {
    "name": "lm", "seed": 0,
    "data": {"dataset": "text", "context_length": 16, "batch_size": 64},
    "space": {"type": seq_space.NAME, "embed": [8, 16], "hidden": [8, 32]},
    "train": {"epochs": 1, "subnets_per_step": 3, "recalibration_samples": 64},
    "device": {"name": "edge-accel-45nm"},
    "predictor": {"samples": 10, "model": "ridge"},
    "search": {"objectives": ["perplexity", "latency"], "population": 8, "generations": 2, "evaluate": 2,
               "batch": 2},
}


def test_a_language_model_job_searches_and_queries_on_perplexity(tmp_path, capsys):
    config, work, docs = tmp_path / "lm.yaml", tmp_path / "w", tmp_path / "docs"
    docs.mkdir()
    for name in sorted(topics)[:16]:  # about 60,000 characters of the default corpus, one file a document
        (docs / f"{name}.txt").write_text(topics[name], encoding="utf-8")
    config.write_text(yaml.safe_dump({**TREE, "data": {**TREE["data"], "root": str(docs)}}))
    w = ["--workdir", str(work)]
    assert main(["search", str(config), *w, "--quiet"]) == 0
    capsys.readouterr()
    assert main(["front", "lm", *w, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    ppl = [r["val_perplexity"] for r in rows]
    assert ppl == sorted(ppl) and all(1.0 < p < 256 for p in ppl)  # lowest first; better than uniform bytes
    assert all(0 <= r["val_accuracy"] <= 1 and r["test_perplexity"] > 1 for r in rows)

    job = hwnas.open_job("lm", workdir=work)
    assert job.attrs["latency_unit"] == "per generated token" and "perplexity" in job.attrs["predictor_quality"]
    # the stored figure against one computed here: the extracted subnet on the whole split at once
    parts = Components.build(job.config, torch.device("cpu"))
    parts.load_weights(job.paths.supernet)
    model = parts.recalibrated_subnet(parts.space.validate(rows[0]["arch"]))
    x, y = parts.data.val.tensors
    with torch.no_grad():
        loss = F.cross_entropy(model(x).flatten(0, 1).double(), y.flatten())
    assert math.isclose(rows[0]["val_perplexity"], math.exp(float(loss)), rel_tol=1e-5)

    assert main(["front", "lm", *w]) == 0
    table = capsys.readouterr().out
    assert "val ppl" in table and "per generated token" in table
    bound = (ppl[0] + ppl[-1]) / 2 if len(ppl) > 1 else ppl[0] * 1.01
    assert main(["front", "lm", *w, "--max-perplexity", str(bound), "--format", "json"]) == 0
    assert all(r["val_perplexity"] <= bound for r in json.loads(capsys.readouterr().out))
    assert main(["front", "lm", *w, "--max-perplexity", str(ppl[0] * 0.9)]) == 1
    assert "validation perplexity" in capsys.readouterr().err
    assert main(["front", "lm", *w, "--min-accuracy", "0.1"]) == 2
    assert "judged by perplexity" in capsys.readouterr().err
    out = tmp_path / "exported"
    assert main(["export", "lm", "--max-perplexity", str(ppl[-1]), "--out", str(out), *w, "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["metrics"]["evaluated"]["chosen_on"] == "val_perplexity" and manifest["checks"]["pt"]["passed"]
    exported = hwnas.load_exported(out)
    assert isinstance(exported, seq_space.StandaloneSeq)  # token ids in, nothing to standardize
    with torch.no_grad():
        assert torch.allclose(exported(x[:4]), model(x[:4]))  # the front's first: the lowest perplexity
    assert main(["report", "lm", *w, "--out", str(tmp_path / "report"), "--quiet"]) == 0
    page = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    assert "validation perplexity" in page and "best validation perplexity" in page
