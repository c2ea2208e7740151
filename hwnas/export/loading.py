"""Rebuild an exported subnet from its manifest: the one module a deployment needs, so it imports
no training, search or job code (only the space registry that builds the standalone module).

The rebuilt model takes raw inputs: it standardizes them itself (see
:mod:`hwnas.export.preprocessing`), as every other exported file does."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

from safetensors.torch import load_file
from torch import nn

from hwnas.errors import HwnasError
from hwnas.export.preprocessing import NormalizedInput
from hwnas.spaces.registry import space_entry
from hwnas.utils.io import sha256_file, verify_digest
from hwnas.utils.tokenizers import tokenizer_from_record

MANIFEST_FORMAT = "hwnas-export/2"  # 2: the model standardizes its inputs itself


def load_exported(path: str | Path) -> NormalizedInput | nn.Module:
    """Rebuild an exported subnet from ``path/manifest.json`` and its weights file, in eval mode.

    It takes raw inputs (``model.input_description`` says what they are for its dataset, e.g.
    digits pixels / 16) and standardizes them with the train split's statistics itself;
    ``model.network`` is the plain subnet, which expects standardized inputs. A model of token ids
    (a language model, ``preprocessing.inside_model`` false) is the plain subnet itself."""
    path = Path(path)
    manifest_file = path / "manifest.json"
    try:
        data = manifest_file.read_bytes()
    except FileNotFoundError:
        raise HwnasError(f"{manifest_file} does not exist: not an hwnas export (or one whose writing was "
                         "interrupted: export it again)") from None
    verify_digest(manifest_file, what="export manifest", remedy="export the candidate again", data=data)
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise HwnasError(f"{manifest_file} is not valid JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else None
        raise HwnasError(f"{manifest_file} has format {got!r}; this hwnas reads {MANIFEST_FORMAT!r}")
    entry = manifest.get("weights")
    if not (isinstance(entry, dict) and isinstance(entry.get("file"), str) and isinstance(entry.get("sha256"), str)
            and isinstance(manifest.get("space"), str) and isinstance(manifest.get("subnet"), dict)):
        raise HwnasError(f"{manifest_file} lacks its weights entry (file and sha256), space or subnet")
    name = entry["file"]
    if Path(name).name != name or name in ("", ".", ".."):  # the weights live beside the manifest
        raise HwnasError(f"{manifest_file} names weights {name!r} outside its export directory")
    weights = path / name
    if not weights.exists():
        raise HwnasError(f"{weights} does not exist")
    if sha256_file(weights) != entry["sha256"]:
        raise HwnasError(f"{weights} does not match the hash in its manifest (altered or truncated)")
    preprocessing = manifest.get("preprocessing")
    tokens = isinstance(preprocessing, dict) and preprocessing.get("inside_model") is False  # token ids in
    if not tokens and not (isinstance(preprocessing, dict) and _floats(preprocessing.get("mean"))
            and _floats(preprocessing.get("std")) and len(preprocessing["mean"]) == len(preprocessing["std"])
            and all(0 < v < float("inf") for v in preprocessing["std"])):
        raise HwnasError(f"{manifest_file} lacks its preprocessing entry (per-channel mean, and std > 0)")
    try:
        model = space_entry(manifest["space"]).build_standalone(manifest["subnet"])
    except HwnasError as exc:
        raise HwnasError(f"{manifest_file}: {exc}") from None
    except Exception as exc:  # a subnet spec this hwnas cannot build
        raise HwnasError(f"{manifest_file} has a subnet this hwnas cannot build ({str(exc).splitlines()[0]})") from None
    try:
        model.load_state_dict(load_file(str(weights)))
    except Exception as exc:
        raise HwnasError(f"{weights} does not fit the manifest's subnet ({str(exc).splitlines()[0]})") from None
    if tokens:  # a language model takes token ids as they are; text goes through the manifest's tokenizer
        record = preprocessing.get("tokenizer")
        if isinstance(record, dict) and hasattr(model, "tokenizer"):
            try:
                model.tokenizer = tokenizer_from_record(record)
            except HwnasError as exc:  # a Hugging Face tokenizer folder that moved: token ids still work
                warnings.warn(f"{manifest_file}: the tokenizer is not available ({exc}); generate takes token ids")
        return model.eval()
    return NormalizedInput(model, preprocessing["mean"], preprocessing["std"],
                           str(preprocessing.get("raw_input", ""))).eval()


def _floats(values) -> bool:
    return (isinstance(values, list) and bool(values)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values))
