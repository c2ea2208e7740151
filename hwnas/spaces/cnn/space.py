"""The CNN space: a MobileNetV2/V3-style inverted-residual supernet.

Searchable per stage: depth. Per block: expand ratio (width), depthwise kernel (centre crop of
the largest), weight and activation bit-width; a stage may have its own expand-ratio and kernel
lists (a space built around a pretrained MobileNetV2 has expand ratio 1 in its first stage and 6
after: see :mod:`hwnas.spaces.cnn.pretrained`). The stem, the last 1x1 convolution and the
classifier are fixed and kept in float, as is common practice for first and last layers.

:meth:`CNNSpace.subnet_spec` is the one description of a subnet: the supernet activates it, the
exported model is built from it, and the cost model reads its op graph from it.
"""
from __future__ import annotations

import itertools
import math
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from hwnas.ir import FLOAT_BITS
from hwnas.spaces.cnn.graph import cnn_block_layout
from hwnas.spaces.cnn.pretrained import settle_cnn_config
from hwnas.spaces.dims import Arch, Dim, SearchSpace
from hwnas.spaces.pretrained import TimmInit
from hwnas.utils.models import StrictModel

BitChoices = list[Literal[2, 3, 4, 5, 6, 7, 8, 32]]


class _ChoiceLists(StrictModel):
    """The checks of the expand-ratio and kernel lists, the space's and a stage's own alike."""

    @field_validator("expand_ratios", check_fields=False)
    @classmethod
    def _expands(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (any(e < 1 or e > 16 for e in v) or len(set(v)) != len(v)):
            raise ValueError("expand ratios must be distinct integers in 1..16")
        return None if v is None else sorted(v)

    @field_validator("kernel_sizes", check_fields=False)
    @classmethod
    def _kernels(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (any(k < 1 or k > 11 or k % 2 == 0 for k in v) or len(set(v)) != len(v)):
            raise ValueError("kernel sizes must be distinct odd integers in 1..11")
        return None if v is None else sorted(v)


class StageConfig(_ChoiceLists):
    channels: int = Field(gt=0, le=4096)
    stride: Literal[1, 2] = 1
    depth: list[int] = Field(min_length=1, description="choices of the number of blocks")
    expand_ratios: list[int] | None = Field(None, min_length=1, description="this stage's own (null: the space's)")
    kernel_sizes: list[int] | None = Field(None, min_length=1, description="this stage's own (null: the space's)")

    @field_validator("depth")
    @classmethod
    def _depths(cls, v: list[int]) -> list[int]:
        if any(d < 1 or d > 16 for d in v) or len(set(v)) != len(v):
            raise ValueError("depth choices must be distinct integers in 1..16")
        return sorted(v)


class CNNSpaceConfig(_ChoiceLists):
    type: Literal["cnn"] = "cnn"
    stem_channels: int = Field(16, gt=0, le=4096)
    stem_stride: Literal[1, 2] = 1
    head_channels: int = Field(64, gt=0, le=8192)
    stages: list[StageConfig] = Field(min_length=1)
    expand_ratios: list[int] = Field([2, 4, 6], min_length=1)
    kernel_sizes: list[int] = Field([3, 5, 7], min_length=1)
    weight_bits: BitChoices = Field([4, 8, 32], min_length=1)
    act_bits: BitChoices = Field([4, 8, 32], min_length=1)
    op_types: list[Literal["mult", "shift", "adder"]] = Field(
        ["mult"], min_length=1, description="operator types per block; the first is the reference (teacher) type")
    prune_rates: list[float] = Field([0.0], min_length=1, description="share of a block's expanded channels pruned")
    pow2_scales: bool = False
    init: TimmInit | None = Field(None, description="a pretrained timm MobileNetV2 / EfficientNet-Lite the largest "
                                  "subnet starts as (keys left out are taken from it): see hwnas.spaces.cnn.pretrained")

    @model_validator(mode="before")
    @classmethod
    def _from_pretrained(cls, raw: Any) -> Any:
        return settle_cnn_config(raw)

    @field_validator("op_types")
    @classmethod
    def _ops(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("operator types must be distinct")
        return v

    @field_validator("prune_rates")
    @classmethod
    def _prune(cls, v: list[float]) -> list[float]:
        if any(not 0.0 <= r <= 0.9 for r in v) or len(set(v)) != len(v):
            raise ValueError("prune rates must be distinct numbers in [0, 0.9]")
        return sorted(v)

    @field_validator("weight_bits", "act_bits")
    @classmethod
    def _bits(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("bit-width choices must be distinct")
        return sorted(v)


def _conv_out(size: int, kernel: int, stride: int) -> int:
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


class CNNSpace(SearchSpace):
    name = "cnn"

    def __init__(self, config: CNNSpaceConfig, input_shape: tuple[int, int, int], num_classes: int):
        self.config = config
        self.input_shape = tuple(int(s) for s in input_shape)
        self.num_classes = int(num_classes)
        dims: list[Dim] = []
        for i, stage in enumerate(config.stages):
            dims.append(Dim(f"s{i}.depth", tuple(stage.depth)))
            for j in range(max(stage.depth)):
                p = f"s{i}.b{j}"
                dims += [Dim(f"{p}.{key}", tuple(choices)) for key, choices in self.block_choices(i).items()]
        super().__init__(dims)

    def block_choices(self, stage: int | None = None) -> dict[str, list]:
        """The per-block dimensions and their choices in ``stage`` (None: the space-wide lists);
        single-choice op and prune are left out."""
        cfg = self.config
        own = cfg.stages[stage] if stage is not None else None
        out: dict[str, list] = {"expand": (own and own.expand_ratios) or cfg.expand_ratios,
                                "kernel": (own and own.kernel_sizes) or cfg.kernel_sizes,
                                "wbits": cfg.weight_bits, "abits": cfg.act_bits}
        if len(cfg.op_types) > 1:
            out["op"] = cfg.op_types
        if len(cfg.prune_rates) > 1:
            out["prune"] = cfg.prune_rates
        return out

    def _block_value(self, arch, prefix: str, key: str):
        """A block's op or prune value; the only choice when the dimension is not searched."""
        name = f"{prefix}.{key}"
        if name in arch:
            return arch[name]
        return {"op": self.config.op_types, "prune": self.config.prune_rates}[key][0]

    def inactive_dims(self, values) -> set[str]:
        inactive = set()
        keys = list(self.block_choices())
        for i, stage in enumerate(self.config.stages):
            depth = values.get(f"s{i}.depth", max(stage.depth))
            for j in range(depth, max(stage.depth)):
                inactive.update(f"s{i}.b{j}.{k}" for k in keys)
        return inactive

    def _with_block_values(self, arch: Arch, key: str, value) -> Arch:
        if key not in self.block_choices():
            return arch
        values = arch.to_dict()
        values.update({name: value for name in values if name.endswith(f".{key}")})
        return self.canonical(values)

    def largest(self) -> Arch:
        """Deepest and widest, float, unpruned, with the reference (first) operator type."""
        arch = self._with_block_values(super().largest(), "prune", min(self.config.prune_rates))
        return self._with_block_values(arch, "op", self.config.op_types[0])

    def smallest(self) -> Arch:
        """Shallowest and narrowest, fewest bits, most pruned, with the reference operator type."""
        arch = self._with_block_values(super().smallest(), "prune", max(self.config.prune_rates))
        return self._with_block_values(arch, "op", self.config.op_types[0])

    # -- the one description of a subnet ----------------------------------------------------
    def subnet_spec(self, arch: Arch | dict) -> dict[str, Any]:
        """Every layer of the subnet with its shapes, bits and input size: JSON-able."""
        arch = self.validate(arch)
        cfg = self.config
        c, h, w = self.input_shape
        stem = _layer(c, cfg.stem_channels, 3, cfg.stem_stride, 1, FLOAT_BITS, FLOAT_BITS, "relu6", True)
        h, w = _conv_out(h, 3, cfg.stem_stride), _conv_out(w, 3, cfg.stem_stride)
        stem_in = [c, self.input_shape[1], self.input_shape[2]]
        c = cfg.stem_channels
        blocks = []
        for i, stage in enumerate(cfg.stages):
            for j in range(int(arch[f"s{i}.depth"])):
                p = f"s{i}.b{j}"
                stride = stage.stride if j == 0 else 1
                expand, kernel = int(arch[f"{p}.expand"]), int(arch[f"{p}.kernel"])
                wbits, abits = int(arch[f"{p}.wbits"]), int(arch[f"{p}.abits"])
                op, prune = self._block_value(arch, p, "op"), float(self._block_value(arch, p, "prune"))
                width = c * expand
                mid = pruned_width(width, prune) if expand != 1 else width
                layers = {}
                if expand != 1:
                    layers["expand"] = _layer(c, mid, 1, 1, 1, wbits, abits, "relu6", True, op)
                layers["depthwise"] = _layer(mid, mid, kernel, stride, mid, wbits, abits, "relu6",
                                             self.depthwise_input_signed(i), op)
                layers["project"] = _layer(mid, stage.channels, 1, 1, 1, wbits, abits, "none", False, op)
                blocks.append({"name": p, "in_shape": [c, h, w], "stride": stride, "op": op,
                               "width": width, "prune": prune,
                               "residual": stride == 1 and c == stage.channels, "layers": layers})
                h, w = _conv_out(h, kernel, stride), _conv_out(w, kernel, stride)
                c = stage.channels
        head = _layer(c, cfg.head_channels, 1, 1, 1, FLOAT_BITS, FLOAT_BITS, "relu6", True)
        return {"type": "cnn", "input_shape": list(self.input_shape), "num_classes": self.num_classes,
                "stem": {"in_shape": stem_in, **stem}, "blocks": blocks,
                "head": {"in_shape": [c, h, w], **head},
                "classifier": {"in_shape": [cfg.head_channels, h, w], "num_classes": self.num_classes}}

    def covering_archs(self) -> list[Arch]:
        """Archs that together contain every distinct op of the space.

        A block's ops depend only on its own choices and its position (input channels and size
        are fixed by the stage layout), so setting every block of the deepest subnet to each
        combination of per-block choices covers all of them. Where stages have lists of their own,
        combination ``c`` gives each stage its choices at ``c`` modulo its list's length: every
        stage still meets each of its own combinations.
        """
        cfg = self.config
        stages = [self.block_choices(i) for i in range(len(cfg.stages))]
        keys = list(stages[0])
        radices = [max(len(choices[key]) for choices in stages) for key in keys]
        archs = []
        for combo in itertools.product(*(range(r) for r in radices)):
            values: dict[str, Any] = {}
            for i, stage in enumerate(cfg.stages):
                values[f"s{i}.depth"] = max(stage.depth)
                for j in range(max(stage.depth)):
                    for key, k in zip(keys, combo):
                        values[f"s{i}.b{j}.{key}"] = stages[i][key][k % len(stages[i][key])]
            archs.append(self.canonical(values))
        return list(dict.fromkeys(archs))

    def summary(self, arch: Arch) -> str:
        """A short human description: depths, mean expand and kernel, bit-width ranges."""
        depths = [int(arch[f"s{i}.depth"]) for i in range(len(self.config.stages))]
        active = [f"s{i}.b{j}" for i, d in enumerate(depths) for j in range(d)]

        def values(key):
            return [arch[f"{p}.{key}"] for p in active]

        def span(key):
            lo, hi = min(values(key)), max(values(key))
            return f"{lo}" if lo == hi else f"{lo}-{hi}"

        mean = lambda key: sum(values(key)) / len(active)  # noqa: E731
        text = (f"d{'-'.join(map(str, depths))} e{mean('expand'):.1f} k{mean('kernel'):.1f} "
                f"w{span('wbits')} a{span('abits')}")
        if "op" in self.block_choices():  # e.g. "m2s1a0": blocks per operator type
            ops = [self._block_value(arch, p, "op") for p in active]
            text += " " + "".join(f"{o[0]}{ops.count(o)}" for o in self.config.op_types)
        if "prune" in self.block_choices():
            text += f" p{max(float(self._block_value(arch, p, 'prune')) for p in active):g}"
        return text

    def depthwise_input_signed(self, stage: int) -> bool:
        """The depthwise input follows ReLU6 (unsigned) unless an expand ratio of 1 skips the expand."""
        return 1 in self.block_choices(stage)["expand"]

    def block_layout(self):
        """The CNN space decomposes by block (see :func:`~hwnas.spaces.cnn.graph.cnn_block_layout`)
        when every stage has the same choices; with lists of their own its subnets are priced one
        by one (a :class:`~hwnas.spaces.layout.BlockLayout` has one set of choices for all)."""
        stages = [self.block_choices(i) for i in range(len(self.config.stages))]
        if any(choices != stages[0] for choices in stages):
            return None
        if getattr(self, "_layout", None) is None:
            self._layout = cnn_block_layout(self)
        return self._layout

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "config": self.config.model_dump(),
                "input_shape": list(self.input_shape), "num_classes": self.num_classes}


def pruned_width(width: int, rate: float) -> int:
    """Channels kept when ``rate`` of ``width`` are pruned (at least one)."""
    return max(1, int(math.ceil(width * (1.0 - rate) - 1e-9)))


def _layer(cin, cout, kernel, stride, groups, wbits, abits, act, act_signed, op="mult") -> dict[str, Any]:
    return {"cin": cin, "cout": cout, "kernel": kernel, "stride": stride, "groups": groups,
            "wbits": wbits, "abits": abits, "act": act, "act_signed": act_signed, "op": op}


def layer_args(spec: dict[str, Any]) -> dict[str, Any]:
    """The constructor arguments of a fixed layer from its spec (drops the input shape)."""
    return {k: v for k, v in spec.items() if k != "in_shape"}


# -- the supernet ---------------------------------------------------------------------------
