"""Benchmark of exported subnets: their latency next to what they are meant to equal or beat.

Prints ``name: value`` lines, all measured in this run on this machine's CPU with one thread,
batch 1, inference mode (the ``local-cpu`` device's conditions), and a ``compared:`` line saying
what each ratio divides by what:

- ``exported_vs_handwritten`` (goal <= 1.03): latency of the exported subnet in eager PyTorch
  (``space_entry("cnn").build_standalone(spec)`` + ``load_state_dict`` of its safetensors weights,
  the path of :func:`hwnas.export.candidate.load_exported`) over the latency of the same architecture written
  here as plain PyTorch modules (``nn.Sequential`` of ``nn.Conv2d`` / ``nn.BatchNorm2d`` /
  ``nn.ReLU6``, the residual as ``x + out``, ``nn.AdaptiveAvgPool2d`` and ``nn.Linear``) with the
  exported model's weights copied in. Both are asserted to give the same outputs (atol 1e-5), so
  the figure compares one computation written two ways: it is the cost of the export's module
  structure. The archs are float (all 32-bit), so there are no quantizers to hand-write: the
  space's largest arch, a mid one (the median-MAC arch of a few seeded samples, made float) and the
  smallest arch made float; per arch and their median.
- ``exported_vs_handwritten_torchscript`` (goal <= 1.03): the same, deployed: the exported
  TorchScript file (:func:`hwnas.export.formats.save_torchscript` then ``load_torchscript``) over
  the handwritten model traced and frozen with :func:`hwnas.hwmodels.torchscript.script_model`.
- ``exported_vs_supernet_speedup``: the supernet running the same arch (``set_active``, eager, in
  the channels-last layout ``Components.build`` gives it on the CPU) over the exported model
  (eager); above 1 means the exported model is faster than running the arch inside the supernet.
- ``int8_speedup``: for the largest arch with every block at 8-bit weights and inputs, the
  fake-quantized float subnet as exported TorchScript over the real int8 TorchScript model of
  :func:`hwnas.export.int8.quantize_int8` (calibrated on the training images, as the export does);
  ``int8_top1_agreement_*`` is the int8 model's top-1 agreement with the fake-quantized one on the
  calibration images and on the held-out validation images. The supernet is untrained here (the
  weights do not matter for latency), so its logits are close to ties and agreement is far below
  what a trained supernet gives; pass ``--weights`` (a ``supernet.safetensors`` of the default
  config) for a meaningful agreement.

Diagnostics (``diag_*``, no goal; they explain the figures above):

- ``diag_exported_vs_handwritten_torchscript_both_loaded``: as ``exported_vs_handwritten_torchscript``
  but with the handwritten TorchScript module also saved and reloaded with ``torch.jit.load``. A
  reloaded module runs about 1-2 % slower than the in-memory frozen one it was saved from (the same
  graph, for the handwritten model as for the export), so this isolates what the export's own
  structure costs once deployed (nothing: the frozen graphs have the same ops).
- ``diag_channels_last_speedup_eager`` / ``_torchscript``: the exported model (eager / traced and
  frozen) over the same model converted to ``torch.channels_last``. ``Components.build`` puts the
  supernet in channels-last on the CPU, but the extracted and exported layers are built fresh in
  the default contiguous layout, so the supernet can beat its own export on the same arch
  (``exported_vs_supernet_speedup`` below 1); oneDNN's depthwise convolutions are the difference.
- with ``--breakdown`` (8x8 only): ``breakdown_<variant>_vs_handwritten_<arch>`` walks from the
  exported eager model to the handwritten one on copies (the hwnas modules are not changed):
  skipping the identity input quantizers' calls (``no_quant_identity``), also the projections'
  identity activations (``no_quant_act_identity``), also calling ``x + out`` instead of the
  ``ResidualAdd`` module (``no_identity_no_residual_module``); and the handwritten model in the
  export's forward style (submodules reached by attribute, through ``nn.Module.__getattr__``,
  instead of iterated by ``nn.Sequential``: ``handwritten_attribute_style``).
  ``breakdown_module_calls_<arch>`` counts the Python module calls of one forward of each.

Timing: each model is warmed up (the device's ``warmup`` calls, after TorchScript's profiling and
optimizing calls), then timed in rounds of ``device.repeats`` calls with
:func:`hwnas.utils.timing.time_call` (garbage collection paused, ``perf_counter_ns``), the
models of one comparison interleaved round by round in rotating order so machine noise hits all of
them alike. A ratio is the median over rounds of the ratio of the two models' round medians;
``ms_*`` lines are medians over all rounds. The default 8x8 digits input comes first; the 8x8 nets
are tiny and dominated by per-op overhead, so the same figures are then repeated at a larger input
(``data.image_size``, ``--image-size``, default 32; 0 skips it) with a ``_<N>px`` suffix, with
fewer calls in smaller rounds, BN recalibration and int8 calibration on 128 images, and the int8
agreement on the held-out images only.
``--repeats`` sets the timed calls per model at 8x8 (default 900, about 2 minutes in all);
``--quick`` is a smoke run (60 calls, rounds of 10, 8x8 only unless ``--image-size`` is given).

Usage: python experiments/bench_export.py [--repeats N] [--quick] [--image-size N] [--breakdown] [--weights PATH]
"""
from __future__ import annotations

import argparse
import copy
import tempfile
import time
import types
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from hwnas.job.checks import load_job_config as load_config
from hwnas.data import iterate_batches
from hwnas.export.formats import load_torchscript, save_scripted, save_torchscript
from hwnas.spaces.registry import op_graph
from hwnas.utils.timing import pinned_threads, time_call
from hwnas.hwmodels.local_cpu import LocalCPU
from hwnas.hwmodels.torchscript import JIT_WARM_CALLS, script_model
from hwnas.export.int8 import calibration_images, write_int8
from hwnas.export.preprocessing import NormalizedInput
from hwnas.train.components import Components, resolve_compute
from hwnas.spaces.ops.layers import InvertedResidual, QConvBNAct
from hwnas.spaces.registry import space_entry

COMPARED = ("exported_vs_handwritten = exported eager (build_standalone(spec) + safetensors state dict) / "
            "handwritten nn.Sequential model, same weights, outputs asserted equal (atol 1e-5); "
            "_torchscript = exported TorchScript file / handwritten traced+frozen (script_model); "
            "exported_vs_supernet_speedup = supernet.set_active(arch) eager / exported eager; "
            "int8_speedup = fake-quant exported TorchScript / int8 TorchScript (quantize_int8); "
            "1 thread, batch 1, interleaved rounds, medians")
EQUAL_ATOL = 1e-5
BIG_CALIBRATION = 128  # images for BN recalibration and int8 calibration at the larger input size


# -- the handwritten model ---------------------------------------------------------------------
def conv_bn_act(layer: dict) -> nn.Sequential:
    """One float conv + BN (+ activation) layer of a subnet spec, as plain modules."""
    if layer.get("op", "mult") != "mult" or layer["wbits"] != 32 or layer["abits"] != 32:
        raise ValueError(f"the handwritten model covers float multiplication layers only, got {layer}")
    k = layer["kernel"]
    modules = [nn.Conv2d(layer["cin"], layer["cout"], k, layer["stride"], k // 2, groups=layer["groups"], bias=False),
               nn.BatchNorm2d(layer["cout"])]
    if layer["act"] == "relu6":
        modules.append(nn.ReLU6())
    elif layer["act"] == "relu":
        modules.append(nn.ReLU())
    elif layer["act"] != "none":
        raise ValueError(f"unknown activation {layer['act']!r}")
    return nn.Sequential(*modules)


class HandBlock(nn.Module):
    def __init__(self, block: dict):
        super().__init__()
        layers = block["layers"]
        self.body = nn.Sequential(*[conv_bn_act(layers[name]) for name in ("expand", "depthwise", "project")
                                    if name in layers])
        self.residual = bool(block["residual"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.residual else out


class HandNet(nn.Module):
    """The subnet of a spec written by hand: what a user would write for this architecture."""

    def __init__(self, spec: dict):
        super().__init__()
        self.stem = conv_bn_act(spec["stem"])
        self.blocks = nn.Sequential(*[HandBlock(b) for b in spec["blocks"]])
        self.head = conv_bn_act(spec["head"])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(spec["classifier"]["in_shape"][0], spec["classifier"]["num_classes"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def weighted_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear))]


def handwritten_copy(spec: dict, exported: nn.Module) -> HandNet:
    """A :class:`HandNet` of ``spec`` holding ``exported``'s weights, layer by layer in order."""
    hand = HandNet(spec)
    src, dst = weighted_layers(exported), weighted_layers(hand)
    if [type(m) for m in src] != [type(m) for m in dst]:
        raise AssertionError("the handwritten model's layers do not line up with the exported model's")
    with torch.no_grad():
        for s, d in zip(src, dst):
            d.load_state_dict(s.state_dict())
            if isinstance(s, nn.BatchNorm2d):
                d.eps = s.eps
    return hand.eval()


# -- models ------------------------------------------------------------------------------------
def float_arch(space, arch):
    values = arch.to_dict()
    values.update({k: 32 for k in values if k.endswith((".wbits", ".abits"))})
    return space.validate(values)


def bits8_arch(space, arch):
    values = arch.to_dict()
    values.update({k: 8 for k in values if k.endswith((".wbits", ".abits"))})
    return space.validate(values)


def macs(spec: dict) -> int:
    total = 0
    for op in op_graph(spec):
        if op.kind in ("conv", "dwconv"):
            h, w = op.out_hw
            total += op.cout * (op.cin // op.groups) * op.kernel * op.kernel * h * w
    return total


def bench_archs(space) -> list[tuple[str, object]]:
    rng = np.random.default_rng(0)
    samples = [float_arch(space, space.sample(rng)) for _ in range(9)]
    mid = sorted(samples, key=lambda a: macs(space.subnet_spec(a)))[len(samples) // 2]
    return [("largest", float_arch(space, space.largest())), ("mid", mid),
            ("smallest", float_arch(space, space.smallest()))]


def exported_eager(parts, arch, model: nn.Module, tmp: Path) -> nn.Module:
    """``model`` through the export's weights file, rebuilt the way load_exported does."""
    weights = tmp / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    rebuilt = space_entry(parts.config.space.type).build_standalone(parts.space.subnet_spec(arch))
    rebuilt.load_state_dict(load_file(str(weights)))
    return rebuilt.eval()


def exported_torchscript(model: nn.Module, example: torch.Tensor, tmp: Path) -> torch.jit.ScriptModule:
    target = tmp / "model.torchscript.pt"
    save_torchscript(model, example, target)
    return load_torchscript(target)


def assert_same(a: Callable, b: Callable, inputs: torch.Tensor, atol: float, what: str) -> float:
    with torch.inference_mode():
        diff = max(float((a(x[None]) - b(x[None])).abs().max()) for x in inputs)
    if not diff <= atol:
        raise AssertionError(f"{what}: outputs differ by {diff:.3g} > {atol:g}")
    return diff


# -- the breakdown of the eager gap (--breakdown) ----------------------------------------------
def _conv_bn_act_forward(self, x):
    return self.act(self.bn(self.conv(x)))


def _conv_bn_forward(self, x):
    return self.bn(self.conv(x))


def _residual_inline_forward(self, x):
    return x + self.project(self.depthwise(self.expand(x)))


def without_calls(exported: nn.Module, quant: bool = False, act: bool = False, add: bool = False) -> nn.Module:
    """A copy of ``exported`` (float layers) whose forward skips the calls of its identity input
    quantizers (``quant``), also of the projections' identity activations (``act``, with ``quant``)
    and of the ResidualAdd modules (``add``, replaced by ``x + out``): the same computation with
    fewer Python module calls."""
    if act and not quant:
        raise ValueError("act needs quant: the variants are cumulative")
    m = copy.deepcopy(exported)
    for mod in m.modules():
        if isinstance(mod, QConvBNAct) and quant:
            if not isinstance(mod.quant, nn.Identity):
                raise ValueError("without_calls covers float layers (identity quantizers) only")
            skip_act = act and isinstance(mod.act, nn.Identity)
            mod.forward = types.MethodType(_conv_bn_forward if skip_act else _conv_bn_act_forward, mod)
        if add and isinstance(mod, InvertedResidual) and mod.add is not None:
            mod.forward = types.MethodType(_residual_inline_forward, mod)
    return m


class _AttrLayer(nn.Module):
    """conv -> bn (-> act) reached by attribute in forward, as QConvBNAct does, not by a Sequential."""

    def __init__(self, seq: nn.Sequential):
        super().__init__()
        self.conv, self.bn = seq[0], seq[1]
        self.act = seq[2] if len(seq) > 2 else None

    def forward(self, x):
        x = self.bn(self.conv(x))
        return self.act(x) if self.act is not None else x


class _AttrBlock(nn.Module):
    def __init__(self, block: HandBlock):
        super().__init__()
        self.expand, self.depthwise, self.project = [_AttrLayer(s) for s in block.body]
        self.residual = block.residual

    def forward(self, x):
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.residual else out


def attribute_style(hand: HandNet) -> HandNet:
    """The handwritten model with the export's forward style and no identity modules."""
    m = copy.deepcopy(hand)
    if any(len(b.body) != 3 for b in m.blocks):
        raise ValueError("attribute_style covers blocks with an expand layer")
    m.blocks = nn.Sequential(*[_AttrBlock(b) for b in m.blocks])
    return m


def module_calls(model: nn.Module, x: torch.Tensor) -> int:
    from hwnas.utils.hooks import run_with_pre_hooks

    count = [0]
    run_with_pre_hooks(model, x, lambda *_: count.__setitem__(0, count[0] + 1), model.modules())
    return count[0]


def breakdown_figures(parts, timer: Timer, archs: list[tuple[str, object]], tmp: Path) -> None:
    """Each step from the exported model to the handwritten one, timed against the handwritten one."""
    x = parts.data.val[0][0][None]
    check = torch.stack([parts.data.val[i][0] for i in range(8)])
    for label, arch in archs:
        model = parts.recalibrated_subnet(arch)
        exported = exported_eager(parts, arch, model, tmp)
        hand = handwritten_copy(parts.space.subnet_spec(arch), exported)
        variants = {"exported": exported,
                    "no_quant_identity": without_calls(exported, quant=True),
                    "no_quant_act_identity": without_calls(exported, quant=True, act=True),
                    "no_identity_no_residual_module": without_calls(exported, quant=True, act=True, add=True),
                    "handwritten_attribute_style": attribute_style(hand),
                    "handwritten": hand}
        for name, m in variants.items():
            assert_same(m, hand, check, EQUAL_ATOL, f"{label}: {name} vs handwritten")
        med = timer.interleaved({k: (lambda m=m: m(x)) for k, m in variants.items()})
        for name, m in variants.items():
            if name != "handwritten":
                out(f"breakdown_{name}_vs_handwritten_{label}", ratio(med, name, "handwritten"))
        print(f"breakdown_module_calls_{label}: " + ", ".join(f"{k} {module_calls(m, x)}" for k, m in variants.items()),
              flush=True)


# -- timing ------------------------------------------------------------------------------------
class Timer:
    def __init__(self, warmup: int, round_size: int, repeats: int):
        self.warmup, self.round_size = warmup, round_size
        self.rounds = max(3, -(-repeats // round_size))

    @torch.inference_mode()
    def interleaved(self, fns: dict[str, Callable[[], object]]) -> dict[str, list[float]]:
        """Per model, its median ms in each round; models run round by round in rotating order."""
        names = list(fns)
        with pinned_threads(1):
            for fn in fns.values():
                for _ in range(JIT_WARM_CALLS + self.warmup):
                    fn()
            medians: dict[str, list[float]] = {n: [] for n in names}
            for r in range(self.rounds):
                order = names[r % len(names):] + names[:r % len(names)]
                for name in order:
                    medians[name].append(time_call(fns[name], 2, self.round_size)[0])
        return medians


def ratio(medians: dict[str, list[float]], num: str, den: str) -> float:
    return float(np.median(np.asarray(medians[num]) / np.asarray(medians[den])))


def out(name: str, value) -> None:
    print(f"{name}: {value:.4f}" if isinstance(value, float) else f"{name}: {value}", flush=True)


# -- the figures -------------------------------------------------------------------------------
def float_figures(parts, timer: Timer, suffix: str, archs: list[tuple[str, object]], tmp: Path) -> None:
    x = parts.data.val[0][0][None]  # one held-out image: batch 1
    check = torch.stack([parts.data.val[i][0] for i in range(8)])
    eager, script, speedup, both_loaded, cl_eager, cl_script = [], [], [], [], [], []
    for label, arch in archs:
        spec = parts.space.subnet_spec(arch)
        model = parts.recalibrated_subnet(arch)
        exported = exported_eager(parts, arch, model, tmp)
        hand = handwritten_copy(spec, exported)
        assert_same(exported, model, check, 0.0, f"{label}: exported vs extracted")
        assert_same(exported, hand, check, EQUAL_ATOL, f"{label}: exported vs handwritten")
        exported_ts = exported_torchscript(model, x, tmp)
        hand_ts = script_model(copy.deepcopy(hand), (x,))
        assert_same(exported_ts, hand_ts, check, EQUAL_ATOL, f"{label}: exported vs handwritten TorchScript")
        save_scripted(hand_ts, tmp / "handwritten.torchscript.pt")
        hand_ts_loaded = load_torchscript(tmp / "handwritten.torchscript.pt")
        # diagnostics: the exported model in the channels-last layout the supernet runs in
        exported_cl = copy.deepcopy(exported).to(memory_format=torch.channels_last)
        exported_ts_cl = script_model(copy.deepcopy(exported_cl), (x,))
        assert_same(exported_cl, exported, check, EQUAL_ATOL, f"{label}: channels-last vs contiguous")
        assert_same(exported_ts_cl, exported_ts, check, EQUAL_ATOL, f"{label}: channels-last TorchScript")
        supernet = parts.supernet.eval()
        supernet.set_active(arch)
        m = timer.interleaved({"exported": lambda: exported(x), "handwritten": lambda: hand(x),
                               "supernet": lambda: supernet(x), "exported_ts": lambda: exported_ts(x),
                               "handwritten_ts": lambda: hand_ts(x), "handwritten_ts_loaded": lambda: hand_ts_loaded(x),
                               "exported_channels_last": lambda: exported_cl(x),
                               "exported_ts_channels_last": lambda: exported_ts_cl(x)})
        eager.append(ratio(m, "exported", "handwritten"))
        script.append(ratio(m, "exported_ts", "handwritten_ts"))
        speedup.append(ratio(m, "supernet", "exported"))
        both_loaded.append(ratio(m, "exported_ts", "handwritten_ts_loaded"))
        cl_eager.append(ratio(m, "exported", "exported_channels_last"))
        cl_script.append(ratio(m, "exported_ts", "exported_ts_channels_last"))
        out(f"exported_vs_handwritten_{label}{suffix}", eager[-1])
        out(f"exported_vs_handwritten_torchscript_{label}{suffix}", script[-1])
        out(f"exported_vs_supernet_speedup_{label}{suffix}", speedup[-1])
        out(f"diag_exported_vs_handwritten_torchscript_both_loaded_{label}{suffix}", both_loaded[-1])
        out(f"diag_channels_last_speedup_eager_{label}{suffix}", cl_eager[-1])
        out(f"diag_channels_last_speedup_torchscript_{label}{suffix}", cl_script[-1])
        print(f"ms_{label}{suffix}: " + ", ".join(f"{k} {np.median(v):.3f}" for k, v in m.items())
              + f"  ({len(spec['blocks'])} blocks, {macs(spec) / 1e6:.2f} MMAC)", flush=True)
    out(f"exported_vs_handwritten{suffix}", float(np.median(eager)))
    out(f"exported_vs_handwritten_torchscript{suffix}", float(np.median(script)))
    out(f"exported_vs_supernet_speedup{suffix}", float(np.median(speedup)))
    out(f"diag_exported_vs_handwritten_torchscript_both_loaded{suffix}", float(np.median(both_loaded)))
    out(f"diag_channels_last_speedup_eager{suffix}", float(np.median(cl_eager)))
    out(f"diag_channels_last_speedup_torchscript{suffix}", float(np.median(cl_script)))


def int8_figures(parts, timer: Timer, suffix: str, tmp: Path, calibration_agreement: bool = True) -> None:
    arch = bits8_arch(parts.space, parts.space.largest())
    model = parts.recalibrated_subnet(arch)
    x = parts.data.val[0][0][None]
    channels = x.shape[1]  # identity statistics: x is already standardized; both files carry the same step
    deployed = NormalizedInput(model, [0.0] * channels, [1.0] * channels).eval()
    fake_ts = exported_torchscript(deployed, x, tmp)
    calibration = calibration_images(parts.data.train, parts.config.train.recalibration_samples)
    converted, int8_ts, backend = write_int8(deployed, calibration, x, tmp / "model.int8.torchscript.pt")
    held_out = torch.cat([b for b, _ in iterate_batches(parts.data.val, 256, shuffle=False)])
    sets = (("calibration", calibration), ("heldout", held_out)) if calibration_agreement else (("heldout", held_out),)
    with torch.inference_mode():
        agree = {name: float((converted(inputs).argmax(1) == model(inputs).argmax(1)).float().mean())
                 for name, inputs in sets}
    m = timer.interleaved({"fake_quant_ts": lambda: fake_ts(x), "int8_ts": lambda: int8_ts(x)})
    out(f"int8_speedup{suffix}", ratio(m, "fake_quant_ts", "int8_ts"))
    if "calibration" in agree:
        out(f"int8_top1_agreement_calibration{suffix}", agree["calibration"])
    out(f"int8_top1_agreement_heldout{suffix}", agree["heldout"])
    print(f"int8_ms{suffix}: " + ", ".join(f"{k} {np.median(v):.3f}" for k, v in m.items())
          + f"  (backend {backend}, {len(calibration)} calibration / {len(held_out)} held-out images)", flush=True)


def run_section(overrides: list[str], weights: Path | None, timer: Timer, suffix: str, tmp: Path,
                breakdown: bool = False) -> None:
    parts = Components.build(load_config(None, overrides), resolve_compute("cpu"))
    if weights is not None:
        parts.load_weights(weights)
    archs = bench_archs(parts.space)
    float_figures(parts, timer, suffix, archs, tmp)
    int8_figures(parts, timer, suffix, tmp, calibration_agreement=not suffix)
    if breakdown:
        breakdown_figures(parts, timer, archs, tmp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed calls per model per comparison at 8x8 (default 900; 60 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a fast smoke run: few repeats, 8x8 only")
    parser.add_argument("--image-size", type=int, default=None,
                        help="the larger input size (default 32; 0 skips it, as --quick does by default)")
    parser.add_argument("--breakdown", action="store_true",
                        help="also attribute the eager exported_vs_handwritten gap to module calls (8x8)")
    parser.add_argument("--weights", type=Path, default=None,
                        help="supernet.safetensors of a job with the default config (default: untrained)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    config = load_config(None, [])
    round_size = 10 if args.quick else (config.device.repeats or LocalCPU.default_repeats)
    warmup = 3 if args.quick else config.device.warmup
    repeats = args.repeats or (60 if args.quick else 900)
    size = args.image_size if args.image_size is not None else (0 if args.quick else 32)
    print(f"# bench_export: torch {torch.__version__}, 1 thread, batch 1, {repeats} timed calls per model "
          f"in rounds of {round_size}", flush=True)
    out("compared", COMPARED)
    with tempfile.TemporaryDirectory(prefix="hwnas-bench-export-") as tmp:
        run_section([], args.weights, Timer(warmup, round_size, repeats), "", Path(tmp), args.breakdown)
        print(f"# 8x8 section done at {time.perf_counter() - started:.0f} s", flush=True)
        if size:
            # about (size / 8)^2 times the work per call: fewer calls, in smaller rounds
            scale = max(1, (size // 8) ** 2)
            big = Timer(max(2, warmup // 2), max(5, round_size // 3), max(15, repeats * 4 // scale))
            # BN recalibration and int8 calibration on fewer images: latency does not depend on them
            overrides = [f"data.image_size={size}", f"train.recalibration_samples={BIG_CALIBRATION}"]
            run_section(overrides, args.weights, big, f"_{size}px", Path(tmp))
    out("wall_s", round(time.perf_counter() - started, 1))


if __name__ == "__main__":
    main()
