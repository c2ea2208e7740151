"""Costs and predictor features of whole populations of CNN encodings, with numpy.

Why: the search scores populations of tens of thousands of integer encodings. The per-arch path
(decode, subnet spec, op graph, a Python sum over ops in :meth:`CostModel.costs`, and the same
again in :meth:`ArchFeatures.transform`) manages about 1,200 uncached subnets a second; the
search needs tens of thousands. A CNN subnet decomposes: the stem, head and classifier are fixed, and a
block's ops depend only on its position (stage i, block j: input channels and size are fixed by
the stage layout, see :meth:`CNNSpace.covering_archs`) and its own choices. So every cost is a
fixed part plus, per active block position, an entry of a small table indexed by the block's
choice combination. :class:`VectorizedCosts` builds those tables once (one subnet spec per
combination) and then costs a matrix of encodings with a few gathers and sums: about 800,000
rows a second for costs and features of the default space (0.06 s to build), with latency and
energy bit-identical to the per-arch path, since terms are added in the op graph's order.

Assumptions it relies on, all true of the CNN space: table latency and energy are sums over cost
units (ops, or ``mbconv`` blocks for a block-granularity table), the energy model is additive
over ops, and there is no learned latency correction (it needs whole graphs: see
:meth:`VectorizedCosts.supported`; callers fall back to the per-arch path). ViT spaces are not
decomposable, since a block's token count depends on earlier blocks.
"""
from __future__ import annotations

import itertools

import numpy as np

from hwnas.errors import ArchError, LookupTableError
from hwnas.hwmodels.energy import PJ_PER_MJ
from hwnas.hwmodels.graph import cnn_block_ops, cnn_fixed_ops, count, mbconv_unit

# Block counts: integers (or integers over 8192), so their sums are exact in any order.
COUNTS = ("params", "macs", "bitops", "weight_kb", "mult_macs", "shift_macs", "adder_macs")
_COL = {m: k for k, m in enumerate(COUNTS)}


class VectorizedCosts:
    """``costs(X)`` and ``features(X)`` for an (n, dims) matrix of encodings of a CNN space, equal
    to ``cost_model.costs(space.decode(x))`` and ``ArchFeatures(space).transform(...)`` per row."""

    def __init__(self, space, cost_model):
        if not self.supported(space, cost_model):
            raise ValueError(f"space {getattr(space, 'name', '?')!r} with this cost model is not decomposable "
                             "by block; use CostModel.costs per arch")
        self.space, self.cost_model = space, cost_model
        names = list(space.names)
        cfg = space.config
        self.keys = list(space.block_choices())
        radices = [len(v) for v in space.block_choices().values()]
        self.n_combos = int(np.prod(radices))
        self._strides = np.array([int(np.prod(radices[k + 1:])) for k in range(len(radices))], dtype=np.int64)
        # Positions (stage, block): the stage's depth column and the block's choice columns.
        self._depth_cols = np.array([names.index(f"s{i}.depth") for i in range(len(cfg.stages))])
        self._depth_values = [np.array(space.dims[c].choices, dtype=np.int64) for c in self._depth_cols]
        positions = [(i, j) for i, stage in enumerate(cfg.stages) for j in range(max(stage.depth))]
        self._pos_stage = np.array([i for i, _ in positions])
        self._pos_block = np.array([j for _, j in positions])
        self._pos_cols = np.array([[names.index(f"s{i}.b{j}.{k}") for k in self.keys] for i, j in positions],
                                  dtype=np.int64).reshape(len(positions), len(self.keys))
        # Per dimension: the stage whose depth switches it off beyond block j (-1 for depth dims).
        self._dim_stage = np.full(len(names), 0)
        self._dim_block = np.full(len(names), -1)
        for p, (i, j) in enumerate(positions):
            self._dim_stage[self._pos_cols[p]], self._dim_block[self._pos_cols[p]] = i, j
        self._upper = space.upper_bounds
        self._build_tables(positions)
        self._features = None

    @staticmethod
    def supported(space, cost_model) -> bool:
        """CNN spaces whose latency is the table sum (no learned correction over whole graphs)."""
        from hwnas.spaces.cnn import CNNSpace

        is_cnn = isinstance(space, CNNSpace) or (getattr(space, "name", None) == "cnn" and hasattr(space, "config"))
        return is_cnn and getattr(cost_model, "latency", None) is None

    # -- tables ----------------------------------------------------------------------------------
    def _build_tables(self, positions) -> None:
        """Per (position, combination), plus a zero row per position for an inactive block: the
        block's counts, and the latency of each of its cost units and the energy of each of its
        energy terms (units, or ops for an energy model) in graph order. The per-arch path sums them
        one by one, so :meth:`_priced` adds them in the same order and its sums are bit-identical
        (a job compares predicted and table latency with ``==``)."""
        cfg, space, lut = self.space.config, self.space, self.cost_model.lut
        C, P = self.n_combos, len(positions)
        self.counts = np.zeros((P, C + 1, len(COUNTS)))
        blocks = []
        for c, combo in enumerate(itertools.product(*space.block_choices().values())):
            values = {}
            for i, stage in enumerate(cfg.stages):
                values[f"s{i}.depth"] = max(stage.depth)
                for j in range(max(stage.depth)):
                    values.update({f"s{i}.b{j}.{k}": v for k, v in zip(self.keys, combo)})
            spec = space.subnet_spec(values)
            for p, block in enumerate(spec["blocks"]):
                ops = cnn_block_ops(block)
                self.counts[p, c] = self._count(ops)
                blocks.append((p, c, [mbconv_unit(block)] if lut.granularity == "block" else ops, ops))
        fixed = cnn_fixed_ops(spec)  # stem, head, classifier: units at either granularity
        self.fixed_counts = self._count(fixed)
        self._pj = self._sums_picojoules(fixed)
        self._errors: dict[tuple[int, int], str] = {}  # (position, combo) -> why it cannot be priced
        width = max(len(ops) for *_, ops in blocks)
        self.latency_terms, self.energy_terms = np.zeros((P, C + 1, width)), np.zeros((P, C + 1, width))
        for p, c, units, ops in blocks:
            latency, energy, error = self._terms(units, ops)
            self.latency_terms[p, c, :len(latency)], self.energy_terms[p, c, :len(energy)] = latency, energy
            self._errors.update({(p, c): error} if error else {})
        self.fixed_terms, self._fixed_error = [], None  # (latency, energy) of stem, head, classifier
        for op in fixed:
            latency, energy, error = self._terms([op], [op])
            self.fixed_terms.append((latency[0], energy[0]))
            self._fixed_error = self._fixed_error or error

    @staticmethod
    def _count(ops) -> np.ndarray:
        counts = count(ops)
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
        (lat0, en0), (lat1, en1), (lat2, en2) = self.fixed_terms
        latency, energy = np.full(len(combo), lat0), np.full(len(combo), en0)  # the stem
        for p in range(combo.shape[1]):
            lat, en = self.latency_terms[p][combo[:, p]], self.energy_terms[p][combo[:, p]]
            for k in range(lat.shape[1]):
                latency += lat[:, k]
                energy += en[:, k]
        latency += lat1  # the head conv, then the classifier
        latency += lat2
        energy += en1
        energy += en2
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
        return out

    def features(self, X) -> np.ndarray:
        """The rows of ``ArchFeatures(space).transform`` of the decoded encodings (no table needed)."""
        X = self._check(X)
        if self._features is None:
            from hwnas.predictors.accuracy import ArchFeatures

            # Per dim: one row per choice plus a last row (zeros) for an inactive dimension.
            self._features = [np.array([ArchFeatures._encode(d, v) for v in (*d.choices, None)], dtype=float)
                              for d in self.space.dims]
        on = self._depths(X)[:, self._dim_stage] > self._dim_block
        idx = np.where(on, X, self._upper + 1)
        t = self._totals(self._combos(X))
        parts = [lookup[idx[:, d]] for d, lookup in enumerate(self._features)]
        parts.append(np.log1p(t[:, [_COL["macs"], _COL["params"], _COL["bitops"]]]))
        return np.concatenate(parts, axis=1)
