"""Latency predictors against a synthetic device whose true latency is known exactly."""
import numpy as np
import pytest

from hwnas.job.checks import load_job_config as load_config
from hwnas.spaces.registry import op_graph
from hwnas.hwmodels.lut import LookupTable
from hwnas.predictors.latency import FlopsLatencyPredictor, LearnedLatencyPredictor, TableSumPredictor
from hwnas.predictors.quality import regression_quality
from hwnas.spaces.registry import build_space
from tests.conftest import TINY


@pytest.fixture(scope="module")
def synthetic():
    space = build_space(load_config(dict(TINY)).space, (1, 8, 8), 10)
    rng = np.random.default_rng(0)
    table = LookupTable(device={"name": "synthetic"})
    for arch in space.covering_archs():
        for op in op_graph(space.subnet_spec(arch)):
            if op not in table:
                table.add(op, float(rng.uniform(0.01, 0.2)), 0.0, 1)
    graphs = [op_graph(space.subnet_spec(space.sample(rng))) for _ in range(240)]
    sums = np.array([table.total_latency_ms(g) for g in graphs])
    # the device's truth: every op 10 % slower than alone, 0.02 ms per op of dispatch, 0.3 ms per run
    truth = 1.1 * sums + 0.02 * np.array([len(g) for g in graphs]) + 0.3
    return table, graphs, truth


def test_table_sum_is_the_sum_and_flops_scale_is_least_squares(synthetic):
    table, graphs, truth = synthetic
    summed = TableSumPredictor(table).fit(graphs).predict(graphs[:5])
    assert summed == pytest.approx([sum(table.latency_ms(op) for op in g) for g in graphs[:5]])
    flops = FlopsLatencyPredictor().fit(graphs, truth)
    assert flops.scale_ > 0 and len(flops.predict(graphs)) == len(graphs)


def test_learned_correction_beats_the_plain_sum_on_held_out_subnets(synthetic):
    table, graphs, truth = synthetic
    fit, held = slice(0, 80), slice(80, None)
    learned = LearnedLatencyPredictor(table).fit(graphs[fit], truth[fit])
    q_learned = regression_quality(truth[held], learned.predict(graphs[held]))
    q_sum = regression_quality(truth[held], TableSumPredictor(table).predict(graphs[held]))
    assert q_learned["mape"] < 0.25 * q_sum["mape"]
    assert q_learned["within_10pct"] >= 0.95 > q_sum["within_10pct"]
    assert q_learned["kendall_tau"] >= q_sum["kendall_tau"] - 0.02
