"""Starting a supernet from a pretrained timm model (InstaTune, LLaMA-NAS): what every space shares.

A space config names a timm architecture and a local checkpoint of it::

    space:
      init: {timm: deit_tiny_patch16_224, checkpoint: deit_tiny.safetensors, kwargs: {img_size: 32}}

and the space builds itself so that the pretrained network is its largest subnet. Each space that
supports this (``hwnas/spaces/*/pretrained.py``) reads the architecture's structure from
``timm.create_model(name, pretrained=False, **kwargs)`` (nothing is ever downloaded), fills the
config keys left out (or null) from it and refuses a key that contradicts it, naming the key
(:class:`Settle`). Before training, its registered ``load_pretrained`` hook loads the checkpoint
into that timm model (:func:`load_into_timm`), copies every tensor into the supernet with every
supernet tensor accounted for (:func:`copy_tensors`), and checks that the largest subnet computes
what the timm model computes (:func:`check_reproduces`).

Why a check at all: the supernet is hwnas's own code computing on slices of the weights, not
timm's modules; a structural detail the space does not model (an epsilon, a pooling, a skip)
would otherwise silently turn "fine-tuning a pretrained model" into training a damaged one.
"""
from __future__ import annotations

import contextlib
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator

import timm
import torch
from pydantic import Field, ValidationError, field_validator
from safetensors.torch import load_file
from torch import nn

from hwnas.errors import ConfigError, HwnasError
from hwnas.utils.models import StrictModel, format_validation_error

#: create_model arguments hwnas sets itself or that would fetch or read files behind its back.
RESERVED_KWARGS = ("pretrained", "num_classes", "checkpoint_path", "pretrained_cfg", "pretrained_cfg_overlay",
                   "pretrained_strict", "cache_dir", "features_only")
TOLERANCE = 1e-4  # largest |supernet - timm| over the largest |timm| value, on a batch
CHECK_BATCH = 4
FRACTIONS = (0.5, 0.75, 1.0)  # smaller choices of a list left out: these shares of the pretrained value
OLD_KEY = ("space.pretrained: replaced by space.init: {timm: <timm architecture>, checkpoint: <local file>} "
           "(see the README, Start from a pretrained timm model)")


class TimmInit(StrictModel):
    """``space.init``: the pretrained timm network the space's largest subnet starts as."""

    timm: str = Field(min_length=1, description="a timm architecture name (timm.list_models())")
    checkpoint: str = Field(min_length=1, description="a local file of its weights: .safetensors, or a PyTorch "
                            "file read with weights_only=True")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="timm.create_model overrides (img_size, "
                                   "patch_size, in_chans, depth_multiplier, ...)")

    @field_validator("timm")
    @classmethod
    def _known(cls, v: str) -> str:
        if not timm.is_model(v):
            raise ValueError(f"unknown timm architecture {v!r} (timm {timm.__version__}; see timm.list_models())")
        return v

    @field_validator("kwargs")
    @classmethod
    def _no_reserved(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key in v:
            if key in RESERVED_KWARGS:
                raise ValueError(f"{key!r} is set by hwnas or would fetch weights; the weights come from "
                                 "space.init.checkpoint and the class count from the data")
        return v

    def create(self, num_classes: int | None = None, meta: bool = False) -> nn.Module:
        """The timm model with random weights (seed 0, leaving the global generator untouched);
        ``meta``: shapes and modules only, no values (a structure read in 0.1 s instead of seconds)."""
        kwargs = dict(self.kwargs, **({} if num_classes is None else {"num_classes": num_classes}))
        with torch.random.fork_rng(devices=[]), torch.device("meta") if meta else contextlib.nullcontext():
            torch.manual_seed(0)
            try:
                model = timm.create_model(self.timm, pretrained=False, **kwargs)
            except Exception as exc:  # a bad override: say which call failed and why
                raise ConfigError(f"space.init.kwargs: timm.create_model({self.timm!r}, **{self.kwargs}) failed: "
                                  f"{_first_line(exc)}") from None
        return model.eval()


def take_init(raw: dict[str, Any]) -> TimmInit | None:
    """The validated ``init`` of a raw space section (None when it names none); refuses the old
    ``pretrained`` key with what to write instead, and accepts it as null (old job configs)."""
    if raw.get("pretrained") is not None:
        raise ConfigError(OLD_KEY)
    raw.pop("pretrained", None)
    if raw.get("init") is None:
        return None
    try:
        init = TimmInit.model_validate(raw["init"])
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, prefix="space.init")) from None
    raw["init"] = init.model_dump()
    return init


def settle_config(raw: Any, settle: Callable[[dict[str, Any], TimmInit], None]) -> Any:
    """A space config's before-validator: a copy of the raw section with ``settle(raw, init)``
    applied when it names a pretrained model (the old ``pretrained`` key refused)."""
    if not isinstance(raw, dict):
        return raw
    raw = dict(raw)
    init = take_init(raw)
    if init is not None:
        settle(raw, init)
    return raw


@lru_cache(maxsize=32)
def _structure(read: Callable[[nn.Module, TimmInit], Any], init_json: str) -> Any:
    init = TimmInit.model_validate_json(init_json)
    return read(init.create(meta=True), init)


def structure(init: TimmInit, read: Callable[[nn.Module, TimmInit], Any]) -> Any:
    """``read(model, init)`` of ``init``'s timm model, built once per process and architecture
    (a config is validated several times per command)."""
    return _structure(read, init.model_dump_json())


def scaled_choices(value: int | float) -> list:
    """The choices of a list left out: 1/2, 3/4 and all of the pretrained value, rounded half up
    (integers at least 1), distinct: depth 12 gives [6, 9, 12], MLP ratio 4.0 gives [2.0, 3.0, 4.0]."""
    if isinstance(value, int):
        return sorted({max(1, int(value * f + 0.5)) for f in FRACTIONS})
    return sorted({round(value * f, 4) for f in FRACTIONS})


def odd_kernels(kernel: int) -> list[int]:
    """The kernel choices of a list left out: the odd sizes from 3 (or 1) up to the pretrained one."""
    return list(range(3 if kernel >= 3 else kernel, kernel + 1, 2))


class Settle:
    """Fills the keys of one raw config node that are left out (or null) from the pretrained model,
    and refuses a key that contradicts it, naming the key, the model's value and the way out."""

    def __init__(self, node: dict[str, Any], init: TimmInit, where: str = "space"):
        self.node, self.init, self.where = node, init, where

    def _refuse(self, key: str, text: str) -> None:
        raise ConfigError(f"{self.where}.{key}: {text} (got {self.node[key]!r}); leave the key out or null "
                          "to take it from the model")

    def fixed(self, key: str, value: Any, what: str) -> None:
        if self.node.get(key) is None:
            self.node[key] = value
        elif self.node[key] != value or isinstance(self.node[key], bool) != isinstance(value, bool):
            self._refuse(key, f"the pretrained {self.init.timm} has {what} {value!r}")

    def largest(self, key: str, value: int | float, what: str, derived: list) -> None:
        """A list whose largest choice must be the pretrained value; derived when left out."""
        choices = self.node.get(key)
        if choices is None:
            self.node[key] = derived
        elif _numbers(choices) and max(choices) != value:
            self._refuse(key, f"the pretrained {self.init.timm} has {what} {value!r}, so the largest choice "
                         f"must be {value!r}")

    def includes(self, key: str, value: Any, why: str) -> None:
        choices = self.node.get(key)
        if isinstance(choices, list) and value not in choices:
            self._refuse(key, f"{why}, so the choices must include {value!r}")

    def leads(self, key: str, value: Any, why: str) -> None:
        choices = self.node.get(key)
        if isinstance(choices, list) and choices and choices[0] != value:
            self._refuse(key, f"{why}, so the first choice must be {value!r}")

    def float_model(self) -> None:
        """The pretrained network is a float model: the largest subnet is the float one."""
        why = f"the largest subnet is the float {self.init.timm}"
        self.includes("weight_bits", 32, why)
        self.includes("act_bits", 32, why)


def _numbers(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)


# -- the weights -------------------------------------------------------------------------------------
def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a local checkpoint: safetensors, or a PyTorch file read with
    ``weights_only=True`` (a dict of tensors, possibly under ``model`` or ``state_dict``)."""
    path = Path(path).expanduser()
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            for key in ("model", "state_dict"):
                if isinstance(state, dict) and isinstance(state.get(key), dict):
                    state = state[key]
    except FileNotFoundError:
        raise HwnasError(f"space.init.checkpoint: {path} does not exist") from None
    except Exception as exc:
        raise HwnasError(f"space.init.checkpoint: {path} is not a readable checkpoint ({_first_line(exc)})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise HwnasError(f"space.init.checkpoint: {path} is not a readable checkpoint (not a dict of tensors)")
    return state


def load_into_timm(model: nn.Module, init: TimmInit,
                   convert: Callable[[dict, nn.Module], dict] | None = None) -> list[str]:
    """Load ``init.checkpoint`` into ``model`` (every tensor, strictly); returns the classifier's
    names when it was left at its initialization (the checkpoint is for another class count)."""
    state = read_checkpoint(init.checkpoint)
    where = f"space.init.checkpoint: {init.checkpoint}"
    if convert is not None:  # timm's own filter: resamples position embeddings and the like
        try:
            state = convert(state, model)
        except Exception as exc:
            raise HwnasError(f"{where}: timm cannot convert it for {init.timm} ({_first_line(exc)})") from None
    own = model.state_dict()
    head_ids = {id(p) for p in model.get_classifier().parameters()}
    head = [n for n, p in model.named_parameters() if id(p) in head_ids]
    for key, value in state.items():
        if key not in own:
            raise HwnasError(f"{where} has {key}, which {init.timm} (kwargs {init.kwargs}) lacks: a checkpoint "
                             "of another architecture or size?")
        if value.shape != own[key].shape and key not in head:
            raise HwnasError(f"{where} has {key} of shape {tuple(value.shape)}, {init.timm} (kwargs {init.kwargs}) "
                             f"needs {tuple(own[key].shape)}")
    kept = {k: v for k, v in state.items() if k not in head or v.shape == own[k].shape}
    missing = [k for k in own if k not in kept and k not in head]
    if missing:
        raise HwnasError(f"{where} lacks {missing[0]} of {init.timm} (kwargs {init.kwargs})")
    model.load_state_dict(kept, strict=False)
    return [k for k in head if k not in kept]


def copy_tensors(supernet: nn.Module, source: dict[str, torch.Tensor], names: dict[str, str],
                 untrained: Callable[[str], bool], model: str) -> None:
    """Copy ``source[names[k]]`` into the supernet's tensor ``k`` for every ``k`` in ``names``.

    Every tensor is accounted for: each source tensor must have a place, and each supernet tensor
    must be copied or be one ``untrained`` says a float pretrained model has no counterpart for
    (quantizer steps, another operator type's weights).
    """
    own = supernet.state_dict()
    unused = sorted(set(source) - set(names.values()))
    if unused:
        raise HwnasError(f"space.init: {model}'s {unused[0]} has no place in the supernet")
    for key in own:
        if key in names:
            value = source[names[key]]
            if value.shape != own[key].shape:
                raise HwnasError(f"space.init: {model}'s {names[key]} has shape {tuple(value.shape)}, the supernet's "
                                 f"{key} {tuple(own[key].shape)}")
        elif not untrained(key):
            raise HwnasError(f"space.init: the supernet's {key} has no counterpart in {model}")
    supernet.load_state_dict({k: source[n] for k, n in names.items()}, strict=False)


# -- the check -----------------------------------------------------------------------------------------
@contextlib.contextmanager
def exact_float32() -> Iterator[None]:
    """TF32 off for the check: on a GPU it would round both sides differently at 1e-3."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@contextlib.contextmanager
def _identity(linear: nn.Linear) -> Iterator[None]:
    """The classifier as an identity for a moment: the supernet then returns its pre-logits features."""
    weight, bias = linear.weight, linear.bias
    n = weight.shape[1]
    linear.weight = nn.Parameter(torch.eye(n, dtype=weight.dtype, device=weight.device))
    linear.bias = nn.Parameter(torch.zeros(n, dtype=weight.dtype, device=weight.device))
    try:
        yield
    finally:
        linear.weight, linear.bias = weight, bias


def check_reproduces(supernet: nn.Module, model: nn.Module, largest: Any, input_shape: tuple[int, ...],
                     init: TimmInit, classifier: nn.Linear | None) -> dict[str, Any]:
    """Raise unless the supernet's ``largest`` subnet computes what ``model`` computes on a batch.

    Compares the logits, or with ``classifier`` (the supernet's, when the checkpoint's classifier
    was replaced) the pre-logits features. Passes when the largest absolute difference is at most
    :data:`TOLERANCE` of the largest absolute value the timm model gives.
    """
    device = next(supernet.parameters()).device
    model = model.to(device).eval()
    x = torch.randn((CHECK_BATCH, *input_shape), generator=torch.Generator().manual_seed(0)).to(device)
    training, previous = supernet.training, supernet.active_arch
    compared = "logits" if classifier is None else "pre-logits features"
    try:
        with exact_float32(), torch.no_grad():
            supernet.eval()
            supernet.set_active(largest)
            if classifier is None:
                ours, theirs = supernet(x), model(x)
            else:
                with _identity(classifier):
                    ours = supernet(x)
                theirs = model.forward_head(model.forward_features(x), pre_logits=True)
    finally:
        supernet.train(training)
        supernet.set_active(previous)
    scale = float(theirs.abs().max().clamp_min(1e-12))
    diff = float((ours - theirs).abs().max()) if ours.shape == theirs.shape else float("inf")
    if not diff <= TOLERANCE * scale:
        shapes = "" if ours.shape == theirs.shape else f"; shapes {tuple(ours.shape)} and {tuple(theirs.shape)}"
        raise HwnasError(f"space.init: the supernet's largest subnet does not reproduce {init.timm}'s {compared} "
                         f"from {init.checkpoint}: largest difference {diff:.3g}, {diff / scale:.2g} of the largest "
                         f"|value| {scale:.3g}, tolerance {TOLERANCE:g}{shapes}")
    return {"timm": init.timm, "checkpoint": str(init.checkpoint), "kwargs": init.kwargs, "compared": compared,
            "max_abs_difference": diff, "relative_difference": diff / scale, "tolerance": TOLERANCE,
            "summary": f"started from {init.timm} ({init.checkpoint}): the largest subnet reproduces its {compared} "
                       f"(largest difference {diff:.2g}, {diff / scale:.2g} of the largest |value|; tolerance "
                       f"{TOLERANCE:g})"}


def start_from(supernet: nn.Module, space: Any, init: TimmInit, *, names: Callable[[nn.Module], dict[str, str]],
               untrained: Callable[[str], bool], classifier: Callable[[nn.Module], nn.Linear],
               convert: Callable[[dict, nn.Module], dict] | None = None) -> dict[str, Any]:
    """The whole start for one space: the timm model with the checkpoint loaded, every tensor copied
    into the supernet, and the check; returns what was done (JSON-able) for the job's record."""
    model = init.create(space.num_classes)
    replaced = load_into_timm(model, init, convert)
    copy_tensors(supernet, model.state_dict(), names(model), untrained, init.timm)
    report = check_reproduces(supernet, model, space.largest(), space.input_shape, init,
                              classifier(supernet) if replaced else None)
    report["notes"] = [f"the checkpoint's classifier ({', '.join(replaced)}) is for another number of classes "
                       f"than the data's {space.num_classes}: it starts from timm's initialization"] if replaced else []
    return report


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
