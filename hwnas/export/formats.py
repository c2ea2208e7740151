"""Deployable files of a fixed subnet: TorchScript, ONNX, and the shift layers' exponents.

Each writer saves one file atomically and returns what the manifest records about it; each
loader returns a callable taking one input batch, so the export's self-check runs every format
the same way. TorchScript and ONNX files need no hwnas to run: ``torch.jit.load`` and
``onnxruntime.InferenceSession`` respectively.

ONNX goes through torch's ``torch.export``-based exporter (``dynamo=True``, the one PyTorch
maintains). Where it fails, the TorchScript-based exporter is tried, and the manifest says which
one wrote the file. The graph is fixed to the example's shape (batch 1), as the TorchScript file is.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import save_file
from torch import nn

from hwnas.errors import HwnasError
from hwnas.hwmodels.torchscript import script_model
from hwnas.spaces.ops.layers import QConvBNAct
from hwnas.spaces.ops.shift import shift_decompose
from hwnas.spaces.ops.vit_layers import QLinear
from hwnas.utils.io import atomic_path, sha256_file
from hwnas.utils.write_errors import cannot_write_error

Runner = Callable[[torch.Tensor], torch.Tensor]
ONNX_OPSET = 18


def _first_line(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0] if text else ''}"[:300]


def save_torchscript(model: nn.Module, example: torch.Tensor, target: Path) -> dict[str, Any]:
    """Trace + freeze ``model`` (see :func:`hwnas.hwmodels.torchscript.script_model`) into ``target``."""

    save_scripted(script_model(model, (example,)), target)
    return {"file": target.name, "sha256": sha256_file(target), "input_shape": list(example.shape),
            "loads_with": "torch.jit.load (no hwnas needed)"}


def save_scripted(module: torch.jit.ScriptModule, target: Path) -> None:
    """Saved through memory: a TorchScript archive names its root folder after the file it is
    written to, and the atomic write's temporary name is random, so writing the file directly
    would make two exports of one subnet differ byte for byte."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")  # deprecation notice
        torch.jit.save(module, buffer)
    with atomic_path(target) as tmp:
        tmp.write_bytes(buffer.getvalue())


def load_torchscript(path: Path) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        return torch.jit.load(str(path))


def save_onnx(model: nn.Module, example: torch.Tensor, target: Path) -> dict[str, Any]:
    """Export ``model`` to ONNX (opset :data:`ONNX_OPSET`) with input ``input`` and output ``logits``."""
    attempts = []
    for dynamo in (True, False):
        try:
            with atomic_path(target) as tmp, warnings.catch_warnings(), \
                    contextlib.redirect_stdout(io.StringIO()), torch.inference_mode(False), torch.no_grad():
                warnings.simplefilter("ignore")  # the exporters' deprecation and tracer chatter
                # external_data=False: one self-contained file (the weights inline, under ONNX's
                # 2 GB limit), never a side file named after the temporary path
                torch.onnx.export(model.eval(), (example,), str(tmp), dynamo=dynamo, opset_version=ONNX_OPSET,
                                  input_names=["input"], output_names=["logits"], verbose=False,
                                  external_data=False)
            exporter = "torch.export (dynamo)" if dynamo else "torchscript-based"
            break
        except Exception as exc:  # the exporters raise anything from ConversionError to IndexError
            if cannot_write_error(exc) is not None:
                raise  # a full disk or a read-only place: the other exporter would fail the same way
            attempts.append(f"{'dynamo' if dynamo else 'torchscript-based'} exporter: {_first_line(exc)}")
    else:
        raise HwnasError(f"ONNX cannot export {type(model).__name__}: " + "; ".join(attempts))
    info = {"file": target.name, "sha256": sha256_file(target), "input_shape": list(example.shape),
            "opset": ONNX_OPSET, "exporter": exporter, "input_name": "input", "output_name": "logits",
            "loads_with": "onnxruntime.InferenceSession (no hwnas or torch needed)"}
    if attempts:
        info["fallback_reason"] = attempts[0]
    return info


def load_onnx(path: Path, threads: int = 1) -> Runner:
    """An onnxruntime session on the CPU, ``threads`` intra-op threads, as a tensor -> tensor callable."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: x.detach().cpu().numpy()})[0])

    return run


def onnx_available() -> str | None:
    """None when ONNX export can run here, else why not (the packages it needs)."""
    missing = []
    for module, package in (("onnx", "onnx"), ("onnxscript", "onnxscript"), ("onnxruntime", "onnxruntime")):
        try:
            __import__(module)
        except ImportError:
            missing.append(package)
    if missing:
        return f"ONNX export needs {', '.join(missing)}: pip install 'hwnas[onnx]'"
    return None


SHIFT_WEIGHTS = {QConvBNAct: "conv", QLinear: "linear"}  # layer type -> its child holding the weights


def shift_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The weight-holding children (convolutions, linears) of ``model``'s shift layers (weights
    exact powers of two: the CNN space's shift convolutions, the ViT space's log2 linears), by
    module name."""

    layers = {}
    for name, m in model.named_modules():
        child = next((c for cls, c in SHIFT_WEIGHTS.items() if isinstance(m, cls)), None)
        if child is not None and m.op == "shift":
            layers[name] = getattr(m, child)
    return layers


def save_shift_exponents(model: nn.Module, target: Path) -> dict[str, Any] | None:
    """Each shift layer's weights as what a shift kernel consumes: ``NAME.sign`` and
    ``NAME.exponent`` int8 tensors with ``weight == sign * 2**exponent`` exactly (checked here).
    None when the model has no shift layer."""

    layers = shift_layers(model)
    if not layers:
        return None
    tensors = {}
    for name, layer in layers.items():
        weight = layer.weight.detach().cpu()
        sign, exponent = shift_decompose(weight)
        if not torch.equal(sign.float() * torch.exp2(exponent.float()), weight):
            raise HwnasError(f"shift layer {name} does not reproduce its weights from sign and exponent")
        tensors[f"{name}.sign"], tensors[f"{name}.exponent"] = sign.contiguous(), exponent.contiguous()
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp))
    return {"file": target.name, "sha256": sha256_file(target), "layers": sorted(layers),
            "rule": "weight = sign * 2**exponent (int8 each; sign 0 is a zero weight)"}
