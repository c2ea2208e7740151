"""naswot: how differently the network's ReLU-like units switch on for different inputs."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from hwnas.errors import ProxyError
from hwnas.proxies.batch import ProxyBatch
from hwnas.proxies.registry import register_proxy

# The activations whose on/off pattern is read, as the functions they call: nn.ReLU, nn.GELU,
# nn.SiLU, ... call these, and so do models that call them directly (F.silu in a SwiGLU), which is
# why the codes are read by intercepting functions rather than by hooking activation modules.
RELU_LIKE = frozenset({
    F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_, F.relu6,
    F.leaky_relu, F.leaky_relu_, F.prelu, torch.prelu, F.rrelu, F.rrelu_, F.elu, F.elu_, F.celu,
    F.selu, F.gelu, F.silu, F.mish, F.hardswish,
})


class ActivationCodes(TorchFunctionMode):
    """Records, for each call of a ReLU-like function, which units are on (pre-activation > 0),
    one row per sample. ``F.hardtanh`` counts only as ReLU6 (``min_val == 0``), which nn.ReLU6
    calls. A call on a tensor whose first dimension is not a multiple of the batch is skipped; a
    tensor of ``k * B`` rows (tokens flattened into the batch dimension) is read as ``B`` samples."""

    def __init__(self, batch_size: int):
        super().__init__()
        self.batch_size, self.codes = batch_size, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        x = args[0] if args else kwargs.get("input")
        relu6 = func is F.hardtanh and (args[1] if len(args) > 1 else kwargs.get("min_val", -1.0)) == 0
        if (func in RELU_LIKE or relu6) and isinstance(x, torch.Tensor) and x.dim() > 0 \
                and x.shape[0] % self.batch_size == 0:
            self.codes.append((x.detach() > 0).reshape(self.batch_size, -1))
        return func(*args, **kwargs)


def hamming_kernel(codes: list[torch.Tensor]) -> torch.Tensor:
    """``K[i, j]`` = the number of units on which samples i and j agree (both on or both off):
    ``c c^T + (1 - c)(1 - c)^T`` summed over the recorded activations, in float64."""
    kernel = None
    for code in codes:
        c = code.to(torch.float64)
        term = c @ c.T + (1 - c) @ (1 - c).T
        kernel = term if kernel is None else kernel + term
    return kernel


@register_proxy("naswot")
def naswot(model: nn.Module, batch: ProxyBatch) -> float:
    """NASWOT (Mellor et al., "Neural Architecture Search without Training", ICML 2021): the
    log-determinant of the kernel of Hamming similarities between the samples' binary activation
    codes (:func:`hamming_kernel`). A network whose units split the inputs into distinct linear
    regions gives every sample its own code, a kernel near diagonal and a high score; one that
    maps many inputs alike scores low (``-inf`` when two samples share every code).

    Every ReLU-like activation counts (GELU, SiLU and the rest by the sign of their
    pre-activation), whether a module or a function call; training mode, as the reference scores
    freshly built networks (BatchNorm with the batch's statistics)."""
    batch.require_samples("naswot")
    recorder = ActivationCodes(batch.size)
    with torch.no_grad(), recorder:
        model(batch.inputs)
    if not recorder.codes:
        raise ProxyError("proxy 'naswot': the model ran no ReLU-like activation (ReLU, GELU, SiLU, ...) "
                         "on a tensor with the batch as its first dimension")
    return float(torch.linalg.slogdet(hamming_kernel(recorder.codes)).logabsdet)
