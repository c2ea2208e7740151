"""A search space defined outside hwnas, to prove the space contract: an elastic MLP.

Importing this module registers the space ``mlp-test`` (see :mod:`hwnas.spaces.registry`); nothing
in hwnas knows of it. Searchable: the number of hidden layers and each one's width. The supernet
holds one weight matrix per layer at its largest size and slices it for the active subnet, as
Once-for-All does; the exported subnet is plain ``nn.Linear`` layers with its own weights.
"""
from __future__ import annotations

import itertools
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from hwnas.ir import OpSig
from hwnas.spaces.dims import Arch, Dim, SearchSpace
from hwnas.spaces.registry import SpaceEntry, register_space

NAME = "mlp-test"


class MLPSpaceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["mlp-test"] = NAME
    depths: list[int] = Field([1, 2], min_length=1)
    widths: list[int] = Field([16, 32, 48], min_length=1)


class MLPSpace(SearchSpace):
    name = NAME

    def __init__(self, config: MLPSpaceConfig, input_shape, num_classes: int):
        self.config, self.input_shape, self.num_classes = config, tuple(input_shape), int(num_classes)
        self.max_depth = max(config.depths)
        super().__init__([Dim("depth", tuple(config.depths)),
                          *(Dim(f"l{i}.width", tuple(config.widths)) for i in range(self.max_depth))])

    def inactive_dims(self, values) -> set[str]:
        depth = values.get("depth", self.max_depth)
        return {f"l{i}.width" for i in range(depth, self.max_depth)}

    def subnet_spec(self, arch: Arch | dict) -> dict[str, Any]:
        arch = self.validate(arch)
        cin = int(torch.tensor(self.input_shape).prod())
        layers = []
        for i in range(int(arch["depth"])):
            layers.append({"cin": cin, "cout": int(arch[f"l{i}.width"])})
            cin = layers[-1]["cout"]
        return {"type": NAME, "input_shape": list(self.input_shape), "num_classes": self.num_classes,
                "layers": layers, "classifier": {"cin": cin, "num_classes": self.num_classes}}

    def covering_archs(self) -> list[Arch]:
        """Every width sequence of the deepest subnet: a layer's op depends on its own width and
        the one before it, and a shallower subnet's ops are among these."""
        return [self.canonical({"depth": self.max_depth, **{f"l{i}.width": w for i, w in enumerate(widths)}})
                for widths in itertools.product(self.config.widths, repeat=self.max_depth)]

    def summary(self, arch: Arch) -> str:
        return "mlp " + "-".join(str(arch[f"l{i}.width"]) for i in range(int(arch["depth"])))


def mlp_op_graph(spec: dict[str, Any]) -> list[OpSig]:
    ops = [OpSig("linear", layer["cin"], 1, 1, layer["cout"], act="relu") for layer in spec["layers"]]
    return [*ops, OpSig("classifier", spec["classifier"]["cin"], 1, 1, spec["num_classes"])]


class StandaloneMLP(nn.Module):
    def __init__(self, spec: dict[str, Any]):
        super().__init__()
        self.hidden = nn.ModuleList(nn.Linear(layer["cin"], layer["cout"]) for layer in spec["layers"])
        self.classifier = nn.Linear(spec["classifier"]["cin"], spec["num_classes"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.hidden:
            x = F.relu(layer(x))
        return self.classifier(x)


class MLPSupernet(nn.Module):
    def __init__(self, space: MLPSpace):
        super().__init__()
        self.space = space
        widest, cin = max(space.config.widths), int(torch.tensor(space.input_shape).prod())
        self.hidden = nn.ModuleList(nn.Linear(cin if i == 0 else widest, widest) for i in range(space.max_depth))
        self.classifier = nn.Linear(widest, space.num_classes)
        self.set_active(space.largest())

    def set_active(self, arch: Arch | dict) -> Arch:
        arch = self.space.validate(arch)
        self.spec, self.active_arch = self.space.subnet_spec(arch), arch
        return arch

    def _slices(self):
        for layer, spec in zip(self.hidden, self.spec["layers"]):
            yield layer.weight[:spec["cout"], :spec["cin"]], layer.bias[:spec["cout"]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for weight, bias in self._slices():
            x = F.relu(F.linear(x, weight, bias))
        return F.linear(x, self.classifier.weight[:, :self.spec["classifier"]["cin"]], self.classifier.bias)

    @torch.no_grad()
    def extract(self) -> StandaloneMLP:
        model = StandaloneMLP(self.spec)
        for target, (weight, bias) in zip(model.hidden, self._slices()):
            target.weight.copy_(weight)
            target.bias.copy_(bias)
        model.classifier.weight.copy_(self.classifier.weight[:, :self.spec["classifier"]["cin"]])
        model.classifier.bias.copy_(self.classifier.bias)
        return model.eval()


ENTRY = register_space(SpaceEntry(name=NAME, config_model=MLPSpaceConfig, build_space=MLPSpace,
                                  build_supernet=MLPSupernet, build_standalone=StandaloneMLP,
                                  op_graph=mlp_op_graph))
