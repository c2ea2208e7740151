"""memory_kb: the op-graph figure (hwnas.footprint) against the tensors of real forward passes of
exported CNN and ViT subnets, and the objective and budget everywhere budgets go."""
import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch

from hwnas.cli.app import main
from hwnas.errors import ConfigError, HwnasError, NoCandidateError
from hwnas.footprint import activation_profile, subnet_memory, weight_bits
from hwnas.ir import OpSig
from hwnas.job.checks import load_job_config
from hwnas.search.budgets import BUDGET_KEYS, Budgets
from hwnas.search.front import query_front
from hwnas.search.objectives import objective_column
from hwnas.spaces.ops.layers import op_modules
from hwnas.spaces.registry import build_space, op_graph, op_inputs, space_entry
from hwnas.utils.memory import peak_memory_bytes
from tests.conftest import TINY

BATCH = 3
CNN = {"expand_ratios": [1, 3], "op_types": ["mult", "shift"], "weight_bits": [4, 32], "act_bits": [4, 32]}
VIT = {"type": "vit", "patch_size": 2, "embed_dims": [8, 16], "depths": [1, 2], "heads": [1, 2], "head_dim": 8,
       "mlp_ratios": [1.0, 2.0], "attentions": ["softmax", "linear", "relu_linear", "binary"],
       "keep_ratios": [0.5, 1.0], "weight_bits": [8, 32], "act_bits": [8, 32], "weight_quant": ["uniform", "log2"]}


def _space(section):
    tree = copy.deepcopy(TINY)
    tree["space"] = {**tree["space"], **section} if section.get("type", "cnn") == "cnn" else section
    return build_space(load_job_config(tree).space, (1, 8, 8), 10)


def _archs(space, n=6):
    rng = np.random.default_rng(0)
    return [space.largest(), space.smallest(), *(space.sample(rng) for _ in range(n))]


def _live_bytes(model, x) -> list[int]:
    """Bytes of activation tensors alive while each op of a real forward pass runs.

    Forward hooks on the modules that each execute one op of the op graph record the tensors it
    reads and the one it writes, identified by storage (q, k and v are views of one qkv tensor:
    counted once, at its storage's bytes). A storage is alive from the op that writes it (the
    input: from the start) to the last op that reads it; one that an op reads but no op wrote is a
    layout copy made between ops (a transformer's head merge), alive from its reader on. Every
    tensor is kept referenced while recording, so no storage address is reused.
    """
    keep, sizes, calls = [x], {}, []

    def storage(t):
        keep.append(t)
        sizes[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t.untyped_storage().data_ptr()

    def hook(module, args, out):
        calls.append(({storage(a) for a in args if torch.is_tensor(a)}, storage(out)))

    handles = [m.register_forward_hook(hook) for m in op_modules(model)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    born, last = {storage(x): 0}, {}
    for k, (reads, wrote) in enumerate(calls):
        for s in reads:
            born.setdefault(s, k)
            last[s] = k
        born.setdefault(wrote, k)
        last.setdefault(wrote, k)
    return [sum(sizes[s] for s in born if born[s] <= k <= last[s]) for k in range(len(calls))]


@pytest.mark.parametrize("section", [CNN, VIT], ids=["cnn", "vit"])
def test_peak_activations_equal_the_tensors_of_a_real_forward_pass(section):
    """Exact, per op: both sides count the same tensors at op granularity (a fused op's inner
    temporaries on neither), so any difference is a wrong shape, a missing held tensor (a residual
    input, q and k kept for token selection) or a wrong batch scaling."""
    space = _space(section)
    entry = space_entry(space.name)
    for arch in _archs(space):
        spec = space.subnet_spec(arch)
        ops = op_graph(spec)
        x = torch.randn(BATCH, *space.input_shape)
        measured = _live_bytes(entry.build_standalone(spec).eval(), x)
        analytical = [4 * BATCH * e for e in activation_profile(ops, op_inputs(spec, ops))]
        assert measured == analytical, space.summary(arch)
        memory = subnet_memory(ops, op_inputs(spec, ops), BATCH)
        assert memory["activation_kb"] * 1024 == max(measured)


@pytest.mark.parametrize("section", [CNN, VIT], ids=["cnn", "vit"])
def test_eager_pytorch_allocates_at_least_the_peak_and_at_most_three_times_it(section):
    """What the PyTorch allocator really holds during an eager forward (its profiler's allocation
    events). At least the op-graph peak less the input (allocated before measuring): eager PyTorch
    keeps every tensor the op graph says is alive. At most 3x: it also keeps each op's unfused
    temporaries (a convolution's output before BN and activation, the fake quantizer's rounding
    steps, an attention kernel's scratch), each no larger than the op's inputs and outputs."""
    space = _space(section)
    entry = space_entry(space.name)
    for arch in _archs(space, n=3):
        spec = space.subnet_spec(arch)
        ops = op_graph(spec)
        model, x = entry.build_standalone(spec).eval(), torch.randn(BATCH, *space.input_shape)
        with torch.no_grad():
            allocated = peak_memory_bytes(lambda: model(x))
        peak = 1024 * subnet_memory(ops, op_inputs(spec, ops), BATCH)["activation_kb"]
        assert peak - x.nbytes <= allocated <= 3 * peak, (space.summary(arch), allocated / peak)


@pytest.mark.parametrize("section", [CNN, VIT], ids=["cnn", "vit"])
def test_weight_bytes_are_the_models_parameters_at_their_bit_widths(section):
    """Float subnets: the exported model's parameter bytes. Quantized: each quantized layer's
    weights at its bit-width (a shift weight in at most 8 bits), every other parameter in float."""
    space = _space(section)
    for arch in _archs(space):
        spec = space.subnet_spec(arch)
        model = space_entry(space.name).build_standalone(spec)
        bits_of = {}
        for m in model.modules():
            layer = getattr(m, "conv", None) or getattr(m, "linear", None)
            if hasattr(m, "wbits") and layer is not None:
                bits_of[id(layer.weight)] = min(m.wbits, 8) if getattr(m, "op", "mult") == "shift" else m.wbits
        want = sum(p.numel() * bits_of.get(id(p), 32) for p in model.parameters())
        assert weight_bits(op_graph(spec)) == want, space.summary(arch)
        if arch == space.largest():  # float: the model's bytes as stored
            assert want == 8 * sum(p.numel() * p.element_size() for p in model.parameters())


def test_a_residual_input_stays_alive_until_its_add():
    """By hand: a 1x1 conv 4->8 on 2x2, a 1x1 conv 8->4, the add of the input; per sample the input
    is 16 elements, the hidden 32, the branch output 16, the sum 16."""
    ops = [OpSig("conv", 4, 2, 2, 8), OpSig("conv", 8, 2, 2, 4), OpSig("add", 4, 2, 2, 4)]
    assert activation_profile(ops) == [16 + 32, 32 + 16, 16 + 16]  # a chain: the input is dropped
    assert activation_profile(ops, [(-1,), (0,), (1, -1)]) == [16 + 32, 16 + 32 + 16, 16 + 16 + 16]
    with pytest.raises(ValueError, match="reads tensor 2"):
        activation_profile(ops, [(-1,), (0,), (2,)])


def test_the_vectorized_path_gives_the_per_arch_figure():
    """Bit for bit, on blocks with and without an expand conv and a residual, pruned or not."""
    from hwnas.hwmodels.cost import CostModel
    from hwnas.hwmodels.energy import Horowitz45nm
    from hwnas.search.vectorized import VectorizedCosts
    from tests.test_vectorized import _op_table

    space = _space({**CNN, "prune_rates": [0.0, 0.5]})
    model = CostModel(space, _op_table(space, False), Horowitz45nm(), batch_size=BATCH)
    X = np.vstack([np.random.default_rng(1).integers(0, space.upper_bounds + 1, (80, len(space))),
                   space.encode(space.largest()), space.encode(space.smallest())])
    got = VectorizedCosts(space, model).costs(X)
    for key in ("memory_kb", "activation_kb"):
        np.testing.assert_array_equal(got[key], [model.costs(space.decode(x))[key] for x in X], err_msg=key)
    assert len(set(got["activation_kb"])) > 3 and len(set(got["memory_kb"])) > 20


def test_budgets_are_one_value_with_a_field_per_kind():
    assert tuple(Budgets.__dataclass_fields__) == BUDGET_KEYS
    budgets = Budgets.of({"max_memory_kb": 12, "min_accuracy": None}, max_latency_ms=0.5)
    assert budgets.active() == {"max_latency_ms": 0.5, "max_memory_kb": 12.0}
    assert budgets.columns() == {"latency_ms": 0.5, "memory_kb": 12.0}
    assert budgets.describe() == "latency <= 0.5 ms and memory <= 12 kB"
    assert objective_column("memory") == "memory_kb"
    with pytest.raises(HwnasError, match="--max-memory-kb must be a number above 0"):
        Budgets(max_memory_kb=float("nan"))
    with pytest.raises(HwnasError, match="unknown budget 'max_memory'"):
        Budgets.of(max_memory=1.0)
    with pytest.raises(ConfigError, match="search.max_memory_kb"):
        load_job_config({**copy.deepcopy(TINY), "search": {"max_memory_kb": -1}})


def test_the_memory_budget_filters_the_front_and_names_the_nearest():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"id": range(30), "arch": ["{}"] * 30, "val_accuracy": rng.uniform(0.8, 1, 30),
                          "latency_ms": rng.uniform(0.5, 3, 30), "energy_mj": rng.uniform(1e-3, 1e-2, 30),
                          "memory_kb": rng.uniform(10, 100, 30)})
    cap = float(frame.memory_kb.median())
    got = query_front(frame, ["accuracy", "memory"], Budgets(max_memory_kb=cap))
    assert (got.memory_kb <= cap).all() and len(got) >= 1
    smallest = frame.sort_values("memory_kb").iloc[0]
    with pytest.raises(NoCandidateError, match=rf"memory <= 1 kB; the nearest is #{int(smallest.id)} .*memory "):
        query_front(frame, ["accuracy", "latency"], Budgets(max_memory_kb=1))


def test_a_job_stores_memory_and_the_cli_takes_the_budget(tiny_job, capsys, tmp_path):
    job, work = tiny_job
    frame = job.candidates()
    space, batch = job.space(), job.config.device.batch_size
    for _, row in frame.iterrows():  # stored by the search: the op graph's figure at the device's batch
        spec = space.subnet_spec(space.validate(json.loads(row["arch"])))
        assert row["memory_kb"] == subnet_memory(op_graph(spec), op_inputs(spec, op_graph(spec)), batch)["memory_kb"]
    old = job.store.candidates(job.study).assign(memory_kb=None, activation_kb=None)  # as stored before memory_kb
    pd.testing.assert_frame_equal(job._with_memory(old), frame)  # an older job's candidates get the same figures
    cap = float(frame["memory_kb"].median())
    assert main(["front", "tiny", "--workdir", str(work), "--max-memory-kb", str(cap), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(r["memory_kb"] <= cap for r in rows)
    assert main(["front", "tiny", "--workdir", str(work), "--max-memory-kb", str(cap)]) == 0
    header = capsys.readouterr().out.splitlines()[1].split()
    assert "kB" in header and "MFLOPs" not in header  # memory shown where it is budgeted
    assert main(["front", "tiny", "--workdir", str(work), "--max-memory-kb", "0.001"]) == 1
    assert "error: no candidate meets memory <= 0.001 kB; the nearest is #" in capsys.readouterr().err
    assert main(["export", "tiny", "--workdir", str(work), "--max-memory-kb", "nan", "--out", str(tmp_path)]) == 2
    assert "--max-memory-kb must be a number above 0" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
