"""Export one candidate as a standalone model: its own weights and a manifest to rebuild it.

``DIR/model.safetensors`` holds only the subnet's weights (quantized weights as float values on
their grid, BN recalibrated for this subnet); ``DIR/manifest.json`` holds the subnet spec, the
quantization policy, the preprocessing, the metrics, the device, the seed and the package versions.
Every exported file takes raw inputs and standardizes them itself (see
:mod:`hwnas.export.preprocessing`); the checks feed each file the raw inputs behind the
validation images the supernet saw.
:func:`load_exported` rebuilds the plain ``nn.Module`` from the manifest alone. Every file is
written atomically. An earlier manifest in the directory is removed first and the new one goes
last, so a directory with a manifest is a complete export, even after a kill mid-export. The
manifest records every other file's sha256 and has its own in ``manifest.json.sha256``
(``sha256sum -c`` reads it), so an export altered or truncated on disk is refused by name.
"""
from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

import hwnas
from hwnas.errors import HwnasError
from hwnas.export.finetune import LR_SCALE, finetune_subnet
from hwnas.export.formats import (
    load_onnx,
    load_torchscript,
    onnx_available,
    save_onnx,
    save_shift_exponents,
    save_torchscript,
)
from hwnas.export.int8 import calibration_images, write_int8
from hwnas.export.loading import MANIFEST_FORMAT
from hwnas.export.preprocessing import NormalizedInput, preprocessing_section
from hwnas.export.weights import candidate_components
from hwnas.hwmodels.devices import LocalCPU, build_device
from hwnas.hwmodels.lut import read_meta
from hwnas.hwmodels.profiler import use_reference
from hwnas.hwmodels.torchscript import script_model
from hwnas.search.objectives import phase_columns
from hwnas.spaces.dims import Arch
from hwnas.spaces.ops.quant import ActQuant
from hwnas.spaces.registry import ExportFormat, int8_ineligible_reason, load_spaces, op_graph, space_entry
from hwnas.train.components import Components, resolve_compute
from hwnas.train.evaluation import accuracy, split_quality
from hwnas.utils.generation import greedy_generate
from hwnas.utils.hooks import run_with_pre_hooks
from hwnas.utils.io import atomic_path, digest_path, sha256_file, write_json_with_digest

PACKAGES = ("torch", "numpy", "scikit-learn", "pymoo", "optuna", "safetensors", "onnx", "onnxruntime")


def package_versions() -> dict[str, str]:
    out = {"hwnas": hwnas.__version__}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def quantization_policy(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Per op of the subnet, in execution order: kind, operator type and bits (32 = float)."""
    return [{"op": i, "kind": op.kind, "type": op.op, "wbits": op.wbits, "abits": op.abits}
            for i, op in enumerate(op_graph(spec)) if op.weight_count or op.kind == "attention"]


FORMATS = ("pt", "torchscript", "onnx", "int8")
CHECK_INPUTS = 16
# max |output - supernet output| on validation inputs. pt runs the same PyTorch ops as the supernet;
# TorchScript folds batch norm into the convolution and ONNX Runtime uses its own kernels, which
# reorder float sums. The int8 model is not checked against a tolerance: its scales come from
# calibration (see hwnas.export.int8), so its accuracy and top-1 agreement are recorded instead.
# Float error grows with the values summed, so a network with logits above 1 (a pretrained one
# started from space.init: tens) gets the tolerance times its largest |logit| on the inputs.
TOLERANCE = {"pt": 3e-5, "torchscript": 1e-4, "onnx": 1e-4}  # pt: float32 reassociation in channels-last convs reached 1.2e-5 of the logit scale


def _supernet_outputs(parts, arch: Arch, inputs: torch.Tensor) -> torch.Tensor:
    """The supernet's logits for ``arch`` (BN already recalibrated for it), one input at a time:
    the deployed batch size, and the one a traced model is fixed to."""
    parts.supernet.set_active(arch)
    parts.supernet.eval()
    with torch.inference_mode():
        return torch.cat([parts.supernet(x[None].to(parts.compute)).cpu() for x in inputs])


def _outputs(run, inputs: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([run(x[None]) for x in inputs])


FLIP_MARGIN = 1e-3  # in quantizer steps: how close to a rounding boundary counts as "on" it


def rounding_margin(model: torch.nn.Module, x: torch.Tensor) -> float:
    """How close, in steps, any activation quantizer of ``model`` comes to a rounding boundary on
    input ``x`` (inf when it has none). Where it is within float error of one, another runtime's
    kernels, which sum in another order, may round that activation to the neighbouring level."""
    margins: list[float] = []

    def hook(module, args):
        v = (args[0] / module.step).clamp(-module.qn, module.qp)
        inside = (v > -module.qn) & (v < module.qp)
        if bool(inside.any()):
            margins.append(float(((v - v.floor()) - 0.5).abs()[inside].min()))

    run_with_pre_hooks(model, x, hook, [m for m in model.modules() if isinstance(m, ActQuant)])
    return min(margins, default=float("inf"))


def _check(name: str, run, inputs: torch.Tensor, reference: torch.Tensor, model: torch.nn.Module,
           tolerance: float | None = None) -> dict[str, Any]:
    """Outputs of ``run`` against the supernet's, input by input. An input beyond the tolerance is
    excused only when one of its activations sits within :data:`FLIP_MARGIN` steps of a rounding
    boundary (see :func:`rounding_margin`): then both roundings are right to float precision. The
    manifest records how many inputs were excused and the largest difference of the others."""
    diffs = (_outputs(run, inputs) - reference).abs().flatten(1).amax(dim=1)  # per input: logits, or per token
    scale = max(1.0, float(reference.abs().max()))
    tolerance = TOLERANCE[name] if tolerance is None else tolerance
    beyond = [i for i, d in enumerate(diffs.tolist()) if not d <= tolerance * scale]
    flips = [i for i in beyond if rounding_margin(model, inputs[i:i + 1]) < FLIP_MARGIN]
    others = [d for i, d in enumerate(diffs.tolist()) if i not in flips]
    if len(flips) < len(beyond):
        worst = max(float(diffs[i]) for i in beyond if i not in flips)
        raise HwnasError(f"the {name} export does not reproduce the supernet: max output difference {worst:.3g} "
                         f"over {len(inputs)} validation inputs exceeds {tolerance * scale:.3g} ({tolerance:g} x "
                         f"the logit scale {scale:.3g})")
    return {"inputs": len(inputs), "max_abs_diff": float(diffs.max()),
            "max_abs_diff_off_boundaries": max(others, default=0.0), "rounding_flips": len(flips),
            "tolerance": tolerance, "logit_scale": scale, "passed": True}


GENERATE_PROMPTS, PROMPT_TOKENS, NEW_TOKENS = 4, 8, 8


def _generation_check(parts, arch: Arch, model: torch.nn.Module, inputs: torch.Tensor) -> dict[str, Any] | None:
    """A model that generates (a language model) must generate what the supernet does: greedy
    tokens of the exported module's own ``generate`` (its KV cache) against the supernet's subnet
    decoding the slow way, on the first tokens of validation windows as prompts. None for a model
    without ``generate``."""
    if not callable(getattr(model, "generate", None)):
        return None
    parts.supernet.set_active(arch)
    parts.supernet.eval()
    prompts = [x[:PROMPT_TOKENS] for x in inputs[:GENERATE_PROMPTS]]
    for k, prompt in enumerate(prompts):
        want = greedy_generate(parts.supernet, prompt.to(parts.compute), NEW_TOKENS).cpu()
        got = model.generate(prompt, NEW_TOKENS)
        if not torch.equal(got, want):
            raise HwnasError(f"the exported model does not generate the supernet's tokens for validation prompt {k}: "
                             f"{got[0, PROMPT_TOKENS:].tolist()} against {want[0, PROMPT_TOKENS:].tolist()}")
    return {"prompts": len(prompts), "prompt_tokens": PROMPT_TOKENS, "new_tokens": NEW_TOKENS,
            "equal": True, "passed": True}


def _measure_latency(job, parts, model, predicted_ms: float) -> dict[str, Any]:
    """The exported module timed on the job's device now, next to the search's prediction it
    checks; the gap is flagged above 10 %. Timed in rounds with the space's reference subnet and
    corrected to the speed the job's lookup table was measured at (``speed`` says how fast the
    machine ran now against then). Devices that do not measure (tables, models) report their
    prediction and say so."""
    device = build_device(job.config.device, job.config.workdir)
    if not device.measures:
        return {"measured": False, "predicted_ms": predicted_ms, "source": device.kind}
    recorded = read_meta(job.paths.lut).get("reference", {}) if job.paths.lut.exists() else {}
    use_reference(device, parts.space, space_entry(job.config.space.type).build_standalone, recorded)
    timing = device.time_models([model], parts.data.input_shape)
    median, spread = timing.summary(0)
    gap = (median - predicted_ms) / predicted_ms if predicted_ms else float("nan")
    return {"measured": True, "median_ms": median, "spread_ms": spread, "predicted_ms": predicted_ms,
            "gap": gap, "gap_above_10pct": bool(abs(gap) > 0.10), "timing": timing.describe()}


def known_formats() -> list[str]:
    """Every format some space can be exported in: the common ones, then the spaces' own."""
    return list(dict.fromkeys([*FORMATS, *(name for entry in load_spaces().values()
                                            for name in (entry.export_formats or {}))]))


def space_formats(spec: dict[str, Any]) -> dict[str, ExportFormat]:
    """The formats only the subnet's space writes (see :attr:`SpaceEntry.export_formats`)."""
    return dict(space_entry(spec["type"]).export_formats or {})


def resolve_formats(formats: tuple[str, ...], spec: dict[str, Any]) -> tuple[list[str], dict]:
    """The formats to write and, for ``all``, the ones left out with the reason. A format named
    explicitly that cannot be written here is an error naming why."""
    known = [*FORMATS, *space_formats(spec)]
    wanted = list(known) if "all" in formats else list(dict.fromkeys(("pt", *formats)))
    unknown = [f for f in wanted if f not in known]
    if unknown:
        raise HwnasError(f"--format: unknown format {unknown[0]!r}; known for the {spec['type']} space: {known} or all")
    reasons = {"onnx": onnx_available(), "int8": int8_ineligible_reason(spec),
               **{name: fmt.ineligible_reason(spec) for name, fmt in space_formats(spec).items()}}
    skipped = {}
    for name, reason in reasons.items():
        if name in wanted and reason is not None:
            if "all" not in formats:
                raise HwnasError(f"cannot export {name}: {reason}")
            wanted.remove(name)
            skipped[name] = reason
    return wanted, skipped


def _finetune(parts, arch: Arch, epochs: int, seed: int) -> dict[str, Any]:
    """Fine-tune ``arch`` in place and return the figures from before (the after figures are the
    export's own, filled in by :func:`export_candidate` from the model it recalibrates anyway)."""
    extracted = parts.recalibrated_subnet(arch)  # one recalibration serves both splits
    before, before_val = accuracy(extracted, parts.data.test), accuracy(extracted, parts.data.val)
    history = finetune_subnet(parts, arch, epochs, seed)
    return {"epochs": epochs, "lr_scale": LR_SCALE, "test_accuracy_before": before,
            "val_accuracy_before": before_val, "history": history}


def _export_int8(job, parts, deployed: NormalizedInput, out: Path, raw, raw_example,
                 test_accuracy: float) -> dict[str, Any]:
    """The real int8 model beside the fake-quantized one: accuracy, agreement and latency of both."""
    calibration = calibration_images(parts.data.train, parts.config.train.recalibration_samples)
    target = out / "model.int8.torchscript.pt"
    converted, reloaded, backend = write_int8(deployed, calibration, raw_example, target)
    agreement = float((_outputs(reloaded, raw).argmax(1) == _outputs(deployed, raw).argmax(1)).float().mean())
    timing = LocalCPU(job.config.device).time_models([reloaded, script_model(deployed, (raw_example,))],
                                                     parts.data.input_shape)  # side by side, in rounds
    (int8_ms, int8_spread), (float_ms, float_spread) = timing.summary(0), timing.summary(1)
    return {"file": target.name, "sha256": sha256_file(target), "input_shape": list(raw_example.shape),
            "loads_with": "torch.jit.load (no hwnas needed)", "backend": backend, "calibration_images": len(calibration),
            "test_accuracy": accuracy(converted, parts.data.test), "fake_quant_test_accuracy": test_accuracy,
            "top1_agreement_with_fake_quant": agreement, "agreement_inputs": len(raw),
            "latency_ms": int8_ms, "latency_spread_ms": int8_spread,
            "fake_quant_torchscript_latency_ms": float_ms, "fake_quant_torchscript_spread_ms": float_spread,
            "speedup_over_fake_quant": float_ms / int8_ms if int8_ms else None,
            "timed_on": f"this machine's CPU, {job.config.device.threads} thread(s), batch {job.config.device.batch_size}"}


def export_candidate(job, candidate_id: int, out: Path, formats: tuple[str, ...] = ("pt",),
                     finetune_epochs: int = 0) -> Path:
    """Export one candidate in ``formats`` (see :data:`FORMATS`, or ``all``): ``pt`` is the
    safetensors weights and the manifest that rebuilds the module with hwnas (plus the shift
    layers' exponents when it has any); ``torchscript`` a traced, frozen file that loads with torch
    alone; ``onnx`` a file for ONNX Runtime; ``int8`` a real int8 TorchScript model of an all-8-bit
    subnet. The fixed-shape files take batch 1. Each float file is checked against the supernet on
    validation inputs and the result is recorded in the manifest; a file that does not match is an
    error. With ``finetune_epochs`` the subnet is first fine-tuned alone (see :mod:`hwnas.export.finetune`)."""
    row = job.candidate(candidate_id)
    config = job.config
    if out.exists() and not out.is_dir():
        raise HwnasError(f"--out {out} exists and is not a directory")
    if finetune_epochs < 0:
        raise HwnasError(f"--finetune-epochs must be 0 or more, got {finetune_epochs}")
    parts = Components.build(config, resolve_compute("cpu"))
    arch = parts.space.validate(Arch.from_json(row["arch"]).to_dict())
    parts = candidate_components(job, parts, arch)  # the supernet's weights, or the subnet trained alone again
    spec = parts.space.subnet_spec(arch)
    wanted, skipped = resolve_formats(tuple(formats), spec)
    finetune = _finetune(parts, arch, finetune_epochs, config.seed) if finetune_epochs else None
    model = parts.recalibrated_subnet(arch)
    q = job.quality
    test_figure = split_quality(model, parts.data, q.name, ("test",))[q.test_column]
    # what the int8 and fine-tune figures compare (next-token accuracy for a language model)
    test_accuracy = test_figure if q.name == "accuracy" else accuracy(model, parts.data.test)
    if finetune is not None:
        finetune.update(test_accuracy_after=test_accuracy, val_accuracy_after=accuracy(model, parts.data.val))
    preprocessing = preprocessing_section(parts.data.description)
    deployed = (NormalizedInput(model, preprocessing["mean"], preprocessing["std"], preprocessing["raw_input"]).eval()
                if preprocessing["inside_model"] else model)  # token ids: nothing to standardize
    inputs = torch.stack([parts.data.val[i][0] for i in range(min(CHECK_INPUTS, len(parts.data.val)))])
    raw = deployed.raw(inputs) if preprocessing["inside_model"] else inputs  # what a user feeds the files
    example = raw[:1]
    reference = _supernet_outputs(parts, arch, inputs)
    checks = {"pt": _check("pt", deployed, raw, reference, deployed)}
    generation = _generation_check(parts, arch, model, inputs)
    out.mkdir(parents=True, exist_ok=True)
    # An earlier export here stops being one before any file is replaced: a kill mid-way leaves a
    # directory without a manifest (not an export), never an old manifest beside new files.
    for stale in (out / "manifest.json", digest_path(out / "manifest.json")):
        stale.unlink(missing_ok=True)
    weights = out / "model.safetensors"
    with atomic_path(weights) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    files: dict[str, Any] = {"weights": {"file": weights.name, "sha256": sha256_file(weights)}}
    shifts = save_shift_exponents(model, out / "shift_exponents.safetensors")
    if shifts:
        files["shift_exponents"] = shifts
    writers = {"torchscript": (save_torchscript, load_torchscript, "model.torchscript.pt"),
               "onnx": (save_onnx, load_onnx, "model.onnx")}
    for name, (save, load, filename) in writers.items():
        if name in wanted:
            files[name] = save(deployed, example, out / filename)
            checks[name] = _check(name, load(out / filename), raw, reference, deployed)
    for name, fmt in space_formats(spec).items():
        if name in wanted:
            files[name] = fmt.write(model, out / fmt.target)
            checks[name] = _check(name, fmt.load(out / fmt.target), raw, reference, deployed, fmt.tolerance)
    if "int8" in wanted:
        files["int8"] = _export_int8(job, parts, deployed, out, raw, example, test_accuracy)
    latency = _measure_latency(job, parts, model, row["predicted_latency_ms"])
    evaluated = {q.column: row[q.column], q.test_column: row[q.test_column],
                 f"export_{q.test_column}": test_figure, "chosen_on": q.column}
    # Filed under measured only when the job measured it on its device; else the model it came from.
    search_latency = {"latency_ms": row["latency_ms"], "latency_spread_ms": row.get("latency_spread_ms")}
    latency_figures = ({"measured": search_latency} if row["latency_source"] == "measured"
                       else {"modelled": {**search_latency, "source": row["latency_source"]}})
    # each latency phase the job priced (an LM's prefill), from the same device as latency_ms
    phases = {name: {**{c: row.get(c) for c in phase_columns(name)}, "source": row["latency_source"], "times": unit}
              for name, unit in job.latency_phases.items()}
    manifest = {
        "format": MANIFEST_FORMAT, "job": job.name, "candidate": int(candidate_id),
        "space": config.space.type, "arch": arch.to_dict(), "subnet": parts.supernet.spec,
        "quantization": quantization_policy(parts.supernet.spec),
        "metrics": {
            "evaluated": evaluated,
            **latency_figures,
            "predicted": {"val_accuracy": row["predicted_accuracy"], "latency_ms": row["predicted_latency_ms"]},
            "export_latency": latency,
            **({"phases": phases} if phases else {}),
            "analytical": {"energy_mj": row["energy_mj"], "params": row["params"], "flops": row["flops"],
                           "bitops": row["bitops"], "weight_kb": row["weight_kb"], "memory_kb": row.get("memory_kb"),
                           "activation_kb": row.get("activation_kb"), "memory_batch_size": config.device.batch_size},
        },
        "finetune": finetune,
        "device": job.attrs.get("device_description", {"name": config.device.name}),
        "preprocessing": preprocessing, "data": parts.data.description, "seed": config.seed, "versions": package_versions(),
        **files, "formats": wanted, "skipped_formats": skipped, "checks": checks, "generation_check": generation,
    }
    write_json_with_digest(out / "manifest.json", manifest)
    return out
