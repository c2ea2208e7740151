"""Evaluating a subnet of a supernet: BN recalibration, then its quality (accuracy, perplexity) on a split.

Batch-norm statistics accumulated while training mix every sampled subnet, so they fit none of
them. Before any subnet is evaluated or exported its statistics are recomputed (OFA's
"BN recalibration") from the same fixed, unshuffled training images, which makes the evaluation
and the export of one arch deterministic and identical.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.data import iterate_batches
from hwnas.metrics import QUALITY_METRICS
from hwnas.spaces.ops.elastic import reset_bn_for_recalibration, restore_bn_momentum
from hwnas.spaces.ops.quant import FLOAT_BITS, ElasticLSQ
from hwnas.utils.timing import pinned_threads


@torch.no_grad()
def recalibrate_bn(model: nn.Module, dataset, samples: int, batch_size: int,
                   device: torch.device | str = "cpu") -> None:
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        model.eval()  # layer norm keeps no statistics: nothing to recalibrate
        return
    reset_bn_for_recalibration(model)
    model.train()
    for x, _ in iterate_batches(dataset, batch_size, shuffle=False, limit=samples):
        model(x.to(device))
    restore_bn_momentum(model)
    model.eval()


def _samples_per_batch(dataset, targets: int) -> int:
    """Samples of about ``targets`` targets: a batch of sequences holds as many logits as one of images."""
    per_sample = int(torch.as_tensor(dataset[0][1]).numel()) if len(dataset) else 1
    return max(1, targets // per_sample)


@torch.no_grad()
def quality_metrics(model: nn.Module, dataset, batch_size: int = 256, device: torch.device | str = "cpu"
                    ) -> dict[str, float]:
    """Top-1 ``accuracy`` (a fraction), the mean cross-entropy ``loss`` and ``perplexity`` (its exp),
    all per target: per sample for logits ``[B, C]`` and labels ``[B]``, per token for logits
    ``[B, T, V]`` and next tokens ``[B, T]`` (the leading dims are flattened). ``batch_size`` counts
    targets, so a batch of sequences holds about as many logits as one of images."""
    model.eval()
    correct = total = 0
    loss_sum = 0.0
    for x, y in iterate_batches(dataset, _samples_per_batch(dataset, batch_size)):
        logits = model(x.to(device))
        flat, target = logits.reshape(-1, logits.shape[-1]), y.to(logits.device).reshape(-1)
        correct += int((flat.argmax(1) == target).sum())
        loss_sum += float(F.cross_entropy(flat.float(), target, reduction="sum"))
        total += int(target.numel())
    loss = loss_sum / max(total, 1)
    return {"accuracy": correct / max(total, 1), "loss": loss, "perplexity": math.exp(min(loss, 700.0))}


@torch.no_grad()
def accuracy(model: nn.Module, dataset, batch_size: int = 256, device: torch.device | str = "cpu") -> float:
    """Top-1 accuracy as a fraction in [0, 1] (per token for sequences)."""
    model.eval()
    correct = total = 0
    for x, y in iterate_batches(dataset, _samples_per_batch(dataset, batch_size)):
        pred = model(x.to(device)).argmax(-1).cpu()
        correct += int((pred == y).sum())
        total += int(y.numel())
    return correct / max(total, 1)


def split_quality(model: nn.Module, data, quality: str, splits: tuple[str, ...] = ("val", "test"),
                  device: torch.device | str = "cpu") -> dict[str, float]:
    """The figures a candidate stores for the task's metric (:data:`hwnas.metrics.QUALITY_METRICS`
    ``reported``), per split: ``val_accuracy`` / ``test_accuracy`` for classification,
    ``val_perplexity`` / ``test_perplexity`` (and the next-token accuracies) for a language model."""
    reported = QUALITY_METRICS[quality].reported
    out = {}
    for split in splits:
        if reported == ("accuracy",):  # classification: exactly the figure it always stored
            out[f"{split}_accuracy"] = accuracy(model, getattr(data, split), device=device)
            continue
        figures = quality_metrics(model, getattr(data, split), device=device)
        out.update({f"{split}_{name}": figures[name] for name in reported})
    return out


def evaluate_subnet(supernet, arch, data, split: str, recalibration_samples: int,
                    batch_size: int, device: torch.device | str = "cpu") -> float:
    """Activate ``arch``, recalibrate its BN statistics and return the dataset's quality metric
    (accuracy, perplexity: ``data.quality``) on ``split``."""
    supernet.set_active(arch)
    recalibrate_bn(supernet, data.train, recalibration_samples, batch_size, device)
    quality = getattr(data, "quality", "accuracy")
    return split_quality(supernet, data, quality, (split,), device)[f"{split}_{quality}"]


@torch.no_grad()
def initialize_quantizers(supernet, space, dataset, samples: int = 64, device: torch.device | str = "cpu") -> int:
    """Give every quantizer step that training never ran its initial value, the same way every
    time; returns how many steps that set.

    An LSQ step is initialised from the first tensor it quantizes (see
    :class:`~hwnas.spaces.ops.quant.ElasticLSQ`). Short training can leave a rare (layer, op,
    bit-width) unvisited; its step would then be set by whichever evaluation ran it first, and
    every later result would depend on the order of evaluations: a resumed job, or Ray workers,
    would disagree with an uninterrupted serial run. Running the space's covering subnets (which
    together hold every op) in a fixed order on fixed training images, on one thread, settles
    them all before any evaluation. Weights and BN statistics are untouched (eval mode)."""

    quantizers = [m for m in supernet.modules() if isinstance(m, ElasticLSQ)]

    def unset() -> int:
        return sum(not bool(getattr(q, f"init_b{b}")) for q in quantizers for b in q.bit_choices if b < FLOAT_BITS)

    before = unset()
    if not before:
        return 0
    was_training = supernet.training
    x = torch.stack([dataset[i][0] for i in range(min(samples, len(dataset)))]).to(device)
    supernet.eval()
    with pinned_threads(1):
        for arch in space.covering_archs():
            supernet.set_active(arch)
            supernet(x)
    supernet.train(was_training)
    return before - unset()
