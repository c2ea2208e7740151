"""Data-parallel supernet training on Ray Train workers: the serial step where batch norm does not
intervene, resumable from a serial checkpoint, failing in one line.

Two Ray runs here, each on 2 workers of one thread: a ViT (layer norm only) against the serial
trainer, and the tiny CNN resumed from a serial checkpoint. ``tests/test_search_rounds.py`` runs a
whole job with ``--workers 2`` and checks that the CNN supernet (batch norm: shard statistics)
reaches the serial accuracy within noise.
"""
from __future__ import annotations

import copy
import sys

import pytest
import torch

from hwnas.errors import HwnasError
from hwnas.job.checks import load_job_config as load_config
from hwnas.spaces.ops.quant import FLOAT_BITS, ElasticLSQ
from hwnas.train.components import Components
from hwnas.train.distributed import (RaySupernetTrainer, _import_ray_train, _training_error,
                                      train_supernet_on_ray)
from hwnas.train.trainer import SupernetTrainer
from tests.conftest import TINY

CPU = torch.device("cpu")
LR = 0.003

# Ray Train imports ray.data, which warns about its own deprecated settings
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.*")

VIT = {"type": "vit", "patch_size": 2, "embed_dims": [16, 32], "depths": [1, 2, 3], "heads": [1, 2], "head_dim": 8,
       "mlp_ratios": [1.0, 2.0], "attentions": ["softmax", "linear"], "keep_ratios": [0.5, 1.0],
       "weight_bits": [8, 32], "act_bits": [8, 32], "qkv_bias": False}


def _config(epochs: int, **train):
    tree = copy.deepcopy(TINY)
    tree["train"].update(epochs=epochs, **train)
    return load_config(tree)


def _vit_config(epochs: int):
    """The tiny ViT: one step an epoch (a batch of all 898 training images of digits), quantizers
    at 8 bits (each step set from the first batch it sees), distillation from the largest subnet's
    soft labels; without a qkv bias, whose key part has a gradient of zero but for rounding
    (softmax ignores a shift shared by all keys), which AdamW's per-element normalisation would
    turn into a step of any size up to ``lr``."""
    tree = copy.deepcopy(TINY)
    tree["space"] = VIT
    tree["data"]["batch_size"] = 898
    tree["train"].update(epochs=epochs, lr=LR, weight_decay=0.01, distill=True)
    return load_config(tree)


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


def _unset_quantizer_steps(supernet) -> int:
    return sum(not bool(getattr(q, f"init_b{b}")) for q in supernet.modules() if isinstance(q, ElasticLSQ)
               for b in q.bit_choices if b < FLOAT_BITS)


def test_two_workers_step_as_the_serial_trainer_on_the_full_batch(ray_train, tmp_path):
    """Two steps on 2 workers (each half of the batch) against two serial steps on the full batch.
    Without batch norm they differ by float rounding only (shard sums, the all-reduce): measured
    while writing this, 1.2e-7 at most in a weight and 8e-6 of a tensor's largest entry in Adam's
    moments.

    Tolerances, each about 25 times that: weights to ``lr / 1000``. A step moves a weight by up to
    ``lr`` (AdamW normalises each element's gradient), so a wrong gradient (one shard's, a soft
    label from the other shard, a quantizer step set from a shard) shows at a good fraction of
    ``lr``. AdamW's step is blind to a scale of a tensor's gradient (a sum over workers instead of
    the mean, LSQ's 1 / sqrt(numel) taken of a shard's activation), so the moments, which are not,
    must agree to 2e-4 of each tensor's largest entry.
    """
    config = _vit_config(2)
    serial, serial_trainer = _serial(config)
    parts = Components.build(config, CPU)
    untrained = _unset_quantizer_steps(parts.supernet)
    epochs = []
    trainer = RaySupernetTrainer(config, parts.supernet, parts.data, workers=2, threads=1,
                                 checkpoint_path=tmp_path / "checkpoint.pt",
                                 on_epoch=lambda e, n, r: epochs.append((e, n)))
    assert not trainer.try_resume()
    history = trainer.train()

    assert epochs == [(1, 2), (2, 2)]
    assert _unset_quantizer_steps(parts.supernet) < untrained  # the workers set some from the full batch
    expected, state = serial.supernet.state_dict(), parts.supernet.state_dict()
    assert list(state) == list(expected)
    for name, value in expected.items():
        if value.is_floating_point():
            torch.testing.assert_close(state[name], value, rtol=0, atol=LR / 1000, msg=name)
        else:  # the quantizers' init flags: set by the same subnets
            assert torch.equal(state[name], value), name
    for got, want in zip(history, serial_trainer.history, strict=True):
        assert got["epoch"] == want["epoch"] and got["lr"] == want["lr"]
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
    moments, got_moments = serial_trainer.optimizer.state_dict()["state"], trainer.optimizer.state_dict()["state"]
    assert set(got_moments) == set(moments)
    for i, want in moments.items():
        assert torch.equal(got_moments[i]["step"], want["step"]), i
        for key in ("exp_avg", "exp_avg_sq"):
            scale = float(want[key].abs().max())
            torch.testing.assert_close(got_moments[i][key], want[key], rtol=0, atol=2e-4 * scale, msg=f"{i} {key}")


def test_two_workers_resume_a_serial_checkpoint(ray_train, tmp_path):
    """The tiny CNN (batch norm) killed after epoch 0 of 2, resumed on 2 workers with an optimizer
    step after each subnet (so an all-reduce after each backward): the run continues from the
    checkpoint's weights, optimizer and history, and rank 0's checkpoint is the serial format.
    Shard statistics in batch norm make its epoch 1 differ from the serial one within noise: the
    loss within 5 % (the loss falls by far more than that in the epoch)."""
    config = _config(epochs=2, step_per_subnet=True)
    ckpt = tmp_path / "checkpoint.pt"
    _serial(_config(epochs=1, step_per_subnet=True), ckpt)
    _, straight = _serial(config)

    epochs = []
    result = train_supernet_on_ray(config.to_dict(), workers=2, threads=1, checkpoint_path=ckpt,
                                   on_epoch=lambda e, n, r: epochs.append((e, n)))

    assert result.resumed_epoch == 1 and epochs == [(2, 2)]
    assert _without_seconds(result.history[:1]) == _without_seconds(straight.history[:1])
    assert result.history[1]["lr"] == straight.history[1]["lr"]
    assert result.history[1]["loss"] == pytest.approx(straight.history[1]["loss"], rel=0.05)
    assert result.history[1]["loss"] < 0.9 * result.history[0]["loss"]
    resumed = Components.build(config, CPU)
    reader = SupernetTrainer(resumed.supernet, resumed.data, config.train, config.seed, CPU,
                             config.data.batch_size, ckpt)
    assert reader.try_resume() and reader.start_epoch == 2
    for name, value in result.state.items():
        assert torch.equal(resumed.supernet.state_dict()[name], value), name


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
