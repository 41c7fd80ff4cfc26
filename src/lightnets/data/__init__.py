"""The data stage, one module per job:

- ``images``: decoding and checking one image file; ``errors``: ImageReadError, DataFormatError;
- ``folders``: datasets of image files (ImageFolder, ImageFiles) and class / split folder discovery;
- ``memory``: in-memory uint8 tensor datasets (TensorImageDataset, ``is_in_memory``); ``formats``: the IDX,
  CIFAR and digits parsers that produce them;
- ``splits``: stratified train / val splits and split files;
- ``sources``: ``load_dataset(source)``, from a source string to a ``DatasetSplits``, and default_preprocessing;
- ``loaders``: ``make_loader`` and the two loaders (TensorBatchLoader, FolderLoader) with one index partitioning
  across ranks; ``batch_ops``: whole-batch augmentation and resizing;
- ``preprocessing`` (the preprocessing dict and presets), ``transforms`` (the per-image Pillow transforms),
  ``decode_cache``, ``probe``, ``wordnet`` and ``checks``.

The public names of the dataset modules are re-exported here (``from lightnets.data import load_dataset``).
"""

from .batch_ops import (
    pad_crop_flip,
    resize_batch,
)
from .errors import (
    DataFormatError,
    ImageReadError,
)
from .folders import (
    ImageFiles,
    ImageFolder,
    collate_skip_none,
    find_classes,
    find_splits,
    list_image_files,
)
from .formats import (
    CIFAR10_CLASSES,
    DIGIT_CLASSES,
    FASHION_MNIST_CLASSES,
    find_idx_files,
    is_cifar_folder,
    load_cifar,
    load_digits_dataset,
    load_idx_pair,
    read_cifar_batch,
    read_idx,
)
from .images import (
    IMG_EXTENSIONS,
    check_image,
    is_image_file,
    load_image,
)
from .loaders import (
    FolderLoader,
    TensorBatchLoader,
    epoch_batches,
    make_loader,
)
from .memory import (
    TensorImageDataset,
    channel_stats,
    is_in_memory,
)
from .sources import (
    DatasetSplits,
    default_preprocessing,
    load_dataset,
)
from .splits import (
    SPLIT_FORMAT,
    load_split,
    make_split,
    save_split,
    stratified_split,
)

__all__ = [
    "CIFAR10_CLASSES",
    "DIGIT_CLASSES",
    "DataFormatError",
    "DatasetSplits",
    "FASHION_MNIST_CLASSES",
    "FolderLoader",
    "IMG_EXTENSIONS",
    "ImageFiles",
    "ImageFolder",
    "ImageReadError",
    "SPLIT_FORMAT",
    "TensorBatchLoader",
    "TensorImageDataset",
    "channel_stats",
    "check_image",
    "collate_skip_none",
    "default_preprocessing",
    "epoch_batches",
    "find_classes",
    "find_idx_files",
    "find_splits",
    "is_cifar_folder",
    "is_image_file",
    "is_in_memory",
    "list_image_files",
    "load_cifar",
    "load_dataset",
    "load_digits_dataset",
    "load_idx_pair",
    "load_image",
    "load_split",
    "make_loader",
    "make_split",
    "pad_crop_flip",
    "read_cifar_batch",
    "read_idx",
    "resize_batch",
    "save_split",
    "stratified_split",
]
