"""The content digest of a checkpoint-like object (tensors included), kept out of :mod:`hwnas.utils.io`
so that reading a job's store and files does not import torch."""
from __future__ import annotations

import hashlib
from typing import Any, Mapping

import torch


def state_digest(obj: Any) -> str:
    """The sha256 of a checkpoint-like object (nested dicts, lists and tuples of tensors, numbers
    and strings), independent of tensors' device and memory layout: what a checkpoint or a
    safetensors file records about itself so that a reader can tell it was altered."""

    digest = hashlib.sha256()

    def feed(tag: bytes, payload: bytes = b"") -> None:
        digest.update(tag + len(payload).to_bytes(8, "little") + payload)

    def walk(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            t = value.detach().to("cpu").contiguous()
            feed(b"T", f"{t.dtype}{tuple(t.shape)}".encode())
            feed(b"t", t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(value, Mapping):
            feed(b"D", str(len(value)).encode())
            for key, item in value.items():
                walk(key)
                walk(item)
        elif isinstance(value, (list, tuple)):
            feed(b"L" if isinstance(value, list) else b"U", str(len(value)).encode())
            for item in value:
                walk(item)
        elif isinstance(value, str):
            feed(b"S", value.encode("utf-8", "surrogatepass"))
        elif value is None or isinstance(value, (bool, int)):
            feed(b"I", repr(value).encode())
        elif isinstance(value, float):
            feed(b"F", value.hex().encode())
        else:
            feed(b"O", f"{type(value).__qualname__}:{value!r}".encode())

    walk(obj)
    return digest.hexdigest()


# -- lock files -----------------------------------------------------------------------------------
