"""How a space's subnets decompose into a fixed part plus one term per block position.

Why: the search scores populations of tens of thousands of encodings, and the per-arch path
(decode, subnet spec, op graph, a Python sum over ops) manages about 1,200 subnets a second. A
space whose every block's ops depend only on the block's position and its own choices (not on
earlier blocks) can describe itself with a :class:`BlockLayout`; the search then prices whole
populations from small per-position tables (:class:`hwnas.search.vectorized.VectorizedCosts`).
A space that does not decompose (a ViT's token count depends on earlier blocks) returns None
from ``block_layout()`` and is priced arch by arch.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from hwnas.ir import OpSig


@dataclass(frozen=True)
class BlockLayout:
    """Positions are grouped (a CNN's stages); a group's depth dimension switches its positions
    beyond ``depth`` off. Every position has the same per-block choice dimensions.

    ``position_ops(combo)`` gives, for one combination of per-block choices (a tuple in the order
    of ``choice_keys``) set at every position, each position's ops in graph order and its
    block-granularity cost unit (None where the space has no such unit). ``leading`` and
    ``trailing`` are the fixed ops before and after the blocks, in graph order.
    """

    choice_keys: tuple[str, ...]
    choices: tuple[tuple, ...]              # per choice key, its choices (encoding order)
    depth_columns: np.ndarray               # per group: the encoding column of its depth
    depth_values: tuple[np.ndarray, ...]    # per group: the depth of each of its choices
    position_group: np.ndarray              # per position: its group
    position_index: np.ndarray              # per position: active while the group's depth > this
    position_columns: np.ndarray            # (positions, choice keys): encoding columns
    leading: tuple[OpSig, ...]
    trailing: tuple[OpSig, ...]
    position_ops: Callable[[tuple], Sequence[tuple[list[OpSig], OpSig | None]]]

    @property
    def radices(self) -> list[int]:
        return [len(c) for c in self.choices]

    def combinations(self):
        """Every combination of per-block choices, in the order a combination index counts them
        (the last key fastest, as :func:`itertools.product` gives them)."""
        return itertools.product(*self.choices)
