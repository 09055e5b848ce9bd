"""Datasets by name and BatchAugment: tiny data made in tmp_path, never the network."""

from __future__ import annotations

import gzip
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

import partialft.data.memory as data_memory
from partialft.data import AugmentConfig, BatchAugment, build_datasets, parse_randaugment
from partialft.data.augment import crop_boxes
from partialft.errors import PartialFTError


def _save_image(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (20, 14)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


# --- digits --------------------------------------------------------------------------------

def test_digits_shapes_classes_and_stratification() -> None:
    ds = build_datasets("digits", val_fraction=0.1, seed=0)
    assert ds.in_memory and ds.num_classes == 10 and ds.classes == [str(i) for i in range(10)]
    assert len(ds.train) + len(ds.val) + len(ds.test) == 1797
    img, label = ds.train[0]
    assert img.shape == (1, 8, 8) and img.dtype == torch.uint8 and isinstance(label, int)
    assert int(ds.train.images.max()) == 255  # 0..16 scaled to the uint8 range
    total = Counter(ds.train.labels.tolist() + ds.val.labels.tolist() + ds.test.labels.tolist())
    for part in (ds.train, ds.val, ds.test):  # each split holds every class in its share
        counts, share = Counter(part.labels.tolist()), len(part) / 1797
        assert all(abs(counts[c] - share * n) <= 1.5 for c, n in total.items())
    all_idx = ds.split["train"] + ds.split["val"] + ds.split["test"]
    assert sorted(all_idx) == list(range(1797))


def test_digits_split_depends_only_on_seed() -> None:
    a, b = build_datasets("digits", seed=3), build_datasets("digits", seed=3)
    c = build_datasets("digits", seed=4)
    assert a.split["val"] == b.split["val"] and torch.equal(a.val.images, b.val.images)
    assert a.split["val"] != c.split["val"]


# --- synthetic -----------------------------------------------------------------------------

def test_synthetic_is_deterministic_per_seed() -> None:
    a, b, c = (build_datasets(n, seed=s) for n, s in (("synthetic:5", 1), ("synthetic:5", 1),
                                                       ("synthetic:5", 2)))
    assert a.num_classes == 5 and len(a.classes) == 5
    assert torch.equal(a.train.images, b.train.images)
    assert torch.equal(a.train.labels, b.train.labels)
    assert not torch.equal(a.train.images, c.train.images)
    assert a.train.images.dtype == torch.uint8 and set(a.test.labels.tolist()) == set(range(5))


def test_synthetic_is_learnable_in_a_few_steps() -> None:
    torch.manual_seed(0)
    ds = build_datasets("synthetic", seed=0)
    prep = BatchAugment(8, 3, (0.5,), (0.25,), train=False)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, ds.num_classes))
    x, y = prep(ds.train.images), ds.train.labels
    for _ in range(10):  # plain gradient descent (torch.optim's first import costs seconds)
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.1 * p.grad
    with torch.no_grad():
        acc = (model(prep(ds.val.images)).argmax(1) == ds.val.labels).float().mean()
    assert acc >= 0.9


# --- folder:PATH ---------------------------------------------------------------------------

def _tiny_folder(root: Path) -> None:
    for split, n in (("train", 3), ("val", 2), ("test", 1)):
        for cls, color in (("cat", (200, 10, 10)), ("dog", (10, 10, 200))):
            for i in range(n):
                _save_image(root / split / cls / f"{i}.png", color)


def test_folder_dataset(tmp_path: Path) -> None:
    _tiny_folder(tmp_path)
    ds = build_datasets(f"folder:{tmp_path}", img_size=16)
    assert not ds.in_memory and ds.classes == ["cat", "dog"] and ds.num_classes == 2
    assert (len(ds.train), len(ds.val), len(ds.test)) == (6, 4, 2)
    img, label = ds.val[3]
    assert img.shape == (3, 16, 16) and img.dtype == torch.float32 and label == 1
    assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0
    assert img[2].mean() > 0.7 and img[0].mean() < 0.1  # the blue dog image
    assert ds.train[0][0].shape == (3, 16, 16)
    small = build_datasets(f"folder:{tmp_path}", img_size=16, max_per_split=2)
    assert (len(small.train), len(small.val), len(small.test)) == (2, 2, 2)


def test_folder_corrupt_image_names_the_file(tmp_path: Path) -> None:
    _tiny_folder(tmp_path)
    bad = tmp_path / "val" / "dog" / "broken.png"
    bad.write_bytes(b"not an image at all")
    ds = build_datasets(f"folder:{tmp_path}", img_size=16)
    index = [i for i, (p, _) in enumerate(ds.val.samples) if p == str(bad)][0]
    with pytest.raises(PartialFTError, match="broken.png"):
        ds.val[index]


def _noisy_images(n: int, classes: int, size: tuple[int, int], seed: int = 0
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 3, h, w) uint8 images: a colour per class plus noise, so resizing changes pixels."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    colours = torch.randint(40, 216, (classes, 3, 1, 1), generator=gen).float()
    noise = 40.0 * torch.randn((n, 3, *size), generator=gen)
    return (colours[labels] + noise).round().clamp(0, 255).to(torch.uint8), labels


def _write_folder(root: Path, split: str, images: torch.Tensor, labels: torch.Tensor) -> list:
    """PNG files (lossless) root/split/c<label>/<i>.png; returns the indices in ImageFolder's
    order (by class, then file name)."""
    for i, (img, label) in enumerate(zip(images, labels.tolist())):
        path = root / split / f"c{label}" / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(path)
    return sorted(range(len(labels)), key=lambda i: (int(labels[i]), i))


def test_folder_and_in_memory_images_reach_the_model_identically(tmp_path: Path) -> None:
    """The same images as a folder: tree and as an in-memory tensor set, evaluated by the
    trainer's evaluation (loaders.evaluate) and by partialft eval's (eval_preprocess): equal
    predictions and accuracy, with no tolerance (the model inputs are bit-identical)."""
    from contextlib import nullcontext
    from types import SimpleNamespace

    import timm

    from partialft.analysis.evaluate import accuracy
    from partialft.cli.eval import eval_preprocess
    from partialft.data import TensorImageDataset, resolve_preprocess
    from partialft.training.loaders import evaluate

    images, labels = _noisy_images(30, 3, (29, 21))  # not square, not img_size: resize + crop
    order = _write_folder(tmp_path, "train", images, labels)
    _write_folder(tmp_path, "val", images, labels)
    memory = TensorImageDataset(images[order], labels[order])
    torch.manual_seed(0)
    model = timm.create_model("test_vit", num_classes=3, img_size=32).eval()
    pre = resolve_preprocess(model)  # test_vit: crop_pct 0.95, bicubic
    assert (pre["crop_pct"], pre["interpolation"]) == (0.95, "bicubic")
    folder = build_datasets(f"folder:{tmp_path}", img_size=32, crop_pct=pre["crop_pct"],
                            interpolation=pre["interpolation"]).val
    prep = eval_preprocess(model, {"img_size": 32, **pre}, "cpu")
    from_files = prep(torch.stack([folder[i][0] for i in range(len(folder))]))
    assert torch.equal(from_files, prep(memory.images))
    with torch.no_grad():
        assert torch.equal(model(from_files).argmax(1), model(prep(memory.images)).argmax(1))
    one = SimpleNamespace(process_index=0, num_processes=1, device=torch.device("cpu"),
                          autocast=nullcontext, reduce=lambda t, reduction: t)
    accs = [evaluate(model, ds, prep, one, batch_size=7) for ds in (folder, memory)]
    loaders = [torch.utils.data.DataLoader(ds, batch_size=7) for ds in (folder, memory)]
    assert accs[0] == accs[1] == accuracy(model, loaders[0], prep) == accuracy(
        model, loaders[1], prep)


def test_preprocessing_resolved_from_the_model_is_recorded(tmp_path: Path) -> None:
    import yaml
    from conftest import tiny_run

    from partialft.data import resolve_preprocess
    from partialft.models import shape_model
    from partialft.training.train import train

    run = tmp_path / "run"
    train(tiny_run(run, epochs=1), progress=False)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    expected = {"crop_pct": 0.95, "interpolation": "bicubic", "mean": [0.5] * 3,
                "std": [0.5] * 3}  # test_vit's pretrained config
    resolved = resolve_preprocess(shape_model("test_vit"))
    assert {k: saved[k] for k in expected} == expected == resolved
    assert train(tiny_run(run, epochs=1), resume=True, progress=False) is not None  # same flags


def test_preprocessing_flags_override_the_model_and_reach_eval_and_soups(tmp_path: Path
                                                                         ) -> None:
    import yaml

    from partialft.cli import main
    from partialft.cli.eval import eval_preprocess
    from partialft.cli.soup import make_evaluator
    from partialft.data import EvalResize, load_rgb
    from partialft.models import load_state_dict_file
    from partialft.training.runs import load_run_model, run_datasets

    images, labels = _noisy_images(24, 2, (23, 17))
    _write_folder(tmp_path / "data", "train", images[:16], labels[:16])
    _write_folder(tmp_path / "data", "val", images[16:], labels[16:])
    run = tmp_path / "run"
    assert main(["train", "--model", "test_vit", "--no-pretrained", "--dataset",
                 f"folder:{tmp_path / 'data'}", "--img-size", "32", "--epochs", "1",
                 "--batch-size", "4", "--amp", "no", "--no-progress", "--out", str(run),
                 "--crop-pct", "0.8", "--interpolation", "bilinear", "--mean", "0.4,0.45,0.5",
                 "--std", "0.2"]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert (saved["crop_pct"], saved["interpolation"]) == (0.8, "bilinear")
    assert (saved["mean"], saved["std"]) == ([0.4, 0.45, 0.5], [0.2])
    model, summary = load_run_model(run)
    prep = eval_preprocess(model, saved, "cpu")
    assert (prep.crop_pct, prep.interpolation) == (0.8, "bilinear")
    assert prep.mean.flatten().tolist() == pytest.approx([0.4, 0.45, 0.5])
    assert prep.std.flatten().tolist() == pytest.approx([0.2] * 3)
    val = run_datasets(run, "val")
    first = load_rgb(tmp_path / "data" / "val" / "c0" / "000.png")
    assert torch.equal(val[0][0], EvalResize(32, 0.8, "bilinear")(first))
    evaluator = make_evaluator(str(run), "val", "cpu", batch_size=4)
    assert evaluator(load_state_dict_file(run / "delta.safetensors")) == summary["final_acc"]


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(PartialFTError, match="no train/"):
        build_datasets(f"folder:{tmp_path}")
    _tiny_folder(tmp_path)
    _save_image(tmp_path / "val" / "bird" / "0.png", (0, 200, 0))
    with pytest.raises(PartialFTError, match="same class folders"):
        build_datasets(f"folder:{tmp_path}")


# --- CUB / NABirds layouts -----------------------------------------------------------------

def _fake_cub(root: Path, class_ids: tuple[int, int] = (1, 2)) -> None:
    lines = {"images.txt": [], "image_class_labels.txt": [], "train_test_split.txt": []}
    for k in range(10):
        cid = class_ids[k % 2]
        rel = f"{cid:03d}.Bird{cid}/img_{k}.jpg"
        _save_image(root / "images" / rel, (25 * k, 100, 50 * (k % 2)))
        lines["images.txt"].append(f"{k + 1} {rel}")
        lines["image_class_labels.txt"].append(f"{k + 1} {cid}")
        lines["train_test_split.txt"].append(f"{k + 1} {int(k < 8)}")
    for name, rows in lines.items():
        (root / name).write_text("\n".join(rows) + "\n")
    (root / "classes.txt").write_text("".join(f"{c} {c:03d}.Bird {c}\n" for c in class_ids))


def test_cub_layout_counts_and_split_file(tmp_path: Path) -> None:
    _fake_cub(tmp_path / "CUB_200_2011")
    split_file = tmp_path / "run" / "split.json"
    ds = build_datasets("cub", data_dir=tmp_path, img_size=12, val_fraction=0.25, seed=0,
                        split_file=split_file)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (6, 2, 2)
    assert ds.num_classes == 2 and ds.classes == ["001.Bird 1", "002.Bird 2"]
    assert ds.train[0][0].shape == (3, 12, 12) and ds.val[0][0].shape == (3, 12, 12)
    saved = json.loads(split_file.read_text())
    assert saved["num_items"] == 8 and sorted(saved["train"] + saved["val"]) == list(range(8))
    # a later build with another seed reads the recorded split back
    again = build_datasets("cub", data_dir=tmp_path, img_size=12, val_fraction=0.5, seed=9,
                           split_file=split_file)
    assert again.split["val"] == saved["val"] and len(again.val) == 2
    fresh = [build_datasets("cub", data_dir=tmp_path, val_fraction=0.25, seed=s).split["val"]
             for s in range(6)]
    assert len({tuple(v) for v in fresh}) > 1  # the split really depends on the seed


def test_split_file_of_another_dataset_is_refused(tmp_path: Path) -> None:
    _fake_cub(tmp_path)
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps({"num_items": 99, "train": [0], "val": [1]}))
    with pytest.raises(PartialFTError, match="split.json"):
        build_datasets("cub", data_dir=tmp_path, split_file=split_file)


def test_nabirds_class_ids_are_made_contiguous(tmp_path: Path) -> None:
    _fake_cub(tmp_path / "nabirds", class_ids=(295, 817))
    ds = build_datasets("nabirds", data_dir=tmp_path, img_size=8, val_fraction=0.25)
    labels = {ds.test[i][1] for i in range(len(ds.test))}
    assert ds.num_classes == 2 and labels <= {0, 1}


def test_missing_fgvc_files_name_the_path(tmp_path: Path) -> None:
    for name in ("cub", "nabirds", "flowers", "dogs", "cars"):
        with pytest.raises(PartialFTError, match=str(tmp_path)):
            build_datasets(name, data_dir=tmp_path)
    _fake_cub(tmp_path)
    (tmp_path / "images" / "001.Bird1" / "img_0.jpg").unlink()
    with pytest.raises(PartialFTError, match="img_0.jpg"):
        build_datasets("cub", data_dir=tmp_path)


def test_stanford_dogs_lists(tmp_path: Path) -> None:
    from scipy.io import savemat

    for split, n in (("train", 6), ("test", 2)):
        files = [f"n0{c}-Breed{c}/{split}_{i}.jpg" for i in range(n) for c in (1, 2)]
        for f in files:
            _save_image(tmp_path / "Images" / f, (40, 80, 120))
        (tmp_path / "lists").mkdir(exist_ok=True)
        labels = [int(f[2]) for f in files]
        savemat(tmp_path / "lists" / f"{split}_list.mat",
                {"file_list": np.array(files, dtype=object).reshape(-1, 1),
                 "labels": np.array(labels).reshape(-1, 1)})
    ds = build_datasets("dogs", data_dir=tmp_path, img_size=8, val_fraction=0.25)
    assert ds.classes == ["Breed1", "Breed2"]
    assert (len(ds.train), len(ds.val), len(ds.test)) == (9, 3, 4)
    assert {ds.test[i][1] for i in range(4)} == {0, 1}


# --- Fashion-MNIST from idx files ------------------------------------------------------------

def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _fake_fashion(folder: Path, gz: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (20, 28, 28)),
              "train-labels-idx1-ubyte": np.arange(20) % 10,
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (5, 28, 28)),
              "t10k-labels-idx1-ubyte": np.arange(5) % 10}
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        data = _idx_bytes(arr)
        (folder / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_idx_files(tmp_path: Path, gz: bool) -> None:
    arrays = _fake_fashion(tmp_path / "FashionMNIST" / "raw", gz)
    ds = build_datasets("fashion-mnist", data_dir=tmp_path, val_fraction=0.25, download=False)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (15, 5, 5)
    assert ds.num_classes == 10 and ds.classes[1] == "Trouser"
    assert torch.equal(ds.test.images[:, 0], torch.from_numpy(
        arrays["t10k-images-idx3-ubyte"].astype(np.uint8)))
    assert ds.train[0][0].shape == (1, 28, 28) and ds.train[0][0].dtype == torch.uint8


def test_fashion_mnist_default_lookup_finds_the_debian_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_fashion(tmp_path / "debian", gz=True)
    monkeypatch.setattr(data_memory, "FASHION_MNIST_DIRS", (tmp_path / "debian",))
    monkeypatch.setenv("PARTIALFT_DATA_DIR", str(tmp_path / "empty"))
    ds = build_datasets("fashion-mnist", download=False)
    assert len(ds.test) == 5


# --- CIFAR without a network ---------------------------------------------------------------

@pytest.fixture
def no_download(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything tries to download."""
    import torchvision.datasets.cifar as tv_cifar

    def boom(*args, **kwargs):
        raise AssertionError("a test tried to download")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", boom)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_offline_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  no_download: None, name: str) -> None:
    monkeypatch.setattr(data_memory, "reachable", lambda url, timeout=3.0: False)
    start = time.perf_counter()
    with pytest.raises(PartialFTError, match="pass data_dir=DIR") as err:  # the keyword
        build_datasets(name, data_dir=tmp_path)
    assert "pass --data-dir DIR" in err.value.for_cli()
    with pytest.raises(PartialFTError, match=str(tmp_path)):
        build_datasets(name, data_dir=tmp_path, download=False)
    assert time.perf_counter() - start < 2.0


def test_cifar_failed_download_is_a_clear_error(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from urllib.error import URLError

    import torchvision.datasets.cifar as tv_cifar

    def refuse(*args, **kwargs):
        raise URLError("connection refused")

    monkeypatch.setattr(data_memory, "reachable", lambda url, timeout=3.0: True)
    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", refuse)
    with pytest.raises(PartialFTError, match="downloading cifar10"):
        build_datasets("cifar10", data_dir=tmp_path)


def test_reachable_is_quick_for_a_closed_port() -> None:
    start = time.perf_counter()
    assert not data_memory.reachable("http://127.0.0.1:9/", timeout=1.0)
    assert time.perf_counter() - start < 3.0


# --- names ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["imagenet-x", "cifar", "folder:", "digits:3", "synthetic:1"])
def test_bad_names(name: str) -> None:
    with pytest.raises(PartialFTError) as err:
        build_datasets(name)
    assert name.split(":")[0] in str(err.value)


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(PartialFTError, match="cifar10, cifar100.*folder:PATH"):
        build_datasets("mnist")


def test_max_per_split_keeps_the_first_items() -> None:
    full, small = build_datasets("digits"), build_datasets("digits", max_per_split=7)
    assert (len(small.train), len(small.val), len(small.test)) == (7, 7, 7)
    assert torch.equal(small.train.images, full.train.images[:7])


# --- BatchAugment --------------------------------------------------------------------------

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def test_batch_augment_eval_is_resize_and_normalize() -> None:
    x = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    aug = BatchAugment(24, 3, MEAN, STD, train=False)
    out = aug(x)
    assert out.shape == (4, 3, 24, 24) and out.dtype == torch.float32
    assert torch.equal(out, aug(x))  # deterministic
    ref = nn.functional.interpolate(x.float().div(255).expand(-1, 3, -1, -1), size=24,
                                    mode="bilinear", antialias=True)
    ref = (ref - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(aug(x.float() / 255), out, atol=1e-5)  # float input in [0, 1]


def test_batch_augment_train_shapes_and_randomness() -> None:
    torch.manual_seed(0)
    cfg = AugmentConfig(randaugment="rand-m9-mstd0.5-inc1", hflip=0.5, random_erasing=0.5)
    x = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    aug = BatchAugment(20, 3, MEAN, STD, train=True, cfg=cfg)
    a, b = aug(x), aug(x)
    assert a.shape == b.shape == (6, 3, 20, 20) and a.dtype == torch.float32
    assert torch.isfinite(a).all() and not torch.equal(a, b)
    gray = BatchAugment(20, 1, MEAN, STD, train=True, cfg=cfg)(x)  # 3 -> 1 channels
    assert gray.shape == (6, 1, 20, 20)
    floats = aug(x.float() / 255)
    assert floats.shape == (6, 3, 20, 20) and floats.dtype == torch.float32


def test_batch_augment_leaves_loader_cropped_batches_alone() -> None:
    x = torch.rand(3, 3, 16, 16)  # a file dataset's batch: float, already img_size
    train = BatchAugment(16, 3, MEAN, STD, train=True, cfg=AugmentConfig(hflip=1.0))
    evaluate = BatchAugment(16, 3, MEAN, STD, train=False)
    assert torch.equal(train(x), evaluate(x))
    forced = BatchAugment(16, 3, MEAN, STD, train=True,
                          cfg=AugmentConfig(hflip=1.0, crop_scale=1.0, geometric=True))
    assert torch.allclose(forced(x), evaluate(x).flip(-1))


def test_crop_boxes_stay_inside_the_image() -> None:
    torch.manual_seed(0)
    boxes = crop_boxes(500, 10, 30, (0.08, 1.0), (3 / 4, 4 / 3), torch.device("cpu"))
    assert boxes.shape == (500, 5) and torch.equal(boxes[:, 0], torch.arange(500.0))
    assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= 30 + 1e-4).all()
    assert (boxes[:, 2] >= 0).all() and (boxes[:, 4] <= 10 + 1e-4).all()
    area = (boxes[:, 3] - boxes[:, 1]) * (boxes[:, 4] - boxes[:, 2])
    assert area.min() >= 0.08 * 300 - 1e-3 and area.std() > 10


@pytest.mark.parametrize("spec", ["rand-m11", "rand-x3", "augmix-m3", "rand-mfoo", "rand-n0",
                                  "rand-m9.5", "rand-p1.5", "rand-inc2", "rand-tfoo",
                                  "rand-m12-mmax11", "rand-n16-tweights", "rand-mmax0"])
def test_bad_randaugment_strings(spec: str) -> None:
    with pytest.raises(PartialFTError, match=spec):
        AugmentConfig(randaugment=spec)


def test_randaugment_string_and_config_validation() -> None:
    assert parse_randaugment("rand-m7-n3-mstd0.5-inc1") == {
        "m": 7, "n": 3, "p": 0.5, "mstd": 0.5, "mmax": None, "inc": 1, "t": None}
    assert parse_randaugment("rand-mstd101-mmax20-m15-p0.3-tweights") == {
        "m": 15, "n": 2, "p": 0.3, "mstd": 101.0, "mmax": 20, "inc": 0, "t": "weights"}
    assert AugmentConfig(crop_scale=0.5).crop_scale == (0.5, 1.0)
    for bad in ({"crop_scale": (0.0, 1.0)}, {"hflip": 1.5}, {"random_erasing": -0.1}):
        with pytest.raises(PartialFTError):
            AugmentConfig(**bad)
    with pytest.raises(PartialFTError, match="channels"):
        BatchAugment(8, 2, MEAN, STD, train=False)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batch_augment_runs_on_the_gpu() -> None:
    cfg = AugmentConfig(randaugment="rand-m9-mstd0.5-inc1", random_erasing=0.5)
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, device="cuda")
    out = BatchAugment(64, 3, MEAN, STD, train=True, cfg=cfg)(x)
    assert out.device.type == "cuda" and out.shape == (8, 3, 64, 64)


# --- torchvision-read FGVC sets (Stanford Cars, Flowers 102) ---------------------------------

def test_stanford_cars_devkit(tmp_path: Path) -> None:
    from scipy.io import savemat

    root = tmp_path / "stanford_cars"
    kinds = [("fname", "O"), ("class", "O")]
    for split, n, mat in (("train", 8, root / "devkit" / "cars_train_annos.mat"),
                          ("test", 4, root / "cars_test_annos_withlabels.mat")):
        rows = [(f"{i:05d}.jpg", i % 2 + 1) for i in range(n)]
        for fname, _ in rows:
            _save_image(root / f"cars_{split}" / fname, (90, 90, 90))
        mat.parent.mkdir(parents=True, exist_ok=True)
        savemat(mat, {"annotations": np.array(rows, dtype=kinds).reshape(1, -1)})
    savemat(root / "devkit" / "cars_meta.mat",
            {"class_names": np.array(["Audi A1", "BMW M3"], dtype=object).reshape(1, -1)})
    for data_dir in (tmp_path, root):  # the parent or the folder itself
        ds = build_datasets("cars", data_dir=data_dir, img_size=8, val_fraction=0.25)
        assert ds.classes == ["Audi A1", "BMW M3"] and ds.num_classes == 2
        assert (len(ds.train), len(ds.val), len(ds.test)) == (6, 2, 4)
        assert ds.test[1][1] == 1 and ds.train[0][0].shape == (3, 8, 8)


def test_flowers_official_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from scipy.io import savemat
    from torchvision.datasets import Flowers102

    root = tmp_path / "flowers-102"
    for i in range(1, 7):
        _save_image(root / "jpg" / f"image_{i:05d}.jpg", (0, 30 * i, 0))
    savemat(root / "imagelabels.mat", {"labels": np.array([[1, 2, 1, 2, 1, 102]])})
    savemat(root / "setid.mat", {"trnid": np.array([[1, 2]]), "valid": np.array([[3, 4]]),
                                 "tstid": np.array([[5, 6]])})
    # our fake .mat files cannot match torchvision's MD5 check of the real ones
    monkeypatch.setattr(Flowers102, "_check_integrity", lambda self: True)
    ds = build_datasets("flowers", data_dir=tmp_path, img_size=8)
    assert ds.num_classes == 102 and (len(ds.train), len(ds.val), len(ds.test)) == (2, 2, 2)
    assert [ds.test[i][1] for i in range(2)] == [0, 101] and ds.split is None


def test_without_a_random_crop_training_sees_the_view_evaluation_sees():
    """No crop, no flip: train and eval preprocess a raw batch identically (same resize)."""
    x = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)  # digits-sized
    cfg = AugmentConfig(crop_scale=(1.0, 1.0), hflip=0.0)
    make = lambda train: BatchAugment(32, 3, (0.5,), (0.5,), train=train, cfg=cfg,  # noqa: E731
                                      crop_pct=1.0, interpolation="bicubic")
    assert torch.equal(make(True)(x), make(False)(x))
