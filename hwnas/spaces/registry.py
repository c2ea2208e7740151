"""Registry of search spaces: name -> (config model, space class, supernet class).

A space registers itself with :func:`register_space`; configs name it in ``space.type``. The core
(trainer, cost model, search, export) only talks to the :class:`SpaceEntry` interface.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from pydantic import BaseModel, ValidationError

from hwnas.errors import ConfigError


@dataclass(frozen=True)
class SpaceEntry:
    name: str
    config_model: type[BaseModel]
    build_space: Callable[..., Any]        # (config, input_shape, num_classes) -> SearchSpace
    build_supernet: Callable[..., Any]     # (space) -> nn.Module with set_active / extract
    build_standalone: Callable[..., Any]   # (subnet_spec dict) -> nn.Module


SPACES: dict[str, SpaceEntry] = {}


def register_space(entry: SpaceEntry) -> SpaceEntry:
    SPACES[entry.name] = entry
    return entry


def space_entry(name: str) -> SpaceEntry:
    _load_builtin_spaces()
    try:
        return SPACES[name]
    except KeyError:
        raise ConfigError(f"space.type: unknown space {name!r}; known: {sorted(SPACES)}") from None


def parse_space_config(raw: dict[str, Any]) -> BaseModel:
    """Validate a ``space:`` section with the config model of the space it names."""
    from hwnas.config import format_validation_error

    kind = raw.get("type", "cnn")
    entry = space_entry(kind)
    try:
        return entry.config_model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, prefix="space")) from None


def build_space(space_config: BaseModel, input_shape: tuple[int, int, int], num_classes: int):
    return space_entry(space_config.type).build_space(space_config, input_shape, num_classes)


def _load_builtin_spaces() -> None:
    import hwnas.spaces.cnn  # noqa: F401  (registers "cnn")
    import hwnas.spaces.vit  # noqa: F401  (registers "vit")
