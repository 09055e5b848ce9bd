"""One rule per setting for every verb that takes it, and settings too large for the machine
refused before work starts (issue 21): one sentence, exit code 2, no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import REAL, assert_user_error, cli, tiny_run

from partialft.errors import PartialFTError
from partialft.utils import limits
from partialft.utils.parse import MAX_DEPTH, load_json, load_yaml

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")
SELECT = [a for a in REAL if a != "--no-progress"]  # select has no progress bar
NO_LR = REAL[:REAL.index("--lr")] + REAL[REAL.index("--lr") + 2:]
DIGITS = ["--model", "test_vit", "--no-pretrained", "--dataset", "digits", "--img-size", "32",
          "--max-per-split", "40", "--batch-size", "8", "--epochs", "1", "--amp", "no"]
PRETRAIN = ["--categories", "3", "--steps", "3", "--batch-size", "4", "--warmup-steps", "1",
            "--val-per-category", "2", "--chains", "16", "--iters", "6", "--no-progress"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> str:
    """A finished tiny linear run (eval, soup, export and multitask read it)."""
    from partialft.training.train import train

    out = tmp_path_factory.mktemp("v") / "run"
    train(tiny_run(out, method="linear", epochs=1), progress=False)
    return str(out)


def _argv(verb: str, tmp: Path, run: str) -> list[str]:
    """A command line of ``verb`` that is valid until the bad flag is appended."""
    out = str(tmp / f"out-{verb}")
    return {
        "train": ["train", *REAL, "--out", out],
        "fapft": ["fapft", *REAL, "--mode", "large", "--out", out],
        "select": ["select", *SELECT, "--out", out],
        "pretrain": ["pretrain", "--out", out, *PRETRAIN],
        "plan": ["plan", "--model", "test_vit"],
        "eval": ["eval", run, "--dataset", "synthetic:4", "--no-progress"],
        "soup": ["soup", run, run, "--out", out],
        "export": ["export", run, "--out", out],
        "bench": ["bench", "--model", "test_vit", "--methods", "full", "--img-size", "32",
                  "--out", out],
        "multitask": ["multitask", run],
        "demo": ["demo", "--out", out],
    }[verb]


# (verbs, flags, what the one sentence must name)
TABLE = [
    (("train", "fapft", "select", "pretrain"), ["--lr", "1e308"], "lr 1e+308"),
    (("train", "fapft", "select", "pretrain"), ["--lr", "inf"], "lr inf"),
    (("train", "fapft", "select", "pretrain"), ["--lr", "nan"], "lr nan"),
    (("train", "fapft", "select", "pretrain"), ["--lr", "0"], "lr 0"),
    (("train", "fapft", "select", "pretrain"), ["--lr", "2e10"], "up to 1e+10"),
    (("train", "fapft", "pretrain"), ["--min-lr", "0.5"], "min_lr 0.5 is above lr"),
    (("train", "fapft", "select", "pretrain"), ["--label-smoothing", "1"], "label_smoothing 1"),
    (("train", "fapft", "select", "pretrain"), ["--label-smoothing", "-0.1"], "label_smoothing"),
    (("train", "fapft", "pretrain"), ["--weight-decay", "1e308"], "weight_decay 1e+308"),
    (("train", "fapft", "pretrain"), ["--weight-decay", "2e10"], "<= 1e+10"),
    (("train", "fapft", "pretrain"), ["--weight-decay", "-1"], "weight_decay -1"),
    (("train", "fapft", "select", "pretrain"), ["--seed", "-1"], "seed -1"),
    (("train", "fapft", "select", "pretrain"), ["--seed", str(2**32)], f"seed {2**32}"),
    (("train", "plan"), ["--method", "adapter", "--dim", "-1"], "--dim -1 is invalid"),
    (("train", "plan"), ["--method", "lora", "--rank", "0"], "--rank 0 is invalid"),
    (("train", "plan"), ["--method", "vpt-deep", "--tokens", "0"], "--tokens 0 is invalid"),
    (("train", "plan"), ["--method", "full", "--dim", "8"], "does not take the option --dim"),
    (("train", "plan"), ["--method", "lora", "--lora-rank", "4"], "now called --rank"),
    (("train", "fapft", "select", "pretrain", "eval", "soup", "export", "bench", "demo"),
     ["--threads", "100000"], "threads 100000"),
    (("train", "fapft", "select", "eval", "soup"), ["--workers", "-1"], ("workers", "-1")),
    (("train", "fapft", "select", "eval", "soup"), ["--workers", "100000"], "workers 100000"),
    (("train", "fapft", "select", "bench"), ["--img-size", "100000"], "size 100000"),
    (("train", "fapft", "select", "bench"), ["--img-size", "4096", "--batch-size", "100000"],
     "needs at least"),
    (("multitask",), ["--batch-size", "1000000000"], "needs at least"),
    (("eval", "soup", "multitask"), ["--device", "foo"], "--device 'foo'"),
    (("eval", "soup", "multitask"), ["--device", "meta"], "--device meta"),
    (("train", "fapft", "select"), ["--model-kwargs", "drop_rate=2"], "drop_rate 2"),
    (("train", "fapft", "select"), ["--model-kwargs", "attn_drop_rate=-0.5"], "attn_drop_rate"),
    (("train", "fapft", "select"), ["--model-kwargs", "bogus=1"], "bogus"),
    (("train", "fapft", "select"), ["--model-kwargs", "drop_rate=*a"], "model_kwargs"),
]
CASES = [(verb, flags, needle) for verbs, flags, needle in TABLE for verb in verbs]


@pytest.mark.parametrize(("verb", "flags", "needle"), CASES,
                         ids=[f"{v}:{' '.join(f)}" for v, f, _ in CASES])
def test_every_verb_refuses_the_same_bad_value(tmp_path, capsys, run, verb, flags, needle):
    code, _, err = cli(capsys, *_argv(verb, tmp_path, run), *flags)
    assert_user_error(code, err, *((needle,) if isinstance(needle, str) else needle))
    assert not (tmp_path / f"out-{verb}").exists() or verb in ("fapft", "select")


@NO_GPU
@pytest.mark.parametrize("verb", ["eval", "soup", "multitask"])
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_a_cuda_device_without_a_gpu_is_one_sentence(tmp_path, capsys, run, verb, device):
    code, _, err = cli(capsys, *_argv(verb, tmp_path, run), "--device", device)
    assert_user_error(code, err, f"--device {device}", "GPU")


@NO_GPU
@pytest.mark.parametrize("verb", ["train", "fapft", "pretrain", "bench"])
def test_fp16_on_the_cpu_is_refused_rather_than_recorded_falsely(tmp_path, capsys, run, verb):
    code, _, err = cli(capsys, *_argv(verb, tmp_path, run), "--amp", "fp16")
    assert_user_error(code, err, "fp16 needs a CUDA GPU")


@NO_GPU
def test_bf16_on_the_cpu_runs_bf16_and_says_so(tmp_path):
    from partialft.training.train import train

    summary = train(tiny_run(tmp_path / "r", amp="bf16", epochs=1), progress=False)
    assert summary["precision"] == "bf16"
    with pytest.raises(PartialFTError, match="fp16 needs a CUDA GPU"):
        train(tiny_run(tmp_path / "f", amp="fp16"), progress=False)
    assert not (tmp_path / "f").exists()


def test_a_config_file_gets_the_same_rules(tmp_path, capsys):
    for text, needle in (("lr: 1.0e+308\n", "lr 1e+308"), ("threads: 100000\n", "threads 100000"),
                         ("workers: -1\n", "workers -1"),
                         ("model_kwargs: {drop_rate: 2}\n", "drop_rate 2"),
                         ("model_kwargs: {bogus: 1}\n", "bogus"),
                         ("label_smoothing: 1\n", "label_smoothing 1")):
        config = tmp_path / "c.yaml"
        config.write_text(text)
        for verb in ("train", "plan"):
            argv = ["plan", "--config", config] if verb == "plan" else [
                "train", *NO_LR, "--config", config, "--out", tmp_path / "x"]
            code, _, err = cli(capsys, *argv)
            if verb == "plan" and needle == "bogus":
                continue  # plan builds no model with them (meta counts only)
            assert_user_error(code, err, needle)


# --- nested and aliased YAML / JSON ----------------------------------------------------------

DEEP_YAML = "a: " + "[" * 5000 + "]" * 5000 + "\n"
DEEP_BLOCK = "".join("  " * i + f"k{i}:\n" for i in range(200)) + "  " * 200 + "x: 1\n"
ALIASES = "a: &a [1, 2]\nb: &b [*a, *a]\nc: [*b, *b]\n"
DEEP_JSON = '{"angles": ' + "[" * 100000 + "]" * 100000 + "}"


@pytest.mark.parametrize("text", [DEEP_YAML, DEEP_BLOCK, ALIASES],
                         ids=["deep-flow", "deep-block", "aliases"])
def test_configs_and_layer_specs_refuse_deep_or_aliased_yaml(tmp_path, capsys, text):
    config, spec = tmp_path / "c.yaml", tmp_path / "spec.yaml"
    config.write_text(text)
    spec.write_text(text)
    for argv, needle in (
            (["train", *REAL, "--config", config, "--out", tmp_path / "a"], "config"),
            (["plan", "--config", config], "config"),
            (["fapft", *REAL, "--mode", "large", "--config", config, "--out", tmp_path / "b"],
             "config"),
            (["plan", "--model", "test_vit", "--method", "attn", "--layer-spec", spec],
             "layer spec"),
            (["train", *REAL, "--layer-spec", spec, "--out", tmp_path / "c"], "layer spec")):
        code, _, err = cli(capsys, *argv)
        assert_user_error(code, err, needle)
        assert "alias" in err or "deep" in err


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_deep_json_angles_and_specs_are_one_sentence(tmp_path, capsys, suffix):
    angles = tmp_path / f"angles{suffix}"
    angles.write_text(DEEP_JSON)
    code, _, err = cli(capsys, "plan", "--model", "test_vit", "--method", "fapft", "--angles",
                       angles, "--mode", "large")
    assert_user_error(code, err, "angles file")
    spec = tmp_path / f"spec{suffix}"
    spec.write_text(DEEP_JSON)
    code, _, err = cli(capsys, "plan", "--model", "test_vit", "--method", "attn", "--layer-spec",
                       spec)
    assert_user_error(code, err, "layer spec", "deep")


def test_the_safe_loader_keeps_ordinary_files_and_refuses_the_rest():
    assert load_yaml("a: 1\nb: [x, {c: 2}]\n", "t") == {"a": 1, "b": ["x", {"c": 2}]}
    assert load_json('{"a": [1, {"b": 2}]}', "t") == {"a": [1, {"b": 2}]}
    nested = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert load_json(nested, "t") is not None and load_yaml(nested, "t") is not None
    for text in ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "!!python/object:os.system x",
                 "a: *undefined", ALIASES):
        with pytest.raises(PartialFTError):
            load_yaml(text, "t")
    with pytest.raises(PartialFTError, match="deeper than"):
        load_json("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "t")


# --- splits -----------------------------------------------------------------------------------

@pytest.mark.parametrize("fraction", ["0.999", "0.0001"])
@pytest.mark.parametrize("verb", ["train", "select"])
def test_a_val_fraction_that_empties_a_split_is_refused(tmp_path, capsys, verb, fraction):
    argv = [verb, *DIGITS, "--out", tmp_path / "x", "--val-fraction", fraction]
    if verb == "train":
        argv.append("--no-progress")
    code, _, err = cli(capsys, *argv)
    assert_user_error(code, err, f"val_fraction {fraction}", "each split needs")


def test_mode_auto_without_a_validation_split_is_refused(tmp_path, capsys):
    code, _, err = cli(capsys, "select", *DIGITS, "--val-fraction", "0", "--out", tmp_path / "s")
    assert_user_error(code, err, "mode auto", "validation split")
    code, _, err = cli(capsys, "train", *DIGITS, "--method", "fapft", "--mode", "auto",
                       "--val-fraction", "0", "--out", tmp_path / "t")
    assert_user_error(code, err, "mode auto", "validation split")
    # a given mode needs no validation split: the head is fitted, not scored
    code, _, err = cli(capsys, "select", *DIGITS, "--val-fraction", "0", "--mode", "large",
                       "--out", tmp_path / "l")
    assert code == 0, err
    assert json.loads((tmp_path / "l" / "scores.json").read_text())["probe_acc"] is None


# --- limits -----------------------------------------------------------------------------------

def test_memory_limits_use_what_the_machine_has(monkeypatch):
    monkeypatch.setattr(limits, "available_bytes", lambda device=None: 10 * limits.GIB)
    limits.check_batch_memory(64, 224)  # 0.1 GiB
    with pytest.raises(PartialFTError, match="needs at least .* more than the 10.0 GiB"):
        limits.check_batch_memory(64, 4096)
    assert limits.available_bytes.__module__  # the real one reads /proc/meminfo


def test_thread_and_worker_caps_scale_with_the_cpus(monkeypatch):
    monkeypatch.setattr(limits, "cpu_count", lambda: 2)
    limits.check_threads(8)
    with pytest.raises(PartialFTError, match="from 1 to 8"):
        limits.check_threads(9)
    limits.check_workers(64)  # the shipped configs' 16 workers run anywhere
    with pytest.raises(PartialFTError, match="0 .* to 64"):
        limits.check_workers(65)
    monkeypatch.setattr(limits, "cpu_count", lambda: 64)
    limits.check_threads(256)
    limits.check_workers(256)


@pytest.mark.parametrize("verb", ["eval", "soup"])
def test_eval_and_soup_check_their_batch_against_memory(tmp_path, capsys, run, verb,
                                                        monkeypatch):
    """The batch an evaluation really draws (``--batch-size`` images, at most the split's) must
    fit the free memory: refused in one sentence before any is loaded, accepted otherwise."""
    import shutil

    argv = _argv(verb, tmp_path, run)
    if verb == "soup":  # two ingredients: the run and a copy of it
        argv[2] = shutil.copytree(run, tmp_path / "copy")
    monkeypatch.setattr(limits, "available_bytes", lambda device=None: 4096)  # 4 KiB free
    code, _, err = cli(capsys, *argv, "--batch-size", "8")
    assert_user_error(code, err, "a batch of 8 images of 32x32", "--batch-size")
    assert not (tmp_path / f"out-{verb}").exists()
    monkeypatch.setattr(limits, "available_bytes", lambda device=None: 64 * limits.GIB)
    code, _, err = cli(capsys, *argv, "--batch-size", "100000")
    assert code == 0, err  # capped by the split: 100000 images are never drawn at once
