"""Shared fixtures: a tiny config that runs the whole pipeline in seconds, and one job made with it."""
from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("OMP_NUM_THREADS", "2")

TINY = {
    "name": "tiny",
    "seed": 0,
    "data": {"batch_size": 64},
    "space": {
        "type": "cnn", "stem_channels": 8, "head_channels": 16,
        "stages": [{"channels": 8, "stride": 1, "depth": [1, 2]},
                   {"channels": 16, "stride": 2, "depth": [1, 2]}],
        "expand_ratios": [2, 3], "kernel_sizes": [3, 5], "weight_bits": [4, 32], "act_bits": [4, 32],
    },
    "train": {"epochs": 2, "subnets_per_step": 3, "recalibration_samples": 128},
    "device": {"warmup": 2, "repeats": 5, "correction_samples": 10},
    "predictor": {"samples": 24, "model": "ensemble"},
    "search": {"population": 12, "generations": 3, "evaluate": 5},
}


def uniform_blocks(space, **block):
    """The deepest subnet of ``space`` with every block set to ``block``'s values (e.g. ``op``,
    ``wbits``, ``attn``), the rest as in its largest subnet."""
    values = space.largest().to_dict()
    for name in values:
        key = name.rsplit(".", 1)[-1]
        if key in block and "." in name:
            values[name] = block[key]
    return space.canonical(values)


@pytest.fixture
def tiny_tree() -> dict:
    return copy.deepcopy(TINY)


@pytest.fixture
def tiny_config_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


@pytest.fixture(scope="session")
def tiny_job(tmp_path_factory):
    """One complete tiny job, made through the Python API and shared by read-only tests."""
    import hwnas

    workdir = tmp_path_factory.mktemp("tiny-job")
    job = hwnas.launch(copy.deepcopy(TINY), workdir=workdir)
    return job, workdir


@pytest.fixture
def one_thread():
    """torch on one thread for the test: with the CPU shared by other processes, every parallel
    region of a 2-thread run can wait a time slice for a descheduled thread, so a test of hundreds
    of small ops takes seconds instead of a fraction of one."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
