"""Run independent evaluations in process or on Ray workers, yielding results as they finish.

Why one module this long: a fifth of it is this docstring, the contract both executors keep, and
the Ray executor's retry, drain and interrupt handling is one state machine over one worker pool;
split, that contract would be scattered over files that must change together.

Evaluating a candidate for real (recalibrate batch norm, test accuracy, measure latency) takes
0.1-2 s per subnet and each evaluation is independent, so ``--workers N`` spreads them over N
processes of a local Ray, and ``--ray-address ADDR`` over a Ray cluster. The caller commits each
result to the job store as it arrives, so both executors offer :meth:`imap_unordered`, which yields
``(index, result)`` in completion order, besides :meth:`map`, which returns results in input order.

Why the interface looks like this:

* **Setup once per worker, not per item.** An executor is built from ``setup``, a picklable
  zero-argument callable (a top-level function or a :func:`functools.partial` of one) that returns
  ``evaluate(item) -> result``. It is where a worker loads its data and supernet weights; each Ray
  actor calls it once, and :class:`SerialExecutor` calls it once, lazily, in process. Items and
  results cross process boundaries, so they must be picklable and should be small (an
  architecture, a dict of metrics); large state belongs in ``setup``.
* **The same answer as a serial run.** Parallel results equal serial ones only if ``evaluate`` is a
  deterministic function of its item: it must seed whatever randomness it uses from the item (or
  from state fixed in ``setup``), never rely on global RNG state or on which items a worker ran
  before. Which worker gets which item, and in what order results arrive, is not deterministic; a
  caller that needs an order sorts by index (or uses :meth:`map`).
* **One thread per worker.** Each actor calls ``torch.set_num_threads(1)`` before ``setup``: N
  workers on N cores, instead of N x cores threads fighting over the cores. Float results of torch
  kernels can in principle depend on the thread count; the serial executor runs with the process's
  own thread count, so an ``evaluate`` that must be bit-identical across executors should pin its
  threads itself (hwnas's latency measurement already pins to the device's ``threads``). Wall-clock
  figures measured by concurrent workers (latency) share cores, caches and memory bandwidth with
  each other, so they are noisier than, and not equal to, a serial run's.
* **Dynamic load balancing.** Each actor holds exactly one item at a time; when one finishes
  (``ray.wait``) it gets the next, so a slow subnet does not hold up a queue behind it. Input items
  are pulled from the iterable only as workers free up.
* **Errors a user can read.** An exception inside ``evaluate`` reaches the caller as
  :class:`~hwnas.errors.HwnasError` (or the same :class:`HwnasError` subclass, when ``evaluate``
  raised one) whose one-line message names the item index and the original error's first line; the
  remote traceback is kept on the exception's ``remote_traceback`` attribute rather than printed.
  The first failure ends the iteration: items still running on other workers are allowed to finish
  (at most :data:`DRAIN_SECONDS`) and their results dropped, so the workers and what ``setup``
  loaded are kept; after an interrupt (Ctrl-C) they are killed instead and replaced on the next
  call.
* **A dead worker costs a retry, not the job.** A worker process that dies while evaluating an item
  (killed, ``os._exit``, a segfault, out of memory: Ray's ``ActorDiedError`` or another
  ``RayActorError`` that is not an init failure, ``WorkerCrashedError``, ``OutOfMemoryError``) is
  discarded, a replacement actor is started (it runs ``setup`` once, like every actor) and the same
  item is submitted to it; the other workers carry on meanwhile, and the item is still yielded
  exactly once. Each retry is appended to :attr:`RayExecutor.retries` as ``{"item": index,
  "error": reason}`` and passed to the executor's ``on_retry(index, reason)`` callback, if any. An
  item is retried at most :data:`MAX_ITEM_RETRIES` times: a subnet that kills its worker
  deterministically (one too large for the worker's memory, say) must not loop forever, so the next
  death is an :class:`HwnasError` naming the item and how many workers it killed, not a hang. A
  worker that cannot *start* (``setup`` failing, hwnas not importable on a node) and an exception
  raised inside ``evaluate`` are not worker deaths: they fail at once, as described above.
* **Ray stays optional.** Importing this module never imports ``ray``; ``workers=1`` without an
  address gives a :class:`SerialExecutor`, which never does either. Asking for more without Ray
  installed is a one-line :class:`HwnasError` saying to ``pip install "hwnas[ray]"``.
* **Only stop what you started.** :class:`RayExecutor` starts a local Ray
  (``num_cpus=workers``, no dashboard, workers' output not forwarded to the driver, warnings only)
  when none is initialised, or connects to ``address``; :meth:`RayExecutor.close` (and leaving its
  ``with`` block) kills its actors and shuts Ray down only if it started it.

Environment set before ``ray`` is imported (with :func:`os.environ.setdefault`, so a user's own
setting wins):

* ``RAY_ENABLE_UV_RUN_RUNTIME_ENV=0``: otherwise, when hwnas is launched by ``uv run``, Ray makes
  every worker start through ``uv run`` too, which re-resolves the environment per worker (slow,
  and it needs the network).
* ``RAY_USAGE_STATS_ENABLED=0``: no usage-statistics reporting from the driver (no network needed,
  nothing printed about it).
* ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, only for a local Ray and only if ``ray`` is not imported
  yet (Ray reads it at import): despite its name, on Linux it makes a new local Ray take
  127.0.0.1 as its node address, so that everything listens on loopback only instead of on every
  interface (Ray's default, which also picks the network interface's address as the node's).

Ray's warning that a new local cluster uses token authentication (its default in Ray 2.60; the
token is kept in ``~/.ray/auth_token``) is filtered out while a local Ray starts; authentication
itself is left as Ray sets it. (Setting ``RAY_AUTH_MODE`` instead does not work once ``ray`` is
imported: Ray caches its config at import, and a mismatch makes the local GCS refuse the driver.)

Limits:

* Retries are counted per item and per iteration (one call of :meth:`RayExecutor.imap_unordered`,
  e.g. one search round). A worker that died while idle is found out when it is next given an
  item, which then counts that death and is retried like any other. A replacement actor asks for
  a CPU like the one it replaces; on a cluster that has lost the node, it waits for one (see
  below).
* Actors ask for one CPU each. A Ray that is already initialised (or a cluster) with fewer free
  CPUs than ``workers`` leaves the extra actors waiting for resources, and the items given to them
  wait too: there is no per-item timeout. Two executors on one local Ray share its CPUs.
* Workers on a cluster must be able to import ``hwnas`` (and whatever ``setup`` names); nothing is
  shipped to them. A worker that cannot import hwnas gives "a worker could not start".
* When a worker process dies, Ray itself prints one ``(raylet) A worker died ...`` paragraph on
  the driver's stdout (its error listener runs whatever ``log_to_driver`` says).
"""
from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import Any, Callable, Iterable, Iterator

import torch

from hwnas.errors import HwnasError

Setup = Callable[[], Callable[[Any], Any]]

#: Environment that keeps Ray quiet and quick here; set (without overriding) before importing ray.
RAY_ENVIRONMENT = {
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
}

#: Environment for a local Ray only: Ray reads it when imported, so it is set only if ray is not
#: imported yet. It makes a new local Ray use 127.0.0.1 as its node address, so that the GCS, the
#: raylet and the workers listen on loopback only; by default Ray takes the address of the
#: machine's network interface and listens on all interfaces.
LOCAL_RAY_ENVIRONMENT = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}

#: Ray's logger that warns, on every new local cluster, that token authentication is on (which is
#: Ray's default and what we want); the warning is filtered out while this module starts Ray.
_TOKEN_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"

#: Object store of a local Ray that this module starts: results are small dicts of metrics, so a
#: small store is plenty (larger objects spill to disk) and keeps /dev/shm free for other work.
LOCAL_OBJECT_STORE_BYTES = 256 * 1024 ** 2

#: How many times one item is resubmitted after the worker evaluating it died. A subnet that kills
#: its worker every time (out of memory, a crash in a kernel) must not loop forever: when it kills a
#: worker for the ``MAX_ITEM_RETRIES + 1``-th time, the iteration fails with an HwnasError naming it.
MAX_ITEM_RETRIES = 2

#: Seconds that an iteration ended early (the caller's ``break``, or a failed item) waits for the
#: items still running, so their workers can be kept, before killing those workers instead.
DRAIN_SECONDS = 30.0


def _first_line(text: str) -> str:
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()
    return ""


def _last_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _describe(exc: BaseException) -> str:
    """``TypeName: first line of the message`` (just the type when the message is empty)."""
    line = _first_line(str(exc))
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def _error(cls: type | None, message: str, remote_traceback: str | None = None) -> HwnasError:
    """An :class:`HwnasError` of ``cls`` when that is an HwnasError subclass taking a message."""
    error: HwnasError | None = None
    if isinstance(cls, type) and issubclass(cls, HwnasError):
        try:
            error = cls(message)
        except Exception:  # a subclass with another signature: fall back to the base class
            error = None
    if error is None:
        error = HwnasError(message)
    error.remote_traceback = remote_traceback
    return error


class _Executor:
    """What both executors share: :meth:`map` on top of :meth:`imap_unordered`, and ``with``."""

    workers: int

    def imap_unordered(self, items: Iterable[Any]) -> Iterator[tuple[int, Any]]:  # pragma: no cover
        raise NotImplementedError

    def map(self, items: Iterable[Any]) -> list[Any]:
        """Results in input order (every item evaluated before this returns)."""
        results: dict[int, Any] = {}
        for index, result in self.imap_unordered(items):
            results[index] = result
        return [results[i] for i in range(len(results))]

    def close(self) -> None:  # pragma: no cover - overridden where there is something to release
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class SerialExecutor(_Executor):
    """Evaluate in this process, one item after another, in input order.

    ``setup`` runs once, on the first item; an exception in ``evaluate`` becomes an
    :class:`HwnasError` naming the item, chained to the original (whose traceback is local)."""

    def __init__(self, setup: Setup):
        self.setup = setup
        self.workers = 1
        self._evaluate: Callable[[Any], Any] | None = None

    def _ensure_setup(self) -> Callable[[Any], Any]:
        if self._evaluate is None:
            try:
                self._evaluate = self.setup()
            except Exception as exc:
                raise _error(type(exc), f"worker setup failed: {_describe(exc)}",
                             traceback.format_exc()) from exc
        return self._evaluate

    def imap_unordered(self, items: Iterable[Any]) -> Iterator[tuple[int, Any]]:
        """``(index, result)`` for each item, in input order (serial completion order)."""
        evaluate = self._ensure_setup()
        for index, item in enumerate(items):
            try:
                result = evaluate(item)
            except Exception as exc:
                raise _error(type(exc), f"evaluation of item {index} failed: {_describe(exc)}",
                             traceback.format_exc()) from exc
            yield index, result

    def close(self) -> None:
        self._evaluate = None


class _WorkerDied(Exception):
    """Internal: the worker evaluating an item died (it is already discarded); ``reason`` is a
    one-line description of Ray's error."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _portable(exc: BaseException) -> type | None:
    """The exception's class when it is an HwnasError subclass (importable in the driver, and
    worth keeping for its exit code), else None: the message carries the type's name anyway."""
    return type(exc) if isinstance(exc, HwnasError) else None


class _Worker:
    """The body of one Ray actor: one thread for torch, ``setup`` once, then one item per call.

    Every failure is returned as data rather than raised, so the driver sees one line, not a Ray
    traceback wall: ``("ok", result)``, ``("error", exception class, message, traceback)`` or
    ``("setup", exception class, message, traceback)``."""

    def __init__(self, setup: Setup):
        try:

            torch.set_num_threads(1)
        except ImportError:  # pragma: no cover - torch is a dependency of hwnas
            pass
        self._evaluate = None
        self._setup_failure = None
        try:
            self._evaluate = setup()
        except Exception as exc:
            self._setup_failure = ("setup", _portable(exc), _describe(exc), traceback.format_exc())

    def pid(self) -> int:
        return os.getpid()

    def run(self, item: Any):
        if self._setup_failure is not None:
            return self._setup_failure
        try:
            return ("ok", self._evaluate(item))
        except Exception as exc:
            return ("error", _portable(exc), _describe(exc), traceback.format_exc())


def prepare_ray_environment(local: bool, extra: dict[str, str] | None = None) -> None:
    """Set :data:`RAY_ENVIRONMENT` (and, for a local Ray not imported yet,
    :data:`LOCAL_RAY_ENVIRONMENT`) unless the user set them; before ``import ray``."""
    environment = {**RAY_ENVIRONMENT, **(extra or {})}
    if local and "ray" not in sys.modules:
        environment.update(LOCAL_RAY_ENVIRONMENT)
    for key, value in environment.items():
        os.environ.setdefault(key, value)


def _import_ray(local: bool):
    """``ray``, imported after setting :data:`RAY_ENVIRONMENT` (and, for a local Ray, when ray is
    not imported yet, :data:`LOCAL_RAY_ENVIRONMENT`); an HwnasError when it is not installed."""
    prepare_ray_environment(local)
    try:
        import ray
    except ImportError:
        raise HwnasError('parallel evaluation needs Ray, which is not installed: '
                         'pip install "hwnas[ray]"') from None
    return ray


class _DropTokenAuthNotice(logging.Filter):
    """Drops Ray's warning that a new local cluster uses token authentication (its default)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Token authentication is enabled" not in record.getMessage()


def start_local_ray(num_cpus: int, object_store_memory: int | None = LOCAL_OBJECT_STORE_BYTES):
    """Start a new local Ray on loopback the way :class:`RayExecutor` does; returns ``ray``.

    Always a new local instance (``address="local"``), never one named by ``RAY_ADDRESS``."""
    ray = _import_ray(local=True)
    notices = logging.getLogger(_TOKEN_AUTH_LOGGER)
    quiet = _DropTokenAuthNotice()
    notices.addFilter(quiet)
    try:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING, ignore_reinit_error=True,
                 object_store_memory=object_store_memory)
    finally:
        notices.removeFilter(quiet)
    return ray


def join_or_start_ray(ray, address: str | None, workers: int,
                      object_store_memory: int | None = LOCAL_OBJECT_STORE_BYTES) -> bool:
    """Join the Ray cluster at ``address`` or start a local one of ``workers`` CPUs, unless Ray is
    already initialised in this process; True when this call started or joined it (so the caller
    shuts it down). A cluster that cannot be reached is one :class:`HwnasError` line."""
    if ray.is_initialized():
        return False
    if address:
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING,
                     ignore_reinit_error=True)
        except Exception as exc:
            raise HwnasError(f"cannot connect to Ray at {address}: {_describe(exc)}") from None
    else:
        start_local_ray(workers, object_store_memory)
    return True


class RayExecutor(_Executor):
    """Evaluate on ``workers`` Ray actors, each running ``setup`` once and one item at a time.

    Ray is imported here (an :class:`HwnasError` if it is missing) and started or joined on first
    use, or on entering the ``with`` block: entering early lets the workers load their data while
    the caller does something else, since actors are created without waiting for them."""

    #: Every retry of an item whose worker died, in order, over this executor's life: ``{"item":
    #: index in its iteration, "error": one-line reason}``.
    retries: list[dict]

    def __init__(self, setup: Setup, workers: int, address: str | None = None,
                 object_store_memory: int | None = LOCAL_OBJECT_STORE_BYTES,
                 on_retry: Callable[[int, str], None] | None = None):
        if workers < 1:
            raise HwnasError(f"workers must be at least 1, not {workers}")
        self.setup = setup
        self.workers = workers
        self.address = address
        self.object_store_memory = object_store_memory
        #: Called as ``on_retry(index, reason)`` (in the iterating thread) each time an item is
        #: resubmitted after its worker died; an exception it raises ends the iteration.
        self.on_retry = on_retry
        self.retries = []
        self._ray = _import_ray(local=not address)
        try:  # fail here, in one line, rather than in every actor's creation
            self._ray.cloudpickle.dumps(setup)
        except Exception as exc:
            raise HwnasError("the executor's setup must pickle (a top-level function or a "
                             f"functools.partial of one): {_describe(exc)}") from None
        self._started_ray = False
        self._actor_class = None
        self._actors: list[Any] = []

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> "RayExecutor":
        """Initialise Ray if needed and create the missing actors (without waiting for them)."""
        ray = self._ray
        if join_or_start_ray(ray, self.address, self.workers, self.object_store_memory):
            self._started_ray = True
        if self._actor_class is None:
            self._actor_class = ray.remote(_Worker).options(num_cpus=1, max_restarts=0,
                                                            max_task_retries=0)
        while len(self._actors) < self.workers:
            self._actors.append(self._actor_class.remote(self.setup))
        return self

    def __enter__(self):
        return self.start()

    def close(self) -> None:
        """Kill this executor's actors; shut Ray down if this executor started it."""
        ray = self._ray
        if ray.is_initialized():
            for actor in self._actors:
                self._kill(actor)
        self._actors = []
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
        self._started_ray = False

    def _kill(self, actor) -> None:
        try:
            self._ray.kill(actor, no_restart=True)
        except Exception:  # already dead, or Ray going down
            pass

    def _discard(self, actor) -> None:
        if actor in self._actors:
            self._actors.remove(actor)
        self._kill(actor)

    def worker_pids(self) -> list[int]:
        """Process ids of the current actors (waits for them to be created)."""
        self.start()
        return self._ray.get([actor.pid.remote() for actor in self._actors])

    # -- evaluation ------------------------------------------------------------------------------

    def imap_unordered(self, items: Iterable[Any]) -> Iterator[tuple[int, Any]]:
        """``(index, result)`` as each item finishes, in completion order.

        An item whose worker dies is resubmitted to a replacement worker (at most
        :data:`MAX_ITEM_RETRIES` times), so it is still yielded exactly once."""
        ray = self._ray
        self.start()
        source = enumerate(items)
        idle = list(self._actors)
        pending: dict[Any, tuple[int, Any, Any]] = {}  # object ref -> (item index, item, actor)
        deaths: dict[int, int] = {}  # item index -> workers it has killed in this iteration
        exhausted = False
        try:
            while True:
                while idle and not exhausted:
                    try:
                        index, item = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    actor = idle.pop()
                    pending[actor.run.remote(item)] = (index, item, actor)
                if not pending:
                    return
                [ref], _ = ray.wait(list(pending), num_returns=1)
                index, item, actor = pending.pop(ref)
                try:
                    outcome = self._outcome(ref, index, actor)
                except _WorkerDied as died:
                    deaths[index] = deaths.get(index, 0) + 1
                    if deaths[index] > MAX_ITEM_RETRIES:
                        raise _error(None, f"item {index} killed its worker {deaths[index]} times "
                                           f"({died.reason}); it is not retried again") from None
                    replacement = self._replace()
                    pending[replacement.run.remote(item)] = (index, item, replacement)
                    self._record_retry(index, died.reason)
                    continue
                idle.append(actor)
                yield index, outcome
        except (GeneratorExit, HwnasError):
            # The caller stopped early, or an item failed: let the items still running finish
            # (bounded, results dropped) so their workers, and what setup loaded, are kept.
            self._drain(pending)
            raise
        finally:
            # An interrupt (or anything unexpected): abandon what is still running; those workers
            # are replaced on the next call.
            for _, _, actor in pending.values():
                self._discard(actor)

    def _replace(self):
        """A new actor, in place of one discarded (it runs ``setup`` before its first item)."""
        if self._actor_class is None:  # pragma: no cover - start() made it
            self.start()
        actor = self._actor_class.remote(self.setup)
        self._actors.append(actor)
        return actor

    def _record_retry(self, index: int, reason: str) -> None:
        self.retries.append({"item": index, "error": reason})
        if self.on_retry is not None:
            self.on_retry(index, reason)

    def _drain(self, pending: dict) -> None:
        ray = self._ray
        if pending:
            done, stuck = ray.wait(list(pending), num_returns=len(pending), timeout=DRAIN_SECONDS)
            for ref in done:
                try:
                    ray.get(ref)
                except ray.exceptions.RayError:
                    self._discard(pending[ref][-1])
            for ref in stuck:
                self._discard(pending[ref][-1])
        pending.clear()

    def _outcome(self, ref, index: int, actor) -> Any:
        """The item's result; an HwnasError for a failure, :class:`_WorkerDied` (with ``actor``
        discarded) when the worker process died under it."""
        ray = self._ray
        # Ray 2.60 raises ActorDiedError (a RayActorError) for an actor whose process was killed
        # or exited mid-task; WorkerCrashedError and OutOfMemoryError are the task-side forms.
        crashes = tuple(getattr(ray.exceptions, name) for name in ("WorkerCrashedError", "OutOfMemoryError")
                        if hasattr(ray.exceptions, name))
        try:
            outcome = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # e.g. a result that does not pickle
            # First: raised inside the task, so never a worker death, even when Ray's class for it
            # also derives from the cause's (a RayActorError that evaluate itself got, say).
            cause = getattr(exc, "cause", None) or exc
            raise _error(None, f"evaluation of item {index} failed: {_describe(cause)}",
                         str(exc)) from None
        except ray.exceptions.RayActorError as exc:
            self._discard(actor)
            if exc.actor_init_failed:  # e.g. a node where hwnas, or the setup's module, does not import
                raise _error(None, f"a worker could not start (for item {index}): "
                                   f"{_last_line(str(exc))}") from None
            raise _WorkerDied(_describe(exc)) from None
        except crashes as exc:
            self._discard(actor)
            raise _WorkerDied(_describe(exc)) from None
        except ray.exceptions.RayError as exc:
            self._discard(actor)
            raise _error(None, f"evaluation of item {index} failed in Ray: {_describe(exc)}") from None
        if outcome[0] == "ok":
            return outcome[1]
        kind, cls, message, remote_traceback = outcome
        if kind == "setup":
            self._discard(actor)
            raise _error(cls, f"worker setup failed: {message}", remote_traceback)
        raise _error(cls, f"evaluation of item {index} failed: {message}", remote_traceback)


def make_executor(workers: int, address: str | None, setup: Setup,
                  on_retry: Callable[[int, str], None] | None = None) -> SerialExecutor | RayExecutor:
    """A :class:`SerialExecutor` for one worker and no address, else a :class:`RayExecutor`.

    ``setup`` is a picklable zero-argument callable, run once per worker, returning
    ``evaluate(item) -> result``. ``on_retry(index, reason)`` is called each time a Ray worker
    died under an item and the item is resubmitted (see :attr:`RayExecutor.retries`); a serial
    executor ignores it, having no worker process to lose. Raises :class:`HwnasError` when Ray is
    needed but missing."""
    if workers < 1:
        raise HwnasError(f"--workers must be at least 1, not {workers}")
    if workers == 1 and not address:
        return SerialExecutor(setup)
    return RayExecutor(setup, workers, address, on_retry=on_retry)
