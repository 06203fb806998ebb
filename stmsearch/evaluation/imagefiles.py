"""Image files to uint8 tensors: listing class folders, decoding with ViM's evaluation transform,
and the decode-once disk cache shared by every folder dataset (``imagefolder``, ``imagenet-val``).

Decoded tensors go to a ``.pt`` file in the cache directory (``$STMSEARCH_CACHE``, default
``~/.cache/stmsearch``), keyed by the folder and every file's path, label, size and mtime, so
an edited tree is decoded again. A file PIL cannot decode completely (empty, truncated, not an
image) is an error naming it, unless ``skip_bad_images``: the cache records the files left out.
"""
from __future__ import annotations

import hashlib
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile
from tqdm.auto import tqdm

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
RESIZE, CROP = 256, 224
# Part of the cache key: bump when the decode transform changes.
TRANSFORM_VERSION = "bicubic256-center224-v1"
# What PIL raises on a file it cannot decode (empty, truncated, not an image, corrupt data).
BAD_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)


class DatasetError(ValueError):
    """A dataset spec or folder that cannot be loaded; the message names it."""


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


def list_class_folders(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
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
        im.load()  # decode all of it now: a truncated file raises here, not later or never
        im = im.convert("RGB")
        w, h = im.size
        size = (RESIZE, int(RESIZE * h / w)) if w <= h else (int(RESIZE * w / h), RESIZE)
        if size != (w, h):
            im = im.resize(size, Image.BICUBIC)
        left, top = int(round((size[0] - CROP) / 2.0)), int(round((size[1] - CROP) / 2.0))
        return np.array(im.crop((left, top, left + CROP, top + CROP)))


def _try_decode(path: Path) -> np.ndarray | str:
    """The decoded image, or why ``path`` is not a readable image (one line)."""
    try:
        return decode_image(path)
    except BAD_IMAGE_ERRORS as exc:
        lines = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {lines[0] if lines else 'unreadable'}"


def _decode_all(files: list[tuple[Path, int]], root: Path,
                desc: str) -> tuple[torch.Tensor, list[int], list[list[str]]]:
    """Decode every file, in threads (PIL releases the GIL).

    Returns uint8 (K, 3, 224, 224) of the K readable files, their indices in ``files``, and
    [path relative to root, reason] of the others.
    """
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise DatasetError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True (set elsewhere in this process): truncated "
                           "images would decode with grey fill instead of being detected; set it to False")
    out = torch.empty(len(files), 3, CROP, CROP, dtype=torch.uint8)
    kept, bad = [], []
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool, \
            tqdm(total=len(files), desc=desc, unit="img") as bar:
        for i, arr in enumerate(pool.map(lambda f: _try_decode(f[0]), files)):
            if isinstance(arr, str):
                bad.append([str(files[i][0].relative_to(root)), arr])
            else:
                out[len(kept)] = torch.from_numpy(arr).permute(2, 0, 1)
                kept.append(i)
            bar.update(1)
    # a view, not a copy: bad files are rare, and saving it keeps their few unused slots
    return out[:len(kept)], kept, bad


def decode_folder(kind: str, root: Path, files: list[tuple[Path, int]],
                  skip_bad_images: bool) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """(uint8 images, labels, files left out) of ``files`` in the fixed order, from the disk cache when current.

    Every file is decoded (and the result cached) even when some are unreadable, so a rerun
    with ``skip_bad_images=True`` decodes nothing; without it, the first unreadable file is an error.
    """
    cache = cache_dir() / f"{kind}-{_cache_key(root, files)}.pt"
    if cache.is_file():
        # memory-mapped: a limited load reads only the prefix it keeps
        blob = torch.load(cache, weights_only=True, mmap=True)
        images, labels, bad = blob["images"], blob["labels"], blob.get("bad", [])
    else:
        files = [files[i] for i in stratified_order(np.array([label for _, label in files]), seed=1)]
        images, kept, bad = _decode_all(files, root, f"decoding {root}")
        labels = torch.tensor([files[i][1] for i in kept], dtype=torch.int64)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        torch.save({"images": images, "labels": labels, "bad": bad}, tmp)
        os.replace(tmp, cache)  # atomic: concurrent workers never read a half-written file
    if bad and not skip_bad_images:
        path, reason = bad[0]
        raise DatasetError(f"{root / path}: not a readable image ({reason}); {len(bad)} of {len(bad) + len(labels)} "
                           f"files in {root} are unreadable: remove them or skip them (skip_bad_images=True, "
                           f"--skip-bad-images)")
    if len(labels) == 0:
        raise DatasetError(f"{root}: none of the {len(bad)} image files is readable")
    return images, labels, tuple(path for path, _ in bad)
