"""Tests for hwnas.data: real files written to tmp_path, no network, a few seconds in total."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset, TensorDataset

from hwnas.data import DATASETS, DataSplits, iterate_batches, load_data, register_dataset
from hwnas.errors import DataError


# ------------------------------------------------------------------------------------------ digits
@pytest.fixture(scope="module")
def digits() -> DataSplits:
    return load_data("digits", split_seed=0)


def test_digits_sizes_shapes_and_normalization(digits: DataSplits) -> None:
    sizes = digits.description["sizes"]
    assert sizes["train"] + sizes["val"] + sizes["test"] == 1797
    assert [len(digits.train), len(digits.val), len(digits.test)] == [sizes["train"], sizes["val"], sizes["test"]]
    assert abs(sizes["test"] / 1797 - 0.2) < 0.01 and abs(sizes["val"] / 1797 - 0.2) < 0.01
    assert digits.num_classes == 10 and digits.input_shape == (1, 8, 8)
    x, y = digits.train[0]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32 and 0 <= int(y) < 10
    train_x = digits.train.tensors[0]
    assert abs(float(train_x.mean())) < 1e-4 and abs(float(train_x.std()) - 1.0) < 1e-2
    assert set(digits.train.tensors[1].tolist()) == set(range(10))  # stratified: every class present
    assert digits.description["split_seed"] == 0 and digits.description["dataset"] == "digits"


def test_digits_splits_are_disjoint_and_deterministic(digits: DataSplits) -> None:
    again = load_data("digits", split_seed=0)
    for a, b in ((digits.train, again.train), (digits.val, again.val), (digits.test, again.test)):
        assert torch.equal(a.tensors[0], b.tensors[0]) and torch.equal(a.tensors[1], b.tensors[1])
    other = load_data("digits", split_seed=1)
    assert not torch.equal(digits.train.tensors[0], other.train.tensors[0])
    # Disjointness: un-normalize and match rows against the raw images (digits has few duplicates,
    # so compare multisets of rows: together the splits must be exactly the full dataset).
    from sklearn.datasets import load_digits

    mean, std = digits.description["mean"][0], digits.description["std"][0]
    rows = torch.cat([s.tensors[0] for s in (digits.train, digits.val, digits.test)]) * std + mean
    raw = torch.from_numpy(load_digits().images.astype(np.float32) / 16.0)
    key = lambda t: sorted(map(tuple, torch.round(t.reshape(len(t), -1) * 16).to(torch.int64).tolist()))
    assert key(rows) == key(raw)


def test_digits_resize() -> None:
    splits = load_data("digits", image_size=16)
    assert splits.input_shape == (1, 16, 16) and splits.train.tensors[0].shape[1:] == (1, 16, 16)
    assert splits.description["image_size"] == 16


def test_unknown_dataset_and_bad_fractions() -> None:
    with pytest.raises(DataError, match="digits"):
        load_data("no-such-set")
    with pytest.raises(DataError, match="val_fraction"):
        load_data("digits", val_fraction=1.5)
    with pytest.raises(DataError, match="image_size"):
        load_data("digits", image_size=0)


def test_register_dataset_adds_a_loader() -> None:
    @register_dataset("_test_tiny")
    def _tiny(**kwargs) -> DataSplits:
        ds = TensorDataset(torch.zeros(2, 1, 2, 2), torch.zeros(2, dtype=torch.int64))
        return DataSplits(ds, ds, ds, 1, (1, 2, 2), {"dataset": "_test_tiny", **{k: str(v) for k, v in kwargs.items()}})

    try:
        assert load_data("_test_tiny", split_seed=3).description["split_seed"] == "3"
    finally:
        DATASETS.pop("_test_tiny")


# ----------------------------------------------------------------------------------------- cifar10
def _cifar_arrays(n: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Image i has every pixel equal to (offset + i) % 256 in channel 0, so content identifies it."""
    labels = (np.arange(n) + offset) % 10
    images = np.zeros((n, 3, 32, 32), dtype=np.uint8)
    images[:, 0] = ((np.arange(n) + offset) % 256)[:, None, None]
    images[:, 1] = 7
    images[:, 2] = np.arange(32, dtype=np.uint8)[None, None, :]
    return images, labels


def _write_bin(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    records = np.concatenate([labels.astype(np.uint8)[:, None], images.reshape(len(images), -1)], axis=1)
    path.write_bytes(records.tobytes())


def _write_py(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    with path.open("wb") as fh:
        pickle.dump({b"data": images.reshape(len(images), -1), b"labels": labels.tolist()}, fh)


def _write_cifar(folder: Path, writer, suffix: str) -> None:
    folder.mkdir(parents=True)
    for i, offset in ((1, 0), (2, 30)):
        writer(folder / f"data_batch_{i}{suffix}", *_cifar_arrays(30, offset))
    writer(folder / f"test_batch{suffix}", *_cifar_arrays(20, 100))


def _check_cifar(splits: DataSplits, fmt: str) -> None:
    assert splits.num_classes == 10 and splits.input_shape == (3, 32, 32)
    assert len(splits.train) + len(splits.val) == 60 and len(splits.test) == 20
    assert len(splits.val) == 12 and splits.description["format"] == fmt
    mean, std = torch.tensor(splits.description["mean"]), torch.tensor(splits.description["std"])
    for ds in (splits.train, splits.val, splits.test):
        x, y = ds.tensors
        raw = torch.round((x * std[None, :, None, None] + mean[None, :, None, None]) * 255)
        ident = raw[:, 0, 0, 0].to(torch.int64)  # the image's number, written into channel 0
        assert torch.equal(y, ident % 10)
        assert torch.all(raw[:, 0] == ident[:, None, None]) and torch.all(raw[:, 1] == 7)
        assert torch.equal(raw[0, 2, 5], torch.arange(32, dtype=torch.float32))
    assert sorted(torch.round((splits.test.tensors[0][:, 0, 0, 0] * std[0] + mean[0]) * 255).tolist()) == \
        list(range(100, 120))
    train_x = splits.train.tensors[0]
    assert torch.allclose(train_x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)


def test_cifar10_binary_roundtrip(tmp_path: Path) -> None:
    _write_cifar(tmp_path / "cifar-10-batches-bin", _write_bin, ".bin")
    splits = load_data("cifar10", root=tmp_path)  # the parent folder is accepted
    _check_cifar(splits, "binary")
    same = load_data("cifar10", root=tmp_path / "cifar-10-batches-bin")
    assert torch.equal(splits.train.tensors[0], same.train.tensors[0])
    assert load_data("cifar10", root=tmp_path, image_size=16).input_shape == (3, 16, 16)


def test_cifar10_binary_errors(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    _write_cifar(folder, _write_bin, ".bin")
    (folder / "data_batch_2.bin").write_bytes((folder / "data_batch_2.bin").read_bytes()[:-5])
    with pytest.raises(DataError, match="data_batch_2.bin"):
        load_data("cifar10", root=folder)
    images, labels = _cifar_arrays(30, 0)
    _write_bin(folder / "data_batch_2.bin", images, labels + 200)
    with pytest.raises(DataError, match="0..9"):
        load_data("cifar10", root=folder)
    with pytest.raises(DataError, match="missing"):
        load_data("cifar10", root=tmp_path / "missing")
    (folder / "test_batch.bin").unlink()
    with pytest.raises(DataError, match="test_batch"):
        load_data("cifar10", root=folder)


def test_cifar10_python_roundtrip(tmp_path: Path) -> None:
    _write_cifar(tmp_path / "cifar-10-batches-py", _write_py, "")
    _check_cifar(load_data("cifar10", root=tmp_path), "python")


class _Exploit:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.target}",))


def test_cifar10_python_refuses_malicious_pickle(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder, _write_py, "")
    marker = tmp_path / "pwned.txt"
    with (folder / "data_batch_1").open("wb") as fh:
        pickle.dump({b"data": _Exploit(marker), b"labels": [0]}, fh)
    with pytest.raises(DataError, match=r"refusing to unpickle .*system.*data_batch_1"):
        load_data("cifar10", root=tmp_path)
    assert not marker.exists()


# ------------------------------------------------------------------------------------- imagefolder
_COLOURS = {"blue": (0, 0, 255), "green": (0, 255, 0), "red": (255, 0, 0)}


def _write_tree(root: Path, per_class: int) -> None:
    for name, colour in _COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (10, 12), colour).save(root / name / f"img{i}.png")


def test_imagefolder_single_tree(tmp_path: Path) -> None:
    _write_tree(tmp_path, 6)
    splits = load_data("imagefolder", root=tmp_path, image_size=16, split_seed=0)
    assert splits.description["classes"] == ["blue", "green", "red"] and splits.num_classes == 3
    assert sum(splits.description["sizes"].values()) == 18 and len(splits.test) >= 3
    assert splits.input_shape == (3, 16, 16) and splits.train.tensors[0].shape[1:] == (3, 16, 16)
    mean, std = torch.tensor(splits.description["mean"]), torch.tensor(splits.description["std"])
    for ds in (splits.train, splits.val, splits.test):
        x, y = ds.tensors
        raw = torch.round((x * std[None, :, None, None] + mean[None, :, None, None]) * 255)
        expected = torch.tensor([list(_COLOURS.values())[label] for label in y.tolist()], dtype=torch.float32)
        assert torch.equal(raw[:, :, 3, 4], expected)  # solid colour survives resize + normalization
    again = load_data("imagefolder", root=tmp_path, image_size=16, split_seed=0)
    assert torch.equal(splits.train.tensors[0], again.train.tensors[0])
    assert load_data("imagefolder", root=tmp_path).input_shape == (3, 32, 32)  # default size


def test_imagefolder_train_test_layout(tmp_path: Path) -> None:
    _write_tree(tmp_path / "train", 6)
    _write_tree(tmp_path / "test", 2)
    splits = load_data("imagefolder", root=tmp_path, image_size=8, val_fraction=0.5)
    assert len(splits.test) == 6 and len(splits.train) == 9 and len(splits.val) == 9
    assert splits.description["classes"] == ["blue", "green", "red"]
    assert sorted(splits.test.tensors[1].tolist()) == [0, 0, 1, 1, 2, 2]
    _write_tree(tmp_path / "val", 1)
    with_val = load_data("imagefolder", root=tmp_path, image_size=8)
    assert len(with_val.val) == 3 and len(with_val.train) == 18
    (tmp_path / "test" / "extra").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "test" / "extra" / "a.png")
    with pytest.raises(DataError, match="differ"):
        load_data("imagefolder", root=tmp_path)


def test_imagefolder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no class subfolders"):
        load_data("imagefolder", root=tmp_path)
    _write_tree(tmp_path, 3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        load_data("imagefolder", root=tmp_path)
    (tmp_path / "empty").rmdir()
    bad = tmp_path / "red" / "corrupt.png"
    bad.write_bytes(np.random.default_rng(0).bytes(200))
    with pytest.raises(DataError, match="corrupt.png"):
        load_data("imagefolder", root=tmp_path)


# --------------------------------------------------------------------------------- iterate_batches
class _ListDataset(Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return torch.full((2,), float(i)), i


def _ids(batches) -> list[int]:
    out = []
    for x, y in batches:
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert torch.equal(x[:, 0].to(torch.int64), y)
        out.extend(y.tolist())
    return out


@pytest.mark.parametrize("make", [
    lambda n: TensorDataset(torch.arange(n, dtype=torch.float64)[:, None].repeat(1, 2), torch.arange(n, dtype=torch.int32)),
    _ListDataset,
])
def test_iterate_batches(make) -> None:
    ds = make(23)
    assert _ids(iterate_batches(ds, 5)) == list(range(23))
    assert [len(y) for _, y in iterate_batches(ds, 5)] == [5, 5, 5, 5, 3]
    assert [len(y) for _, y in iterate_batches(ds, 5, drop_last=True)] == [5, 5, 5, 5]
    first = _ids(iterate_batches(ds, 4, shuffle=True, generator=torch.Generator().manual_seed(1)))
    again = _ids(iterate_batches(ds, 4, shuffle=True, generator=torch.Generator().manual_seed(1)))
    other = _ids(iterate_batches(ds, 4, shuffle=True, generator=torch.Generator().manual_seed(2)))
    assert sorted(first) == list(range(23)) and first == again and first != other and first != list(range(23))
    assert len(_ids(iterate_batches(ds, 4, limit=10))) == 10
    limited = _ids(iterate_batches(ds, 4, shuffle=True, generator=torch.Generator().manual_seed(1), limit=7))
    assert limited == first[:7]
    assert _ids(iterate_batches(ds, 4, limit=0)) == []


def test_iterate_batches_on_loaded_data(digits: DataSplits) -> None:
    seen = sum(len(y) for _, y in iterate_batches(digits.val, 64, shuffle=True))
    assert seen == len(digits.val)
