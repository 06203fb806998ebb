"""ImageNet-1k's official validation layout: every image in one folder, labels kept apart.

``imagenet-val:PATH[?OPTION=VALUE&...]``, where PATH holds ILSVRC2012_val_00000001.JPEG ...
(any subset of the 50,000), and the labels come from one of:
- ``devkit=DIR``: the extracted ``ILSVRC2012_devkit_t12``: ``data/ILSVRC2012_validation_ground_truth.txt``
  (line i: the ILSVRC2012_ID of image i) and ``data/meta.mat`` (ILSVRC2012_ID -> WordNet ID, read
  with scipy.io.loadmat as torchvision does; the 1000 classes are its leaf synsets);
- ``labels=FILE``: one image per line, ``NAME<sep>LABEL[ anything]``, sep a comma, tab or spaces,
  NAME the file name with or without its extension, LABEL a WordNet ID (``n01440764``) or a class
  index; a header line and everything after LABEL are ignored, so Kaggle's
  ``LOC_val_solution.csv`` (``ImageId,PredictionString``) reads as it is;
- ``classes=FILE`` (with ``labels=``): the WordNet IDs, the first word of each line (Kaggle's
  ``LOC_synset_mapping.txt``); default: the WordNet IDs that appear in the labels file.
Without options, ``ILSVRC2012_devkit_t12/`` or else ``LOC_val_solution.csv`` (with
``LOC_synset_mapping.txt`` when there) is looked for beside PATH (in its parent), then inside it.
Relative paths are relative to the working directory.

Class index = position of the WordNet ID in the sorted list of class WordNet IDs: the order
ImageFolder gives ImageNet's train split, the one the official checkpoints were trained with.
"""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np

from .imagefiles import IMAGE_EXTS, DatasetError

PREFIX = "imagenet-val"
OPTIONS = ("devkit", "labels", "classes")
DEVKIT = "ILSVRC2012_devkit_t12"
GROUND_TRUTH = Path("data") / "ILSVRC2012_validation_ground_truth.txt"
META = Path("data") / "meta.mat"
LABELS_FILE, CLASSES_FILE = "LOC_val_solution.csv", "LOC_synset_mapping.txt"
VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})")
WNID = re.compile(r"n\d{8}")


def parse_spec(arg: str) -> tuple[Path, dict[str, Path]]:
    """``PATH?devkit=DIR`` -> (PATH, {"devkit": DIR}); unknown or conflicting options are errors."""
    path, _, query = arg.partition("?")
    if not path:
        raise DatasetError(f"{PREFIX}:{arg}: no folder (use {PREFIX}:PATH?OPTION=VALUE)")
    options = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in OPTIONS:
            raise DatasetError(f"{PREFIX}:{arg}: unknown option {key!r} (allowed: {', '.join(OPTIONS)})")
        if not value:
            raise DatasetError(f"{PREFIX}:{arg}: option {key} needs a value ({key}=PATH)")
        options[key] = Path(value).expanduser()
    if "devkit" in options and len(options) > 1:
        raise DatasetError(f"{PREFIX}:{arg}: devkit= gives labels and classes: use it alone")
    if "classes" in options and "labels" not in options:
        raise DatasetError(f"{PREFIX}:{arg}: classes= goes with labels=FILE")
    return Path(path).expanduser(), options


def discover(root: Path) -> dict[str, Path]:
    """The devkit or labels file beside ``root`` (its parent folder), else inside it."""
    for place in (root.parent, root):
        if (place / DEVKIT).is_dir():
            return {"devkit": place / DEVKIT}
        if (place / LABELS_FILE).is_file():
            found = {"labels": place / LABELS_FILE}
            return found | ({"classes": place / CLASSES_FILE} if (place / CLASSES_FILE).is_file() else {})
    raise DatasetError(f"{PREFIX}: {root}: no labels found: pass {PREFIX}:{root}?devkit=DIR or ?labels=FILE, "
                       f"or put {DEVKIT}/ or {LABELS_FILE} beside the folder")


def list_images(root: Path) -> list[Path]:
    """The image files directly inside ``root``, sorted by name."""
    if not root.is_dir():
        raise DatasetError(f"{PREFIX}: {root}: no such folder")
    found = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    if not found:
        raise DatasetError(f"{PREFIX}: {root}: no images in the folder itself (expected ILSVRC2012_val_*.JPEG; "
                           f"for class-per-folder trees use imagefolder:PATH)")
    return found


def _scalar(value) -> object:
    """One value of a loadmat struct field, however squeezed (0-d, (1,) or (1, 1) array, or plain)."""
    return np.asarray(value).reshape(-1)[0]


def read_meta(path: Path) -> dict[int, str]:
    """ILSVRC2012_ID -> WordNet ID of the devkit's classes (the synsets without children)."""
    from scipy.io import loadmat  # scipy is needed for the devkit only

    try:
        synsets = loadmat(path, squeeze_me=True)["synsets"]
    except FileNotFoundError:
        raise DatasetError(f"{PREFIX}: {path}: devkit file not found") from None
    except Exception as exc:  # scipy raises ValueError, TypeError, KeyError... on files that are not meta.mat
        raise DatasetError(f"{PREFIX}: {path}: not the devkit's meta.mat ({type(exc).__name__}: {exc})") from None
    fields = synsets.dtype.names or ()
    if "ILSVRC2012_ID" not in fields or "WNID" not in fields:
        raise DatasetError(f"{PREFIX}: {path}: synsets lack the ILSVRC2012_ID and WNID fields "
                           f"(has: {', '.join(fields)})")
    leaf = "num_children" in fields
    return {int(_scalar(s["ILSVRC2012_ID"])): str(_scalar(s["WNID"])) for s in synsets.reshape(-1)
            if not leaf or int(_scalar(s["num_children"])) == 0}


def _ground_truth(path: Path) -> list[int]:
    """ILSVRC2012_ID of validation image i (1-based) at index i - 1."""
    if not path.is_file():
        raise DatasetError(f"{PREFIX}: {path}: devkit file not found")
    ids = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            if not line.strip().isdigit():
                raise DatasetError(f"{PREFIX}: {path}:{n}: expected an ILSVRC2012_ID, got {line.strip()!r}")
            ids.append(int(line))
    return ids


def devkit_labels(devkit: Path, images: list[Path]) -> tuple[list[str], list[str]]:
    """WordNet ID of each image (by its number in ILSVRC2012_val_NNNNNNNN), and the class WordNet IDs."""
    wnid_of = read_meta(devkit / META)
    truth = _ground_truth(devkit / GROUND_TRUTH)
    labels = []
    for image in images:
        match = VAL_NAME.fullmatch(image.stem)
        if match is None:
            raise DatasetError(f"{PREFIX}: {image}: not an ImageNet validation file name "
                               f"(ILSVRC2012_val_NNNNNNNN.JPEG), so the devkit has no label for it")
        number = int(match.group(1))
        if not 1 <= number <= len(truth):
            raise DatasetError(f"{PREFIX}: {image}: image {number} is beyond the {len(truth)} lines of "
                               f"{devkit / GROUND_TRUTH}")
        if truth[number - 1] not in wnid_of:
            raise DatasetError(f"{PREFIX}: {devkit / GROUND_TRUTH}:{number}: ILSVRC2012_ID {truth[number - 1]} "
                               f"is not a class of {devkit / META}")
        labels.append(wnid_of[truth[number - 1]])
    return labels, list(wnid_of.values())


def _image_key(name: str) -> str:
    """A labels file's NAME without its image extension, as files are matched by stem."""
    path = Path(name)
    return path.stem if path.suffix.lower() in IMAGE_EXTS else name


def read_labels(path: Path) -> dict[str, str | int]:
    """Image stem -> WordNet ID or class index, from a ``NAME<sep>LABEL`` file (see the module doc)."""
    if not path.is_file():
        raise DatasetError(f"{PREFIX}: {path}: labels file not found")
    out: dict[str, str | int] = {}
    first = True
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = re.split(r"[,\s]+", line.strip(), maxsplit=2)
        label = parts[1] if len(parts) > 1 else ""
        header, first = first, False
        if not (WNID.fullmatch(label) or label.isdigit()):
            if header:  # such as ImageId,PredictionString
                continue
            raise DatasetError(f"{PREFIX}: {path}:{n}: expected NAME<sep>LABEL with LABEL a WordNet ID "
                               f"(n01440764) or a class index, got {line.strip()[:80]!r}")
        key, value = _image_key(parts[0]), label if WNID.fullmatch(label) else int(label)
        if out.get(key, value) != value:
            raise DatasetError(f"{PREFIX}: {path}:{n}: {parts[0]} labelled twice ({out[key]} and {value})")
        out[key] = value
    if not out:
        raise DatasetError(f"{PREFIX}: {path}: no labels")
    if len({type(v) for v in out.values()}) > 1:
        raise DatasetError(f"{PREFIX}: {path}: mixes WordNet IDs and class indices; use one kind")
    return out


def read_classes(path: Path) -> list[str]:
    """The WordNet IDs of a classes file: the first word of each non-empty line."""
    if not path.is_file():
        raise DatasetError(f"{PREFIX}: {path}: classes file not found")
    wnids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    bad = [w for w in wnids if not WNID.fullmatch(w)]
    if bad or not wnids or len(set(wnids)) != len(wnids):
        problem = f"{bad[0]!r} is not a WordNet ID" if bad else "repeats a WordNet ID" if wnids else "is empty"
        raise DatasetError(f"{PREFIX}: {path}: {problem} (expected one WordNet ID such as n01440764 per line)")
    return wnids


def file_labels(options: dict[str, Path], images: list[Path]) -> tuple[list[str | int], list[str] | None]:
    """Each image's label from the labels file, and the class WordNet IDs (None: not given)."""
    labels = read_labels(options["labels"])
    classes = read_classes(options["classes"]) if "classes" in options else None
    missing = [p for p in images if p.stem not in labels]
    if missing:
        raise DatasetError(f"{PREFIX}: {missing[0]}: no label in {options['labels']} "
                           f"({len(missing)} of {len(images)} images have none)")
    if classes is None and isinstance(next(iter(labels.values())), str):
        classes = sorted(set(labels.values()))  # all of the file, not just the images present
    return [labels[p.stem] for p in images], classes


def _indices(labels: list[str | int], classes: list[str] | None, source: Path) -> tuple[list[int], list[str]]:
    """Class indices (position in the sorted class WordNet IDs) and the class names in that order."""
    if classes is None:  # class indices without names
        return [int(v) for v in labels], [str(i) for i in range(max(map(int, labels)) + 1)]
    order = sorted(classes)
    index = {w: i for i, w in enumerate(order)}
    out = []
    for v in labels:
        i = index.get(v) if isinstance(v, str) else v
        if i is None or i >= len(order):
            raise DatasetError(f"{PREFIX}: {source}: label {v} is not one of the {len(order)} classes")
        out.append(i)
    return out, order


def val_listing(arg: str) -> tuple[Path, list[tuple[Path, int]], list[str]]:
    """(folder, (file, class index) pairs, class names) of an ``imagenet-val:`` spec's argument."""
    root, options = parse_spec(arg)
    images = list_images(root)
    options = options or discover(root)
    if "devkit" in options:
        labels, classes = devkit_labels(options["devkit"], images)
        source = options["devkit"]
    else:
        labels, classes = file_labels(options, images)
        source = options.get("classes", options["labels"])
    index, names = _indices(labels, classes, source)
    return root, list(zip(images, index)), names
