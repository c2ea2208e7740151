"""Text datasets for language modelling: documents split by document, tokenized, cut into windows.

``pydoc`` is the default corpus: the standard library's ``pydoc_data.topics.topics`` (about
460,000 characters of English help text, one document per topic), so the default language-model
job needs no download. ``text`` reads a local folder (or one file) of ``.txt`` files, one document
each. Documents are split train / validation / test (``val_fraction``, ``test_fraction``,
``split_seed``, as the image datasets split samples) before anything is tokenized, so no document
lends text to two splits. Each split's documents are tokenized (byte-level by default, or the local
Hugging Face tokenizer of ``data.tokenizer``, see :mod:`hwnas.utils.tokenizers`), joined with the
tokenizer's document separator, and cut into contiguous, non-overlapping windows of
``context_length`` tokens: sample ``i`` is ``x = ids[i*T : (i+1)*T]`` and ``y = ids[i*T+1 : (i+1)*T+1]``
(the next token at every position), both int64 of shape ``[T]``. The task's metric is perplexity.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pydoc_data.topics import topics as PYDOC_TOPICS
from torch.utils.data import TensorDataset

from hwnas.data.core import DataSplits, register_dataset, three_way
from hwnas.errors import DataError
from hwnas.utils.tokenizers import load_tokenizer

DEFAULT_CONTEXT = 128
TEXT_OPTIONS = ("context_length", "tokenizer", "tokenizer_gguf")


def windows(ids: list[int], context_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) of the contiguous, non-overlapping windows of ``ids``; y is x shifted by one token."""
    n = (len(ids) - 1) // context_length
    flat = torch.tensor(ids[: n * context_length + 1], dtype=torch.int64)
    x = flat[:-1].reshape(n, context_length) if n else flat[:0].reshape(0, context_length)
    y = flat[1:].reshape(n, context_length) if n else flat[:0].reshape(0, context_length)
    return x.contiguous(), y.contiguous()


def split_documents(names: list[str], texts: list[str], *, dataset: str, root: str | Path | None,
                    val_fraction: float, test_fraction: float, split_seed: int,
                    context_length: int | None = None, tokenizer: str | None = None,
                    tokenizer_gguf: str | None = None, image_size: int | None = None) -> DataSplits:
    """Split the documents ``texts`` (named ``names``) by document, tokenize and window each split."""
    if image_size is not None:
        raise DataError(f"data.image_size: dataset {dataset!r} is text; it takes no image_size")
    t = DEFAULT_CONTEXT if context_length is None else context_length
    if isinstance(t, bool) or not isinstance(t, int) or t < 1:
        raise DataError(f"data.context_length must be a positive integer, got {context_length!r}")
    if len(texts) < 3:
        raise DataError(f"{dataset}: {len(texts)} document(s); a train / validation / test split by document "
                        "needs at least 3")
    tok = load_tokenizer(tokenizer, tokenizer_gguf)
    parts = three_way(np.zeros(len(texts), dtype=np.int64), val_fraction, test_fraction, split_seed)
    data, documents, tokens = {}, {}, {}
    for split, idx in parts.items():
        ids: list[int] = []
        for i in idx:
            ids += tok.encode(texts[i]) + list(tok.document_end)
        x, y = windows(ids, t)
        if len(x) == 0:
            raise DataError(f"{dataset}: the {split} split ({len(idx)} documents, {len(ids)} tokens) is shorter than "
                            f"one window of data.context_length {t} tokens; lower it or give more text")
        data[split], documents[split], tokens[split] = TensorDataset(x, y), len(idx), len(ids)
    description = {"dataset": dataset, "root": None if root is None else str(root),
                   "corpus": f"{len(texts)} documents, {sum(len(s) for s in texts):,} characters",
                   "sizes": {k: len(v) for k, v in data.items()}, "documents": documents, "tokens": tokens,
                   "document_names": {k: [names[i] for i in idx] for k, idx in parts.items()},
                   "tokenizer": tok.describe() | {"name": tok.name}, "context_length": t,
                   "split_seed": split_seed, "val_fraction": val_fraction, "test_fraction": test_fraction,
                   "raw_input": f"token ids (int64) of {tok.name}, {t} per sequence; the target is the next token"}
    return DataSplits(data["train"], data["val"], data["test"], tok.vocab_size, (t,), description,
                      quality="perplexity")


@register_dataset("pydoc", quality="perplexity", options=TEXT_OPTIONS)
def _load_pydoc(*, root: str | Path | None, **kwargs) -> DataSplits:
    """The standard library's pydoc topics, one document per topic (sorted by name). ``root`` is ignored."""
    names = sorted(PYDOC_TOPICS)
    return split_documents(names, [PYDOC_TOPICS[k] for k in names], dataset="pydoc", root=None, **kwargs)


@register_dataset("text", quality="perplexity", options=TEXT_OPTIONS)
def _load_text(*, root: str | Path | None, **kwargs) -> DataSplits:
    """``root``: a folder of ``.txt`` files (searched recursively, sorted by path), one document
    each; or a single file, whose paragraphs (blank-line separated) are then the documents."""
    if root is None:
        raise DataError("data.root: dataset 'text' needs root, a folder of .txt files (or one .txt file)")
    base = Path(root)
    if base.is_file():
        text = _read(base)
        paragraphs = [p for p in text.split("\n\n") if p.strip()]
        names = [f"{base.name}#{i}" for i in range(len(paragraphs))]
        return split_documents(names, paragraphs, dataset="text", root=root, **kwargs)
    if not base.is_dir():
        raise DataError(f"data.root: {base} is neither a folder nor a file")
    files = sorted(p for p in base.rglob("*.txt") if p.is_file())
    if not files:
        raise DataError(f"data.root: no .txt files in {base}")
    return split_documents([str(p.relative_to(base)) for p in files], [_read(p) for p in files],
                           dataset="text", root=root, **kwargs)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read text file {path}: {exc}") from None
