"""Data-parallel supernet training on Ray Train workers: the serial step where batch norm does not
intervene, resumable from a checkpoint, failing in one line.

One Ray run here (a ViT, which has layer norm only, resumed from a serial checkpoint on 2 workers
of one thread); ``tests/test_search_rounds.py`` runs a whole job with ``--workers 2`` and checks
that the CNN supernet (batch norm: shard statistics) reaches the serial accuracy within noise.
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
from hwnas.train.distributed import _import_ray_train, _training_error, train_supernet_on_ray
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
    """The tiny ViT: 3 steps an epoch (batch 256 of digits' 898 training images), one AdamW step
    per subnet (an all-reduce after each), distillation from the largest subnet's soft labels."""
    tree = copy.deepcopy(TINY)
    tree["space"] = VIT
    tree["data"]["batch_size"] = 256
    tree["train"].update(epochs=epochs, lr=LR, weight_decay=0.01, step_per_subnet=True, distill=True)
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


def _unset_quantizer_steps(supernet) -> int:
    return sum(not bool(getattr(q, f"init_b{b}")) for q in supernet.modules() if isinstance(q, ElasticLSQ)
               for b in q.bit_choices if b < FLOAT_BITS)


def test_two_workers_resume_and_step_as_the_serial_trainer_on_the_full_batch(ray_train, tmp_path):
    """A serial epoch 0, then epoch 1 on 2 workers (each half of every batch), against 2 serial
    epochs. Without batch norm the two differ by float rounding only (shard sums, the all-reduce).

    Tolerances: a step moves a weight by up to about ``lr`` (AdamW normalises the gradient), so a
    wrong gradient (one shard's, or a soft label from the other shard) moves weights by a good
    fraction of ``lr``; rounding moves them by orders of magnitude less (measured: see below).
    Weights must agree to ``lr / 100``. AdamW's step is blind to a global scale of the gradient
    (sum instead of mean over workers), so the first moments, which are not, must agree to 1e-3
    of each tensor's largest entry.
    """
    straight, straight_trainer = _serial(_vit_config(2))
    ckpt = tmp_path / "checkpoint.pt"
    first, _ = _serial(_vit_config(1), ckpt)  # "killed" after epoch 0
    # some quantizer steps are still unset: the workers must set them from the full batch
    assert _unset_quantizer_steps(first.supernet) > _unset_quantizer_steps(straight.supernet)

    epochs = []
    result = train_supernet_on_ray(_vit_config(2).to_dict(), workers=2, threads=1, checkpoint_path=ckpt,
                                   on_epoch=lambda e, n, r: epochs.append((e, n)))

    assert result.resumed_epoch == 1 and epochs == [(2, 2)]
    expected = straight.supernet.state_dict()
    assert list(result.state) == list(expected)
    for name, value in expected.items():
        if value.is_floating_point():
            torch.testing.assert_close(result.state[name], value, rtol=0, atol=LR / 100, msg=name)
        else:  # the quantizers' init flags: set by the same subnets
            assert torch.equal(result.state[name], value), name
    for got, want in zip(result.history, straight_trainer.history):
        assert got["epoch"] == want["epoch"] and got["lr"] == want["lr"]
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-4)
        assert abs(got["train_accuracy"] - want["train_accuracy"]) <= 2 / 768  # an argmax tie or two
    # rank 0's checkpoint: the serial format, with Adam's moments of the full-batch gradients
    state = torch.load(ckpt, weights_only=True)
    assert state["epoch"] == 1
    moments = straight_trainer.optimizer.state_dict()["state"]
    assert set(state["optimizer"]["state"]) == set(moments)
    for i, want in moments.items():
        got = state["optimizer"]["state"][i]
        assert torch.equal(got["step"], want["step"]), i
        scale = float(want["exp_avg"].abs().max())
        torch.testing.assert_close(got["exp_avg"], want["exp_avg"], rtol=0, atol=1e-3 * scale, msg=str(i))
    resumed = Components.build(_vit_config(2), CPU)
    reader = SupernetTrainer(resumed.supernet, resumed.data, _vit_config(2).train, 0, CPU, 256, ckpt)
    assert reader.try_resume() and reader.start_epoch == 2


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
