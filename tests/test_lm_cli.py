"""The shipped language-model config end to end through the real CLI, on tiny settings: search on
the pydoc corpus (byte tokens), the front under a per-token latency budget, export, and
``load_exported(...).generate`` from a text prompt."""
from __future__ import annotations

import json
from pathlib import Path

import hwnas
from hwnas.cli.app import main

CONFIG = Path(__file__).resolve().parents[1] / "experiments" / "text-lm.yaml"
# heads, key-value heads and MLP width fixed (depth and weight bits searched): every subnet is a
# homogeneous Llama, which the hf format can write
TINY_LM = ["train.epochs=1", "data.context_length=32", "space.context_length=32", "space.hidden_size=32",
           "space.intermediate_size=64", "space.mlp_choices=[64]", "space.head_choices=[4]",
           "space.kv_head_choices=[2]", "space.group_size=16",
           "predictor.samples=12", "search.population=8", "search.generations=2", "search.evaluate=3",
           "device.repeats=3", "device.warmup=1", "device.rounds=3", "device.correction_samples=4"]


def test_text_lm_searches_queries_exports_and_generates(tmp_path, capsys):
    work = tmp_path / "w"
    sets = [arg for item in TINY_LM for arg in ("--set", item)]
    assert main(["search", str(CONFIG), "--workdir", str(work), "--quiet", *sets]) == 0
    capsys.readouterr()
    assert main(["front", "text-lm", "--workdir", str(work), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(row["measured"] for row in rows)
    perplexities = [row["val_perplexity"] for row in rows]
    assert perplexities == sorted(perplexities) and all(1.0 < p < 256.0 for p in perplexities)  # below uniform bytes

    # a per-token budget between the front's fastest and slowest keeps only the candidates under it
    latencies = sorted(row["latency_ms"] for row in rows)
    budget = latencies[len(latencies) // 2]
    assert main(["front", "text-lm", "--workdir", str(work), "--format", "json", "--max-latency-ms", str(budget)]) == 0
    kept = json.loads(capsys.readouterr().out)
    assert kept and all(row["latency_ms"] <= budget for row in kept)
    assert main(["front", "text-lm", "--workdir", str(work), "--max-latency-ms", str(budget)]) == 0
    assert "per generated token" in capsys.readouterr().out

    out = tmp_path / "export"
    assert main(["export", "text-lm", "--workdir", str(work), "--max-latency-ms", str(budget), "--out", str(out),
                 "--format", "all"]) == 0
    assert "generates the supernet's greedy tokens" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["generation_check"]["equal"] and manifest["checks"]["pt"]["passed"]
    assert set(manifest["checks"]) == {"pt", "torchscript", "onnx", "hf"}  # each checked against the supernet
    assert all(check["passed"] for check in manifest["checks"].values())
    assert manifest["checks"]["hf"]["max_abs_diff"] <= 1e-4 and "int8" in manifest["skipped_formats"]
    from transformers import LlamaForCausalLM  # the hf folder loads with transformers alone
    import torch

    hf = LlamaForCausalLM.from_pretrained(str(out / "hf"), local_files_only=True).eval()
    prompt = torch.tensor([list(b"The return statement ")])
    assert torch.equal(hf.generate(prompt, max_new_tokens=6, do_sample=False),
                       hwnas.load_exported(out).generate(prompt, 6))
    model = hwnas.load_exported(out)
    text = model.generate("The return statement ", 12)
    assert isinstance(text, str) and len(text.encode("utf-8", "surrogateescape")) <= 12 * 4
    ids = model.generate(list(b"def f(x):"), 5)
    assert ids.shape == (1, 9 + 5) and ids[0, :9].tolist() == list(b"def f(x):")
