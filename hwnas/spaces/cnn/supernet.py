"""The CNN supernet (one weight tensor per layer at its largest size, sliced for the active subnet)
and the standalone CNN an exported subnet is, both built from :meth:`CNNSpace.subnet_spec`."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hwnas.ir import FLOAT_BITS
from hwnas.spaces.cnn.space import CNNSpace, layer_args
from hwnas.spaces.dims import Arch
from hwnas.spaces.ops.elastic import ElasticQConvBNAct
from hwnas.spaces.ops.layers import ClassifierHead, InvertedResidual, QConvBNAct


class _BlockCore(nn.Module):
    """The three elastic layers of an inverted residual for one operator type."""

    def __init__(self, space: CNNSpace, stage: int, max_cin: int, cout: int, stride: int, op: str):
        super().__init__()
        cfg, choices = space.config, space.block_choices(stage)
        max_mid = max_cin * max(choices["expand"])
        wb, ab, p2 = tuple(cfg.weight_bits), tuple(cfg.act_bits), cfg.pow2_scales
        self.expand = (ElasticQConvBNAct(max_cin, max_mid, (1,), 1, False, wb, ab, "relu6", True, op, p2)
                       if max(choices["expand"]) > 1 else None)
        self.depthwise = ElasticQConvBNAct(max_mid, max_mid, tuple(choices["kernel"]), stride, True,
                                           wb, ab, "relu6", space.depthwise_input_signed(stage), op, p2)
        self.project = ElasticQConvBNAct(max_mid, cout, (1,), 1, False, wb, ab, "none", False, op, p2)

    @torch.no_grad()
    def important_channels(self, width: int, keep: int) -> torch.Tensor:
        """The ``keep`` most important of the first ``width`` expanded channels, in ascending order.

        A channel's importance is the L1 norm of the projection weights that read it: what it
        contributes to the block's output (the criterion of Li et al., ICLR 2017, used by OFA to
        sort channels). Recomputed at every activation, so it follows the weights as they train.
        """
        w = self.project.weight[:, :width]
        importance = w.abs().sum(dim=(0, 2, 3))
        return importance.topk(keep).indices.sort().values


class ElasticInvertedResidual(nn.Module):
    """One block position: a core of elastic layers per operator type (each its own weights)."""

    def __init__(self, space: CNNSpace, stage: int, max_cin: int, cout: int, stride: int):
        super().__init__()
        self.cores = nn.ModuleDict({op: _BlockCore(space, stage, max_cin, cout, stride, op)
                                    for op in space.config.op_types})
        self.active_op = space.config.op_types[0]
        self.use_expand, self.residual = True, False

    @property
    def core(self) -> _BlockCore:
        """The active operator type's layers (a name, so the state dict holds each weight once)."""
        return self.cores[self.active_op]

    def set_active(self, block: dict[str, Any]) -> None:
        layers = block["layers"]
        self.active_op = block["op"]
        self.use_expand = "expand" in layers
        mid = layers["depthwise"]["cout"]
        index = self.core.important_channels(block["width"], mid) if mid < block["width"] else None
        for name in ("expand", "depthwise", "project"):
            if name in layers:
                s = layers[name]
                getattr(self.core, name).set_active(
                    s["cin"], s["cout"], s["kernel"], s["wbits"], s["abits"],
                    in_index=index if name == "project" else None,
                    out_index=index if name != "project" else None)
        self.residual = block["residual"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        core = self.core
        out = core.expand(x) if self.use_expand else x
        out = core.project(core.depthwise(out))
        return x + out if self.residual else out

    def extract(self, block: dict[str, Any]) -> InvertedResidual:
        module = InvertedResidual(block)
        if self.use_expand:
            module.expand = self.core.expand.extract()
        module.depthwise = self.core.depthwise.extract()
        module.project = self.core.project.extract()
        return module


class CNNSupernet(nn.Module):
    """All subnets of a :class:`CNNSpace` in one set of weights; ``set_active`` picks one."""

    def __init__(self, space: CNNSpace):
        super().__init__()
        self.space = space
        cfg = space.config
        f32 = (FLOAT_BITS,)
        self.stem = ElasticQConvBNAct(space.input_shape[0], cfg.stem_channels, (3,), cfg.stem_stride,
                                      False, f32, f32, "relu6", True)
        self.stages = nn.ModuleList()
        c = cfg.stem_channels
        for i, stage in enumerate(cfg.stages):
            blocks = nn.ModuleList()
            for j in range(max(stage.depth)):
                blocks.append(ElasticInvertedResidual(space, i, c, stage.channels, stage.stride if j == 0 else 1))
                c = stage.channels
            self.stages.append(blocks)
        self.head = ElasticQConvBNAct(c, cfg.head_channels, (1,), 1, False, f32, f32, "relu6", True)
        self.classifier = ClassifierHead(cfg.head_channels, space.num_classes)
        self.set_active(space.largest())

    def set_active(self, arch: Arch | dict) -> Arch:
        """Activate ``arch`` (validated: unknown dimensions or values raise ArchError)."""
        arch = self.space.validate(arch)
        self.spec = self.space.subnet_spec(arch)
        self.active_arch = arch
        self._active_blocks = []
        by_name = {b["name"]: b for b in self.spec["blocks"]}
        for i, blocks in enumerate(self.stages):
            for j, block in enumerate(blocks):
                spec = by_name.get(f"s{i}.b{j}")
                if spec is not None:
                    block.set_active(spec)
                    self._active_blocks.append((block, spec))
        return arch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block, _ in self._active_blocks:
            x = block(x)
        return self.classifier(self.head(x))

    @torch.no_grad()
    def extract(self) -> "StandaloneCNN":
        """A standalone model of the active subnet holding only its own (quantized) weights."""
        model = StandaloneCNN(self.spec)
        model.stem = self.stem.extract()
        model.blocks = nn.Sequential(*[b.extract(spec) for b, spec in self._active_blocks])
        model.head = self.head.extract()
        model.classifier.load_state_dict(self.classifier.state_dict())
        return model.eval()


class StandaloneCNN(nn.Module):
    """A fixed subnet rebuilt from its spec alone: plain PyTorch layers, no supernet code."""

    def __init__(self, spec: dict[str, Any]):
        super().__init__()
        self.stem = QConvBNAct(**layer_args(spec["stem"]))
        self.blocks = nn.Sequential(*[InvertedResidual(b) for b in spec["blocks"]])
        self.head = QConvBNAct(**layer_args(spec["head"]))
        self.classifier = ClassifierHead(spec["classifier"]["in_shape"][0], spec["classifier"]["num_classes"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(self.blocks(self.stem(x))))
