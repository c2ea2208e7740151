"""Supernet training on Ray Train workers (CPU, ``torch.distributed`` gloo): data parallelism.

``--workers N`` (or ``--ray-address ADDR``) trains the supernet on N Ray Train workers
(:class:`ray.train.torch.TorchTrainer`, ``ScalingConfig(num_workers=N, use_gpu=False)``), each a
:class:`~hwnas.train.data_parallel.DataParallelTrainer`: every worker takes its shard of every
batch, runs the whole sandwich on it, and the gradients are summed across workers once per
optimizer step (after every subnet with ``train.step_per_subnet``). What that equals: the serial
step on the full batch up to float rounding for a model without batch norm, the serial run within
noise with it (shard statistics); see that module. The global batch, the epochs and the number of
steps are the serial run's, so the learning-rate schedule is too.

Threads
-------
Each worker runs ``threads`` torch threads: the ``threads`` argument, else ``train.threads``, else
one (a worker reserves one CPU of Ray's, and a local Ray has ``workers`` CPUs). Float results of
CPU kernels depend on the thread count, so runs with the same workers and threads give the same
weights; other counts give results equal within float rounding (without batch norm) or noise.

Checkpoints and results
-----------------------
The driver reads a checkpoint to resume from with :meth:`SupernetTrainer.try_resume` and sends
the weights, optimizer state and history to the workers. After each epoch rank 0 serialises the
checkpoint (the serial trainer's format, so either trainer resumes the other's) and puts the
bytes on a :class:`ray.util.queue.Queue`; the driver takes them, writes the checkpoint file
atomically (so it lands on the driver's disk even when the workers run on other nodes of a
cluster), calls ``on_epoch``, and loads the last one into its own supernet and optimizer when
training ends. Ray Train's own checkpointing and storage are not used (its storage path is a
temporary directory, removed afterwards).

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
import os
import shutil
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from hwnas.config import Config, load_config
from hwnas.errors import HwnasError
from hwnas.train.components import Components
from hwnas.train.data_parallel import DataParallelTrainer
from hwnas.train.trainer import SupernetTrainer
from hwnas.utils.executors import join_or_start_ray, prepare_ray_environment
from hwnas.utils.io import atomic_path

RAY_TRAIN_MISSING = ('supernet training on Ray workers needs Ray Train, which is not installed: '
                     'pip install "hwnas[ray]"')

#: Ray Train polls its workers this often (seconds); its default of 2 s adds up to 2 s to every run.
HEALTH_CHECK_INTERVAL_S = "0.2"

#: Seconds the driver waits for a worker's checkpoint in one call to the collecting actor.
POLL_SECONDS = 0.5

#: A local Ray started for training runs its workers at normal priority: Ray's default niceness of
#: 15 lets every other process, Ray's own control processes included, preempt the workers, and one
#: preempted worker stalls all of them at the next all-reduce. Not set for evaluation workers (a
#: latency measurement in the driver should win over them).
LOCAL_TRAINING_ENVIRONMENT = {"RAY_worker_niceness": "0"}


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


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in ``os.environ`` (where the user set nothing) for the duration of the block."""
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


# -- the worker side ---------------------------------------------------------------------------
def _train_worker(spec: dict) -> None:
    """Ray Train's ``train_loop_per_worker``: rebuild the job's components, load the driver's
    state and train (runs on every worker)."""
    import ray
    import ray.train

    threads = int(spec["threads"])
    torch.set_num_threads(threads)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    payload = ray.get(spec["payload"][0])
    config = load_config(payload["config"])
    train_config = config.train.model_copy(update={"threads": threads})  # the trainer pins these
    parts = Components.build(config, torch.device("cpu"))
    fixed = parts.space.validate(payload["fixed_arch"]) if payload["fixed_arch"] is not None else None
    queue = spec["queue"]

    def report(epoch: int, record: dict, blob: bytes) -> None:
        queue.put((epoch, record, blob))  # returns once the queue actor holds it

    trainer = DataParallelTrainer(parts.supernet, parts.data, train_config, config.seed,
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
    and the optimizer state in ``optimizer``, and returns the history, as the serial
    :meth:`SupernetTrainer.train` does (trained data-parallel: see the module docstring for how
    the result compares). ``ray_start_seconds`` (starting or joining Ray) and ``worker_seconds``
    (from starting the workers to their last checkpoint) say where the time went.
    """

    def __init__(self, job_config, supernet, data, *, workers: int, address: str | None = None,
                 threads: int | None = None, checkpoint_path: str | Path | None = None,
                 on_epoch: Callable[[int, int, dict[str, float]], None] | None = None, fixed_arch=None):
        if workers < 1:
            raise HwnasError(f"--workers must be at least 1, not {workers}")
        if threads is not None and threads < 1:
            raise HwnasError(f"threads must be at least 1, not {threads}")
        device = next(supernet.parameters()).device
        super().__init__(supernet, data, job_config.train, job_config.seed, device, job_config.data.batch_size,
                         checkpoint_path, on_epoch, fixed_arch)
        self.job_config, self.workers, self.address = job_config, workers, address
        self.threads = threads or job_config.train.threads or 1
        self.ray_start_seconds: float | None = None
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
        began = time.perf_counter()
        ray, train, TorchTrainer = _import_ray_train(local=not self.address)
        with _environment(LOCAL_TRAINING_ENVIRONMENT):  # read by a local raylet as it starts
            started = join_or_start_ray(ray, self.address, self.workers)
        self.ray_start_seconds = time.perf_counter() - began
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
