"""Vectorized population costs and features equal the per-arch path, for every table kind."""
import copy

import numpy as np
import pytest

from hwnas.config import DeviceConfig
from hwnas.job.checks import load_job_config as load_config
from hwnas.errors import ArchError, LookupTableError
from hwnas.hwmodels.cost import CostModel
from hwnas.hwmodels.devices import AnalyticalDevice, shipped_specs, space_units
from hwnas.hwmodels.energy import Horowitz45nm
from hwnas.ir import mbconv_ops
from hwnas.hwmodels.lut import LookupTable
from hwnas.hwmodels.roofline import RooflineModel
from hwnas.predictors.accuracy import ArchFeatures
from hwnas.search.vectorized import VectorizedCosts
from hwnas.spaces.registry import build_space
from tests.conftest import TINY

MIXED = {"op_types": ["mult", "shift", "adder"], "prune_rates": [0.0, 0.5], "weight_bits": [2, 4, 32]}
KEYS = ("latency_ms", "latency_table_ms", "energy_mj", "params", "flops", "macs", "bitops", "weight_kb",
        "mult_macs", "shift_macs", "adder_macs", "memory_kb", "activation_kb")


def _space(**changes):
    tree = copy.deepcopy(TINY)
    tree["space"].update(changes)
    return build_space(load_config(tree).space, (1, 8, 8), 10)


def _op_table(space, energy: bool) -> LookupTable:
    spec = RooflineModel.from_yaml(shipped_specs()["edge-accel-45nm"])
    table = AnalyticalDevice(DeviceConfig(), spec).lookup_table(space)
    if energy:  # every row gets an energy: the table, not the model, prices energy
        for key, row in table.entries.items():
            row["energy_mj"] = 1e-6 * (1 + len(key) % 7) * (1 + row["latency_ms"])
        table._index.clear()
    return table


def _block_table(space, ops: LookupTable, energy: bool) -> LookupTable:
    """A block-granularity table priced from an op table: an mbconv row costs the sum of its ops."""
    table = LookupTable(device={})
    for unit in space_units(space, LookupTable(device={}, entries={"x": {"kind": "mbconv"}})):
        parts = mbconv_ops(unit) if unit.kind == "mbconv" else [unit]
        table.add(unit, sum(ops.latency_ms(o) for o in parts),
                  energy_mj=sum(1e-7 * (o.macs + 1) for o in parts) if energy else None)
    assert table.granularity == "block"
    return table


def _random_encodings(space, n, seed):
    """Random (mostly non-canonical) encodings, plus the deepest and shallowest extremes."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, space.upper_bounds + 1, size=(n, len(space)))
    return np.vstack([X, space.encode(space.largest()), space.encode(space.smallest())])


def _check_equal(space, cost_model, X):
    fast = VectorizedCosts(space, cost_model)
    archs = [space.decode(x) for x in X]
    got = fast.costs(X)
    assert set(got) == set(KEYS) == set(cost_model.costs(archs[0]))
    for key in KEYS:
        want = np.array([cost_model.costs(a)[key] for a in archs], dtype=float)
        np.testing.assert_allclose(got[key], want, rtol=1e-9, atol=0, err_msg=key)
    # summed in the per-arch path's order: bit-identical (a job compares predicted latency with ==)
    for key in ("latency_ms", "energy_mj", "macs", "params", "weight_kb", "memory_kb", "activation_kb"):
        np.testing.assert_array_equal(got[key], [cost_model.costs(a)[key] for a in archs], err_msg=key)
    np.testing.assert_allclose(fast.features(X), ArchFeatures(space).transform(archs), rtol=1e-9, atol=0)
    canonical = fast.canonical(X)
    np.testing.assert_array_equal(canonical, np.array([space.encode(a) for a in archs]))
    # a canonical encoding costs what the raw one costs
    np.testing.assert_array_equal(fast.costs(canonical)["latency_ms"], got["latency_ms"])


@pytest.mark.parametrize("changes", [{}, MIXED], ids=["tiny", "mixed"])
@pytest.mark.parametrize("granularity", ["op", "block"])
@pytest.mark.parametrize("table_energy", [False, True], ids=["model-energy", "table-energy"])
def test_vectorized_costs_and_features_equal_the_per_arch_path(changes, granularity, table_energy):
    space = _space(**changes)
    ops = _op_table(space, table_energy and granularity == "op")
    table = ops if granularity == "op" else _block_table(space, ops, table_energy)
    assert table.has_energy == table_energy
    X = _random_encodings(space, 150, seed=len(changes) + 3 * table_energy)
    assert (X != np.array([space.encode(space.decode(x)) for x in X])).any(axis=1).sum() > 50
    _check_equal(space, CostModel(space, table, Horowitz45nm(), batch_size=1 + 2 * table_energy), X)


def test_the_mixed_space_has_the_searched_dims():
    space = _space(**MIXED)
    assert {"s0.b1.op", "s1.b0.prune"} <= set(space.names)
    fast = VectorizedCosts(space, CostModel(space, _op_table(space, False), Horowitz45nm()))
    assert fast.n_combos == 2 * 2 * 3 * 2 * 3 * 2
    X = _random_encodings(space, 300, seed=5)
    costs = fast.costs(X)
    # every operator type occurs, and macs split by type add up
    assert (costs["shift_macs"] > 0).any() and (costs["adder_macs"] > 0).any()
    np.testing.assert_allclose(costs["mult_macs"] + costs["shift_macs"] + costs["adder_macs"], costs["macs"])


def test_supported_only_for_cnn_without_a_learned_latency():
    cnn = _space()
    table = LookupTable(device={})
    assert VectorizedCosts.supported(cnn, CostModel(cnn, table, Horowitz45nm()))
    assert not VectorizedCosts.supported(cnn, CostModel(cnn, table, Horowitz45nm(), latency=object()))
    tree = load_config(None, []).to_dict()
    tree["space"] = {"type": "vit", "patch_size": 2, "embed_dims": [16, 32], "depths": [1, 2], "heads": [1, 2],
                     "head_dim": 16, "mlp_ratios": [1.0, 2.0], "attentions": ["softmax"], "keep_ratios": [1.0],
                     "weight_bits": [8, 32], "act_bits": [8, 32]}
    vit = build_space(load_config(tree).space, (1, 8, 8), 10)
    assert not VectorizedCosts.supported(vit, CostModel(vit, table, Horowitz45nm()))
    with pytest.raises(ValueError, match="not decomposable"):
        VectorizedCosts(vit, CostModel(vit, table, Horowitz45nm()))


def test_a_missing_op_raises_only_for_rows_that_need_it():
    space = _space()
    table = _op_table(space, False)
    # drop the 5x5 depthwise convolutions on 4x4 inputs: only block s1.b1 has them (s1.b0 has stride 2)
    victim = [k for k, r in table.entries.items() if r["kind"] == "dwconv" and r["kernel"] == 5 and r["h"] == 4]
    assert victim
    for key in victim:
        del table.entries[key]
    table._index.clear()
    fast = VectorizedCosts(space, CostModel(space, table, Horowitz45nm()))
    X = _random_encodings(space, 200, seed=9)
    kernel = np.array(space.dim("s1.b1.kernel").choices)[X[:, space.names.index("s1.b1.kernel")]]
    deep = np.array(space.dim("s1.depth").choices)[X[:, space.names.index("s1.depth")]] == 2
    needs = deep & (kernel == 5)
    assert needs.any() and (~needs).any()
    fast.costs(X[~needs])
    cost_model = CostModel(space, table, Horowitz45nm())
    for row in X[needs][:3]:
        with pytest.raises(LookupTableError, match="no entry for op dwconv"):
            fast.costs(row[None])
        with pytest.raises(LookupTableError, match="no entry for op dwconv"):
            cost_model.costs(space.decode(row))
    assert fast.features(X).shape[0] == len(X)  # features need no table


def test_bad_encodings_are_refused():
    space = _space()
    fast = VectorizedCosts(space, CostModel(space, _op_table(space, False), Horowitz45nm()))
    X = np.zeros((3, len(space)), dtype=int)
    X[1, 4] = space.upper_bounds[4] + 1
    with pytest.raises(ArchError, match="out of range"):
        fast.costs(X)
    with pytest.raises(ArchError, match="matrix"):
        fast.costs(np.zeros(len(space)))
    assert fast.costs(np.zeros((0, len(space))))["macs"].shape == (0,)
    assert fast.features(np.zeros((0, len(space)))).shape == (0, ArchFeatures(space).transform(
        [space.smallest()]).shape[1])
