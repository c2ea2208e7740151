"""The README's code snippets run as written, and print what they promise."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def readme_snippet(name: str) -> str:
    """The python block between ``<!-- snippet: NAME -->`` and ``<!-- end snippet -->``."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    found = re.search(rf"<!-- snippet: {re.escape(name)} -->\s*```python\n(.*?)```\s*<!-- end snippet -->", text, re.S)
    assert found, f"README has no snippet {name!r}"
    return found.group(1)


def test_load_preprocess_predict_scores_raw_digits_as_the_network_scores_standardized_ones(tiny_job, tmp_path):
    """The snippet feeds raw pixels / 16 to the exported model; its accuracy must equal the bare
    network's on the same digits standardized by hwnas's own data loader (a model that ignored its
    preprocessing scores near chance on raw pixels)."""
    from hwnas.data import load_data
    from hwnas.export.loading import load_exported

    job, _ = tiny_job
    best = int(job.front().iloc[0]["id"])
    job.export(tmp_path / "exported", candidate=best)
    run = subprocess.run([sys.executable, "-c", readme_snippet("load-preprocess-predict")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    description, score = run.stdout.strip().splitlines()
    assert description.startswith("sklearn.datasets.load_digits().images / 16")
    accuracy = float(re.fullmatch(r"accuracy on all 1797 digits: (\d\.\d{4})", score).group(1))

    network = load_exported(tmp_path / "exported").network  # expects standardized inputs
    data = load_data("digits")
    correct = 0
    with torch.no_grad():
        for split in (data.train, data.val, data.test):
            x, y = split.tensors
            correct += int((network(x).argmax(1) == y).sum())
    assert abs(accuracy - correct / 1797) <= 2 / 1797  # a rounding flip or two at quantizer boundaries
    assert accuracy > 0.5
