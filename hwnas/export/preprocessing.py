"""The input normalization an exported model carries inside itself.

A subnet is trained on images standardized with the train split's per-channel mean and standard
deviation (see :func:`hwnas.data.load_data`). A deployed model that expected those standardized
tensors would score at chance on the raw pixels a user naturally feeds it, with nothing saying
why. So every exported file (the rebuilt module, TorchScript, ONNX, int8) takes raw inputs, the
images scaled to [0, 1] the way the dataset's loader scales them, and standardizes them as its
first step. The manifest's ``preprocessing`` section says what raw means for the job's dataset.

This module imports only torch: :mod:`hwnas.export.loading` uses it, and loading an export needs
no training, search or job code.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn


class NormalizedInput(nn.Module):
    """``network((x - mean) / std)``, with ``mean`` and ``std`` per channel: the standalone
    network behind the normalization it was trained under. ``network`` is the plain subnet
    (``model.network`` gives it back); ``input_description`` says what a raw input is."""

    def __init__(self, network: nn.Module, mean: Sequence[float], std: Sequence[float],
                 input_description: str = "") -> None:
        super().__init__()
        if len(mean) != len(std) or not len(mean):
            raise ValueError(f"mean and std need one value per channel, got {len(mean)} and {len(std)}")
        self.network = network
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(-1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(-1, 1, 1), persistent=False)
        self.input_description = input_description

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network((x - self.mean) / self.std)

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        """What the network itself sees for raw ``x``."""
        return (x - self.mean) / self.std

    def raw(self, standardized: torch.Tensor) -> torch.Tensor:
        """The raw inputs that ``standardized`` came from (the inverse of :meth:`standardize`)."""
        return standardized * self.std + self.mean


def preprocessing_section(description: dict[str, Any]) -> dict[str, Any]:
    """The manifest's ``preprocessing`` entry for data described by ``description`` (a
    :class:`hwnas.data.DataSplits` description): the statistics and what a raw input is. Data
    without per-channel statistics (token ids of a text data set) is fed as it is, and the section
    says so (``inside_model`` false) and names the tokenizer."""
    if "mean" not in description:
        return {"inside_model": False, "applied": "nothing: the inputs are token ids",
                "input": f"int64 tensor N x T of token ids (T up to {description.get('context_length')})",
                "raw_input": description.get("raw_input", "token ids"), "tokenizer": description.get("tokenizer")}
    channels = len(description["mean"])
    size = description["image_size"]
    return {"inside_model": True, "mean": list(description["mean"]), "std": list(description["std"]),
            "applied": "(x - mean) / std per channel, as the first step of every exported file",
            "input": f"float32 tensor N x {channels} x {size} x {size}, raw values in [0, 1]",
            "raw_input": description.get("raw_input", "the dataset's images scaled to [0, 1]")}

