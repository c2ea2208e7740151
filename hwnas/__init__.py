"""hwnas: hardware-aware neural architecture and quantization-policy search.

Train one weight-sharing supernet, cost its subnets on a device, search a Pareto front of
accuracy against latency and energy, validate the front for real, and export the subnet that
fits a budget::

    import hwnas
    job = hwnas.launch("experiments/digits-cnn.yaml")
    job.front(max_latency_ms=0.5)
    job.export("out/", max_latency_ms=0.5)
    model = hwnas.load_exported("out/")
"""

import importlib

__version__ = "0.1.0"

# Names are imported on first use (PEP 562): ``import hwnas`` stays cheap, and loading an export
# (hwnas.load_exported) never imports the training, search or pipeline code.
_EXPORTS = {"Config": ("hwnas.config", "Config"), "load_config": ("hwnas.job.checks", "load_job_config"),
            "load_exported": ("hwnas.export.loading", "load_exported"), "Job": ("hwnas.job.handle", "Job"),
            "open_job": ("hwnas.job.handle", "open_job"), "launch": ("hwnas.job.launch", "launch"),
            "Budgets": ("hwnas.search.budgets", "Budgets")}

__all__ = ["Budgets", "Config", "Job", "launch", "load_config", "load_exported", "open_job", "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:

        module, attribute = _EXPORTS[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hwnas' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
