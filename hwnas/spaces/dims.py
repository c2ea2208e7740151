"""Search dimensions, architectures and their integer encoding.

A search space is an ordered tuple of :class:`Dim` (a name and its finite choices). An
:class:`Arch` is one value per dimension: immutable, hashable and JSON-able, so it can be a dict
key, a database field and a file entry at once. The optimizer works on integer vectors (the index
of each value in its dimension's choices); :meth:`SearchSpace.decode` turns a vector back into a
*canonical* Arch, in which dimensions that have no effect (the blocks beyond a stage's depth) hold
their first choice, so two encodings of the same subnet decode to the same Arch.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from hwnas.errors import ArchError
from hwnas.utils.io import distinct_keys

Value = int | float | str


@dataclass(frozen=True)
class Dim:
    """One searchable choice: a name and its ordered, distinct choices."""

    name: str
    choices: tuple[Value, ...]

    def __post_init__(self) -> None:
        if not self.choices:
            raise ArchError(f"dimension {self.name!r} has no choices")
        if len(set(self.choices)) != len(self.choices):
            raise ArchError(f"dimension {self.name!r} has repeated choices {list(self.choices)}")

    def index(self, value: Value) -> int:
        try:
            if isinstance(value, bool) and not any(isinstance(c, bool) for c in self.choices):
                raise ValueError  # true == 1 to Python, but not a depth or a bit-width
            return self.choices.index(value)
        except ValueError:
            raise ArchError(
                f"{self.name}={value!r} is not one of its choices {list(self.choices)}"
            ) from None


@dataclass(frozen=True)
class Arch(Mapping[str, Value]):
    """One value per dimension, in the space's order. Compare, hash and serialize freely."""

    items_: tuple[tuple[str, Value], ...]

    @classmethod
    def from_dict(cls, values: Mapping[str, Value]) -> "Arch":
        return cls(tuple((str(k), v) for k, v in values.items()))

    def __getitem__(self, key: str) -> Value:
        for name, value in self.items_:
            if name == key:
                return value
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self.items_)

    def __len__(self) -> int:
        return len(self.items_)

    def to_dict(self) -> dict[str, Value]:
        return dict(self.items_)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "Arch":
        try:
            data = json.loads(text, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as exc:
            raise ArchError(f"architecture is not valid JSON: {exc}") from None
        except RecursionError:
            raise ArchError("architecture is not valid JSON: nested too deeply") from None
        if not isinstance(data, dict):
            raise ArchError("architecture JSON must be an object of dimension: value")
        return cls.from_dict(data)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose names are distinct: a dimension given twice is ambiguous, not the last one."""
    return distinct_keys(pairs, lambda key: ArchError(f"architecture JSON gives dimension {key!r} twice"))


class SearchSpace:
    """An ordered set of dimensions with validation, encoding and canonical form.

    Subclasses say which dimensions are inactive for a given choice of the others by overriding
    :meth:`inactive_dims`; everything else (encode, decode, sampling) is shared.
    """

    name = "space"

    def __init__(self, dims: Iterable[Dim]):
        self.dims: tuple[Dim, ...] = tuple(dims)
        self._by_name = {d.name: d for d in self.dims}
        if len(self._by_name) != len(self.dims):
            raise ArchError("a search space has two dimensions with the same name")

    # -- structure -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.dims)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.dims)

    @property
    def upper_bounds(self) -> np.ndarray:
        """Largest valid index of each dimension (the optimizer's integer bounds)."""
        return np.array([len(d.choices) - 1 for d in self.dims], dtype=int)

    def dim(self, name: str) -> Dim:
        try:
            return self._by_name[name]
        except KeyError:
            raise ArchError(f"unknown dimension {name!r} for space {self.name!r}") from None

    def inactive_dims(self, values: Mapping[str, Value]) -> set[str]:
        """Names of dimensions that do not change the subnet given the other values."""
        return set()

    def size(self) -> int:
        """Number of encodings (an upper bound on distinct subnets)."""
        return int(np.prod([len(d.choices) for d in self.dims], dtype=object))

    # -- validation and canonical form -----------------------------------------------------
    def validate(self, values: Mapping[str, Value]) -> Arch:
        """Return the canonical Arch of ``values``; unknown or missing dims and bad values raise.
        Each value becomes the choice it equals (``3.0`` the choice ``3``), so the Arch's JSON is
        the same however the value was spelled."""
        if not isinstance(values, Mapping):
            raise ArchError(f"an architecture is a mapping of dimension: value, not {type(values).__name__}")
        unknown = [k for k in values if k not in self._by_name]
        if unknown:
            raise ArchError(f"unknown dimension {unknown[0]!r} for space {self.name!r}")
        missing = [d.name for d in self.dims if d.name not in values]
        if missing:
            raise ArchError(f"architecture lacks dimension {missing[0]!r}")
        return self.canonical({d.name: d.choices[d.index(values[d.name])] for d in self.dims})

    def canonical(self, values: Mapping[str, Value]) -> Arch:
        inactive = self.inactive_dims(values)
        return Arch(
            tuple((d.name, d.choices[0] if d.name in inactive else values[d.name]) for d in self.dims)
        )

    # -- integer encoding ------------------------------------------------------------------
    def encode(self, arch: Mapping[str, Value]) -> np.ndarray:
        return np.array([d.index(arch[d.name]) for d in self.dims], dtype=int)

    def decode(self, x: Iterable[int]) -> Arch:
        try:
            idx = [int(round(float(i))) for i in x]
        except (TypeError, ValueError, OverflowError):  # a string, NaN or infinity among the indices
            raise ArchError(f"encoding must be a list of choice indices, got {_short(x)}") from None
        if len(idx) != len(self.dims):
            raise ArchError(f"encoding has {len(idx)} entries, space {self.name!r} has {len(self.dims)}")
        values = {}
        for d, i in zip(self.dims, idx):
            if not 0 <= i < len(d.choices):
                raise ArchError(f"index {i} out of range for {d.name} ({len(d.choices)} choices)")
            values[d.name] = d.choices[i]
        return self.canonical(values)

    # -- sampling --------------------------------------------------------------------------
    def sample(self, rng: np.random.Generator) -> Arch:
        return self.decode([rng.integers(len(d.choices)) for d in self.dims])

    def largest(self) -> Arch:
        """Numeric dims at their largest value, others at their last listed choice."""
        return self.canonical({d.name: _extreme(d.choices, max, -1) for d in self.dims})

    def smallest(self) -> Arch:
        """Numeric dims at their smallest value, others at their first listed choice."""
        return self.canonical({d.name: _extreme(d.choices, min, 0) for d in self.dims})

    def block_layout(self):
        """A :class:`~hwnas.spaces.layout.BlockLayout` when every block's ops depend only on its
        position and its own choices (the search then prices populations from per-block tables);
        None, the default, prices every subnet from its op graph."""
        return None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "dims": {d.name: list(d.choices) for d in self.dims}}


def _extreme(choices: tuple[Value, ...], pick, position: int) -> Value:
    if all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in choices):
        return pick(choices)
    return choices[position]


def _short(value: Any, limit: int = 80) -> str:
    text = repr(list(value) if isinstance(value, (tuple, np.ndarray)) else value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
