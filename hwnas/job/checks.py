"""Everything a config names, checked against the registries before any work starts.

:mod:`hwnas.config` checks types and shapes and knows no registry (it is a leaf of the layers).
Here each name is looked up where its registry lives: the space and its keys
(:mod:`hwnas.spaces.registry`), the dataset, the energy model, the predictor, the algorithm, the
objectives and the devices. A wrong one is one line naming the field, and the file, as before
the job's store or directory exists.
"""
from __future__ import annotations

from pathlib import Path

from hwnas.config import Config, DeviceConfig, blame, load_config
from hwnas.data import DATASETS, dataset_info
from hwnas.errors import ConfigError
from hwnas.hwmodels.devices import build_device
from hwnas.hwmodels.energy import ENERGY_MODELS
from hwnas.metrics import QUALITY_METRICS, quality_of
from hwnas.predictors.accuracy import REGRESSORS
from hwnas.proxies import proxy_names
from hwnas.search.budgets import BUDGETS, Budgets
from hwnas.search.engine import ALGORITHMS
from hwnas.search.objectives import BASE_COLUMNS, asked_phases, extra_devices, parse_objective
from hwnas.spaces.registry import LatencyPhase, latency_phase, parse_space_config


def _known(field: str, value: str, known, what: str) -> None:
    if value not in known:
        raise ConfigError(f"{field}: unknown {what} {value!r}; known: {', '.join(sorted(known))}")


def check_config(config: Config) -> Config:
    """``config`` with its space section replaced by the space's own checked model (its defaults
    filled in), after checking every name it gives; raises :class:`ConfigError` naming the first
    wrong field."""
    _known("data.dataset", config.data.dataset, DATASETS, "dataset")
    space = parse_space_config(config.space)
    _known("device.energy_model", config.device.energy_model, ENERGY_MODELS, "energy model")
    _known("predictor.model", config.predictor.model, REGRESSORS, "model")
    _known("search.algorithm", config.search.algorithm, ALGORITHMS, "algorithm")
    for proxy in config.predictor.proxies:
        _known("predictor.proxies", proxy, proxy_names(), "proxy")
    _known("search.proxy", config.search.proxy, proxy_names(), "proxy")
    for name in config.search.objectives:
        try:
            parse_objective(name)
        except ValueError as exc:
            raise ConfigError(f"search.objectives: {exc}") from None
    check_quality(config)
    job_phases(config)
    return config.model_copy(update={"space": space})


def job_phases(config: Config) -> dict[str, LatencyPhase]:
    """The latency phases a job prices (``prefill``: named as an objective or bounded by a budget,
    see :func:`~hwnas.search.objectives.asked_phases`), from its space's entry; one the space does
    not state (see :attr:`hwnas.spaces.registry.SpaceEntry.latency_phases`) is a
    :class:`ConfigError` naming the field that asked for it."""
    phases = {}
    for phase in asked_phases(config.search.objectives, Budgets.from_config(config.search).columns()):
        budget = next(k.key for k in BUDGETS if k.column == BASE_COLUMNS[phase])
        field = "search.objectives" if phase in config.search.objectives else f"search.{budget}"
        try:
            phases[phase] = latency_phase(config.space.type, phase)
        except ConfigError as exc:
            raise ConfigError(f"{field}: {exc}") from None
    return phases


def check_quality(config: Config) -> None:
    """The dataset takes the data keys given; the objectives' quality metric is the dataset's
    (accuracy for classification, perplexity for a language model); a quality budget bounds it."""
    info = dataset_info(config.data.dataset)
    for key in ("context_length", "tokenizer", "tokenizer_gguf"):
        if getattr(config.data, key) is not None and key not in info.options:
            raise ConfigError(f"data.{key}: dataset {config.data.dataset!r} takes no {key} (a text dataset does)")
    quality, wanted = quality_of(config.search.objectives), QUALITY_METRICS[info.quality]
    if quality != wanted:
        raise ConfigError(f"search.objectives: {quality.name} does not judge dataset {config.data.dataset!r}, a "
                          f"{wanted.task} dataset; name {wanted.name} instead")
    if config.search.scorer == "proxy" and not quality.maximize:
        raise ConfigError(f"search.scorer: proxy ranks subnets by a score that is higher for better ones; it "
                          f"needs a maximized quality metric (accuracy), not {quality.name}")
    for kind in BUDGETS:
        other = next((m for m in QUALITY_METRICS.values() if m.column == kind.column and m != quality), None)
        if other is not None and getattr(config.search, kind.key) is not None:
            raise ConfigError(f"search.{kind.key}: a {quality.task} job is judged by {quality.name}, "
                              f"not {other.name}")


def load_job_config(source: str | Path | dict | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a config (see :func:`hwnas.config.load_config`) and check every name it gives."""
    config = load_config(source, overrides)
    try:
        return check_config(config)
    except ConfigError as exc:
        origin = "default config" if source is None else "config" if isinstance(source, dict) else str(source)
        raise ConfigError(f"{blame(origin, overrides, str(exc))}: {exc}") from None


def check_devices(config: Config, workdir: Path) -> None:
    """Refuse an unknown device, or a measured one named in an objective (``energy@NAME`` needs a
    table or analytical device), before anything is written: found in the profile stage instead,
    it would leave a failed job behind."""
    build_device(config.device, workdir)
    for name in extra_devices(config.search.objectives):
        if build_device(DeviceConfig(name=name), workdir).measures:
            raise ConfigError(f"search.objectives: {name} is a measured device; objectives on another device "
                              "need a table or analytical one (profile it and import its table)")
