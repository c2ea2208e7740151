"""Supernet training on Ray Train workers equals the serial trainer, resumes, and fails in one line.

The Ray tests start a local Ray of 2 CPUs with 2 Ray Train workers. Float results of CPU kernels
depend on the number of torch threads, so the serial reference runs with one thread and the
workers are given ``threads=1``: then the two agree to the last bit.
"""
from __future__ import annotations

import copy
import sys

import pytest
import torch

from hwnas.job.checks import load_job_config as load_config
from hwnas.errors import HwnasError
from hwnas.train.components import Components
from hwnas.train.distributed import (RaySupernetTrainer, _import_ray_train, _training_error,
                                      train_supernet_on_ray)
from hwnas.train.evaluation import evaluate_subnet
from hwnas.train.trainer import SupernetTrainer
from tests.conftest import TINY

CPU = torch.device("cpu")

# Ray Train imports ray.data, which warns about its own deprecated settings
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.*")


def _config(epochs: int = 2):
    tree = copy.deepcopy(TINY)
    tree["train"]["epochs"] = epochs
    return load_config(tree)


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def ray_train(one_thread):
    try:
        ray, _, _ = _import_ray_train(local=True)
    except HwnasError:
        pytest.skip("Ray Train is not installed")
    assert not ray.is_initialized()
    yield ray
    assert not ray.is_initialized(), "the trainer must shut down the Ray it started"


def _serial(config, checkpoint=None):
    parts = Components.build(config, CPU)
    trainer = SupernetTrainer(parts.supernet, parts.data, config.train, config.seed, CPU,
                              config.data.batch_size, checkpoint)
    trainer.train()
    return parts, trainer


def _without_seconds(history):
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


def _assert_same_state(expected: dict, got: dict):
    assert list(expected) == list(got)
    for name in expected:
        assert torch.equal(expected[name], got[name]), name


def test_two_ray_workers_train_exactly_as_the_serial_trainer(ray_train, tmp_path):
    config = _config()
    serial, serial_trainer = _serial(config)

    parts = Components.build(config, CPU)
    ckpt = tmp_path / "checkpoint.pt"
    epochs = []
    trainer = RaySupernetTrainer(config, parts.supernet, parts.data, workers=2, threads=1,
                                 checkpoint_path=ckpt, on_epoch=lambda e, n, r: epochs.append((e, n)))
    assert not trainer.try_resume()
    history = trainer.train()

    assert epochs == [(1, 2), (2, 2)]
    assert _without_seconds(history) == _without_seconds(serial_trainer.history)
    _assert_same_state(serial.supernet.state_dict(), parts.supernet.state_dict())  # bit for bit
    expected_opt, got_opt = serial_trainer.optimizer.state_dict(), trainer.optimizer.state_dict()
    assert expected_opt["param_groups"] == got_opt["param_groups"]
    for i, state in expected_opt["state"].items():
        for key, value in state.items():
            assert torch.equal(value, got_opt["state"][i][key]), (i, key)

    # the checkpoint rank 0 wrote is the serial format: the serial trainer resumes it as finished
    resumed = Components.build(config, CPU)
    reader = SupernetTrainer(resumed.supernet, resumed.data, config.train, config.seed, CPU,
                             config.data.batch_size, ckpt)
    assert reader.try_resume() and reader.start_epoch == 2
    _assert_same_state(serial.supernet.state_dict(), resumed.supernet.state_dict())

    n = config.train.recalibration_samples
    for arch in (config_space := serial.space).largest(), config_space.smallest():
        assert (evaluate_subnet(parts.supernet, arch, parts.data, "test", n, 256)
                == evaluate_subnet(serial.supernet, arch, serial.data, "test", n, 256))


def test_ray_training_resumes_from_a_checkpoint(ray_train, tmp_path):
    straight, straight_trainer = _serial(_config(epochs=2))
    ckpt = tmp_path / "checkpoint.pt"
    _serial(_config(epochs=1), ckpt)  # "killed" after the first epoch: the checkpoint of epoch 0

    result = train_supernet_on_ray(_config(epochs=2).to_dict(), workers=2, threads=1, checkpoint_path=ckpt)

    assert result.resumed_epoch == 1
    assert _without_seconds(result.history) == _without_seconds(straight_trainer.history)
    _assert_same_state(straight.supernet.state_dict(), result.state)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1


def test_a_failing_worker_is_one_line():
    """What ``fit`` raises when a worker fails (checked against a real run while writing this:
    a worker whose config names an unknown dataset) becomes one line naming the worker."""
    try:
        _, train, _ = _import_ray_train(local=True)
    except HwnasError:
        pytest.skip("Ray Train is not installed")
    from hwnas.errors import DataError

    failure = train.WorkerGroupError("worker 1 failed\nTraceback ...",
                                     {1: DataError("unknown dataset 'nope'; known datasets: digits"),
                                      0: RuntimeError("Connection closed by peer\nmore")})
    error = _training_error(failure)
    assert str(error) == "supernet training on Ray failed on worker 0: RuntimeError: Connection closed by peer"
    error = _training_error(train.WorkerGroupError("x", {1: DataError("unknown dataset 'nope'")}))
    assert str(error) == "supernet training on Ray failed on worker 1: unknown dataset 'nope'"
    assert "\n" not in str(_training_error(ValueError("a\nb")))


def test_missing_ray_train_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray.train", None)
    monkeypatch.setitem(sys.modules, "ray.train.torch", None)
    with pytest.raises(HwnasError) as caught:
        train_supernet_on_ray(_config(epochs=1), workers=2)
    assert str(caught.value) == ('supernet training on Ray workers needs Ray Train, which is not '
                                 'installed: pip install "hwnas[ray]"')


def test_nothing_to_train_needs_no_ray(monkeypatch, tmp_path, one_thread):
    """A run resumed after its last epoch returns the checkpoint's history without Ray."""
    ckpt = tmp_path / "checkpoint.pt"
    _, finished = _serial(_config(epochs=1), ckpt)
    monkeypatch.setitem(sys.modules, "ray.train", None)  # would fail if Ray were needed
    result = train_supernet_on_ray(_config(epochs=1), workers=2, checkpoint_path=ckpt)
    assert result.resumed_epoch == 1 and result.history == finished.history
