"""experiments/bench_lm.py --quick end to end in a subprocess: every figure the issue names is
printed, no stage fails, and the figures that are exact on any machine hold (the exported model
generates the supernet's tokens; transformers computes the exported subnet's logits)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["lm_default_job_s", "lm_largest_gap", "lm_smallest_gap", "lm_largest_test_perplexity_supernet",
         "lm_largest_test_perplexity_alone", "lm_decode_predictor_within_10pct", "lm_decode_predictor_kendall_tau",
         "lm_decode_table_sum_within_10pct", "lm_decode_param_count_within_10pct", "lm_decode_repeat_within_10pct",
         "lm_export_vs_supernet_tokens_equal", "lm_exported_vs_transformers", "date", "machine", "compared against"]


def test_bench_lm_quick_prints_every_figure(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(ROOT / "experiments" / "bench_lm.py"), "--quick", "--workdir",
                          str(tmp_path)], capture_output=True, text=True, env=env, timeout=600, check=True).stdout
    figures = dict(re.findall(r"^([a-z_ 0-9]+): (.*)$", out, flags=re.M))
    assert not [k for k in figures if k.startswith("stage_failed")], out
    missing = [name for name in NAMES if name not in figures]
    assert not missing, out
    assert float(figures["lm_export_vs_supernet_tokens_equal"]) == 1.0
    assert float(figures["lm_exported_vs_transformers_logits_max_abs_diff"]) < 1e-4
    assert float(figures["lm_largest_gap"]) > 0 and float(figures["lm_exported_vs_transformers"]) > 0
