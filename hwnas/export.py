"""Export one candidate as a standalone model: its own weights and a manifest to rebuild it.

``DIR/model.safetensors`` holds only the subnet's weights (quantized weights as float values on
their grid, BN recalibrated for this subnet); ``DIR/manifest.json`` holds the subnet spec, the
quantization policy, the metrics, the device, the seed and the package versions.
:func:`load_exported` rebuilds the plain ``nn.Module`` from the manifest alone. Both files are
written atomically; the manifest goes last, so a directory with a manifest is a complete export.
"""
from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

import hwnas
from hwnas.errors import HwnasError
from hwnas.hwmodels.graph import op_graph
from hwnas.spaces.dims import Arch
from hwnas.spaces.evaluation import accuracy
from hwnas.spaces.registry import space_entry
from hwnas.utils.io import atomic_path, sha256_file, write_json_atomic

MANIFEST_FORMAT = "hwnas-export/1"
PACKAGES = ("torch", "numpy", "scikit-learn", "pymoo", "optuna", "safetensors")


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


FORMATS = ("pt", "torchscript")
CHECK_INPUTS = 16
TOLERANCE = {"pt": 1e-5, "torchscript": 1e-4}  # max |output - supernet output| on validation inputs


def _supernet_outputs(parts, arch: Arch, inputs: torch.Tensor) -> torch.Tensor:
    """The supernet's logits for ``arch`` (BN already recalibrated for it), one input at a time:
    the deployed batch size, and the one a traced model is fixed to."""
    parts.supernet.set_active(arch)
    parts.supernet.eval()
    with torch.inference_mode():
        return torch.cat([parts.supernet(x[None].to(parts.compute)).cpu() for x in inputs])


def _check(name: str, run, inputs: torch.Tensor, reference: torch.Tensor) -> dict[str, Any]:
    with torch.inference_mode():
        outputs = torch.cat([run(x[None]) for x in inputs])
    diff = float((outputs - reference).abs().max())
    tolerance = TOLERANCE[name]
    if not diff <= tolerance:
        raise HwnasError(f"the {name} export does not reproduce the supernet: max output difference {diff:.3g} "
                         f"over {len(inputs)} validation inputs exceeds {tolerance:g}")
    return {"inputs": len(inputs), "max_abs_diff": diff, "tolerance": tolerance, "passed": True}


def _measure_latency(job, model, input_shape, predicted_ms: float) -> dict[str, Any]:
    """The exported module timed on the job's device now, next to the search's prediction; the gap
    is flagged above 10 %. Devices that do not measure (tables, models) report their prediction."""
    from hwnas.hwmodels.devices import build_device

    device = build_device(job.config.device, job.config.workdir)
    if not device.measures:
        return {"measured": False, "predicted_ms": predicted_ms}
    median, spread = device.time_model(model, input_shape)
    gap = (median - predicted_ms) / predicted_ms if predicted_ms else float("nan")
    return {"measured": True, "median_ms": median, "spread_ms": spread, "predicted_ms": predicted_ms,
            "gap": gap, "gap_above_10pct": bool(abs(gap) > 0.10)}


def export_candidate(job, candidate_id: int, out: Path, formats: tuple[str, ...] = ("pt",)) -> Path:
    """Export one candidate in ``formats`` (``pt``: safetensors weights and the manifest that
    rebuilds the module with hwnas; ``torchscript``: a traced, frozen file that loads with torch
    alone, fixed to batch 1). Each file is checked against the supernet on validation inputs and
    the result is recorded in the manifest; a file that does not match is an error."""
    from hwnas.pipeline import Components, JobPaths, resolve_compute

    row = job.candidate(candidate_id)
    config = job.config
    paths = JobPaths(job.job_dir)
    if not paths.supernet.exists():
        raise HwnasError(f"job {job.name!r} has no trained supernet at {paths.supernet}")
    if out.exists() and not out.is_dir():
        raise HwnasError(f"--out {out} exists and is not a directory")
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise HwnasError(f"--format: unknown format {unknown[0]!r}; known: {list(FORMATS)} or all")
    parts = Components.build(config, resolve_compute("cpu"))
    parts.load_weights(paths.supernet)
    arch = parts.space.validate(Arch.from_json(row["arch"]).to_dict())
    model = parts.recalibrated_subnet(arch)
    spec = parts.supernet.spec
    test_accuracy = accuracy(model, parts.data.test)
    inputs = torch.stack([parts.data.val[i][0] for i in range(min(CHECK_INPUTS, len(parts.data.val)))])
    reference = _supernet_outputs(parts, arch, inputs)
    checks = {"pt": _check("pt", model, inputs, reference)}
    out.mkdir(parents=True, exist_ok=True)
    weights = out / "model.safetensors"
    with atomic_path(weights) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    files = {"weights": {"file": weights.name, "sha256": sha256_file(weights)}}
    if "torchscript" in formats:
        from hwnas.hwmodels.torchscript import script_model

        scripted = script_model(model, (inputs[:1],))
        target = out / "model.torchscript.pt"
        with atomic_path(target) as tmp:
            torch.jit.save(scripted, str(tmp))
        checks["torchscript"] = _check("torchscript", torch.jit.load(str(target)), inputs, reference)
        files["torchscript"] = {"file": target.name, "sha256": sha256_file(target), "input_shape":
                                [1, *parts.data.input_shape], "loads_with": "torch.jit.load (no hwnas needed)"}
    latency = _measure_latency(job, model, parts.data.input_shape, row["predicted_latency_ms"])
    manifest = {
        "format": MANIFEST_FORMAT, "job": job.name, "candidate": int(candidate_id),
        "space": config.space.type, "arch": arch.to_dict(), "subnet": spec,
        "quantization": quantization_policy(spec),
        "metrics": {
            "measured": {"accuracy": row["accuracy"], "latency_ms": row["latency_ms"],
                         "export_test_accuracy": test_accuracy},
            "predicted": {"accuracy": row["predicted_accuracy"], "latency_ms": row["predicted_latency_ms"]},
            "export_latency": latency,
            "analytical": {"energy_mj": row["energy_mj"], "params": row["params"], "flops": row["flops"],
                           "bitops": row["bitops"], "weight_kb": row["weight_kb"]},
        },
        "device": job.attrs.get("device_description", {"name": config.device.name}),
        "data": parts.data.description, "seed": config.seed, "versions": package_versions(),
        **files, "checks": checks,
    }
    write_json_atomic(out / "manifest.json", manifest)
    return out


def load_exported(path: str | Path) -> torch.nn.Module:
    """Rebuild an exported subnet from ``path/manifest.json`` and its weights file."""
    path = Path(path)
    manifest_file = path / "manifest.json"
    try:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HwnasError(f"{manifest_file} does not exist: not an hwnas export") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise HwnasError(f"{manifest_file} is not valid JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else None
        raise HwnasError(f"{manifest_file} has format {got!r}; this hwnas reads {MANIFEST_FORMAT!r}")
    weights = path / manifest["weights"]["file"]
    if not weights.exists():
        raise HwnasError(f"{weights} does not exist")
    if sha256_file(weights) != manifest["weights"]["sha256"]:
        raise HwnasError(f"{weights} does not match the hash in its manifest (altered or truncated)")
    model = space_entry(manifest["space"]).build_standalone(manifest["subnet"])
    try:
        model.load_state_dict(load_file(str(weights)))
    except Exception as exc:
        raise HwnasError(f"{weights} does not fit the manifest's subnet ({str(exc).splitlines()[0]})") from None
    return model.eval()
