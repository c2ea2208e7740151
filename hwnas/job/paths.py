"""A job's name, where its files live, and what identifies its config."""
from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwnas.config import Config
from hwnas.errors import JobError
from hwnas.job.events import EVENTS_FILE
from hwnas.job.store import display_url
from hwnas.utils.io import stable_hash

JOB_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def check_job_name(name: str) -> str:
    # fullmatch: re.match's "$" also matches before a trailing newline ("name\n" would pass)
    if not re.fullmatch(JOB_NAME_PATTERN, name or "") or ".." in name:
        raise JobError(f"job name {name!r} must be 1-100 letters, digits, '.', '_' or '-', "
                       "start with a letter or digit, and contain no '..' or '/'")
    return name


def recorded_config(config: Config) -> dict[str, Any]:
    """The config as a job records it (store attributes, ``config.yaml``): the store URL's
    password masked, since both are read by people who must not learn it."""
    tree = config.to_dict()
    if tree.get("store"):
        tree["store"] = display_url(tree["store"])
    return tree


def config_hash(config: Config) -> str:
    """What determines a job's results: everything but where it is stored and where it computes."""
    tree = config.to_dict()
    for key in ("name", "workdir", "store", "compute", "workers", "ray_address"):
        tree.pop(key, None)
    return stable_hash(tree)


@dataclass
class JobPaths:
    root: Path

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.pt"

    @property
    def supernet(self) -> Path:
        return self.root / "supernet.safetensors"

    @property
    def lut(self) -> Path:
        return self.root / "lut.csv"

    @property
    def samples(self) -> Path:
        return self.root / "accuracy_samples.csv"

    @property
    def latency_samples(self) -> Path:
        return self.root / "latency_samples.csv"

    def phase_samples(self, phase: str) -> Path:
        """The end-to-end measurements of a latency phase (``prefill_samples.csv``)."""
        return self.root / f"{phase}_samples.csv"

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def events(self) -> Path:
        return self.root / EVENTS_FILE


