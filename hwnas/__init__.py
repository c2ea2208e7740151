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

from hwnas.config import Config, load_config  # noqa: E402
from hwnas.export import load_exported  # noqa: E402
from hwnas.job import Job, open_job  # noqa: E402
from hwnas.pipeline import launch  # noqa: E402

__all__ = ["Config", "Job", "launch", "load_config", "load_exported", "open_job", "__version__"]
