"""The dataset registry and what every loader shares: :class:`DataSplits`, loading by name,
deterministic splitting and batching.

Every loader splits deterministically from ``split_seed``, so two runs with the same settings see
byte-identical tensors, and nothing is fitted on validation or test data. Datasets are held in
memory as ``TensorDataset``s: the supported sets are small, and slicing tensors is much faster than
decoding samples one by one inside a search loop. A dataset states its task's quality metric
(``accuracy`` for classification, ``perplexity`` for language modelling, see :mod:`hwnas.metrics`)
when it registers, so a config can be checked against it before anything is loaded.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from hwnas.errors import DataError
from hwnas.metrics import QUALITY_METRICS

DATASETS: dict[str, Callable[..., "DataSplits"]] = {}


@dataclass(frozen=True)
class DatasetInfo:
    """What a registered dataset states besides its loader: its task's quality metric and the
    data options (``data.KEY``) it takes beyond the ones every loader takes."""

    quality: str = "accuracy"
    options: tuple[str, ...] = ()


DATASET_INFO: dict[str, DatasetInfo] = {}


def register_dataset(name: str, quality: str = "accuracy", options: tuple[str, ...] = ()
                     ) -> Callable[[Callable[..., "DataSplits"]], Callable[..., "DataSplits"]]:
    """Add a loader (called with the keyword arguments of :func:`load_data` but ``dataset``, plus
    the ``options`` it names) to :data:`DATASETS`, so a new dataset never means editing a dispatch
    chain. ``quality`` names its task's metric (a key of :data:`hwnas.metrics.QUALITY_METRICS`)."""
    if quality not in QUALITY_METRICS:
        raise ValueError(f"dataset {name!r}: unknown quality metric {quality!r}; known: {list(QUALITY_METRICS)}")

    def decorator(loader: Callable[..., DataSplits]) -> Callable[..., DataSplits]:
        DATASETS[name] = loader
        DATASET_INFO[name] = DatasetInfo(quality, tuple(options))
        return loader
    return decorator


def dataset_info(name: str) -> DatasetInfo:
    return DATASET_INFO.get(name, DatasetInfo())


@dataclass(frozen=True)
class DataSplits:
    """The three splits plus what a model and a report need to know about them. ``input_shape`` is
    one sample's (C, H, W for images, (T,) token ids for text); ``num_classes`` the number of
    output classes (the vocabulary for text); ``quality`` the task's metric."""

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    input_shape: tuple[int, ...]
    description: dict
    quality: str = "accuracy"


def load_data(dataset: str = "digits", root: str | Path | None = None, image_size: int | None = None,
              val_fraction: float = 0.2, test_fraction: float = 0.2, split_seed: int = 0,
              **options: Any) -> DataSplits:
    """Load ``dataset`` by its registry name; argument checks live here so every loader can trust
    them. ``options`` are dataset-specific keys (``context_length``, ``tokenizer``, ...): one the
    dataset does not take is an error when set, and left out when None."""
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; known datasets: {', '.join(sorted(DATASETS))}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise DataError(f"image_size must be a positive integer, got {image_size!r}")
    for field, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise DataError(f"{field} must be in [0, 1), got {value!r}")
    if val_fraction + test_fraction >= 1.0:
        raise DataError(f"val_fraction + test_fraction must be < 1, got {val_fraction + test_fraction!r}")
    takes = dataset_info(dataset).options
    for key, value in options.items():
        if value is not None and key not in takes:
            raise DataError(f"data.{key}: dataset {dataset!r} takes no {key}"
                            + (f" (it takes {', '.join(takes)})" if takes else ""))
    extra = {k: v for k, v in options.items() if k in takes and v is not None}
    return DATASETS[dataset](root=root, image_size=image_size, val_fraction=val_fraction,
                             test_fraction=test_fraction, split_seed=split_seed, **extra)


def _as_input(x: torch.Tensor) -> torch.Tensor:
    """Token ids (int64) stay integers; everything else (pixels) is float32."""
    return x if x.dtype == torch.int64 else x.to(torch.float32)


def iterate_batches(dataset: Dataset, batch_size: int, *, shuffle: bool = False,
                    generator: torch.Generator | None = None, drop_last: bool = False,
                    limit: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y int64)`` batches, x float32 (or int64 token ids, kept as they are); the order
    is a pure function of ``generator``.

    TensorDatasets are sliced directly (no per-sample indexing); anything else goes through a
    single-process DataLoader. ``limit`` caps the samples yielded in total (a cheap proxy epoch).
    """
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size!r}")
    if limit is not None and limit < 0:
        raise DataError(f"limit must be >= 0, got {limit!r}")
    n = len(dataset)  # type: ignore[arg-type]
    total = n if limit is None else min(n, limit)
    order = torch.randperm(n, generator=generator)[:total] if shuffle else None
    if drop_last:
        total -= total % batch_size
    if isinstance(dataset, TensorDataset):
        x_all, y_all = dataset.tensors[0], dataset.tensors[1]
        for start in range(0, total, batch_size):
            end = min(start + batch_size, total)
            idx = order[start:end] if order is not None else slice(start, end)
            yield _as_input(x_all[idx]), y_all[idx].to(torch.int64)
        return
    indices = order[:total].tolist() if order is not None else list(range(total))
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size, shuffle=False, num_workers=0)
    for batch in loader:
        yield _as_input(torch.as_tensor(batch[0])), torch.as_tensor(batch[1]).to(torch.int64)


def carve(idx: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``idx`` into (kept, taken); stratified when every class allows it, plain otherwise."""

    if fraction <= 0.0:
        return idx, idx[:0]
    try:
        kept, taken = train_test_split(idx, test_size=fraction, random_state=seed, stratify=labels[idx])
    except ValueError:  # a class too small to appear in both parts
        try:
            kept, taken = train_test_split(idx, test_size=fraction, random_state=seed)
        except ValueError as exc:
            raise DataError(f"cannot split {len(idx)} samples with fraction {fraction}: {exc}") from None
    return np.sort(kept), np.sort(taken)


def three_way(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Carve test off everything, then val off the rest, so the fractions refer to the whole set."""
    rest, test = carve(np.arange(len(labels)), labels, test_fraction, seed)
    train, val = carve(rest, labels, val_fraction / (1.0 - test_fraction), seed)
    return {"train": train, "val": val, "test": test}


def take(x: torch.Tensor, y: np.ndarray, parts: dict[str, np.ndarray]) -> dict[str, tuple[torch.Tensor, np.ndarray]]:
    return {k: (x[torch.from_numpy(i)], y[i]) for k, i in parts.items()}


def carve_val(x: torch.Tensor, y: np.ndarray, fraction: float, seed: int) -> dict[str, tuple[torch.Tensor, np.ndarray]]:
    """Split a train set that came without a validation part into train and val."""
    train, val = carve(np.arange(len(y)), y, fraction, seed)
    return take(x, y, {"train": train, "val": val})



def load_configured(section: Any) -> DataSplits:
    """The data a config's ``data:`` section names (a :class:`hwnas.config.DataConfig`; read by
    attribute, since the data layer does not import the config)."""
    c = section
    data = load_data(c.dataset, c.root, c.image_size, c.val_fraction, c.test_fraction, c.split_seed,
                     context_length=c.context_length, tokenizer=c.tokenizer, tokenizer_gguf=c.tokenizer_gguf)
    cap = getattr(c, "max_eval_samples", None)
    return data if cap is None else cap_evaluation(data, cap)


def cap_evaluation(data: DataSplits, n: int) -> DataSplits:
    """``data`` with only the first ``n`` samples of its validation and test splits (a text
    dataset's first ``n`` windows): every evaluation then reads that much, which makes a large
    model's job affordable at the price of a noisier figure. The description records both sizes."""
    if n < 1:
        raise DataError(f"data.max_eval_samples must be >= 1, got {n!r}")
    val, test = (_first(d, n) for d in (data.val, data.test))
    sizes = dict(data.description.get("sizes", {}))
    description = {**data.description, "sizes": {**sizes, "val": len(val), "test": len(test)},
                   "max_eval_samples": n, "uncapped_sizes": sizes}
    return DataSplits(data.train, val, test, data.num_classes, data.input_shape, description, data.quality)


def _first(dataset: Dataset, n: int) -> Dataset:
    if isinstance(dataset, TensorDataset):  # kept a TensorDataset: batches stay plain slices
        return TensorDataset(*(t[:n] for t in dataset.tensors))
    return Subset(dataset, range(min(n, len(dataset))))  # type: ignore[arg-type]
