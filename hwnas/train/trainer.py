"""Supernet training: sandwich rule with in-place distillation, resumable per epoch.

Each step trains the largest subnet on the labels, then the smallest and ``n - 2`` random subnets
on the largest one's soft predictions (in-place distillation, as in Once-for-All / BigNAS); the
gradients of all of them are summed before one optimizer step. The learning rate follows a
linear warm-up and a cosine decay computed from the step number, so it needs no state of its own.

Every epoch's randomness (data order, sampled subnets) is drawn from generators seeded by
``(seed, epoch)``, so a run resumed from the checkpoint of epoch e continues exactly as an
uninterrupted run would. The checkpoint (weights, optimizer state, history) is written atomically
after every epoch and read back with ``torch.load(weights_only=True)``. It records the sha256 of its
own content (:func:`~hwnas.utils.tensor_digest.state_digest`, under ``digest``), computed when it is made, so
one truncated or altered on disk afterwards is refused by name instead of resumed from; the digest
lives inside the file, so file and digest can never disagree after a kill, and the Ray trainer's
checkpoints (made by the same :meth:`SupernetTrainer.checkpoint_state`) carry it too.
"""
from __future__ import annotations

import io
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from hwnas.data import iterate_batches
from hwnas.errors import HwnasError
from hwnas.utils.io import atomic_path, check_digest
from hwnas.utils.tensor_digest import state_digest
from hwnas.utils.timing import pinned_threads

CHECKPOINT_VERSION = 1
RETRAIN = "delete it to retrain (from epoch 0)"


class SupernetTrainer:
    def __init__(self, supernet, data, config, seed: int, device: torch.device, batch_size: int,
                 checkpoint_path: str | Path | None = None,
                 on_epoch: Callable[[int, int, dict[str, float]], None] | None = None,
                 fixed_arch=None):
        self.supernet, self.data, self.config, self.seed = supernet, data, config, seed
        self.device, self.batch_size = device, batch_size
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        self.on_epoch = on_epoch
        self.fixed_arch = fixed_arch  # train this one subnet alone (the baseline a supernet is judged by)
        self.history: list[dict[str, float]] = []
        self.start_epoch = 0
        self.optimizer = self._make_optimizer()

    def _make_optimizer(self) -> torch.optim.Optimizer:
        decay, no_decay = [], []
        for name, p in self.supernet.named_parameters():
            (no_decay if p.ndim <= 1 or ".steps." in name else decay).append(p)
        return torch.optim.AdamW([{"params": decay, "weight_decay": self.config.weight_decay},
                                  {"params": no_decay, "weight_decay": 0.0}], lr=self.config.lr)

    # -- checkpoints -----------------------------------------------------------------------
    def checkpoint_state(self, epoch: int) -> dict[str, Any]:
        """What the checkpoint after ``epoch`` holds (weights, optimizer state, history) and the
        digest of all that, which :meth:`try_resume` checks."""
        state = {"version": CHECKPOINT_VERSION, "epoch": epoch, "model": self.supernet.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "history": self.history}
        state["digest"] = state_digest(state)
        return state

    def save_checkpoint(self, epoch: int) -> None:
        if self.checkpoint_path is None:
            return
        # through memory: torch's file writer reports a full disk as a bare RuntimeError (and keeps
        # the failed file open); a plain write reports it as the OSError it is
        buffer = io.BytesIO()
        torch.save(self.checkpoint_state(epoch), buffer)
        with atomic_path(self.checkpoint_path) as tmp:
            tmp.write_bytes(buffer.getvalue())

    def try_resume(self) -> bool:
        """Load the checkpoint if there is one; return whether training resumed from it."""
        if self.checkpoint_path is None or not self.checkpoint_path.exists():
            return False
        try:
            state = torch.load(self.checkpoint_path, map_location=self.device, weights_only=True)
            if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
                raise ValueError(f"version {state.get('version') if isinstance(state, dict) else None}")
            recorded = state.pop("digest", None)
            actual = state_digest(state)
        except Exception as exc:  # a corrupt or foreign file: say which, never use it silently
            raise HwnasError(f"checkpoint {self.checkpoint_path} is unreadable ({_first_line(exc)}); "
                             f"{RETRAIN}") from None
        # before anything is loaded: an altered checkpoint must not touch the weights
        check_digest(self.checkpoint_path, actual, recorded, what="checkpoint", remedy=RETRAIN,
                     where="the checkpoint's own 'digest' entry")
        try:
            self.supernet.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except Exception as exc:  # a checkpoint of another supernet or optimizer
            raise HwnasError(f"checkpoint {self.checkpoint_path} is unreadable ({_first_line(exc)}); "
                             f"{RETRAIN}") from None
        self.history = list(state["history"])
        self.start_epoch = int(state["epoch"]) + 1
        return True

    # -- training --------------------------------------------------------------------------
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch: every full batch of the training split, at most
        ``max_steps`` when set. The cap takes the first batches of the epoch's shuffled order, so an
        epoch stays a function of ``(seed, epoch)`` and a run resumed from its per-epoch checkpoint
        continues exactly as an uninterrupted one; the learning-rate schedule spans the capped steps."""
        steps = max(1, len(self.data.train) // self.batch_size)
        cap = getattr(self.config, "max_steps", None)
        return steps if cap is None else min(steps, cap)

    def _lr(self, step: int, total: int, steps_per_epoch: int) -> float:
        warmup = self.config.warmup_epochs * steps_per_epoch
        if step < warmup:
            return self.config.lr * (step + 1) / warmup
        progress = (step - warmup) / max(total - warmup, 1)
        return self.config.lr * 0.5 * (1 + math.cos(math.pi * progress))

    def allowed_ops(self, epoch: int) -> list[str] | None:
        """Operator types random subnets may use at ``epoch`` (None: all).

        With ``progressive_ops`` the epochs are split into one phase per operator type: the first
        phase trains the first type only, each next phase adds the next type, as NASA's
        progressive pretraining trains multiplication first, then shift, then adder layers.
        """
        ops = list(getattr(self.supernet.space.config, "op_types", []))
        if not self.config.progressive_ops or len(ops) < 2:
            return None
        phase = min(epoch * len(ops) // max(self.config.epochs, 1), len(ops) - 1)
        return ops[: phase + 1]

    def _subnets(self, rng: np.random.Generator, allowed_ops: list[str] | None):
        if self.fixed_arch is not None:
            return [self.fixed_arch]
        space = self.supernet.space
        extra = [space.sample(rng) for _ in range(self.config.subnets_per_step - 2)]
        if allowed_ops is not None:
            extra = [_restrict_ops(space, arch, allowed_ops, rng) for arch in extra]
        return [space.largest(), space.smallest(), *extra]

    def train(self) -> list[dict[str, float]]:
        """Train the remaining epochs; on the CPU on ``config.threads`` threads when set. Intra-op
        threads spin at every op's barrier, so on a machine where another process holds a core,
        two threads on these small tensors run several times slower than one
        (``experiments/bench_threads.py``: an epoch of the default job 2.0 s quiet on 2 threads,
        27 s beside a busy loop; 3.0 s either way on 1 thread)."""
        pinned = self.config.threads is not None and self.device.type == "cpu"
        with pinned_threads(self.config.threads) if pinned else nullcontext():
            return self._train_epochs()

    def _train_epochs(self) -> list[dict[str, float]]:
        net = self.supernet.to(self.device)
        cfg = self.config
        steps_per_epoch = self.steps_per_epoch()
        total = cfg.epochs * steps_per_epoch
        for epoch in range(self.start_epoch, cfg.epochs):
            started = time.perf_counter()
            gen = torch.Generator().manual_seed(self.seed * 100003 + epoch)
            rng = np.random.default_rng([self.seed, epoch])
            net.train()
            loss_sum = correct = seen = 0.0
            allowed = self.allowed_ops(epoch)
            batches = iterate_batches(self.data.train, self.batch_size, shuffle=True, generator=gen,
                                      drop_last=True, limit=steps_per_epoch * self.batch_size)
            for i, (x, y) in enumerate(batches):
                step = epoch * steps_per_epoch + i
                for group in self.optimizer.param_groups:
                    group["lr"] = self._lr(step, total, steps_per_epoch)
                x, y = x.to(self.device), y.to(self.device)
                self.optimizer.zero_grad(set_to_none=True)
                loss, hits = self._accumulate_gradients(net, x, y, self._subnets(rng, allowed))
                loss_sum += loss * y.numel()  # per target: a sample, or a token of a sequence
                correct += hits
                seen += y.numel()
                self.optimizer.step()
            record = {"epoch": epoch, "loss": loss_sum / max(seen, 1), "train_accuracy": correct / max(seen, 1),
                      "lr": self.optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - started}
            self.history.append(record)
            self.save_checkpoint(epoch)
            if self.on_epoch is not None:
                self.on_epoch(epoch + 1, cfg.epochs, record)
        return self.history

    def _accumulate_gradients(self, net, x: torch.Tensor, y: torch.Tensor, archs: list) -> tuple[float, float]:
        """One step's sandwich: the gradients of every subnet of ``archs``, summed into ``.grad``
        in order; returns the first (largest) subnet's loss and its number of correct predictions.
        With ``step_per_subnet`` every subnet but the last is stepped on its own gradient at once
        (the caller steps the last), so each subnet gets a full optimizer update: AdamW normalizes
        a summed gradient to one step's size, which leaves each of n subnets about 1/n of the
        progress it makes alone (the ViT supernet's gap to training alone, see README).

        The one place a step's gradients are made, so that a data-parallel worker can override it
        (see :mod:`hwnas.train.data_parallel`) and keep everything else of this class.
        """
        def backward(k: int, loss: torch.Tensor) -> None:
            loss.backward()
            if self.config.step_per_subnet and k < len(archs) - 1:
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)

        return self._run_subnets(net, x, y, archs, backward)

    def _run_subnets(self, net, x: torch.Tensor, y: torch.Tensor, archs: list,
                     on_loss: Callable[[int, torch.Tensor], None]) -> tuple[float, float]:
        """Forward every subnet of ``archs`` in order (the first one teaches the others) and hand
        each loss to ``on_loss``. Returns the first subnet's loss and its number of correct
        predictions."""
        teacher = None
        loss0 = hits = 0.0
        for k, arch in enumerate(archs):
            net.set_active(arch)
            logits = self._forward(net, x)
            loss = self._subnet_loss(k, logits, y, teacher)
            if k == 0:
                teacher = F.softmax(logits.detach(), -1)
                loss0 = float(loss.detach())
                hits = float((logits.argmax(-1) == y).sum())
            on_loss(k, loss)
        return loss0, hits

    def _forward(self, net, x: torch.Tensor) -> torch.Tensor:
        """The active subnet's logits (a data-parallel worker also settles quantizers here)."""
        return net(x)

    def _subnet_loss(self, k: int, logits: torch.Tensor, y: torch.Tensor, teacher) -> torch.Tensor:
        """The largest subnet (k = 0) learns the labels; the others its soft predictions. Both are
        means per target: logits ``[B, C]`` with labels ``[B]``, or ``[B, T, V]`` with next tokens
        ``[B, T]`` (the leading dims flattened, so the KL's ``batchmean`` is per token)."""
        flat = logits.reshape(-1, logits.shape[-1])
        if k == 0 or teacher is None or not self.config.distill:
            return F.cross_entropy(flat, y.reshape(-1))
        return F.kl_div(F.log_softmax(flat, 1), teacher.reshape(-1, teacher.shape[-1]), reduction="batchmean")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _restrict_ops(space, arch, allowed: list[str], rng: np.random.Generator):
    """Replace operator types outside ``allowed`` by random allowed ones."""
    values = arch.to_dict()
    for name, value in values.items():
        if name.endswith(".op") and value not in allowed:
            values[name] = allowed[int(rng.integers(len(allowed)))]
    return space.canonical(values)
