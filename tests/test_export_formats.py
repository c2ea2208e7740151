"""Every export format round-trips within its stated tolerance; int8, shift and adder layers,
fine-tuning, and files that run without hwnas (ONNX without torch either)."""
from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import hwnas
from hwnas.errors import HwnasError
from hwnas.export.candidate import TOLERANCE
from hwnas.export.formats import load_onnx, load_torchscript, save_onnx, save_shift_exponents, save_torchscript
from hwnas.job.paths import JobPaths
from hwnas.job.store import arch_of
from hwnas.utils.io import record_digest, sha256_file

from .conftest import TINY


def _run_python(script: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def ops_job(tmp_path_factory):
    """A job whose every searched layer is 8-bit and whose blocks mix multiply, shift and adder
    layers: all-8-bit multiply candidates (int8), and candidates with shift or adder blocks."""
    tree = copy.deepcopy(TINY)
    tree["name"] = "ops8"
    tree["space"].update({"weight_bits": [8], "act_bits": [8], "op_types": ["mult", "shift", "adder"],
                          "expand_ratios": [2], "kernel_sizes": [3]})
    tree["train"]["epochs"] = 1
    tree["predictor"]["samples"] = 12
    tree["device"]["correction_samples"] = 0
    tree["search"].update({"population": 8, "generations": 2, "evaluate": 4})
    job = hwnas.launch(tree, workdir=tmp_path_factory.mktemp("ops8"))
    return job


def _candidate(job, predicate) -> int:
    space = job.space()
    for _, row in job.candidates().iterrows():
        ops = [b["op"] for b in space.subnet_spec(arch_of(row))["blocks"]]
        if predicate(ops):
            return int(row["id"])
    raise AssertionError(f"no candidate of {job.name} satisfies the test's predicate")


def test_onnx_export_matches_the_supernet_and_runs_without_torch_or_hwnas(tiny_job, tmp_path):
    job, _ = tiny_job
    out = job.export(tmp_path / "onnx", candidate=int(job.front().iloc[0]["id"]), formats=("onnx",))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["formats"] == ["pt", "onnx"]
    check = manifest["checks"]["onnx"]
    assert check["passed"] and check["tolerance"] == TOLERANCE["onnx"] == 1e-4
    assert check["max_abs_diff_off_boundaries"] <= 1e-4 and check["inputs"] == 16
    assert manifest["onnx"]["sha256"] == sha256_file(out / "model.onnx")
    assert manifest["onnx"]["exporter"].startswith("torch.export")
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "manifest.json.sha256", "model.onnx",
                                                     "model.safetensors"]  # one onnx file
    # numpy and onnxruntime alone: torch and hwnas made unimportable
    script = ("import sys; sys.modules['torch'] = None; sys.modules['hwnas'] = None\n"
              "import numpy as np, onnxruntime as ort\n"
              f"s = ort.InferenceSession({str(out / 'model.onnx')!r}, providers=['CPUExecutionProvider'])\n"
              "x = np.random.default_rng(0).random((1, 1, 8, 8), dtype=np.float32)\n"
              "print(repr(s.run(['logits'], {'input': x})[0].ravel().tolist()))")
    run = _run_python(script)
    assert run.returncode == 0, run.stderr
    x = torch.from_numpy(np.random.default_rng(0).random((1, 1, 8, 8), dtype=np.float32))
    with torch.no_grad():
        expected = hwnas.load_exported(out)(x).flatten()
    torch.testing.assert_close(torch.tensor(eval(run.stdout)), expected, rtol=1e-4, atol=1e-4)


def test_a_model_with_shift_and_adder_layers_exports_and_reloads_without_the_trainer(tiny_tree, tmp_path):
    """One network holding both a shift and an adder block: the shift exponents rebuild its weights
    exactly, and the pt, TorchScript and ONNX forms agree with it; the pt form is rebuilt by
    :func:`hwnas.load_exported` in a process where hwnas's training code cannot be imported."""
    from hwnas.job.checks import load_job_config as load_config
    from hwnas.spaces.registry import build_space, space_entry

    space_cfg = {**tiny_tree["space"], "op_types": ["shift", "adder"], "weight_bits": [4], "act_bits": [4]}
    config = load_config(tiny_tree | {"space": space_cfg})
    space = build_space(config.space, (1, 8, 8), 10)
    values = space.largest().to_dict()
    values.update({"s0.b0.op": "shift", "s0.b1.op": "adder", "s1.b0.op": "shift", "s1.b1.op": "adder"})
    arch = space.validate(values)
    torch.manual_seed(0)
    supernet = space_entry("cnn").build_supernet(space)
    supernet.set_active(arch)
    supernet.train()
    with torch.no_grad():
        supernet(torch.randn(32, 1, 8, 8))  # initializes the quantizer steps and BN statistics
    model = supernet.extract().eval()
    spec = supernet.spec
    assert {b["op"] for b in spec["blocks"]} == {"shift", "adder"}

    shifts = save_shift_exponents(model, tmp_path / "shift.safetensors")
    stored = load_file(str(tmp_path / "shift.safetensors"))
    state = model.state_dict()
    assert shifts["layers"] and len(stored) == 2 * len(shifts["layers"])
    for name in shifts["layers"]:
        sign, exponent = stored[f"{name}.sign"], stored[f"{name}.exponent"]
        assert sign.dtype == exponent.dtype == torch.int8
        rebuilt = sign.float() * torch.exp2(exponent.float())
        assert torch.equal(rebuilt, state[f"{name}.conv.weight"])  # exact, not approximately

    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        reference = torch.cat([model(xi[None]) for xi in x])
    save_torchscript(model, x[:1], tmp_path / "m.pt")
    save_onnx(model, x[:1], tmp_path / "m.onnx")
    scripted, onnx_run = load_torchscript(tmp_path / "m.pt"), load_onnx(tmp_path / "m.onnx")
    with torch.no_grad():
        for run, tolerance in ((scripted, TOLERANCE["torchscript"]), (onnx_run, TOLERANCE["onnx"])):
            got = torch.cat([run(xi[None]) for xi in x])
            assert float((got - reference).abs().max()) <= tolerance

    # the manifest-driven rebuild, with the trainer, the pipeline and Ray training unimportable
    from safetensors.torch import save_file

    from hwnas.export.loading import MANIFEST_FORMAT

    export_dir = tmp_path / "exp"
    export_dir.mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, str(export_dir / "model.safetensors"))
    (export_dir / "manifest.json").write_text(json.dumps({
        "format": MANIFEST_FORMAT, "space": "cnn", "subnet": spec, "preprocessing": {"mean": [0.0], "std": [1.0]},
        "weights": {"file": "model.safetensors", "sha256": sha256_file(export_dir / "model.safetensors")}}))
    record_digest(export_dir / "manifest.json")
    torch.save(x, tmp_path / "x.pt")
    blocked = ["hwnas.train.trainer", "hwnas.train.distributed", "hwnas.job.runner", "hwnas.job.rounds", "ray"]
    script = (f"import sys\nfor name in {blocked!r}: sys.modules[name] = None\n"
              "import torch, hwnas\n"
              f"m = hwnas.load_exported({str(export_dir)!r}); x = torch.load({str(tmp_path / 'x.pt')!r})\n"
              "with torch.no_grad(): print(repr(torch.cat([m(xi[None]) for xi in x]).flatten().tolist()))\n"
              "print(sorted(n for n in sys.modules if n.startswith('hwnas.spaces.ops')))")
    run = _run_python(script)
    assert run.returncode == 0, run.stderr
    values_line, modules_line = run.stdout.strip().splitlines()
    torch.testing.assert_close(torch.tensor(eval(values_line)).view_as(reference), reference, rtol=0, atol=0)
    assert "hwnas.spaces.ops.adder" in eval(modules_line)


def test_job_export_of_shift_and_adder_candidates_in_every_format(ops_job, tmp_path):
    job = ops_job
    shift_id = _candidate(job, lambda ops: "shift" in ops)
    adder_id = _candidate(job, lambda ops: "adder" in ops)
    for cid in (shift_id, adder_id):
        out = job.export(tmp_path / str(cid), candidate=cid, formats=("all",))
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["formats"] == ["pt", "torchscript", "onnx"]
        assert "cannot run" in manifest["skipped_formats"]["int8"]
        assert all(c["passed"] and c["max_abs_diff_off_boundaries"] <= c["tolerance"]
                   for c in manifest["checks"].values())
        assert set(manifest["checks"]) == {"pt", "torchscript", "onnx"}
        has_shift = any(b["op"] == "shift" for b in manifest["subnet"]["blocks"])
        assert ("shift_exponents" in manifest) == has_shift
        if has_shift:
            assert manifest["shift_exponents"]["layers"]
            assert manifest["shift_exponents"]["sha256"] == sha256_file(out / "shift_exponents.safetensors")
    with pytest.raises(HwnasError, match="cannot export int8: it has (shift|adder) layers"):
        job.export(tmp_path / "bad", candidate=shift_id, formats=("int8",))


def test_int8_export_of_an_all_8bit_subnet_runs_next_to_the_fake_quantized_one(ops_job, tmp_path):
    job = ops_job
    cid = _candidate(job, lambda ops: set(ops) == {"mult"})
    out = job.export(tmp_path / "int8", candidate=cid, formats=("int8",))
    manifest = json.loads((out / "manifest.json").read_text())
    int8 = manifest["int8"]
    assert manifest["formats"] == ["pt", "int8"]
    assert int8["sha256"] == sha256_file(out / int8["file"])
    assert int8["fake_quant_test_accuracy"] == manifest["metrics"]["evaluated"]["export_test_accuracy"]
    assert 0 <= int8["test_accuracy"] <= 1 and 0 <= int8["top1_agreement_with_fake_quant"] <= 1
    assert int8["latency_ms"] > 0 and int8["fake_quant_torchscript_latency_ms"] > 0
    assert int8["speedup_over_fake_quant"] == pytest.approx(int8["fake_quant_torchscript_latency_ms"]
                                                            / int8["latency_ms"])
    # really integer: the frozen graph runs quantized convolutions, and torch alone loads it
    module = load_torchscript(out / int8["file"])
    assert "quantized::conv2d" in str(module.graph)
    script = ("import sys; sys.modules['hwnas'] = None; import torch\n"
              f"m = torch.jit.load({str(out / int8['file'])!r}); print(tuple(m(torch.rand(1, 1, 8, 8)).shape))")
    run = _run_python(script)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "(1, 10)"


def test_finetuning_before_export_records_before_and_after_and_leaves_the_job_alone(tiny_job, tmp_path):
    job, _ = tiny_job
    supernet_file = JobPaths(job.job_dir).supernet
    before_hash = sha256_file(supernet_file)
    cid = int(job.front().iloc[-1]["id"])
    out = job.export(tmp_path / "ft", candidate=cid, finetune_epochs=1)
    manifest = json.loads((out / "manifest.json").read_text())
    ft = manifest["finetune"]
    assert ft["epochs"] == 1 and len(ft["history"]) == 1
    assert ft["test_accuracy_before"] == pytest.approx(job.candidate(cid)["test_accuracy"])
    assert ft["test_accuracy_after"] == manifest["metrics"]["evaluated"]["export_test_accuracy"]
    assert manifest["checks"]["pt"]["passed"]  # the export equals the fine-tuned supernet
    assert sha256_file(supernet_file) == before_hash
    with pytest.raises(HwnasError, match="--finetune-epochs must be 0 or more"):
        job.export(tmp_path / "neg", candidate=cid, finetune_epochs=-1)


def test_token_selection_equals_a_stable_descending_sort():
    from hwnas.spaces.ops.tokens import _top_tokens_in_order

    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(2, 20))
        keep = int(rng.integers(1, n + 1))
        scores = torch.from_numpy(rng.integers(0, 4, size=(3, n)).astype(np.float32))  # many ties
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :keep].sort(dim=1).values
        assert torch.equal(_top_tokens_in_order(scores, keep), order)
