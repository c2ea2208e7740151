"""Serial and Ray executors: same results, setup once per worker, errors as one-line HwnasErrors.

The Ray tests share one local Ray (2 CPUs) and one 2-worker executor, both started once for the
module: starting Ray takes a few seconds and each new worker imports hwnas (and torch) again.
"""
from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from hwnas.errors import DataError, HwnasError
from hwnas.utils import executors
from hwnas.utils.executors import SerialExecutor, make_executor

ROOT = Path(__file__).resolve().parents[1]


# -- what the workers run (top level, so that it pickles) -----------------------------------------

def _setup(log_dir: str):
    """Per-worker state made once: a lookup table and a seeded torch model; logs each call."""
    import torch

    Path(log_dir, f"setup-{os.getpid()}-{uuid.uuid4().hex}").write_text("")
    table = [(7 * i * i + 3) % 101 for i in range(100)]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    model.eval()

    def evaluate(item):
        kind, value = item
        if kind == "square":
            number, pause = value
            time.sleep(pause)
            return {"value": number * number + table[number % 100], "pid": os.getpid()}
        if kind == "torch":
            generator = torch.Generator().manual_seed(value)
            x = torch.randn(8, 32, generator=generator)
            with torch.no_grad():
                return {"value": model(x), "pid": os.getpid()}
        if kind == "fail":
            raise ValueError(f"bad item {value}\nsecond line that must not show")
        if kind == "data":
            raise DataError(f"dataset {value} missing")
        if kind == "die":
            os._exit(3)
        if kind == "die_once":  # kills its worker the first time only: ``value`` is a marker file
            marker = Path(value)
            if not marker.exists():
                marker.write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)
            return {"value": "survived", "pid": os.getpid()}
        raise AssertionError(kind)

    return evaluate


def _setups_by_pid(log_dir: Path) -> dict[int, int]:
    counts: dict[int, int] = {}
    for path in log_dir.glob("setup-*"):
        pid = int(path.name.split("-")[1])
        counts[pid] = counts.get(pid, 0) + 1
    return counts


def _squares(n: int) -> list:
    # Uneven pauses so that completion order differs from input order.
    return [("square", (i, 0.002 * ((i * 7) % 5))) for i in range(n)]


# -- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_session():
    """A local Ray with 2 CPUs, started once for this module (and shut down after it)."""
    for key, value in {**executors.RAY_ENVIRONMENT, **executors.LOCAL_RAY_ENVIRONMENT}.items():
        os.environ.setdefault(key, value)
    ray = pytest.importorskip("ray", reason='Ray is not installed (pip install "hwnas[ray]"): '
                                            "Ray executor tests skipped")
    # Ship this module's functions by value: the workers need not import ``tests`` (Ray adds only
    # the driver's working directory to their sys.path, and pytest may run from anywhere).
    module = sys.modules[__name__]
    ray.cloudpickle.register_pickle_by_value(module)
    started = not ray.is_initialized()
    if started:
        executors.start_local_ray(2)
    yield ray
    if started:
        ray.shutdown()
    ray.cloudpickle.unregister_pickle_by_value(module)


@pytest.fixture(scope="module")
def ray_logs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ray-setups")


@pytest.fixture(scope="module")
def ray_executor(ray_session, ray_logs):
    executor = make_executor(2, None, functools.partial(_setup, str(ray_logs)))
    assert isinstance(executor, executors.RayExecutor)
    with executor:
        yield executor
    assert ray_session.is_initialized(), "the executor shut down a Ray it did not start"


@pytest.fixture
def serial(tmp_path):
    with make_executor(1, None, functools.partial(_setup, str(tmp_path))) as executor:
        yield executor


# -- serial only ----------------------------------------------------------------------------------

def test_serial_runs_setup_once_and_keeps_input_order(tmp_path):
    executor = SerialExecutor(functools.partial(_setup, str(tmp_path)))
    assert _setups_by_pid(tmp_path) == {}, "setup must wait for the first item"
    assert list(executor.imap_unordered(_squares(3)))[0][0] == 0
    assert [i for i, _ in executor.imap_unordered(_squares(5))] == list(range(5))
    assert _setups_by_pid(tmp_path) == {os.getpid(): 1}


@pytest.mark.parametrize("workers, address", [(0, None), (-1, "auto")])
def test_make_executor_refuses_fewer_than_one_worker(workers, address):
    with pytest.raises(HwnasError, match="at least 1"):
        make_executor(workers, address, functools.partial(_setup, "."))


def test_one_worker_does_not_import_ray():
    script = (
        "import sys\n"
        "from hwnas.utils.executors import make_executor, SerialExecutor\n"
        "assert 'ray' not in sys.modules, 'importing the module imported ray'\n"
        "def setup():\n"
        "    return lambda x: x * 2\n"
        "with make_executor(1, None, setup) as ex:\n"
        "    assert isinstance(ex, SerialExecutor)\n"
        "    assert ex.map([1, 2, 3]) == [2, 4, 6]\n"
        "assert 'ray' not in sys.modules, 'the serial executor imported ray'\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_missing_ray_is_a_one_line_hwnas_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    for workers, address in [(2, None), (1, "ray://example:10001")]:
        with pytest.raises(HwnasError) as info:
            make_executor(workers, address, functools.partial(_setup, "."))
        message = str(info.value)
        assert 'pip install "hwnas[ray]"' in message and "\n" not in message


def test_serial_exception_names_the_item(serial):
    items = [("square", (1, 0.0)), ("square", (2, 0.0)), ("fail", 2), ("square", (3, 0.0))]
    with pytest.raises(HwnasError) as info:
        serial.map(items)
    message = str(info.value)
    assert "item 2" in message and "ValueError: bad item 2" in message
    assert "second line" not in message
    assert isinstance(info.value.__cause__, ValueError)
    with pytest.raises(DataError, match="item 1 failed: DataError: dataset cifar missing"):
        serial.map([("square", (1, 0.0)), ("data", "cifar")])


def _setup_that_fails():
    raise ModuleNotFoundError("No module named 'no_such_module_for_hwnas_tests'")


def test_worker_reports_a_failing_setup_as_a_setup_failure():
    import torch

    threads = torch.get_num_threads()
    try:
        worker = executors._Worker(_setup_that_fails)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    kind, cls, message, remote_traceback = worker.run(("square", (1, 0.0)))
    assert (kind, cls) == ("setup", None)
    assert message == "ModuleNotFoundError: No module named 'no_such_module_for_hwnas_tests'"


# -- Ray ------------------------------------------------------------------------------------------

def test_serial_and_ray_agree_with_setup_once_per_worker(ray_executor, ray_logs, serial, tmp_path):
    items = _squares(40)
    expected = [r["value"] for r in serial.map(items)]
    got = ray_executor.map(items)
    assert [r["value"] for r in got] == expected
    pids = {r["pid"] for r in got}
    assert len(pids) == 2 and os.getpid() not in pids, "both workers, not the driver, evaluate"
    setups = _setups_by_pid(ray_logs)
    assert all(setups.get(pid) == 1 for pid in pids), setups
    # A second batch reuses the same workers: no new setup.
    assert [r["value"] for r in ray_executor.map(items)] == expected
    assert _setups_by_pid(ray_logs) == setups


def test_imap_unordered_yields_every_index_once(ray_executor):
    n = 30
    seen = [index for index, _ in ray_executor.imap_unordered(iter(_squares(n)))]
    assert sorted(seen) == list(range(n))
    # Stopping early keeps the workers usable.
    for index, _ in ray_executor.imap_unordered(_squares(n)):
        break
    assert len(ray_executor.map(_squares(6))) == 6
    assert ray_executor.map([]) == []


def test_a_setup_the_workers_cannot_import_is_one_line_naming_its_module(ray_session, tmp_path, monkeypatch):
    """The setup's module exists only on the driver's path: Ray cannot rebuild it in a worker, and
    the error says so in one line instead of a dead actor's wall of text."""
    (tmp_path / "driver_only_setup_module.py").write_text("def setup():\n    return lambda item: item\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import driver_only_setup_module

    executor = make_executor(2, None, driver_only_setup_module.setup)
    # The module's own executor holds both of this Ray's CPUs: these actors ask for none, so they
    # are placed at once instead of waiting for a CPU that never frees.
    executor._actor_class = ray_session.remote(executors._Worker).options(num_cpus=0, max_restarts=0,
                                                                          max_task_retries=0)
    try:
        with pytest.raises(HwnasError) as info:
            executor.map([1, 2])
    finally:
        executor.close()
        sys.modules.pop("driver_only_setup_module", None)
    message = str(info.value)
    assert "a worker could not start" in message and "driver_only_setup_module" in message, message
    assert "\n" not in message


def test_unpicklable_setup_fails_fast(ray_session):
    import threading

    lock = threading.Lock()
    with pytest.raises(HwnasError, match="setup must pickle"):
        make_executor(2, None, functools.partial(_setup, lock))


def test_torch_output_is_bit_identical_serial_and_ray(ray_executor, serial):
    import torch

    items = [("torch", seed) for seed in range(6)]
    expected = [r["value"] for r in serial.map(items)]
    got = [r["value"] for r in ray_executor.map(items)]
    assert all(torch.equal(a, b) for a, b in zip(expected, got))


@pytest.mark.timeout(120)
def test_ray_exception_names_the_item(ray_executor):
    items = [("square", (1, 0.0)), ("square", (2, 0.05)), ("fail", 2), ("square", (3, 0.0))]
    with pytest.raises(HwnasError) as info:
        ray_executor.map(items)
    message = str(info.value)
    assert "item 2" in message and "ValueError: bad item 2" in message
    assert "second line" not in message and "\n" not in message
    assert "ValueError" in info.value.remote_traceback
    with pytest.raises(DataError, match="item 0 failed: DataError: dataset cifar missing"):
        ray_executor.map([("data", "cifar")])
    pids = set(ray_executor.worker_pids())
    assert len(ray_executor.map(_squares(4))) == 4
    assert set(ray_executor.worker_pids()) == pids, "a failed item must not cost its worker"


def test_make_executor_passes_on_retry_to_ray_only(ray_session):
    def on_retry(index, reason):
        pass

    executor = make_executor(2, None, functools.partial(_setup, "."), on_retry=on_retry)
    try:
        assert isinstance(executor, executors.RayExecutor)
        assert executor.on_retry is on_retry and executor.retries == []
    finally:
        executor.close()  # no actors were started, and Ray is the module's
    assert isinstance(make_executor(1, None, functools.partial(_setup, "."), on_retry=on_retry),
                      SerialExecutor)
    assert executors.MAX_ITEM_RETRIES == 2


@pytest.mark.timeout(180)
def test_an_item_that_kills_its_worker_once_is_retried(ray_executor, ray_logs, serial, tmp_path,
                                                       monkeypatch):
    calls = []
    monkeypatch.setattr(ray_executor, "on_retry", lambda index, reason: calls.append((index, reason)))
    before = set(ray_executor.worker_pids())
    retries_before = len(ray_executor.retries)
    marker = tmp_path / "killed-once"
    items = _squares(8)
    items[3] = ("die_once", str(marker))
    expected = {i: r["value"] for i, r in enumerate(serial.map(items[:3] + items[4:]))}
    expected = {**{i: expected[i] for i in range(3)}, 3: "survived",
                **{i: expected[i - 1] for i in range(4, 8)}}

    got = list(ray_executor.imap_unordered(items))

    assert sorted(i for i, _ in got) == list(range(8)), "each index exactly once"
    assert {i: r["value"] for i, r in got} == expected
    assert int(marker.read_text()) in before, "the item did kill one of the workers"
    new = ray_executor.retries[retries_before:]
    assert [r["item"] for r in new] == [3] and "ActorDiedError" in new[0]["error"], new
    assert "\n" not in new[0]["error"]
    assert calls == [(3, new[0]["error"])]
    # The dead worker was replaced; the replacement ran setup once and evaluated the retried item.
    retried_pid = dict(got)[3]["pid"]
    after = set(ray_executor.worker_pids())
    assert retried_pid in after and retried_pid not in before
    assert len(after) == 2 and len(after & before) == 1
    setups = _setups_by_pid(ray_logs)
    assert all(setups.get(pid) == 1 for pid in after), setups


@pytest.mark.timeout(240)
def test_an_item_that_always_kills_its_worker_fails_after_the_retries(ray_executor, ray_logs):
    retries_before = len(ray_executor.retries)
    started = time.monotonic()
    with pytest.raises(HwnasError, match=r"item 1 killed its worker 3 times") as info:
        ray_executor.map([("square", (1, 0.0)), ("die", None), ("square", (2, 0.0))])
    assert "\n" not in str(info.value)
    assert time.monotonic() - started < 180, "a worker that keeps dying must not loop"
    new = ray_executor.retries[retries_before:]
    assert [r["item"] for r in new] == [1] * executors.MAX_ITEM_RETRIES
    # The dead workers are replaced, and each replacement runs setup once.
    got = ray_executor.map(_squares(20))
    assert len(got) == 20
    pids = set(ray_executor.worker_pids())
    assert len(pids) == 2 and {r["pid"] for r in got} <= pids
    setups = _setups_by_pid(ray_logs)
    assert all(setups.get(pid) == 1 for pid in pids), setups
