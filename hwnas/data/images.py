"""Image datasets: sklearn's digits, CIFAR-10 and ImageFolder trees, standardized per channel.

Every loader normalizes with statistics of the TRAIN split only, so a candidate's accuracy never
depends on peeking at validation or test data.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.datasets import load_digits
from torch.utils.data import TensorDataset

from hwnas.data.core import DataSplits, carve_val, register_dataset, take, three_way
from hwnas.errors import DataError
from hwnas.utils.safe_pickle import NumpyOnlyUnpickler, RefusedGlobal


def _resize(x: torch.Tensor, size: int | None) -> torch.Tensor:
    """Bilinear resize of an NCHW batch; a no-op at the native size so stored pixels stay exact."""
    if size is None or tuple(x.shape[-2:]) == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def _finish(name: str, root: str | Path | None, splits: dict[str, tuple[torch.Tensor, np.ndarray]],
            num_classes: int, image_size: int | None, split_seed: int, **extra: Any) -> DataSplits:
    """Resize, normalize with train-split channel statistics, and wrap the splits as TensorDatasets."""
    xs = {k: _resize(x, image_size) for k, (x, _) in splits.items()}
    if xs["train"].shape[0] == 0:
        raise DataError(f"{name}: the train split is empty")
    var, mean = torch.var_mean(xs["train"], dim=(0, 2, 3), correction=0)
    std = var.sqrt().clamp_min(1e-8)  # a constant channel must not divide by zero
    data = {k: TensorDataset(x.sub_(mean[:, None, None]).div_(std[:, None, None]).contiguous(),
                             torch.as_tensor(np.asarray(splits[k][1], dtype=np.int64)))
            for k, x in xs.items()}
    shape = tuple(int(s) for s in xs["train"].shape[1:])
    resized = "" if image_size is None or tuple(splits["train"][0].shape[-2:]) == (image_size, image_size) else \
        f", then resized to {image_size}x{image_size} (bilinear, torch.nn.functional.interpolate, align_corners=False)"
    extra["raw_input"] += resized
    description = {"dataset": name, "root": None if root is None else str(root),
                   "sizes": {k: len(v) for k, v in data.items()}, "image_size": shape[1],
                   "split_seed": split_seed, "mean": mean.tolist(), "std": std.tolist(), **extra}
    return DataSplits(data["train"], data["val"], data["test"], num_classes, shape, description)  # type: ignore[arg-type]


@register_dataset("digits")
def _load_digits(*, root: str | Path | None, image_size: int | None, val_fraction: float,
                 test_fraction: float, split_seed: int) -> DataSplits:
    """sklearn's bundled 8x8 digits: needs no files, so tests and smoke runs work offline. ``root`` is ignored."""

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    y = bunch.target.astype(np.int64)
    parts = three_way(y, val_fraction, test_fraction, split_seed)
    return _finish("digits", None, take(x, y, parts), 10, image_size, split_seed,
                   val_fraction=val_fraction, test_fraction=test_fraction,
                   raw_input="sklearn.datasets.load_digits().images / 16: 8x8 grey pixels 0-16 scaled to [0, 1]")


def _read_cifar_bin(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    if raw.size == 0 or raw.size % 3073:
        raise DataError(f"{path}: {raw.size} bytes is not a positive multiple of 3073 (truncated CIFAR-10 file?)")
    records = raw.reshape(-1, 3073)
    return records[:, 1:].reshape(-1, 3, 32, 32), records[:, 0].astype(np.int64)


def _read_cifar_py(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open("rb") as fh:
            obj = NumpyOnlyUnpickler(fh, encoding="bytes").load()
    except RefusedGlobal as refused:
        raise DataError(f"refusing to unpickle {refused} from {path}: only numpy array globals are allowed") from None
    except Exception as exc:  # any malformed pickle is the file's fault, not ours
        raise DataError(f"cannot read CIFAR-10 batch {path}: {exc}") from None
    data, labels = (obj.get(b"data"), obj.get(b"labels")) if isinstance(obj, dict) else (None, None)
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
        raise DataError(f"{path}: expected a dict whose b'data' is a uint8 N x 3072 array")
    try:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"{path}: b'labels' must be a list of integers") from None
    if labels.shape[0] != data.shape[0]:
        raise DataError(f"{path}: {labels.shape[0]} b'labels' for {data.shape[0]} images")
    return data.reshape(-1, 3, 32, 32), labels


def _read_cifar_batches(paths: list[Path], reader: Callable[[Path], tuple[np.ndarray, np.ndarray]]
                        ) -> tuple[torch.Tensor, np.ndarray]:
    """Read and concatenate batch files, scaling pixels to [0, 1] (labels must be in 0..9)."""
    images, labels = [], []
    for path in paths:
        x, y = reader(path)
        if y.size and (y.min() < 0 or y.max() > 9):
            raise DataError(f"{path}: labels must be in 0..9, found {int(y.min())}..{int(y.max())}")
        images.append(x)
        labels.append(y)
    return torch.from_numpy(np.concatenate(images)).to(torch.float32).div_(255.0), np.concatenate(labels)


@register_dataset("cifar10")
def _load_cifar10(*, root: str | Path | None, image_size: int | None, val_fraction: float,
                  test_fraction: float, split_seed: int) -> DataSplits:
    """CIFAR-10 in the official binary or python layout; val is carved from train, test is ``test_batch``.

    ``root`` may be the batch folder or its parent. ``test_fraction`` is unused: CIFAR has its own test set.
    """
    if root is None:
        raise DataError("cifar10 needs root: a folder with CIFAR-10 batches")
    base = Path(root)
    if not base.is_dir():
        raise DataError(f"cifar10 folder not found: {base}")
    for folder in (base, base / "cifar-10-batches-bin", base / "cifar-10-batches-py"):
        for suffix, reader, fmt in ((".bin", _read_cifar_bin, "binary"), ("", _read_cifar_py, "python")):
            test_path = folder / f"test_batch{suffix}"
            if test_path.is_file():
                train_paths = [p for i in range(1, 6) if (p := folder / f"data_batch_{i}{suffix}").is_file()]
                if not train_paths:
                    raise DataError(f"no CIFAR-10 train batch in {folder} (expected {folder / f'data_batch_1{suffix}'})")
                splits = {**carve_val(*_read_cifar_batches(train_paths, reader), val_fraction, split_seed),
                          "test": _read_cifar_batches([test_path], reader)}
                return _finish("cifar10", root, splits, 10, image_size, split_seed,
                               format=fmt, val_fraction=val_fraction, raw_input=RGB_RAW_INPUT)
    raise DataError(f"no CIFAR-10 test_batch.bin or test_batch found in {base} or its cifar-10-batches-* folders")


RGB_RAW_INPUT = "channels first (R, G, B), uint8 values / 255 in [0, 1]"
_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp"})


def _scan_tree(folder: Path) -> dict[str, list[Path]]:
    """Map each sorted class subfolder to its sorted image files, so labels are reproducible."""
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}")
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"no class subfolders with images in {folder}")
    tree = {}
    for name in classes:
        files = sorted(p for p in (folder / name).rglob("*") if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"class folder {folder / name} has no image files")
        tree[name] = files
    return tree


def _load_images(tree: dict[str, list[Path]], classes: list[str], size: int) -> tuple[torch.Tensor, np.ndarray]:
    files = [(p, classes.index(c)) for c in tree for p in tree[c]]
    out = torch.empty(len(files), 3, size, size, dtype=torch.float32)
    for i, (path, _) in enumerate(files):
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise DataError(f"cannot read image {path}: {exc}") from None
        out[i] = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return out, np.array([label for _, label in files], dtype=np.int64)


@register_dataset("imagefolder")
def _load_imagefolder(*, root: str | Path | None, image_size: int | None, val_fraction: float,
                      test_fraction: float, split_seed: int) -> DataSplits:
    """An ImageFolder tree (``root/<class>/<image>``), or ``root/{train,test[,val]}/<class>/...``.

    Every image is decoded once, resized to ``image_size`` (default 32) and kept in memory: meant
    for small datasets, where it makes epochs cheap; large sets belong in a streaming loader.
    """
    if root is None:
        raise DataError("imagefolder needs root: a folder of class subfolders")
    base, size = Path(root), image_size or 32
    if (base / "train").is_dir() and (base / "test").is_dir():
        trees = {k: _scan_tree(base / k) for k in ("train", "val", "test") if (base / k).is_dir()}
        classes = list(trees["train"])
        for k, tree in trees.items():
            if list(tree) != classes:
                raise DataError(f"classes in {base / k} differ from those in {base / 'train'}")
        loaded = {k: _load_images(tree, classes, size) for k, tree in trees.items()}
        if "val" not in loaded:
            loaded.update(carve_val(*loaded["train"], val_fraction, split_seed))
        splits, layout = {k: loaded[k] for k in ("train", "val", "test")}, "train/test folders"
    else:
        tree = _scan_tree(base)
        classes = list(tree)
        x, y = _load_images(tree, classes, size)
        splits, layout = take(x, y, three_way(y, val_fraction, test_fraction, split_seed)), "single tree"
    return _finish("imagefolder", root, splits, len(classes), size, split_seed, classes=classes,
                   layout=layout, val_fraction=val_fraction, test_fraction=test_fraction,
                   raw_input=f"the image as RGB, resized to {size}x{size} (PIL bilinear), " + RGB_RAW_INPUT)
