"""A tiny next-token space defined outside hwnas, to run a language-model job through the core.

Importing this module registers ``seq-test``: token ids ``[B, T]`` -> an embedding of searchable
width -> a ReLU layer of searchable width -> logits ``[B, T, V]``. It is no language model worth
the name (each position sees only its own token); it is the smallest thing with a language
model's shapes, so the core's text data, per-token losses and perplexity can be checked end to
end while the real LM space lives elsewhere. Its latency is stated per generated token, and it
states a ``prefill`` latency phase (a prompt of ``prompt_length`` tokens through both layers), so a
space outside hwnas proves the phase hook too.
"""
from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from hwnas.ir import OpSig
from hwnas.spaces.dims import Arch, Dim, SearchSpace
from hwnas.spaces.registry import LatencyPhase, SpaceEntry, register_space

NAME = "seq-test"


class SeqSpaceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["seq-test"] = NAME
    embed: list[int] = Field([8, 16], min_length=1)
    hidden: list[int] = Field([8, 16, 32], min_length=1)
    prompt_length: int = Field(4, gt=0)


class SeqSpace(SearchSpace):
    name = NAME
    latency_unit = "per generated token"

    def __init__(self, config: SeqSpaceConfig, input_shape, num_classes: int):
        self.config, self.input_shape, self.num_classes = config, tuple(input_shape), int(num_classes)
        super().__init__([Dim("embed", tuple(config.embed)), Dim("hidden", tuple(config.hidden))])

    def subnet_spec(self, arch: Arch | dict) -> dict[str, Any]:
        arch = self.validate(arch)
        return {"type": NAME, "input_shape": list(self.input_shape), "num_classes": self.num_classes,
                "embed": int(arch["embed"]), "hidden": int(arch["hidden"]), "prompt_length": self.config.prompt_length}

    def covering_archs(self) -> list[Arch]:
        return [self.canonical({"embed": e, "hidden": h}) for e in self.config.embed for h in self.config.hidden]

    def summary(self, arch: Arch) -> str:
        return f"seq e{arch['embed']} h{arch['hidden']}"


def seq_op_graph(spec: dict[str, Any]) -> list[OpSig]:
    """One decode step: one token through the hidden layer and the head."""
    return [OpSig("linear", spec["embed"], 1, 1, spec["hidden"], act="relu"),
            OpSig("linear", spec["hidden"], 1, 1, spec["num_classes"])]


def seq_prefill_graph(spec: dict[str, Any]) -> list[OpSig]:
    """The prefill: the prompt's tokens through the hidden layer and the head at once."""
    p = spec["prompt_length"]
    return [OpSig("linear", spec["embed"], p, 1, spec["hidden"], act="relu"),
            OpSig("linear", spec["hidden"], p, 1, spec["num_classes"])]


def seq_prefill_call(model: nn.Module, batch_size: int):
    ids = torch.zeros(batch_size, model.prompt_length, dtype=torch.int64)
    return lambda: model(ids)


class StandaloneSeq(nn.Module):
    def __init__(self, spec: dict[str, Any]):
        super().__init__()
        self.prompt_length = spec.get("prompt_length", 1)
        self.embed = nn.Embedding(spec["num_classes"], spec["embed"])
        self.hidden = nn.Linear(spec["embed"], spec["hidden"])
        self.head = nn.Linear(spec["hidden"], spec["num_classes"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.hidden(self.embed(x))))

    def example_input(self, batch_size: int) -> torch.Tensor:
        """One token per sequence: the decode step its op graph costs (what a device times)."""
        return torch.zeros(batch_size, 1, dtype=torch.int64)


class SeqSupernet(nn.Module):
    def __init__(self, space: SeqSpace):
        super().__init__()
        self.space = space
        e, h, v = max(space.config.embed), max(space.config.hidden), space.num_classes
        self.embed, self.hidden, self.head = nn.Embedding(v, e), nn.Linear(e, h), nn.Linear(h, v)
        self.set_active(space.largest())

    def set_active(self, arch: Arch | dict) -> Arch:
        arch = self.space.validate(arch)
        self.spec, self.active_arch = self.space.subnet_spec(arch), arch
        return arch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e, h = self.spec["embed"], self.spec["hidden"]
        z = F.relu(F.linear(self.embed.weight[:, :e][x], self.hidden.weight[:h, :e], self.hidden.bias[:h]))
        return F.linear(z, self.head.weight[:, :h], self.head.bias)

    @torch.no_grad()
    def extract(self) -> StandaloneSeq:
        e, h = self.spec["embed"], self.spec["hidden"]
        model = StandaloneSeq(self.spec)
        model.embed.weight.copy_(self.embed.weight[:, :e])
        model.hidden.weight.copy_(self.hidden.weight[:h, :e])
        model.hidden.bias.copy_(self.hidden.bias[:h])
        model.head.weight.copy_(self.head.weight[:, :h])
        model.head.bias.copy_(self.head.bias)
        return model.eval()


ENTRY = register_space(SpaceEntry(name=NAME, config_model=SeqSpaceConfig, build_space=SeqSpace,
                                  build_supernet=SeqSupernet, build_standalone=StandaloneSeq,
                                  op_graph=seq_op_graph,
                                  latency_phases={"prefill": LatencyPhase(
                                      seq_prefill_graph, seq_prefill_call,
                                      lambda spec: f"per {spec['prompt_length']}-token prompt")}))
