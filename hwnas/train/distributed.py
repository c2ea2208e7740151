"""Supernet training on Ray Train workers (CPU, ``torch.distributed`` gloo) with the serial result.

Why one module this long: most of it is the argument, below, that the result is bit-identical to
the serial trainer's; the worker loop, the gradient exchange and the driver that checkpoints
between epochs are kept beside it so that the argument and the code it is about read together.

``--workers N`` (or ``--ray-address ADDR``) trains the supernet on N Ray Train workers
(:class:`ray.train.torch.TorchTrainer`, ``ScalingConfig(num_workers=N, use_gpu=False)``). The
trained weights, optimizer state and history are bit-identical to those of
:class:`~hwnas.train.trainer.SupernetTrainer` run serially with the same seed and the same number
of torch threads (see "Threads" below).

Why the work is split over the sandwich's subnets, not over the data
--------------------------------------------------------------------
Plain data parallelism (each worker a shard of every batch) cannot equal the serial run: batch
norm normalises with the statistics of the batch it sees, so a shard's forward pass differs from
the full batch's. Here every worker holds the full model, reads the same full batch and draws the
same subnets (the per-epoch generators are seeded by ``(seed, epoch)``), and the subnets of a step
are what is divided: each step's subnets are assigned to workers by the longest-processing-time
rule on their MACs (the same assignment on every worker, from the same archs).

For each subnet of the step, in the serial order, every worker runs the forward pass: with
autograd for its own subnets, under ``no_grad`` for the others. The other workers' forwards are not
wasted work that a cleverer split could drop: the forward pass has side effects the serial run
applies in subnet order, which later subnets of the same step depend on or which end up in the
state dict -- the running batch-norm statistics (and ``num_batches_tracked``) and the lazy
initialisation of an LSQ step size from the first tensor it sees at a bit-width. Replaying every
forward in order keeps them identical on every worker. A ``no_grad`` forward gives the same
logits, to the bit, as one with autograd, so the largest subnet's soft labels (the distillation
targets) are the same on every worker. A forward under ``no_grad`` costs roughly 20-40 % of a
subnet's forward plus backward on the default spaces, so with W workers a step costs about
``sum(no_grad forwards of the others) + max over workers(own forwards + backwards)``.

Exact gradients
---------------
The serial trainer calls ``backward`` once per subnet, and autograd adds each subnet's gradient to
``.grad`` in turn: ``((g0 + g1) + g2) + ...``. A worker computes ``g_k`` of each subnet it owns into
fresh ``.grad`` (bit-identical to the ``g_k`` the serial run adds: same weights, same inputs,
same kernels), writes it into row k of a zero buffer of shape ``(subnets, parameters + tensors)``,
with a flag per parameter tensor that the subnet touched it (a subnet that leaves a parameter out
gives no gradient, not a zero one: AdamW skips such a parameter, and must keep doing so), and one
``all_reduce(SUM)`` over gloo fills every row on every worker. Every element of the buffer is one
worker's value plus zeros, which is exact in floating point (up to the sign of a zero, which no
later step can tell apart). Each worker then sums the rows in the serial order with the same
additions autograd performs, so ``.grad`` -- and with it the AdamW step, which every worker
applies -- is bit-identical to the serial run's; the weights stay identical on all workers without
ever being broadcast. The price is communication: ``subnets x parameters`` floats per step instead
of ``parameters`` for an all-reduce of summed gradients (whose only difference would be the float
summation order).

Threads
-------
Float results of CPU kernels depend on the number of intra-op threads (the split of reductions,
e.g. batch-norm statistics), even between two serial runs: on this project's tiny config a serial
run with 1 thread and one with 2 threads differ by up to 0.34 in a running variance. Workers
therefore call ``torch.set_num_threads(threads)``; the default is the driver's own
``torch.get_num_threads()``, so a run equals the serial run this process would have made. On a
machine with fewer cores than ``workers x threads`` that oversubscribes the cores; pass
``threads=1`` for speed, and the result equals a serial run with one thread. Exactness also
assumes the workers run the same torch build on the same kind of CPU as the serial run.

Checkpoints and results
-----------------------
The driver reads a checkpoint to resume from with :meth:`SupernetTrainer.try_resume` and sends
the weights, optimizer state and history to the workers. After each epoch rank 0 serialises the
checkpoint (the serial trainer's format, so either trainer resumes the other's) and puts the
bytes on a :class:`ray.util.queue.Queue`; the driver takes them, writes the checkpoint file
atomically (so it lands on the driver's disk even when the workers run on other nodes of a
cluster), calls ``on_epoch``, and loads the last one into its own supernet and optimizer when
training ends. Ray Train's own
checkpointing and storage are not used (its storage path is a temporary directory, removed
afterwards).

Ray is started the way :mod:`hwnas.utils.executors` starts it: a new local Ray on loopback with
``num_cpus=workers`` and no dashboard, whose workers' output is not forwarded (and gloo is bound
to the loopback interface when the node's address is 127.0.0.1), or ``ray.init(address)`` to join a
cluster; it is shut down afterwards only if this module started it. ``fit`` runs in a background
thread (which also keeps Ray Train from installing its own SIGINT handler); the main thread
collects checkpoints. A failure on a worker becomes a one-line :class:`HwnasError`.

Workers must be able to import hwnas and load the dataset named by the config (a relative
``data.root`` is made absolute on the driver first).
"""
from __future__ import annotations

import io
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist

from hwnas.config import Config, load_config
from hwnas.errors import HwnasError
from hwnas.ir import count
from hwnas.spaces.registry import op_graph
from hwnas.train.components import Components
from hwnas.train.trainer import SupernetTrainer
from hwnas.utils.executors import join_or_start_ray, prepare_ray_environment
from hwnas.utils.io import atomic_path

RAY_TRAIN_MISSING = ('supernet training on Ray workers needs Ray Train, which is not installed: '
                     'pip install "hwnas[ray]"')

#: Ray Train polls its workers this often (seconds); its default of 2 s adds up to 2 s to every run.
HEALTH_CHECK_INTERVAL_S = "0.2"

#: Seconds the driver waits for a worker's checkpoint in one call to the collecting actor.
POLL_SECONDS = 0.5


def _import_ray_train(local: bool):
    """``(ray, ray.train, TorchTrainer)``, with the environment hwnas sets before importing Ray;
    a one-line :class:`HwnasError` when Ray or Ray Train (``ray[train]``) is not installed."""

    prepare_ray_environment(local, {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": HEALTH_CHECK_INTERVAL_S})
    try:
        import ray
        import ray.train
        from ray.train.torch import TorchTrainer
    except ImportError:
        raise HwnasError(RAY_TRAIN_MISSING) from None
    return ray, ray.train, TorchTrainer


# -- the worker side ---------------------------------------------------------------------------
class SubnetParallelTrainer(SupernetTrainer):
    """One Ray Train worker's trainer: the serial trainer with the step's subnets shared out.

    Runs inside a ``torch.distributed`` process group (set up by Ray Train); every rank must run
    :meth:`train` with the same state, data and config. Only rank 0 reports checkpoints, through
    ``report(epoch, record, checkpoint_bytes)``.
    """

    def __init__(self, supernet, data, config, seed: int, batch_size: int, rank: int, world_size: int,
                 report: Callable[[int, dict, bytes], None] | None = None, fixed_arch=None):
        super().__init__(supernet, data, config, seed, torch.device("cpu"), batch_size, fixed_arch=fixed_arch)
        self.rank, self.world_size, self.report = rank, world_size, report
        self._params = [p for p in supernet.parameters()]
        self._sizes = [p.numel() for p in self._params]
        self._offsets = [sum(self._sizes[:j]) for j in range(len(self._sizes))]
        self._total = sum(self._sizes)
        self._macs: dict[Any, float] = {}
        self.step_seconds = {"compute": 0.0, "all_reduce": 0.0}

    def owners(self, archs: list) -> list[int]:
        """The rank computing each subnet's gradient: longest processing time first on MACs
        (ties by position), the same on every rank because the archs are."""

        space = self.supernet.space
        costs = []
        for arch in archs:
            if arch not in self._macs:
                self._macs[arch] = float(count(op_graph(space.subnet_spec(arch)))["macs"])
            costs.append(self._macs[arch])
        load = [0.0] * self.world_size
        owner = [0] * len(archs)
        for k in sorted(range(len(archs)), key=lambda k: (-costs[k], k)):
            rank = min(range(self.world_size), key=lambda r: (load[r], r))
            owner[k] = rank
            load[rank] += costs[k]
        return owner

    def _accumulate_gradients(self, net, x: torch.Tensor, y: torch.Tensor, archs: list) -> tuple[float, float]:
        started = time.perf_counter()
        owner = self.owners(archs)
        n, params = len(archs), self._params
        rows = torch.zeros(n, self._total + len(params))  # gradients, then a touched-flag per tensor

        def keep_gradient(k: int, loss: torch.Tensor) -> None:
            if owner[k] != self.rank:
                return
            loss.backward()
            for j, p in enumerate(params):
                if p.grad is not None:
                    rows[k, self._offsets[j]:self._offsets[j] + self._sizes[j]] = p.grad.reshape(-1)
                    rows[k, self._total + j] = 1.0
                    p.grad = None

        loss0, hits = self._run_subnets(net, x, y, archs, keep_gradient,
                                        needs_grad=lambda k: owner[k] == self.rank)
        reduced = time.perf_counter()
        if self.world_size > 1:
            dist.all_reduce(rows, op=dist.ReduceOp.SUM)
        self.step_seconds["all_reduce"] += time.perf_counter() - reduced
        # The serial sum: autograd's AccumulateGrad takes the first gradient as it is and adds
        # each later one to it, in subnet order.
        for j, p in enumerate(params):
            grad = None
            for k in range(n):
                if rows[k, self._total + j] != 0:
                    g = rows[k, self._offsets[j]:self._offsets[j] + self._sizes[j]].view(p.shape)
                    grad = g.clone() if grad is None else grad + g
            p.grad = grad
        self.step_seconds["compute"] += reduced - started
        return loss0, hits

    def save_checkpoint(self, epoch: int) -> None:
        if self.rank != 0 or self.report is None:
            return
        buffer = io.BytesIO()
        torch.save(self.checkpoint_state(epoch), buffer)
        self.report(epoch, dict(self.history[-1]), buffer.getvalue())


def _train_worker(spec: dict) -> None:
    """Ray Train's ``train_loop_per_worker``: rebuild the job's components, load the driver's
    state and train (runs on every worker)."""
    import ray
    import ray.train


    torch.set_num_threads(int(spec["threads"]))
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    payload = ray.get(spec["payload"][0])
    config = load_config(payload["config"])
    parts = Components.build(config, torch.device("cpu"))
    fixed = parts.space.validate(payload["fixed_arch"]) if payload["fixed_arch"] is not None else None
    queue = spec["queue"]

    def report(epoch: int, record: dict, blob: bytes) -> None:
        queue.put((epoch, record, blob))  # returns once the queue actor holds it

    trainer = SubnetParallelTrainer(parts.supernet, parts.data, config.train, config.seed,
                                    config.data.batch_size, rank, world, report, fixed)
    parts.supernet.load_state_dict(payload["model"])
    if payload["optimizer"] is not None:
        trainer.optimizer.load_state_dict(payload["optimizer"])
    trainer.history = list(payload["history"])
    trainer.start_epoch = int(payload["start_epoch"])
    trainer.train()


# -- the driver side ---------------------------------------------------------------------------
def _first_line(text: str) -> str:
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "")


def _training_error(exc: BaseException) -> HwnasError:
    """A one-line error for a failed ``fit``: the first failing worker's exception, if any."""
    failures = getattr(exc, "worker_failures", None) or {}
    where, cause = "", exc
    if failures:
        rank = min(failures)
        where, cause = f" on worker {rank}", failures[rank]
        cause = getattr(cause, "cause", None) or cause  # a RayTaskError wraps the original
    line = _first_line(str(cause))
    if isinstance(cause, HwnasError):
        message = f"supernet training on Ray failed{where}: {line}"
    else:
        message = f"supernet training on Ray failed{where}: {type(cause).__name__}: {line}".rstrip(": ")
    error = HwnasError(message)
    error.remote_traceback = str(exc)
    return error


def _cpu(tree: Any) -> Any:
    if isinstance(tree, torch.Tensor):
        return tree.detach().cpu()
    if isinstance(tree, dict):
        return {k: _cpu(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_cpu(v) for v in tree)
    return tree


class RaySupernetTrainer(SupernetTrainer):
    """Drop-in for :class:`SupernetTrainer` that trains on ``workers`` Ray Train workers.

    ``supernet`` and ``data`` must be what :meth:`hwnas.job.runner.Components.build` makes from
    ``job_config`` (the workers rebuild them from the config and load the supernet's state), and
    ``checkpoint_path`` / ``on_epoch`` / ``fixed_arch`` mean what they do for the serial trainer.
    :meth:`try_resume` is the serial one; :meth:`train` leaves the trained weights in ``supernet``
    and the optimizer state in ``optimizer``, and returns the history, exactly as the serial
    :meth:`SupernetTrainer.train` would (see the module docstring for the conditions).
    """

    def __init__(self, job_config, supernet, data, *, workers: int, address: str | None = None,
                 threads: int | None = None, checkpoint_path: str | Path | None = None,
                 on_epoch: Callable[[int, int, dict[str, float]], None] | None = None, fixed_arch=None):
        if workers < 1:
            raise HwnasError(f"--workers must be at least 1, not {workers}")
        if threads is not None and threads < 1:
            raise HwnasError(f"threads must be at least 1, not {threads}")
        if job_config.train.step_per_subnet:
            raise HwnasError("train.step_per_subnet: training on --workers sums the sandwich's gradients into one "
                             "step; train without --workers or set train.step_per_subnet=false")
        device = next(supernet.parameters()).device
        super().__init__(supernet, data, job_config.train, job_config.seed, device, job_config.data.batch_size,
                         checkpoint_path, on_epoch, fixed_arch)
        self.job_config, self.workers, self.address = job_config, workers, address
        self.threads = threads or torch.get_num_threads()
        self.worker_seconds: float | None = None

    def _config_tree(self) -> dict[str, Any]:
        tree = self.job_config.to_dict()
        root = tree.get("data", {}).get("root")
        if root:
            tree["data"]["root"] = str(Path(root).expanduser().resolve())
        return tree

    def train(self) -> list[dict[str, float]]:
        if self.start_epoch >= self.config.epochs:
            return self.history  # resumed after the last epoch: nothing to train
        ray, train, TorchTrainer = _import_ray_train(local=not self.address)
        started = join_or_start_ray(ray, self.address, self.workers)
        storage = tempfile.mkdtemp(prefix="hwnas-ray-train-")
        try:
            return self._fit(ray, train, TorchTrainer, storage)
        finally:
            shutil.rmtree(storage, ignore_errors=True)
            if started and ray.is_initialized():
                ray.shutdown()

    def _fit(self, ray, train, TorchTrainer, storage: str) -> list[dict[str, float]]:
        from ray.util.queue import Empty, Queue

        # rank 0's checkpoints, to the driver (Ray's own queue actor: its process needs no hwnas)
        queue = Queue(actor_options={"num_cpus": 0})
        payload = ray.put({
            "config": self._config_tree(), "model": _cpu(self.supernet.state_dict()),
            "optimizer": _cpu(self.optimizer.state_dict()) if self.start_epoch > 0 else None,
            "history": list(self.history), "start_epoch": self.start_epoch,
            "fixed_arch": self.fixed_arch.to_dict() if self.fixed_arch is not None else None})
        env = {}
        if ray.util.get_node_ip_address() == "127.0.0.1" and sys.platform.startswith("linux"):
            env["GLOO_SOCKET_IFNAME"] = "lo"  # a loopback-only Ray: keep gloo on loopback too
        trainer = TorchTrainer(
            _train_worker,
            # the payload ref is nested in a list so it reaches the workers as a reference
            train_loop_config={"payload": [payload], "queue": queue, "threads": self.threads},
            scaling_config=train.ScalingConfig(num_workers=self.workers, use_gpu=False),
            run_config=train.RunConfig(name="supernet", storage_path=storage,
                                       failure_config=train.FailureConfig(max_failures=0),
                                       logging_config=train.LoggingConfig(log_level="WARNING"),
                                       worker_runtime_env={"env_vars": env}))
        outcome: dict[str, Any] = {}

        def fit() -> None:
            try:
                outcome["result"] = trainer.fit()
            except BaseException as exc:  # handed to the main thread
                outcome["error"] = exc

        began = time.perf_counter()
        thread = threading.Thread(target=fit, name="hwnas-ray-train", daemon=True)
        thread.start()
        last: bytes | None = None
        while True:
            alive = thread.is_alive()
            items = []
            try:
                if alive:
                    items.append(queue.get(timeout=POLL_SECONDS))
                items += queue.get_nowait_batch(queue.qsize())
            except Empty:
                pass
            for epoch, record, blob in items:
                last = blob
                if self.checkpoint_path is not None:
                    with atomic_path(self.checkpoint_path) as tmp:
                        tmp.write_bytes(blob)
                if self.on_epoch is not None:
                    self.on_epoch(epoch + 1, self.config.epochs, record)
            if not alive:
                break
        thread.join()
        self.worker_seconds = time.perf_counter() - began
        queue.shutdown()
        if "error" in outcome:
            raise _training_error(outcome["error"]) from None
        if last is None:
            raise HwnasError("supernet training on Ray ended without a result")
        state = torch.load(io.BytesIO(last), map_location=self.device, weights_only=True)
        self.supernet.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.history = list(state["history"])
        self.start_epoch = int(state["epoch"]) + 1
        return self.history


@dataclass
class RayTrainingResult:
    state: dict[str, torch.Tensor]
    history: list[dict[str, float]]
    resumed_epoch: int  # the first epoch this call trained (0: from scratch)


def train_supernet_on_ray(config, *, workers: int, address: str | None = None,
                          checkpoint_path: str | Path | None = None, threads: int | None = None,
                          on_epoch: Callable[[int, int, dict[str, float]], None] | None = None,
                          components=None) -> RayTrainingResult:
    """Train a job's supernet on Ray Train workers, resuming from ``checkpoint_path`` if it exists.

    ``config`` is a :class:`~hwnas.config.Config` or a config tree; ``components`` (a
    :class:`~hwnas.job.runner.Components` of that config, built on the CPU) is built when not given,
    and its supernet receives the trained weights. Returns the final state dict and history.
    """

    if not isinstance(config, Config):
        config = load_config(config)
    parts = components or Components.build(config, torch.device("cpu"))
    trainer = RaySupernetTrainer(config, parts.supernet, parts.data, workers=workers, address=address,
                                 threads=threads, checkpoint_path=checkpoint_path, on_epoch=on_epoch)
    trainer.try_resume()
    resumed = trainer.start_epoch
    history = trainer.train()
    return RayTrainingResult(parts.supernet.state_dict(), history, resumed)
