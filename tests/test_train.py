"""The training loop end to end on a tiny ViT and tiny synthetic data (CPU, seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_run

from partialft.cli import main
from partialft.errors import PartialFTError
from partialft.models import load_state_dict_file
from partialft.training.config_files import load_config
from partialft.training.runs import is_run_dir, load_run_model
from partialft.training.train import train

CONFIGS = sorted((Path(__file__).parent.parent / "src" / "partialft" / "configs").glob("*.yaml"))
TIMING = {"images_per_s", "elapsed_s"}


tiny = tiny_run


def metrics(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


@pytest.mark.parametrize("method", ["full", "linear", "attn", "ffn", "last-half-blocks"])
def test_every_layer_method_trains_and_writes_its_run_dir(tmp_path, method):
    summary = train(tiny(tmp_path / method, method=method, epochs=1), progress=False)
    run = tmp_path / method
    assert is_run_dir(run)
    for name in ("config.yaml", "selection.json", "metrics.jsonl", "summary.json"):
        assert (run / name).is_file(), name
    for key in ("method", "layers", "trainable_params", "total_params", "best_acc", "final_acc",
                "wall_s", "device"):
        assert key in summary, key
    assert summary["method"] == method
    assert summary["optimizer"] == {"name": "AdamW", "fused": False}  # fused is CUDA-only
    delta = load_state_dict_file(run / "delta.safetensors")
    trained = sum(v.numel() for v in delta.values())
    assert trained == summary["trainable_params"]  # test_vit has no buffers in trained modules
    if method != "full":
        assert summary["trainable_params"] < summary["total_params"]
    assert all(k.startswith("head.") for k in delta) == (method == "linear")


def test_training_learns_the_synthetic_task(tmp_path):
    summary = train(tiny(tmp_path / "r", epochs=4, max_per_split=64), progress=False)
    lines = metrics(tmp_path / "r")
    assert lines[-1]["train_loss"] < lines[0]["train_loss"]
    assert summary["best_acc"] > 50.0  # 4 classes: chance is 25%


def test_same_seed_gives_identical_metrics(tmp_path):
    train(tiny(tmp_path / "a"), progress=False)
    train(tiny(tmp_path / "b"), progress=False)
    assert metrics(tmp_path / "a") == metrics(tmp_path / "b")


def test_same_seed_with_mixup_and_cutmix_gives_identical_metrics(tmp_path):
    """timm's Mixup draws from NumPy's global generator: the run seeds it too."""
    recipe = dict(mixup=0.8, cutmix=1.0, epochs=1)
    train(tiny(tmp_path / "a", **recipe), progress=False)
    import numpy as np

    np.random.seed(12345)  # whatever the global state was before, the run starts from its seed
    train(tiny(tmp_path / "b", **recipe), progress=False)
    assert metrics(tmp_path / "a") == metrics(tmp_path / "b")


def test_drop_path_reaches_the_model_and_is_recorded(tmp_path):
    import yaml

    from partialft.training.config import TrainConfig
    from partialft.training.setup import build

    setup = build(tiny(tmp_path / "dp", drop_path=0.2))
    try:
        rates = [m.drop_prob for m in setup.prepared.model.modules()
                 if type(m).__name__ == "DropPath"]
        assert rates and max(rates) == pytest.approx(0.2)  # timm's linear ramp ends at the rate
    finally:
        setup.run.close()
    assert yaml.safe_load((tmp_path / "dp" / "config.yaml").read_text())["drop_path"] == 0.2
    with pytest.raises(PartialFTError, match="drop_path 1.5"):
        TrainConfig(drop_path=1.5)


def test_val_fraction_0_trains_on_the_whole_training_split(tmp_path, capsys):
    """The paper's CIFAR-100 protocol: no held-out part, test accuracy only."""
    for i, lr in enumerate((1e-3, 3e-3)):  # one base (seed 0): soupable
        summary = train(tiny(tmp_path / f"all{i}", val_fraction=0.0, epochs=1,
                             dataset="digits", max_per_split=None, lr=lr), progress=False)
        assert summary["best_acc"] is None and summary["test_acc"] is not None
    split = json.loads((tmp_path / "all0" / "split.json").read_text())
    assert split["val"] == [] and len(split["train"]) == 1797 - len(split["test"])
    assert metrics(tmp_path / "all0")[0]["val_acc"] is None
    runs = [str(tmp_path / "all0"), str(tmp_path / "all1")]
    assert main(["soup", *runs, "--out", str(tmp_path / "u")]) == 0  # uniform: test acc only
    assert json.loads((tmp_path / "u" / "summary.json").read_text())["test_acc"] is not None
    capsys.readouterr()
    assert main(["soup", *runs, "--greedy", "--out", str(tmp_path / "g")]) == 2
    assert "without a validation split" in capsys.readouterr().err


def test_resume_mid_epoch_matches_an_uninterrupted_run(tmp_path):
    train(tiny(tmp_path / "straight", ema=0.9), progress=False)
    assert train(tiny(tmp_path / "split", ema=0.9, max_steps=3), progress=False) is None
    assert not is_run_dir(tmp_path / "split")
    train(tiny(tmp_path / "split", ema=0.9), resume=True, progress=False)
    assert metrics(tmp_path / "split") == metrics(tmp_path / "straight")
    a = load_state_dict_file(tmp_path / "straight" / "delta.safetensors")
    b = load_state_dict_file(tmp_path / "split" / "delta.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_delta_round_trip_reproduces_the_trained_model(tmp_path):
    run = tmp_path / "attn"
    train(tiny(run, method="attn", save_full=True, epochs=1), progress=False)
    model, summary = load_run_model(run)
    full = load_state_dict_file(run / "model.safetensors")
    reference, _ = load_run_model(run)
    reference.load_state_dict(full)
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(model(x), reference(x))
    assert summary["method"] == "attn"


def test_batchnorm_statistics_are_saved_with_the_layers_that_train(tmp_path):
    # a model with BatchNorm: the running statistics of every trained norm go into the delta,
    # so base + delta reproduces the trained model in eval mode
    run = tmp_path / "resnet"
    train(tiny(run, model="test_resnet", epochs=1, save_full=True), progress=False)
    delta = load_state_dict_file(run / "delta.safetensors")
    assert any(k.endswith("running_mean") for k in delta)
    model, _ = load_run_model(run)
    reference, _ = load_run_model(run)
    reference.load_state_dict(load_state_dict_file(run / "model.safetensors"))
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(model.eval()(x), reference.eval()(x))


def test_fapft_selection_trains_the_chosen_layers(tmp_path):
    angles = {f"blocks.{i}.{k}": float(i) for i in range(6) for k in ("attn", "mlp")}
    path = tmp_path / "angles.json"
    path.write_text(json.dumps({"angles": angles}))
    summary = train(tiny(tmp_path / "f", method="fapft", angles=str(path), topk="2",
                         mode="small", epochs=1), progress=False)
    assert summary["layers"] == ["blocks.0.attn", "blocks.0.mlp", "blocks.1.attn", "blocks.1.mlp"]


def test_existing_run_dir_needs_overwrite_or_resume(tmp_path):
    train(tiny(tmp_path / "r", epochs=1), progress=False)
    with pytest.raises(PartialFTError, match="pass resume=True to continue it or "
                                             "overwrite=True") as err:  # a library call
        train(tiny(tmp_path / "r", epochs=1), progress=False)
    assert "pass --resume to continue it or --overwrite" in err.value.for_cli()
    before = (tmp_path / "r" / "summary.json").read_text()
    assert train(tiny(tmp_path / "r", epochs=1), resume=True, progress=False) is not None
    assert (tmp_path / "r" / "summary.json").read_text() == before
    train(tiny(tmp_path / "r", epochs=1, seed=1), overwrite=True, progress=False)
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["seed"] == 1


def test_a_run_whose_setup_fails_leaves_nothing_behind(tmp_path, monkeypatch):
    # missing pretrained weights are found only once the run dir is claimed: the corrected
    # command must not need --overwrite, and a directory the user made is kept
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PartialFTError, match="not on this machine"):
        train(tiny(tmp_path / "r", pretrained=True), progress=False)
    assert not (tmp_path / "r").exists()
    (tmp_path / "mine").mkdir()
    with pytest.raises(PartialFTError, match="not on this machine"):
        train(tiny(tmp_path / "mine", pretrained=True), progress=False)
    assert list((tmp_path / "mine").iterdir()) == []
    assert train(tiny(tmp_path / "r", epochs=1), progress=False) is not None


def test_a_run_dir_in_use_is_refused(tmp_path):
    from partialft.training.rundir import RunDir

    held = RunDir(tmp_path / "busy")
    try:
        with pytest.raises(PartialFTError, match="in use"):
            RunDir(tmp_path / "busy", resume=True)
    finally:
        held.close()


def test_cli_train_with_config_and_flag_override(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**tiny(tmp_path / "unused").to_dict(), "epochs": 5}))
    out = tmp_path / "cli"
    assert main(["train", "--config", str(cfg), "--epochs", "1", "--out", str(out),
                 "--method", "ffn", "--no-progress"]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["epochs"] == 1 and saved["method"] == "ffn" and saved["batch_size"] == 8
    assert "test acc" in capsys.readouterr().out


def test_cli_bad_values_exit_2_with_one_line(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "x"), "--lr", "-1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "lr -1" in err and "\n" not in err
    with pytest.raises(SystemExit) as exc:
        main(["train", "--epochs", "two"])
    assert exc.value.code == 2


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_parses(path):
    cfg = load_config(path)
    assert cfg.epochs >= 1 and cfg.lr > 0


def test_shipped_configs_are_named_from_any_directory(tmp_path, monkeypatch, capsys):
    from partialft.training.config_files import shipped_configs

    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    assert load_config("cifar100_vit_b16").topk == "7"
    assert load_config("configs/cifar100_vit_b16.yaml").mode == "small"  # the README's spelling
    assert set(shipped_configs()) == {p.stem for p in CONFIGS}
    with pytest.raises(PartialFTError, match="did you mean cifar100_vit_b16"):
        load_config("cifar100_vit_b61")
    assert main(["configs"]) == 0
    listed = capsys.readouterr().out
    assert all(p.stem in listed for p in CONFIGS)
    assert main(["configs", "digits_demo"]) == 0
    assert capsys.readouterr().out == (CONFIGS[[p.stem for p in CONFIGS].index("digits_demo")]
                                       .read_text())


def test_a_timm_args_yaml_is_read_and_its_other_keys_named(tmp_path):
    args = tmp_path / "args.yaml"
    args.write_text("model: vit_base_patch16_224\nsmoothing: 0.2\nclip_grad: 3.0\nreprob: 0.25\n"
                    "aa: rand-m9-mstd0.5-inc1\ncolor_jitter: 0.4\nopt: sgd\nsched: cosine\n"
                    "lr: 0.01\nepochs: 20\nscale: [0.5, 1.0]\namp: true\namp_dtype: bfloat16\n"
                    "model_ema: false\nmodel_ema_decay: 0.9998\nlog_interval: 50\n"
                    "dataset: torch/cifar100\ndata_dir: /data\noutput: ''\nmomentum: 0.9\n")
    lines = []
    cfg = load_config(args, log=lines.append)
    assert (cfg.label_smoothing, cfg.grad_clip, cfg.random_erasing) == (0.2, 3.0, 0.25)
    assert (cfg.randaugment, cfg.color_jitter, cfg.opt, cfg.lr) == (
        "rand-m9-mstd0.5-inc1", 0.0, "sgd", 0.01)  # timm turns jitter off under RandAugment
    assert (cfg.crop_scale, cfg.amp, cfg.ema, cfg.dataset, cfg.data_dir) == (
        0.5, "bf16", None, "cifar100", "/data")
    assert len(lines) == 1 and "log_interval" in lines[0] and "momentum" in lines[0]


def test_timm_flag_spellings_are_aliases(capsys):
    from partialft.cli import build_parser
    from partialft.training.config_flags import overrides_from_args

    args = build_parser().parse_args(["train", "--smoothing", "0.2", "--clip-grad", "2",
                                      "--reprob", "0.1", "--aa", "rand-m9", "--model-ema-decay",
                                      "0.999", "--opt", "sgd", "--sched", "step",
                                      "--warmup-lr", "1e-6", "--layer-decay", "0.75",
                                      "--drop-path", "0.1", "--model-kwargs", "drop_rate=0.1"])
    cfg = load_config(None, overrides_from_args(args))
    assert (cfg.label_smoothing, cfg.grad_clip, cfg.random_erasing, cfg.randaugment, cfg.ema) == (
        0.2, 2.0, 0.1, "rand-m9", 0.999)
    assert (cfg.opt, cfg.sched, cfg.warmup_lr, cfg.layer_decay, cfg.drop_path) == (
        "sgd", "step", 1e-6, 0.75, 0.1)
    assert cfg.model_kwargs == {"drop_rate": 0.1}


def test_unknown_config_key_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epoch: 3\n")
    with pytest.raises(PartialFTError, match="'epoch'.*epochs"):
        load_config(bad)


def test_fapft_pipeline_runs_and_skips_completed_stages(tmp_path, capsys):
    from partialft.workflows.fapft import run_fapft

    cfg = tiny(tmp_path / "pipe", epochs=1, method="fapft", topk="1", mode="large")
    summary = run_fapft(cfg, progress=False)
    assert set(summary["runs"]) == {"full", "fapft"}
    assert len(summary["fapft_layers"]) == 2  # top-1 of the attn group and of the ffn group
    angles = json.loads((tmp_path / "pipe" / "angles.json").read_text())["angles"]
    assert len(angles) == 12 and all(0.0 <= a <= 180.0 for a in angles.values())
    stamp = (tmp_path / "pipe" / "full" / "summary.json").stat().st_mtime_ns
    run_fapft(cfg, progress=False)
    assert (tmp_path / "pipe" / "full" / "summary.json").stat().st_mtime_ns == stamp
    assert (summary["topk"], summary["mode"]) == ([1], "large")
    # without --topk the summary names the default top-k the run used, not None
    default = run_fapft(tiny(tmp_path / "pipe2", epochs=1, method="fapft", mode="small"),
                        reference=str(tmp_path / "pipe" / "full"), progress=False)
    assert (default["topk"], default["mode"]) == ([2], "small")  # ceil(6 blocks / 3)
    assert len(default["fapft_layers"]) == 4


def test_bf16_autocast_on_cpu_and_tensorboard_logs(tmp_path):
    pytest.importorskip("tensorboard")
    summary = train(tiny(tmp_path / "bf16", amp="bf16", epochs=1), progress=False)
    assert summary["precision"] == "bf16"
    assert list((tmp_path / "bf16").rglob("events.out.tfevents*")), "no TensorBoard event file"


def test_recipe_options_run_together(tmp_path):
    summary = train(tiny(tmp_path / "recipe", epochs=1, mixup=0.8, cutmix=1.0, grad_accum=2,
                         randaugment="rand-m9-mstd0.5-inc1", random_erasing=0.25,
                         crop_scale=0.5, hflip=0.5, batch_size=4), progress=False)
    record = metrics(tmp_path / "recipe")[0]
    assert record["step"] == 5  # 40 images / (4 x 2 accumulation) optimizer steps
    assert summary["best_acc"] is not None


def test_fapft_mode_auto_is_decided_by_pilot_runs_kept_in_the_run_dir(tmp_path, capsys):
    """`partialft train --mode auto` starts the run in both modes inside the run dir (the
    pilots), compares them on validation after --pilot-fraction of the schedule, continues the
    better one to the same weights as a run started in that mode, records the decision in
    summary.json and reuses the pilots on a rerun; the library's train() is never handed
    'auto'."""
    angles = {f"blocks.{i}.{k}": float(i) for i in range(6) for k in ("attn", "mlp")}
    path = tmp_path / "angles.json"
    path.write_text(json.dumps({"angles": angles}))
    out = tmp_path / "auto"
    argv = ["train", "--model", "test_vit", "--no-pretrained", "--dataset", "synthetic:4",
            "--img-size", "32", "--max-per-split", "40", "--batch-size", "8", "--epochs", "2",
            "--amp", "no", "--no-progress", "--method", "fapft", "--angles", str(path),
            "--topk", "1", "--mode", "auto", "--pilot-fraction", "0.5", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "mode auto -> " in printed and "best val acc" in printed
    summary = json.loads((out / "summary.json").read_text())
    decision = summary["mode_decision"]
    pilots = decision["pilots"]
    assert set(pilots) == {"large", "small"} and decision["rule"] == "validation pilots"
    for mode, pilot in pilots.items():  # each pilot: 1 epoch of the 2-epoch run, resumable
        pdir = out / f"pilot-{mode}"
        records = [json.loads(line) for line in (pdir / "metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in records] == [1] and pilot["epochs"] == 1
        assert pilot["val_acc"] == records[0]["val_acc"] and pilot["steps"] == records[0]["step"]
        assert not (pdir / "summary.json").exists() and (pdir / "state" / "state.json").is_file()
        assert yaml.safe_load((pdir / "config.yaml").read_text())["epochs"] == 2
        assert yaml.safe_load((pdir / "config.yaml").read_text())["mode"] == mode
    accs = {m: p["val_acc"] for m, p in pilots.items()}
    better = max(accs, key=lambda m: (accs[m], m == "small"))  # tie: small (same params)
    other = "large" if better == "small" else "small"
    assert decision["mode"] == better == summary["config"]["mode"]
    assert decision["start_from"] == str(out / f"pilot-{better}")
    cost = decision["cost"]
    assert cost["steps"] == sum(p["steps"] for p in pilots.values())
    assert (cost["extra_steps"], cost["extra_wall_s"]) == (pilots[other]["steps"],
                                                           pilots[other]["wall_s"])
    assert cost["x_full_epochs"] == 0.5  # the other pilot: 1 epoch of a 2-epoch run
    expected = "blocks.5.attn" if better == "large" else "blocks.0.attn"
    assert expected in summary["layers"]
    # the run continued the chosen pilot: its first epoch is the pilot's, and it ends with the
    # weights of a run started in that mode (training is deterministic on the CPU)
    first = [(d / "metrics.jsonl").read_text().splitlines()[0]
             for d in (out, out / f"pilot-{better}")]
    assert first[0] == first[1]
    straight = tmp_path / "straight"
    fixed = [*argv[:argv.index("--mode")], "--mode", better, "--out", str(straight)]
    assert main(fixed) == 0
    capsys.readouterr()
    a, b = (load_state_dict_file(d / "delta.safetensors") for d in (out, straight))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert summary["final_acc"] == json.loads((straight / "summary.json").read_text())[
        "final_acc"]
    stamp = (out / "pilot-large" / "metrics.jsonl").stat().st_mtime_ns
    assert main([*argv, "--resume"]) == 0  # the resumed run keeps the mode it got
    assert (out / "pilot-large" / "metrics.jsonl").stat().st_mtime_ns == stamp
    assert main([*argv, "--overwrite"]) == 0  # replaced: pilots and run written again
    with pytest.raises(PartialFTError, match="mode auto is decided before a run is built"):
        train(tiny(tmp_path / "lib", method="fapft", angles=str(path), topk="1", mode="auto"),
              progress=False)


def test_a_finished_run_drops_its_resume_state_unless_kept(tmp_path):
    train(tiny(tmp_path / "done", epochs=1), progress=False)
    assert is_run_dir(tmp_path / "done") and not (tmp_path / "done" / "state").exists()
    train(tiny(tmp_path / "kept", epochs=1, keep_state=True), progress=False)
    assert list((tmp_path / "kept" / "state").glob("tensors-*.safetensors"))
    # resuming a finished run needs no state: it returns the summary
    assert train(tiny(tmp_path / "done", epochs=1), resume=True, progress=False) is not None


def test_baseline_options_as_flags(tmp_path):
    """rank/alpha/targets, dim, tokens (the library's names) reach the baseline; the count
    follows each (test_vit: 6 blocks of width 64, mlp 192)."""
    lora = train(tiny(tmp_path / "lora", method="lora", rank=2, alpha=4.0,
                      targets="qkv", epochs=1), progress=False)
    head = 64 * 4 + 4
    assert lora["trainable_params"] == 6 * 2 * (64 + 192) + head  # rank * (in + out) of qkv
    sel = json.loads((tmp_path / "lora" / "selection.json").read_text())
    assert (sel["rank"], sel["alpha"], sel["targets"]) == (2, 4.0, "qkv")
    model, _ = load_run_model(tmp_path / "lora")  # rebuilt with the recorded options
    assert sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) == 6 * 2 * 256
    adapter = train(tiny(tmp_path / "adapter", method="adapter", dim=3, epochs=1),
                    progress=False)
    assert adapter["trainable_params"] == 6 * (64 * 3 + 3 + 3 * 64 + 64) + head
    vpt = train(tiny(tmp_path / "vpt", method="vpt-deep", tokens=2, epochs=1), progress=False)
    assert vpt["trainable_params"] == 6 * 2 * 64 + head


def test_csv_logging_needs_no_package_and_none_logs_nothing(tmp_path):
    import csv

    train(tiny(tmp_path / "csv", log_with="csv"), progress=False)
    rows = list(csv.DictReader((tmp_path / "csv" / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == [m["step"] for m in metrics(tmp_path / "csv")]
    assert float(rows[-1]["val_acc"]) == metrics(tmp_path / "csv")[-1]["val_acc"]
    train(tiny(tmp_path / "none", log_with="none"), progress=False)
    assert not (tmp_path / "none" / "log.csv").exists()
    assert not (tmp_path / "none" / "tensorboard").exists()


def test_only_rank_0_reports_under_torchrun(tmp_path, capsys, monkeypatch):
    argv = ["train", "--model", "test_vit", "--no-pretrained", "--dataset", "synthetic:4",
            "--img-size", "32", "--max-per-split", "16", "--batch-size", "8", "--epochs", "1",
            "--amp", "no", "--no-progress", "--method", "linear", "--log-with", "none"]
    monkeypatch.setenv("RANK", "1")  # what torchrun sets in the second process
    assert main([*argv, "--out", str(tmp_path / "r1")]) == 0
    assert "trainable parameters" not in capsys.readouterr().out
    monkeypatch.setenv("RANK", "0")
    assert main([*argv, "--out", str(tmp_path / "r0")]) == 0
    assert "trainable parameters" in capsys.readouterr().out


def test_a_missing_extra_is_named(tmp_path, monkeypatch):
    import partialft.utils.extras as extras

    real = extras.importlib.util.find_spec
    monkeypatch.setattr(extras.importlib.util, "find_spec",
                        lambda name, *a: None if name == "peft" else real(name, *a))
    with pytest.raises(PartialFTError, match=r"pip install 'partialft\[lora\]'"):
        train(tiny(tmp_path / "lora", method="lora", epochs=1), progress=False)


def test_start_from_continues_only_a_resume_point_of_the_same_recipe(tmp_path):
    """train(start_from=RUN): a new run continues RUN's resume point when every recipe setting
    matches (out, keep_state and max_steps may differ) and refuses otherwise, naming the
    setting; a run dir without settings is refused too. Nothing is written for a refusal."""
    first = tmp_path / "first"
    assert train(tiny(first, epochs=2, max_steps=3, keep_state=True), progress=False) is None
    done = train(tiny(tmp_path / "next", epochs=2), progress=False, start_from=first)
    straight = train(tiny(tmp_path / "straight", epochs=2), progress=False)
    assert (done["final_acc"], done["best_acc"]) == (straight["final_acc"], straight["best_acc"])
    a, b = (load_state_dict_file(tmp_path / d / "delta.safetensors") for d in ("next", "straight"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    for change, value in (("lr", 3e-3), ("seed", 1), ("epochs", 3)):
        with pytest.raises(PartialFTError, match=f"trained {change} .* this run has {change}"):
            train(tiny(tmp_path / f"bad-{change}", **{"epochs": 2, change: value}),
                  progress=False, start_from=first)
        assert not (tmp_path / f"bad-{change}").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(PartialFTError, match="has no recorded settings"):
        train(tiny(tmp_path / "orphan", epochs=2), progress=False, start_from=tmp_path / "empty")
