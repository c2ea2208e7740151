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
__version__ = "0.1.0"

# Names are imported on first use (PEP 562): ``import hwnas`` stays cheap, and loading an export
# (hwnas.load_exported) never imports the training, search or pipeline code.
_EXPORTS = {"Config": "hwnas.config", "load_config": "hwnas.config", "load_exported": "hwnas.export",
            "Job": "hwnas.job", "open_job": "hwnas.job", "launch": "hwnas.pipeline"}

__all__ = ["Config", "Job", "launch", "load_config", "load_exported", "open_job", "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hwnas' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
