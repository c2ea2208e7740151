"""The search-job config: YAML, validated into typed objects before anything runs.

Unknown keys and out-of-range values are errors that name the field (``train.epochs: ...``).
``--set key=value`` overrides are applied to the raw YAML tree first, so they are validated
exactly like the file.

This module is a leaf of the layers: it checks types and shapes only. A value that must name
an entry of a registry (the space and its keys, the dataset, the energy model, the predictor,
the algorithm, the objectives, the devices) is checked where that registry lives, by
:func:`hwnas.job.checks.load_job_config` before any work starts (``hwnas.load_config`` is that
function), still as one line naming the field. So validating a YAML file here loads neither
torch nor any space.
"""
from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hwnas.errors import ConfigError
from hwnas.metrics import QUALITY_METRICS
from hwnas.utils.models import StrictModel, format_validation_error  # noqa: F401  (re-exported)

OBJECTIVES = ("accuracy", "latency", "energy")


class _Section(StrictModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    dataset: str = "digits"
    root: str | None = None
    image_size: int | None = Field(None, gt=0, le=1024)
    val_fraction: float = Field(0.3, gt=0, lt=0.5, description="the split every choice is made on (the search, "
                                "the front, budgets): see the README on its size")
    test_fraction: float = Field(0.2, gt=0, lt=0.5)
    split_seed: int = Field(0, ge=0, le=2**32 - 1)  # the range scikit-learn's splitter accepts
    batch_size: int = Field(64, gt=0, le=8192)
    context_length: int | None = Field(None, gt=0, le=1 << 20, description="tokens per sequence of a text "
                                       "dataset (null: 128)")
    tokenizer: str | None = Field(None, description="a local Hugging Face tokenizer folder for a text dataset "
                                  "(null: byte-level, vocabulary 256)")
    tokenizer_gguf: str | None = Field(None, description="a GGUF file in data.tokenizer to read the tokenizer from")
    max_eval_samples: int | None = Field(None, gt=0, description="use only the first N samples (text: windows) of "
                                         "the validation and test splits for every evaluation (null: all); trades "
                                         "the precision of each figure for time")


class TrainConfig(_Section):
    epochs: int = Field(8, ge=0, le=10000)
    lr: float = Field(0.005, gt=0, le=10)
    weight_decay: float = Field(1e-4, ge=0, le=1)
    subnets_per_step: int = Field(4, ge=2, le=16, description="sandwich rule: largest, smallest, n-2 random")
    distill: bool = Field(True, description="subnets other than the largest learn its soft predictions "
                          "(in-place distillation); off: every subnet learns the labels")
    step_per_subnet: bool = Field(False, description="one optimizer step after each subnet of the sandwich "
                                  "instead of one step on their summed gradients (what a ViT supernet needs, "
                                  "see README)")
    warmup_epochs: int = Field(1, ge=0)
    max_steps: int | None = Field(None, ge=1, le=10**9, description="optimizer steps per epoch at most (the first "
                                  "batches of its shuffled order; null: every full batch of the training split)")
    recalibration_samples: int = Field(512, gt=0, description="training images used to recalibrate BN")
    progressive_ops: bool = Field(False, description="NASA-style: first operator type only, then add the next ones")
    threads: int | None = Field(None, ge=1, le=1024,
                                description="CPU threads for training (null: torch's default, one per core); the "
                                "trained weights depend on it")


class DeviceConfig(_Section):
    name: str = "local-cpu"
    batch_size: int = Field(1, gt=0, le=1024)
    threads: int = Field(1, gt=0, le=256)
    warmup: int = Field(10, ge=0, le=10000)
    repeats: int | None = Field(None, ge=3, le=100000, description="timed calls per model (or network of ops) in "
                                "all, spread over the rounds (null: the device's default, 90 eager and 180 "
                                "TorchScript, whose calls cost about half as much)")
    rounds: int = Field(15, ge=1, le=1000, description="interleaved rounds: every model of a batch is timed in "
                        "each, in a fresh shuffled order, with a reference model spread through it")
    max_drift: float = Field(0.1, gt=0, le=10, description="time a round again when the reference's median in it "
                             "strays more than this share from the batch's")
    energy_model: str = "horowitz-45nm"
    spec: str | None = Field(None, description="YAML roofline model of an analytical device (see hwnas devices)")
    correction_samples: int = Field(60, ge=0, le=100000,
                                    description="subnets measured end to end to learn the table's correction")
    table: str | None = Field(None, description="lookup table of a table device (hwnas schema, see hwnas import-table)")
    interpolate_missing: bool = Field(False, description="price ops a table lacks from its neighbours, with a warning")
    max_spread: float = Field(0.25, gt=0, le=10,
                              description="re-measure table entries whose interquartile range exceeds this share of the median")


class PredictorConfig(_Section):
    model: str = "ensemble"
    samples: int = Field(400, ge=10, le=100000)
    holdout: float = Field(0.2, gt=0, lt=0.9)
    proxies: list[str] = Field(default_factory=list, description="zero-cost proxies (hwnas.proxies) scored on each "
                               "subnet at initialization, as extra features of the accuracy predictor (empty: none)")
    proxy_batch: int = Field(64, ge=2, le=4096, description="training samples of the fixed, seeded batch the "
                             "proxies score every subnet on")

    @field_validator("proxies")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("proxies must not repeat")
        return v


class SearchConfig(_Section):
    algorithm: str = "nsga2"
    objectives: list[str] = Field(default_factory=lambda: ["accuracy", "latency", "energy"], min_length=2,
                                  description="accuracy (or perplexity), latency, prefill (a space's prefill "
                                  "phase: lm), energy, memory, params, flops, bitops; latency@DEVICE, energy@DEVICE")
    population: int = Field(64, ge=4, le=100000)
    generations: int = Field(40, ge=1, le=100000)
    evaluate: int = Field(24, ge=1, le=100000, description="budget of real evaluations (plus the space's extremes)")
    batch: int = Field(8, ge=1, le=100000, description="real evaluations per predictor-in-the-loop round")
    patience: int = Field(2, ge=1, le=1000, description="rounds without real-front hypervolume growth before stopping")
    uncertainty_weight: float = Field(1.0, ge=0, le=100, description="pick candidates to evaluate by accuracy "
                                      "mean + this x the predictor's std (an ensemble's); 0: the mean")
    scorer: Literal["supernet", "proxy"] = Field("supernet", description="what ranks subnets during the search: "
                                                 "the trained supernet's validation quality, or a zero-cost proxy "
                                                 "(no supernet training; the chosen subnets are then trained alone)")
    proxy: str = Field("naswot", description="the zero-cost proxy of scorer: proxy (see hwnas.proxies)")
    train_epochs: int = Field(5, ge=1, le=10000, description="scorer: proxy: epochs each chosen subnet trains alone "
                              "before its validation and test quality are measured")
    max_latency_ms: float | None = Field(None, gt=0)
    max_prefill_ms: float | None = Field(None, gt=0, description="prefill latency budget of a space with a "
                                         "prefill phase (lm: a prompt of space.prompt_length tokens)")
    max_energy_mj: float | None = Field(None, gt=0)
    max_memory_kb: float | None = Field(None, gt=0, description="weights plus peak activations at the device's "
                                        "batch size, in KiB (see hwnas.footprint)")
    min_accuracy: float | None = Field(None, ge=0, le=1)
    max_perplexity: float | None = Field(None, gt=0, description="validation perplexity budget of a language model")

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("objectives must not repeat")
        quality = [o for o in v if o in QUALITY_METRICS]
        if not quality:
            raise ValueError("objectives must include accuracy (or perplexity, for a language model)")
        if len(quality) > 1:
            raise ValueError(f"objectives name two quality metrics ({quality[0]}, {quality[1]}); a job has one")
        return v

    @field_validator("max_latency_ms", "max_prefill_ms", "max_energy_mj", "max_memory_kb", "min_accuracy",
                     "max_perplexity")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v


class SpaceSection(BaseModel):
    """The ``space:`` section as written: a ``type`` naming a registered space and that space's
    keys, checked by the space's own config model (:func:`hwnas.spaces.registry.parse_space_config`)
    where the space registry lives; a checked config holds that typed model instead."""

    model_config = ConfigDict(extra="allow")
    type: str = "cnn"


class Config(_Section):
    name: str = Field("digits-cnn", min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    compute: Literal["auto", "cpu", "cuda"] = "auto"
    workdir: str = "runs"
    workers: int = Field(1, ge=1, le=1024, description="processes evaluating candidates (>1: a local Ray)")
    ray_address: str | None = Field(None, description="join this Ray cluster for evaluation")
    store: str | None = None
    data: DataConfig = Field(default_factory=DataConfig)
    space: Any = Field(default_factory=lambda: SpaceSection(), description="a SpaceSection, or the space's checked model")
    train: TrainConfig = Field(default_factory=TrainConfig)
    device: DeviceConfig = Field(default_factory=DeviceConfig)
    predictor: PredictorConfig = Field(default_factory=PredictorConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)

    @field_validator("space", mode="before")
    @classmethod
    def _space(cls, v: Any) -> Any:
        if isinstance(v, BaseModel):  # a space's own checked model (see hwnas.job.checks), kept typed
            return v
        if not isinstance(v, dict):
            raise ValueError("must be a mapping with a 'type' and the space's keys")
        if not isinstance(v.get("type", "cnn"), str):  # the registry looks it up by name
            raise ConfigError(f"space.type: must be the name of a space (got {v['type']!r})")
        return SpaceSection.model_validate(v)

    @model_validator(mode="after")
    def _fractions(self) -> "Config":
        if self.data.val_fraction + self.data.test_fraction >= 0.9:
            raise ValueError("data.val_fraction + data.test_fraction must be below 0.9")
        return self

    def __eq__(self, other: object) -> bool:
        """Equal when they serialize the same: a space section as written (with its defaults) and
        the space's checked model of it are one config."""
        return isinstance(other, Config) and self.to_dict() == other.to_dict()

    __hash__ = None  # mutable, like every pydantic model

    def to_dict(self) -> dict[str, Any]:
        out = self.model_dump(mode="json", exclude={"space"})
        out["space"] = self.space.model_dump(mode="json")
        return out


# -- loading ----------------------------------------------------------------------------------
def default_config_text() -> str:
    """The embedded default config (identical to experiments/digits-cnn.yaml)."""
    return resources.files("hwnas.configs").joinpath("digits-cnn.yaml").read_text(encoding="utf-8")


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".")]
    if not all(path):
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except (yaml.YAMLError, RecursionError):
        value = raw
    return path, value


def apply_override(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node: Any = tree
    for i, part in enumerate(path[:-1]):
        if isinstance(node, list):
            node = node[_list_index(node, part, path)]
        else:
            node = node.setdefault(part, {})
            if not isinstance(node, (dict, list)):
                raise ConfigError(f"--set {'.'.join(path)}: {'.'.join(path[: i + 1])} is not a section")
    last = path[-1]
    if isinstance(node, list):
        node[_list_index(node, last, path)] = value
    else:
        node[last] = value


def _list_index(node: list, part: str, path: list[str]) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"--set {'.'.join(path)}: {part!r} is not an index of a list of {len(node)}")
    return int(part)


def load_config(source: str | Path | dict | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read and validate a config. ``None`` is the embedded default; a dict is taken as the tree."""
    if source is None:
        tree, origin = yaml.safe_load(default_config_text()), "default config"
    elif isinstance(source, dict):
        tree, origin = dict(source), "config"
    else:
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"config file {str(path)!r} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config file {str(path)!r}: {exc}") from None
        try:
            tree = yaml.safe_load(text)
        except RecursionError:
            raise ConfigError(f"{path}: not valid YAML (nested too deeply)") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{path}: not valid YAML{where}") from None
        origin = str(path)
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{origin}: the top level must be a mapping of keys")
    for item in overrides:
        apply_override(tree, *parse_override(item))
    if tree.get("space") is None:
        tree["space"] = yaml.safe_load(default_config_text())["space"]
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        message = format_validation_error(exc)
        raise ConfigError(f"{blame(origin, overrides, message)}: {message}") from None
    except ConfigError as exc:  # raised inside a validator (the space section): name the file too
        raise ConfigError(f"{blame(origin, overrides, str(exc))}: {exc}") from None


def blame(origin: str, overrides: list[str] | tuple[str, ...], message: str) -> str:
    """Where a bad value came from: the ``--set`` that wrote the failing key (or a section above or
    below it), else the file. ``message`` starts with the failing key (``train.epoch: ...``)."""
    key = message.split(":", 1)[0].strip().split(".")
    for item in reversed(overrides):  # the last --set of a key is the one that counts
        path = item.split("=", 1)[0].strip().split(".")
        shared = min(len(path), len(key))
        if shared and path[:shared] == key[:shared]:
            return f"--set {item}" + ("" if origin in ("config", "default config") else f" (over {origin})")
    return origin
