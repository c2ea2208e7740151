"""The config keys that bound a job's cost: ``train.max_steps`` (optimizer steps per epoch) and
``data.max_eval_samples`` (the first N validation / test samples every evaluation reads)."""
from __future__ import annotations

import pytest
import torch

from hwnas.config import load_config
from hwnas.data import iterate_batches, load_configured, load_data
from hwnas.errors import ConfigError
from hwnas.spaces.cnn import CNNSupernet
from hwnas.spaces.registry import build_space
from hwnas.train.evaluation import split_quality
from hwnas.train.trainer import SupernetTrainer

SMALL = ["space.stages.0.depth=[1]", "space.stages.1.depth=[1]", "space.stages.2.depth=[1]",
         "train.subnets_per_step=2", "train.epochs=2", "train.warmup_epochs=0", "train.max_steps=3"]


class Killed(Exception):
    pass


def _steps(trainer: SupernetTrainer) -> int:
    """Optimizer steps taken so far, as AdamW counts them."""
    return int(next(iter(trainer.optimizer.state.values()))["step"])


def test_max_steps_caps_each_epoch_and_a_killed_run_resumes_exactly(tmp_path):
    cfg = load_config(None, SMALL)
    data = load_data()
    space = build_space(cfg.space, data.input_shape, data.num_classes)

    def fresh():
        torch.manual_seed(0)
        return CNNSupernet(space)

    straight = fresh()
    trainer = SupernetTrainer(straight, data, cfg.train, 0, torch.device("cpu"), 64)
    trainer.train()
    assert len(data.train) // 64 > 3 and _steps(trainer) == 2 * 3  # two epochs of 3 steps, not full epochs

    # killed right after epoch 0's checkpoint was written, under the same config (same schedule)
    ckpt = tmp_path / "checkpoint.pt"

    def kill(epoch, epochs, record):
        raise Killed

    with pytest.raises(Killed):
        SupernetTrainer(fresh(), data, cfg.train, 0, torch.device("cpu"), 64, ckpt, on_epoch=kill).train()
    resumed = fresh()
    again = SupernetTrainer(resumed, data, cfg.train, 0, torch.device("cpu"), 64, ckpt)
    assert again.try_resume() and again.start_epoch == 1 and _steps(again) == 3
    again.train()
    assert _steps(again) == 6 and [r["epoch"] for r in again.history] == [0, 1]
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_max_eval_samples_keeps_the_first_samples_of_validation_and_test_only():
    full = load_configured(load_config(None).data)
    capped = load_configured(load_config(None, ["data.max_eval_samples=7"]).data)
    assert len(capped.train) == len(full.train) and (len(capped.val), len(capped.test)) == (7, 7)
    for split in ("val", "test"):
        a, b = getattr(full, split).tensors, getattr(capped, split).tensors
        assert torch.equal(a[0][:7], b[0]) and torch.equal(a[1][:7], b[1])
    assert capped.description["sizes"]["val"] == 7 and capped.description["uncapped_sizes"]["val"] == len(full.val)

    # an evaluation reads exactly those: its accuracy is the one of the first 7 samples counted by hand
    cfg = load_config(None, SMALL)
    space = build_space(cfg.space, full.input_shape, full.num_classes)
    torch.manual_seed(0)
    net = CNNSupernet(space).eval()
    net.set_active(space.largest())
    got = split_quality(net, capped, "accuracy", ("val",), "cpu")["val_accuracy"]
    with torch.no_grad():
        x, y = next(iterate_batches(full.val, 7))
        expected = float((net(x).argmax(1) == y).float().mean())
    assert got == pytest.approx(expected)


def test_the_caps_are_checked_by_name():
    with pytest.raises(ConfigError, match="train.max_steps"):
        load_config(None, ["train.max_steps=0"])
    with pytest.raises(ConfigError, match="data.max_eval_samples"):
        load_config(None, ["data.max_eval_samples=-1"])
