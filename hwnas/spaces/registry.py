"""The space contract: everything the core needs of a search space, in one registered entry.

A space is a module or subpackage of its own (``hwnas/spaces/cnn/``, ``hwnas/spaces/vit/``, or one
outside hwnas) that calls :func:`register_space` once with a :class:`SpaceEntry`; configs name it
in ``space.type``. The core (training, cost models, predictors, search, export) asks this entry,
never which space it has, so adding a space edits no file of the core.

The built-in spaces, and any a package declares under the ``hwnas.spaces`` entry-point group
(``[project.entry-points."hwnas.spaces"] myspace = "mypackage.myspace"``), are imported the first
time a space is looked up: importing the registry (or :mod:`hwnas.spaces.dims`) stays cheap, and
a space installed as a package is found by every process, Ray workers included, without an
import in user code.

Required of a space:

* ``config_model``: the pydantic model of its ``space:`` section (with a ``type`` field);
* ``build_space(config, input_shape, num_classes)``: a :class:`~hwnas.spaces.dims.SearchSpace`
  with its dimensions and encoding, ``subnet_spec(arch)`` (a JSON-able description of one subnet,
  with ``"type"`` set to the space's name), ``covering_archs()`` (archs that together hold every
  distinct op, for profiling), ``largest()``, ``smallest()`` and ``summary(arch)``;
* ``build_supernet(space)``: an ``nn.Module`` with ``set_active(arch)`` and ``extract()``;
* ``build_standalone(spec)``: the standalone ``nn.Module`` of a subnet spec (what an export loads);
* ``op_graph(spec)``: the ops of a subnet spec in execution order (:class:`~hwnas.ir.OpSig`).

Optional hooks (None when the space has no such thing):

* ``block_graph(spec)``: the subnet at block granularity, for OFA-style block lookup tables;
* ``int8_ineligible_reason(spec)``: None when the subnet can be exported as a real int8 model,
  else why not; a space without the hook has no int8 export;
* ``load_pretrained(supernet, space)``: start a fresh supernet from the pretrained model its space
  config names (the built-in spaces' ``space.init``, see :mod:`hwnas.spaces.pretrained`), checking
  that its largest subnet reproduces that model; returns a JSON-able record of what was done
  (``summary``: one line for the user, ``notes``: more lines), or None when the config names no
  pretrained model. Called once, before training starts.
* ``op_inputs(spec, ops)``: which earlier tensors each op of ``ops = op_graph(spec)`` reads (per
  op, the indices of the ops whose outputs it reads, -1 for the model's input), for the peak
  activation memory (:mod:`hwnas.footprint`); a space without it is a chain, each op reading the
  one before it, which is right only for a network without skip connections.

* ``export_formats``: formats only this space can write, by name (``hwnas export --format NAME``):
  each an :class:`ExportFormat` (why a subnet cannot be written, or None; the writer; a loader
  whose output the export checks against the supernet's). The lm space's ``hf`` is a
  ``LlamaForCausalLM`` folder.

* ``latency_phases``: latencies the space prices besides its op graph's (``latency_ms``), by the
  name of their objective (``prefill``, column ``prefill_ms``: the lm space's prefill of a prompt
  of ``space.prompt_length`` tokens). Each is a :class:`LatencyPhase`: its op graph of a subnet
  spec, priced on the job's device table like the op graph's, and the call a measured device
  times for it. A job that names such an objective (or budget) of a space without the phase is
  refused before it starts, naming the field.

A space object may also return a :class:`~hwnas.spaces.layout.BlockLayout` from
``block_layout()``; the search then prices whole populations from per-block tables instead of
arch by arch (the generic fallback from the op graph). A space whose op graph is not one whole
inference states what its latency times in a ``latency_unit`` attribute (a language model's decode
step: ``"per generated token"``); a job keeps it and its tables say it (default: per inference).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Callable

from pydantic import BaseModel, ValidationError

from hwnas.errors import ConfigError
from hwnas.ir import OpSig
from hwnas.utils.models import format_validation_error


@dataclass(frozen=True)
class ExportFormat:
    """A format only one space can write (see :attr:`SpaceEntry.export_formats`)."""

    ineligible_reason: Callable[[dict[str, Any]], str | None]  # (subnet spec) -> why not, or None
    write: Callable[[Any, Any], dict[str, Any]]     # (standalone model, target path) -> its manifest entry ("file")
    load: Callable[[Any], Callable[[Any], Any]]     # (target path) -> inputs -> logits, as the export check runs it
    target: str                                      # the file or folder name in the export directory
    tolerance: float = 1e-4                          # of the export check, times the logit scale


@dataclass(frozen=True)
class LatencyPhase:
    """A latency a space prices besides one run of its op graph (see :attr:`SpaceEntry.latency_phases`).

    Why a phase and not a second space: a language model is deployed as two calls, the prefill of
    the prompt and one decode step per generated token, and a budget may bound either; both are
    one subnet with one set of weights, so they share its encoding, supernet and export. The
    space's ``covering_archs()`` must hold every distinct op of the phase's graph too (what the
    profiler measures it on)."""

    op_graph: Callable[[dict[str, Any]], list[OpSig]]    # (subnet spec) -> the phase's ops in execution order
    timed_call: Callable[[Any, int], Callable[[], Any]]  # (standalone model, batch size) -> the call to time
    unit: Callable[[dict[str, Any]], str]                # (subnet spec) -> what one figure times, in words


@dataclass(frozen=True)
class SpaceEntry:
    name: str
    config_model: type[BaseModel]
    build_space: Callable[..., Any]        # (config, input_shape, num_classes) -> SearchSpace
    build_supernet: Callable[..., Any]     # (space) -> nn.Module with set_active / extract
    build_standalone: Callable[..., Any]   # (subnet spec) -> nn.Module
    op_graph: Callable[[dict[str, Any]], list[OpSig]]   # (subnet spec) -> ops in execution order
    block_graph: Callable[[dict[str, Any]], list[OpSig]] | None = None
    int8_ineligible_reason: Callable[[dict[str, Any]], str | None] | None = None
    load_pretrained: Callable[[Any, Any], dict[str, Any] | None] | None = None
    op_inputs: Callable[[dict[str, Any], list[OpSig]], list[tuple[int, ...]]] | None = None
    export_formats: dict[str, ExportFormat] | None = None
    latency_phases: dict[str, LatencyPhase] | None = None


SPACES: dict[str, SpaceEntry] = {}
BUILTIN_SPACES = ("hwnas.spaces.cnn", "hwnas.spaces.vit", "hwnas.spaces.lm")  # each registers itself when imported
ENTRY_POINT_GROUP = "hwnas.spaces"
_loaded = False


def register_space(entry: SpaceEntry) -> SpaceEntry:
    SPACES[entry.name] = entry
    return entry


def load_spaces() -> dict[str, SpaceEntry]:
    """Import the built-in spaces and the installed space plugins once; every space registered."""
    global _loaded
    if not _loaded:
        _loaded = True
        for module in BUILTIN_SPACES:
            importlib.import_module(module)
        for plugin in entry_points(group=ENTRY_POINT_GROUP):
            try:
                plugin.load()
            except Exception as exc:  # a broken plugin is named, never a traceback
                raise ConfigError(f"space plugin {plugin.name!r} ({plugin.value}, entry point group "
                                  f"{ENTRY_POINT_GROUP}) failed to load: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return SPACES


def space_entry(name: str) -> SpaceEntry:
    try:
        return load_spaces()[name]
    except KeyError:
        raise ConfigError(f"space.type: unknown space {name!r}; known: {sorted(SPACES)}") from None


def parse_space_config(raw: dict[str, Any] | BaseModel) -> BaseModel:
    """Validate a ``space:`` section with the config model of the space it names."""
    if isinstance(raw, BaseModel):
        raw = raw.model_dump()
    kind = raw.get("type", "cnn")
    if not isinstance(kind, str):
        raise ConfigError(f"space.type: must be the name of a space (got {kind!r})")
    entry = space_entry(kind)
    try:
        return entry.config_model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, prefix="space")) from None


def build_space(space_config: BaseModel, input_shape: tuple[int, int, int], num_classes: int):
    typed = parse_space_config(space_config)
    return space_entry(typed.type).build_space(typed, input_shape, num_classes)


def op_graph(spec: dict[str, Any]) -> list[OpSig]:
    """The ops of a subnet spec, in execution order, by the space that wrote the spec."""
    return space_entry(spec["type"]).op_graph(spec)


def block_graph(spec: dict[str, Any]) -> list[OpSig]:
    """The ops of a subnet spec at block granularity (see :attr:`SpaceEntry.block_graph`)."""
    builder = space_entry(spec["type"]).block_graph
    if builder is None:
        raise ValueError(f"block-granularity tables do not cover the {spec['type']!r} space")
    return builder(spec)


def load_pretrained(space_type: str, supernet: Any, space: Any) -> dict[str, Any] | None:
    """Start a fresh supernet from its space's pretrained model (see :attr:`SpaceEntry.load_pretrained`);
    None when the space has none or its config names none."""
    hook = space_entry(space_type).load_pretrained
    return None if hook is None else hook(supernet, space)


def op_inputs(spec: dict[str, Any], ops: list[OpSig]) -> list[tuple[int, ...]] | None:
    """What each op of ``ops = op_graph(spec)`` reads (see :attr:`SpaceEntry.op_inputs`); None: a chain."""
    hook = space_entry(spec["type"]).op_inputs
    return None if hook is None else hook(spec, ops)


def latency_phase(space_type: str, name: str) -> LatencyPhase:
    """The latency phase ``name`` of a space (see :attr:`SpaceEntry.latency_phases`); a space that
    states none of that name is a :class:`ConfigError` saying which states it."""
    phases = space_entry(space_type).latency_phases or {}
    if name not in phases:
        stated = f"it states {', '.join(sorted(phases))}" if phases else "it states none"
        raise ConfigError(f"the {space_type!r} space prices no {name} latency ({stated} in its "
                          "SpaceEntry.latency_phases)")
    return phases[name]


def int8_ineligible_reason(spec: dict[str, Any]) -> str | None:
    """None when the subnet of ``spec`` has a real int8 export, else why not."""
    check = space_entry(spec["type"]).int8_ineligible_reason
    if check is None:
        return f"the int8 export does not cover the {spec['type']} space"
    return check(spec)
