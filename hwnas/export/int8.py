"""A real int8 model of an all-8-bit subnet, through PyTorch's post-training quantization flow.

The search scores fake-quantized subnets: 8-bit values on a learned (LSQ) grid, computed in float.
What a CPU deployment runs instead is integer kernels (fbgemm / oneDNN on x86, qnnpack on ARM).
This module makes that model with ``torch.ao.quantization``'s FX graph mode: the subnet with its
input quantizers removed is prepared with the backend's default qconfig (per-channel weight
observers, histogram activation observers), calibrated on training images and converted; then
traced and frozen, which is the form that runs fast (the converted ``GraphModule`` called from
Python pays per-op interpreter overhead that the frozen graph does not).

The int8 model's scales come from calibration, not from the search's learned steps, so its
outputs are not bit-equal to the fake-quantized model: the manifest records its accuracy, its
top-1 agreement with the fake-quantized model and its latency, next to the fake-quantized figures.
The stem, the head and the classifier stay in float, as in the fake-quantized subnet.

Which subnets qualify is the space's call (its ``int8_ineligible_reason`` hook, see
:mod:`hwnas.spaces.registry`): for the CNN space, those whose every searched convolution is a
multiplication layer with 8-bit weights and 8-bit inputs.
"""
from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from hwnas.data import iterate_batches
from hwnas.export.formats import load_torchscript, save_scripted
from hwnas.export.preprocessing import NormalizedInput
from hwnas.hwmodels.torchscript import script_model
from hwnas.spaces.ops.layers import QConvBNAct

FLOAT_MODULES = ("stem", "head", "classifier")  # float in the search, float here


def _without_input_quantizers(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose activation fake-quantizers are identities: the int8 flow inserts
    its own quantize / dequantize steps, and a fake quantizer left in would be traced as float ops."""

    plain = copy.deepcopy(model).cpu().eval()
    for module in plain.modules():
        if isinstance(module, QConvBNAct) and "quant" in module._modules:
            del module.quant
    return plain


def quantize_int8(model: nn.Module, calibration: torch.Tensor, example: torch.Tensor,
                  backend: str | None = None) -> tuple[nn.Module, str]:
    """The int8 model of ``model`` calibrated on ``calibration`` (a batch of inputs, ``example``
    shaped like one): the converted module (any batch size) and the backend's name."""
    from torch.ao.quantization import QConfigMapping, get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx


    backend = backend or _default_backend()
    torch.backends.quantized.engine = backend
    mapping: QConfigMapping = get_default_qconfig_mapping(backend).set_object_type(nn.Linear, None)
    for name in FLOAT_MODULES:
        mapping.set_module_name(name, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
        prepared = prepare_fx(_without_input_quantizers(model), mapping, (example,))
        with torch.no_grad():
            for start in range(0, len(calibration), 64):
                prepared(calibration[start:start + 64])
        converted = convert_fx(prepared)
    return converted, backend


def _default_backend() -> str:
    engines = torch.backends.quantized.supported_engines
    for name in ("x86", "fbgemm", "qnnpack"):
        if name in engines:
            return name
    raise RuntimeError(f"this torch build has no int8 CPU backend (engines: {engines})")


def calibration_images(dataset, samples: int) -> torch.Tensor:
    """The first ``samples`` images of ``dataset`` in order: the same set the BN recalibration uses."""

    return torch.cat([x for x, _ in iterate_batches(dataset, 256, shuffle=False, limit=samples)])


def write_int8(deployed: NormalizedInput, calibration: torch.Tensor, raw_example: torch.Tensor, target) -> tuple:
    """The int8 model of ``deployed``'s network (:func:`quantize_int8`, calibrated on standardized
    ``calibration`` images), behind the same input standardization in float, traced for inputs
    shaped like ``raw_example``, saved to ``target`` and loaded back from it: (the converted
    network, which takes standardized inputs; the loaded TorchScript module, which takes raw ones;
    the backend's name)."""

    converted, backend = quantize_int8(deployed.network, calibration, deployed.standardize(raw_example))
    wrapped = NormalizedInput(converted, deployed.mean.flatten().tolist(), deployed.std.flatten().tolist()).eval()
    save_scripted(script_model(wrapped, (raw_example,)), target)
    return converted, load_torchscript(target), backend
