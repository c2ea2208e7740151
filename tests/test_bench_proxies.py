"""experiments/bench_proxies.py --quick end to end in a subprocess: every figure named in issue 18
is printed for both spaces, each a number in its range, and a rerun reads its cache."""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from hwnas.proxies import DEFAULT_PROXIES

ROOT = Path(__file__).resolve().parents[1]


def run_bench(cache: Path, *extra: str) -> tuple[dict[str, str], float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    out = subprocess.run([sys.executable, str(ROOT / "experiments" / "bench_proxies.py"), "--quick", "--cache",
                          str(cache), *extra], capture_output=True, text=True, env=env, timeout=300, check=True).stdout
    return dict(re.findall(r"^([A-Za-z_0-9 ]+): (.*)$", out, flags=re.M)), time.perf_counter() - started


def test_bench_proxies_quick_prints_every_figure(tmp_path):
    figures, _ = run_bench(tmp_path)
    assert {"date", "machine", "compared against"} <= set(figures)
    for space in ("cnn", "vit"):
        for proxy in DEFAULT_PROXIES:
            for suffix in ("kendall_tau", "spearman", "alone_kendall_tau", "alone_spearman"):
                value = float(figures[f"{proxy}_{space}_{suffix}"])
                assert math.isnan(value) or -1.0 <= value <= 1.0
            assert float(figures[f"{proxy}_{space}_ms_per_subnet"]) > 0
        for n in (4, 8):
            for variant in ("without_proxies", "with_proxies"):
                assert f"predictor_{space}_tau_at_{n}_{variant}" in figures
    again, _ = run_bench(tmp_path, "--rounds", "0")  # everything expensive comes from the cache
    assert {k: v for k, v in again.items() if k not in ("date",) and not k.endswith("_bench_s")} == \
        {k: v for k, v in figures.items() if k not in ("date",) and not k.endswith("_bench_s")}
