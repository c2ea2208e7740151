"""Tokenizers behind one small interface: ``encode(str) -> list[int]``, ``decode(list[int]) -> str``,
``vocab_size``, ``name``, and ``describe()`` (a JSON-able record :func:`tokenizer_from_record`
rebuilds it from, so an export can carry its tokenizer).

The default is byte-level (the UTF-8 bytes, vocabulary 256): it needs no file and no download, and
any text round-trips. A Hugging Face tokenizer is read from a local folder (its
``tokenizer.json`` / ``tokenizer_config.json``), or from a GGUF checkpoint in that folder, through
``transformers.AutoTokenizer``; nothing is downloaded (``local_files_only``). It lives in this low
layer so that both the data layer and a language-model space can use it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from hwnas.errors import DataError
from hwnas.utils.hf import package_folder


class Tokenizer(Protocol):
    name: str
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...
    def describe(self) -> dict[str, Any]: ...


class ByteTokenizer:
    """UTF-8 bytes as tokens (0-255). Decoding replaces a cut multi-byte character with U+FFFD."""

    name = "bytes"
    vocab_size = 256
    document_end: list[int] = [10, 10]  # a blank line between documents

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def describe(self) -> dict[str, Any]:
        return {"kind": "bytes", "vocab_size": self.vocab_size}


class HFTokenizer:
    """A local Hugging Face tokenizer (``folder``, optionally from the GGUF file ``gguf_file`` in it)."""

    def __init__(self, folder: str | Path, gguf_file: str | None = None):
        # transformers takes seconds to import: only a job that names a tokenizer pays for it
        from transformers import AutoTokenizer

        self.folder, self.gguf_file = str(folder), gguf_file
        if not Path(folder).is_dir():
            raise DataError(f"data.tokenizer: {folder} is not a folder (a local Hugging Face tokenizer folder)")
        if gguf_file is not None and not (Path(folder) / gguf_file).is_file() and not Path(gguf_file).is_file():
            raise DataError(f"data.tokenizer_gguf: no file {gguf_file} in {folder}")
        kwargs: dict[str, Any] = {"local_files_only": True}
        if gguf_file is not None:
            kwargs["gguf_file"] = gguf_file
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.folder, **kwargs)
        except Exception as exc:  # a folder without tokenizer files, a broken GGUF: one line
            field = "data.tokenizer_gguf" if gguf_file else "data.tokenizer"
            raise DataError(f"{field}: cannot load a tokenizer from {folder}"
                            f"{' / ' + gguf_file if gguf_file else ''}: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from None
        self.tokenizer.model_max_length = 1 << 62  # documents are cut into windows here, not by it
        self.name = f"huggingface:{Path(self.folder).name}" + (f"/{gguf_file}" if gguf_file else "")
        self.vocab_size = len(self.tokenizer)
        eos = self.tokenizer.eos_token_id
        self.document_end = [int(eos)] if eos is not None else self.encode("\n\n")

    def encode(self, text: str) -> list[int]:
        return [int(i) for i in self.tokenizer.encode(text, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode([int(i) for i in ids])

    def describe(self) -> dict[str, Any]:
        return {"kind": "huggingface", "folder": self.folder, "gguf_file": self.gguf_file,
                "vocab_size": self.vocab_size}

    def save(self, folder: str | Path) -> None:
        """Write the tokenizer files to ``folder`` (``save_pretrained``), e.g. beside an export."""
        self.tokenizer.save_pretrained(str(folder))


def load_tokenizer(folder: str | Path | None = None, gguf_file: str | None = None) -> ByteTokenizer | HFTokenizer:
    """Byte-level without a folder; else the Hugging Face tokenizer of ``folder`` (and ``gguf_file``)."""
    if folder is None:
        if gguf_file is not None:
            raise DataError("data.tokenizer_gguf: needs data.tokenizer, the folder that holds the GGUF file")
        return ByteTokenizer()
    if not Path(folder).is_dir() and str(folder).isidentifier():  # an installed package holding the files
        folder = package_folder(str(folder), "data.tokenizer")
    return HFTokenizer(folder, gguf_file)


def tokenizer_from_record(record: dict[str, Any]) -> ByteTokenizer | HFTokenizer:
    """The tokenizer a :meth:`describe` record names (an export's manifest, a job's data description)."""
    if record.get("kind") == "bytes":
        return ByteTokenizer()
    if record.get("kind") == "huggingface":
        return HFTokenizer(record["folder"], record.get("gguf_file"))
    raise DataError(f"unknown tokenizer record {record.get('kind')!r} (expected bytes or huggingface)")
