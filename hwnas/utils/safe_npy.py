"""Read a NumPy ``.npy`` file that holds a pickled ``dict`` of names to numbers, and nothing else.

Tables in the field ship this way (HW-NAS-Bench's FBNet-space lookup tables are ``np.save`` of a
dict), and NumPy's own loader, told to accept pickles, would run whatever the pickle names: a table
from the internet must not be able to execute code. This loader parses the ``.npy`` header itself and
unpickles the payload with :class:`~hwnas.utils.safe_pickle.NumpyOnlyUnpickler`, which resolves
only NumPy's array-rebuilding globals; any other global in the stream is refused by name before
it is called, and the result must be a dict whose keys are strings and whose values are numbers.
"""
from __future__ import annotations

import io
import math
import numbers
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from hwnas.utils.safe_pickle import NumpyOnlyUnpickler, RefusedGlobal

class UnsafeTableError(ValueError):
    """The file is not a plain dict of names to numbers."""


def load_number_dict(path: str | Path) -> dict[str, float]:
    """The dict an ``.npy`` file holds, values as floats; :class:`UnsafeTableError` for anything else."""
    data = Path(path).read_bytes()
    stream = io.BytesIO(data)
    try:
        version = npy_format.read_magic(stream)
        header = (npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0)
        shape, _, dtype = header(stream)
    except (ValueError, OSError) as exc:
        raise UnsafeTableError(f"not a NumPy .npy file ({exc})") from None
    if dtype != np.dtype(object) or shape != ():
        raise UnsafeTableError(f"it holds a {dtype} array of shape {shape}, not a pickled dict")
    try:
        loaded = NumpyOnlyUnpickler(stream).load()
    except RefusedGlobal as refused:
        raise UnsafeTableError(f"it asks to load {refused}; only a dict of names to numbers is accepted") from None
    except Exception as exc:  # a damaged stream raises anything from EOFError to TypeError
        raise UnsafeTableError(f"its pickled payload is unreadable ({type(exc).__name__})") from None
    value = loaded.item() if isinstance(loaded, np.ndarray) and loaded.shape == () else loaded
    if not isinstance(value, dict):
        raise UnsafeTableError(f"it holds a {type(value).__name__}, not a dict")
    out: dict[str, float] = {}
    for key, number in value.items():
        if not isinstance(key, str):
            raise UnsafeTableError(f"key {key!r} is not a string")
        if isinstance(number, bool) or not isinstance(number, numbers.Real) or not math.isfinite(float(number)):
            raise UnsafeTableError(f"entry {key!r}: {number!r} is not a finite number")
        out[key] = float(number)
    return out
