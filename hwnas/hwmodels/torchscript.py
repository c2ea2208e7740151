"""A measured device that times what users deploy: the model as a frozen TorchScript graph.

:func:`script_model` makes the deployable form of a fixed model: :func:`torch.jit.trace` on
example inputs under :func:`torch.inference_mode`, then :func:`torch.jit.freeze` (weights and
attributes become constants; batch norm is folded into the preceding convolution). Tracing
records the ops the example inputs take, so the scripted module is valid for inputs of the
example's shapes only (batch size and resolution included): the adder convolution's chunk loops
and token selection's counts are baked in.

Every op type of the project traces and matches eager PyTorch (to float rounding): the CNN
space's ``mult``, ``shift`` (a convolution with power-of-two weights) and ``adder`` (AdderNet's
chunked element-wise forward, unrolled by the trace, so an adder model takes seconds to trace)
layers, quantized or float, and the ViT space's patch embedding, layer norm, quantized linear,
softmax / linear / binary attention (the binary codes' custom autograd function traces through
its forward), token selection, residual add and classifier.

Why not :func:`torch.jit.optimize_for_inference` (``script_model(..., optimize=True)`` applies
it, falling back to the frozen graph with a warning where it fails). On torch 2.x it fails on
these CNNs whenever a convolution feeds an activation quantizer directly (a block without a
residual followed by a block with quantized inputs): its MKL-DNN conversion turns the
quantizer's ``clamp`` with integer bounds into a ``hardtanh`` and trips an internal assertion
("expected double"). Falling back per model would leave the device inconsistent: every op
scripted alone optimizes fine, so a table would be measured with the pass and such whole models
without it. And where it works it made these small models (batch 1, 8x8 inputs, one thread)
1.2-2.4x *slower* than freezing alone on this project's 2-core x86 machine, since converting to
MKL-DNN's layout costs more than it saves at these sizes. So this device times trace + freeze,
for ops and whole models alike (:attr:`TorchScriptCPU.optimize`, recorded by
:meth:`~TorchScriptCPU.describe`, switches the pass on).

Timing ops. Forward hooks do not fire inside a frozen TorchScript graph, so ops cannot be timed
in place as :class:`~hwnas.hwmodels.local_cpu.LocalCPU` does. Instead :meth:`TorchScriptCPU.time_ops`

1. runs the eager model once with a forward pre-hook on each module of
   :func:`~hwnas.spaces.ops.layers.op_modules`, capturing the real inputs of every op;
2. scripts each op module alone (:func:`script_model`) on its captured inputs;
3. times the network's scripted ops one after another in graph order, each on its captured
   inputs, with :func:`time.perf_counter_ns`, networks interleaved in rounds as every measured
   device times (see :func:`hwnas.utils.timing.time_in_rounds`).

Running the ops in sequence, as inside a network, rather than each alone in a tight loop matters:
an op repeated alone ran 10-13 % faster on this machine than inside a network (see
:mod:`hwnas.utils.timing`). What the per-op table cannot see is what running *one* frozen
graph does across op boundaries. Freezing folds each batch norm into its convolution, and that
happens in the per-op graphs too (a ``QConvBNAct`` is one op); but a whole model pays the fixed
cost of a call from Python into the TorchScript interpreter (about 2 us here) once where the ops
pay it each, keeps every intermediate in the interpreter instead of handing it back to Python,
and feeds each op its predecessor's fresh output rather than a stored input; with
``optimize_for_inference`` it would also fuse across ops (convolution + add + ReLU) and keep
MKL-DNN's layout between layers. On this machine the sum of a subnet's op medians came out
6-34 % above its end-to-end time (about 3-4 us per op, steady within a space; eager PyTorch:
within a few per cent); a learned end-to-end correction (``device.correction_samples``), which
sees the op count, captures that difference, so set it when using this device.

The graph executor profiles a scripted module's first call and optimizes it on the second
(``torch._C._jit_get_num_profiled_runs() == 1``), so every scripted module is called
:data:`JIT_WARM_CALLS` times before the configured warm-up, which then times the optimized graph.
"""
from __future__ import annotations

import time
import warnings
from typing import Any, Callable

import numpy as np

import torch
from torch import nn

from hwnas.errors import HwnasError
from hwnas.hwmodels.local_cpu import LocalCPU, checked_op_modules
from hwnas.ir import OpSig
from hwnas.utils.timing import Subject

JIT_WARM_CALLS = 2  # the executor's profiling call and its optimizing call


def _reason(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def script_model(model: nn.Module, example_inputs: tuple[torch.Tensor, ...] | torch.Tensor,
                 optimize: bool = False) -> torch.jit.ScriptModule:
    """``model`` traced on ``example_inputs`` and frozen (with ``optimize``, then optimized for
    inference): the form a model is deployed in, valid for inputs of the examples' shapes only.

    The model is put in eval mode. Tracing warnings (shape checks recorded as constants) and
    TorchScript's deprecation warnings are silenced: a fixed-shape graph is the intent. A model
    that cannot be traced or frozen raises :class:`~hwnas.errors.HwnasError` with a one-line
    message naming its type; if ``optimize_for_inference`` fails, the frozen graph is returned,
    with a warning.
    """
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    name = type(model).__name__
    model = model.eval()
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        try:
            traced = torch.jit.trace(model, inputs)
            frozen = torch.jit.freeze(traced)
        except Exception as exc:  # tracing raises anything from RuntimeError to TypeError
            raise HwnasError(f"TorchScript cannot trace {name}: {_reason(exc)}") from None
        if not optimize:
            return frozen
        try:
            return torch.jit.optimize_for_inference(frozen)
        except Exception as exc:
            # the pass works in place on the frozen module: freeze the trace afresh
            reason = _reason(exc)
            frozen = torch.jit.freeze(traced)
    warnings.warn(f"torch.jit.optimize_for_inference failed on {name} ({reason}); "
                  "using the frozen graph without it", stacklevel=2)
    return frozen


class TorchScriptCPU(LocalCPU):
    """This machine's CPU running the model as deployed through TorchScript (traced and frozen,
    see :func:`script_model`), pinned to ``threads`` threads."""

    kind = "measured"
    measures = True
    runtime = "torchscript"
    # A traced, frozen call costs about half an eager one: twice the calls at the same seconds per
    # model brings its repeatability to the eager device's (experiments/bench_timing.py).
    default_repeats = 180
    optimize = False  # torch.jit.optimize_for_inference after freezing: see the module docstring

    def describe(self) -> dict[str, Any]:
        passes = "trace+freeze" + ("+optimize_for_inference" if self.optimize else "")
        return {**super().describe(), "runtime": self.runtime, "script": passes}

    def _script(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> torch.jit.ScriptModule:
        scripted = script_model(module, inputs, optimize=self.optimize)
        with torch.inference_mode():
            for _ in range(JIT_WARM_CALLS):
                scripted(*inputs)
        return scripted

    def runnable(self, model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
        """``model`` traced on ``x``, frozen and warmed past the executor's profiling runs."""
        scripted = self._script(model.eval().cpu(), (x,))
        return lambda: scripted(x)

    def op_subject(self, model: nn.Module, ops: list[OpSig], x: torch.Tensor) -> Subject:
        """Each op module scripted alone on the inputs it gets in the network, all run in graph
        order on every call (forward hooks do not fire inside a frozen graph)."""
        modules = checked_op_modules(model, ops)
        model = model.eval().cpu()
        calls = []
        for op, module, args in zip(ops, modules, self._captured_inputs(model, modules, x)):
            try:
                scripted = self._script(module, args)
            except HwnasError as exc:
                raise HwnasError(f"{self.name}: op {op.kind}{'' if op.op == 'mult' else '-' + op.op} "
                                 f"({op.key}) cannot run in TorchScript: {exc}") from None
            calls.append((scripted, args))

        def run(n: int) -> np.ndarray:
            out = np.empty((n, len(calls)))
            for k in range(n):
                for i, (scripted, args) in enumerate(calls):
                    start = time.perf_counter_ns()
                    scripted(*args)
                    out[k, i] = time.perf_counter_ns() - start
            return out
        return run

    @staticmethod
    def _captured_inputs(model: nn.Module, modules: list[nn.Module], x: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
        """The positional inputs each op module receives in one eager run of ``model``."""
        captured: dict[int, tuple[torch.Tensor, ...]] = {}

        def capture(index: int):
            def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
                captured.setdefault(index, args)  # the first call; an op module runs once
            return hook

        handles = [module.register_forward_pre_hook(capture(index)) for index, module in enumerate(modules)]
        try:
            model(x)
        finally:
            for handle in handles:
                handle.remove()
        missing = [type(modules[i]).__name__ for i in range(len(modules)) if i not in captured]
        if missing:
            raise ValueError(f"op modules never called in the model's forward: {missing}")
        return [captured[i] for i in range(len(modules))]
