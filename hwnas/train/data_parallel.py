"""One data-parallel worker of supernet training: its shard of every batch, gradients averaged.

:class:`DataParallelTrainer` is :class:`~hwnas.train.trainer.SupernetTrainer` run inside a
``torch.distributed`` process group (gloo, set up by Ray Train in :mod:`hwnas.train.distributed`).
Every worker holds the whole supernet and draws the same global batches and the same sandwich
subnets (the per-epoch generators are seeded by ``(seed, epoch)``); it runs every subnet of the
step on its own contiguous shard of the batch (``tensor_split``, so shards differ by at most one
sample), and the gradients are summed across workers before each optimizer step. The weights stay
the same on every worker without ever being broadcast: all apply the same step to the same
weights (an end-of-epoch check compares them, and a divergence is an error, not a silent drift).

What it equals, and what it does not
------------------------------------
* Gradients. Each worker scales its shard's losses by ``shard / batch`` before ``backward``, so
  the sum over workers is the gradient of the full batch's mean loss, the one the serial trainer
  takes, for the cross-entropy of the largest subnet and the ``batchmean`` KL of distillation alike,
  unequal shards included. The soft labels come from the largest subnet's forward on the worker's
  own shard, which is the full batch's on those samples when nothing couples samples.
  One flat ``all_reduce(SUM)`` per optimizer step carries every gradient plus one flag per
  parameter tensor that some subnet touched it: a tensor no subnet touched on any worker keeps no
  gradient (``None``, not zero), so AdamW skips it as in the serial run. Without
  ``train.step_per_subnet`` autograd sums the sandwich's gradients locally and the reduce runs once,
  after the last subnet's backward; with it, after each subnet's backward, before its step.
* Batch norm normalises with each worker's shard statistics (what torch's DDP does by default, not
  synchronised), so a model with batch norm trains as with a smaller batch for its statistics:
  the result matches the serial run within noise, not to the bit. Its running statistics are
  per worker (rank 0's are checkpointed) and matter to nothing: every subnet's are recalibrated on
  fixed training images before it is evaluated or exported (:mod:`hwnas.train.evaluation`).
* Without batch norm (the ViT space uses layer norm only) a step equals the serial step on the full
  batch up to float rounding (summation order in the shards and the reduce);
  ``tests/test_distributed_training.py`` checks weights and Adam moments against a serial run.
* An LSQ step size is initialised from the first tensor it quantizes. From a shard that would give
  every worker a different value; when a forward on the shard initialised one, the worker undoes
  the flags, runs the subnet once on the full batch without autograd (which sets them exactly as
  the serial trainer does, the same on every worker), and runs the shard again. That happens only
  in the first steps that visit a (layer, bit-width); after that the check costs nothing.
* Dropout or other per-sample randomness would draw differently per shard; the shipped spaces
  have none.
"""
from __future__ import annotations

import io
import math
from typing import Callable

import torch
import torch.distributed as dist

from hwnas.errors import HwnasError
from hwnas.spaces.ops.quant import FLOAT_BITS, ElasticLSQ
from hwnas.train.trainer import SupernetTrainer


class DataParallelTrainer(SupernetTrainer):
    """One worker's trainer. Every rank must run :meth:`train` with the same state, data and
    config; only rank 0 reports checkpoints, through ``report(epoch, record, checkpoint_bytes)``."""

    def __init__(self, supernet, data, config, seed: int, batch_size: int, rank: int, world_size: int,
                 report: Callable[[int, dict, bytes], None] | None = None, fixed_arch=None):
        super().__init__(supernet, data, config, seed, torch.device("cpu"), batch_size, fixed_arch=fixed_arch)
        self.rank, self.world_size, self.report = rank, world_size, report
        self._params = list(supernet.parameters())
        sizes = [p.numel() for p in self._params]
        self._slices = [slice(sum(sizes[:j]), sum(sizes[:j + 1])) for j in range(len(sizes))]
        self._total = sum(sizes)
        self._full_batch: torch.Tensor | None = None
        self._pending: list[torch.Tensor] | None = None  # init flags of quantizer steps not yet set
        self._batch_steps: list[torch.Tensor] | None = None  # LSQ steps of batch-sized tensors

    # -- one step ----------------------------------------------------------------------------
    def _accumulate_gradients(self, net, x: torch.Tensor, y: torch.Tensor, archs: list) -> tuple[float, float]:
        xs, ys = x.tensor_split(self.world_size)[self.rank], y.tensor_split(self.world_size)[self.rank]
        share = len(ys) / len(y)
        last = len(archs) - 1

        def backward(k: int, loss: torch.Tensor) -> None:
            (loss * share).backward()
            if self.config.step_per_subnet or k == last:
                self._all_reduce_gradients(share)
            if self.config.step_per_subnet and k < last:
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)

        self._full_batch = x
        try:
            loss, hits = self._run_subnets(net, xs, ys, archs, backward)
        finally:
            self._full_batch = None
        # the history's figures are the full batch's: the largest subnet's mean loss and hits
        stats = torch.tensor([loss * len(ys), hits], dtype=torch.float64)
        if self.world_size > 1:
            dist.all_reduce(stats, op=dist.ReduceOp.SUM)
        return float(stats[0]) / len(y), float(stats[1])

    def _all_reduce_gradients(self, share: float) -> None:
        """``.grad`` of every parameter := its sum over workers, or None where no worker has one."""
        if self._batch_steps is None:
            self._batch_steps = batch_sized_steps(self.supernet, self.data.train)
        for step in self._batch_steps:
            if step.grad is not None:
                step.grad.mul_(math.sqrt(share))  # LSQ's 1/sqrt(numel) of the full batch's tensor
        n = len(self._params)
        flat = torch.zeros(self._total + n)  # gradients, then a touched-flag per tensor
        for j, p in enumerate(self._params):
            if p.grad is not None:
                flat[self._slices[j]] = p.grad.reshape(-1)
                flat[self._total + j] = 1.0
        if self.world_size > 1:
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        touched = flat[self._total:].tolist()
        for j, p in enumerate(self._params):
            p.grad = flat[self._slices[j]].view(p.shape) if touched[j] > 0 else None

    def _forward(self, net, x: torch.Tensor) -> torch.Tensor:
        """The active subnet's logits on the shard ``x``; a quantizer step this forward initialised
        is set again from the full batch first (see the module docstring)."""
        if self.world_size == 1:
            return net(x)  # the shard is the full batch
        if self._pending is None:
            self._pending = [getattr(q, f"init_b{b}") for q in net.modules() if isinstance(q, ElasticLSQ)
                             for b in q.bit_choices if b < FLOAT_BITS]
        self._pending = [flag for flag in self._pending if not bool(flag)]
        logits = net(x)
        fresh = [flag for flag in self._pending if bool(flag)]
        if not fresh or self._full_batch is None:
            return logits
        del logits
        for flag in fresh:
            flag.fill_(False)
        with torch.no_grad():
            net(self._full_batch)
        self._pending = [flag for flag in self._pending if not bool(flag)]
        return net(x)

    # -- epochs and checkpoints ----------------------------------------------------------------
    def save_checkpoint(self, epoch: int) -> None:
        self._check_same_weights(epoch)
        if self.rank != 0 or self.report is None:
            return
        buffer = io.BytesIO()
        torch.save(self.checkpoint_state(epoch), buffer)
        self.report(epoch, dict(self.history[-1]), buffer.getvalue())

    def _check_same_weights(self, epoch: int) -> None:
        """Every worker must hold the same weights (same steps on the same weights); a per-tensor
        sum that differs between workers means they diverged, which would otherwise go unseen."""
        if self.world_size == 1:
            return
        sums = torch.stack([p.detach().double().sum() for p in self._params])
        low, high = sums.clone(), sums.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        if not torch.equal(low, high):
            raise HwnasError(f"data-parallel workers hold different weights after epoch {epoch}")


@torch.no_grad()
def batch_sized_steps(supernet, dataset) -> list[torch.Tensor]:
    """The LSQ step sizes of quantizers whose input grows with the batch (activations, not weights).

    LSQ scales a step's gradient by ``1 / sqrt(numel * Qp)`` of the tensor it quantizes; on a
    shard of ``share`` of the batch an activation has ``share`` of the elements, so its step's
    gradient comes out ``1 / sqrt(share)`` times the full batch's. Which quantizers see activations
    is found by running the space's covering subnets on 1 and on 2 images and keeping those whose
    input doubled; the supernet's state (quantizer steps a forward would initialise) is restored.
    """
    quantizers = [m for m in supernet.modules() if isinstance(m, ElasticLSQ)]
    seen: dict[int, list[int]] = {id(q): [0, 0] for q in quantizers}
    images = torch.stack([dataset[i][0] for i in range(2)])
    state = {k: v.clone() for k, v in supernet.state_dict().items()}
    was_training = supernet.training
    supernet.eval()
    for n in (1, 2):
        def count(module, args, n=n):
            seen[id(module)][n - 1] += args[0].numel()
        hooks = [q.register_forward_pre_hook(count) for q in quantizers]
        try:
            for arch in supernet.space.covering_archs():
                supernet.set_active(arch)
                supernet(images[:n])
        finally:
            for hook in hooks:
                hook.remove()
    supernet.load_state_dict(state)
    supernet.train(was_training)
    return [step for q in quantizers if 0 < 2 * seen[id(q)][0] == seen[id(q)][1] for step in q.steps.values()]
