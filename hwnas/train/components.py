"""What every consumer of a job rebuilds from its config: data, space and supernet, and its weights.

Training, real evaluation (here and on Ray workers), export and the benchmarks all start from
:meth:`Components.build`, so each of them sees the same data split, the same space and the same
supernet layout. The supernet's weights are one safetensors file with the digest of its tensors
in its own metadata: weights and digest are written together, atomically, and cannot disagree.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from hwnas.config import Config
from hwnas.data import iterate_batches, load_configured
from hwnas.errors import HwnasError
from hwnas.spaces.dims import Arch
from hwnas.spaces.registry import build_space, space_entry
from hwnas.train.evaluation import evaluate_subnet, initialize_quantizers, recalibrate_bn
from hwnas.utils.io import atomic_path, check_digest
from hwnas.utils.tensor_digest import state_digest

EVAL_BATCH = 256  # batch for BN recalibration and accuracy: large batches, few calls
WEIGHTS_DIGEST_KEY = "hwnas_sha256"  # safetensors metadata: state_digest of the tensors
REBUILD_WEIGHTS = ("delete it and rerun `hwnas search` for its job: the weights are rebuilt from the job's "
                   "checkpoint.pt (or retrained if that is gone)")


def resolve_compute(compute: str) -> torch.device:
    if compute == "cuda" and not torch.cuda.is_available():
        raise HwnasError("--compute cuda: no CUDA device is available (use auto or cpu)")
    if compute in ("cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def save_weights(path: Path, state: dict[str, torch.Tensor]) -> None:
    """The supernet's weights as safetensors, with the digest of the tensors in the file's own
    metadata (one file, written atomically: weights and digest cannot disagree)."""
    tensors = {k: v.contiguous() for k, v in state.items()}
    digest = state_digest(dict(sorted(tensors.items())))
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={WEIGHTS_DIGEST_KEY: digest})


def load_weights_file(path: Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a file :func:`save_weights` wrote, checked against their recorded digest."""
    try:
        state = load_file(str(path), device=device)
        with safe_open(str(path), framework="pt") as fh:
            recorded = (fh.metadata() or {}).get(WEIGHTS_DIGEST_KEY)
    except Exception as exc:
        raise HwnasError(f"supernet weights {path} are unreadable ({str(exc).splitlines()[0]}); "
                         f"{REBUILD_WEIGHTS}") from None
    check_digest(path, state_digest(dict(sorted(state.items()))), recorded, what="supernet weights",
                 remedy=REBUILD_WEIGHTS, where=f"its metadata entry {WEIGHTS_DIGEST_KEY!r}")
    return state


@dataclass
class Components:
    """What every consumer of a job rebuilds from its config: data, space and supernet."""

    config: Config
    data: Any
    space: Any
    supernet: Any
    compute: torch.device
    _initial: Any = field(default=None, repr=False, compare=False)  # the supernet at init, built on first use

    @classmethod
    def build(cls, config: Config, compute: torch.device) -> "Components":
        data = load_configured(config.data)
        space = build_space(config.space, data.input_shape, data.num_classes)
        torch.manual_seed(config.seed)
        supernet = space_entry(config.space.type).build_supernet(space).to(compute)
        if compute.type == "cpu":
            # oneDNN's depthwise convolutions (forward and backward) run several times faster in
            # channels-last layout. The layout is set once here, for training, evaluation and
            # export alike: quantizers round, so even float-rounding differences between layouts
            # could move a value across a level and change an evaluated accuracy.
            supernet.to(memory_format=torch.channels_last)
        return cls(config, data, space, supernet, compute)

    def load_weights(self, path: Path) -> None:
        state = load_weights_file(path, str(self.compute))
        try:
            self.supernet.load_state_dict(state)
        except Exception as exc:
            raise HwnasError(f"supernet weights {path} are unreadable ({str(exc).splitlines()[0]})") from None

    def settle_quantizers(self) -> int:
        """Set the quantizer steps training never ran, identically in every process (see
        :func:`~hwnas.train.evaluation.initialize_quantizers`)."""
        return initialize_quantizers(self.supernet, self.space, self.data.train, device=self.compute)

    def evaluate(self, arch: Arch, split: str) -> float:
        """The quality metric of the dataset's task (``data.quality``: accuracy, perplexity) of ``arch``."""
        t = self.config.train
        return evaluate_subnet(self.supernet, arch, self.data, split, t.recalibration_samples,
                               EVAL_BATCH, self.compute)

    def subnets_to_time(self, archs: list[Arch]) -> list[torch.nn.Module]:
        """The standalone subnets of ``archs`` on the CPU, without BN recalibration: their timing
        depends on the architecture, not on the statistics."""
        models = []
        for arch in archs:
            self.supernet.set_active(arch)
            models.append(self.supernet.extract().cpu().eval())
        return models

    def initial_subnet(self, arch: Arch) -> torch.nn.Module:
        """The standalone subnet of ``arch`` at initialization, on the CPU: extracted from a second
        supernet built under the job's seed (the weights the job's supernet starts from), so
        training-free scores (zero-cost proxies) are the same whether or not the job's supernet
        has been trained, and every subnet of one job starts from the same random draw."""
        if self._initial is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.config.seed)
                self._initial = space_entry(self.config.space.type).build_supernet(self.space)
        self._initial.set_active(arch)
        return self._initial.extract().cpu().train()

    def proxy_batch(self, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A fixed batch of ``size`` training samples drawn under ``seed``: what every subnet of a
        job is scored on by the zero-cost proxies (the same batch for all, so scores compare)."""
        generator = torch.Generator().manual_seed(seed)
        return next(iter(iterate_batches(self.data.train, size, shuffle=True, generator=generator)))

    def recalibrated_subnet(self, arch: Arch) -> torch.nn.Module:
        """The standalone subnet of ``arch`` with BN statistics recalibrated, on the CPU."""
        self.supernet.set_active(arch)
        recalibrate_bn(self.supernet, self.data.train, self.config.train.recalibration_samples,
                       EVAL_BATCH, self.compute)
        return self.supernet.extract().cpu().eval()


