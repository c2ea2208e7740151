"""Datasets for search and evaluation: a registry of loaders that all return the same
:class:`DataSplits` (see :mod:`hwnas.data.core`); images in :mod:`hwnas.data.images`, text for
language models in :mod:`hwnas.data.text`. Importing the package registers them all."""
from hwnas.data import images, text  # noqa: F401  (each registers its datasets)
from hwnas.data.core import (DATASET_INFO, DATASETS, DataSplits, DatasetInfo, dataset_info, iterate_batches,
                             load_configured, load_data, register_dataset)

__all__ = ["DATASET_INFO", "DATASETS", "DataSplits", "DatasetInfo", "dataset_info", "iterate_batches",
           "load_configured", "load_data", "register_dataset"]
