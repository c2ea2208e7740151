"""The one restricted unpickler of hwnas: it resolves only the globals NumPy needs to rebuild
arrays and scalars, so a pickle from outside (a CIFAR-10 ``python`` batch, a lookup table saved
with ``np.save``) cannot run code. Any other global raises :class:`RefusedGlobal` before it is
resolved; callers turn that into their own one-line error.
"""
from __future__ import annotations

import importlib
import pickle
from typing import Any

NUMPY_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
})


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global outside :data:`NUMPY_GLOBALS`."""

    def __init__(self, module: str, name: str):
        super().__init__(f"{module}.{name}")
        self.module, self.name = module, name


class NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in NUMPY_GLOBALS:
            raise RefusedGlobal(module, name)
        try:  # numpy 2 renamed numpy.core to numpy._core; the old name only warns, so prefer the new one
            return getattr(importlib.import_module(module.replace("numpy.core.", "numpy._core.")), name)
        except (ImportError, AttributeError):
            return super().find_class(module, name)
