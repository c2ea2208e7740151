"""``hwnas.launch``: check a config against every registry and run (or resume) its job."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from hwnas.config import Config
from hwnas.errors import ConfigError
from hwnas.job.checks import check_config, check_devices, load_job_config
from hwnas.job.paths import check_job_name
from hwnas.job.runner import SearchJob
from hwnas.job.store import JobStore, default_store_url
from hwnas.train.components import resolve_compute
from hwnas.utils.progress import Reporter


def launch(config: Config | str | Path | dict | None = None, *, name: str | None = None,
           store: str | None = None, workdir: str | Path | None = None, seed: int | None = None,
           compute: str | None = None, overrides: list[str] | tuple[str, ...] = (),
           reporter: Reporter | None = None, workers: int | None = None, ray_address: str | None = None):
    """Run (or resume) a search job and return its :class:`~hwnas.job.Job`.

    ``config`` is a :class:`Config`, a YAML path, a dict tree, or None for the embedded default.
    Keyword arguments override the config's own values.
    """
    if not isinstance(config, Config):
        config = load_job_config(config, overrides)
    elif overrides:
        raise ConfigError("overrides apply to a config file or dict, not to a Config object")
    else:
        config = check_config(config)
    updates: dict[str, Any] = {}
    if seed is not None:
        updates["seed"] = seed
    if compute is not None:
        updates["compute"] = compute
    if workdir is not None:
        updates["workdir"] = str(workdir)
    if store is not None:
        updates["store"] = store
    if workers is not None:
        updates["workers"] = workers
    if ray_address is not None:
        updates["ray_address"] = ray_address
    if updates:
        config = load_job_config(config.to_dict() | updates)
    job_name = check_job_name(name or config.name)
    work = Path(config.workdir)
    compute_device = resolve_compute(config.compute)
    check_devices(config, work)  # before the store or the job's directory exists
    job_store = JobStore(config.store or default_store_url(work))
    return SearchJob(config, job_name, job_store, work, compute_device, reporter or Reporter()).run()

