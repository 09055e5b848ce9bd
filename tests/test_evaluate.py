"""Accuracy, corruptions, mCE, ImageNet-A/R/C folder evaluation, eval.json, the eval CLI."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from partialft.analysis.evaluate import (
    accuracy,
    corruption_eval,
    eval_key,
    imagenet_ar_eval,
    imagenet_c_eval,
    imagenet_c_protocol,
    imagenet_subset,
    imagenet_wnids,
    save_eval,
)
from partialft.data.corruptions import (
    ALEXNET_ERR,
    BENCHMARK,
    corrupt_batch,
    mce,
    parse_corruptions,
    parse_severities,
)
from partialft.errors import PartialFTError


class Brightness(nn.Module):
    """Predicts class round(mean intensity / 60): perfect on flat images of value 60 * label."""

    num_classes = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        level = x.float().mean((1, 2, 3)) / 60.0
        return -(level[:, None] - torch.arange(4.0)[None]).abs()


def flat_images(n: int = 8, size: int = 32, channels: int = 3) -> TensorDataset:
    labels = torch.arange(n) % 4
    images = (labels * 60).to(torch.uint8)[:, None, None, None].expand(n, channels, size, size)
    return TensorDataset(images.clone(), labels)


def test_corrupt_batch_changes_images_reproducibly_and_upscales_tiny_ones():
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    y1, y2 = corrupt_batch(x, "gaussian_noise", 2, seed=3), corrupt_batch(x, "gaussian_noise", 2, 3)
    assert y1.dtype == torch.uint8 and y1.shape == x.shape
    assert torch.equal(y1, y2) and not torch.equal(y1, x)
    tiny = torch.rand(2, 1, 8, 8)  # float [0, 1], one channel, below the package's 32 px
    out = corrupt_batch(tiny, "glass_blur", 1)
    assert out.shape == (2, 1, 32, 32) and out.dtype == torch.uint8


@pytest.mark.parametrize("name", ["fog", "frost", "zoom_blur", "gaussian_blur"])
def test_corruptions_needing_compat_shims_run(name):
    x = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    assert corrupt_batch(x, name, 5).shape == (1, 3, 32, 32)


def test_the_import_shims_stay_inside_imagecorruptions():
    """The pkg_resources stand-in exists only while imagecorruptions imports: left behind it
    broke everyone else's pkg_resources (pytest's syspath_prepend imports it)."""
    import importlib.util
    import sys

    from partialft.data.corruptions import _imagecorruptions

    _imagecorruptions.cache_clear()
    before = sys.modules.get("pkg_resources")
    module = _imagecorruptions()
    assert sys.modules.get("pkg_resources") is before
    if importlib.util.find_spec("pkg_resources") is None:  # the shim was used: frost still works
        assert corrupt_batch(torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "frost", 1).ndim == 4
    assert hasattr(module, "corrupt")


def test_parsers():
    assert parse_corruptions("all") == list(BENCHMARK)
    assert parse_corruptions("fog,contrast") == ["fog", "contrast"]
    assert parse_severities("1-5") == [1, 2, 3, 4, 5] and parse_severities("3,1") == [1, 3]
    with pytest.raises(PartialFTError, match="did you mean"):
        parse_corruptions("gausian_noise")
    with pytest.raises(PartialFTError, match="severities"):
        parse_severities("0-6")


def test_mce_normalizes_by_alexnet():
    errors = {n: {s: 100 * ALEXNET_ERR[n] for s in range(1, 6)} for n in BENCHMARK}
    result = mce(errors)
    assert result["mce"] == pytest.approx(100.0) and result["complete"]
    half = {"fog": {s: 50 * ALEXNET_ERR["fog"] for s in range(1, 6)}}
    partial = mce(half)
    assert partial["ce"]["fog"] == pytest.approx(50.0) and not partial["complete"]
    assert mce({"fog": {1: 10.0}})["mce"] is None  # incomplete severities do not count


def test_corruption_eval_on_tiny_model():
    loader = DataLoader(flat_images(), batch_size=4)
    model = Brightness()
    assert accuracy(model, loader) == 100.0
    result = corruption_eval(model, loader, ["brightness", "impulse_noise"], [1, 2])
    cells = [e for by in result["errors"].values() for e in by.values()]
    assert set(result["errors"]) == {"brightness", "impulse_noise"}
    assert all(0.0 <= e <= 100.0 for e in cells)
    assert result["mean_corruption_error"] == pytest.approx(sum(cells) / 4)
    assert result["errors"]["brightness"]["2"] > 0  # brighter flat images read as other classes
    assert "mce_vs_alexnet" not in result  # only with all five severities


def test_imagenet_subsets_match_timm_wnids():
    wnids = imagenet_wnids()
    for name, head in (("imagenet-a", [6, 11, 13, 15, 17]), ("imagenet-r", [1, 2, 4, 6, 8])):
        indices, subset = imagenet_subset(name)
        assert len(indices) == 200 and indices[:5] == head and indices == sorted(indices)
        assert [wnids[i] for i in indices] == subset


class ColourOracle(nn.Module):
    """1000-class model: red images -> class ``red``, others -> ``other``; with ``decoy``,
    class 0 (outside the ImageNet-A/R masks) always has the largest logit."""

    num_classes = 1000

    def __init__(self, red: int, other: int, decoy: bool = True) -> None:
        super().__init__()
        self.red, self.other, self.decoy = red, other, decoy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(x), 1000)
        is_red = x[:, 0].mean((1, 2)) > x[:, 2].mean((1, 2))
        logits[:, 0] = 5.0 if self.decoy else 0.0  # outside the 200-class masks
        logits[is_red, self.red] = 1.0
        logits[~is_red, self.other] = 1.0
        return logits


def _write_images(folder, colour, n=2):
    folder.mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", (32, 32), colour).save(folder / f"{i}.png")


def test_imagenet_a_through_the_200_class_mask(tmp_path):
    indices, wnids = imagenet_subset("imagenet-a")
    _write_images(tmp_path / wnids[0], (255, 0, 0))
    _write_images(tmp_path / wnids[1], (0, 0, 255))
    result = imagenet_ar_eval(ColourOracle(indices[0], indices[1]), tmp_path, "imagenet-a")
    assert result["acc"] == 100.0 and result["images"] == 4
    swapped = imagenet_ar_eval(ColourOracle(indices[1], indices[0]), tmp_path, "imagenet-a")
    assert swapped["acc"] == 0.0
    with pytest.raises(PartialFTError, match="classes"):
        imagenet_ar_eval(Brightness(), tmp_path, "imagenet-a")


def test_imagenet_c_folders(tmp_path):
    wnids = imagenet_wnids()
    for sev in range(1, 6):
        _write_images(tmp_path / "fog" / str(sev) / wnids[3], (255, 0, 0))
        _write_images(tmp_path / "fog" / str(sev) / wnids[4], (0, 0, 255))
    result = imagenet_c_eval(ColourOracle(3, 3, decoy=False), tmp_path)  # red right, blue wrong
    assert result["errors"]["fog"] == {str(s): 50.0 for s in range(1, 6)}
    assert result["mean_corruption_error"] == pytest.approx(50.0)
    assert "mce_vs_alexnet" not in result  # one corruption is not the ImageNet-C protocol


def test_imagenet_c_folders_with_the_whole_protocol_give_the_alexnet_mce(tmp_path):
    wnids = imagenet_wnids()
    for name in BENCHMARK:
        for sev in range(1, 6):
            _write_images(tmp_path / name / str(sev) / wnids[3], (255, 0, 0), n=1)
            _write_images(tmp_path / name / str(sev) / wnids[4], (0, 0, 255), n=1)
    result = imagenet_c_eval(ColourOracle(3, 3, decoy=False), tmp_path)
    by_hand = sum(50.0 / ALEXNET_ERR[n] for n in BENCHMARK) / len(BENCHMARK)
    assert result["mce_vs_alexnet"]["mce"] == pytest.approx(by_hand)
    assert result["mce_vs_alexnet"]["complete"]


def test_the_alexnet_mce_needs_the_protocol_and_an_imagenet_model():
    every = {n: {s: 10.0 for s in range(1, 6)} for n in BENCHMARK}
    assert imagenet_c_protocol(every, 1000)
    assert not imagenet_c_protocol(every, 10)  # not an ImageNet-1K model
    assert not imagenet_c_protocol({**every, "fog": {1: 10.0}}, 1000)  # a severity missing
    assert not imagenet_c_protocol({n: every[n] for n in BENCHMARK[:14]}, 1000)


def test_save_eval_keeps_other_evaluations(tmp_path):
    save_eval(tmp_path, "a", {"clean_acc": 1.0})
    save_eval(tmp_path, "b", {"acc": 2.0})
    save_eval(tmp_path, "a", {"clean_acc": 3.0})  # the same evaluation again replaces itself
    assert json.loads((tmp_path / "eval.json").read_text()) == {"a": {"clean_acc": 3.0},
                                                                "b": {"acc": 2.0}}


def test_eval_keys_name_what_was_evaluated():
    assert eval_key("digits") == "digits"
    assert eval_key("digits", "val") == "digits:val"
    assert eval_key("digits", max_images=100) == "digits first 100"
    assert eval_key("digits", corruptions="all", severities="1-5", seed=0) == (
        "digits corruptions all severities 1-5 seed 0")
    keys = {eval_key("digits", max_images=n, corruptions=c, severities=s, seed=seed)
            for n in (None, 10) for c in (None, "all") for s in ("1-5", "1,3") for seed in (0, 1)}
    assert len(keys) == 2 * (1 + 2 * 2)  # without corruptions, severities and seed do not apply


@pytest.fixture
def run_copy(real_runs, tmp_path):
    """A real finished run dir (copied: these tests write eval.json into it)."""
    import shutil

    return shutil.copytree(real_runs["attn"], tmp_path / "attn")


@pytest.mark.slow
def test_cli_eval_keeps_each_evaluation(run_copy, capsys):
    from partialft.cli import main

    args = ["eval", str(run_copy), "--dataset", "synthetic:10", "--batch-size", "6",
            "--device", "cpu", "--no-progress"]
    assert main(args) == 0
    assert main(args + ["--max-images", "6"]) == 0
    assert main(args + ["--max-images", "6", "--corruptions", "gaussian_noise,contrast",
                        "--severities", "1-2"]) == 0
    assert main(args + ["--split", "val"]) == 0
    data = json.loads((run_copy / "eval.json").read_text())
    assert set(data) == {"synthetic:10", "synthetic:10 first 6", "synthetic:10:val",
                         "synthetic:10 first 6 corruptions gaussian_noise,contrast severities "
                         "1-2 seed 0"}
    whole = data["synthetic:10"]
    summary = json.loads((run_copy / "summary.json").read_text())
    assert whole["images"] == 30 and whole["clean_acc"] == pytest.approx(summary["test_acc"])
    res = data["synthetic:10 first 6 corruptions gaussian_noise,contrast severities 1-2 seed 0"]
    assert res["images"] == 6 and set(res["errors"]) == {"gaussian_noise", "contrast"}
    assert set(res["errors"]["contrast"]) == {"1", "2"}
    assert res["relative_corruption_error"] == pytest.approx(
        res["mean_corruption_error"] - (100 - res["clean_acc"]))
    assert "mce_vs_alexnet" not in res
    assert "relative corruption error" in capsys.readouterr().out
    assert main(["eval", str(run_copy), "--dataset", "imagenet-a"]) == 2
    assert "--data-dir" in capsys.readouterr().err
