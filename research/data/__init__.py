"""TFDS-backed datasets in memory: `load(name, **options) -> Dataset`, `available()`; without the data,
`describe(name, **options) -> AbstractDataset` (shapes and split sizes from the dataset card).

Also: seeded batching (`train_batches`, `eval_batches`), on-device transforms (`augment`,
`normalize`), and the train/test leakage check (`find_duplicates`). See `dataset.py` for the options.
"""

from research.data.batching import (
                                    batch_indices,
                                    chunk_indices,
                                    epoch_permutation,
                                    eval_batches,
                                    eval_indices,
                                    padded_chunks,
                                    steps_per_epoch,
                                    train_batches,
)
from research.data.dataset import Dataset, LoadOptions, Split, available, load, parse_options
from research.data.leakage import LeakageReport, find_duplicates
from research.data.metadata import AbstractDataset, AbstractSplit, describe
from research.data.transforms import augment, normalize

__all__ = [
    "AbstractDataset", "AbstractSplit", "Dataset", "LeakageReport", "LoadOptions", "Split", "augment",
    "available", "batch_indices", "chunk_indices", "describe", "epoch_permutation", "eval_batches",
    "eval_indices", "find_duplicates", "load", "normalize", "padded_chunks", "parse_options",
    "steps_per_epoch", "train_batches",
]
