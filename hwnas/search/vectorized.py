"""Costs and predictor features of whole populations of encodings, with numpy.

Why: the search scores populations of tens of thousands of integer encodings. The per-arch path
(decode, subnet spec, op graph, a Python sum over ops in :meth:`CostModel.costs`, and the same
again in :meth:`ArchFeatures.transform`) manages about 1,200 uncached subnets a second; the
search needs tens of thousands. A space whose subnets decompose into a fixed part plus one term
per block position describes itself with a :class:`~hwnas.spaces.layout.BlockLayout` (the CNN
space does). Then every cost is a fixed part plus, per active block position, an entry of a small
table indexed by the block's choice combination. :class:`VectorizedCosts` builds those tables
once (one subnet spec per combination) and then costs a matrix of encodings with a few gathers
and sums: about 800,000 rows a second for costs and features of the default space (0.06 s to
build), with latency and energy bit-identical to the per-arch path, since terms are added in the
op graph's order.

Memory is a sum and a maximum: weight bits add up by block like the counts, and the peak
activation memory is the largest of the fixed part's peak and each active block's, read from the
op graph of one subnet per combination (:mod:`hwnas.footprint`; a block's ops and the tensors alive
while they run depend on its position and choices only, checked against the graph's length).

Assumptions it relies on: table latency and energy are sums over cost units (ops, or blocks for
a block-granularity table), the energy model is additive over ops, and there is no learned
latency correction (it needs whole graphs: see :meth:`VectorizedCosts.supported`; callers fall
back to the per-arch path, as they do for a space without a layout, such as the ViT space, whose
block's token count depends on earlier blocks).
"""
from __future__ import annotations

import numpy as np

from hwnas.errors import ArchError, LookupTableError
from hwnas.footprint import activation_profile, memory_kb, weight_bits
from hwnas.hwmodels.energy import PJ_PER_MJ
from hwnas.ir import count
from hwnas.predictors.accuracy import ArchFeatures
from hwnas.spaces.registry import op_graph, op_inputs

# Block counts: integers (or integers over 8192), so their sums are exact in any order.
COUNTS = ("params", "macs", "bitops", "weight_kb", "mult_macs", "shift_macs", "adder_macs", "weight_bits")
_COL = {m: k for k, m in enumerate(COUNTS)}


class VectorizedCosts:
    """``costs(X)`` and ``features(X)`` for an (n, dims) matrix of encodings of a space with a
    block layout, equal to ``cost_model.costs(space.decode(x))`` and
    ``ArchFeatures(space).transform(...)`` per row."""

    def __init__(self, space, cost_model):
        if not self.supported(space, cost_model):
            raise ValueError(f"space {getattr(space, 'name', '?')!r} with this cost model is not decomposable "
                             "by block; use CostModel.costs per arch")
        self.space, self.cost_model = space, cost_model
        layout = self.layout = space.block_layout()
        radices = layout.radices
        self.keys = list(layout.choice_keys)
        self.n_combos = int(np.prod(radices))
        self._strides = np.array([int(np.prod(radices[k + 1:])) for k in range(len(radices))], dtype=np.int64)
        # Positions: their group's depth column and their own choice columns.
        self._depth_cols = np.asarray(layout.depth_columns)
        self._depth_values = list(layout.depth_values)
        self._pos_stage = np.asarray(layout.position_group)
        self._pos_block = np.asarray(layout.position_index)
        self._pos_cols = np.asarray(layout.position_columns, dtype=np.int64)
        # Per dimension: the group whose depth switches it off beyond block j (-1 for depth dims).
        self._dim_stage = np.full(len(space.names), 0)
        self._dim_block = np.full(len(space.names), -1)
        for p in range(len(self._pos_cols)):
            self._dim_stage[self._pos_cols[p]], self._dim_block[self._pos_cols[p]] = self._pos_stage[p], self._pos_block[p]
        self._upper = space.upper_bounds
        self._build_tables(len(self._pos_cols))
        self._features = None

    @staticmethod
    def supported(space, cost_model) -> bool:
        """Spaces with a block layout whose latency is the table sum (no learned correction over
        whole graphs) and no latency phase (whose ops are not the layout's blocks)."""
        layout_of = getattr(space, "block_layout", None)
        return (getattr(cost_model, "latency", None) is None and not getattr(cost_model, "phases", None)
                and layout_of is not None
                and layout_of() is not None)

    # -- tables ----------------------------------------------------------------------------------
    def _build_tables(self, P: int) -> None:
        """Per (position, combination), plus a zero row per position for an inactive block: the
        block's counts, and the latency of each of its cost units and the energy of each of its
        energy terms (units, or ops for an energy model) in graph order. The per-arch path sums them
        one by one, so :meth:`_priced` adds them in the same order and its sums are bit-identical
        (a job compares predicted and table latency with ``==``)."""
        layout, lut = self.layout, self.cost_model.lut
        C = self.n_combos
        self.counts = np.zeros((P, C + 1, len(COUNTS)))
        blocks = []
        for c, combo in enumerate(layout.combinations()):
            for p, (ops, unit) in enumerate(layout.position_ops(combo)):
                self.counts[p, c] = self._count(ops)
                if lut.granularity == "block" and unit is None:
                    raise ValueError(f"space {self.space.name!r} has no block-granularity units")
                blocks.append((p, c, [unit] if lut.granularity == "block" else ops, ops))
        fixed = [*layout.leading, *layout.trailing]  # units at either granularity
        self.fixed_counts = self._count(fixed)
        self._build_peaks(P, blocks)
        self._pj = self._sums_picojoules(fixed)
        self._errors: dict[tuple[int, int], str] = {}  # (position, combo) -> why it cannot be priced
        width = max(len(ops) for *_, ops in blocks)
        self.latency_terms, self.energy_terms = np.zeros((P, C + 1, width)), np.zeros((P, C + 1, width))
        for p, c, units, ops in blocks:
            latency, energy, error = self._terms(units, ops)
            self.latency_terms[p, c, :len(latency)], self.energy_terms[p, c, :len(energy)] = latency, energy
            self._errors.update({(p, c): error} if error else {})
        self.fixed_terms, self._fixed_error = [], None  # (latency, energy) of each fixed op, graph order
        covered = self._fixed_part_rows(lut, len(layout.leading), len(layout.trailing))
        for k, op in enumerate(fixed):
            if k in covered:  # a table's head / tail row: one term for its span, 0 for the rest
                row, first = covered[k]
                energy = (row["energy_mj"] if first else 0.0) if lut.has_energy else \
                    self._terms([op], [op])[1][0]
                self.fixed_terms.append((row["latency_ms"] if first else 0.0, energy))
                continue
            latency, energy, error = self._terms([op], [op])
            self.fixed_terms.append((latency[0], energy[0]))
            self._fixed_error = self._fixed_error or error

    def _build_peaks(self, P: int, blocks: list[tuple]) -> None:
        """Per (position, combination) the peak activation elements while the block runs (0 for an
        inactive one), and the fixed part's, from the op graph of the deepest subnet whose every
        block takes the combination: the per-arch path's figures for the same ops."""
        layout, space = self.layout, self.space
        self.peaks = np.zeros((P, self.n_combos + 1), dtype=np.int64)
        x = np.zeros(len(space.names), dtype=np.int64)
        for col, values in zip(self._depth_cols, self._depth_values):
            x[col] = int(np.argmax(values))
        lead, lengths = len(layout.leading), np.zeros((self.n_combos, P), dtype=np.int64)
        for p, c, _, ops in blocks:
            lengths[c, p] = len(ops)
        for c, choice in enumerate(np.ndindex(*layout.radices)):
            x[self._pos_cols] = choice
            spec = space.subnet_spec(space.decode(x))
            ops = op_graph(spec)
            if len(ops) != lead + lengths[c].sum() + len(layout.trailing):
                raise ValueError(f"space {space.name!r}: its op graph does not split into the block layout's parts")
            live = activation_profile(ops, op_inputs(spec, ops))
            bounds = np.cumsum([lead, *lengths[c]])
            for p in range(P):
                self.peaks[p, c] = max(live[bounds[p]:bounds[p + 1]])
            if c == 0:
                self.fixed_peak = max([*live[:lead], *live[bounds[-1]:]])

    @staticmethod
    def _fixed_part_rows(lut, leading: int, trailing: int) -> dict[int, tuple[dict, bool]]:
        """Fixed op index -> (the table's head or tail row pricing it, whether it is the first of
        its span): such rows price the ops before / after the blocks as one figure, as
        :meth:`~hwnas.hwmodels.lut.LookupTable.split_fixed` does on the per-arch path."""
        parts, out = lut.fixed_parts(), {}
        for name, span in (("head", range(leading)), ("tail", range(leading, leading + trailing))):
            if name in parts:
                out.update({k: (parts[name], k == span.start) for k in span})
        return out

    @staticmethod
    def _count(ops) -> np.ndarray:
        counts = {**count(ops), "weight_bits": weight_bits(ops)}
        return np.array([counts[m] for m in COUNTS], dtype=float)

    def _sums_picojoules(self, probe) -> bool:
        """Whether the energy model sums ``op_pj`` over ops, then scales to mJ (Horowitz45nm): then
        energy is summed in pJ op by op as it does; otherwise per op in mJ (equal to ~1e-15)."""
        energy = self.cost_model.energy
        return (not self.cost_model.lut.has_energy and hasattr(energy, "op_pj")
                and energy.energy_mj(probe) == sum(energy.op_pj(o) for o in probe) / PJ_PER_MJ)

    def _terms(self, units, ops) -> tuple[np.ndarray, np.ndarray, str | None]:
        """Latency per cost unit, energy per unit (table energy) or per op (an energy model)."""
        lut, energy = self.cost_model.lut, self.cost_model.energy
        try:
            latency = [lut.total_latency_ms([u], getattr(self.space, "interpolated_field", None)) for u in units]
            if lut.has_energy:
                joules = [lut.total_energy_mj([u]) for u in units]
            else:
                joules = [energy.op_pj(o) if self._pj else energy.energy_mj([o]) for o in ops]
        except LookupTableError as exc:  # raised when a subnet needs it, as the per-arch path does
            return np.full(len(units), np.nan), np.full(len(units), np.nan), str(exc)
        return np.array(latency, dtype=float), np.array(joules, dtype=float), None

    # -- encodings -------------------------------------------------------------------------------
    def _check(self, X) -> np.ndarray:
        X = np.rint(np.asarray(X, dtype=float)).astype(np.int64)
        if X.ndim != 2 or X.shape[1] != len(self._upper):
            raise ArchError(f"encodings must be an (n, {len(self._upper)}) matrix, got shape {X.shape}")
        bad = (X < 0) | (X > self._upper)
        if bad.any():
            r, d = np.argwhere(bad)[0]
            raise ArchError(f"index {X[r, d]} out of range for {self.space.dims[d].name} "
                            f"({self._upper[d] + 1} choices)")
        return X

    def _depths(self, X: np.ndarray) -> np.ndarray:
        """(n, stages) depth values of each row."""
        return np.stack([v[X[:, c]] for v, c in zip(self._depth_values, self._depth_cols)], axis=1)

    def active(self, X) -> np.ndarray:
        """(n, dims) bool: whether each dimension changes the subnet given the row's depths."""
        X = self._check(X)
        return self._depths(X)[:, self._dim_stage] > self._dim_block

    def canonical(self, X) -> np.ndarray:
        """The canonical encoding of each row (inactive dims at index 0), as ``encode(decode(x))``."""
        X = self._check(X)
        return np.where(self._depths(X)[:, self._dim_stage] > self._dim_block, X, 0)

    def _combos(self, X: np.ndarray) -> np.ndarray:
        """(n, positions) choice combination of each block, ``n_combos`` for an inactive one."""
        combo = X[:, self._pos_cols] @ self._strides
        on = self._depths(X)[:, self._pos_stage] > self._pos_block
        return np.where(on, combo, self.n_combos)

    def _totals(self, combo: np.ndarray) -> np.ndarray:
        """(n, len(COUNTS)) counts of the fixed part and every active block."""
        out = np.broadcast_to(self.fixed_counts, (len(combo), len(COUNTS))).copy()
        for p in range(combo.shape[1]):
            out += self.counts[p][combo[:, p]]
        return out

    def _priced(self, combo: np.ndarray) -> np.ndarray:
        """(n, 2) latency and energy, summed term by term in the op graph's order."""
        leading = len(self.layout.leading)
        latency, energy = np.zeros(len(combo)), np.zeros(len(combo))
        for lat, en in self.fixed_terms[:leading]:
            latency += lat
            energy += en
        for p in range(combo.shape[1]):
            lat, en = self.latency_terms[p][combo[:, p]], self.energy_terms[p][combo[:, p]]
            for k in range(lat.shape[1]):
                latency += lat[:, k]
                energy += en[:, k]
        for lat, en in self.fixed_terms[leading:]:
            latency += lat
            energy += en
        if np.isnan(latency).any():
            self._raise_missing(combo)
        return np.stack([latency, energy / PJ_PER_MJ if self._pj else energy], axis=1)

    def _raise_missing(self, combo: np.ndarray) -> None:
        if self._fixed_error:
            raise LookupTableError(self._fixed_error)
        for p in range(combo.shape[1]):
            for c in np.unique(combo[:, p]):
                if (p, int(c)) in self._errors:
                    raise LookupTableError(self._errors[(p, int(c))])

    # -- public ----------------------------------------------------------------------------------
    def costs(self, X) -> dict[str, np.ndarray]:
        """Per-row costs with the keys of :meth:`CostModel.costs`."""
        combo = self._combos(self._check(X))
        t, priced = self._totals(combo), self._priced(combo)
        out = {"latency_ms": priced[:, 0], "latency_table_ms": priced[:, 0].copy(), "energy_mj": priced[:, 1]}
        for name in ("params", "flops", "macs", "bitops", "weight_kb", "mult_macs", "shift_macs", "adder_macs"):
            out[name] = 2.0 * t[:, _COL["macs"]] if name == "flops" else t[:, _COL[name]]
        peak = np.full(len(combo), self.fixed_peak, dtype=np.int64)
        for p in range(combo.shape[1]):
            peak = np.maximum(peak, self.peaks[p][combo[:, p]])
        out.update(memory_kb(t[:, _COL["weight_bits"]], peak, self.cost_model.batch_size))
        return out

    def features(self, X) -> np.ndarray:
        """The rows of ``ArchFeatures(space).transform`` of the decoded encodings (no table needed)."""
        X = self._check(X)
        if self._features is None:
            # Per dim: one row per choice plus a last row (zeros) for an inactive dimension.
            self._features = [np.array([ArchFeatures._encode(d, v) for v in (*d.choices, None)], dtype=float)
                              for d in self.space.dims]
        on = self._depths(X)[:, self._dim_stage] > self._dim_block
        idx = np.where(on, X, self._upper + 1)
        t = self._totals(self._combos(X))
        parts = [lookup[idx[:, d]] for d, lookup in enumerate(self._features)]
        parts.append(np.log1p(t[:, [_COL["macs"], _COL["params"], _COL["bitops"]]]))
        return np.concatenate(parts, axis=1)
